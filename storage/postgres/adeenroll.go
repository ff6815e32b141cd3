package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/bramley-mdm/bramley/ade"
	"github.com/bramley-mdm/bramley/storage"
)

// ADEDeviceBySerial returns the device's current ADE record (see
// enroll.ADEDeviceFinder).
func (s *Store) ADEDeviceBySerial(ctx context.Context, serial string) (ade.DeviceRecord, error) {
	var d ade.DeviceRecord
	var assign, push, assigned, opDate pgtype.Timestamptz
	var op string
	err := s.pool.QueryRow(ctx, `
		SELECT token_id, serial_number, model, description, color, asset_tag, os, device_family,
		       profile_status, profile_uuid, profile_assign_time, profile_push_time, device_assigned_date,
		       device_assigned_by, op_type, op_date, deleted
		FROM ade_devices WHERE serial_number = $1 AND NOT deleted
		ORDER BY op_date DESC NULLS LAST, token_id LIMIT 1`, serial).Scan(
		&d.TokenID, &d.SerialNumber, &d.Model, &d.Description, &d.Color, &d.AssetTag,
		&d.OS, &d.DeviceFamily, &d.ProfileStatus, &d.ProfileUUID, &assign, &push, &assigned,
		&d.DeviceAssignedBy, &op, &opDate, &d.Deleted)
	if errors.Is(err, pgx.ErrNoRows) {
		return ade.DeviceRecord{}, storage.ErrNotFound
	}
	if err != nil {
		return ade.DeviceRecord{}, fmt.Errorf("finding ADE device by serial: %w", err)
	}
	d.OpType = ade.OpType(op)
	d.ProfileAssignTime, d.ProfilePushTime = fromTS(assign), fromTS(push)
	d.DeviceAssignedDate, d.OpDate = fromTS(assigned), fromTS(opDate)
	return d, nil
}
