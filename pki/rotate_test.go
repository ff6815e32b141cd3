package pki

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"
)

// memCAStore is memSettings that can also replace settings, as
// SettingWriter describes: all values of one call or none.
type memCAStore struct {
	*memSettings
	err error // PutSettings fails with it, storing nothing
}

func newMemCAStore() *memCAStore { return &memCAStore{memSettings: newMemSettings()} }

func (s *memCAStore) PutSettings(_ context.Context, values map[string][]byte) error {
	if s.err != nil {
		return s.err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, v := range values {
		s.m[name] = bytes.Clone(v)
		if s.m[name] == nil {
			s.m[name] = []byte{}
		}
	}
	return nil
}

// verifyChain checks that leaf chains to one of anchors at now, through
// intermediates if need be.
func verifyChain(leaf *x509.Certificate, anchors []*x509.Certificate, now time.Time, intermediates ...*x509.Certificate) error {
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, c := range anchors {
		roots.AddCert(c)
	}
	for _, c := range intermediates {
		inter.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	return err
}

func TestRotateCA(t *testing.T) {
	ctx := context.Background()
	store, sealer := newMemCAStore(), testSealer(t)
	now := time.Now()
	clock := func() time.Time { return now }

	if _, err := RotateCA(ctx, store, sealer, clock); err == nil || !strings.Contains(err.Error(), "no CA to rotate") {
		t.Fatalf("rotating without a CA: err = %v", err)
	}
	old, err := LoadOrCreateCA(ctx, store, sealer, clock)
	if err != nil {
		t.Fatal(err)
	}
	issued, _ := testClient(t, old)

	rotated, err := RotateCA(ctx, store, sealer, clock)
	if err != nil {
		t.Fatal(err)
	}
	if rotated.Root().Equal(old.Root()) || publicKeysEqual(rotated.Root().PublicKey, old.Root().PublicKey) {
		t.Fatal("rotation kept the old certificate or key")
	}
	// Same shape as the CA of a first start.
	c := rotated.Root()
	if c.Subject.CommonName != caCommonName || !c.IsCA || KeyDescription(c.PublicKey) != "RSA 2048" {
		t.Errorf("rotated CA: CN %q, CA %v, key %s", c.Subject.CommonName, c.IsCA, KeyDescription(c.PublicKey))
	}

	// Servers starting now load the new CA.
	loaded, err := LoadOrCreateCA(ctx, store, sealer, clock)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Root().Equal(rotated.Root()) {
		t.Fatal("LoadOrCreateCA does not load the rotated CA")
	}
	previous, err := PreviousCAs(ctx, store)
	if err != nil {
		t.Fatal(err)
	}
	if len(previous) != 2 || !previous[0].Equal(old.Root()) || !previous[1].Equal(old.Certificate()) {
		t.Fatalf("previous CAs = %d certificates, want the old root and intermediate", len(previous))
	}
	if !rotated.Certificate().Equal(loaded.Certificate()) || rotated.Certificate().CheckSignatureFrom(rotated.Root()) != nil {
		t.Error("the rotated intermediate is not loaded, or not issued by the rotated root")
	}

	// The old CA's identity verifies with the previous CAs as anchors, and
	// only with them; the new CA issues identities that verify too.
	if err := verifyChain(issued, []*x509.Certificate{loaded.Root()}, now, loaded.Certificate()); err == nil {
		t.Error("an identity of the old CA verifies against the new CA alone")
	}
	anchors := append([]*x509.Certificate{loaded.Root()}, previous...)
	if err := verifyChain(issued, anchors, now); err != nil {
		t.Errorf("an identity of the old CA no longer verifies: %v", err)
	}
	fresh, _ := testClient(t, loaded)
	if err := verifyChain(fresh, anchors, now, loaded.Certificate()); err != nil {
		t.Errorf("an identity of the new CA does not verify: %v", err)
	}

	// A second rotation keeps both earlier CAs, newest first.
	if _, err := RotateCA(ctx, store, sealer, clock); err != nil {
		t.Fatal(err)
	}
	previous, err = PreviousCAs(ctx, store)
	if err != nil {
		t.Fatal(err)
	}
	if len(previous) != 4 || !previous[0].Equal(rotated.Root()) || !previous[2].Equal(old.Root()) {
		t.Fatalf("after two rotations previous CAs = %d certificates, want the first rotated CA then the original", len(previous))
	}
}

func TestRotateCARefusesAnotherSecretKey(t *testing.T) {
	ctx := context.Background()
	store := newMemCAStore()
	old, err := LoadOrCreateCA(ctx, store, testSealer(t), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	_, err = RotateCA(ctx, store, testSealer(t), time.Now)
	if err == nil || !strings.Contains(err.Error(), "secret key does not open the current CA key") {
		t.Fatalf("rotating with another secret key: err = %v", err)
	}
	if cert, _ := store.Setting(ctx, SettingCACert); !bytes.Equal(cert, EncodeCertificatePEM(old.Root())) {
		t.Error("a refused rotation changed the CA")
	}
}

func TestRotateCAStoreFails(t *testing.T) {
	ctx := context.Background()
	store, sealer := newMemCAStore(), testSealer(t)
	if _, err := LoadOrCreateCA(ctx, store, sealer, time.Now); err != nil {
		t.Fatal(err)
	}
	store.err = errors.New("disk full")
	if _, err := RotateCA(ctx, store, sealer, time.Now); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("err = %v, want the store's", err)
	}
}

func TestImportCA(t *testing.T) {
	ctx := context.Background()
	store, sealer := newMemCAStore(), testSealer(t)
	now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }

	// Into an empty store: no current CA, so nothing becomes previous.
	firstKey := rsaTestKey(t)
	first := selfSigned(t, firstKey, true)
	if _, err := ImportCA(ctx, store, sealer, first, firstKey, clock); err != nil {
		t.Fatal(err)
	}
	loaded, err := LoadOrCreateCA(ctx, store, sealer, clock)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Root().Equal(first) {
		t.Fatal("LoadOrCreateCA does not load the imported CA")
	}
	if err := loaded.Certificate().CheckSignatureFrom(first); err != nil {
		t.Fatalf("the intermediate is not issued by the imported CA: %v", err)
	}
	if previous, err := PreviousCAs(ctx, store); err != nil || len(previous) != 0 {
		t.Fatalf("previous CAs after the first import: %d, %v", len(previous), err)
	}
	issued, _ := testClient(t, loaded)

	// Over an existing CA: it becomes previous.
	secondKey := rsaTestKey(t)
	second := selfSigned(t, secondKey, true)
	ca, err := ImportCA(ctx, store, sealer, second, secondKey, clock)
	if err != nil {
		t.Fatal(err)
	}
	if !ca.Root().Equal(second) {
		t.Error("ImportCA returned another CA")
	}
	previous, err := PreviousCAs(ctx, store)
	if err != nil {
		t.Fatal(err)
	}
	if len(previous) != 2 || !previous[0].Equal(first) || !previous[1].Equal(loaded.Certificate()) {
		t.Fatalf("previous CAs = %d certificates, want the first import and its intermediate", len(previous))
	}
	if err := verifyChain(issued, append([]*x509.Certificate{second}, previous...), now); err != nil {
		t.Errorf("an identity of the replaced CA no longer verifies: %v", err)
	}

	// The same CA again stays the root, not a previous CA; the
	// intermediate it replaces joins them.
	if _, err := ImportCA(ctx, store, sealer, second, secondKey, clock); err != nil {
		t.Fatal(err)
	}
	if previous, _ := PreviousCAs(ctx, store); len(previous) != 3 || slices.ContainsFunc(previous, second.Equal) {
		t.Errorf("importing the current CA again: %d previous CAs, want 3 without it", len(previous))
	}

	// Going back to the first CA makes it current and no longer previous.
	if _, err := ImportCA(ctx, store, sealer, first, firstKey, clock); err != nil {
		t.Fatal(err)
	}
	previous, _ = PreviousCAs(ctx, store)
	if len(previous) == 0 || !previous[0].Equal(second) || slices.ContainsFunc(previous, first.Equal) {
		t.Errorf("after going back: previous CAs = %d, want the second first and not the first", len(previous))
	}
}

func TestImportCADropsExpiredPrevious(t *testing.T) {
	ctx := context.Background()
	store, sealer := newMemCAStore(), testSealer(t)
	early := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	k1, k2, k3 := rsaTestKey(t), rsaTestKey(t), rsaTestKey(t)
	short := caCert(t, k1, "short", early.Add(-time.Hour), early.Add(24*time.Hour), x509.KeyUsageCertSign)
	for _, step := range []struct {
		cert *x509.Certificate
		key  *rsa.PrivateKey
		at   time.Time
	}{
		{short, k1, early},
		{selfSigned(t, k2, true), k2, early},                  // short becomes previous
		{selfSigned(t, k3, true), k3, early.AddDate(0, 1, 0)}, // short has expired by now
	} {
		if _, err := ImportCA(ctx, store, sealer, step.cert, step.key, func() time.Time { return step.at }); err != nil {
			t.Fatal(err)
		}
	}
	previous, err := PreviousCAs(ctx, store)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range previous {
		if c.Equal(short) || c.CheckSignatureFrom(short) == nil {
			t.Error("an expired CA or its intermediate stayed among the previous CAs")
		}
	}
	if len(previous) != 2 {
		t.Errorf("%d previous CAs, want 2 (the second root and its intermediate)", len(previous))
	}
}

func TestImportCARefuses(t *testing.T) {
	now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	key := rsaTestKey(t)
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cert *x509.Certificate
		key  crypto.Signer
		want string
	}{
		{"not a CA", selfSigned(t, key, false), key, "not a CA certificate"},
		{"another key", selfSigned(t, key, true), rsaTestKey(t), "does not match"},
		{"ECDSA", caCert(t, ecKey, "ec", now.Add(-time.Hour), now.AddDate(1, 0, 0), x509.KeyUsageCertSign), ecKey, "ECDSA P-256"},
		{"expired", caCert(t, key, "old", now.AddDate(-2, 0, 0), now.AddDate(-1, 0, 0), x509.KeyUsageCertSign), key, "expired"},
		{"not yet valid", caCert(t, key, "new", now.AddDate(0, 1, 0), now.AddDate(1, 0, 0), x509.KeyUsageCertSign), key, "not valid until"},
		{"no keyCertSign", caCert(t, key, "sig", now.Add(-time.Hour), now.AddDate(1, 0, 0), x509.KeyUsageDigitalSignature), key, "keyCertSign"},
		{"path length 0", caCert(t, key, "pathlen0", now.Add(-time.Hour), now.AddDate(1, 0, 0), x509.KeyUsageCertSign, func(c *x509.Certificate) { c.MaxPathLenZero = true }), key, "path length"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := newMemCAStore()
			_, err := ImportCA(context.Background(), store, testSealer(t), tt.cert, tt.key, func() time.Time { return now })
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one mentioning %q", err, tt.want)
			}
			if _, err := store.Setting(context.Background(), SettingCACert); err == nil {
				t.Error("a refused import stored a CA")
			}
		})
	}
}

