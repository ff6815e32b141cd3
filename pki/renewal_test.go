package pki

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"math/big"
	"testing"
	"time"
)

func TestIssueRenewal(t *testing.T) {
	caRecords, renewals := &memCerts{}, &memCerts{}
	ca := testCA(t, WithCertificateStore(caRecords))
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ctx := context.Background()
	subject := pkix.Name{CommonName: "device-1"}

	cert, err := ca.IssueRenewal(ctx, renewals, "UDID-1", key.Public(), subject, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := cert.CheckSignatureFrom(ca.Certificate()); err != nil {
		t.Fatal(err)
	}
	if len(cert.ExtKeyUsage) != 1 || cert.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
		t.Errorf("ExtKeyUsage = %v, want client auth", cert.ExtKeyUsage)
	}
	serial := hex.EncodeToString(cert.SerialNumber.Bytes())
	rec, ok := renewals.certs[serial]
	if !ok || rec.DeviceID != "UDID-1" {
		t.Fatalf("renewal record = %+v (found %v), want device UDID-1", rec, ok)
	}
	// Recorded once, with its device: a device-less record in the CA's own
	// store could win the idempotent insert and hide the device.
	if _, ok := caRecords.certs[serial]; ok {
		t.Error("renewal also recorded in the CA's store")
	}

	// IssueClient still records without a device.
	plain, err := ca.IssueClient(ctx, key.Public(), subject, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if rec := caRecords.certs[hex.EncodeToString(plain.SerialNumber.Bytes())]; rec.DeviceID != "" || rec.Serial == "" {
		t.Errorf("IssueClient record = %+v, want one without a device", rec)
	}
}

func TestIssueRenewalRefused(t *testing.T) {
	ca := testCA(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ctx := context.Background()
	tests := []struct {
		name     string
		store    CertificateStore
		deviceID string
	}{
		{"no store", nil, "UDID-1"},
		{"no device", &memCerts{}, ""},
		{"record fails", &memCerts{err: errors.New("database down")}, "UDID-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if cert, err := ca.IssueRenewal(ctx, tt.store, tt.deviceID, key.Public(), pkix.Name{CommonName: "x"}, time.Hour); err == nil {
				t.Errorf("issued %v", cert.Subject)
			}
		})
	}
}

func TestNewCAFromKeyPair(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	caCert := selfSigned(t, key, true)

	ca, err := NewCAFromKeyPair(caCert, key, clock)
	if err != nil {
		t.Fatal(err)
	}
	if ca.Certificate() != caCert || ca.Signer() != key {
		t.Error("CA does not hold the given pair")
	}
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf, err := ca.IssueClient(context.Background(), leafKey.Public(), pkix.Name{CommonName: "d"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := leaf.CheckSignatureFrom(caCert); err != nil {
		t.Fatal(err)
	}
	if !leaf.NotAfter.Equal(now.Add(time.Hour).Truncate(time.Second)) {
		t.Errorf("NotAfter = %v: the CA's clock was not used", leaf.NotAfter)
	}

	otherKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	tests := []struct {
		name string
		cert *x509.Certificate
		key  *rsa.PrivateKey
	}{
		{"key mismatch", caCert, otherKey},
		{"not a CA", selfSigned(t, key, false), key},
		{"no certificate", nil, key},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewCAFromKeyPair(tt.cert, tt.key, clock); err == nil {
				t.Error("accepted")
			}
		})
	}
}

func selfSigned(t *testing.T, key *rsa.PrivateKey, isCA bool) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "imported CA"},
		NotBefore:             time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:              time.Date(2036, 1, 1, 0, 0, 0, 0, time.UTC),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  isCA,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}
