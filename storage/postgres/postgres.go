// Package postgres is bramley's shared storage backend, for several
// `bramley serve` replicas behind a load balancer: PostgreSQL through pgx
// and its pool, without database/sql. It implements every consumer's store
// interface (checkin.Store, queue.Store, api.Store …) and passes
// storage/storagetest.
//
// Statements are prepared once per connection by pgx's statement cache, so
// the hot queries cost one round trip; writes that must hang together run
// in a transaction, or as one batch (one round trip, one implicit
// transaction) where they are on a device's request path.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bramley-mdm/bramley/storage"
)

// Store is a PostgreSQL database holding everything bramley keeps.
type Store struct {
	pool *pgxpool.Pool
}

// Open connects to the database at url (a postgres:// URL or a key=value
// connection string; pool settings such as pool_max_conns go there too)
// and applies any migrations it lacks. Replicas opening at once migrate one
// at a time.
func Open(ctx context.Context, url string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// The error of ParseConfig may quote the URL, password included.
		return nil, errors.New("parsing PostgreSQL connection string: invalid syntax or parameters")
	}
	if !strings.Contains(url, "pool_max_conns") {
		// pgxpool's default (max(4, NumCPU)) leaves most concurrent
		// requests waiting for a connection while each commit waits on
		// fdatasync; measured with bramley bench at 32 concurrent devices,
		// 32 connections raised command round trips from ~540/s to ~700/s.
		// pool_max_conns in the URL still decides.
		cfg.MaxConns = 32
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to PostgreSQL: %w", err)
	}
	if err := migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, fmt.Errorf("migrating PostgreSQL schema: %w", err)
	}
	return &Store{pool: pool}, nil
}

// Close closes the pool, waiting for connections in use to be returned.
func (s *Store) Close() error {
	s.pool.Close()
	return nil
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("pinging PostgreSQL: %w", err)
	}
	return nil
}

// isUnique reports whether err is a unique_violation.
func isUnique(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

// notFound turns pgx.ErrNoRows into storage.ErrNotFound.
func notFound(err error) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return storage.ErrNotFound
	}
	return err
}

// mustAffect returns storage.ErrNotFound when tag reports no row changed.
func mustAffect(tag pgconn.CommandTag, err error) error {
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return storage.ErrNotFound
	}
	return nil
}

// ts is a time as stored: UTC, at the microsecond precision of timestamptz.
func ts(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// nullTS stores the zero time as NULL.
func nullTS(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return ts(t)
}

// fromTS returns a nullable timestamptz as a UTC time, zero for NULL; pgx
// returns times in the local zone.
func fromTS(v pgtype.Timestamptz) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return v.Time.UTC()
}

// nullBytes stores an empty slice as NULL.
func nullBytes(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}

// nullString stores the empty string as NULL.
func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}
