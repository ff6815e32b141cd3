package mdm

import (
	"errors"
	"strings"
	"testing"
)

// cyclicBinaryPlist is a binary plist whose only object is an array
// holding itself: github.com/micromdm/plist v0.2.2 recurses on it until
// the Go stack overflows, a fatal error recover cannot catch.
var cyclicBinaryPlist = append([]byte("bplist00\xa1\x00\x08"),
	0, 0, 0, 0, 0, 0, 1, 1, // padding, sort version, offset int size, object ref size
	0, 0, 0, 0, 0, 0, 0, 1, // number of objects
	0, 0, 0, 0, 0, 0, 0, 0, // root object
	0, 0, 0, 0, 0, 0, 0, 10) // offset table offset

func TestUnmarshalPlistGuards(t *testing.T) {
	pad := "<!--" + strings.Repeat(" ", depthCheckMin) + "-->"
	nested := func(depth int) string {
		return "<plist>" + strings.Repeat("<array>", depth) + strings.Repeat("</array>", depth) + "</plist>"
	}
	tests := []struct {
		name    string
		data    string
		wantErr string // "" for success
	}{
		{"cyclic binary plist", string(cyclicBinaryPlist), errBinaryPlist.Error()},
		{"binary plist", "bplist00", errBinaryPlist.Error()},
		{"large and too deep", nested(maxPlistDepth+1) + pad, "deeper than"},
		{"large at the limit", nested(maxPlistDepth-1) + pad, ""},
		{"small and deep", nested(maxPlistDepth + 1), ""},
		{"large real capture", strings.Repeat(" ", depthCheckMin) + string(readTestdata(t, "micromdm-ProfileList.macos.plist")), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var v any
			err := unmarshalPlist([]byte(tt.data), &v)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("unmarshalPlist: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("unmarshalPlist = %v, want an error mentioning %q", err, tt.wantErr)
			}
		})
	}
	if _, err := DecodeCheckin(cyclicBinaryPlist); !errors.Is(err, errBinaryPlist) {
		t.Errorf("DecodeCheckin(cyclic binary plist) = %v", err)
	}
}
