package ade

import (
	"context"
	"errors"
	"time"
)

// Locker takes a lock held across the cluster, so that one replica runs
// the periodic sync at a time. ok is false, with no error, when another
// holds it; unlock releases it.
type Locker interface {
	Lock(ctx context.Context, name string) (unlock func(), ok bool, err error)
}

// WithLocker keeps periodic runs (Run) to one replica at a time; without
// it every replica runs them.
func WithLocker(l Locker) ServiceOption { return func(s *Service) { s.locker = l } }

// runLock names the cluster lock of RunOnce.
const runLock = "bramley.ade.sync"

// Run syncs and assigns (RunOnce) at once, then every interval, until ctx
// ends; it returns ctx's error.
func (s *Service) Run(ctx context.Context, interval time.Duration) error {
	for {
		if _, err := s.RunOnce(ctx); err != nil && ctx.Err() == nil {
			s.logger.Warn("ADE periodic sync", "err", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}

// RunOnce syncs every unexpired token and then applies the assignment
// rules to its new and unassigned devices, when this replica holds the
// cluster lock; ran is false when another replica does. A token Apple
// asked to wait (Retry-After, THROTTLED) is left until then. Each token's
// failure is logged, Apple's unsigned terms as an error for an
// administrator; the first is returned.
func (s *Service) RunOnce(ctx context.Context) (ran bool, err error) {
	if s.locker != nil {
		unlock, ok, err := s.locker.Lock(ctx, runLock)
		if err != nil || !ok {
			return false, err
		}
		defer unlock()
	}
	tokens, err := s.tokens.Tokens(ctx)
	if err != nil {
		return true, err
	}
	s.warnExpiring(tokens) // expiry.go
	var first error
	for _, t := range tokens {
		now := s.now()
		if t.AccessTokenExpiry.Before(now) || now.Before(s.waitUntil(t.ID)) {
			continue
		}
		_, err := s.Sync(ctx, t.ID) // and assigns
		if err == nil {
			continue
		}
		if first == nil {
			first = err
		}
		log := s.logger.With("token_id", t.ID, "server_name", t.ServerName)
		var apple *Error
		if errors.As(err, &apple) && apple.RetryAfter > 0 {
			s.wait(t.ID, apple.RetryAfter)
		}
		switch {
		case errors.Is(err, ErrTermsNotSigned):
			log.Error("ADE sync stopped: "+ErrTermsNotSigned.Error(), "err", err)
		default:
			log.Warn("ADE periodic sync failed", "err", err)
		}
	}
	return true, first
}

func (s *Service) waitUntil(tokenID string) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.notBefore[tokenID]
}

func (s *Service) wait(tokenID string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.notBefore[tokenID] = s.now().Add(d)
}
