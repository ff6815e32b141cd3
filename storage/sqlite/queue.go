package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/bramley-mdm/bramley/mdm"
	"github.com/bramley-mdm/bramley/storage"
)

const insertCommandSQL = `
INSERT INTO commands (uuid, request_type, raw, priority, expires_at, created_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6)
ON CONFLICT (uuid) DO NOTHING
RETURNING seq`

// insertTargetsSQL queues the command for the enrollments among ?6 (a JSON
// array) that exist; the caller compares the count with what it asked for.
const insertTargetsSQL = `
INSERT INTO command_queue (enrollment_id, command_uuid, status, priority, seq, updated_at)
SELECT id, ?1, 'Pending', ?2, ?3, ?4 FROM enrollments
WHERE id IN (SELECT value FROM json_each(?5))`

// Enqueue queues the command for every enrollment, all or nothing.
// storage.ErrNotFound when an enrollment is unknown, storage.ErrConflict
// when the CommandUUID is taken.
func (s *Store) Enqueue(ctx context.Context, cmd storage.NewCommand, enrollmentIDs []string) error {
	ids := uniq(enrollmentIDs)
	switch {
	case cmd.UUID == "" || cmd.RequestType == "" || len(cmd.Raw) == 0:
		return fmt.Errorf("enqueueing %q: command needs a UUID, a RequestType and its plist", cmd.UUID)
	case len(ids) == 0:
		return fmt.Errorf("enqueueing %s: no enrollment IDs", cmd.UUID)
	}
	idsJSON, err := json.Marshal(ids)
	if err != nil {
		return fmt.Errorf("enqueueing %s: %w", cmd.UUID, err)
	}
	created := cmd.CreatedAt
	if created.IsZero() {
		created = time.Now()
	}
	err = s.write(ctx, func(tx *sql.Tx) error {
		var seq int64
		err := tx.QueryRowContext(ctx, insertCommandSQL, cmd.UUID, cmd.RequestType, cmd.Raw,
			cmd.Priority, nullMicros(cmd.ExpiresAt), micros(created)).Scan(&seq)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("command UUID is taken: %w", storage.ErrConflict)
		}
		if err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, insertTargetsSQL, cmd.UUID, cmd.Priority, seq, micros(created),
			string(idsJSON))
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == int64(len(ids)) {
			return err
		}
		return missingEnrollment(ctx, tx, ids)
	})
	if err != nil {
		return fmt.Errorf("enqueueing %s: %w", cmd.UUID, err)
	}
	return nil
}

// missingEnrollment names the first of ids that is not enrolled.
func missingEnrollment(ctx context.Context, tx *sql.Tx, ids []string) error {
	for _, id := range ids {
		var one int
		err := tx.QueryRowContext(ctx, `SELECT 1 FROM enrollments WHERE id = ?1`, id).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("enrollment %s: %w", id, storage.ErrNotFound)
		}
		if err != nil {
			return err
		}
	}
	return storage.ErrNotFound
}

// uniq returns ids without repeats, in their first order.
func uniq(ids []string) []string {
	seen := make(map[string]bool, len(ids))
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}

// The next-command queries. Each status's entries are read from the
// command_queue_next index (enrollment_id, status, priority DESC, seq) in
// delivery order, stopping at the first unexpired one, so the cost does not
// grow with the queue. Pending and NotNow together are two such walks whose
// heads are compared: a plain "status IN (...)" would read and sort every
// open entry of the enrollment instead.
const (
	nextOfStatus = `
SELECT q.command_uuid, c.request_type, c.raw, q.delivered_at IS NOT NULL AS delivered, q.priority, q.seq
FROM command_queue q JOIN commands c ON c.uuid = q.command_uuid
WHERE q.enrollment_id = ?1 AND (c.expires_at IS NULL OR c.expires_at > ?2) AND q.status = `
	nextOrder = `
ORDER BY q.priority DESC, q.seq
LIMIT 1`

	nextPendingSQL = `
SELECT command_uuid, request_type, raw, delivered FROM (` + nextOfStatus + `'Pending'` + nextOrder + `) AS pending`
	nextPendingNotNowSQL = `
SELECT command_uuid, request_type, raw, delivered FROM (
    SELECT * FROM (` + nextOfStatus + `'Pending'` + nextOrder + `) AS pending
    UNION ALL
    SELECT * FROM (` + nextOfStatus + `'NotNow'` + nextOrder + `) AS notnow
) AS heads
ORDER BY priority DESC, seq
LIMIT 1`
)

// markDeliveredSQL records the first delivery, unless the entry was
// answered or cancelled since it was read.
const markDeliveredSQL = `
UPDATE command_queue SET delivered_at = ?3, updated_at = ?3
WHERE enrollment_id = ?1 AND command_uuid = ?2 AND delivered_at IS NULL
  AND status IN ('Pending', 'NotNow')`

