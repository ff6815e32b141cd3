package ade

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bramley-mdm/bramley/appletest"
	"github.com/bramley-mdm/bramley/storage"
)

// memTokens is a TokenStore in memory.
type memTokens struct {
	mu     sync.Mutex
	tokens []Token
	listed int
}

func (m *memTokens) PutToken(_ context.Context, t Token) (Token, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.tokens = append(m.tokens, t)
	return t, nil
}

func (m *memTokens) Tokens(context.Context) ([]Token, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.listed++
	return append([]Token(nil), m.tokens...), nil
}

func (m *memTokens) Token(_ context.Context, id string) (Token, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, t := range m.tokens {
		if t.ID == id {
			return t, nil
		}
	}
	return Token{}, storage.ErrNotFound
}

// memDevices is a DeviceStore over memSink.
type memDevices struct{ memSink }

func (m *memDevices) ADEDevices(_ context.Context, tokenID string) ([]DeviceRecord, error) {
	var out []DeviceRecord
	for _, s := range m.serials(tokenID) {
		out = append(out, DeviceRecord{TokenID: tokenID, SerialNumber: s})
	}
	return out, nil
}

// plainSealer seals nothing.
type plainSealer struct{}

func (plainSealer) Seal(b []byte) ([]byte, error) { return b, nil }
func (plainSealer) Open(b []byte) ([]byte, error) { return b, nil }

// fakeLocker is a Locker that is held, or not, by another replica.
type fakeLocker struct {
	held     bool
	unlocked int
}

func (l *fakeLocker) Lock(context.Context, string) (func(), bool, error) {
	if l.held {
		return nil, false, nil
	}
	return func() { l.unlocked++ }, true, nil
}

type runEnv struct {
	svc     *Service
	fake    *appletest.ADE
	devices *memDevices
	tokens  *memTokens
	now     time.Time
	logs    *bytes.Buffer
}

func newRunEnv(t *testing.T, locker Locker) *runEnv {
	t.Helper()
	e := &runEnv{fake: appletest.NewADE(t), devices: &memDevices{}, tokens: &memTokens{},
		now: time.Now(), logs: new(bytes.Buffer)}
	st := fakeToken(t, e.fake)
	sealed, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	e.tokens.tokens = []Token{{ID: "T1", ConsumerKey: st.ConsumerKey, AccessTokenExpiry: st.AccessTokenExpiry, Sealed: sealed}}
	noKeys := func(context.Context) (*x509.Certificate, crypto.PrivateKey, error) {
		return nil, nil, errors.New("not used")
	}
	opts := []ServiceOption{
		WithServiceClock(func() time.Time { return e.now }),
		WithServiceLogger(slog.New(slog.NewTextHandler(e.logs, nil))),
		WithClientOptions(WithURL(e.fake.URL()), WithRootCAs(e.fake.RootCAs()), WithRetries(0),
			WithSleep(func(ctx context.Context, _ time.Duration) error { return ctx.Err() })),
	}
	if locker != nil {
		opts = append(opts, WithLocker(locker))
	}
	e.svc = NewService(noKeys, e.tokens, &memCursors{}, e.devices, plainSealer{}, opts...)
	e.fake.AddDevices(appletest.ADEDevice{SerialNumber: "S1"}, appletest.ADEDevice{SerialNumber: "S2"})
	return e
}

func TestRunOnceLock(t *testing.T) {
	locker := &fakeLocker{held: true}
	e := newRunEnv(t, locker)
	ran, err := e.svc.RunOnce(t.Context())
	if ran || err != nil || e.tokens.listed != 0 || len(e.fake.Requests()) != 0 {
		t.Fatalf("with the lock held elsewhere: ran %v, err %v, %d requests", ran, err, len(e.fake.Requests()))
	}
	locker.held = false
	ran, err = e.svc.RunOnce(t.Context())
	if !ran || err != nil || locker.unlocked != 1 {
		t.Fatalf("with the lock: ran %v, err %v, unlocked %d", ran, err, locker.unlocked)
	}
	if got := e.devices.serials("T1"); len(got) != 2 {
		t.Errorf("synced devices %v", got)
	}
}

func TestRunOnceSkipsExpiredTokens(t *testing.T) {
	e := newRunEnv(t, nil)
	e.now = e.tokens.tokens[0].AccessTokenExpiry.Add(time.Minute)
	if _, err := e.svc.RunOnce(t.Context()); err != nil || len(e.fake.Requests()) != 0 {
		t.Fatalf("expired token: err %v, %d requests", err, len(e.fake.Requests()))
	}
}

func TestRunOnceRetryAfter(t *testing.T) {
	e := newRunEnv(t, nil)
	e.fake.ThrottleNext("/server/devices", 1, 2*time.Minute)
	if _, err := e.svc.RunOnce(t.Context()); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("throttled run: %v", err)
	}
	asked := len(e.fake.Requests())
	e.now = e.now.Add(time.Minute)
	if _, err := e.svc.RunOnce(t.Context()); err != nil || len(e.fake.Requests()) != asked {
		t.Fatalf("run inside Retry-After: err %v, %d new requests", err, len(e.fake.Requests())-asked)
	}
	e.now = e.now.Add(2 * time.Minute)
	if _, err := e.svc.RunOnce(t.Context()); err != nil || len(e.devices.serials("T1")) != 2 {
		t.Fatalf("run after Retry-After: err %v, devices %v", err, e.devices.serials("T1"))
	}
}

func TestRunOnceTermsNotSigned(t *testing.T) {
	e := newRunEnv(t, nil)
	e.fake.RequireTerms(true)
	if _, err := e.svc.RunOnce(t.Context()); !errors.Is(err, ErrTermsNotSigned) {
		t.Fatalf("run: %v, want ErrTermsNotSigned", err)
	}
	if logs := e.logs.String(); !strings.Contains(logs, "level=ERROR") || !strings.Contains(logs, "accept them") {
		t.Errorf("logs do not tell an administrator: %s", logs)
	}
}

func TestRunStopsWithContext(t *testing.T) {
	e := newRunEnv(t, nil)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- e.svc.Run(ctx, time.Hour) }()
	for len(e.devices.serials("T1")) < 2 {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run: %v", err)
	}
}
