package push

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"software.sslmate.com/src/go-pkcs12"

	"github.com/bramley-mdm/bramley/pki"
)

const appleTopic = "com.apple.mgmt.External.e0bd1eac-1f17-4c8e-8a63-dd17d3dd35d9"

func readAppleCert(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/nanomdm-apns-push-cert.pem")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestTopicOfApplePushCertificate(t *testing.T) {
	cert, err := ParseCertificate(readAppleCert(t))
	if err != nil {
		t.Fatal(err)
	}
	topic, err := Topic(cert)
	if err != nil {
		t.Fatal(err)
	}
	if topic != appleTopic {
		t.Errorf("topic = %q, want %q", topic, appleTopic)
	}
	// The same certificate as DER, as a .cer file holds it.
	der, err := ParseCertificate(cert.Raw)
	if err != nil {
		t.Fatalf("DER: %v", err)
	}
	if topic, _ := Topic(der); topic != appleTopic {
		t.Errorf("DER topic = %q", topic)
	}
}

// TestAppleCertificateUploadIsExpired uploads Apple's certificate re-signed
// with a throwaway key (its subject and dates kept), as nanomdm's tests do:
// the upload must be flagged as expired — and so must the original with
// any key, since an expired certificate is useless whatever its key.
func TestAppleCertificateUploadIsExpired(t *testing.T) {
	apple, err := ParseCertificate(readAppleCert(t))
	if err != nil {
		t.Fatal(err)
	}
	key := rsaKey(t)
	caKey := rsaKey(t)
	ca := mintCA(t, "Apple Application Integration 2 Certification Authority", caKey)
	tmpl := &x509.Certificate{
		SerialNumber: apple.SerialNumber,
		RawSubject:   apple.RawSubject,
		NotBefore:    apple.NotBefore,
		NotAfter:     apple.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	resigned := mintCert(t, tmpl, ca, key.Public(), caKey)

	for name, certPEM := range map[string][]byte{
		"re-signed": pki.EncodeCertificatePEM(resigned),
		"original":  readAppleCert(t),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := LoadKeyPair(certPEM, keyPEM(t, key))
			if !errors.Is(err, ErrExpired) {
				t.Fatalf("err = %v, want ErrExpired", err)
			}
			var ce *CertificateError
			if !errors.As(err, &ce) || !strings.Contains(ce.Error(), "2022-02-10") || !strings.Contains(ce.Error(), appleTopic) {
				t.Errorf("message %q should name the topic and the expiry date", err)
			}
		})
	}
}

func TestLoadKeyPair(t *testing.T) {
	key, other := rsaKey(t), rsaKey(t)
	caKey := rsaKey(t)
	ca := mintCA(t, "test CA", caKey)
	now := time.Now()
	cert := func(uid string, notAfter time.Time) []byte {
		tmpl := &x509.Certificate{Subject: subjectUID(uid), NotBefore: now.Add(-48 * time.Hour), NotAfter: notAfter}
		if uid == "" {
			tmpl.Subject.ExtraNames = nil
		}
		return pki.EncodeCertificatePEM(mintCert(t, tmpl, ca, key.Public(), caKey))
	}
	valid := cert(testTopic, now.Add(90*24*time.Hour))
	pkcs1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})

	tests := []struct {
		name    string
		cert    []byte
		key     []byte
		wantErr error
	}{
		{"valid PKCS#8 key", valid, keyPEM(t, key), nil},
		{"valid PKCS#1 key", valid, pkcs1, nil},
		{"valid with chain after it", append(valid, pki.EncodeCertificatePEM(ca)...), keyPEM(t, key), nil},
		{"key of another certificate", valid, keyPEM(t, other), ErrKeyMismatch},
		{"expired", cert(testTopic, now.Add(-time.Hour)), keyPEM(t, key), ErrExpired},
		{"app push topic", cert("com.example.app", now.Add(time.Hour)), keyPEM(t, key), ErrNoTopic},
		{"no UID", cert("", now.Add(time.Hour)), keyPEM(t, key), ErrNoTopic},
		{"expired app certificate says topic first", cert("com.example.app", now.Add(-time.Hour)), keyPEM(t, key), ErrNoTopic},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := LoadKeyPair(tt.cert, tt.key)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				var ce *CertificateError
				if !errors.As(err, &ce) {
					t.Errorf("err %T is not a *CertificateError", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Topic != testTopic {
				t.Errorf("Topic = %q", c.Topic)
			}
			if c.TLS.Leaf == nil || c.TLS.PrivateKey == nil || len(c.TLS.Certificate) == 0 {
				t.Errorf("TLS certificate incomplete: %+v", c.TLS)
			}
			if got := c.DaysLeft(now); got < 89 || got > 90 {
				t.Errorf("DaysLeft = %d, want 89 or 90", got)
			}
		})
	}
	if _, err := LoadKeyPair([]byte("not a certificate"), keyPEM(t, key)); err == nil {
		t.Error("garbage certificate accepted")
	}
}

