package ade

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func readFixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestFixturesDecode decodes every recorded answer of Apple's service
// (testdata/README.md) into the package's types.
func TestFixturesDecode(t *testing.T) {
	tests := []struct {
		file  string
		into  func() any
		check func(t *testing.T, v any)
	}{
		{"micromdm-account_response.json", func() any { return new(Account) }, func(t *testing.T, v any) {
			a := v.(*Account)
			if a.ServerUUID != "6666ED66666666666666666666666666" || a.AdminID != "apple-dep@acme.co" ||
				a.OrgType != "org" || a.OrgVersion != "v2" || a.OrgIDHash == "" || len(a.URLs) != 18 {
				t.Errorf("account %+v", a)
			}
			for _, u := range a.URLs {
				if u.URI == "/server/devices" && (u.Limit == nil || u.Limit.Default != 1000 || u.Limit.Maximum != 5000) {
					t.Errorf("/server/devices limit %+v", u.Limit)
				}
				if u.URI == "/profile/devices" && !reflect.DeepEqual(u.HTTPMethod, []string{"DELETE", "POST", "PUT"}) {
					t.Errorf("/profile/devices methods %v", u.HTTPMethod)
				}
			}
		}},
		{"micromdm-device_response.json", func() any { return new(DevicePage) }, func(t *testing.T, v any) {
			p := v.(*DevicePage)
			if len(p.Devices) != 1 || p.MoreToFollow || !strings.HasPrefix(p.Cursor, "MDowOjE1") ||
				!p.FetchedUntil.Equal(time.Date(2018, 9, 8, 17, 28, 18, 0, time.UTC)) {
				t.Errorf("page %+v", p)
			}
			d := p.Devices[0]
			if d.SerialNumber != "C02T0HL0GGC0" || d.OS != "OSX" || d.DeviceFamily != "Mac" || d.ProfileStatus != "assigned" ||
				d.ProfileUUID != "C1F123098EB5074580041E69883004C3" || d.OpType != "" ||
				!d.ProfileAssignTime.Equal(time.Date(2018, 9, 8, 16, 49, 9, 0, time.UTC)) ||
				!d.DeviceAssignedDate.Equal(time.Date(2017, 10, 16, 1, 55, 30, 0, time.UTC)) {
				t.Errorf("device %+v", d)
			}
		}},
		{"micromdm-device_details_response.json", func() any { return new(struct{ Devices map[string]Device }) }, func(t *testing.T, v any) {
			d := v.(*struct{ Devices map[string]Device }).Devices["C02T0HL0GGC0"]
			if d.ResponseStatus != StatusSuccess || d.Model != "MacBook Pro" || d.Color != "SPACE GRAY" {
				t.Errorf("device %+v", d)
			}
		}},
		{"micromdm-empty_sync_response.json", func() any { return new(DevicePage) }, func(t *testing.T, v any) {
			p := v.(*DevicePage)
			if len(p.Devices) != 0 || p.MoreToFollow || p.Cursor == "" {
				t.Errorf("page %+v", p)
			}
		}},
		{"micromdm-fetch_profile_response.json", func() any { return new(Profile) }, func(t *testing.T, v any) {
			p := v.(*Profile)
			if p.ProfileUUID != "C1F123098EB5074580041E69883004C3" || p.URL != "https://mdm.acme.co/mdm/enroll" ||
				p.IsSupervised || !p.IsMDMRemovable || !p.AwaitDeviceConfigured || !p.AllowPairing ||
				!reflect.DeepEqual(p.SkipSetupItems, []string{"AppleID", "Android"}) {
				t.Errorf("profile %+v", p)
			}
		}},
		{"nanodep-dep-profile.example.json", func() any { return new(Profile) }, func(t *testing.T, v any) {
			p := v.(*Profile)
			if !reflect.DeepEqual(p.Devices, []string{"SERIAL1", "SERIAL2"}) || p.URL != "https://mymdm.example.org/mdm/enroll" {
				t.Errorf("profile %+v", p)
			}
		}},
		{"fleet-dep_sample_profile.json", func() any { return new(Profile) }, func(t *testing.T, v any) {
			p := v.(*Profile)
			if len(p.SkipSetupItems) != 18 || p.OrgMagic != "1" || p.Language != "en" || p.Region != "US" || p.URL != "" {
				t.Errorf("profile %+v", p)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			v := tt.into()
			if err := json.Unmarshal(readFixture(t, tt.file), v); err != nil {
				t.Fatal(err)
			}
			tt.check(t, v)
		})
	}
}

// TestFixtureProfiles checks the recorded profile bodies against Validate
// (their placeholders must be caught) and that every key they hold
// survives a round trip through Profile.
func TestFixtureProfiles(t *testing.T) {
	tests := []struct {
		file    string
		invalid []string // what Validate must complain of
	}{
		// Placeholder text such as "(Optional) en" in most fields.
		{"nanodep-dep-profile.example.json", []string{"configuration_web_url", "language", "region", "support_email_address"}},
		// Fleet adds url itself.
		{"fleet-dep_sample_profile.json", []string{"url is required"}},
		{"micromdm-fetch_profile_response.json", []string{"support_email_address"}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			raw := readFixture(t, tt.file)
			var p Profile
			if err := json.Unmarshal(raw, &p); err != nil {
				t.Fatal(err)
			}
			err := p.Validate()
			if err == nil {
				t.Fatal("placeholders accepted")
			}
			for _, s := range tt.invalid {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("no complaint of %s in:\n%v", s, err)
				}
			}
			if n := strings.Count(err.Error(), "\n") + 1; n != len(tt.invalid) {
				t.Errorf("%d complaints, want %d:\n%v", n, len(tt.invalid), err)
			}

			out, err := json.Marshal(p)
			if err != nil {
				t.Fatal(err)
			}
			var before, after map[string]any
			if err := json.Unmarshal(raw, &before); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(out, &after); err != nil {
				t.Fatal(err)
			}
			for k, v := range before {
				if arr, ok := v.([]any); ok && len(arr) == 0 {
					continue // an empty list is left out
				}
				if k == "profile_uuid" {
					continue // Apple's, never sent back
				}
				if !reflect.DeepEqual(after[k], v) {
					t.Errorf("%s: %v became %v", k, v, after[k])
				}
			}
		})
	}
}

// FuzzDecode feeds Apple's answers, and mangled ones, to the decoders
// with custom code (lenient dates, profile defaults).
func FuzzDecode(f *testing.F) {
	for _, name := range []string{"micromdm-device_response.json", "micromdm-fetch_profile_response.json", "micromdm-account_response.json"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"devices":[{"serial_number":"A","op_type":"ADDED","op_date":""}],"fetched_until":"yesterday"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var p DevicePage
		if json.Unmarshal(b, &p) == nil {
			for _, d := range p.Devices {
				if d.OpType != OpType(strings.ToLower(string(d.OpType))) {
					t.Fatalf("op_type %q not lower-cased", d.OpType)
				}
			}
		}
		var prof Profile
		if json.Unmarshal(b, &prof) == nil {
			_ = prof.Validate()
			if _, err := json.Marshal(prof); err != nil {
				t.Fatal(err)
			}
		}
		var a Account
		_ = json.Unmarshal(b, &a)
	})
}
