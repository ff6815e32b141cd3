package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bramley-mdm/bramley/pki"
	"github.com/bramley-mdm/bramley/server"
)

// startedData returns a data directory as bramley serve's first start
// leaves it, the CA it created, and an identity that CA issued.
func startedData(t *testing.T) (dir string, ca, identity *x509.Certificate) {
	t.Helper()
	dir = filepath.Join(t.TempDir(), "data")
	cfg := server.DefaultConfig()
	cfg.DataDir = dir
	srv, err := server.New(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	identity, err = srv.CA().IssueClient(context.Background(), key.Public(), pkix.Name{CommonName: "device"}, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return dir, srv.CA().Root(), identity
}

// serverCA starts the server on dir as bramley serve would and returns its
// CA and the previous CAs it keeps.
func serverCA(t *testing.T, dir string) (*x509.Certificate, []*x509.Certificate) {
	t.Helper()
	ctx := context.Background()
	cfg := server.DefaultConfig()
	cfg.DataDir = dir
	srv, err := server.New(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ca := srv.CA().Root()
	srv.Close()
	store, err := server.OpenStore(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	previous, err := pki.PreviousCAs(ctx, store)
	if err != nil {
		t.Fatal(err)
	}
	return ca, previous
}

// needCAWriter skips when the SQLite backend cannot replace settings yet.
func needCAWriter(t *testing.T, dir string) {
	t.Helper()
	cfg := server.DefaultConfig()
	cfg.DataDir = dir
	store, err := server.OpenStore(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if _, ok := store.(pki.CAStore); !ok {
		t.Skip("storage/sqlite does not implement pki.SettingWriter (PutSettings) yet")
	}
}

func TestCAShowAndExport(t *testing.T) {
	dir, ca, _ := startedData(t)
	env := envOf(map[string]string{"BRAMLEY_DATA": dir})

	out, err := bramley(t, env, "ca", "show")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(ca.Raw)
	for _, want := range []string{
		"CN=bramley device CA", fmt.Sprintf("%02X:%02X:%02X", sum[0], sum[1], sum[2]),
		"RSA 2048", ca.NotAfter.UTC().Format(time.RFC3339), "Previous CAs still trusted: none",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("ca show lacks %q:\n%s", want, out)
		}
	}

	out, err = bramley(t, env, "ca", "export")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := pki.ParseCertificatePEM([]byte(out)); err != nil || !got.Equal(ca) {
		t.Fatalf("ca export wrote %q (%v), want the CA as PEM", out, err)
	}

	der := filepath.Join(t.TempDir(), "ca.cer")
	if _, err := bramley(t, envOf(nil), "ca", "export", "--data", dir, "--format", "der", "--out", der); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(der)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := x509.ParseCertificate(data); err != nil || !got.Equal(ca) {
		t.Fatalf("DER export does not parse as the CA: %v", err)
	}
	if _, err := bramley(t, env, "ca", "export", "--format", "p12"); err == nil || !strings.Contains(err.Error(), "pem or der") {
		t.Errorf("--format p12: err = %v", err)
	}
}

func TestCAShowNoData(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "typo")
	_, err := bramley(t, envOf(nil), "ca", "show", "--data", dir)
	if err == nil || !strings.Contains(err.Error(), "no database") {
		t.Fatalf("err = %v, want no database", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Error("ca show created the data directory")
	}
}

func TestCARotate(t *testing.T) {
	dir, old, identity := startedData(t)
	needCAWriter(t, dir)
	env := envOf(map[string]string{"BRAMLEY_DATA": dir})

	out, err := bramley(t, env, "ca", "rotate")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "Rotated") || !strings.Contains(out, "Restart bramley serve") {
		t.Errorf("ca rotate printed:\n%s", out)
	}
	current, previous := serverCA(t, dir)
	if current.Equal(old) {
		t.Fatal("the server still uses the old CA")
	}
	if len(previous) != 2 || !previous[0].Equal(old) || previous[1].CheckSignatureFrom(old) != nil {
		t.Fatalf("previous CAs: %d, want the old root and its intermediate", len(previous))
	}
	// The identity the old CA issued chains to one of CA + previous.
	roots := x509.NewCertPool()
	for _, c := range append([]*x509.Certificate{current}, previous...) {
		roots.AddCert(c)
	}
	if _, err := identity.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("an identity of the old CA no longer verifies: %v", err)
	}

	out, err = bramley(t, env, "ca", "show")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, fingerprint(current)) || !strings.Contains(out, "Previous CAs still trusted (") || !strings.Contains(out, fingerprint(old)) {
		t.Errorf("ca show after rotation:\n%s", out)
	}
}

func TestCARotateWrongSecretKey(t *testing.T) {
	dir, old, _ := startedData(t)
	needCAWriter(t, dir)
	other := "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=" // 32 zero bytes
	_, err := bramley(t, envOf(map[string]string{"BRAMLEY_DATA": dir, "BRAMLEY_SECRET_KEY": other}), "ca", "rotate")
	if err == nil || !strings.Contains(err.Error(), "secret key does not open") {
		t.Fatalf("err = %v", err)
	}
	if current, _ := serverCA(t, dir); !current.Equal(old) {
		t.Error("a refused rotation changed the CA")
	}
}

// ownCA writes a CA certificate and key such as an operator brings, in a
// directory of their own.
func ownCA(t *testing.T) (cert *x509.Certificate, certFile, keyFile string) {
	t.Helper()
	dir := t.TempDir()
	key := rsaKey(t)
	cert = mint(t, &x509.Certificate{
		Subject:               pkix.Name{CommonName: "Example Corp MDM CA", Organization: []string{"Example Corp"}},
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true, IsCA: true,
	}, nil, key.Public(), key)
	return cert, writeFile(t, dir, "corp-ca.pem", pki.EncodeCertificatePEM(cert)), writeFile(t, dir, "corp-ca.key", keyPEM(t, key))
}

func TestCAImport(t *testing.T) {
	dir, old, identity := startedData(t)
	needCAWriter(t, dir)
	own, certFile, keyFile := ownCA(t)

	out, err := bramley(t, envOf(nil), "ca", "import", "--data", dir, "--cert", certFile, "--key", keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "Example Corp MDM CA") || !strings.Contains(out, fingerprint(old)) {
		t.Errorf("ca import printed:\n%s", out)
	}
	current, previous := serverCA(t, dir)
	if !current.Equal(own) {
		t.Fatal("the server does not use the imported CA")
	}
	roots := x509.NewCertPool()
	for _, c := range append([]*x509.Certificate{current}, previous...) {
		roots.AddCert(c)
	}
	if _, err := identity.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("an identity of the replaced CA no longer verifies: %v", err)
	}
}

