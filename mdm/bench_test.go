package mdm

import "testing"

// BenchmarkDecodeCheckin decodes a real TokenUpdate, the check-in every
// device repeats whenever its push token changes.
func BenchmarkDecodeCheckin(b *testing.B) {
	body := readTestdata(b, "nanomdm-TokenUpdate.1.ipad-ios9.3.5.plist")
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeCheckin(body); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeCommandResults decodes real results, small and large.
func BenchmarkDecodeCommandResults(b *testing.B) {
	for _, file := range []string{
		"nanocmd-Acknowledged.macos.plist",
		"nanomdm-DeviceInformation.1.imac-macos10.12.6.plist",
		"nanocmd-SecurityInfo.macos.plist",
		"micromdm-ProfileList.macos.plist",
	} {
		body := readTestdata(b, file)
		b.Run(file, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := DecodeCommandResults(body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCheckPlistDepth is the share of every decode spent on the
// nesting guard of unmarshalPlist.
func BenchmarkCheckPlistDepth(b *testing.B) {
	body := readTestdata(b, "micromdm-ProfileList.macos.plist")
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if err := checkPlistDepth(body); err != nil {
			b.Fatal(err)
		}
	}
}
