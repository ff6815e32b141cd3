package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/bramley-mdm/bramley/enroll"
)

// claimExpiringSQL claims the identities due a renewal (see
// enroll.RenewalStore.ExpiringIdentities) in one statement, starting from
// the certificates about to expire. An attempt for another certificate
// than the bound one is stale: its device is due at once, and the row
// starts over.
//
// The claim is the upsert into renewal_attempts, and its conflict clause
// repeats the due conditions: PostgreSQL evaluates ON CONFLICT DO UPDATE …
// WHERE against the row as committed (waiting for a concurrent claim of the
// same device to end), so when two replicas select the same device, the
// second finds it claimed and neither updates nor returns it; and two
// first claims of a device (no row yet) meet on the primary key the same
// way. No advisory lock, no device rows locked: check-ins go on meanwhile.
// $1 now, $2 expires before, $3 retry before, $4 lease until, $5 limit.
const claimExpiringSQL = `
WITH due AS (
    SELECT d.id, d.cert_hash, c.subject, c.not_after, e.topic
    FROM certificates c
    JOIN devices d ON d.cert_hash = c.sha256
    JOIN enrollments e ON e.id = d.id AND e.enabled
    LEFT JOIN renewal_attempts r ON r.device_id = d.id
    WHERE c.not_after < $2 AND c.not_after > $1 AND NOT c.revoked
      AND (r.device_id IS NULL OR r.cert_sha256 <> d.cert_hash
           OR ((r.attempted_at IS NULL OR r.attempted_at <= $3)
               AND (r.claimed_until IS NULL OR r.claimed_until <= $1)))
    ORDER BY c.not_after, d.id
    LIMIT $5
), claimed AS (
    INSERT INTO renewal_attempts AS r (device_id, cert_sha256, claimed_until)
    SELECT id, cert_hash, $4::timestamptz FROM due
    ON CONFLICT (device_id) DO UPDATE SET
        attempts      = CASE WHEN r.cert_sha256 = excluded.cert_sha256 THEN r.attempts ELSE 0 END,
        command_uuid  = CASE WHEN r.cert_sha256 = excluded.cert_sha256 THEN r.command_uuid ELSE '' END,
        attempted_at  = CASE WHEN r.cert_sha256 = excluded.cert_sha256 THEN r.attempted_at END,
        cert_sha256   = excluded.cert_sha256,
        claimed_until = excluded.claimed_until
    WHERE r.cert_sha256 <> excluded.cert_sha256
       OR ((r.attempted_at IS NULL OR r.attempted_at <= $3)
           AND (r.claimed_until IS NULL OR r.claimed_until <= $1))
    RETURNING r.device_id, r.attempts
)
SELECT due.id, due.cert_hash, due.subject, due.not_after, due.topic, claimed.attempts
FROM due JOIN claimed ON claimed.device_id = due.id
ORDER BY due.not_after, due.id`

// ExpiringIdentities claims and returns up to c.Limit identities due a
// renewal (see enroll.RenewalStore), in one statement. Not idempotent. No
// rows: nil, nil.
func (s *Store) ExpiringIdentities(ctx context.Context, c enroll.RenewalClaim) ([]enroll.ExpiringIdentity, error) {
	if c.Limit < 1 {
		return nil, fmt.Errorf("claiming expiring identities: limit must be positive, got %d", c.Limit)
	}
	rows, _ := s.pool.Query(ctx, claimExpiringSQL, ts(c.Now), ts(c.ExpiresBefore), ts(c.RetryBefore),
		ts(c.LeaseUntil), c.Limit)
	due, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (enroll.ExpiringIdentity, error) {
		var id enroll.ExpiringIdentity
		err := row.Scan(&id.DeviceID, &id.CertSHA256, &id.Subject, &id.NotAfter, &id.Topic, &id.Attempts)
		id.NotAfter = id.NotAfter.UTC()
		return id, err
	})
	if err != nil {
		return nil, fmt.Errorf("claiming expiring identities: %w", err)
	}
	if len(due) == 0 {
		return nil, nil
	}
	return due, nil
}

