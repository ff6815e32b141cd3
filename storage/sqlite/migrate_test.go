package sqlite

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func appliedVersions(t *testing.T, s *Store) []int {
	t.Helper()
	rows, err := s.r.Query(`SELECT version FROM schema_migrations ORDER BY version`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var vs []int
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		vs = append(vs, v)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return vs
}

func TestMigrateFromEmptyAndReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "bramley.db")
	ms, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	var want []int
	for _, m := range ms {
		want = append(want, m.version)
	}
	if len(want) == 0 || want[0] != 1 {
		t.Fatalf("migrations %v: want them numbered from 1", want)
	}

	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if got := appliedVersions(t, s); !slices.Equal(got, want) {
		t.Errorf("applied migrations %v, want %v", got, want)
	}
	if _, err := s.CreateSetting(ctx, "kept", []byte("across re-open")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Re-opening applies nothing again and keeps the data.
	s, err = Open(ctx, path)
	if err != nil {
		t.Fatalf("re-opening: %v", err)
	}
	defer s.Close()
	if got := appliedVersions(t, s); !slices.Equal(got, want) {
		t.Errorf("applied migrations after re-open %v, want %v", got, want)
	}
	v, err := s.Setting(ctx, "kept")
	if err != nil || string(v) != "across re-open" {
		t.Errorf("setting after re-open: %q, %v", v, err)
	}
}

func TestMigrateRefusesNewerSchema(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "bramley.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.w.Exec(`INSERT INTO schema_migrations (version, applied_at) VALUES (9999, 0)`); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s, err := Open(ctx, path); err == nil {
		s.Close()
		t.Fatal("opened a database migrated by a newer bramley")
	}
}

func TestConnectionSettings(t *testing.T) {
	s := openTest(t)
	for _, tc := range []struct {
		name   string
		pool   string
		pragma string
		want   string
	}{
		{"WAL", "writer", "journal_mode", "wal"},
		{"foreign keys", "writer", "foreign_keys", "1"},
		{"synchronous NORMAL", "writer", "synchronous", "1"},
		{"busy timeout", "writer", "busy_timeout", "10000"},
		{"reader WAL", "reader", "journal_mode", "wal"},
		{"reader busy timeout", "reader", "busy_timeout", "10000"},
		{"reader query only", "reader", "query_only", "1"},
	} {
		db := s.w
		if tc.pool == "reader" {
			db = s.r
		}
		var got string
		if err := db.QueryRow("PRAGMA " + tc.pragma).Scan(&got); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !strings.EqualFold(got, tc.want) {
			t.Errorf("%s: PRAGMA %s on the %s is %q, want %q", tc.name, tc.pragma, tc.pool, got, tc.want)
		}
	}
	if _, err := s.r.Exec(`INSERT INTO settings (name, value) VALUES ('x', x'00')`); err == nil {
		t.Error("the read pool accepted a write")
	}
	if n := s.w.Stats().MaxOpenConnections; n != 1 {
		t.Errorf("writer pool allows %d connections, want 1", n)
	}
}
