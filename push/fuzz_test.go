package push

import (
	"crypto/x509"
	"os"
	"testing"
	"time"

	"software.sslmate.com/src/go-pkcs12"

	"github.com/bramley-mdm/bramley/pki"
)

// The push certificate and key an administrator uploads are outside input.

func FuzzLoadKeyPair(f *testing.F) {
	key := rsaKey(f)
	apple, err := ParseCertificate(mustRead(f, "testdata/nanomdm-apns-push-cert.pem"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(pki.EncodeCertificatePEM(apple), keyPEM(f, key))
	f.Add(apple.Raw, []byte("-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n"))
	f.Add([]byte{}, []byte{})
	f.Fuzz(func(t *testing.T, certPEM, keyPEM []byte) {
		c, err := LoadKeyPair(certPEM, keyPEM)
		if err == nil && (c.Topic == "" || c.TLS.Leaf == nil) {
			t.Errorf("accepted an incomplete certificate: %+v", c)
		}
	})
}

func FuzzLoadPKCS12(f *testing.F) {
	key := rsaKey(f)
	caKey := rsaKey(f)
	ca := mintCA(f, "fuzz CA", caKey)
	leaf := mintCert(f, &x509.Certificate{Subject: subjectUID(testTopic), NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour)}, ca, key.Public(), caKey)
	p12, err := pkcs12.LegacyDES.Encode(key, leaf, []*x509.Certificate{ca}, "pw")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(p12, "pw")
	f.Add(p12[:len(p12)/2], "pw")
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x03}, "")
	f.Fuzz(func(t *testing.T, data []byte, password string) {
		c, err := LoadPKCS12(data, password)
		if err == nil && c.Topic == "" {
			t.Errorf("accepted a certificate without a topic")
		}
	})
}

// FuzzVendorSign feeds customers' requests, which reach the vendor from
// outside, to VendorSign.
func FuzzVendorSign(f *testing.F) {
	rootKey, vendorKey := rsaKey(f), rsaKey(f)
	root := mintCA(f, "Apple Root CA", rootKey)
	vendor := mintCert(f, &x509.Certificate{NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)},
		root, vendorKey.Public(), rootKey)
	_, csr, err := NewPushCSR()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(csr)
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n"))
	vendorPEM, vendorKeyPEM, chain := pki.EncodeCertificatePEM(vendor), keyPEM(f, vendorKey), pki.EncodeCertificatePEM(root)
	f.Fuzz(func(t *testing.T, csrPEM []byte) {
		_, _ = VendorSign(csrPEM, vendorPEM, vendorKeyPEM, chain)
	})
}

func mustRead(f *testing.F, name string) []byte {
	f.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		f.Fatal(err)
	}
	return b
}