// recordRenewalSQL records a sent profile; the same command twice changes
// nothing. An unknown device selects no row, so inserts none.
const recordRenewalSQL = `
INSERT INTO renewal_attempts AS r (device_id, cert_sha256, attempts, command_uuid, attempted_at, claimed_until)
SELECT id, $2::bytea, 1, $3::text, $4::timestamptz, NULL FROM devices WHERE id = $1
ON CONFLICT (device_id) DO UPDATE SET
    attempts      = CASE WHEN r.cert_sha256 = excluded.cert_sha256 THEN r.attempts + 1 ELSE 1 END,
    cert_sha256   = excluded.cert_sha256,
    command_uuid  = excluded.command_uuid,
    attempted_at  = excluded.attempted_at,
    claimed_until = NULL
WHERE r.command_uuid <> excluded.command_uuid`

// RecordRenewalAttempt records the InstallProfile sent to renew the
// device's certificate (see enroll.RenewalStore). Idempotent by
// commandUUID; an unknown device records nothing, without error.
func (s *Store) RecordRenewalAttempt(ctx context.Context, deviceID, commandUUID string, certSHA256 []byte, now time.Time) error {
	if commandUUID == "" || len(certSHA256) == 0 {
		return errors.New("recording renewal attempt: it needs a command UUID and a certificate hash")
	}
	if _, err := s.pool.Exec(ctx, recordRenewalSQL, deviceID, certSHA256, commandUUID, ts(now)); err != nil {
		return fmt.Errorf("recording renewal attempt of %s: %w", deviceID, err)
	}
	return nil
}

// renewalStatusSQL computes each attempt's state (see
// enroll.RenewalStore.RenewalStatuses). $1 fail before, $2 failed only.
const renewalStatusSQL = `
SELECT * FROM (
    SELECT r.device_id, d.serial_number, c.not_after, r.attempts, r.attempted_at, r.command_uuid,
        coalesce(q.status, '') AS status, cmd.expires_at,
        CASE
            WHEN d.cert_hash IS NOT NULL AND d.cert_hash <> r.cert_sha256 THEN 'renewed'
            WHEN d.cert_hash IS NULL OR NOT coalesce(e.enabled, false) THEN 'unenrolled'
            WHEN q.status IN ('Error', 'CommandFormatError') OR c.not_after <= $1 THEN 'failed'
            ELSE 'pending'
        END AS state,
        coalesce(q.status IN ('Error', 'CommandFormatError'), false) AS command_failed
    FROM renewal_attempts r
    JOIN devices d ON d.id = r.device_id
    LEFT JOIN certificates c ON c.sha256 = r.cert_sha256
    LEFT JOIN enrollments e ON e.id = r.device_id
    LEFT JOIN command_queue q ON q.enrollment_id = r.device_id AND q.command_uuid = r.command_uuid
    LEFT JOIN commands cmd ON cmd.uuid = r.command_uuid
    WHERE r.attempted_at IS NOT NULL
) s
WHERE NOT $2::boolean OR state = 'failed'
ORDER BY device_id`

// RenewalStatuses lists the devices with a renewal attempt, or the failed
// ones (see enroll.RenewalStore). None: nil, nil.
func (s *Store) RenewalStatuses(ctx context.Context, q enroll.RenewalQuery) ([]enroll.RenewalStatus, error) {
	rows, _ := s.pool.Query(ctx, renewalStatusSQL, ts(q.FailBefore), q.FailedOnly)
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (enroll.RenewalStatus, error) {
		var st enroll.RenewalStatus
		var notAfter, expires pgtype.Timestamptz
		var attempted time.Time
		var commandFailed bool
		err := row.Scan(&st.DeviceID, &st.SerialNumber, &notAfter, &st.Attempts, &attempted,
			&st.LastCommandUUID, &st.LastStatus, &expires, &st.State, &commandFailed)
		st.NotAfter, st.LastAttempt = fromTS(notAfter), attempted.UTC()
		st.LastStatus = shownStatus(st.LastStatus, fromTS(expires), q.Now)
		st.Reason = failReason(st, commandFailed, q.Now)
		return st, err
	})
	if err != nil {
		return nil, fmt.Errorf("listing identity renewals: %w", err)
	}
	if len(out) == 0 {
		return nil, nil
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
