package pki

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func testSealer(t testing.TB) *Sealer {
	t.Helper()
	key := make([]byte, SecretKeySize)
	rand.Read(key)
	s, err := NewSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// testCA returns a CA kept in a fresh in-memory store.
func testCA(t testing.TB, opts ...CAOption) *CA {
	t.Helper()
	ca, err := LoadOrCreateCA(context.Background(), newMemSettings(), testSealer(t), time.Now, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func TestLoadOrCreateCA(t *testing.T) {
	ctx := context.Background()
	store, sealer := newMemSettings(), testSealer(t)
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }

	ca, err := LoadOrCreateCA(ctx, store, sealer, clock)
	if err != nil {
		t.Fatal(err)
	}
	cert := ca.Root()
	if cert.Subject.CommonName != "bramley device CA" {
		t.Errorf("CN = %q", cert.Subject.CommonName)
	}
	if !cert.IsCA || !cert.BasicConstraintsValid {
		t.Error("not a CA certificate")
	}
	wantKU := x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
	if cert.KeyUsage != wantKU {
		t.Errorf("KeyUsage = %b, want %b", cert.KeyUsage, wantKU)
	}
	if got := cert.NotAfter.Sub(now); got < 3649*24*time.Hour || got > 3651*24*time.Hour {
		t.Errorf("lifetime %v, want 10 years", got)
	}
	if err := cert.CheckSignatureFrom(cert); err != nil {
		t.Errorf("not self-signed: %v", err)
	}
	rsaKey, ok := ca.Signer().(*rsa.PrivateKey)
	if !ok || rsaKey.N.BitLen() != 2048 {
		t.Errorf("CA key is %T, want RSA-2048 (Apple's SCEP encrypts to it)", ca.Signer())
	}

	// The intermediate issues: RSA-2048, five years, path length 0, and
	// key encipherment for the SCEP envelopes devices encrypt to it.
	inter := ca.Certificate()
	if inter.Equal(cert) || inter.Subject.CommonName != intermediateCommonName {
		t.Errorf("intermediate CN = %q", inter.Subject.CommonName)
	}
	if !inter.IsCA || inter.MaxPathLen != 0 || !inter.MaxPathLenZero {
		t.Errorf("intermediate: CA %v, path length %d (zero %v), want a CA with path length 0", inter.IsCA, inter.MaxPathLen, inter.MaxPathLenZero)
	}
	wantIKU := wantKU | x509.KeyUsageKeyEncipherment
	if inter.KeyUsage != wantIKU {
		t.Errorf("intermediate KeyUsage = %b, want %b", inter.KeyUsage, wantIKU)
	}
	if got := inter.NotAfter.Sub(now); got < 1824*24*time.Hour || got > 1826*24*time.Hour {
		t.Errorf("intermediate lifetime %v, want 5 years", got)
	}
	if err := inter.CheckSignatureFrom(cert); err != nil {
		t.Errorf("intermediate not issued by the root: %v", err)
	}
	if !publicKeysEqual(inter.PublicKey, rsaKey.Public()) {
		t.Error("the CA signs with a key other than the intermediate's")
	}
	if chain := ca.Chain(); len(chain) != 2 || !chain[0].Equal(inter) || !chain[1].Equal(cert) {
		t.Errorf("Chain = %d certificates, want the intermediate then the root", len(chain))
	}

	sealedKey, err := store.Setting(ctx, SettingCAIntermediateKey)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(rsaKey)
	if bytes.Contains(sealedKey, der[len(der)-64:]) {
		t.Error("the CA key is stored in the clear")
	}

	again, err := LoadOrCreateCA(ctx, store, sealer, clock)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Root().Equal(cert) || !again.Certificate().Equal(inter) {
		t.Error("reload gave another certificate")
	}
	if !again.Signer().Public().(*rsa.PublicKey).Equal(ca.Signer().Public()) {
		t.Error("reload gave another key")
	}

	t.Run("wrong secret key", func(t *testing.T) {
		_, err := LoadOrCreateCA(ctx, store, testSealer(t), clock)
		if !errors.Is(err, ErrUnseal) {
			t.Errorf("err = %v, want ErrUnseal", err)
		}
	})
}

func TestLoadOrCreateCAConcurrent(t *testing.T) {
	store, sealer := newMemSettings(), testSealer(t)
	const replicas = 8
	cas := make([]*CA, replicas)
	errs := make([]error, replicas)
	var wg sync.WaitGroup
	for i := range replicas {
		wg.Go(func() {
			cas[i], errs[i] = LoadOrCreateCA(context.Background(), store, sealer, time.Now)
		})
	}
	wg.Wait()
	for i := range replicas {
		if errs[i] != nil {
			t.Fatalf("replica %d: %v", i, errs[i])
		}
		if !cas[i].Root().Equal(cas[0].Root()) {
			t.Errorf("replica %d has another CA certificate", i)
		}
		if !cas[i].Certificate().Equal(cas[0].Certificate()) {
			t.Errorf("replica %d has another intermediate certificate", i)
		}
		if !cas[i].Signer().Public().(*rsa.PublicKey).Equal(cas[0].Signer().Public()) {
			t.Errorf("replica %d has another CA key", i)
		}
	}
}

// A replica that stopped between storing the key and the certificate leaves
// only the key; the next start completes the CA with it.
func TestLoadOrCreateCAKeyOnly(t *testing.T) {
	ctx := context.Background()
	store, sealer := newMemSettings(), testSealer(t)
	ca, err := LoadOrCreateCA(ctx, store, sealer, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	delete(store.m, SettingCACert)
	again, err := LoadOrCreateCA(ctx, store, sealer, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Certificate().PublicKey.(*rsa.PublicKey).Equal(ca.Signer().Public()) {
		t.Error("new certificate is not for the stored key")
	}
}

func TestLoadOrCreateCAMismatch(t *testing.T) {
	ctx := context.Background()
	store, sealer := newMemSettings(), testSealer(t)
	if _, err := LoadOrCreateCA(ctx, store, sealer, time.Now); err != nil {
		t.Fatal(err)
	}
	other := testCA(t)
	saved := store.m[SettingCACert]
	store.m[SettingCACert] = EncodeCertificatePEM(other.Root())
	if _, err := LoadOrCreateCA(ctx, store, sealer, time.Now); err == nil {
		t.Error("accepted a CA certificate that does not match the key")
	}
	store.m[SettingCACert] = saved
	store.m[SettingCAIntermediateCert] = EncodeCertificatePEM(other.Certificate())
	if _, err := LoadOrCreateCA(ctx, store, sealer, time.Now); err == nil {
		t.Error("accepted an intermediate certificate that does not match the key")
	}
}

// A database from before the intermediate holds a root alone, which issued
// identities itself. Starting on it adds an intermediate under that root,
// and the root stays the anchor for the old identities and the new.
func TestLoadOrCreateCAUpgradesRootOnly(t *testing.T) {
	ctx := context.Background()
	store, sealer := newMemSettings(), testSealer(t)
	rootKey := rsaTestKey(t)
	rootPEM, err := newCACertificate(rootKey, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	root, _ := ParseCertificatePEM(rootPEM)
	der, _ := x509.MarshalPKCS8PrivateKey(rootKey)
	sealed, _ := sealer.Seal(der)
	store.m[SettingCACert], store.m[SettingCAKey] = rootPEM, sealed
	old, err := NewCAFromKeyPair(root, rootKey, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	oldID, _ := testClient(t, old)

	ca, err := LoadOrCreateCA(ctx, store, sealer, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	if !ca.Root().Equal(root) {
		t.Fatal("the root changed")
	}
	if ca.Certificate().Equal(root) || ca.Certificate().CheckSignatureFrom(root) != nil {
		t.Fatal("no intermediate under the existing root")
	}
	if _, err := store.Setting(ctx, SettingCAIntermediateCert); err != nil {
		t.Fatalf("intermediate not stored: %v", err)
	}
	newID, _ := testClient(t, ca)
	for name, id := range map[string]*x509.Certificate{"old identity": oldID, "new identity": newID} {
		if err := verifyChain(id, []*x509.Certificate{ca.Root()}, time.Now(), ca.Certificate()); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestIssueClient(t *testing.T) {
	records := &memCerts{}
	ca := testCA(t, WithCertificateStore(records))
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	subject := pkix.Name{CommonName: "D4D56083-BFB0-5047-8BDF-2727BACDC59B", Organization: []string{"bramley"}}
	before := time.Now()
	cert, err := ca.IssueClient(context.Background(), key.Public(), subject, 365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}

	if cert.KeyUsage != x509.KeyUsageDigitalSignature|x509.KeyUsageKeyEncipherment {
		t.Errorf("KeyUsage = %b", cert.KeyUsage)
	}
	if len(cert.ExtKeyUsage) != 1 || cert.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
		t.Errorf("ExtKeyUsage = %v, want client auth", cert.ExtKeyUsage)
	}
	if cert.IsCA {
		t.Error("client certificate is a CA")
	}
	if d := before.Sub(cert.NotBefore); d < 59*time.Second || d > 2*time.Minute {
		t.Errorf("NotBefore is %v before now, want 1 minute", d)
	}
	if cert.SerialNumber.BitLen() > 128 || cert.SerialNumber.Sign() <= 0 {
		t.Errorf("serial %x is not a positive 128-bit number", cert.SerialNumber)
	}
	if !cert.PublicKey.(*ecdsa.PublicKey).Equal(key.Public()) {
		t.Error("certificate is for another key")
	}

	rec, ok := records.certs[hex.EncodeToString(cert.SerialNumber.Bytes())]
	if !ok {
		t.Fatalf("certificate not recorded; records: %v", records.certs)
	}
	sum := sha256.Sum256(cert.Raw)
	if !bytes.Equal(rec.SHA256, sum[:]) || rec.Subject != cert.Subject.String() || !rec.NotAfter.Equal(cert.NotAfter) {
		t.Errorf("record = %+v", rec)
	}

	// leaf → intermediate → root, as openssl sees it: the root as the
	// only anchor, the intermediate only as a link.
	dir := t.TempDir()
	writePEM(t, filepath.Join(dir, "root.pem"), EncodeCertificatePEM(ca.Root()))
	writePEM(t, filepath.Join(dir, "intermediate.pem"), EncodeCertificatePEM(ca.Certificate()))
	writePEM(t, filepath.Join(dir, "cert.pem"), EncodeCertificatePEM(cert))
	out, err := exec.Command("openssl", "verify", "-purpose", "sslclient", "-CAfile", filepath.Join(dir, "root.pem"),
		"-untrusted", filepath.Join(dir, "intermediate.pem"), filepath.Join(dir, "cert.pem")).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl verify: %v\n%s", err, out)
	}
	out, err = exec.Command("openssl", "verify", "-CAfile", filepath.Join(dir, "root.pem"), filepath.Join(dir, "cert.pem")).CombinedOutput()
	if err == nil {
		t.Errorf("openssl verified the certificate without its intermediate:\n%s", out)
	}

	other := testCA(t)
	writePEM(t, filepath.Join(dir, "other.pem"), EncodeCertificatePEM(other.Root()))
	out, err = exec.Command("openssl", "verify", "-CAfile", filepath.Join(dir, "other.pem"),
		"-untrusted", filepath.Join(dir, "intermediate.pem"), filepath.Join(dir, "cert.pem")).CombinedOutput()
	if err == nil {
		t.Errorf("openssl verified the certificate against another CA:\n%s", out)
	}
}

func TestIssueClientLifetime(t *testing.T) {
	ca := testCA(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ctx := context.Background()
	if _, err := ca.IssueClient(ctx, key.Public(), pkix.Name{CommonName: "x"}, 0); err == nil {
		t.Error("accepted a zero lifetime")
	}
	cert, err := ca.IssueClient(ctx, key.Public(), pkix.Name{CommonName: "x"}, 50*365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if cert.NotAfter.After(ca.Certificate().NotAfter) {
		t.Error("certificate outlives its CA")
	}
}

func TestIssueClientRecordFails(t *testing.T) {
	ca := testCA(t, WithCertificateStore(&memCerts{err: errors.New("database down")}))
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if _, err := ca.IssueClient(context.Background(), key.Public(), pkix.Name{CommonName: "x"}, time.Hour); err == nil {
		t.Error("handed out a certificate it could not record")
	}
}

func writePEM(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// testClient issues a client identity from ca for tests elsewhere in pki.
func testClient(t testing.TB, ca *CA) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.IssueClient(context.Background(), key.Public(), pkix.Name{CommonName: "device"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}
