package sqlite

import (
	"context"
	"errors"
	"fmt"

	"github.com/bramley-mdm/bramley/enroll"
	"github.com/bramley-mdm/bramley/storage"
)

// CreateUser stores a local account. storage.ErrConflict when the username
// is taken.
func (s *Store) CreateUser(ctx context.Context, u enroll.User) error {
	if u.Username == "" || u.PasswordHash == "" {
		return errors.New("creating user: it needs a username and a password hash")
	}
	res, err := s.w.ExecContext(ctx, `INSERT INTO local_users (username, password_hash, created_at)
		VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING`, u.Username, u.PasswordHash, micros(u.CreatedAt))
	if err := mustAffect(res, err); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			err = storage.ErrConflict // nothing inserted: the username is taken
		}
		return fmt.Errorf("creating user %q: %w", u.Username, err)
	}
	return nil
}

// UserByName returns a local account, matching the username exactly.
// storage.ErrNotFound when unknown.
func (s *Store) UserByName(ctx context.Context, username string) (*enroll.User, error) {
	u := enroll.User{Username: username}
	var created int64
	err := s.r.QueryRowContext(ctx, `SELECT password_hash, created_at FROM local_users WHERE username = ?1`,
		username).Scan(&u.PasswordHash, &created)
	if err != nil {
		return nil, fmt.Errorf("reading user %q: %w", username, notFound(err))
	}
	u.CreatedAt = fromMicros(created)
	return &u, nil
}
