package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Setting returns the named value; storage.ErrNotFound when absent.
func (s *Store) Setting(ctx context.Context, name string) ([]byte, error) {
	var v []byte
	if err := s.r.QueryRowContext(ctx, `SELECT value FROM settings WHERE name = ?1`, name).Scan(&v); err != nil {
		return nil, fmt.Errorf("reading setting %s: %w", name, notFound(err))
	}
	return v, nil
}

// CreateSetting stores the value unless the name exists, and returns the
// value stored under the name afterwards, so that callers racing to create
// it all get the one that won.
func (s *Store) CreateSetting(ctx context.Context, name string, value []byte) ([]byte, error) {
	if value == nil {
		value = []byte{} // the column is NOT NULL; nil and empty are one value
	}
	var stored []byte
	err := s.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO settings (name, value) VALUES (?1, ?2)
			ON CONFLICT (name) DO NOTHING`, name, value); err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, `SELECT value FROM settings WHERE name = ?1`, name).Scan(&stored)
	})
	if err != nil {
		return nil, fmt.Errorf("creating setting %s: %w", name, err)
	}
	if stored == nil {
		stored = []byte{}
	}
	return stored, nil
}

// APIKeyExists reports whether an admin API key with this SHA-256 hash
// exists.
func (s *Store) APIKeyExists(ctx context.Context, hash []byte) (bool, error) {
	var one int
	err := s.r.QueryRowContext(ctx, `SELECT 1 FROM api_keys WHERE hash = ?1`, nullBytes(hash)).Scan(&one)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("looking up API key: %w", err)
	}
	return true, nil
}

// CreateAPIKey stores an admin API key's hash. Idempotent: a repeat keeps
// the first label.
func (s *Store) CreateAPIKey(ctx context.Context, hash []byte, label string, now time.Time) error {
	if len(hash) == 0 {
		return errors.New("creating API key: empty hash")
	}
	if _, err := s.w.ExecContext(ctx, `INSERT INTO api_keys (hash, label, created_at) VALUES (?1, ?2, ?3)
		ON CONFLICT (hash) DO NOTHING`, hash, label, micros(now)); err != nil {
		return fmt.Errorf("creating API key: %w", err)
	}
	return nil
}
