package sqlite

import (
	"strings"
	"testing"
)

// TestNextCommandPlan keeps the connect endpoint's query on its index: a
// scan or sort of an enrollment's queue would pass every functional test
// and still slow down as queues grow.
func TestNextCommandPlan(t *testing.T) {
	s := openTest(t)
	for name, q := range map[string]string{"pending": nextPendingSQL, "pending or NotNow": nextPendingNotNowSQL} {
		rows, err := s.r.Query("EXPLAIN QUERY PLAN "+q, "D", 0)
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
		if !strings.Contains(all, "SEARCH q USING INDEX command_queue_next (enrollment_id=? AND status=?)") {
			t.Errorf("%s: the queue is not searched by command_queue_next:\n%s", name, all)
		}
		for i, step := range plan {
			switch {
			case strings.HasPrefix(step, "SCAN q") || strings.HasPrefix(step, "SCAN c"):
				t.Errorf("%s: plan scans a table:\n%s", name, all)
			case strings.Contains(step, "TEMP B-TREE") && i != len(plan)-1:
				// Only the final sort of the per-status heads (two rows)
				// may sort.
				t.Errorf("%s: plan sorts queue entries:\n%s", name, all)
			}
		}
	}
}
