package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bramley-mdm/bramley/mdm"
	"github.com/bramley-mdm/bramley/storage"
)

const insertCommandSQL = `
INSERT INTO commands (uuid, request_type, raw, priority, expires_at, created_at)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (uuid) DO NOTHING
RETURNING seq`

// insertTargetsSQL queues the command for the enrollments among $5 that
// exist; the caller compares the count with what it asked for.
const insertTargetsSQL = `
INSERT INTO command_queue (enrollment_id, command_uuid, status, priority, seq, updated_at)
SELECT id, $1::text, 'Pending', $2::integer, $3::bigint, $4::timestamptz FROM enrollments
WHERE id = ANY($5::text[])`

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
	created := cmd.CreatedAt
	if created.IsZero() {
		created = time.Now()
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var seq int64
		err := tx.QueryRow(ctx, insertCommandSQL, cmd.UUID, cmd.RequestType, cmd.Raw, cmd.Priority,
			nullTS(cmd.ExpiresAt), ts(created)).Scan(&seq)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("command UUID is taken: %w", storage.ErrConflict)
		}
		if err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, insertTargetsSQL, cmd.UUID, cmd.Priority, seq, ts(created), ids)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == int64(len(ids)) {
			return nil
		}
		return missingEnrollment(ctx, tx, ids)
	})
	if err != nil {
		return fmt.Errorf("enqueueing %s: %w", cmd.UUID, err)
	}
	return nil
}

// missingEnrollment names the first of ids that is not enrolled.
func missingEnrollment(ctx context.Context, tx pgx.Tx, ids []string) error {
	var id string
	err := tx.QueryRow(ctx, `SELECT id FROM unnest($1::text[]) WITH ORDINALITY AS ids (id, n)
		WHERE NOT EXISTS (SELECT 1 FROM enrollments e WHERE e.id = ids.id) ORDER BY n LIMIT 1`, ids).Scan(&id)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return err
	}
	return fmt.Errorf("enrollment %s: %w", id, storage.ErrNotFound)
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
WHERE q.enrollment_id = $1 AND (c.expires_at IS NULL OR c.expires_at > $2) AND q.status = `
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
UPDATE command_queue SET delivered_at = $3, updated_at = $3
WHERE enrollment_id = $1 AND command_uuid = $2 AND delivered_at IS NULL
  AND status IN ('Pending', 'NotNow')`

// NextCommand returns the enrollment's next command — Pending, or NotNow
// unless skipNotNow, not expired — by priority, then age, and records its
// first delivery. nil, nil when there is none.
//
// The common answers (nothing to do, or a command already sent) are one
// read; only a first delivery writes.
func (s *Store) NextCommand(ctx context.Context, enrollmentID string, skipNotNow bool, now time.Time) (*mdm.Command, error) {
	q := nextPendingNotNowSQL
	if skipNotNow {
		q = nextPendingSQL
	}
	t := ts(now)
	// A cancel or result landing between the read and the write makes the
	// write miss; reading again then finds what now comes next. Each retry
	// means another request changed this queue, so a few suffice.
	for range 5 {
		var cmd mdm.Command
		var delivered bool
		err := s.pool.QueryRow(ctx, q, enrollmentID, t).Scan(&cmd.CommandUUID, &cmd.RequestType, &cmd.Raw, &delivered)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading next command of %s: %w", enrollmentID, err)
		}
		if delivered {
			return &cmd, nil
		}
		tag, err := s.pool.Exec(ctx, markDeliveredSQL, enrollmentID, cmd.CommandUUID, t)
		if err != nil {
			return nil, fmt.Errorf("marking %s delivered to %s: %w", cmd.CommandUUID, enrollmentID, err)
		}
		if tag.RowsAffected() == 1 {
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
UPDATE command_queue SET status = $3, result = $4, updated_at = $5, delivered_at = coalesce(delivered_at, $5)
WHERE enrollment_id = $1 AND command_uuid = $2
  AND status IN ('Pending', 'NotNow', 'Cancelled', 'Expired')`
	notNowResultSQL = `
UPDATE command_queue SET status = $3, result = $4, updated_at = $5, delivered_at = coalesce(delivered_at, $5)
WHERE enrollment_id = $1 AND command_uuid = $2
  AND status IN ('Pending', 'NotNow')`
	resultRequestTypeSQL = `
SELECT c.request_type FROM command_queue q JOIN commands c ON c.uuid = q.command_uuid
WHERE q.enrollment_id = $1 AND q.command_uuid = $2`
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
	t := ts(now)
	// One round trip, one implicit transaction. The status condition is in
	// the UPDATE itself, so two answers racing cannot both win. Rows are
	// locked device first, then enrollment, then queue, the order every
	// check-in write follows, so that writes of one device cannot deadlock.
	b := &pgx.Batch{}
	b.Queue(`UPDATE devices SET last_seen = $2 WHERE id = $1`, deviceID, t)
	b.Queue(`UPDATE enrollments SET last_seen = $2 WHERE id = $1`, enrollmentID, t)
	b.Queue(update, enrollmentID, res.CommandUUID, res.Status, res.Raw, t)
	b.Queue(resultRequestTypeSQL, enrollmentID, res.CommandUUID)
	br := s.pool.SendBatch(ctx, b)
	var requestType string
	var err error
	for range 3 {
		if _, err = br.Exec(); err != nil {
			break
		}
	}
	if err == nil {
		err = notFound(br.QueryRow().Scan(&requestType))
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("storing result of %s for %s: %w", res.CommandUUID, enrollmentID, err)
	}
	return requestType, nil
}
