package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/bramley-mdm/bramley/mdm"
	"github.com/bramley-mdm/bramley/storage"
)

// cancelSQL cancels the undelivered, unanswered targets and says whether
// the command exists, in one statement.
const cancelSQL = `
WITH cancelled AS (
    UPDATE command_queue SET status = 'Cancelled', updated_at = $2
    WHERE command_uuid = $1 AND status IN ('Pending', 'NotNow') AND delivered_at IS NULL
    RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM commands WHERE uuid = $1), (SELECT count(*) FROM cancelled)`

// CancelCommand cancels the command on every target that has neither
// received nor answered it, and returns how many it cancelled.
// storage.ErrNotFound when the command is unknown.
func (s *Store) CancelCommand(ctx context.Context, uuid string, now time.Time) (int, error) {
	var exists bool
	var n int64
	err := s.pool.QueryRow(ctx, cancelSQL, uuid, ts(now)).Scan(&exists, &n)
	if err == nil && !exists {
		err = storage.ErrNotFound
	}
	if err != nil {
		return 0, fmt.Errorf("cancelling %s: %w", uuid, err)
	}
	return int(n), nil
}

// shownStatus is the status a reader sees: an entry still open when its
// command expired will never be sent, so it reads as Expired.
func shownStatus(status string, expiresAt, now time.Time) string {
	open := status == storage.StatusPending || status == mdm.StatusNotNow
	if open && !expiresAt.IsZero() && !expiresAt.After(now) {
		return storage.StatusExpired
	}
	return status
}

// Command returns a command and its state on every target, ordered by
// enrollment ID; storage.ErrNotFound when unknown. Targets still open past
// the command's expiry read as storage.StatusExpired.
func (s *Store) Command(ctx context.Context, uuid string, now time.Time) (*storage.Command, error) {
	var c storage.Command
	// Repeatable read: the command and its targets from one snapshot.
	opts := pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}
	err := pgx.BeginTxFunc(ctx, s.pool, opts, func(tx pgx.Tx) error {
		var expires pgtype.Timestamptz
		err := tx.QueryRow(ctx, `SELECT uuid, request_type, priority, expires_at, created_at, raw
			FROM commands WHERE uuid = $1`, uuid).
			Scan(&c.UUID, &c.RequestType, &c.Priority, &expires, &c.CreatedAt, &c.Raw)
		if err != nil {
			return notFound(err)
		}
		c.ExpiresAt, c.CreatedAt = fromTS(expires), c.CreatedAt.UTC()
		rows, _ := tx.Query(ctx, `SELECT enrollment_id, status, delivered_at, updated_at, result
			FROM command_queue WHERE command_uuid = $1 ORDER BY enrollment_id`, uuid)
		c.Targets, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (storage.CommandTarget, error) {
			var t storage.CommandTarget
			var delivered pgtype.Timestamptz
			err := r.Scan(&t.EnrollmentID, &t.Status, &delivered, &t.UpdatedAt, &t.Result)
			t.Status = shownStatus(t.Status, c.ExpiresAt, now)
			t.DeliveredAt, t.UpdatedAt = fromTS(delivered), t.UpdatedAt.UTC()
			return t, err
		})
		if c.Targets == nil {
			c.Targets = []storage.CommandTarget{}
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("reading command %s: %w", uuid, err)
	}
	return &c, nil
}

// Queue lists the enrollment's unanswered (Pending and NotNow) commands in
// delivery order; those past their expiry read as storage.StatusExpired.
// An unknown enrollment has an empty queue.
func (s *Store) Queue(ctx context.Context, enrollmentID string, now time.Time) ([]storage.QueueItem, error) {
	rows, _ := s.pool.Query(ctx, `
		SELECT q.command_uuid, c.request_type, q.status, q.priority, c.expires_at, c.created_at, q.delivered_at
		FROM command_queue q JOIN commands c ON c.uuid = q.command_uuid
		WHERE q.enrollment_id = $1 AND q.status IN ('Pending', 'NotNow')
		ORDER BY q.priority DESC, q.seq`, enrollmentID)
	items, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (storage.QueueItem, error) {
		var it storage.QueueItem
		var expires, delivered pgtype.Timestamptz
		err := r.Scan(&it.CommandUUID, &it.RequestType, &it.Status, &it.Priority, &expires, &it.CreatedAt, &delivered)
		it.ExpiresAt, it.CreatedAt, it.DeliveredAt = fromTS(expires), it.CreatedAt.UTC(), fromTS(delivered)
		it.Status = shownStatus(it.Status, it.ExpiresAt, now)
		return it, err
	})
	if err != nil {
		return nil, fmt.Errorf("listing queue of %s: %w", enrollmentID, err)
	}
	if items == nil {
		items = []storage.QueueItem{}
	}
	return items, nil
}

// QueueDepth counts the queue entries still to be answered (Pending or
// NotNow) whose command has not expired, for the queue-depth metric.
func (s *Store) QueueDepth(ctx context.Context) (int64, error) {
	var n int64
	err := s.pool.QueryRow(ctx, `
		SELECT count(*) FROM command_queue q JOIN commands c ON c.uuid = q.command_uuid
		WHERE q.status IN ('Pending', 'NotNow') AND (c.expires_at IS NULL OR c.expires_at > $1)`,
		ts(time.Now())).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("counting queued commands: %w", err)
	}
	return n, nil
}
