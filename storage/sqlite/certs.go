package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/bramley-mdm/bramley/storage"
)

// CertBinding returns the hash of the certificate bound to the device and
// when it was bound (nil and the zero time when none is);
// storage.ErrNotFound when the device is unknown.
func (s *Store) CertBinding(ctx context.Context, deviceID string) ([]byte, time.Time, error) {
	var hash []byte
	var boundAt sql.NullInt64
	err := s.r.QueryRowContext(ctx, `SELECT cert_hash, cert_bound_at FROM devices WHERE id = ?1`,
		deviceID).Scan(&hash, &boundAt)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("reading certificate binding of %s: %w", deviceID, notFound(err))
	}
	return hash, fromNullMicros(boundAt), nil
}

// CertDevice returns the device a certificate is bound to;
// storage.ErrNotFound when it is bound to none, or bramley revoked it: a
// revoked identity renews nothing.
func (s *Store) CertDevice(ctx context.Context, hash []byte) (string, error) {
	var id string
	err := s.r.QueryRowContext(ctx, `SELECT id FROM devices d WHERE cert_hash = ?1
		AND NOT EXISTS (SELECT 1 FROM certificates c WHERE c.sha256 = d.cert_hash AND c.revoked = 1)`,
		nullBytes(hash)).Scan(&id)
	if err != nil {
		return "", fmt.Errorf("looking up certificate binding: %w", notFound(err))
	}
	return id, nil
}

// RebindCert binds the device to a new certificate. Rebinding the bound
// certificate changes nothing, not even when it was bound.
// storage.ErrNotFound when the device is unknown, storage.ErrConflict when
// the certificate is bound to another device.
func (s *Store) RebindCert(ctx context.Context, deviceID string, hash []byte, now time.Time) error {
	err := mustAffect(s.w.ExecContext(ctx, `UPDATE devices SET
		cert_bound_at = CASE WHEN cert_hash IS ?2 THEN cert_bound_at ELSE ?3 END,
		updated_at    = CASE WHEN cert_hash IS ?2 THEN updated_at ELSE ?3 END,
		cert_hash     = ?2
		WHERE id = ?1`, deviceID, nullBytes(hash), micros(now)))
	if isUnique(err) {
		err = storage.ErrConflict
	}
	if err != nil {
		return fmt.Errorf("binding certificate of %s: %w", deviceID, err)
	}
	return nil
}

// RecordCertificate stores a certificate bramley issued. Idempotent by
// serial: a repeat keeps the first record.
func (s *Store) RecordCertificate(ctx context.Context, c storage.Certificate) error {
	if _, err := s.w.ExecContext(ctx, `INSERT INTO certificates
		(serial, sha256, subject, device_id, not_after, revoked, created_at)
		VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
		ON CONFLICT DO NOTHING`,
		c.Serial, c.SHA256, c.Subject, nullString(c.DeviceID), micros(c.NotAfter), c.Revoked,
		micros(c.CreatedAt)); err != nil {
		return fmt.Errorf("recording certificate %s: %w", c.Serial, err)
	}
	return nil
}

// IssuedTo returns the device bramley issued the certificate to as a
// renewal; storage.ErrNotFound when it issued no such certificate, issued
// it to no known device, or revoked it.
func (s *Store) IssuedTo(ctx context.Context, hash []byte) (string, error) {
	var id string
	err := s.r.QueryRowContext(ctx, `SELECT device_id FROM certificates
		WHERE sha256 = ?1 AND device_id IS NOT NULL AND revoked = 0`, nullBytes(hash)).Scan(&id)
	if err != nil {
		return "", fmt.Errorf("looking up issued certificate: %w", notFound(err))
	}
	return id, nil
}
