package vpp

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/bramley-mdm/bramley/appletest"
	"github.com/bramley-mdm/bramley/storage"
)

// memStore is a hand-written UserStore following the documented semantics
// to the letter; storage backends can read it as a reference.
type memStore struct {
	mu    sync.Mutex
	users []UserRecord
	calls map[string]int
}

func newMemStore() *memStore { return &memStore{calls: map[string]int{}} }

func (s *memStore) VPPUser(_ context.Context, location, userID string) (UserRecord, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls["VPPUser"]++
	for _, u := range s.users {
		if u.Location == location && u.UserID == userID {
			return u, nil
		}
	}
	return UserRecord{}, storage.ErrNotFound
}

func (s *memStore) CreateVPPUser(_ context.Context, rec UserRecord) (UserRecord, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls["CreateVPPUser"]++
	for _, u := range s.users {
		if u.Location == rec.Location && u.UserID == rec.UserID {
			return u, nil
		}
	}
	s.users = append(s.users, rec)
	return rec, nil
}

func (s *memStore) UpdateVPPUser(_ context.Context, location, clientUserID string, st UserState) (UserRecord, UserState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls["UpdateVPPUser"]++
	for i := range s.users {
		u := &s.users[i]
		if u.Location == location && u.ClientUserID == clientUserID {
			prev := u.UserState
			u.Status, u.IDHash = st.Status, st.IDHash
			if st.InviteCode != "" {
				u.InviteCode = st.InviteCode
			}
			return *u, prev, nil
		}
	}
	return UserRecord{}, UserState{}, storage.ErrNotFound
}

func (s *memStore) VPPUsersByIDHash(_ context.Context, location, idHash string) ([]UserRecord, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls["VPPUsersByIDHash"]++
	var out []UserRecord
	for _, u := range s.users {
		if u.Location == location && u.IDHash == idHash {
			out = append(out, u)
		}
	}
	return out, nil
}

// put stores a record as it is, for tests that start from a given state.
func (s *memStore) put(rec UserRecord) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.users = append(s.users, rec)
}

func (s *memStore) get(userID string) UserRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, u := range s.users {
		if u.UserID == userID {
			return u
		}
	}
	return UserRecord{}
}

// clock is a fake clock whose Sleep makes time pass at once and records
// the wait; onSleep runs after each, for tests that act "while" the
// client waits (completing Apple's events, say).
type clock struct {
	mu      sync.Mutex
	t       time.Time
	sleeps  []time.Duration
	onSleep func(time.Duration)
}

func newClock() *clock { return &clock{t: time.Now()} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.sleeps = append(c.sleeps, d)
	hook := c.onSleep
	c.mu.Unlock()
	if hook != nil {
		hook(d)
	}
	return nil
}

// waits returns the recorded sleeps longer than pacing (a second or
// more): back-offs, Retry-After and event polls.
func (c *clock) waits() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []time.Duration
	for _, d := range c.sleeps {
		if d >= time.Second {
			out = append(out, d)
		}
	}
	return out
}

func (c *clock) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sleeps = nil
}

var testMDM = MDMInfo{ID: "7f1c9e55-bramley-test", Name: "bramley", Metadata: "test"}

// env is a fake Apps and Books service with a client for it, on a fake clock.
type env struct {
	fake   *appletest.VPP
	client *Client
	clock  *clock
}

func newEnv(t *testing.T, fakeOpts []appletest.VPPOption, opts ...Option) *env {
	t.Helper()
	fake := appletest.NewVPP(t, fakeOpts...)
	clk := newClock()
	base := []Option{WithURL(fake.URL()), WithRootCAs(fake.RootCAs()), WithSleeper(clk.Sleep),
		WithNow(clk.Now), WithMDMInfo(testMDM)}
	c := NewClient(fake.SToken(), append(base, opts...)...)
	return &env{fake: fake, client: c, clock: clk}
}

// completeOnSleep has Apple carry out pending events whenever the client
// waits, as it would during the 30 s between polls.
func (e *env) completeOnSleep() { e.clock.onSleep = func(time.Duration) { e.fake.CompleteEvents() } }

func sortedHolders(h []string) []string {
	h = slices.Clone(h)
	slices.SortFunc(h, cmp.Compare)
	return h
}
