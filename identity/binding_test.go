package identity

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/bramley-mdm/bramley/handler"
	"github.com/bramley-mdm/bramley/storage"
)

// fakeStore is a hand-written identity.Store over maps.
type fakeStore struct {
	mu       sync.Mutex
	bindings map[string]fakeBinding // device ID → binding
	issued   map[string]string      // hex certificate hash → device ID
	enabled  map[string]bool        // enrollment ID → device channel enabled
	err      error                  // returned by every method when set
}

type fakeBinding struct {
	hash []byte
	at   time.Time
}

func newFakeStore() *fakeStore {
	return &fakeStore{bindings: make(map[string]fakeBinding), issued: make(map[string]string), enabled: make(map[string]bool)}
}

func (s *fakeStore) bind(deviceID string, id *Identity, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bindings[deviceID] = fakeBinding{hash: id.Hash, at: at}
}

func (s *fakeStore) issue(deviceID string, id *Identity) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.issued[hex.EncodeToString(id.Hash)] = deviceID
}

func (s *fakeStore) CertBinding(_ context.Context, deviceID string) ([]byte, time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return nil, time.Time{}, s.err
	}
	b, ok := s.bindings[deviceID]
	if !ok {
		return nil, time.Time{}, storage.ErrNotFound
	}
	return b.hash, b.at, nil
}

func (s *fakeStore) CertDevice(_ context.Context, hash []byte) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return "", s.err
	}
	for id, b := range s.bindings {
		if bytes.Equal(b.hash, hash) {
			return id, nil
		}
	}
	return "", storage.ErrNotFound
}

func (s *fakeStore) IssuedTo(_ context.Context, hash []byte) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return "", s.err
	}
	id, ok := s.issued[hex.EncodeToString(hash)]
	if !ok {
		return "", storage.ErrNotFound
	}
	return id, nil
}

func (s *fakeStore) RebindCert(_ context.Context, deviceID string, hash []byte, now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	if _, ok := s.bindings[deviceID]; !ok {
		return storage.ErrNotFound
	}
	s.bindings[deviceID] = fakeBinding{hash: hash, at: now}
	return nil
}

func (s *fakeStore) Enrollment(_ context.Context, enrollmentID string) (*storage.Enrollment, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return nil, s.err
	}
	enabled, ok := s.enabled[enrollmentID]
	if !ok {
		return nil, storage.ErrNotFound
	}
	return &storage.Enrollment{ID: enrollmentID, DeviceID: enrollmentID, Enabled: enabled}, nil
}

func status(err error) int {
	if err == nil {
		return http.StatusOK
	}
	code, _ := handler.Status(err)
	return code
}

const (
	deviceA = "D4D56083-BFB0-5047-8BDF-2727BACDC59B"
	deviceB = "0000FE00-4D5A1E5C5E4F6A0B"
)

func TestBinderCheck(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	ca := newCA(t, time.Now)
	enrolled := issue(t, ca, 24*time.Hour).identity()
	other := issue(t, ca, 24*time.Hour).identity()
	renewal := issue(t, ca, 24*time.Hour).identity()
	renewalForB := issue(t, ca, 24*time.Hour).identity()

	store := newFakeStore()
	store.bind(deviceA, enrolled, now.Add(-time.Hour))
	store.bind(deviceB, other, now.Add(-time.Hour))
	store.issue(deviceA, renewal)
	store.issue(deviceB, renewalForB)
	b := NewBinder(store, slog.New(slog.DiscardHandler), func() time.Time { return now })

	if err := b.Check(ctx, deviceA, enrolled); err != nil {
		t.Errorf("bound certificate: %v", err)
	}
	if err := b.Check(ctx, deviceA, other); status(err) != http.StatusForbidden {
		t.Errorf("another device's certificate: %v, want 403", err)
	}
	if err := b.Check(ctx, deviceA, renewalForB); status(err) != http.StatusForbidden {
		t.Errorf("a renewal issued to another device: %v, want 403", err)
	}
	err := b.Check(ctx, "unknown-udid", enrolled)
	if status(err) != http.StatusForbidden || !errors.Is(err, ErrUnknownDevice) {
		t.Errorf("unknown device: %v, want 403 and ErrUnknownDevice", err)
	}

	// A renewal bramley issued to the device is accepted and becomes the
	// binding; the certificate it replaced no longer speaks for the device.
	if err := b.Check(ctx, deviceA, renewal); err != nil {
		t.Fatalf("renewal: %v", err)
	}
	if got := store.bindings[deviceA]; !bytes.Equal(got.hash, renewal.Hash) || !got.at.Equal(now) {
		t.Errorf("binding after renewal = %x at %v, want %x at %v", got.hash, got.at, renewal.Hash, now)
	}
	if err := b.Check(ctx, deviceA, renewal); err != nil {
		t.Errorf("renewal, second request: %v", err)
	}
	if err := b.Check(ctx, deviceA, enrolled); status(err) != http.StatusForbidden {
		t.Errorf("replaced certificate: %v, want 403", err)
	}

	store.err = errors.New("database down")
	if err := b.Check(ctx, deviceA, renewal); status(err) != http.StatusInternalServerError || errors.Is(err, ErrUnknownDevice) {
		t.Errorf("store failure: %v, want 500", err)
	}
}

