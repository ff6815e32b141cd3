package profile

import (
	"bytes"
	"crypto/x509"
	"reflect"
	"strings"
	"testing"

	"github.com/smallstep/pkcs7"

	"github.com/bramley-mdm/bramley/pki"
)

func TestSignVerifiesWithOpenSSL(t *testing.T) {
	ca := testCA(t)
	signer, key := issue(t, ca, "bramley profile signer")
	p, err := EnrollmentProfile(testEnrollmentOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	plain, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	signed, err := Sign(plain, signer, key, ca.Chain())
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	rootFile := writeFile(t, dir, "root.pem", pki.EncodeCertificatePEM(ca.Root()))
	verify := func(data []byte) ([]byte, error) {
		in := writeFile(t, dir, "signed.mobileconfig", data)
		return openssl(t, "cms", "-verify", "-binary", "-inform", "DER", "-in", in, "-CAfile", rootFile, "-purpose", "any")
	}
	out, err := verify(signed)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, plain) {
		t.Errorf("openssl printed something other than the profile:\n%s", out)
	}

	// One changed byte inside the signed plist breaks the signature.
	tampered := bytes.Clone(signed)
	i := bytes.Index(tampered, []byte("org.example.mdm.enroll"))
	if i < 0 {
		t.Fatal("plist not found in the signed profile")
	}
	tampered[i] ^= 0x01
	if out, err := verify(tampered); err == nil {
		t.Errorf("openssl verified a tampered profile:\n%s", out)
	}

	// Go's own verification agrees.
	roots := x509.NewCertPool()
	roots.AddCert(ca.Root())
	content, who, err := Verify(signed, roots)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(content, plain) || !who.Equal(signer) {
		t.Error("Verify returned the wrong content or signer")
	}
	if _, _, err := Verify(tampered, roots); err == nil {
		t.Error("Verify accepted a tampered profile")
	}
	other := x509.NewCertPool()
	other.AddCert(testCA(t).Root())
	if _, _, err := Verify(signed, other); err == nil {
		t.Error("Verify accepted a signer that does not chain to the roots")
	}
	if _, _, err := Verify(signed, nil); err == nil {
		t.Error("Verify without roots succeeded")
	}

	// A signed profile parses like a plain one.
	parsed, err := Parse(signed)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(stripUUIDFunc(parsed), stripUUIDFunc(p)) {
		t.Errorf("Parse(Sign(p)) differs from p:\n%+v\n%+v", parsed, p)
	}
}

func stripUUIDFunc(p *Profile) *Profile {
	c := *p
	c.newUUID = nil
	return &c
}

func TestSignRejectsWrongChain(t *testing.T) {
	ca := testCA(t)
	signer, key := issue(t, ca, "signer")
	if _, err := Sign([]byte("<plist/>"), signer, key, []*x509.Certificate{testCA(t).Certificate()}); err == nil {
		t.Error("Sign accepted a chain whose first certificate did not issue the signer")
	}
}

func TestEncryptPayloadsDecryptsWithOpenSSL(t *testing.T) {
	ca := testCA(t)
	device, deviceKey := issue(t, ca, "device identity from OTA phase 2")
	p, err := EnrollmentProfile(testEnrollmentOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	items, err := wirePayloads(p.PayloadContent)
	if err != nil {
		t.Fatal(err)
	}
	wantArray, err := marshalPlist(items)
	if err != nil {
		t.Fatal(err)
	}
	original := append([]Payload(nil), p.PayloadContent...)

	if err := EncryptPayloads(p, device); err != nil {
		t.Fatal(err)
	}
	if !p.IsEncrypted || p.PayloadContent != nil || len(p.EncryptedPayloadContent) == 0 {
		t.Fatalf("profile after EncryptPayloads: %+v", p)
	}
	data, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, []byte("one-time-challenge")) {
		t.Error("the SCEP challenge is readable in the encrypted profile")
	}
	if err := EncryptPayloads(p, device); err == nil {
		t.Error("encrypted the payloads twice")
	}

	dir := t.TempDir()
	out, err := openssl(t, "cms", "-decrypt", "-binary", "-inform", "DER",
		"-in", writeFile(t, dir, "payloads.der", p.EncryptedPayloadContent),
		"-recip", writeFile(t, dir, "cert.pem", pki.EncodeCertificatePEM(device)),
		"-inkey", writeKey(t, dir, "key.pem", deviceKey))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, wantArray) {
		t.Errorf("openssl decrypted:\n%s\nwant:\n%s", out, wantArray)
	}
	if !bytes.Contains(out, []byte("<plist version=\"1.0\">\n<array>")) {
		t.Error("the encrypted plist's top level is not an array")
	}

	// The library bramley's SCEP code uses reads it too, and names AES-256-CBC.
	p7, err := pkcs7.Parse(p.EncryptedPayloadContent)
	if err != nil {
		t.Fatal(err)
	}
	if plain, err := p7.Decrypt(device, deviceKey); err != nil || !bytes.Equal(plain, wantArray) {
		t.Errorf("pkcs7 Decrypt = %v", err)
	}
	if asn, _ := openssl(t, "asn1parse", "-inform", "DER", "-in", writeFile(t, dir, "env.der", p.EncryptedPayloadContent)); !strings.Contains(string(asn), "aes-256-cbc") {
		t.Errorf("content encryption is not AES-256-CBC:\n%s", asn)
	}

	// A device, or bramley's simulator, gets the payloads back.
	parsed, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if err := DecryptPayloads(parsed, device, deviceKey); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(parsed.PayloadContent, original) {
		t.Errorf("decrypted payloads differ:\n%#v\nwant:\n%#v", parsed.PayloadContent, original)
	}
	other, otherKey := issue(t, ca, "another device")
	again, _ := Parse(data)
	if err := DecryptPayloads(again, other, otherKey); err == nil {
		t.Error("another device decrypted the payloads")
	}
}

func TestEncryptPayloadsRefuses(t *testing.T) {
	ca := testCA(t)
	device, _ := issue(t, ca, "device")
	p := validProfile(t)
	p.PayloadContent[1].(*SCEP).PayloadContent.KeyType = "DSA"
	if err := EncryptPayloads(p, device); err == nil || p.IsEncrypted {
		t.Error("encrypted payloads that fail validation")
	}
	svc := NewProfileService("org.example.ota", Service{URL: "https://x.example"})
	if err := EncryptPayloads(svc, device); err == nil {
		t.Error("encrypted a profile service")
	}
}
