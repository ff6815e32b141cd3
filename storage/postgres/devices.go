package postgres

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bramley-mdm/bramley/storage"
)

const deviceColumns = `id, udid, serial_number, model, model_name, product_name, device_name,
    os_version, build_version, imei, meid, host_name, topic, enrolled,
    bootstrap_token IS NOT NULL, last_seen, created_at, updated_at`

func scanDevice(row pgx.Row) (storage.Device, error) {
	var d storage.Device
	err := row.Scan(&d.ID, &d.UDID, &d.SerialNumber, &d.Model, &d.ModelName, &d.ProductName,
		&d.DeviceName, &d.OSVersion, &d.BuildVersion, &d.IMEI, &d.MEID, &d.HostName, &d.Topic,
		&d.Enrolled, &d.HasBootstrap, &d.LastSeen, &d.CreatedAt, &d.UpdatedAt)
	d.LastSeen, d.CreatedAt, d.UpdatedAt = d.LastSeen.UTC(), d.CreatedAt.UTC(), d.UpdatedAt.UTC()
	return d, err
}

// Device limits for a listing.
const (
	defaultDeviceLimit = 100
	maxDeviceLimit     = 1000
)

func deviceLimit(n int) int {
	switch {
	case n <= 0:
		return defaultDeviceLimit
	case n > maxDeviceLimit:
		return maxDeviceLimit
	}
	return n
}

// Devices lists devices matching the filter, ordered by ID, one page at a
// time: After is the last ID of the previous page, Limit defaults to 100
// and is capped at 1000.
func (s *Store) Devices(ctx context.Context, f storage.DeviceFilter) ([]storage.Device, error) {
	// Only the conditions the filter sets, so the planner can pick the
	// index that matches (serial number, UDID, or the primary key for
	// paging).
	var where []string
	var args []any
	if f.SerialNumber != "" {
		args = append(args, f.SerialNumber)
		where = append(where, fmt.Sprintf("serial_number = $%d", len(args)))
	}
	if f.UDID != "" {
		args = append(args, f.UDID)
		where = append(where, fmt.Sprintf("udid = $%d", len(args)))
	}
	if f.After != "" {
		args = append(args, f.After)
		where = append(where, fmt.Sprintf("id > $%d", len(args)))
	}
	q := "SELECT " + deviceColumns + " FROM devices"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	args = append(args, deviceLimit(f.Limit))
	q += fmt.Sprintf(" ORDER BY id LIMIT $%d", len(args))
	rows, _ := s.pool.Query(ctx, q, args...)
	devices, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (storage.Device, error) { return scanDevice(r) })
	if err != nil {
		return nil, fmt.Errorf("listing devices: %w", err)
	}
	if devices == nil {
		devices = []storage.Device{}
	}
	return devices, nil
}

// Device returns one device; storage.ErrNotFound when unknown.
func (s *Store) Device(ctx context.Context, deviceID string) (*storage.Device, error) {
	d, err := scanDevice(s.pool.QueryRow(ctx, "SELECT "+deviceColumns+" FROM devices WHERE id = $1", deviceID))
	if err != nil {
		return nil, fmt.Errorf("reading device %s: %w", deviceID, notFound(err))
	}
	return &d, nil
}

const enrollmentColumns = `id, device_id, user_id, user_short_name, user_long_name, topic,
    push_token, push_magic, awaiting_configuration, enabled, last_seen, updated_at`

func scanEnrollment(row pgx.Row) (storage.Enrollment, error) {
	var e storage.Enrollment
	err := row.Scan(&e.ID, &e.DeviceID, &e.UserID, &e.UserShortName, &e.UserLongName, &e.Topic,
		&e.PushToken, &e.PushMagic, &e.AwaitingConfiguration, &e.Enabled, &e.LastSeen, &e.UpdatedAt)
	e.LastSeen, e.UpdatedAt = e.LastSeen.UTC(), e.UpdatedAt.UTC()
	return e, err
}

// Enrollment returns one channel by enrollment ID; storage.ErrNotFound when
// unknown.
func (s *Store) Enrollment(ctx context.Context, enrollmentID string) (*storage.Enrollment, error) {
	e, err := scanEnrollment(s.pool.QueryRow(ctx,
		"SELECT "+enrollmentColumns+" FROM enrollments WHERE id = $1", enrollmentID))
	if err != nil {
		return nil, fmt.Errorf("reading enrollment %s: %w", enrollmentID, notFound(err))
	}
	return &e, nil
}

// Enrollments lists a device's channels, the device channel first, then
// user channels by ID. An unknown device has none.
func (s *Store) Enrollments(ctx context.Context, deviceID string) ([]storage.Enrollment, error) {
	rows, _ := s.pool.Query(ctx, "SELECT "+enrollmentColumns+` FROM enrollments
		WHERE device_id = $1 ORDER BY id <> device_id, id`, deviceID)
	es, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (storage.Enrollment, error) { return scanEnrollment(r) })
	if err != nil {
		return nil, fmt.Errorf("listing enrollments of %s: %w", deviceID, err)
	}
	if es == nil {
		es = []storage.Enrollment{}
	}
	return es, nil
}

const updateDeviceInfoSQL = `
UPDATE devices SET
    serial_number = coalesce(nullif($2, ''), serial_number),
    model         = coalesce(nullif($3, ''), model),
    model_name    = coalesce(nullif($4, ''), model_name),
    product_name  = coalesce(nullif($5, ''), product_name),
    device_name   = coalesce(nullif($6, ''), device_name),
    os_version    = coalesce(nullif($7, ''), os_version),
    build_version = coalesce(nullif($8, ''), build_version),
    imei          = coalesce(nullif($9, ''), imei),
    meid          = coalesce(nullif($10, ''), meid),
    host_name     = coalesce(nullif($11, ''), host_name),
    updated_at    = $12
WHERE id = $1`

// UpdateDeviceInfo overwrites the device's attributes with the non-empty
// fields of info (those a DeviceInformation result carries).
// storage.ErrNotFound when the device is unknown.
func (s *Store) UpdateDeviceInfo(ctx context.Context, deviceID string, info storage.Device, now time.Time) error {
	err := mustAffect(s.pool.Exec(ctx, updateDeviceInfoSQL, deviceID, info.SerialNumber, info.Model,
		info.ModelName, info.ProductName, info.DeviceName, info.OSVersion, info.BuildVersion,
		info.IMEI, info.MEID, info.HostName, ts(now)))
	if err != nil {
		return fmt.Errorf("updating device information of %s: %w", deviceID, err)
	}
	return nil
}