func TestBinderCheckAuthenticate(t *testing.T) {
	ctx := context.Background()
	ca := newCA(t, time.Now)
	enrolled := issue(t, ca, 24*time.Hour).identity()
	otherDevice := issue(t, ca, 24*time.Hour).identity()
	fresh := issue(t, ca, 24*time.Hour).identity()
	renewal := issue(t, ca, 24*time.Hour).identity()

	// enrollment is the state of device A's device channel.
	const (
		enabled    = "enabled"    // enrolled: TokenUpdate seen
		disabled   = "disabled"   // never finished enrolling, or checked out
		noChannel  = "no channel" // bound, but no enrollment row
		newDevice  = "new device" // no binding at all
		emptyBound = "empty binding"
	)
	tests := []struct {
		name       string
		enrollment string
		id         *Identity
		want       int
	}{
		{name: "same certificate, enrolled", enrollment: enabled, id: enrolled, want: 200},
		{name: "certificate bound to another device", enrollment: disabled, id: otherDevice, want: 403},
		{name: "certificate bound to another device, new device", enrollment: newDevice, id: otherDevice, want: 403},
		{name: "fresh certificate, new device", enrollment: newDevice, id: fresh, want: 200},
		{name: "fresh certificate, device bound to nothing yet", enrollment: emptyBound, id: fresh, want: 200},
		{name: "new certificate, enrolled device", enrollment: enabled, id: fresh, want: 403},
		{name: "new certificate after CheckOut or unfinished enrolment", enrollment: disabled, id: fresh, want: 200},
		{name: "new certificate, no enrollment row", enrollment: noChannel, id: fresh, want: 200},
		{name: "renewal bramley issued to the device, enrolled", enrollment: enabled, id: renewal, want: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := newFakeStore()
			store.bind(deviceB, otherDevice, time.Now())
			store.enabled[deviceB] = true
			store.issue(deviceA, renewal)
			switch tt.enrollment {
			case enabled, disabled:
				store.bind(deviceA, enrolled, time.Now())
				store.enabled[deviceA] = tt.enrollment == enabled
			case noChannel:
				store.bind(deviceA, enrolled, time.Now())
			case emptyBound:
				store.bindings[deviceA] = fakeBinding{}
			}
			b := NewBinder(store, slog.New(slog.DiscardHandler), time.Now)
			err := b.CheckAuthenticate(ctx, deviceA, tt.id)
			if got := status(err); got != tt.want {
				t.Errorf("CheckAuthenticate = %v (status %d), want %d", err, got, tt.want)
			}
		})
	}

	t.Run("store failure", func(t *testing.T) {
		store := newFakeStore()
		store.err = errors.New("database down")
		b := NewBinder(store, slog.New(slog.DiscardHandler), time.Now)
		if err := b.CheckAuthenticate(ctx, deviceA, enrolled); status(err) != http.StatusInternalServerError {
			t.Errorf("err = %v, want a 500", err)
		}
	})
}
