package push

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"sync"
	"testing"
	"time"

	"github.com/bramley-mdm/bramley/appletest"
	"github.com/bramley-mdm/bramley/pki"
)

const testTopic = "com.apple.mgmt.External.0b5e6b7f-2d6c-4c57-9b1e-6f1b0e2a7c11"

// clock is a settable clock for tests.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// rsaKey returns a fresh RSA 2048 key, as Apple's push keys are.
func rsaKey(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// mintCA returns a self-signed CA named cn.
func mintCA(t testing.TB, cn string, key crypto.Signer) *x509.Certificate {
	t.Helper()
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(now.UnixNano()),
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"Apple Inc."}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	return mintCert(t, tmpl, nil, key.Public(), key)
}

// mintCert signs tmpl for pub with parent and parentKey; a nil parent
// makes it self-signed.
func mintCert(t testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, parentKey crypto.Signer) *x509.Certificate {
	t.Helper()
	if tmpl.SerialNumber == nil {
		tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
	}
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// subjectUID returns a subject holding uid, as Apple's push certificates.
func subjectUID(uid string) pkix.Name {
	return pkix.Name{
		CommonName: "APSP:test",
		Country:    []string{"US"},
		ExtraNames: []pkix.AttributeTypeAndValue{{Type: asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 1}, Value: uid}},
	}
}

func keyPEM(t testing.TB, key crypto.Signer) []byte {
	t.Helper()
	b, err := pki.EncodePrivateKeyPEM(key)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fakeAPNs starts a fake APNs and loads a push certificate it accepts.
func fakeAPNs(t testing.TB, topic string, opts ...appletest.APNsOption) (*appletest.APNs, *Certificate) {
	t.Helper()
	fake := appletest.NewAPNs(t, opts...)
	certPEM, keyPEM := fake.PushCertificate(topic)
	cert, err := LoadKeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatalf("loading the fake's push certificate: %v", err)
	}
	return fake, cert
}

func newProvider(t testing.TB, fake *appletest.APNs, cert *Certificate, opts ...ProviderOption) *Provider {
	t.Helper()
	p, err := NewProvider(cert, append([]ProviderOption{WithURL(fake.URL()), WithRootCAs(fake.RootCAs())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// token returns a 32-byte device token made from n, as APNs tokens are.
func token(n int) []byte {
	b := make([]byte, 32)
	b[0], b[1], b[2], b[31] = byte(n>>16), byte(n>>8), byte(n), 0xAB
	return b
}
