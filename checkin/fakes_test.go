package checkin_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/bramley-mdm/bramley/identity"
	"github.com/bramley-mdm/bramley/mdm"
	"github.com/bramley-mdm/bramley/storage"
)

// fakeStorage is a hand-written checkin.Store and checkin.BootstrapStore
// over maps, with the semantics the interfaces document, as the real
// backends implement both.
type fakeStorage struct {
	mu          sync.Mutex
	devices     map[string]*fakeDevice     // device ID → device
	enrollments map[string]*fakeEnrollment // enrollment ID → channel
	err         error                      // returned by every method when set
	writes      int                        // successful writes of any kind
}

type fakeDevice struct {
	certHash        []byte
	topic           string
	serialNumber    string
	authenticatedAt time.Time
	queued          int    // queued commands; Authenticate drops them
	bootstrap       []byte // sealed
}

type fakeEnrollment struct {
	deviceID          string
	token             []byte
	pushMagic         string
	sealedUnlockToken []byte
	enabled           bool
	updatedAt         time.Time
}

func newFakeStorage() *fakeStorage {
	return &fakeStorage{devices: make(map[string]*fakeDevice), enrollments: make(map[string]*fakeEnrollment)}
}

// addDevice records a device as a past Authenticate would have.
func (s *fakeStorage) addDevice(deviceID string, certHash []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.devices[deviceID] = &fakeDevice{certHash: bytes.Clone(certHash)}
}

// addEnrollment records an enabled channel as a past TokenUpdate would have.
func (s *fakeStorage) addEnrollment(enrollmentID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	device, _ := mdm.SplitID(enrollmentID)
	s.enrollments[enrollmentID] = &fakeEnrollment{deviceID: device, token: []byte("old"), pushMagic: "old", enabled: true}
}

// setBootstrap escrows a sealed bootstrap token for a known device.
func (s *fakeStorage) setBootstrap(deviceID string, sealed []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.devices[deviceID].bootstrap = bytes.Clone(sealed)
}

func (s *fakeStorage) device(deviceID string) (fakeDevice, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.devices[deviceID]
	if !ok {
		return fakeDevice{}, false
	}
	return *d, true
}

func (s *fakeStorage) enrollment(enrollmentID string) (fakeEnrollment, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.enrollments[enrollmentID]
	if !ok {
		return fakeEnrollment{}, false
	}
	return *e, true
}

func (s *fakeStorage) writeCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writes
}

func (s *fakeStorage) StoreAuthenticate(_ context.Context, msg *mdm.Authenticate, certHash []byte, now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	id := msg.DeviceID()
	d, ok := s.devices[id]
	if !ok {
		d = &fakeDevice{}
		s.devices[id] = d
	}
	d.certHash = bytes.Clone(certHash)
	d.topic = msg.Topic
	d.serialNumber = msg.SerialNumber
	d.authenticatedAt = now
	d.queued = 0
	for eid, e := range s.enrollments {
		if dev, _ := mdm.SplitID(eid); dev == id {
			e.token, e.pushMagic, e.enabled = nil, "", false
		}
	}
	s.writes++
	return nil
}

func (s *fakeStorage) StoreTokenUpdate(_ context.Context, msg *mdm.TokenUpdate, sealedUnlockToken []byte, now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	if _, ok := s.devices[msg.DeviceID()]; !ok {
		return storage.ErrNotFound
	}
	e, ok := s.enrollments[msg.ID()]
	if !ok {
		e = &fakeEnrollment{deviceID: msg.DeviceID()}
		s.enrollments[msg.ID()] = e
	}
	e.token = bytes.Clone(msg.Token)
	e.pushMagic = msg.PushMagic
	if sealedUnlockToken != nil {
		e.sealedUnlockToken = bytes.Clone(sealedUnlockToken)
	}
	e.enabled = true
	e.updatedAt = now
	s.writes++
	return nil
}

func (s *fakeStorage) CheckOut(_ context.Context, enrollmentID string, now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	e, ok := s.enrollments[enrollmentID]
	if !ok {
		return storage.ErrNotFound
	}
	e.enabled, e.updatedAt = false, now
	if _, user := mdm.SplitID(enrollmentID); user == "" {
		for eid, other := range s.enrollments {
			if strings.HasPrefix(eid, enrollmentID+":") {
				other.enabled, other.updatedAt = false, now
			}
		}
	}
	s.writes++
	return nil
}

func (s *fakeStorage) StoreBootstrapToken(_ context.Context, deviceID string, sealed []byte, _ time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	d, ok := s.devices[deviceID]
	if !ok {
		return storage.ErrNotFound
	}
	// Only nil deletes: an empty non-nil value is stored as given, so a
	// service that sealed an empty token would be caught on the way out.
	d.bootstrap = bytes.Clone(sealed) // nil stays nil, empty stays empty
	s.writes++
	return nil
}

func (s *fakeStorage) BootstrapToken(_ context.Context, deviceID string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return nil, s.err
	}
	d, ok := s.devices[deviceID]
	if !ok || d.bootstrap == nil {
		return nil, storage.ErrNotFound
	}
	return bytes.Clone(d.bootstrap), nil
}

// fakeSealer "encrypts" by prefixing and flipping every bit, so a sealed
// value never equals, nor contains, its plaintext, and Open refuses what
// Seal did not make.
type fakeSealer struct {
	mu     sync.Mutex
	sealed int
	opened int
}

const sealPrefix = "sealed:"

func (s *fakeSealer) Seal(plaintext []byte) ([]byte, error) {
	s.mu.Lock()
	s.sealed++
	s.mu.Unlock()
	out := []byte(sealPrefix)
	for _, b := range plaintext {
		out = append(out, ^b)
	}
	return out, nil
}

func (s *fakeSealer) Open(sealed []byte) ([]byte, error) {
	s.mu.Lock()
	s.opened++
	s.mu.Unlock()
	rest, ok := bytes.CutPrefix(sealed, []byte(sealPrefix))
	if !ok || len(rest) == 0 {
		return nil, errors.New("fake sealer: not a sealed value")
	}
	out := make([]byte, len(rest))
	for i, b := range rest {
		out[i] = ^b
	}
	return out, nil
}

// fakeBinder records which check it was asked for and refuses with err
// (for Check) or authErr (for CheckAuthenticate) when set.
type fakeBinder struct {
	mu      sync.Mutex
	calls   []binderCall
	err     error
	authErr error
}

type binderCall struct {
	method   string
	deviceID string
	id       *identity.Identity
}

func (b *fakeBinder) Check(_ context.Context, deviceID string, id *identity.Identity) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls = append(b.calls, binderCall{"Check", deviceID, id})
	return b.err
}

func (b *fakeBinder) CheckAuthenticate(_ context.Context, deviceID string, id *identity.Identity) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls = append(b.calls, binderCall{"CheckAuthenticate", deviceID, id})
	return b.authErr
}

func (b *fakeBinder) recorded() []binderCall {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]binderCall(nil), b.calls...)
}

// fakeDirectory knows the users in known, and fails with err when set.
type fakeDirectory struct {
	mu    sync.Mutex
	known map[string]bool
	err   error
	calls []string // userID/shortName per lookup
}

func (d *fakeDirectory) LookupUser(_ context.Context, userID, shortName string) (bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls = append(d.calls, userID+"/"+shortName)
	if d.err != nil {
		return false, d.err
	}
	return d.known[userID], nil
}

func (d *fakeDirectory) lookups() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.calls...)
}
