package profile

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"path/filepath"
	"testing"
	"time"
)

// FuzzParse feeds Parse profiles, signed profiles and broken variants.
// Parse must never panic, and what it accepts must encode and validate
// without panicking either.
func FuzzParse(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.mobileconfig"))
	if err != nil || len(files) == 0 {
		f.Fatalf("no fixture profiles in testdata: %v", err)
	}
	for _, file := range files {
		f.Add(readTestdata(f, filepath.Base(file)))
	}
	f.Add(readTestdata(f, filepath.Join("golden", "enrollment.mobileconfig")))
	f.Add(readTestdata(f, filepath.Join("golden", "profile-service.mobileconfig")))

	// A small self-signed key keeps the set-up quick: under -fuzz every
	// worker runs it, with crypto instrumented for coverage.
	key, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		f.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fuzz"}, NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		f.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		f.Fatal(err)
	}
	plain := readTestdata(f, "nanomdm-enroll.mobileconfig")
	signed, err := Sign(plain, cert, key, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(signed)
	p, err := Parse(plain)
	if err != nil {
		f.Fatal(err)
	}
	if err := EncryptPayloads(p, cert); err != nil {
		f.Fatal(err)
	}
	enc, err := p.Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(enc)
	f.Add(p.EncryptedPayloadContent)
	f.Add([]byte(`<plist><dict><key>PayloadType</key><string>Configuration</string><key>PayloadVersion</key><real>1</real><key>PayloadContent</key><array><dict><key>PayloadType</key><string>com.apple.mdm</string><key>AccessRights</key><real>nan</real></dict></array></dict></plist>`))

	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(data)
		if err != nil {
			return
		}
		if p.PayloadType != TypeConfiguration && p.PayloadType != TypeProfileService {
			t.Errorf("accepted PayloadType %q", p.PayloadType)
		}
		_ = Validate(p)
		if _, err := p.Marshal(); err == nil {
			// What passes validation must parse again.
			raw, _ := p.encode()
			if _, err := Parse(raw); err != nil {
				t.Errorf("a valid profile does not parse back: %v", err)
			}
		}
	})
}
