package profile

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseFixtures(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.mobileconfig"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixture profiles in testdata: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data := readTestdata(t, filepath.Base(f))
			p, err := Parse(data)
			if err != nil {
				t.Fatal(err)
			}
			if p.PayloadType != TypeConfiguration || p.PayloadVersion != 1 || p.PayloadIdentifier == "" || p.PayloadUUID == "" || len(p.PayloadContent) == 0 {
				t.Errorf("parsed %+v", p)
			}
			for i, pl := range p.PayloadContent {
				if h := pl.PayloadHeader(); h.PayloadType == "" || h.PayloadUUID == "" || h.PayloadVersion != 1 {
					t.Errorf("payload %d header %+v", i, h)
				}
			}
			// Writing a parsed profile back loses nothing inside payloads.
			raw, err := p.encode()
			if err != nil {
				t.Fatal(err)
			}
			again, err := Parse(raw)
			if err != nil {
				t.Fatal(err)
			}
			if len(again.PayloadContent) != len(p.PayloadContent) {
				t.Errorf("%d payloads after a round trip, want %d", len(again.PayloadContent), len(p.PayloadContent))
			}
		})
	}
}

func TestParseNanoMDMEnroll(t *testing.T) {
	p, err := Parse(readTestdata(t, "nanomdm-enroll.mobileconfig"))
	if err != nil {
		t.Fatal(err)
	}
	scep, ok := p.PayloadContent[0].(*SCEP)
	if !ok {
		t.Fatalf("payload 0 is %T, want *SCEP", p.PayloadContent[0])
	}
	if c := scep.PayloadContent; c.KeyType != "RSA" || c.KeyUsage != 5 || c.Keysize != 2048 || c.Challenge != "SCEP-CHALLENGE-HERE" {
		t.Errorf("SCEP content = %+v", c)
	}
	m, ok := p.PayloadContent[1].(*MDM)
	if !ok {
		t.Fatalf("payload 1 is %T, want *MDM", p.PayloadContent[1])
	}
	if m.IdentityCertificateUUID != scep.PayloadUUID || m.AccessRights != 8191 || !m.SignMessage || len(m.ServerCapabilities) != 3 {
		t.Errorf("MDM = %+v", m)
	}
	if err := Validate(p); err != nil {
		t.Errorf("nanomdm's template fails validation: %v", err)
	}
}

func TestParseSCEPTestQuirks(t *testing.T) {
	p, err := Parse(readTestdata(t, "scep-sceptest.mobileconfig"))
	if err != nil {
		t.Fatal(err)
	}
	// "KeyType" (no space) is not a key of the SCEP payload, so the payload
	// stays raw; its <real> PayloadVersion still reads as 1.
	raw, ok := p.PayloadContent[0].(*Raw)
	if !ok {
		t.Fatalf("payload 0 is %T, want *Raw", p.PayloadContent[0])
	}
	if raw.PayloadVersion != 1 || raw.PayloadType != TypeSCEP {
		t.Errorf("raw header = %+v", raw.Header)
	}
	if _, ok := raw.Keys["PayloadContent"].(map[string]any)["KeyType"]; !ok {
		t.Error("the misspelt key was lost")
	}
	// The root payload's <data> holds PEM text, not DER.
	root, ok := p.PayloadContent[1].(*Root)
	if !ok {
		t.Fatalf("payload 1 is %T, want *Root", p.PayloadContent[1])
	}
	if !bytes.HasPrefix(root.PayloadContent, []byte("-----BEGIN CERTIFICATE-----")) {
		t.Error("fixture no longer has PEM in its root payload")
	}
	cert, err := root.Certificate()
	if err != nil {
		t.Fatal(err)
	}
	if cert.Subject.Organization[0] != "etcd-ca" {
		t.Errorf("root subject = %v", cert.Subject)
	}
	// Validation names the misspelling a device would silently ignore.
	if err := Validate(p); err == nil || !strings.Contains(err.Error(), `PayloadContent[0].PayloadContent.KeyType: unknown key`) {
		t.Errorf("Validate = %v", err)
	}
}

func TestParseChromeIdentifiers(t *testing.T) {
	p, err := Parse(readTestdata(t, "nanocmd-chrome-safari-test.mobileconfig"))
	if err != nil {
		t.Fatal(err)
	}
	if p.PayloadIdentifier != "0DA6B871-623D-400A-B0EB-3BE489E39F2A" || p.PayloadUUID != "D0CCE647-B1D6-49B0-82BC-C1BCC8A33218" {
		t.Errorf("identifier/UUID = %s/%s", p.PayloadIdentifier, p.PayloadUUID)
	}
	raw := p.PayloadContent[0].(*Raw)
	if raw.Keys["DefaultBrowserSettingEnabled"] != true {
		t.Errorf("raw keys = %v", raw.Keys)
	}
	if err := Validate(p); err != nil {
		t.Errorf("Validate = %v", err)
	}
}

func TestParseRejects(t *testing.T) {
	for name, data := range map[string][]byte{
		"empty":              nil,
		"binary plist":       []byte("bplist00\xd0\x08"),
		"garbage":            []byte("\x30\x03\x02\x01"),
		"not a dictionary":   []byte(`<plist><array/></plist>`),
		"other payload type": []byte(`<plist><dict><key>PayloadType</key><string>com.apple.mdm</string></dict></plist>`),
		"dict content":       []byte(`<plist><dict><key>PayloadType</key><string>Configuration</string><key>PayloadContent</key><dict/></dict></plist>`),
		"array service":      []byte(`<plist><dict><key>PayloadType</key><string>Profile Service</string><key>PayloadContent</key><array/></dict></plist>`),
		"string item":        []byte(`<plist><dict><key>PayloadType</key><string>Configuration</string><key>PayloadContent</key><array><string>x</string></array></dict></plist>`),
		"fractional version": []byte(`<plist><dict><key>PayloadType</key><string>Configuration</string><key>PayloadVersion</key><real>1.5</real></dict></plist>`),
		"deep":               []byte("<plist>" + strings.Repeat("<array>", 1000) + strings.Repeat("</array>", 1000) + "</plist>"),
		"deep BER":           bytes.Repeat([]byte{0x30, 0x80}, 1000),
		"unsigned CMS":       {0x30, 0x0b, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03},
		"unterminated plist": []byte(`<plist><dict><key>PayloadType</key>`),
		"mistyped top key":   []byte(`<plist><dict><key>PayloadType</key><string>Configuration</string><key>PayloadScope</key><integer>1</integer></dict></plist>`),
		"mistyped consent":   []byte(`<plist><dict><key>PayloadType</key><string>Configuration</string><key>ConsentText</key><dict><key>en</key><integer>1</integer></dict></dict></plist>`),
		"mistyped service":   []byte(`<plist><dict><key>PayloadType</key><string>Profile Service</string><key>PayloadContent</key><dict><key>URL</key><integer>1</integer></dict></dict></plist>`),
	} {
		t.Run(name, func(t *testing.T) {
			if p, err := Parse(data); err == nil {
				t.Errorf("Parse accepted it: %+v", p)
			}
		})
	}
}

func TestParseSignedBinaryPlist(t *testing.T) {
	ca := testCA(t)
	cert, key := issue(t, ca, "signer")
	signed, err := Sign([]byte("bplist00\xd0\x08"), cert, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Parse(signed); err == nil || !strings.Contains(err.Error(), "binary plists are not accepted") {
		t.Errorf("Parse = %v", err)
	}
}
