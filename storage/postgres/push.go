package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/bramley-mdm/bramley/push"
)

// resetPushStateSQL gives an enrollment that sent a TokenUpdate a fresh push
// state: its token is new (or confirmed), so the invalid mark goes, and the
// back-off starts over. StoreTokenUpdate runs it.
const resetPushStateSQL = `
INSERT INTO push_state (enrollment_id) VALUES ($1)
ON CONFLICT (enrollment_id) DO UPDATE SET
    token_invalid = false, pushed_at = NULL, status = 0, reason = '', attempts = 0,
    next_push_at = NULL, retry = false`

// PushTargets returns a Target for each of enrollmentIDs that can be pushed
// now: enabled, with a push token that APNs has not refused since the
// latest TokenUpdate. The others are left out; duplicates come back once.
func (s *Store) PushTargets(ctx context.Context, enrollmentIDs []string) ([]push.Target, error) {
	if len(enrollmentIDs) == 0 {
		return nil, nil
	}
	rows, _ := s.pool.Query(ctx, `
		SELECT e.id, e.push_token, e.push_magic, e.topic
		FROM enrollments e LEFT JOIN push_state p ON p.enrollment_id = e.id
		WHERE e.id = ANY($1::text[])
		  AND e.enabled AND octet_length(e.push_token) > 0 AND NOT coalesce(p.token_invalid, false)`,
		enrollmentIDs)
	targets, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (push.Target, error) {
		var t push.Target
		err := row.Scan(&t.EnrollmentID, &t.Token, &t.PushMagic, &t.Topic)
		return t, err
	})
	if err != nil {
		return nil, fmt.Errorf("finding push targets: %w", err)
	}
	if len(targets) == 0 {
		return nil, nil
	}
	return targets, nil
}

// recordPushSQL replaces an enrollment's push state unless the stored one
// is of a later push. The token is marked invalid only while the enrollment
// still has the token that was refused; once marked, it stays so until the
// next TokenUpdate (resetPushStateSQL). An unknown enrollment inserts
// nothing.
const recordPushSQL = `
INSERT INTO push_state (enrollment_id, token_invalid, pushed_at, status, reason, attempts, next_push_at, retry)
SELECT id, coalesce($2::boolean AND push_token = $3::bytea, false), $4::timestamptz, $5::integer,
    $6::text, $7::integer, $8::timestamptz, $9::boolean
FROM enrollments WHERE id = $1
ON CONFLICT (enrollment_id) DO UPDATE SET
    token_invalid = push_state.token_invalid OR excluded.token_invalid,
    pushed_at     = excluded.pushed_at,
    status        = excluded.status,
    reason        = excluded.reason,
    attempts      = excluded.attempts,
    next_push_at  = excluded.next_push_at,
    retry         = excluded.retry
WHERE push_state.pushed_at IS NULL OR push_state.pushed_at <= excluded.pushed_at`

// RecordPushResults stores the outcome of each enrollment's latest push
// (see push.Store), in one batch. Records of unknown enrollments are
// skipped. Idempotent.
func (s *Store) RecordPushResults(ctx context.Context, records []push.PushRecord) error {
	if len(records) == 0 {
		return nil
	}
	// Rows are locked in enrollment order, so that two replicas recording
	// overlapping batches (two Notify pushes of one bulk command) wait for
	// each other rather than deadlock.
	sorted := slices.Clone(records)
	slices.SortStableFunc(sorted, func(a, b push.PushRecord) int { return strings.Compare(a.EnrollmentID, b.EnrollmentID) })
	var b pgx.Batch
	for _, r := range sorted {
		b.Queue(recordPushSQL, r.EnrollmentID, r.TokenInvalid, r.Token, ts(r.PushedAt), r.Status, r.Reason,
			r.Attempts, ts(r.NextPushAt), r.Retry)
	}
	if err := s.pool.SendBatch(ctx, &b).Close(); err != nil {
		return fmt.Errorf("recording push results: %w", err)
	}
	return nil
}

// claimPushesSQL claims the enrollments due a push (see
// push.Store.ClaimPendingPushes): the due rows of push_state are locked
// with SKIP LOCKED, so a concurrent claim on another replica passes over
// them rather than waiting and then returning them too, and a row another
// claim changed since this one's snapshot is checked again as it is now.
// It starts from the open queue entries and the due retries rather than
// from every enrollment, so the sweep's cost follows the work waiting, not
// the fleet's size. RETURNING yields each row's NextPushAt before the claim,
// for the order. $1 now, $2 queued before, $3 lease until, $4 limit.
const claimPushesSQL = `
WITH open AS (
    SELECT q.enrollment_id, min(c.created_at) AS oldest
    FROM command_queue q JOIN commands c ON c.uuid = q.command_uuid
    WHERE q.status IN ('Pending', 'NotNow') AND (c.expires_at IS NULL OR c.expires_at > $1)
    GROUP BY q.enrollment_id
), due AS (
    SELECT s.enrollment_id, s.next_push_at AS was_due, e.push_token, e.push_magic, e.topic
    FROM push_state s
    JOIN enrollments e ON e.id = s.enrollment_id
    LEFT JOIN open o ON o.enrollment_id = s.enrollment_id
    WHERE s.enrollment_id IN (
            SELECT enrollment_id FROM open
            UNION ALL
            SELECT enrollment_id FROM push_state WHERE retry AND next_push_at <= $1)
      AND e.enabled AND octet_length(e.push_token) > 0 AND NOT s.token_invalid
      AND CASE WHEN s.next_push_at IS NULL THEN o.oldest <= $2
               ELSE s.next_push_at <= $1 AND (s.retry OR o.enrollment_id IS NOT NULL) END
    ORDER BY s.next_push_at NULLS FIRST, s.enrollment_id
    LIMIT $4
    FOR UPDATE OF s SKIP LOCKED
)
UPDATE push_state p SET next_push_at = $3
FROM due d
WHERE p.enrollment_id = d.enrollment_id
RETURNING d.enrollment_id, d.push_token, d.push_magic, d.topic, p.attempts, d.was_due`

