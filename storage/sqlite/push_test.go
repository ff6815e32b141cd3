package sqlite

import (
	"strings"
	"testing"
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
