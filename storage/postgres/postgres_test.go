package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/bramley-mdm/bramley/api"
	"github.com/bramley-mdm/bramley/checkin"
	"github.com/bramley-mdm/bramley/enroll"
	"github.com/bramley-mdm/bramley/identity"
	"github.com/bramley-mdm/bramley/pki"
	"github.com/bramley-mdm/bramley/push"
	"github.com/bramley-mdm/bramley/queue"
	"github.com/bramley-mdm/bramley/scep"
	"github.com/bramley-mdm/bramley/storage/storagetest"
)

// The interfaces live with their consumers; asserting them here rather than
// in the package keeps the backend free of imports of its consumers.
var (
	_ checkin.Store          = (*Store)(nil)
	_ checkin.BootstrapStore = (*Store)(nil)
	_ identity.Store         = (*Store)(nil)
	_ queue.Store            = (*Store)(nil)
	_ queue.DeviceInfoStore  = (*Store)(nil)
	_ api.Store              = (*Store)(nil)
	_ api.CommandStore       = (*Store)(nil)
	_ api.KeyStore           = (*Store)(nil)
	_ pki.SettingStore       = (*Store)(nil)
	_ pki.CertificateStore   = (*Store)(nil)
	_ enroll.Store           = (*Store)(nil)
	_ scep.ChallengeStore    = (*Store)(nil)
	_ scep.RenewalStore      = (*Store)(nil)
	_ push.Store             = (*Store)(nil)
	_ push.CertStore         = (*Store)(nil)
	_ pki.SettingWriter      = (*Store)(nil)
	_ storagetest.Store      = (*Store)(nil)
)

// testURL returns the test server's URL from BRAMLEY_TEST_POSTGRES. Without
// it the tests skip, except in CI, which must always run them.
func testURL(tb testing.TB) string {
	tb.Helper()
	u := os.Getenv("BRAMLEY_TEST_POSTGRES")
	if u == "" {
		if os.Getenv("CI") == "true" {
			tb.Fatal("BRAMLEY_TEST_POSTGRES is not set; CI must run the PostgreSQL tests")
		}
		tb.Skip("BRAMLEY_TEST_POSTGRES is not set")
	}
	return u
}

// testSchema creates a schema of its own for the test, dropped when it
// ends, and returns the URL of the server with that schema as search_path,
// so that tests run in parallel on one database.
func testSchema(tb testing.TB) string {
	tb.Helper()
	base := testURL(tb)
	ctx := context.Background()
	b := make([]byte, 8)
	rand.Read(b)
	schema := "bramley_test_" + hex.EncodeToString(b)
	admin, err := pgx.Connect(ctx, base)
	if err != nil {
		tb.Fatal(err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		admin, err := pgx.Connect(ctx, base)
		if err != nil {
			tb.Error(err)
			return
		}
		defer admin.Close(ctx)
		if _, err := admin.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			tb.Error(err)
		}
	})
	// Unknown parameters become run-time parameters of every connection;
	// a small pool keeps parallel tests under the server's max_connections.
	params := map[string]string{"search_path": schema, "pool_max_conns": "4"}
	if strings.HasPrefix(base, "postgres://") || strings.HasPrefix(base, "postgresql://") {
		u, err := url.Parse(base)
		if err != nil {
			tb.Fatal(err)
		}
		q := u.Query()
		for k, v := range params {
			q.Set(k, v)
		}
		u.RawQuery = q.Encode()
		return u.String()
	}
	for k, v := range params {
		base += " " + k + "=" + v
	}
	return base
}

func openTest(tb testing.TB) *Store {
	tb.Helper()
	s, err := Open(context.Background(), testSchema(tb))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Error(err)
		}
	})
	return s
}

func TestStore(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storagetest.Store { return openTest(t) })
}

func BenchmarkStore(b *testing.B) {
	storagetest.Benchmark(b, func(b *testing.B) storagetest.Store { return openTest(b) })
}