// ClaimPendingPushes returns up to c.Limit enrollments due a push and
// claims them by setting their NextPushAt to c.LeaseUntil (see
// push.Store), in one statement. Not idempotent. No rows: nil, nil.
func (s *Store) ClaimPendingPushes(ctx context.Context, c push.PushClaim) ([]push.PendingPush, error) {
	if c.Limit < 1 {
		return nil, fmt.Errorf("claiming pending pushes: limit must be positive, got %d", c.Limit)
	}
	type claimed struct {
		p      push.PendingPush
		wasDue pgtype.Timestamptz
	}
	rows, _ := s.pool.Query(ctx, claimPushesSQL, ts(c.Now), ts(c.QueuedBefore), ts(c.LeaseUntil), c.Limit)
	all, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (claimed, error) {
		var d claimed
		t := &d.p.Target
		err := row.Scan(&t.EnrollmentID, &t.Token, &t.PushMagic, &t.Topic, &d.p.Attempts, &d.wasDue)
		return d, err
	})
	if err != nil {
		return nil, fmt.Errorf("claiming pending pushes: %w", err)
	}
	if len(all) == 0 {
		return nil, nil
	}
	// RETURNING keeps no order: sort as the claim chose, never pushed first.
	slices.SortFunc(all, func(a, b claimed) int {
		if a.wasDue.Valid != b.wasDue.Valid {
			if !a.wasDue.Valid {
				return -1
			}
			return 1
		}
		return cmp.Or(a.wasDue.Time.Compare(b.wasDue.Time), strings.Compare(a.p.Target.EnrollmentID, b.p.Target.EnrollmentID))
	})
	due := make([]push.PendingPush, len(all))
	for i, d := range all {
		due[i] = d.p
	}
	return due, nil
}

// TopicUsage counts the enabled enrollments of each push topic; topics
// without any are absent.
func (s *Store) TopicUsage(ctx context.Context) (map[string]int, error) {
	rows, _ := s.pool.Query(ctx, `SELECT topic, count(*) FROM enrollments WHERE enabled GROUP BY topic`)
	usage := map[string]int{}
	var topic string
	var n int
	_, err := pgx.ForEachRow(rows, []any{&topic, &n}, func() error {
		usage[topic] = n
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("counting enrollments by topic: %w", err)
	}
	return usage, nil
}

// PushCertificates lists the stored push certificates ordered by topic;
// none: nil, nil.
func (s *Store) PushCertificates(ctx context.Context) ([]push.StoredCertificate, error) {
	rows, _ := s.pool.Query(ctx, `SELECT topic, cert_pem, sealed_key, not_after, updated_at
		FROM push_certificates ORDER BY topic`)
	certs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (push.StoredCertificate, error) {
		var c push.StoredCertificate
		var notAfter, updated time.Time
		err := row.Scan(&c.Topic, &c.CertPEM, &c.SealedKey, &notAfter, &updated)
		c.NotAfter, c.UpdatedAt = notAfter.UTC(), updated.UTC()
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("listing push certificates: %w", err)
	}
	if len(certs) == 0 {
		return nil, nil
	}
	return certs, nil
}

// PutPushCertificate stores c, replacing the certificate of the same
// topic. Idempotent.
func (s *Store) PutPushCertificate(ctx context.Context, c push.StoredCertificate) error {
	if strings.TrimSpace(c.Topic) == "" || len(c.CertPEM) == 0 || len(c.SealedKey) == 0 {
		return errors.New("storing push certificate: it needs a topic, a certificate and a key")
	}
	if _, err := s.pool.Exec(ctx, `INSERT INTO push_certificates
		(topic, cert_pem, sealed_key, not_after, updated_at) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (topic) DO UPDATE SET cert_pem = excluded.cert_pem, sealed_key = excluded.sealed_key,
		    not_after = excluded.not_after, updated_at = excluded.updated_at`,
		c.Topic, c.CertPEM, c.SealedKey, ts(c.NotAfter), ts(c.UpdatedAt)); err != nil {
		return fmt.Errorf("storing push certificate of %s: %w", c.Topic, err)
	}
	return nil
}

// PutSettings stores each value under its name, creating or replacing it,
// all in one transaction. A nil value is stored as an empty one.
// Idempotent; an empty map changes nothing.
func (s *Store) PutSettings(ctx context.Context, values map[string][]byte) error {
	if len(values) == 0 {
		return nil
	}
	// In name order, so that two concurrent writers lock rows in one order.
	names := make([]string, 0, len(values))
	for name := range values {
		names = append(names, name)
	}
	slices.Sort(names)
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		for _, name := range names {
			v := values[name]
			if v == nil {
				v = []byte{} // the column is NOT NULL; nil and empty are one value
			}
			if _, err := tx.Exec(ctx, `INSERT INTO settings (name, value) VALUES ($1, $2)
				ON CONFLICT (name) DO UPDATE SET value = excluded.value`, name, v); err != nil {
				return fmt.Errorf("setting %s: %w", name, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("storing settings: %w", err)
	}
	return nil
}

// PutSetting stores the value under name, creating or replacing it (see
// PutSettings).
func (s *Store) PutSetting(ctx context.Context, name string, value []byte) error {
	return s.PutSettings(ctx, map[string][]byte{name: value})
}
