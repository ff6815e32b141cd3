package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"os"
	"testing"
	"time"

	"github.com/smallstep/pkcs7"
)

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseCertificatePEM(data)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func at(s string) func() time.Time {
	return func() time.Time { t, _ := time.Parse(time.DateOnly, s); return t }
}

// TestAppleDeviceChainReal: real device certificates (INDEX.md ota/)
// verify against the built-in, long expired, Apple iPhone Device CA by
// key, while their own validity still counts.
func TestAppleDeviceChainReal(t *testing.T) {
	cert2018 := readCert(t, "testdata/micromdm-apple-device-cert-2018.pem")
	cert2024 := readCert(t, "testdata/micromdm-apple-device-cert-2024.pem")
	tests := []struct {
		name string
		leaf *x509.Certificate
		now  string
		ok   bool
	}{
		{"2024 certificate, SHA-256, within its validity", cert2024, "2026-01-01", true},
		{"2018 certificate, SHA-1, within its validity", cert2018, "2019-01-01", true},
		{"2018 certificate after it expired", cert2018, "2026-01-01", false},
		{"2024 certificate before it was issued", cert2024, "2023-01-01", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := NewAppleDeviceVerifier(nil, at(tt.now)).VerifyChain(tt.leaf, nil)
			if tt.ok && err != nil {
				t.Fatalf("VerifyChain: %v", err)
			}
			if !tt.ok && !errors.Is(err, ErrUntrustedSigner) {
				t.Fatalf("VerifyChain = %v, want ErrUntrustedSigner", err)
			}
		})
	}
}

type testChain struct {
	root, inter, leaf *x509.Certificate
	leafKey           *ecdsa.PrivateKey
}

// newTestChain makes root → intermediate (expired, as Apple's) → leaf.
func newTestChain(t *testing.T, name string) testChain {
	t.Helper()
	now := time.Now()
	mk := func(tmpl, parent *x509.Certificate, pub any, key *ecdsa.PrivateKey) *x509.Certificate {
		tmpl.SerialNumber = big.NewInt(now.UnixNano())
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	rootKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	interKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := func(cn string, nb, na time.Time) *x509.Certificate {
		return &x509.Certificate{Subject: pkix.Name{CommonName: cn}, NotBefore: nb, NotAfter: na,
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	}
	rt := caTmpl(name+" root", now.Add(-time.Hour), now.Add(time.Hour))
	root := mk(rt, rt, &rootKey.PublicKey, rootKey)
	inter := mk(caTmpl(name+" device CA", now.Add(-48*time.Hour), now.Add(-24*time.Hour)), root, &interKey.PublicKey, rootKey)
	leaf := mk(&x509.Certificate{Subject: pkix.Name{CommonName: "device"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)},
		inter, &leafKey.PublicKey, interKey)
	return testChain{root: root, inter: inter, leaf: leaf, leafKey: leafKey}
}

func signAttached(t *testing.T, content []byte, c testChain) []byte {
	t.Helper()
	sd, err := pkcs7.NewSignedData(content)
	if err != nil {
		t.Fatal(err)
	}
	if err := sd.AddSignerChain(c.leaf, c.leafKey, []*x509.Certificate{c.inter}, pkcs7.SignerInfoConfig{}); err != nil {
		t.Fatal(err)
	}
	der, err := sd.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestAppleDeviceVerify(t *testing.T) {
	apple := newTestChain(t, "simulated Apple")
	foreign := newTestChain(t, "foreign")
	v := NewAppleDeviceVerifier([]*x509.Certificate{apple.root}, time.Now)
	content := []byte("<plist/>")

	got, signer, err := v.Verify(signAttached(t, content, apple))
	if err != nil || string(got) != string(content) || !signer.Equal(apple.leaf) {
		t.Fatalf("Verify = %q, %v, %v", got, signer, err)
	}
	if _, _, err := v.Verify(signAttached(t, content, foreign)); !errors.Is(err, ErrUntrustedSigner) {
		t.Errorf("foreign signer: %v, want ErrUntrustedSigner", err)
	}
	tampered := signAttached(t, content, apple)
	i := len(tampered) - 1
	tampered[i] ^= 0xff // inside the signature
	if _, _, err := v.Verify(tampered); !errors.Is(err, ErrUntrustedSigner) && !errors.Is(err, ErrMalformedCMS) {
		t.Errorf("tampered signature: %v", err)
	}
	if _, _, err := v.Verify([]byte("not CMS")); !errors.Is(err, ErrMalformedCMS) {
		t.Errorf("garbage: %v, want ErrMalformedCMS", err)
	}
	// Without the intermediate in the CMS the chain cannot be climbed.
	if err := v.VerifyChain(apple.leaf, nil); !errors.Is(err, ErrUntrustedSigner) {
		t.Errorf("chain without its intermediate: %v", err)
	}
	// The intermediate itself as an anchor is enough.
	if err := NewAppleDeviceVerifier([]*x509.Certificate{apple.inter}, time.Now).VerifyChain(apple.leaf, nil); err != nil {
		t.Errorf("intermediate as anchor: %v", err)
	}
}

func FuzzAppleDeviceVerify(f *testing.F) {
	f.Add([]byte{0x30, 0x80, 0, 0})
	v := NewAppleDeviceVerifier(nil, time.Now)
	f.Fuzz(func(t *testing.T, data []byte) { _, _, _ = v.Verify(data) })
}
