package profile

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/bramley-mdm/bramley/pki"
	"github.com/bramley-mdm/bramley/storage"
)

var update = flag.Bool("update", false, "rewrite testdata/golden and schema_gen.go")

// golden compares got with testdata/golden/name, or rewrites the file
// when the tests run with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file (go test -update rewrites it)\ngot:\n%s\nwant:\n%s", name, got, want)
	}
}

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// seqUUIDs returns a UUID source counting up from 1, for reproducible
// profiles.
func seqUUIDs() func() string {
	n := 0
	return func() string {
		n++
		return fmt.Sprintf("00000000-0000-4000-8000-%012d", n)
	}
}

// memSettings is an in-memory pki.SettingStore with the create-unless-
// exists semantics of the real backends.
type memSettings struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (s *memSettings) Setting(_ context.Context, name string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[name]
	if !ok {
		return nil, storage.ErrNotFound
	}
	return bytes.Clone(v), nil
}

func (s *memSettings) CreateSetting(_ context.Context, name string, value []byte) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string][]byte{}
	}
	if v, ok := s.m[name]; ok {
		return bytes.Clone(v), nil
	}
	s.m[name] = bytes.Clone(value)
	return bytes.Clone(value), nil
}

// testCA returns bramley's CA kept in a fresh in-memory store.
func testCA(t testing.TB) *pki.CA {
	t.Helper()
	key := make([]byte, pki.SecretKeySize)
	rand.Read(key)
	sealer, err := pki.NewSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadOrCreateCA(context.Background(), &memSettings{}, sealer, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// issue returns a certificate the CA issued for a new RSA key.
func issue(t testing.TB, ca *pki.CA, cn string) (*x509.Certificate, *rsa.PrivateKey) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.IssueClient(context.Background(), key.Public(), pkix.Name{CommonName: cn}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func writeFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func writeKey(t testing.TB, dir, name string, key crypto.Signer) string {
	t.Helper()
	b, err := pki.EncodePrivateKeyPEM(key)
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, dir, name, b)
}

// openssl runs openssl, skipping the test when it is not installed (CI
// installs it).
func openssl(t testing.TB, args ...string) (stdout []byte, err error) {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("openssl is not installed")
		}
		t.Skip("openssl is not installed")
	}
	var out, errb bytes.Buffer
	cmd := exec.Command("openssl", args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("openssl %v: %w\n%s", args, err, errb.Bytes())
	}
	return out.Bytes(), nil
}

// testEnrollmentOptions are the options of the golden enrollment profile.
func testEnrollmentOptions(t testing.TB) EnrollmentOptions {
	t.Helper()
	root, err := pki.ParseCertificatePEM(readTestdata(t, "scep-testca-ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	return EnrollmentOptions{
		Identifier:   "org.example.mdm.enroll",
		DisplayName:  "Example MDM enrollment",
		Organization: "Example",
		Roots:        []*x509.Certificate{root},
		SCEP: &SCEPContent{
			URL:       "https://mdm.example.org/scep",
			Challenge: "one-time-challenge",
			Subject:   SCEPSubject(pkix.Name{Organization: []string{"Example"}, CommonName: "bramley device"}),
		},
		ServerURL:   "https://mdm.example.org/mdm/connect",
		CheckInURL:  "https://mdm.example.org/mdm/checkin",
		Topic:       "com.apple.mgmt.External.7b5a1f0e-3c1d-4f5e-9a8b-0c1d2e3f4a5b",
		SignMessage: true,
		NewUUID:     seqUUIDs(),
	}
}
