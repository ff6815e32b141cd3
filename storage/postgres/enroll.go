package postgres

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/bramley-mdm/bramley/enroll"
	"github.com/bramley-mdm/bramley/scep"
	"github.com/bramley-mdm/bramley/storage"
)

// CreateEnrollmentToken stores a token, by the hash of its secret.
// storage.ErrConflict when its ID or hash exists.
func (s *Store) CreateEnrollmentToken(ctx context.Context, t enroll.Token) error {
	if t.ID == "" || len(t.Hash) == 0 {
		return errors.New("creating enrollment token: it needs an ID and a hash")
	}
	err := mustAffect(s.pool.Exec(ctx, `INSERT INTO enrollment_tokens
		(id, hash, label, max_uses, uses, expires_at, created_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT DO NOTHING`,
		t.ID, t.Hash, t.Label, t.MaxUses, t.Uses, nullTS(t.ExpiresAt), ts(t.CreatedAt)))
	if errors.Is(err, storage.ErrNotFound) {
		err = storage.ErrConflict // nothing inserted: the ID or hash is taken
	}
	if err != nil {
		return fmt.Errorf("creating enrollment token %s: %w", t.ID, err)
	}
	return nil
}

// useTokenSQL spends one use of a token that is neither expired nor used up;
// the conditions are checked again on the locked row, so of two requests
// racing for the last use one gets it.
const useTokenSQL = `
UPDATE enrollment_tokens SET uses = uses + 1
WHERE hash = $1 AND (expires_at IS NULL OR expires_at > $2) AND (max_uses = 0 OR uses < max_uses)
RETURNING id, hash, label, max_uses, uses, expires_at, created_at`

// UseEnrollmentToken counts one use of the token with this hash and returns
// it, uses included. storage.ErrNotFound when unknown; enroll.ErrTokenExpired
// when expired at now; enroll.ErrTokenUsedUp when MaxUses > 0 and every use
// is taken. A refused use changes nothing.
func (s *Store) UseEnrollmentToken(ctx context.Context, hash []byte, now time.Time) (*enroll.Token, error) {
	var t enroll.Token
	var expires pgtype.Timestamptz
	err := s.pool.QueryRow(ctx, useTokenSQL, nullBytes(hash), ts(now)).
		Scan(&t.ID, &t.Hash, &t.Label, &t.MaxUses, &t.Uses, &expires, &t.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		err = s.whyTokenRefused(ctx, hash, now)
	}
	if err != nil {
		return nil, fmt.Errorf("using enrollment token: %w", err)
	}
	t.ExpiresAt, t.CreatedAt = fromTS(expires), t.CreatedAt.UTC()
	return &t, nil
}

// whyTokenRefused says why useTokenSQL changed nothing.
func (s *Store) whyTokenRefused(ctx context.Context, hash []byte, now time.Time) error {
	var expires pgtype.Timestamptz
	var maxUses, uses int
	err := s.pool.QueryRow(ctx, `SELECT expires_at, max_uses, uses FROM enrollment_tokens WHERE hash = $1`,
		nullBytes(hash)).Scan(&expires, &maxUses, &uses)
	switch {
	case err != nil:
		return notFound(err)
	case expires.Valid && !expires.Time.After(ts(now)):
		return enroll.ErrTokenExpired
	case maxUses > 0 && uses >= maxUses:
		return enroll.ErrTokenUsedUp
	}
	// Uses only grow and expiry stays, so a refused token stays refused;
	// this one was created after the UPDATE ran: as good as unknown then.
	return storage.ErrNotFound
}

// CreateChallenge stores a one-time SCEP challenge by its SHA-256, with what
// it was issued for. A zero ExpiresAt never expires. storage.ErrConflict when
// the hash exists.
func (s *Store) CreateChallenge(ctx context.Context, hash []byte, c scep.Challenge, now time.Time) error {
	if len(hash) == 0 {
		return errors.New("creating SCEP challenge: empty hash")
	}
	err := mustAffect(s.pool.Exec(ctx, `INSERT INTO scep_challenges
		(hash, subject, enrollment_id, source, expires_at, created_at)
		VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT DO NOTHING`,
		hash, c.Subject, c.EnrollmentID, c.Source, nullTS(c.ExpiresAt), ts(now)))
	if errors.Is(err, storage.ErrNotFound) {
		err = storage.ErrConflict
	}
	if err != nil {
		return fmt.Errorf("creating SCEP challenge: %w", err)
	}
	return nil
}

// ConsumeChallenge marks the challenge used and returns what it was issued
// for. storage.ErrNotFound when it is unknown, already used, or expired at
// now. Checking and marking are one statement, checked again on the locked
// row: of two requests racing with one challenge, one gets it. The
// challenge is looked up by its hash, so the lookup's timing says nothing
// about how close a guess came.
func (s *Store) ConsumeChallenge(ctx context.Context, challenge string, now time.Time) (scep.Challenge, error) {
	hash := sha256.Sum256([]byte(challenge))
	var c scep.Challenge
	var expires pgtype.Timestamptz
	err := s.pool.QueryRow(ctx, `UPDATE scep_challenges SET used_at = $2
		WHERE hash = $1 AND used_at IS NULL AND (expires_at IS NULL OR expires_at > $2)
		RETURNING subject, enrollment_id, source, expires_at`, hash[:], ts(now)).
		Scan(&c.Subject, &c.EnrollmentID, &c.Source, &expires)
	if err != nil {
		return scep.Challenge{}, fmt.Errorf("consuming SCEP challenge: %w", notFound(err))
	}
	c.ExpiresAt = fromTS(expires)
	return c, nil
}