func TestCAImportBeforeFirstStart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	own, certFile, keyFile := ownCA(t)
	_, err := bramley(t, envOf(nil), "ca", "import", "--data", dir, "--cert", certFile, "--key", keyFile)
	if err != nil && strings.Contains(err.Error(), "cannot replace settings") {
		t.Skip("storage/sqlite does not implement pki.SettingWriter (PutSettings) yet")
	}
	if err != nil {
		t.Fatal(err)
	}
	if current, _ := serverCA(t, dir); !current.Equal(own) {
		t.Fatal("the first start did not use the imported CA")
	}
}

func TestCAImportRefuses(t *testing.T) {
	dir, old, _ := startedData(t)
	files := t.TempDir()
	_, certFile, keyFile := ownCA(t)
	_, _, otherKeyFile := ownCA(t)
	leafKey := rsaKey(t)
	leaf := writeFile(t, files, "leaf.pem", pki.EncodeCertificatePEM(mint(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: "not a CA"}, KeyUsage: x509.KeyUsageDigitalSignature,
	}, nil, leafKey.Public(), leafKey)))
	leafKeyFile := writeFile(t, files, "leaf.key", keyPEM(t, leafKey))
	encrypted := writeFile(t, files, "enc.key", pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1, 2, 3}}))

	tests := []struct {
		name, cert, key, want string
	}{
		{"not a CA", leaf, leafKeyFile, "not a CA certificate"},
		{"key of another CA", certFile, otherKeyFile, "does not match"},
		{"encrypted key", certFile, encrypted, "is encrypted"},
		{"no certificate", keyFile, keyFile, "no PEM certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := bramley(t, envOf(map[string]string{"BRAMLEY_DATA": dir}), "ca", "import", "--cert", tt.cert, "--key", tt.key)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
	if current, previous := serverCA(t, dir); !current.Equal(old) || len(previous) != 0 {
		t.Error("a refused import changed the CA")
	}
}
