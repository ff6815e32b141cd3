package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/bramley-mdm/bramley/mdm"
	"github.com/bramley-mdm/bramley/storage"
)

// CancelCommand cancels the command on every target that has neither
// received nor answered it, and returns how many it cancelled.
// storage.ErrNotFound when the command is unknown.
func (s *Store) CancelCommand(ctx context.Context, uuid string, now time.Time) (int, error) {
	var n int64
	err := s.write(ctx, func(tx *sql.Tx) error {
		var one int
		if err := tx.QueryRowContext(ctx, `SELECT 1 FROM commands WHERE uuid = ?1`, uuid).Scan(&one); err != nil {
			return notFound(err)
		}
		res, err := tx.ExecContext(ctx, `UPDATE command_queue SET status = 'Cancelled', updated_at = ?2
			WHERE command_uuid = ?1 AND status IN ('Pending', 'NotNow') AND delivered_at IS NULL`,
			uuid, micros(now))
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
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
	err := s.read(ctx, func(tx *sql.Tx) error {
		var expires sql.NullInt64
		var created int64
		err := tx.QueryRowContext(ctx, `SELECT uuid, request_type, priority, expires_at, created_at, raw
			FROM commands WHERE uuid = ?1`, uuid).
			Scan(&c.UUID, &c.RequestType, &c.Priority, &expires, &created, &c.Raw)
		if err != nil {
			return notFound(err)
		}
		c.ExpiresAt, c.CreatedAt = fromNullMicros(expires), fromMicros(created)
		rows, err := tx.QueryContext(ctx, `SELECT enrollment_id, status, delivered_at, updated_at, result
			FROM command_queue WHERE command_uuid = ?1 ORDER BY enrollment_id`, uuid)
		if err != nil {
			return err
		}
		defer rows.Close()
		c.Targets = []storage.CommandTarget{}
		for rows.Next() {
			var t storage.CommandTarget
			var delivered sql.NullInt64
			var updated int64
			if err := rows.Scan(&t.EnrollmentID, &t.Status, &delivered, &updated, &t.Result); err != nil {
				return err
			}
			t.Status = shownStatus(t.Status, c.ExpiresAt, now)
			t.DeliveredAt, t.UpdatedAt = fromNullMicros(delivered), fromMicros(updated)
			c.Targets = append(c.Targets, t)
		}
		return rows.Err()
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
	rows, err := s.r.QueryContext(ctx, `
		SELECT q.command_uuid, c.request_type, q.status, q.priority, c.expires_at, c.created_at, q.delivered_at
		FROM command_queue q JOIN commands c ON c.uuid = q.command_uuid
		WHERE q.enrollment_id = ?1 AND q.status IN ('Pending', 'NotNow')
		ORDER BY q.priority DESC, q.seq`, enrollmentID)
	if err != nil {
		return nil, fmt.Errorf("listing queue of %s: %w", enrollmentID, err)
	}
	defer rows.Close()
	items := []storage.QueueItem{}
	for rows.Next() {
		var it storage.QueueItem
		var expires, delivered sql.NullInt64
		var created int64
		if err := rows.Scan(&it.CommandUUID, &it.RequestType, &it.Status, &it.Priority, &expires,
			&created, &delivered); err != nil {
			return nil, fmt.Errorf("listing queue of %s: %w", enrollmentID, err)
		}
		it.ExpiresAt, it.CreatedAt, it.DeliveredAt = fromNullMicros(expires), fromMicros(created), fromNullMicros(delivered)
		it.Status = shownStatus(it.Status, it.ExpiresAt, now)
		items = append(items, it)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing queue of %s: %w", enrollmentID, err)
	}
	return items, nil
}

// QueueDepth counts the queue entries still to be answered (Pending or
// NotNow) whose command has not expired, for the queue-depth metric.
func (s *Store) QueueDepth(ctx context.Context) (int64, error) {
	var n int64
	err := s.r.QueryRowContext(ctx, `
		SELECT count(*) FROM command_queue q JOIN commands c ON c.uuid = q.command_uuid
		WHERE q.status IN ('Pending', 'NotNow') AND (c.expires_at IS NULL OR c.expires_at > ?1)`,
		micros(time.Now())).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("counting queued commands: %w", err)
	}
	return n, nil
}
