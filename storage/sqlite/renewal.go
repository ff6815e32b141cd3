package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/bramley-mdm/bramley/enroll"
)

// expiringSQL finds the identities due a renewal (see
// enroll.RenewalStore.ExpiringIdentities), from the certificates about to
// expire. An attempt for another certificate than the bound one is stale:
// its device is due at once, and its count starts over.
// ?1 now, ?2 expires before, ?3 retry before, ?4 limit.
const expiringSQL = `
SELECT d.id, d.cert_hash, c.subject, c.not_after, e.topic,
    CASE WHEN r.cert_sha256 = d.cert_hash THEN r.attempts ELSE 0 END
FROM certificates c
JOIN devices d ON d.cert_hash = c.sha256
JOIN enrollments e ON e.id = d.id AND e.enabled = 1
LEFT JOIN renewal_attempts r ON r.device_id = d.id
WHERE c.not_after < ?2 AND c.not_after > ?1 AND c.revoked = 0
  AND (r.device_id IS NULL OR r.cert_sha256 != d.cert_hash
       OR ((r.attempted_at IS NULL OR r.attempted_at <= ?3)
           AND (r.claimed_until IS NULL OR r.claimed_until <= ?1)))
ORDER BY c.not_after, d.id
LIMIT ?4`

// claimRenewalSQL leases one identity; for another certificate than the
// row's, the row starts over.
const claimRenewalSQL = `
INSERT INTO renewal_attempts (device_id, cert_sha256, claimed_until) VALUES (?1, ?2, ?3)
ON CONFLICT (device_id) DO UPDATE SET
    attempts      = CASE WHEN cert_sha256 = excluded.cert_sha256 THEN attempts ELSE 0 END,
    command_uuid  = CASE WHEN cert_sha256 = excluded.cert_sha256 THEN command_uuid ELSE '' END,
    attempted_at  = CASE WHEN cert_sha256 = excluded.cert_sha256 THEN attempted_at ELSE NULL END,
    cert_sha256   = excluded.cert_sha256,
    claimed_until = excluded.claimed_until`

