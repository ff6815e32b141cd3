package sqlite

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/bramley-mdm/bramley/ade"
)

const adeTokenColumns = `id, consumer_key, sealed, access_token_expiry, server_name, created_at, updated_at`

func scanADEToken(row interface{ Scan(...any) error }) (ade.Token, error) {
	var t ade.Token
	var expiry, created, updated int64
	err := row.Scan(&t.ID, &t.ConsumerKey, &t.Sealed, &expiry, &t.ServerName, &created, &updated)
	t.AccessTokenExpiry, t.CreatedAt, t.UpdatedAt = fromMicros(expiry), fromMicros(created), fromMicros(updated)
	return t, err
}

// PutToken stores a server token, replacing the one with its consumer key
// (see ade.TokenStore). Idempotent.
func (s *Store) PutToken(ctx context.Context, t ade.Token) (ade.Token, error) {
	var stored ade.Token
	err := s.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `
			INSERT INTO ade_tokens (id, consumer_key, sealed, access_token_expiry, server_name, created_at, updated_at)
			VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
			ON CONFLICT (consumer_key) DO UPDATE SET
			    sealed = excluded.sealed, access_token_expiry = excluded.access_token_expiry,
			    server_name = excluded.server_name, updated_at = excluded.updated_at`,
			t.ID, t.ConsumerKey, t.Sealed, micros(t.AccessTokenExpiry), t.ServerName, micros(t.CreatedAt)); err != nil {
			return err
		}
		var err error
		stored, err = scanADEToken(tx.QueryRowContext(ctx,
			`SELECT `+adeTokenColumns+` FROM ade_tokens WHERE consumer_key = ?1`, t.ConsumerKey))
		return err
	})
	if err != nil {
		return ade.Token{}, fmt.Errorf("storing ADE token: %w", err)
	}
	return stored, nil
}

// Tokens returns every ADE server token, oldest first.
func (s *Store) Tokens(ctx context.Context) ([]ade.Token, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+adeTokenColumns+` FROM ade_tokens ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("listing ADE tokens: %w", err)
	}
	defer rows.Close()
	var out []ade.Token
	for rows.Next() {
		t, err := scanADEToken(rows)
		if err != nil {
			return nil, fmt.Errorf("listing ADE tokens: %w", err)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing ADE tokens: %w", err)
	}
	return out, nil
}

// Token returns one ADE server token; storage.ErrNotFound when missing.
func (s *Store) Token(ctx context.Context, id string) (ade.Token, error) {
	t, err := scanADEToken(s.r.QueryRowContext(ctx, `SELECT `+adeTokenColumns+` FROM ade_tokens WHERE id = ?1`, id))
	if err != nil {
		return ade.Token{}, fmt.Errorf("reading ADE token %s: %w", id, notFound(err))
	}
	return t, nil
}

// Cursor returns the token's device cursor, "" before the first fetch;
// storage.ErrNotFound for an unknown token.
func (s *Store) Cursor(ctx context.Context, tokenID string) (string, error) {
	var c string
	if err := s.r.QueryRowContext(ctx, `SELECT device_cursor FROM ade_tokens WHERE id = ?1`, tokenID).Scan(&c); err != nil {
		return "", fmt.Errorf("reading ADE cursor of %s: %w", tokenID, notFound(err))
	}
	return c, nil
}

// SetCursor replaces the token's device cursor; storage.ErrNotFound for an
// unknown token. Idempotent.
func (s *Store) SetCursor(ctx context.Context, tokenID, cursor string) error {
	err := mustAffect(s.w.ExecContext(ctx, `UPDATE ade_tokens SET device_cursor = ?2 WHERE id = ?1`, tokenID, cursor))
	if err != nil {
		return fmt.Errorf("saving ADE cursor of %s: %w", tokenID, err)
	}
	return nil
}

// upsertADEDeviceSQL records a device as Apple describes it now.
const upsertADEDeviceSQL = `
INSERT INTO ade_devices (token_id, serial_number, model, description, color, asset_tag, os, device_family,
    profile_status, profile_uuid, profile_assign_time, profile_push_time, device_assigned_date,
    device_assigned_by, op_type, op_date, deleted)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, 0)
