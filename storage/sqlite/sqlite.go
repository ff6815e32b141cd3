// Package sqlite is bramley's embedded storage backend: one SQLite file in
// WAL mode through modernc.org/sqlite (pure Go, no cgo). It implements every
// consumer's store interface (checkin.Store, queue.Store, api.Store …) and
// passes storage/storagetest.
//
// SQLite allows one writer at a time, so writes go through a pool of exactly
// one connection: they queue in Go rather than spinning on SQLITE_BUSY. Every
// write transaction starts with BEGIN IMMEDIATE, taking the write lock up
// front where busy_timeout applies, rather than failing with SQLITE_BUSY when
// a transaction that began by reading tries to write. Reads use a separate
// pool of several read-only connections, which WAL lets run alongside the
// writer, so a device fetching its next command never waits behind someone
// else's check-in.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"runtime"
	"strings"
	"time"

	// The database/sql driver "sqlite".
	_ "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/bramley-mdm/bramley/storage"
)

// Store is a SQLite database holding everything bramley keeps.
type Store struct {
	w *sql.DB // the single writer connection
	r *sql.DB // read-only connections

	// prepared holds the statements of a device's connect request, parsed
	// once: parsing costs about a quarter of a small write.
	prepared map[string]*sql.Stmt
}

// Statements prepared at Open, by pool.
var (
	preparedReads  = []string{nextPendingSQL, nextPendingNotNowSQL}
	preparedWrites = []string{markDeliveredSQL, finalResultSQL, notNowResultSQL, resultRequestTypeSQL,
		deviceSeenSQL, enrollmentSeenSQL}
)

// busyTimeout is how long a connection waits for another process's lock
// (a backup, the sqlite3 shell) before failing with SQLITE_BUSY.
const busyTimeout = 10 * time.Second

// Open opens (creating if needed) the database at path and applies any
// migrations it lacks.
func Open(ctx context.Context, path string) (*Store, error) {
	switch {
	case path == "" || strings.Contains(path, "?"):
		// The driver reads everything after '?' as its own options.
		return nil, fmt.Errorf("invalid SQLite path %q", path)
	case path == ":memory:" || strings.HasPrefix(path, "file::memory:"):
		// Each connection would get a database of its own: the read pool
		// would never see what the writer wrote.
		return nil, errors.New("in-memory SQLite databases are not supported; use a file")
	}
	// The writer creates the file and switches it to WAL (which persists in
	// the file) before any reader opens it; migrations run before anyone
	// reads.
	w, err := sql.Open("sqlite", dsn(path, "immediate", "journal_mode(WAL)"))
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	s := &Store{w: w, prepared: map[string]*sql.Stmt{}}
	if err := migrate(ctx, w); err != nil {
		w.Close()
		return nil, fmt.Errorf("migrating %s: %w", path, err)
	}
	r, err := sql.Open("sqlite", dsn(path, "", "query_only(1)"))
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("opening %s for reading: %w", path, err)
	}
	readers := max(4, runtime.GOMAXPROCS(0))
	r.SetMaxOpenConns(readers)
	r.SetMaxIdleConns(readers)
	s.r = r
	for db, queries := range map[*sql.DB][]string{r: preparedReads, w: preparedWrites} {
		for _, q := range queries {
			if s.prepared[q], err = db.PrepareContext(ctx, q); err != nil {
				s.Close()
				return nil, fmt.Errorf("preparing statements: %w", err)
			}
		}
	}
	return s, nil
}

// dsn is the driver's connection string for path: the pragmas every
// connection needs, then extra ones, and the BEGIN mode of transactions
// (empty for the default, DEFERRED).
func dsn(path, txlock string, extra ...string) string {
	q := url.Values{"_pragma": append([]string{
		fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds()),
		"foreign_keys(1)",
		// NORMAL is durable in WAL mode but for the last commits before a
		// power loss, and spares an fsync on every commit.
		"synchronous(NORMAL)",
	}, extra...)}
	if txlock != "" {
		q.Set("_txlock", txlock)
	}
	return path + "?" + q.Encode()
}

// Close closes both pools.
func (s *Store) Close() error {
	var errs []error
	for _, st := range s.prepared {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	if s.r != nil {
		errs = append(errs, s.r.Close())
	}
	errs = append(errs, s.w.Close())
	return errors.Join(errs...)
}

// Ping checks that the database answers on both pools.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.w.PingContext(ctx); err != nil {
		return fmt.Errorf("pinging SQLite writer: %w", err)
	}
	if err := s.r.PingContext(ctx); err != nil {
		return fmt.Errorf("pinging SQLite reader: %w", err)
	}
	return nil
}

// write runs fn in a write transaction (BEGIN IMMEDIATE, from the DSN's
// _txlock) on the writer connection. fn must not use s.w itself: the pool
// has one connection, held by the transaction.
func (s *Store) write(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

// read runs fn in a read transaction, so that several queries see one
// snapshot.
func (s *Store) read(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }() // read-only: nothing to keep
	return fn(tx)
}

// isUnique reports whether err is a UNIQUE or PRIMARY KEY violation.
func isUnique(err error) bool {
	var se interface{ Code() int }
	if !errors.As(err, &se) {
		return false
	}
	switch se.Code() {
	case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
		return true
	}
	return false
}

// notFound turns sql.ErrNoRows into storage.ErrNotFound.
func notFound(err error) error {
	if errors.Is(err, sql.ErrNoRows) {
		return storage.ErrNotFound
	}
	return err
}

// mustAffect returns storage.ErrNotFound when res changed no row.
func mustAffect(res sql.Result, err error) error {
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return storage.ErrNotFound
	}
	return nil
}

// Time columns hold UTC Unix microseconds (see migrations/0001_init.sql).

func micros(t time.Time) int64 { return t.UnixMicro() }

// nullMicros stores the zero time as NULL.
func nullMicros(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixMicro()
}

func fromMicros(v int64) time.Time { return time.UnixMicro(v).UTC() }

func fromNullMicros(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return fromMicros(v.Int64)
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
