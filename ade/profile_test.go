package ade

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestProfileValidate(t *testing.T) {
	cert, _ := tokenKeyPair()
	certB64 := base64.StdEncoding.EncodeToString(cert.Raw)
	tests := []struct {
		name   string
		change func(p *Profile)
		want   string // "" for valid
		is     error
	}{
		{"defaults", func(p *Profile) {}, "", nil},
		{"everything", func(p *Profile) {
			p.ConfigurationWebURL = "https://mdm.example.com/ade/web"
			p.IsSupervised, p.IsMDMRemovable, p.IsMandatory, p.AwaitDeviceConfigured = true, false, true, true
			p.SkipSetupItems = []string{"AppleID", "Siri", "TOS", "UnlockWithWatch", "Android"}
			p.AnchorCerts, p.SupervisingHostCerts = []string{certB64}, []string{certB64}
			p.Department, p.SupportPhoneNumber, p.SupportEmailAddress = "IT", "+1 408 555 1010", "it@example.com"
			p.OrgMagic, p.Language, p.Region = "magic", "en", "US"
			p.Devices = []string{"C02T0HL0GGC0"}
		}, "", nil},
		{"not removable, not supervised", func(p *Profile) { p.IsMDMRemovable = false }, "is_mdm_removable", ErrFlagsInvalid},
		{"no name", func(p *Profile) { p.ProfileName = " " }, "profile_name is required", ErrInvalidProfile},
		{"long name", func(p *Profile) { p.ProfileName = strings.Repeat("é", 126) }, "126 characters", ErrInvalidProfile},
		{"no url", func(p *Profile) { p.URL = "" }, "url is required", ErrInvalidProfile},
		{"http url", func(p *Profile) { p.URL = "http://mdm.example.com/ade/enroll" }, "not an https URL", ErrInvalidProfile},
		{"long url", func(p *Profile) { p.URL = "https://mdm.example.com/" + strings.Repeat("a", 2000) }, "longer than 2000", ErrInvalidProfile},
		{"web url without scheme", func(p *Profile) { p.ConfigurationWebURL = "sso.example.com/?redirect=enroll" }, "configuration_web_url", ErrInvalidProfile},
		{"unknown skip key", func(p *Profile) { p.SkipSetupItems = []string{"Siri", "siri", "Registration"} }, `"siri", "Registration"`, ErrInvalidProfile},
		{"PEM anchor", func(p *Profile) { p.AnchorCerts = []string{"-----BEGIN CERTIFICATE-----"} }, "anchor_certs[0]", ErrInvalidProfile},
		{"base64 of junk", func(p *Profile) { p.SupervisingHostCerts = []string{"aGVsbG8="} }, "supervising_host_certs[0]: not a certificate", ErrInvalidProfile},
		{"long department", func(p *Profile) { p.Department = strings.Repeat("d", 126) }, "department", ErrInvalidProfile},
		{"long phone", func(p *Profile) { p.SupportPhoneNumber = strings.Repeat("1", 51) }, "support_phone_number", ErrInvalidProfile},
		{"bad email", func(p *Profile) { p.SupportEmailAddress = "IT <it@example.com>" }, "support_email_address", ErrInvalidProfile},
		{"long magic", func(p *Profile) { p.OrgMagic = strings.Repeat("m", 257) }, "org_magic", ErrInvalidProfile},
		{"bad language", func(p *Profile) { p.Language = "english" }, "language", ErrInvalidProfile},
		{"bad region", func(p *Profile) { p.Region = "us" }, "region", ErrInvalidProfile},
		{"empty serial", func(p *Profile) { p.Devices = []string{"A", ""} }, "devices[1]", ErrInvalidProfile},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := NewProfile("Staff iPhones", "https://mdm.example.com/ade/enroll")
			tt.change(p)
			err := p.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("valid profile refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, tt.is) || !errors.Is(err, ErrInvalidProfile) {
				t.Fatalf("got %v, want %q (%v)", err, tt.want, tt.is)
			}
		})
	}
	// Several mistakes are all reported.
	p := &Profile{}
	err := p.Validate()
	for _, s := range []string{"profile_name", "url", "is_mdm_removable"} {
		if err == nil || !strings.Contains(err.Error(), s) {
			t.Errorf("empty profile: no complaint of %s in %v", s, err)
		}
	}
}

func TestProfileJSON(t *testing.T) {
	// Absent flags take Apple's defaults.
	var p Profile
	if err := json.Unmarshal([]byte(`{"profile_name":"x","url":"https://a.example/e"}`), &p); err != nil {
		t.Fatal(err)
	}
	if !p.IsMDMRemovable || !p.AllowPairing || p.IsSupervised {
		t.Errorf("defaults %+v", p)
	}
	// False flags are sent; Apple's UUID and the iOS 26 keys when false
	// are not.
	p = Profile{ProfileName: "x", URL: "https://a.example/e", ProfileUUID: "ABC", IsSupervised: true}
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"is_mdm_removable", "allow_pairing", "is_mandatory", "await_device_configured", "is_multi_user", "auto_advance_setup"} {
		if v, ok := m[k]; !ok || v != false {
			t.Errorf("%s = %v, %v; want false sent", k, v, ok)
		}
	}
	for _, k := range []string{"profile_uuid", "is_return_to_service", "do_not_use_profile_from_backup", "devices", "skip_setup_items"} {
		if _, ok := m[k]; ok {
			t.Errorf("%s sent: %s", k, b)
		}
	}
	// Pointer and value encode alike.
	b2, _ := json.Marshal(&p)
	if string(b) != string(b2) {
		t.Errorf("pointer encodes as %s", b2)
	}
}
