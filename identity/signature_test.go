package identity

import (
	"bytes"
	"encoding/base64"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/smallstep/pkcs7"

	"github.com/bramley-mdm/bramley/pki"
)

func TestVerifySignatureRealDevice(t *testing.T) {
	header, body := realSignature(t)
	if len(body) != 302 {
		t.Fatalf("body fixture is %d bytes, want 302", len(body))
	}
	cert, err := VerifySignature(header, body)
	if err != nil {
		t.Fatalf("VerifySignature: %v", err)
	}
	if cert.SerialNumber.Cmp(big.NewInt(0x22)) != 0 || cert.Issuer.CommonName != "ca" {
		t.Errorf("signer serial %x issuer %q, want 22 and CN=ca", cert.SerialNumber, cert.Issuer)
	}

	for _, i := range []int{0, 100, len(body) - 1} {
		altered := bytes.Clone(body)
		altered[i] ^= 0x01
		if _, err := VerifySignature(header, altered); err == nil {
			t.Errorf("verified with body byte %d changed", i)
		}
	}
	if _, err := VerifySignature(header, body[:len(body)-1]); err == nil {
		t.Error("verified a truncated body")
	}
	if _, err := VerifySignature(header, append(bytes.Clone(body), '\n')); err == nil {
		t.Error("verified a body with a byte appended")
	}

	der, _ := base64.StdEncoding.DecodeString(header)
	// The RSA signature value is the last thing before the BER end-of-contents
	// octets; flip a bit in it.
	der[len(der)-20] ^= 0x01
	if _, err := VerifySignature(base64.StdEncoding.EncodeToString(der), body); err == nil {
		t.Error("verified an altered signature")
	}
}

// Header 1 is BER with indefinite lengths, which older pkcs7 parsers refused
// with "BER tag length"; its body was never published, so only parsing is
// checked.
func TestParseSignatureRealDevice(t *testing.T) {
	header := strings.TrimSpace(string(readTestdata(t, "nanomdm-Mdm-Signature.1.header.b64")))
	cert, err := ParseSignature(header)
	if err != nil {
		t.Fatalf("ParseSignature: %v", err)
	}
	if cert.SerialNumber.Cmp(big.NewInt(4)) != 0 || cert.Issuer.CommonName != "MDM CA" {
		t.Errorf("signer serial %x issuer %q, want 4 and CN=MDM CA", cert.SerialNumber, cert.Issuer)
	}
	if _, err := VerifySignature(header, []byte("not the body")); err == nil || !strings.Contains(err.Error(), "verifying") {
		t.Errorf("VerifySignature over another body: %v, want a verification (not parse) error", err)
	}
}

func TestVerifySignatureMalformed(t *testing.T) {
	_, body := realSignature(t)
	ca := newCA(t, time.Now)
	d := issue(t, ca, time.Hour)
	twoSigners := twoSignerSignature(t, body, d, issue(t, ca, time.Hour))

	tests := []struct {
		name   string
		header string
	}{
		{"empty", ""},
		{"not base64", "%%%"},
		{"base64 of junk", base64.StdEncoding.EncodeToString([]byte("junk"))},
		{"too large", strings.Repeat("A", MaxSignatureHeader+4)},
		{"two signers", twoSigners},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if cert, err := VerifySignature(tt.header, body); err == nil {
				t.Errorf("VerifySignature accepted it, signer %v", cert.Subject)
			}
		})
	}
}

func TestVerifySignatureSignDetached(t *testing.T) {
	_, body := realSignature(t)
	d := issue(t, newCA(t, time.Now), time.Hour)
	sig, err := pki.SignDetached(body, d.cert, d.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := VerifySignature(sig, body)
	if err != nil {
		t.Fatalf("VerifySignature: %v", err)
	}
	if !cert.Equal(d.cert) {
		t.Error("returned another certificate than the signer's")
	}
	altered := bytes.Clone(body)
	altered[0] ^= 0x01
	if _, err := VerifySignature(sig, altered); err == nil {
		t.Error("verified an altered body")
	}
}

func twoSignerSignature(t testing.TB, body []byte, a, b device) string {
	t.Helper()
	sd, err := pkcs7.NewSignedData(body)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []device{a, b} {
		if err := sd.AddSigner(d.cert, d.key, pkcs7.SignerInfoConfig{}); err != nil {
			t.Fatal(err)
		}
	}
	sd.Detach()
	der, err := sd.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(der)
}
