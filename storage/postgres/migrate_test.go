package postgres

import (
	"context"
	"slices"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
)

func appliedVersions(t *testing.T, s *Store) []int {
	t.Helper()
	rows, _ := s.pool.Query(context.Background(), `SELECT version FROM schema_migrations ORDER BY version`)
	vs, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		t.Fatal(err)
	}
	return vs
}

func wantVersions(t *testing.T) []int {
	t.Helper()
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
	return want
}

func TestMigrateFromEmptyAndReopen(t *testing.T) {
	ctx := context.Background()
	url := testSchema(t)
	want := wantVersions(t)

	s, err := Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	if got := appliedVersions(t, s); !slices.Equal(got, want) {
		t.Errorf("applied migrations %v, want %v", got, want)
	}
	if _, err := s.CreateSetting(ctx, "kept", []byte("across re-open")); err != nil {
		t.Fatal(err)
	}
	s.Close()

	// Re-opening applies nothing again and keeps the data.
	s, err = Open(ctx, url)
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

// TestMigrateReplicasAtOnce is several replicas starting together on an
// empty database: one migrates, the others wait for it and find nothing
// left to do.
func TestMigrateReplicasAtOnce(t *testing.T) {
	ctx := context.Background()
	url := testSchema(t)
	const replicas = 4
	stores := make([]*Store, replicas)
	errs := make([]error, replicas)
	var wg sync.WaitGroup
	for i := range replicas {
		wg.Go(func() { stores[i], errs[i] = Open(ctx, url) })
	}
	wg.Wait()
	for i := range replicas {
		if errs[i] != nil {
			t.Errorf("replica %d: %v", i, errs[i])
			continue
		}
		defer stores[i].Close()
	}
	if t.Failed() {
		return
	}
	if got, want := appliedVersions(t, stores[0]), wantVersions(t); !slices.Equal(got, want) {
		t.Errorf("applied migrations %v, want %v", got, want)
	}
}

func TestMigrateRefusesNewerSchema(t *testing.T) {
	ctx := context.Background()
	url := testSchema(t)
	s, err := Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.pool.Exec(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (9999, now())`); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s, err := Open(ctx, url); err == nil {
		s.Close()
		t.Fatal("opened a database migrated by a newer bramley")
	}
}