// NextCommand returns the enrollment's next command — Pending, or NotNow
// unless skipNotNow, not expired — by priority, then age, and records its
// first delivery. nil, nil when there is none.
//
// It reads on the read pool and writes only for a first delivery, so the
// common answer (nothing to do, or a command already sent) never waits for
// the writer.
func (s *Store) NextCommand(ctx context.Context, enrollmentID string, skipNotNow bool, now time.Time) (*mdm.Command, error) {
	q := s.prepared[nextPendingNotNowSQL]
	if skipNotNow {
		q = s.prepared[nextPendingSQL]
	}
	// A cancel or result landing between the read and the write makes the
	// write miss; reading again then finds what now comes next. Each retry
	// means another request changed this queue, so a few suffice.
	for range 5 {
		var cmd mdm.Command
		var delivered bool
		err := q.QueryRowContext(ctx, enrollmentID, micros(now)).
			Scan(&cmd.CommandUUID, &cmd.RequestType, &cmd.Raw, &delivered)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading next command of %s: %w", enrollmentID, err)
		}
		if delivered {
			return &cmd, nil
		}
		res, err := s.prepared[markDeliveredSQL].ExecContext(ctx, enrollmentID, cmd.CommandUUID, micros(now))
		if err != nil {
			return nil, fmt.Errorf("marking %s delivered to %s: %w", cmd.CommandUUID, enrollmentID, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return nil, err
		} else if n == 1 {
			return &cmd, nil
		}
	}
	return nil, fmt.Errorf("reading next command of %s: queue keeps changing", enrollmentID)
}

// Result writes. A final answer replaces anything but another final answer,
// so a device repeating its result (it does, after a lost response) changes
// nothing; NotNow only replaces a status that is still open.
const (
	finalResultSQL = `
UPDATE command_queue SET status = ?3, result = ?4, updated_at = ?5, delivered_at = coalesce(delivered_at, ?5)
WHERE enrollment_id = ?1 AND command_uuid = ?2
  AND status IN ('Pending', 'NotNow', 'Cancelled', 'Expired')`
	notNowResultSQL = `
UPDATE command_queue SET status = ?3, result = ?4, updated_at = ?5, delivered_at = coalesce(delivered_at, ?5)
WHERE enrollment_id = ?1 AND command_uuid = ?2
  AND status IN ('Pending', 'NotNow')`
	resultRequestTypeSQL = `
SELECT c.request_type FROM command_queue q JOIN commands c ON c.uuid = q.command_uuid
WHERE q.enrollment_id = ?1 AND q.command_uuid = ?2`
	deviceSeenSQL     = `UPDATE devices SET last_seen = ?2 WHERE id = ?1`
	enrollmentSeenSQL = `UPDATE enrollments SET last_seen = ?2 WHERE id = ?1`
)

// StoreResult records a device's answer, with the complete result plist,
// and returns the command's RequestType. A final status (Acknowledged,
// Error, CommandFormatError) is kept once: a repeat changes nothing. NotNow
// does not overwrite a final status. storage.ErrNotFound when the command
// was never queued for this enrollment. The enrollment and its device are
// marked seen either way.
func (s *Store) StoreResult(ctx context.Context, enrollmentID string, res *mdm.CommandResults, now time.Time) (string, error) {
	var update string
	switch res.Status {
	case mdm.StatusAcknowledged, mdm.StatusError, mdm.StatusCommandFormatError:
		update = finalResultSQL
	case mdm.StatusNotNow:
		update = notNowResultSQL
	default:
		return "", fmt.Errorf("storing result of %s: status %q is not a result", res.CommandUUID, res.Status)
	}
	deviceID, _ := mdm.SplitID(enrollmentID)
	t := micros(now)
	var requestType string
	var found bool
	err := s.write(ctx, func(tx *sql.Tx) error {
		stmt := func(q string) *sql.Stmt { return tx.StmtContext(ctx, s.prepared[q]) }
		if _, err := stmt(deviceSeenSQL).ExecContext(ctx, deviceID, t); err != nil {
			return err
		}
		if _, err := stmt(enrollmentSeenSQL).ExecContext(ctx, enrollmentID, t); err != nil {
			return err
		}
		if _, err := stmt(update).ExecContext(ctx, enrollmentID, res.CommandUUID, res.Status, res.Raw, t); err != nil {
			return err
		}
		err := stmt(resultRequestTypeSQL).QueryRowContext(ctx, enrollmentID, res.CommandUUID).Scan(&requestType)
		if errors.Is(err, sql.ErrNoRows) {
			// Not an error of the transaction: the device was still seen.
			return nil
		}
		found = err == nil
		return err
	})
	if err == nil && !found {
		err = storage.ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("storing result of %s for %s: %w", res.CommandUUID, enrollmentID, err)
	}
	return requestType, nil
}
