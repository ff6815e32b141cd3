package sqlite

import (
	"context"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bramley-mdm/bramley/mdm"
	"github.com/bramley-mdm/bramley/push"
	"github.com/bramley-mdm/bramley/storage"
)

// TestClaimPendingPushesPlan keeps the push sweep on its partial indexes:
// reading every queue entry ever answered, or every enrollment, would pass
// every functional test and still slow down as the fleet and its history
// grow.
func TestClaimPendingPushesPlan(t *testing.T) {
	s := openTest(t)
	rows, err := s.r.Query("EXPLAIN QUERY PLAN "+duePushesSQL, 0, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	var plan []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	rows.Close()
	all := strings.Join(plan, "\n")
	for _, want := range []string{
		"SCAN q USING INDEX command_queue_open",
		"SEARCH push_state USING INDEX push_state_retry (next_push_at<?)",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("plan lacks %q:\n%s", want, all)
		}
	}
	for _, step := range plan {
		if strings.HasPrefix(step, "SCAN") && !strings.HasPrefix(step, "SCAN q USING INDEX command_queue_open") &&
			step != "SCAN open" {
			t.Errorf("plan scans more than the open queue entries:\n%s", all)
		}
	}
}

// TestPushMigrationBackfill upgrades a database whose enrollments sent
// their TokenUpdate before push state existed: the migration must give
// each a push_state row, or the sweep would never claim them.
func TestPushMigrationBackfill(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "bramley.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	enrollForPush(t, s)
	version := pushMigration(t)
	// Back to the schema before the migration.
	for _, q := range []string{`DROP TABLE push_state`, `DROP TABLE push_certificates`,
		`DELETE FROM schema_migrations WHERE version = ` + strconv.Itoa(version)} {
		if _, err := s.w.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	due, err := s.ClaimPendingPushes(ctx, push.PushClaim{Now: time.Now(), QueuedBefore: time.Now(),
		LeaseUntil: time.Now().Add(time.Minute), Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(due) != 1 || due[0].Target.EnrollmentID != "D" {
		t.Errorf("claimed after the migration: %+v, want D", due)
	}
}

// enrollForPush enrolls device D and queues a command for it.
func enrollForPush(t *testing.T, s *Store) {
	t.Helper()
	ctx := context.Background()
	auth := &mdm.Authenticate{Topic: "com.apple.mgmt.test"}
	auth.UDID = "D"
	tu := &mdm.TokenUpdate{Topic: "com.apple.mgmt.test", Token: []byte("token"), PushMagic: "magic"}
	tu.UDID = "D"
	then := time.Now().Add(-time.Hour)
	if err := s.StoreAuthenticate(ctx, auth, []byte("cert"), then); err != nil {
		t.Fatal(err)
	}
	if err := s.StoreTokenUpdate(ctx, tu, nil, then); err != nil {
		t.Fatal(err)
	}
	cmd := storage.NewCommand{UUID: "c1", RequestType: "ProfileList", Raw: []byte("<plist/>"), CreatedAt: then}
	if err := s.Enqueue(ctx, cmd, []string{"D"}); err != nil {
		t.Fatal(err)
	}
}

// pushMigration returns the number of the migration that adds push state.
func pushMigration(t *testing.T) int {
	t.Helper()
	ms, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if strings.HasSuffix(m.name, "_push.sql") {
			return m.version
		}
	}
	t.Fatal("no push migration")
	return 0
}
