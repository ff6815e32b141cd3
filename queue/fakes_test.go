package queue_test

import (
	"bytes"
	"context"
	"slices"
	"sync"
	"time"

	"github.com/bramley-mdm/bramley/identity"
	"github.com/bramley-mdm/bramley/mdm"
	"github.com/bramley-mdm/bramley/storage"
)

// fakeStore is a hand-written queue.Store over maps, with the semantics
// the interface documents.
type fakeStore struct {
	mu          sync.Mutex
	enrollments map[string][]*fakeTarget // enrollment ID → its queue, in order queued
	commands    map[string]storage.NewCommand
	err         error // returned by every method when set

	enqueued []fakeEnqueue  // every Enqueue call that succeeded
	nexts    []fakeNextCall // every NextCommand call
	results  int            // StoreResult calls, refused or not
}

type fakeTarget struct {
	cmd         storage.NewCommand
	status      string // "" while Pending
	deliveredAt time.Time
	result      []byte
	updatedAt   time.Time
}

type fakeEnqueue struct {
	cmd storage.NewCommand
	ids []string
}

type fakeNextCall struct {
	enrollmentID string
	skipNotNow   bool
	now          time.Time
}

func newFakeStore(enrollmentIDs ...string) *fakeStore {
	s := &fakeStore{enrollments: make(map[string][]*fakeTarget), commands: make(map[string]storage.NewCommand)}
	for _, id := range enrollmentIDs {
		s.enrollments[id] = nil
	}
	return s
}

func final(status string) bool {
	return status == mdm.StatusAcknowledged || status == mdm.StatusError || status == mdm.StatusCommandFormatError
}

func (s *fakeStore) Enqueue(_ context.Context, cmd storage.NewCommand, enrollmentIDs []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	for _, id := range enrollmentIDs {
		if _, ok := s.enrollments[id]; !ok {
			return storage.ErrNotFound
		}
	}
	if _, ok := s.commands[cmd.UUID]; ok {
		return storage.ErrConflict
	}
	cmd.Raw = bytes.Clone(cmd.Raw)
	s.commands[cmd.UUID] = cmd
	for _, id := range enrollmentIDs {
		s.enrollments[id] = append(s.enrollments[id], &fakeTarget{cmd: cmd, updatedAt: cmd.CreatedAt})
	}
	s.enqueued = append(s.enqueued, fakeEnqueue{cmd: cmd, ids: slices.Clone(enrollmentIDs)})
	return nil
}

func (s *fakeStore) NextCommand(_ context.Context, enrollmentID string, skipNotNow bool, now time.Time) (*mdm.Command, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nexts = append(s.nexts, fakeNextCall{enrollmentID, skipNotNow, now})
	if s.err != nil {
		return nil, s.err
	}
	var best *fakeTarget
	for _, t := range s.enrollments[enrollmentID] {
		switch {
		case t.status == mdm.StatusNotNow && skipNotNow, t.status != "" && t.status != mdm.StatusNotNow:
			continue
		case !t.cmd.ExpiresAt.IsZero() && !now.Before(t.cmd.ExpiresAt):
			continue
		}
		// By priority, then age; the queue is in the order queued.
		if best == nil || t.cmd.Priority > best.cmd.Priority ||
			t.cmd.Priority == best.cmd.Priority && t.cmd.CreatedAt.Before(best.cmd.CreatedAt) {
			best = t
		}
	}
	if best == nil {
		return nil, nil
	}
	if best.deliveredAt.IsZero() {
		best.deliveredAt = now
	}
	return &mdm.Command{CommandUUID: best.cmd.UUID, RequestType: best.cmd.RequestType, Raw: bytes.Clone(best.cmd.Raw)}, nil
}

func (s *fakeStore) StoreResult(_ context.Context, enrollmentID string, res *mdm.CommandResults, now time.Time) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.results++
	if s.err != nil {
		return "", s.err
	}
	for _, t := range s.enrollments[enrollmentID] {
		if t.cmd.UUID != res.CommandUUID {
			continue
		}
		if !final(t.status) {
			t.status, t.result, t.updatedAt = res.Status, bytes.Clone(res.Raw), now
		}
		return t.cmd.RequestType, nil
	}
	return "", storage.ErrNotFound
}

// target returns the state of a command on an enrollment.
func (s *fakeStore) target(enrollmentID, uuid string) (fakeTarget, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.enrollments[enrollmentID] {
		if t.cmd.UUID == uuid {
			return *t, true
		}
	}
	return fakeTarget{}, false
}

func (s *fakeStore) nextCalls() []fakeNextCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.nexts)
}

func (s *fakeStore) enqueueCalls() []fakeEnqueue {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.enqueued)
}

func (s *fakeStore) resultCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.results
}

// fakeDeviceInfo is a hand-written queue.DeviceInfoStore: it overwrites
// a known device's attributes with the non-empty fields it is given.
type fakeDeviceInfo struct {
	mu      sync.Mutex
	devices map[string]storage.Device
	calls   int
}

func newFakeDeviceInfo(deviceIDs ...string) *fakeDeviceInfo {
	d := &fakeDeviceInfo{devices: make(map[string]storage.Device)}
	for _, id := range deviceIDs {
		d.devices[id] = storage.Device{ID: id, UDID: id, DeviceName: "before", HostName: "before.example.com"}
	}
	return d
}

func (d *fakeDeviceInfo) UpdateDeviceInfo(_ context.Context, deviceID string, info storage.Device, now time.Time) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls++
	dev, ok := d.devices[deviceID]
	if !ok {
		return storage.ErrNotFound
	}
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&dev.SerialNumber, info.SerialNumber)
	set(&dev.Model, info.Model)
	set(&dev.ModelName, info.ModelName)
	set(&dev.ProductName, info.ProductName)
	set(&dev.DeviceName, info.DeviceName)
	set(&dev.OSVersion, info.OSVersion)
	set(&dev.BuildVersion, info.BuildVersion)
	set(&dev.IMEI, info.IMEI)
	set(&dev.MEID, info.MEID)
	set(&dev.HostName, info.HostName)
	dev.UpdatedAt = now
	d.devices[deviceID] = dev
	return nil
}

func (d *fakeDeviceInfo) device(deviceID string) (storage.Device, int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.devices[deviceID], d.calls
}

// fakeBinder records the devices it was asked about and refuses with err
// when set.
type fakeBinder struct {
	mu    sync.Mutex
	asked []string
	ids   []*identity.Identity
	err   error
}

func (b *fakeBinder) Check(_ context.Context, deviceID string, id *identity.Identity) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.asked = append(b.asked, deviceID)
	b.ids = append(b.ids, id)
	return b.err
}

func (b *fakeBinder) devices() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.asked)
}