ON CONFLICT (token_id, serial_number) DO UPDATE SET
    model = excluded.model, description = excluded.description, color = excluded.color,
    asset_tag = excluded.asset_tag, os = excluded.os, device_family = excluded.device_family,
    profile_status = excluded.profile_status, profile_uuid = excluded.profile_uuid,
    profile_assign_time = excluded.profile_assign_time, profile_push_time = excluded.profile_push_time,
    device_assigned_date = excluded.device_assigned_date, device_assigned_by = excluded.device_assigned_by,
    op_type = excluded.op_type, op_date = excluded.op_date, deleted = 0`

// deleteADEDeviceSQL marks a device unassigned. Apple's deleted records
// may carry little more than the serial number, so the rest of a known
// record stays as it was.
const deleteADEDeviceSQL = `
INSERT INTO ade_devices (token_id, serial_number, model, description, color, os, device_family,
    op_type, op_date, deleted)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'deleted', ?8, 1)
ON CONFLICT (token_id, serial_number) DO UPDATE SET
    op_type = 'deleted', op_date = excluded.op_date, deleted = 1`

// UpsertDevices records the devices Apple reported for the token (see
// ade.DeviceSink), in one transaction. Idempotent.
func (s *Store) UpsertDevices(ctx context.Context, tokenID string, devices []ade.Device) error {
	if len(devices) == 0 {
		return nil
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		for _, d := range devices {
			var err error
			if d.OpType == ade.OpDeleted {
				_, err = tx.ExecContext(ctx, deleteADEDeviceSQL, tokenID, d.SerialNumber, d.Model, d.Description,
					d.Color, d.OS, d.DeviceFamily, nullMicros(d.OpDate))
			} else {
				_, err = tx.ExecContext(ctx, upsertADEDeviceSQL, tokenID, d.SerialNumber, d.Model, d.Description,
					d.Color, d.AssetTag, d.OS, d.DeviceFamily, d.ProfileStatus, d.ProfileUUID,
					nullMicros(d.ProfileAssignTime), nullMicros(d.ProfilePushTime), nullMicros(d.DeviceAssignedDate),
					d.DeviceAssignedBy, string(d.OpType), nullMicros(d.OpDate))
			}
			if err != nil {
				return fmt.Errorf("device %s: %w", d.SerialNumber, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("recording ADE devices of %s: %w", tokenID, err)
	}
	return nil
}

// ADEDevices lists the devices of a token, or of all when tokenID is ""
// (see ade.DeviceLister).
func (s *Store) ADEDevices(ctx context.Context, tokenID string) ([]ade.DeviceRecord, error) {
	rows, err := s.r.QueryContext(ctx, `
		SELECT token_id, serial_number, model, description, color, asset_tag, os, device_family,
		       profile_status, profile_uuid, profile_assign_time, profile_push_time, device_assigned_date,
		       device_assigned_by, op_type, op_date, deleted, assign_profile_id, assign_result, assign_time
		FROM ade_devices WHERE ?1 = '' OR token_id = ?1
		ORDER BY token_id, serial_number`, tokenID)
	if err != nil {
		return nil, fmt.Errorf("listing ADE devices: %w", err)
	}
	defer rows.Close()
	var out []ade.DeviceRecord
	for rows.Next() {
		var d ade.DeviceRecord
		var assign, push, assigned, opDate, assignTime sql.NullInt64
		var op string
		if err := rows.Scan(&d.TokenID, &d.SerialNumber, &d.Model, &d.Description, &d.Color, &d.AssetTag,
			&d.OS, &d.DeviceFamily, &d.ProfileStatus, &d.ProfileUUID, &assign, &push, &assigned,
			&d.DeviceAssignedBy, &op, &opDate, &d.Deleted, &d.AssignProfileID, &d.AssignResult, &assignTime); err != nil {
			return nil, fmt.Errorf("listing ADE devices: %w", err)
		}
		d.OpType = ade.OpType(op)
		d.ProfileAssignTime, d.ProfilePushTime = fromNullMicros(assign), fromNullMicros(push)
		d.DeviceAssignedDate, d.OpDate = fromNullMicros(assigned), fromNullMicros(opDate)
		d.AssignTime = fromNullMicros(assignTime)
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing ADE devices: %w", err)
	}
	return out, nil
}
