package enroll_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"sync"
	"time"

	"github.com/bramley-mdm/bramley/enroll"
	"github.com/bramley-mdm/bramley/scep"
	"github.com/bramley-mdm/bramley/storage"
)

// fakeStore is a hand-written enroll.Store over maps, with the semantics
// the interface documents.
type fakeStore struct {
	mu         sync.Mutex
	tokens     map[string]*enroll.Token   // hex hash → token
	challenges map[string]storedChallenge // hex hash → challenge
	err        error                      // returned by every method when set
	useCalls   int
}

type storedChallenge struct {
	challenge scep.Challenge
	createdAt time.Time
}

func newFakeStore() *fakeStore {
	return &fakeStore{tokens: make(map[string]*enroll.Token), challenges: make(map[string]storedChallenge)}
}

func (s *fakeStore) CreateEnrollmentToken(_ context.Context, t enroll.Token) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	key := hex.EncodeToString(t.Hash)
	if _, ok := s.tokens[key]; ok {
		return storage.ErrConflict
	}
	for _, other := range s.tokens {
		if other.ID == t.ID {
			return storage.ErrConflict
		}
	}
	t.Hash = bytes.Clone(t.Hash)
	s.tokens[key] = &t
	return nil
}

func (s *fakeStore) UseEnrollmentToken(_ context.Context, hash []byte, now time.Time) (*enroll.Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.useCalls++
	if s.err != nil {
		return nil, s.err
	}
	t, ok := s.tokens[hex.EncodeToString(hash)]
	switch {
	case !ok:
		return nil, storage.ErrNotFound
	case !now.Before(t.ExpiresAt):
		return nil, enroll.ErrTokenExpired
	case t.MaxUses > 0 && t.Uses >= t.MaxUses:
		return nil, enroll.ErrTokenUsedUp
	}
	t.Uses++
	out := *t
	out.Hash = bytes.Clone(t.Hash)
	return &out, nil
}

func (s *fakeStore) CreateChallenge(_ context.Context, hash []byte, c scep.Challenge, now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	key := hex.EncodeToString(hash)
	if _, ok := s.challenges[key]; ok {
		return storage.ErrConflict
	}
	s.challenges[key] = storedChallenge{challenge: c, createdAt: now}
	return nil
}

// token returns the stored token with this hash.
func (s *fakeStore) token(hash []byte) (enroll.Token, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.tokens[hex.EncodeToString(hash)]
	if !ok {
		return enroll.Token{}, false
	}
	return *t, true
}

func (s *fakeStore) allTokens() []enroll.Token {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []enroll.Token
	for _, t := range s.tokens {
		out = append(out, *t)
	}
	return out
}

func (s *fakeStore) challenge(hash []byte) (storedChallenge, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.challenges[hex.EncodeToString(hash)]
	return c, ok
}

func (s *fakeStore) uses() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.useCalls
}

func (s *fakeStore) challengeCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.challenges)
}

// memSettings is an in-memory pki.SettingStore with the
// create-unless-exists semantics the real backends give.
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