// ExpiringIdentities claims and returns up to c.Limit identities due a
// renewal (see enroll.RenewalStore). The search and the claims are one
// write transaction: SQLite has one writer, so no other claim interleaves.
// Not idempotent. No rows: nil, nil.
func (s *Store) ExpiringIdentities(ctx context.Context, c enroll.RenewalClaim) ([]enroll.ExpiringIdentity, error) {
	if c.Limit < 1 {
		return nil, fmt.Errorf("claiming expiring identities: limit must be positive, got %d", c.Limit)
	}
	var due []enroll.ExpiringIdentity
	err := s.write(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, expiringSQL, micros(c.Now), micros(c.ExpiresBefore),
			micros(c.RetryBefore), c.Limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id enroll.ExpiringIdentity
			var notAfter int64
			if err := rows.Scan(&id.DeviceID, &id.CertSHA256, &id.Subject, &notAfter, &id.Topic, &id.Attempts); err != nil {
				return err
			}
			id.NotAfter = fromMicros(notAfter)
			due = append(due, id)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		rows.Close()
		for _, id := range due {
			if _, err := tx.ExecContext(ctx, claimRenewalSQL, id.DeviceID, id.CertSHA256, micros(c.LeaseUntil)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("claiming expiring identities: %w", err)
	}
	return due, nil
}

// recordRenewalSQL records a sent profile; the same command twice changes
// nothing. An unknown device selects no row, so inserts none.
const recordRenewalSQL = `
INSERT INTO renewal_attempts (device_id, cert_sha256, attempts, command_uuid, attempted_at, claimed_until)
SELECT id, ?2, 1, ?3, ?4, NULL FROM devices WHERE id = ?1
ON CONFLICT (device_id) DO UPDATE SET
    attempts      = CASE WHEN cert_sha256 = excluded.cert_sha256 THEN attempts + 1 ELSE 1 END,
    cert_sha256   = excluded.cert_sha256,
    command_uuid  = excluded.command_uuid,
    attempted_at  = excluded.attempted_at,
    claimed_until = NULL
WHERE command_uuid != excluded.command_uuid`

// RecordRenewalAttempt records the InstallProfile sent to renew the
// device's certificate (see enroll.RenewalStore). Idempotent by
// commandUUID; an unknown device records nothing, without error.
func (s *Store) RecordRenewalAttempt(ctx context.Context, deviceID, commandUUID string, certSHA256 []byte, now time.Time) error {
	if commandUUID == "" || len(certSHA256) == 0 {
		return errors.New("recording renewal attempt: it needs a command UUID and a certificate hash")
	}
	if _, err := s.w.ExecContext(ctx, recordRenewalSQL, deviceID, certSHA256, commandUUID, micros(now)); err != nil {
		return fmt.Errorf("recording renewal attempt of %s: %w", deviceID, err)
	}
	return nil
}

// renewalStatusSQL computes each attempt's state (see
// enroll.RenewalStore.RenewalStatuses). ?1 fail before, ?2 failed only.
const renewalStatusSQL = `
SELECT * FROM (
    SELECT r.device_id, d.serial_number, c.not_after, r.attempts, r.attempted_at, r.command_uuid,
        coalesce(q.status, ''), cmd.expires_at,
        CASE
            WHEN d.cert_hash IS NOT NULL AND d.cert_hash != r.cert_sha256 THEN 'renewed'
            WHEN d.cert_hash IS NULL OR coalesce(e.enabled, 0) = 0 THEN 'unenrolled'
            WHEN q.status IN ('Error', 'CommandFormatError') OR c.not_after <= ?1 THEN 'failed'
            ELSE 'pending'
        END AS state,
        q.status IN ('Error', 'CommandFormatError') AS command_failed
    FROM renewal_attempts r
    JOIN devices d ON d.id = r.device_id
    LEFT JOIN certificates c ON c.sha256 = r.cert_sha256
    LEFT JOIN enrollments e ON e.id = r.device_id
    LEFT JOIN command_queue q ON q.enrollment_id = r.device_id AND q.command_uuid = r.command_uuid
    LEFT JOIN commands cmd ON cmd.uuid = r.command_uuid
    WHERE r.attempted_at IS NOT NULL
)
WHERE ?2 = 0 OR state = 'failed'
ORDER BY device_id`

// RenewalStatuses lists the devices with a renewal attempt, or the failed
// ones (see enroll.RenewalStore). None: nil, nil.
func (s *Store) RenewalStatuses(ctx context.Context, q enroll.RenewalQuery) ([]enroll.RenewalStatus, error) {
	rows, err := s.r.QueryContext(ctx, renewalStatusSQL, micros(q.FailBefore), q.FailedOnly)
	if err != nil {
		return nil, fmt.Errorf("listing identity renewals: %w", err)
	}
	defer rows.Close()
	var out []enroll.RenewalStatus
	for rows.Next() {
		var st enroll.RenewalStatus
		var notAfter, expires sql.NullInt64
		var attempted int64
		var commandFailed sql.NullBool
		if err := rows.Scan(&st.DeviceID, &st.SerialNumber, &notAfter, &st.Attempts, &attempted,
			&st.LastCommandUUID, &st.LastStatus, &expires, &st.State, &commandFailed); err != nil {
			return nil, fmt.Errorf("listing identity renewals: %w", err)
		}
		st.NotAfter, st.LastAttempt = fromNullMicros(notAfter), fromMicros(attempted)
		st.LastStatus = shownStatus(st.LastStatus, fromNullMicros(expires), q.Now)
		st.Reason = failReason(st, commandFailed.Bool, q.Now)
		out = append(out, st)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing identity renewals: %w", err)
	}
	return out, nil
}

// failReason is why a failed renewal failed, the first that applies.
func failReason(st enroll.RenewalStatus, commandFailed bool, now time.Time) string {
	switch {
	case st.State != enroll.RenewalFailed:
		return ""
	case commandFailed:
		return enroll.ReasonCommandFailed
	case !st.NotAfter.After(now):
		return enroll.ReasonExpired
	}
	return enroll.ReasonExpiring
}
