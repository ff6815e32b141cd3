package profile

import (
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/micromdm/plist"
	"software.sslmate.com/src/go-pkcs12"
)

func TestEnrollmentProfileGolden(t *testing.T) {
	p, err := EnrollmentProfile(testEnrollmentOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	got, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "enrollment.mobileconfig", got)

	// The order is Apple's: trust, then identity, then MDM.
	var types []string
	for _, pl := range p.PayloadContent {
		types = append(types, pl.PayloadHeader().PayloadType)
	}
	if want := []string{TypeRoot, TypeSCEP, TypeMDM}; !slices.Equal(types, want) {
		t.Errorf("payload types = %q, want %q", types, want)
	}
	m := p.PayloadContent[2].(*MDM)
	if id := p.PayloadContent[1].PayloadHeader().PayloadUUID; m.IdentityCertificateUUID != id {
		t.Errorf("IdentityCertificateUUID = %q, want the SCEP payload's %q", m.IdentityCertificateUUID, id)
	}
	for i, pl := range p.PayloadContent {
		if id := pl.PayloadHeader().PayloadIdentifier; !strings.HasPrefix(id, "org.example.mdm.enroll.") {
			t.Errorf("payload %d identifier %q is not derived from the profile's", i, id)
		}
	}
}

// TestEnrollmentProfileShape builds what nanomdm's enrollment template
// describes and compares the payload types and keys with it.
func TestEnrollmentProfileShape(t *testing.T) {
	p, err := EnrollmentProfile(EnrollmentOptions{
		Identifier:  "com.github.micromdm.nanomdm",
		DisplayName: "Enrollment Profile",
		SCEP:        &SCEPContent{URL: "https://mdm.example.org/scep", Challenge: "SCEP-CHALLENGE-HERE"},
		ServerURL:   "https://mdm.example.org/mdm",
		Topic:       "com.apple.mgmt.External.YOUR-PUSH-TOPIC-HERE",
		SignMessage: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	ours, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, want := shape(t, ours), shape(t, readTestdata(t, "nanomdm-enroll.mobileconfig"))
	if !reflect.DeepEqual(got, want) {
		t.Errorf("shape differs from nanomdm-enroll.mobileconfig\ngot:  %v\nwant: %v", got, want)
	}
}

// shape lists, per payload type, the keys of the payload and of its
// PayloadContent dictionary.
func shape(t *testing.T, data []byte) map[string][]string {
	t.Helper()
	var top map[string]any
	if err := plist.Unmarshal(data, &top); err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{"top": slices.Sorted(maps.Keys(top))}
	for _, item := range top["PayloadContent"].([]any) {
		m := item.(map[string]any)
		typ := m["PayloadType"].(string)
		out[typ] = slices.Sorted(maps.Keys(m))
		if inner, ok := m["PayloadContent"].(map[string]any); ok {
			out[typ+".PayloadContent"] = slices.Sorted(maps.Keys(inner))
		}
	}
	return out
}

func TestEnrollmentProfileDefaults(t *testing.T) {
	opts := testEnrollmentOptions(t)
	p, err := EnrollmentProfile(opts)
	if err != nil {
		t.Fatal(err)
	}
	scep := p.PayloadContent[1].(*SCEP).PayloadContent
	if scep.Keysize != 2048 || scep.KeyType != "RSA" || scep.KeyUsage != 5 {
		t.Errorf("SCEP defaults = %d/%q/%d, want 2048/RSA/5", scep.Keysize, scep.KeyType, scep.KeyUsage)
	}
	if opts.SCEP.Keysize != 0 {
		t.Error("EnrollmentProfile changed the caller's SCEPContent")
	}
	m := p.PayloadContent[2].(*MDM)
	if m.AccessRights != 8191 || !m.CheckOutWhenRemoved || !m.SignMessage {
		t.Errorf("MDM = %+v", m)
	}
	if want := []string{CapabilityPerUserConnections, CapabilityBootstrapToken}; !slices.Equal(m.ServerCapabilities, want) {
		t.Errorf("ServerCapabilities = %q, want %q", m.ServerCapabilities, want)
	}
	if p.PayloadIdentifier != opts.Identifier {
		t.Errorf("identifier = %q", p.PayloadIdentifier)
	}
}

func TestEnrollmentProfilePKCS12(t *testing.T) {
	ca := testCA(t)
	cert, key := issue(t, ca, "device")
	pfx, err := pkcs12.Modern.Encode(key, cert, nil, "secret")
	if err != nil {
		t.Fatal(err)
	}
	opts := testEnrollmentOptions(t)
	opts.SCEP, opts.PKCS12, opts.PKCS12Password = nil, pfx, "secret"
	p, err := EnrollmentProfile(opts)
	if err != nil {
		t.Fatal(err)
	}
	id, ok := p.PayloadContent[1].(*PKCS12)
	if !ok || id.Password != "secret" {
		t.Fatalf("identity payload = %#v", p.PayloadContent[1])
	}
	if got := p.PayloadContent[2].(*MDM).IdentityCertificateUUID; got != id.PayloadUUID {
		t.Errorf("IdentityCertificateUUID = %q, want %q", got, id.PayloadUUID)
	}
	if _, err := p.Marshal(); err != nil {
		t.Fatal(err)
	}
}

func TestEnrollmentProfileErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*EnrollmentOptions)
		want   string
	}{
		{"no identifier", func(o *EnrollmentOptions) { o.Identifier = "" }, "no identifier"},
		{"no server URL", func(o *EnrollmentOptions) { o.ServerURL = "" }, "no server URL"},
		{"no topic", func(o *EnrollmentOptions) { o.Topic = "" }, "no push topic"},
		{"no identity", func(o *EnrollmentOptions) { o.SCEP = nil }, "no identity"},
		{"two identities", func(o *EnrollmentOptions) { o.PKCS12 = []byte{1} }, "both"},
		{"plain HTTP", func(o *EnrollmentOptions) { o.ServerURL = "http://mdm.example.org/mdm" }, `ServerURL: "http://mdm.example.org/mdm" does not match ^https://.*$`},
		{"bad topic", func(o *EnrollmentOptions) { o.Topic = "org.example.push" }, "Topic"},
		{"bad key size", func(o *EnrollmentOptions) { o.SCEP.Keysize = 3072 }, `PayloadContent[1].PayloadContent.Keysize: 3072 is not one of 1024, 2048, 4096`},
		{"install without inspect", func(o *EnrollmentOptions) { o.AccessRights = 2 }, "without 1"},
		{"unknown capability", func(o *EnrollmentOptions) { o.ServerCapabilities = []string{"com.example.x"} }, `ServerCapabilities[0]: "com.example.x" is not one of`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := testEnrollmentOptions(t)
			scep := *opts.SCEP
			opts.SCEP = &scep
			tc.change(&opts)
			_, err := EnrollmentProfile(opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestNewProfileService(t *testing.T) {
	p := NewProfileService("org.example.mdm.ota", Service{URL: "https://mdm.example.org/ota/phase2", Challenge: "abc"}, WithUUIDs(seqUUIDs()))
	got, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "profile-service.mobileconfig", got)
	back, err := Parse(got)
	if err != nil {
		t.Fatal(err)
	}
	if back.PayloadType != TypeProfileService || back.Service == nil || back.Service.Challenge != "abc" || len(back.Service.DeviceAttributes) == 0 {
		t.Errorf("parsed back = %+v, service %+v", back, back.Service)
	}
}

func TestAddIdentifiers(t *testing.T) {
	ca := testCA(t)
	p := New("org.example.p", WithUUIDs(seqUUIDs()))
	p.Add(NewRoot(ca.Certificate()), NewRoot(ca.Certificate()), NewPEM(ca.Certificate()))
	var ids []string
	for _, pl := range p.PayloadContent {
		ids = append(ids, pl.PayloadHeader().PayloadIdentifier)
	}
	if want := []string{"org.example.p.root", "org.example.p.root.2", "org.example.p.pem"}; !slices.Equal(ids, want) {
		t.Errorf("identifiers = %q, want %q", ids, want)
	}
	if p.PayloadUUID != "00000000-0000-4000-8000-000000000001" || p.PayloadContent[2].PayloadHeader().PayloadUUID != "00000000-0000-4000-8000-000000000004" {
		t.Errorf("UUIDs not taken from WithUUIDs")
	}
	if p.Payload("00000000-0000-4000-8000-000000000003") != p.PayloadContent[1] {
		t.Error("Payload(uuid) did not find the second root")
	}
	if _, err := p.Marshal(); err != nil {
		t.Fatal(err)
	}
}
