package ade

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/bramley-mdm/bramley/appletest"
)

// tokenKeyPair is one RSA key for the whole test binary: 2048-bit keys
// are slow to make.
var tokenKeyPair = sync.OnceValues(func() (*x509.Certificate, *rsa.PrivateKey) {
	cert, key, err := NewTokenKeyPair(time.Now())
	if err != nil {
		panic(err)
	}
	return cert, key
})

// fakeToken returns the fake's server token the way bramley gets it: the
// .p7m decrypted with the token key.
func fakeToken(t *testing.T, fake *appletest.ADE) *ServerToken {
	t.Helper()
	cert, key := tokenKeyPair()
	p7m, err := fake.ServerTokenP7M(cert)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := ParseServerToken(p7m, cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// sleeps records the client's waits instead of waiting.
type sleeps struct {
	mu    sync.Mutex
	waits []time.Duration
}

func (s *sleeps) sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.waits = append(s.waits, d)
	return ctx.Err()
}

func (s *sleeps) get() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.waits)
}

// newFakeClient returns a client of fake that never really sleeps.
func newFakeClient(t *testing.T, fake *appletest.ADE, opts ...ClientOption) (*Client, *sleeps) {
	t.Helper()
	s := &sleeps{}
	base := []ClientOption{WithURL(fake.URL()), WithRootCAs(fake.RootCAs()), WithSleep(s.sleep), WithTimeout(10 * time.Second)}
	c, err := NewClient(fakeToken(t, fake), append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return c, s
}

// memCursors is a CursorStore in memory.
type memCursors struct {
	mu      sync.Mutex
	cursors map[string]string
	sets    int
	failSet error
}

func (m *memCursors) Cursor(_ context.Context, tokenID string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cursors[tokenID], nil
}

func (m *memCursors) SetCursor(_ context.Context, tokenID, cursor string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failSet != nil {
		return m.failSet
	}
	if m.cursors == nil {
		m.cursors = make(map[string]string)
	}
	m.cursors[tokenID] = cursor
	m.sets++
	return nil
}

// memSink is a DeviceSink in memory: the devices present per token, and
// every call.
type memSink struct {
	mu      sync.Mutex
	present map[string]map[string]Device
	calls   [][]Device
	fail    error
}

func (m *memSink) UpsertDevices(_ context.Context, tokenID string, devices []Device) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return m.fail
	}
	m.calls = append(m.calls, slices.Clone(devices))
	if m.present == nil {
		m.present = make(map[string]map[string]Device)
	}
	if m.present[tokenID] == nil {
		m.present[tokenID] = make(map[string]Device)
	}
	seen := make(map[string]bool)
	for _, d := range devices {
		if seen[d.SerialNumber] {
			return errors.New("serial number twice in one call")
		}
		seen[d.SerialNumber] = true
		if d.OpType == OpDeleted {
			delete(m.present[tokenID], d.SerialNumber)
		} else {
			m.present[tokenID][d.SerialNumber] = d
		}
	}
	return nil
}

func (m *memSink) serials(tokenID string) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for s := range m.present[tokenID] {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}
