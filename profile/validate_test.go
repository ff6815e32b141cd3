package profile

import (
	"errors"
	"strings"
	"testing"
)

// validProfile returns the golden enrollment profile plus a PEM payload,
// for tests to break one key at a time.
func validProfile(t *testing.T) *Profile {
	t.Helper()
	p, err := EnrollmentProfile(testEnrollmentOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestValidateRejects(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(p *Profile)
		want   []string // Problem.String() of each expected problem, as substrings
	}{
		{
			name: "missing required key",
			change: func(p *Profile) {
				p.PayloadContent[1] = rawOf(t, p.PayloadContent[1], func(m map[string]any) {
					delete(m["PayloadContent"].(map[string]any), "URL")
				})
			},
			want: []string{`com.apple.security.scep PayloadContent[1].PayloadContent.URL: required key is missing`},
		},
		{
			name:   "empty required key",
			change: func(p *Profile) { p.PayloadContent[2].(*MDM).Topic = "" },
			want:   []string{`com.apple.mdm PayloadContent[2].Topic: must not be empty`},
		},
		{
			name: "empty required key in a raw payload",
			change: func(p *Profile) {
				p.PayloadContent = append(p.PayloadContent, &Raw{Header: Header{PayloadType: "com.example.x", PayloadVersion: 1, PayloadIdentifier: "x"}})
			},
			want: []string{`com.example.x PayloadContent[3].PayloadUUID: must not be empty`},
		},
		{
			name: "wrong type",
			change: func(p *Profile) {
				p.PayloadContent[1] = rawOf(t, p.PayloadContent[1], func(m map[string]any) {
					m["PayloadContent"].(map[string]any)["Keysize"] = "2048"
				})
			},
			want: []string{`com.apple.security.scep PayloadContent[1].PayloadContent.Keysize: is <string>, want <integer>`},
		},
		{
			name:   "value outside a rangelist",
			change: func(p *Profile) { p.PayloadContent[1].(*SCEP).PayloadContent.KeyType = "ECSECPrimeRandom" },
			want:   []string{`com.apple.security.scep PayloadContent[1].PayloadContent."Key Type": "ECSECPrimeRandom" is not one of RSA`},
		},
		{
			name:   "key usage outside the documented bits",
			change: func(p *Profile) { p.PayloadContent[1].(*SCEP).PayloadContent.KeyUsage = 2 },
			want:   []string{`PayloadContent[1].PayloadContent."Key Usage": 2 is not one of 0, 1, 4, 5`},
		},
		{
			name:   "top-level rangelist",
			change: func(p *Profile) { p.PayloadScope = "Device" },
			want:   []string{`Configuration PayloadScope: "Device" is not one of System, User`},
		},
		{
			name:   "format",
			change: func(p *Profile) { p.PayloadContent[2].(*MDM).CheckInURL = "http://mdm.example.org/checkin" },
			want:   []string{`com.apple.mdm PayloadContent[2].CheckInURL: "http://mdm.example.org/checkin" does not match ^https://.*$`},
		},
		{
			name: "subject pair of three",
			change: func(p *Profile) {
				p.PayloadContent[1].(*SCEP).PayloadContent.Subject = [][][]string{{{"CN", "a", "b"}}}
			},
			want: []string{`PayloadContent[1].PayloadContent.Subject[0][0]: has 3 items, want 2`},
		},
		{
			name: "misspelt key",
			change: func(p *Profile) {
				p.PayloadContent[1] = rawOf(t, p.PayloadContent[1], func(m map[string]any) {
					inner := m["PayloadContent"].(map[string]any)
					inner["KeyType"] = inner["Key Type"]
					delete(inner, "Key Type")
				})
			},
			want: []string{`com.apple.security.scep PayloadContent[1].PayloadContent.KeyType: unknown key: mdm/profiles/com.apple.security.scep.yaml does not list it`},
		},
		{
			name: "identity UUID names nothing",
			change: func(p *Profile) {
				p.PayloadContent[2].(*MDM).IdentityCertificateUUID = "11111111-2222-4333-8444-555555555555"
			},
			want: []string{`com.apple.mdm PayloadContent[2].IdentityCertificateUUID: "11111111-2222-4333-8444-555555555555" names no payload of this profile`},
		},
		{
			name: "identity UUID names a root",
			change: func(p *Profile) {
				p.PayloadContent[2].(*MDM).IdentityCertificateUUID = p.PayloadContent[0].PayloadHeader().PayloadUUID
			},
			want: []string{`names a com.apple.security.root payload, which gives the device no private key`},
		},
		{
			name:   "duplicate UUID",
			change: func(p *Profile) { p.PayloadContent[0].PayloadHeader().PayloadUUID = p.PayloadUUID },
			want:   []string{`com.apple.security.root PayloadContent[0].PayloadUUID: "00000000-0000-4000-8000-000000000001" is also the PayloadUUID of the profile`},
		},
		{
			name: "duplicate identifier",
			change: func(p *Profile) {
				p.PayloadContent[1].PayloadHeader().PayloadIdentifier = "org.example.mdm.enroll.root"
			},
			want: []string{`PayloadContent[1].PayloadIdentifier: "org.example.mdm.enroll.root" is also the PayloadIdentifier of PayloadContent[0]`},
		},
		{
			name: "two MDM payloads",
			change: func(p *Profile) {
				m := *p.PayloadContent[2].(*MDM)
				m.PayloadUUID, m.PayloadIdentifier = "", ""
				p.Add(&m)
			},
			want: []string{`com.apple.mdm PayloadContent[3]: a profile may hold only one com.apple.mdm payload`},
		},
		{
			name:   "access rights",
			change: func(p *Profile) { p.PayloadContent[2].(*MDM).AccessRights = 128 | 2 },
			want:   []string{"grants 2 (install profiles) without 1", "grants 128 (install provisioning profiles) without 64"},
		},
		{
			name: "capability twice",
			change: func(p *Profile) {
				p.PayloadContent[2].(*MDM).ServerCapabilities = []string{CapabilityToken, CapabilityToken}
			},
			want: []string{`PayloadContent[2].ServerCapabilities[1]: com.apple.mdm.token is listed twice`},
		},
		{
			name:   "root that is no certificate",
			change: func(p *Profile) { p.PayloadContent[0].(*Root).PayloadContent = []byte("not a certificate") },
			want:   []string{`com.apple.security.root PayloadContent[0].PayloadContent: is not a certificate`},
		},
		{
			name:   "bad version",
			change: func(p *Profile) { p.PayloadVersion = 2 },
			want:   []string{`Configuration PayloadVersion: 2 is not one of 1`},
		},
		{
			name: "every problem at once",
			change: func(p *Profile) {
				p.PayloadContent[1].(*SCEP).PayloadContent.KeyType = "DSA"
				p.PayloadContent[1].(*SCEP).PayloadContent.URL = ""
				p.PayloadContent[2].(*MDM).ServerURL = "ftp://x"
			},
			want: []string{`"Key Type": "DSA"`, `PayloadContent[1].PayloadContent.URL: must not be empty`, `PayloadContent[2].ServerURL: "ftp://x" does not match`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := validProfile(t)
			tc.change(p)
			err := Validate(p)
			var verr *ValidationError
			if !errors.As(err, &verr) {
				t.Fatalf("Validate = %v, want a *ValidationError", err)
			}
			if len(verr.Problems) != len(tc.want) {
				t.Errorf("%d problems, want %d: %v", len(verr.Problems), len(tc.want), err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			if _, merr := p.Marshal(); merr == nil {
				t.Error("Marshal wrote a profile Validate rejects")
			}
		})
	}
}

// rawOf turns a typed payload into a Raw one and lets change edit its
// dictionary, to make payloads the typed structs cannot express.
func rawOf(t *testing.T, pl Payload, change func(map[string]any)) *Raw {
	t.Helper()
	items, err := wirePayloads([]Payload{pl})
	if err != nil {
		t.Fatal(err)
	}
	data, err := marshalPlist(items[0])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := unmarshalPlist(data, &m); err != nil {
		t.Fatal(err)
	}
	change(m)
	return newRaw(m)
}

func TestValidateAccepts(t *testing.T) {
	for _, tc := range []struct {
		name string
		make func(t *testing.T) *Profile
	}{
		{"enrollment", validProfile},
		{"unknown payload type keeps its own keys", func(t *testing.T) *Profile {
			p := validProfile(t)
			p.Add(&Raw{Header: Header{PayloadType: "com.apple.mdmclient"}, Keys: map[string]any{"EnableDebug": true}})
			return p
		}},
		{"consent text", func(t *testing.T) *Profile {
			p := validProfile(t)
			p.ConsentText = map[string]string{"default": "Agree?", "de": "Einverstanden?"}
			return p
		}},
		{"PEM payload", func(t *testing.T) *Profile {
			p := validProfile(t)
			root, _ := p.PayloadContent[0].(*Root).Certificate()
			p.Add(NewPEM(root))
			return p
		}},
		{"profile service", func(t *testing.T) *Profile {
			return NewProfileService("org.example.ota", Service{URL: "https://x.example/ota"})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := Validate(tc.make(t)); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestValidateProfileService(t *testing.T) {
	p := NewProfileService("org.example.ota", Service{URL: "", DeviceAttributes: []string{"UDID", "FAVOURITE_COLOUR"}})
	err := Validate(p)
	for _, w := range []string{
		`Profile Service PayloadContent.URL: must not be empty`,
		`Profile Service PayloadContent.DeviceAttributes[1]: "FAVOURITE_COLOUR" is not one of`,
	} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("Validate = %v, want %q", err, w)
		}
	}
}
