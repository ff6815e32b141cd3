package identity

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bramley-mdm/bramley/pki"
	"github.com/bramley-mdm/bramley/storage"
)

// memSettings is an in-memory pki.SettingStore, so tests get a real CA.
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
		s.m = make(map[string][]byte)
	}
	if v, ok := s.m[name]; ok {
		return bytes.Clone(v), nil
	}
	s.m[name] = bytes.Clone(value)
	return bytes.Clone(value), nil
}

// newCA returns a real bramley CA whose clock is now.
func newCA(t testing.TB, now func() time.Time) *pki.CA {
	t.Helper()
	key := make([]byte, pki.SecretKeySize)
	rand.Read(key)
	sealer, err := pki.NewSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadOrCreateCA(context.Background(), &memSettings{}, sealer, now)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// device is a device identity: a certificate and its key.
type device struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func (d device) identity() *Identity {
	sum := sha256.Sum256(d.cert.Raw)
	return &Identity{Cert: d.cert, Hash: sum[:]}
}

// issue makes a device identity from ca, as SCEP would.
func issue(t testing.TB, ca *pki.CA, lifetime time.Duration) device {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.IssueClient(context.Background(), key.Public(), pkix.Name{CommonName: "device"}, lifetime)
	if err != nil {
		t.Fatal(err)
	}
	return device{cert: cert, key: key}
}

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// realSignature returns the captured Mdm-Signature header and the body it signs.
func realSignature(t testing.TB) (string, []byte) {
	t.Helper()
	return strings.TrimSpace(string(readTestdata(t, "nanomdm-Mdm-Signature.2.header.b64"))),
		readTestdata(t, "nanomdm-Mdm-Signature.2.body.plist")
}
