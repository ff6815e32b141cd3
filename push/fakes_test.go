package push

import (
	"bytes"
	"cmp"
	"context"
	"slices"
	"sync"
	"time"

	"github.com/bramley-mdm/bramley/mdm"
	"github.com/bramley-mdm/bramley/storage"
)

// memStore is a hand-written Store following the documented semantics
// to the letter; storage backends can read it as a reference. It also
// implements queue.Store, so the queue's enqueue hook can be wired to a
// real queue.Service.
type memStore struct {
	mu          sync.Mutex
	now         func() time.Time
	enrollments map[string]*memEnrollment
	claims      [][]string // enrollment IDs of each ClaimPendingPushes answer
}

type memEnrollment struct {
	id, topic, magic string
	token            []byte
	enabled          bool
	tokenInvalid     bool
	state            *PushRecord // nil: never pushed
	open             []time.Time // when each open command was queued
}

func newMemStore(now func() time.Time) *memStore {
	return &memStore{now: now, enrollments: make(map[string]*memEnrollment)}
}

// add stores an enabled enrollment that has sent TokenUpdate.
func (s *memStore) add(id string, tok []byte, topic string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.enrollments[id] = &memEnrollment{id: id, topic: topic, magic: "magic-" + id, token: tok, enabled: true}
}

func (s *memStore) get(id string) memEnrollment {
	s.mu.Lock()
	defer s.mu.Unlock()
	return *s.enrollments[id]
}

func (s *memStore) state(id string) PushRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.enrollments[id].state; st != nil {
		return *st
	}
	return PushRecord{}
}

func (s *memStore) update(id string, f func(e *memEnrollment)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s.enrollments[id])
}

// tokenUpdate is what checkin's StoreTokenUpdate must do for push: new
// values, the invalid mark cleared, the push state reset.
func (s *memStore) tokenUpdate(id string, tok []byte) {
	s.update(id, func(e *memEnrollment) {
		e.token, e.tokenInvalid, e.state, e.enabled = tok, false, nil, true
	})
}

func (s *memStore) PushTargets(_ context.Context, ids []string) ([]Target, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ts []Target
	seen := make(map[string]bool)
	for _, id := range ids {
		e, ok := s.enrollments[id]
		if !ok || seen[id] || !e.enabled || len(e.token) == 0 || e.tokenInvalid {
			continue
		}
		seen[id] = true
		ts = append(ts, e.target())
	}
	return ts, nil
}

func (e *memEnrollment) target() Target {
	return Target{EnrollmentID: e.id, Token: bytes.Clone(e.token), PushMagic: e.magic, Topic: e.topic}
}

func (s *memStore) RecordPushResults(_ context.Context, records []PushRecord) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range records {
		e, ok := s.enrollments[r.EnrollmentID]
		if !ok {
			continue
		}
		if e.state != nil && e.state.PushedAt.After(r.PushedAt) {
			continue
		}
		st := r
		e.state = &st
		if r.TokenInvalid && bytes.Equal(e.token, r.Token) {
			e.tokenInvalid = true
		}
	}
	return nil
}

func (s *memStore) ClaimPendingPushes(_ context.Context, c PushClaim) ([]PendingPush, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	type due struct {
		e  *memEnrollment
		at time.Time // NextPushAt, zero when never pushed
	}
	var all []due
	for _, e := range s.enrollments {
		if !e.enabled || len(e.token) == 0 || e.tokenInvalid {
			continue
		}
		switch {
		case e.state == nil:
			if len(e.open) > 0 && !slices.MinFunc(e.open, time.Time.Compare).After(c.QueuedBefore) {
				all = append(all, due{e: e})
			}
		case !e.state.NextPushAt.After(c.Now) && (len(e.open) > 0 || e.state.Retry):
			all = append(all, due{e: e, at: e.state.NextPushAt})
		}
	}
	slices.SortFunc(all, func(a, b due) int { return cmp.Or(a.at.Compare(b.at), cmp.Compare(a.e.id, b.e.id)) })
	if len(all) > c.Limit {
		all = all[:c.Limit]
	}
	var out []PendingPush
	var ids []string
	for _, d := range all {
		if d.e.state == nil {
			d.e.state = &PushRecord{EnrollmentID: d.e.id}
		}
		out = append(out, PendingPush{Target: d.e.target(), Attempts: d.e.state.Attempts})
		d.e.state.NextPushAt = c.LeaseUntil
		ids = append(ids, d.e.id)
	}
	s.claims = append(s.claims, ids)
	return out, nil
}

// queue.Store, as far as the enqueue hook needs it.

func (s *memStore) Enqueue(_ context.Context, cmd storage.NewCommand, ids []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		if _, ok := s.enrollments[id]; !ok {
			return storage.ErrNotFound
		}
	}
	for _, id := range ids {
		e := s.enrollments[id]
		e.open = append(e.open, cmd.CreatedAt)
	}
	return nil
}

func (s *memStore) NextCommand(context.Context, string, bool, time.Time) (*mdm.Command, error) {
	return nil, nil
}

func (s *memStore) StoreResult(context.Context, string, *mdm.CommandResults, time.Time) (string, error) {
	return "", storage.ErrNotFound
}
