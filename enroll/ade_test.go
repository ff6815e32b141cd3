package enroll

import (
	"testing"
)

func TestDecodeMachineInfo(t *testing.T) {
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{"complete", `<plist version="1.0"><dict><key>UDID</key><string>U1</string><key>SERIAL</key><string>S1</string>` +
			`<key>PRODUCT</key><string>iPhone14,5</string><key>LANGUAGE</key><string>en</string></dict></plist>`, true},
		{"no serial", `<plist version="1.0"><dict><key>UDID</key><string>U1</string></dict></plist>`, false},
		{"not a dict", `<plist version="1.0"><array/></plist>`, false},
		{"not a plist", `garbage`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mi, err := DecodeMachineInfo([]byte(tt.in))
			if tt.ok && (err != nil || mi.UDID != "U1" || mi.Serial != "S1" || mi.Product != "iPhone14,5") {
				t.Fatalf("DecodeMachineInfo = %+v, %v", mi, err)
			}
			if !tt.ok && err == nil {
				t.Fatalf("DecodeMachineInfo accepted %q", tt.in)
			}
		})
	}
}

func FuzzDecodeMachineInfo(f *testing.F) {
	f.Add([]byte(`<plist version="1.0"><dict><key>UDID</key><string>U</string><key>SERIAL</key><string>S</string></dict></plist>`))
	f.Fuzz(func(t *testing.T, data []byte) { _, _ = DecodeMachineInfo(data) })
}
