package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/bramley-mdm/bramley/push"
)

// resetPushStateSQL gives an enrollment that sent a TokenUpdate a fresh push
// state: its token is new (or confirmed), so the invalid mark goes, and the
// back-off starts over. StoreTokenUpdate runs it.
const resetPushStateSQL = `
INSERT INTO push_state (enrollment_id) VALUES (?1)
ON CONFLICT (enrollment_id) DO UPDATE SET
    token_invalid = 0, pushed_at = NULL, status = 0, reason = '', attempts = 0,
    next_push_at = NULL, retry = 0`

// PushTargets returns a Target for each of enrollmentIDs that can be pushed
// now: enabled, with a push token that APNs has not refused since the
// latest TokenUpdate. The others are left out; duplicates come back once.
func (s *Store) PushTargets(ctx context.Context, enrollmentIDs []string) ([]push.Target, error) {
	if len(enrollmentIDs) == 0 {
		return nil, nil
	}
	ids, err := json.Marshal(enrollmentIDs)
	if err != nil {
		return nil, fmt.Errorf("finding push targets: %w", err)
	}
	rows, err := s.r.QueryContext(ctx, `
		SELECT e.id, e.push_token, e.push_magic, e.topic
		FROM enrollments e LEFT JOIN push_state p ON p.enrollment_id = e.id
		WHERE e.id IN (SELECT value FROM json_each(?1))
		  AND e.enabled = 1 AND length(e.push_token) > 0 AND coalesce(p.token_invalid, 0) = 0`, string(ids))
	if err != nil {
		return nil, fmt.Errorf("finding push targets: %w", err)
	}
	defer rows.Close()
	var targets []push.Target
	for rows.Next() {
		var t push.Target
		if err := rows.Scan(&t.EnrollmentID, &t.Token, &t.PushMagic, &t.Topic); err != nil {
			return nil, fmt.Errorf("finding push targets: %w", err)
		}
		targets = append(targets, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("finding push targets: %w", err)
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
SELECT id, (?2 AND push_token = ?3) IS TRUE, ?4, ?5, ?6, ?7, ?8, ?9 FROM enrollments WHERE id = ?1
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
// (see push.Store). Records of unknown enrollments are skipped. Idempotent.
func (s *Store) RecordPushResults(ctx context.Context, records []push.PushRecord) error {
	if len(records) == 0 {
		return nil
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		st, err := tx.PrepareContext(ctx, recordPushSQL)
		if err != nil {
			return err
		}
		defer st.Close()
		for _, r := range records {
			if _, err := st.ExecContext(ctx, r.EnrollmentID, r.TokenInvalid, r.Token, micros(r.PushedAt),
				r.Status, r.Reason, r.Attempts, micros(r.NextPushAt), r.Retry); err != nil {
				return fmt.Errorf("enrollment %s: %w", r.EnrollmentID, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("recording push results: %w", err)
	}
	return nil
}

// duePushesSQL finds the enrollments due a push (see
// push.Store.ClaimPendingPushes), oldest NextPushAt first, no push state
// (NULL, which SQLite sorts first) before all. It starts from the open
// queue entries and the due retries, each read from a partial index,
// rather than from every enrollment or every queue entry ever answered, so
// the sweep's cost follows the work waiting, not the fleet or its history.
// Without INDEXED BY, SQLite walks command_queue_next, the whole queue, for
// the GROUP BY's order. ?1 now, ?2 queued before, ?3 limit.
const duePushesSQL = `
WITH open AS (
    SELECT q.enrollment_id, min(c.created_at) AS oldest
    FROM command_queue q INDEXED BY command_queue_open JOIN commands c ON c.uuid = q.command_uuid
    WHERE q.status IN ('Pending', 'NotNow') AND (c.expires_at IS NULL OR c.expires_at > ?1)
    GROUP BY q.enrollment_id
)
SELECT s.enrollment_id, e.push_token, e.push_magic, e.topic, s.attempts
FROM push_state s
JOIN enrollments e ON e.id = s.enrollment_id
LEFT JOIN open o ON o.enrollment_id = s.enrollment_id
WHERE s.enrollment_id IN (
        SELECT enrollment_id FROM open
        UNION ALL
        SELECT enrollment_id FROM push_state WHERE retry = 1 AND next_push_at <= ?1)
  AND e.enabled = 1 AND length(e.push_token) > 0 AND s.token_invalid = 0
  AND CASE WHEN s.next_push_at IS NULL THEN o.oldest <= ?2
           ELSE s.next_push_at <= ?1 AND (s.retry = 1 OR o.enrollment_id IS NOT NULL) END
ORDER BY s.next_push_at, s.enrollment_id
LIMIT ?3`

// ClaimPendingPushes returns up to c.Limit enrollments due a push and
// claims them by setting their NextPushAt to c.LeaseUntil (see
// push.Store). Finding and claiming run in one write transaction, and
// SQLite has one writer: no other claim can come between them. Not
// idempotent. No rows: nil, nil.
func (s *Store) ClaimPendingPushes(ctx context.Context, c push.PushClaim) ([]push.PendingPush, error) {
	if c.Limit < 1 {
		return nil, fmt.Errorf("claiming pending pushes: limit must be positive, got %d", c.Limit)
	}
	var due []push.PendingPush
	err := s.write(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, duePushesSQL, micros(c.Now), micros(c.QueuedBefore), c.Limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		var ids []string
		for rows.Next() {
			var p push.PendingPush
			if err := rows.Scan(&p.Target.EnrollmentID, &p.Target.Token, &p.Target.PushMagic,
				&p.Target.Topic, &p.Attempts); err != nil {
				return err
			}
			due = append(due, p)
			ids = append(ids, p.Target.EnrollmentID)
		}
		if err := rows.Err(); err != nil || len(ids) == 0 {
			return err
		}
		rows.Close()
		idsJSON, err := json.Marshal(ids)
		if err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `UPDATE push_state SET next_push_at = ?1
			WHERE enrollment_id IN (SELECT value FROM json_each(?2))`, micros(c.LeaseUntil), string(idsJSON))
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err == nil && n != int64(len(ids)) {
			err = fmt.Errorf("claimed %d of the %d enrollments found due", n, len(ids))
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("claiming pending pushes: %w", err)
	}
	return due, nil
}

// TopicUsage counts the enabled enrollments of each push topic; topics
// without any are absent.
func (s *Store) TopicUsage(ctx context.Context) (map[string]int, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT topic, count(*) FROM enrollments WHERE enabled = 1 GROUP BY topic`)
	if err != nil {
		return nil, fmt.Errorf("counting enrollments by topic: %w", err)
	}
	defer rows.Close()
	usage := map[string]int{}
	for rows.Next() {
		var topic string
		var n int
		if err := rows.Scan(&topic, &n); err != nil {
			return nil, fmt.Errorf("counting enrollments by topic: %w", err)
		}
		usage[topic] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("counting enrollments by topic: %w", err)
	}
	return usage, nil
}

// PushCertificates lists the stored push certificates ordered by topic;
// none: nil, nil.
func (s *Store) PushCertificates(ctx context.Context) ([]push.StoredCertificate, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT topic, cert_pem, sealed_key, not_after, updated_at
		FROM push_certificates ORDER BY topic`)
	if err != nil {
		return nil, fmt.Errorf("listing push certificates: %w", err)
	}
	defer rows.Close()
	var certs []push.StoredCertificate
	for rows.Next() {
		var c push.StoredCertificate
		var notAfter, updated int64
		if err := rows.Scan(&c.Topic, &c.CertPEM, &c.SealedKey, &notAfter, &updated); err != nil {
			return nil, fmt.Errorf("listing push certificates: %w", err)
		}
		c.NotAfter, c.UpdatedAt = fromMicros(notAfter), fromMicros(updated)
		certs = append(certs, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing push certificates: %w", err)
	}
	return certs, nil
}

// PutPushCertificate stores c, replacing the certificate of the same
// topic. Idempotent.
func (s *Store) PutPushCertificate(ctx context.Context, c push.StoredCertificate) error {
	if strings.TrimSpace(c.Topic) == "" || len(c.CertPEM) == 0 || len(c.SealedKey) == 0 {
		return errors.New("storing push certificate: it needs a topic, a certificate and a key")
	}
	if _, err := s.w.ExecContext(ctx, `INSERT INTO push_certificates
		(topic, cert_pem, sealed_key, not_after, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
		ON CONFLICT (topic) DO UPDATE SET cert_pem = excluded.cert_pem, sealed_key = excluded.sealed_key,
		    not_after = excluded.not_after, updated_at = excluded.updated_at`,
		c.Topic, c.CertPEM, c.SealedKey, micros(c.NotAfter), micros(c.UpdatedAt)); err != nil {
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
	names := make([]string, 0, len(values))
	for name := range values {
		names = append(names, name)
	}
	slices.Sort(names)
	err := s.write(ctx, func(tx *sql.Tx) error {
		for _, name := range names {
			v := values[name]
			if v == nil {
				v = []byte{} // the column is NOT NULL; nil and empty are one value
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO settings (name, value) VALUES (?1, ?2)
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