func TestDaysLeft(t *testing.T) {
	end := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	c := &Certificate{NotAfter: end}
	for _, tt := range []struct {
		now  time.Time
		want int
	}{
		{end.Add(-30 * 24 * time.Hour), 30},
		{end.Add(-30*24*time.Hour + time.Second), 29},
		{end.Add(-time.Second), 0},
		{end, 0},
		{end.Add(time.Second), -1},
		{end.Add(48 * time.Hour), -2},
	} {
		if got := c.DaysLeft(tt.now); got != tt.want {
			t.Errorf("DaysLeft(%v) = %d, want %d", tt.now, got, tt.want)
		}
	}
}

func TestLoadPKCS12(t *testing.T) {
	key, other := rsaKey(t), rsaKey(t)
	caKey := rsaKey(t)
	ca := mintCA(t, "test CA", caKey)
	now := time.Now()
	leaf := mintCert(t, &x509.Certificate{Subject: subjectUID(testTopic), NotBefore: now.Add(-time.Hour),
		NotAfter: now.Add(time.Hour)}, ca, key.Public(), caKey)

	tests := []struct {
		name    string
		encoder *pkcs12.Encoder
		key     any
		leaf    *x509.Certificate
		chain   []*x509.Certificate
		decode  string
		wantErr string
	}{
		{name: "modern", encoder: pkcs12.Modern2023, key: key, leaf: leaf, decode: "secret"},
		// Keychain Access still writes 3DES-encrypted files.
		{name: "legacy DES as Keychain exports", encoder: pkcs12.LegacyDES, key: key, leaf: leaf, chain: []*x509.Certificate{ca}, decode: "secret"},
		{name: "chain first", encoder: pkcs12.Modern2023, key: key, leaf: ca, chain: []*x509.Certificate{leaf}, decode: "secret"},
		{name: "wrong password", encoder: pkcs12.Modern2023, key: key, leaf: leaf, decode: "guess", wantErr: "wrong password"},
		{name: "wrong key", encoder: pkcs12.Modern2023, key: other, leaf: leaf, decode: "secret", wantErr: ErrKeyMismatch.Error()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p12, err := tt.encoder.Encode(tt.key, tt.leaf, tt.chain, "secret")
			if err != nil {
				t.Fatal(err)
			}
			c, err := LoadPKCS12(p12, tt.decode)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Topic != testTopic || !c.TLS.Leaf.Equal(leaf) {
				t.Errorf("loaded topic %q, leaf %s", c.Topic, c.TLS.Leaf.Subject)
			}
		})
	}

	t.Run("EC key", func(t *testing.T) {
		ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		leaf := mintCert(t, &x509.Certificate{Subject: subjectUID(testTopic), NotBefore: now.Add(-time.Hour),
			NotAfter: now.Add(time.Hour)}, ca, ec.Public(), caKey)
		p12, err := pkcs12.Modern2023.Encode(ec, leaf, nil, "")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := LoadPKCS12(p12, ""); err != nil {
			t.Fatal(err)
		}
	})
}
