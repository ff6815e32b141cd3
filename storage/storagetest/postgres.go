package storagetest

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// PostgresURL returns a URL for a fresh schema in the test PostgreSQL
// (BRAMLEY_TEST_POSTGRES), dropped when the test ends, so tests can run in
// parallel on one database. Without BRAMLEY_TEST_POSTGRES the test skips —
// except when CI=true, where PostgreSQL must be there and the test fails.
func PostgresURL(t testing.TB) string {
	t.Helper()
	base := os.Getenv("BRAMLEY_TEST_POSTGRES")
	if base == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("BRAMLEY_TEST_POSTGRES is not set; CI must test PostgreSQL")
		}
		t.Skip("BRAMLEY_TEST_POSTGRES not set")
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("connecting to PostgreSQL: %v", err)
	}
	defer conn.Close(ctx)
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	schema := fmt.Sprintf("t_%d_%x", time.Now().UnixNano(), suffix)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn, err := pgx.Connect(context.Background(), base)
		if err != nil {
			return
		}
		defer conn.Close(context.Background())
		_, _ = conn.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
	})
	sep := "?"
	if strings.Contains(base, "?") {
		sep = "&"
	}
	return base + sep + "search_path=" + schema
}