func TestPreviousCAsEmpty(t *testing.T) {
	store := newMemCAStore()
	if certs, err := PreviousCAs(context.Background(), store); err != nil || certs != nil {
		t.Fatalf("no setting: %v, %v", certs, err)
	}
	store.m[SettingCAPrevious] = []byte{}
	if certs, err := PreviousCAs(context.Background(), store); err != nil || certs != nil {
		t.Fatalf("empty setting: %v, %v", certs, err)
	}
	store.m[SettingCAPrevious] = []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
	if _, err := PreviousCAs(context.Background(), store); err == nil {
		t.Fatal("a corrupt bundle parsed")
	}
}

func TestKeyDescription(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	for want, pub := range map[string]crypto.PublicKey{
		"RSA 2048":    rsaTestKey(t).Public(),
		"ECDSA P-384": ec.Public(),
	} {
		if got := KeyDescription(pub); got != want {
			t.Errorf("KeyDescription = %q, want %q", got, want)
		}
	}
}

func rsaTestKey(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// caCert returns a self-signed CA certificate for key.
func caCert(t *testing.T, key crypto.Signer, cn string, notBefore, notAfter time.Time, usage x509.KeyUsage, edit ...func(*x509.Certificate)) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              usage,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	for _, e := range edit {
		e(tmpl)
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
