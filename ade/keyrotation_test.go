package ade

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bramley-mdm/bramley/appletest"
)

// keyedTokens is memTokens replacing a token of the same consumer key, as
// TokenStore describes.
type keyedTokens struct{ memTokens }

func (m *keyedTokens) PutToken(_ context.Context, t Token) (Token, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, old := range m.tokens {
		if old.ConsumerKey == t.ConsumerKey {
			t.ID, t.CreatedAt = old.ID, old.CreatedAt
			m.tokens[i] = t
			return t, nil
		}
	}
	m.tokens = append(m.tokens, t)
	return t, nil
}

// memKeys is a KeyPair and KeyRotation in memory.
type memKeys struct {
	t                  *testing.T
	mu                 sync.Mutex
	cert, prevCert     *x509.Certificate
	key, prevKey       crypto.PrivateKey
	rotations, forgets int
}

func newMemKeys(t *testing.T) *memKeys {
	cert, key, err := NewTokenKeyPair(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return &memKeys{t: t, cert: cert, key: key}
}

func (m *memKeys) keyPair(context.Context) (*x509.Certificate, crypto.PrivateKey, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cert, m.key, nil
}

func (m *memKeys) RotateKeyPair(context.Context) (*x509.Certificate, error) {
	cert, key, err := NewTokenKeyPair(time.Now())
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.prevCert, m.prevKey, m.cert, m.key = m.cert, m.key, cert, key
	m.rotations++
	return cert, nil
}

func (m *memKeys) PreviousKeyPair(context.Context) (*x509.Certificate, crypto.PrivateKey, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.prevCert, m.prevKey, nil
}

func (m *memKeys) ForgetPreviousKeyPair(_ context.Context, cert *x509.Certificate) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.prevCert != nil && m.prevCert.Equal(cert) {
		m.prevCert, m.prevKey = nil, nil
		m.forgets++
	}
	return nil
}

func TestRotateCertificate(t *testing.T) {
	ctx := t.Context()
	fake := appletest.NewADE(t)
	keys := newMemKeys(t)
	tokens := &keyedTokens{}
	svc := NewService(keys.keyPair, tokens, &memCursors{}, &memDevices{}, plainSealer{},
		WithKeyRotation(keys), WithClientOptions(WithURL(fake.URL()), WithRootCAs(fake.RootCAs())))
	p7mFor := func(cert *x509.Certificate) []byte {
		t.Helper()
		p7m, err := fake.ServerTokenP7M(cert)
		if err != nil {
			t.Fatal(err)
		}
		return p7m
	}

	first := keys.cert
	if _, err := svc.Import(ctx, p7mFor(first)); err != nil {
		t.Fatalf("import before rotation: %v", err)
	}
	certPEM, err := svc.RotateCertificate(ctx, false)
	if err != nil || keys.rotations != 1 {
		t.Fatalf("first rotation: %v", err)
	}
	if current, _ := svc.CertificatePEM(ctx); !bytes.Equal(current, certPEM) {
		t.Error("the certificate served is not the new one")
	}
	second := keys.cert

	// Apple Business Manager still has the old certificate.
	if _, err := svc.Import(ctx, p7mFor(first)); err != nil {
		t.Fatalf("token for the old certificate after rotation: %v", err)
	}
	if keys.prevCert == nil {
		t.Fatal("the previous key pair was dropped while a token is stored for it")
	}
	if _, err := svc.RotateCertificate(ctx, false); !errors.Is(err, ErrPreviousCertificateInUse) {
		t.Fatalf("rotating while the old certificate is in use: %v", err)
	}

	// The administrator uploads the new certificate and a new token.
	if _, err := svc.Import(ctx, p7mFor(second)); err != nil {
		t.Fatalf("token for the new certificate: %v", err)
	}
	if keys.prevCert != nil || keys.forgets != 1 {
		t.Fatal("the previous key pair outlived the last token uploaded for it")
	}
	if _, err := svc.Import(ctx, p7mFor(first)); !errors.Is(err, ErrTokenForeign) {
		t.Fatalf("token for the forgotten certificate: %v, want ErrTokenForeign", err)
	}
	if _, err := svc.RotateCertificate(ctx, false); err != nil {
		t.Fatalf("rotating again: %v", err)
	}
	// The stored token is for the previous certificate again.
	if _, err := svc.RotateCertificate(ctx, false); !errors.Is(err, ErrPreviousCertificateInUse) {
		t.Fatalf("rotating while the old certificate is in use: %v", err)
	}
	if _, err := svc.RotateCertificate(ctx, true); err != nil || keys.rotations != 3 {
		t.Fatalf("forced rotation: %v", err)
	}
}

func TestRotateCertificateNotConfigured(t *testing.T) {
	keys := newMemKeys(t)
	svc := NewService(keys.keyPair, &keyedTokens{}, &memCursors{}, &memDevices{}, plainSealer{})
	if _, err := svc.RotateCertificate(t.Context(), false); err == nil {
		t.Fatal("rotated without a KeyRotation")
	}
}

func TestTokenExpiry(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name     string
		expiry   time.Time
		days     int
		expiring bool
	}{
		{"a year away", now.AddDate(1, 0, 0), 365, false},
		{"31 days", now.Add(31*24*time.Hour + time.Minute), 31, false},
		{"30 days less a minute", now.Add(30*24*time.Hour - time.Minute), 29, true},
		{"an hour", now.Add(time.Hour), 0, true},
		{"expired an hour ago", now.Add(-time.Hour), -1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok := Token{AccessTokenExpiry: tt.expiry}
			if got := tok.DaysLeft(now); got != tt.days {
				t.Errorf("DaysLeft = %d, want %d", got, tt.days)
			}
			if got := tok.Expiring(now); got != tt.expiring {
				t.Errorf("Expiring = %v, want %v", got, tt.expiring)
			}
		})
	}
}

func TestRunOnceWarnsOfExpiry(t *testing.T) {
	e := newRunEnv(t, nil)
	if _, err := e.svc.RunOnce(t.Context()); err != nil || strings.Contains(e.logs.String(), "expires soon") {
		t.Fatalf("a year before expiry: %v, logs %s", err, e.logs)
	}
	e.now = e.tokens.tokens[0].AccessTokenExpiry.Add(-10 * 24 * time.Hour)
	if _, err := e.svc.RunOnce(t.Context()); err != nil {
		t.Fatal(err)
	}
	if logs := e.logs.String(); !strings.Contains(logs, "level=WARN") || !strings.Contains(logs, "expires soon") ||
		!strings.Contains(logs, "days_left=9") && !strings.Contains(logs, "days_left=10") {
		t.Errorf("10 days before expiry, logs: %s", logs)
	}
	e.logs.Reset()
	e.now = e.tokens.tokens[0].AccessTokenExpiry.Add(time.Hour)
	if _, err := e.svc.RunOnce(t.Context()); err != nil || !strings.Contains(e.logs.String(), "has expired") {
		t.Errorf("after expiry: %v, logs %s", err, e.logs)
	}
}
