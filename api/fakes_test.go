package api

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/bramley-mdm/bramley/mdm"
	"github.com/bramley-mdm/bramley/queue"
	"github.com/bramley-mdm/bramley/storage"
)

// fakeStore is an in-memory Store. err, when set, fails every call.
type fakeStore struct {
	devices     map[string]storage.Device
	enrollments map[string]storage.Enrollment
	err         error
}

func (s *fakeStore) Devices(_ context.Context, f storage.DeviceFilter) ([]storage.Device, error) {
	if s.err != nil {
		return nil, s.err
	}
	var out []storage.Device
	for _, d := range s.devices {
		if (f.SerialNumber == "" || d.SerialNumber == f.SerialNumber) &&
			(f.UDID == "" || d.UDID == f.UDID) && d.ID > f.After {
			out = append(out, d)
		}
	}
	slices.SortFunc(out, func(a, b storage.Device) int { return strings.Compare(a.ID, b.ID) })
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[:f.Limit]
	}
	return out, nil
}

func (s *fakeStore) Device(_ context.Context, id string) (*storage.Device, error) {
	if s.err != nil {
		return nil, s.err
	}
	d, ok := s.devices[id]
	if !ok {
		return nil, storage.ErrNotFound
	}
	return &d, nil
}

func (s *fakeStore) Enrollment(_ context.Context, id string) (*storage.Enrollment, error) {
	if s.err != nil {
		return nil, s.err
	}
	e, ok := s.enrollments[id]
	if !ok {
		return nil, storage.ErrNotFound
	}
	return &e, nil
}

func (s *fakeStore) Enrollments(_ context.Context, deviceID string) ([]storage.Enrollment, error) {
	if s.err != nil {
		return nil, s.err
	}
	var out []storage.Enrollment
	for _, e := range s.enrollments {
		if e.DeviceID == deviceID {
			out = append(out, e)
		}
	}
	// Device channel first: its ID is the shortest.
	slices.SortFunc(out, func(a, b storage.Enrollment) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// fakeCommands is an in-memory CommandStore. cancellable holds how many
// targets CancelCommand cancels per command; now records the last clock
// reading it was given.
type fakeCommands struct {
	commands    map[string]*storage.Command
	queues      map[string][]storage.QueueItem
	cancellable map[string]int
	now         time.Time
}

func (c *fakeCommands) Command(_ context.Context, uuid string, now time.Time) (*storage.Command, error) {
	c.now = now
	cmd, ok := c.commands[uuid]
	if !ok {
		return nil, storage.ErrNotFound
	}
	cp := *cmd
	cp.Targets = slices.Clone(cmd.Targets)
	return &cp, nil
}

func (c *fakeCommands) Queue(_ context.Context, enrollmentID string, now time.Time) ([]storage.QueueItem, error) {
	c.now = now
	return c.queues[enrollmentID], nil
}

func (c *fakeCommands) CancelCommand(_ context.Context, uuid string, now time.Time) (int, error) {
	c.now = now
	if _, ok := c.commands[uuid]; !ok {
		return 0, storage.ErrNotFound
	}
	n := c.cancellable[uuid]
	c.cancellable[uuid] = 0
	return n, nil
}

// fakeKeys is an in-memory KeyStore keyed by hex hash; it records every
// hash it was asked about so tests can see keys arrive hashed.
type fakeKeys struct {
	mu     sync.Mutex
	hashes map[string]bool
	asked  [][]byte
	err    error
}

func (k *fakeKeys) APIKeyExists(_ context.Context, hash []byte) (bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.asked = append(k.asked, hash)
	if k.err != nil {
		return false, k.err
	}
	return k.hashes[hex.EncodeToString(hash)], nil
}

func (k *fakeKeys) CreateAPIKey(_ context.Context, hash []byte, _ string, _ time.Time) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.hashes[hex.EncodeToString(hash)] = true
	return nil
}

// enqueued is one call of fakeEnqueuer.Enqueue.
type enqueued struct {
	cmd  *mdm.Command
	ids  []string
	opts queue.EnqueueOptions
}

// fakeEnqueuer refuses what the real queue refuses (unknown enrollments,
// taken UUIDs, device-only commands on user channels) and records the rest.
type fakeEnqueuer struct {
	store *fakeStore
	calls []enqueued
	err   error
}

func (q *fakeEnqueuer) Enqueue(_ context.Context, cmd *mdm.Command, ids []string, opts queue.EnqueueOptions) error {
	if q.err != nil {
		return q.err
	}
	if len(ids) == 0 {
		return errors.New("no enrollment IDs")
	}
	for _, id := range ids {
		if _, ok := q.store.enrollments[id]; !ok {
			return fmt.Errorf("enqueueing %s: %w", cmd.RequestType, storage.ErrNotFound)
		}
		if _, user := mdm.SplitID(id); user != "" && !mdm.UserChannelAllowed(cmd.RequestType) {
			return fmt.Errorf("%w: %s to %s", queue.ErrUserChannel, cmd.RequestType, id)
		}
	}
	for _, c := range q.calls {
		if c.cmd.CommandUUID == cmd.CommandUUID {
			return fmt.Errorf("enqueueing %s: %w", cmd.RequestType, storage.ErrConflict)
		}
	}
	q.calls = append(q.calls, enqueued{cmd: cmd, ids: slices.Clone(ids), opts: opts})
	return nil
}
