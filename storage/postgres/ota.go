package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bramley-mdm/bramley/enroll"
	"github.com/bramley-mdm/bramley/storage"
)

const otaColumns = `id, username, state, udid, serial, product, version, device_name, imei, meid, iccid, mac_address,
	created_at, updated_at, expires_at`

func scanOTA(row pgx.Row) (*enroll.OTASession, error) {
	var s enroll.OTASession
	d := &s.Device
	if err := row.Scan(&s.ID, &s.Username, &s.State, &d.UDID, &d.Serial, &d.Product, &d.Version, &d.DeviceName,
		&d.IMEI, &d.MEID, &d.ICCID, &d.MACAddress, &s.CreatedAt, &s.UpdatedAt, &s.ExpiresAt); err != nil {
		return nil, notFound(err)
	}
	s.CreatedAt, s.UpdatedAt, s.ExpiresAt = s.CreatedAt.UTC(), s.UpdatedAt.UTC(), s.ExpiresAt.UTC()
	return &s, nil
}

// CreateOTASession stores a session in state issued. storage.ErrConflict
// when its ID or challenge hash exists.
func (s *Store) CreateOTASession(ctx context.Context, o enroll.OTASession, challengeHash []byte) error {
	if o.ID == "" || len(challengeHash) == 0 || o.Username == "" {
		return errors.New("creating OTA session: it needs an ID, a challenge hash and a username")
	}
	err := mustAffect(s.pool.Exec(ctx, `INSERT INTO ota_sessions
		(id, challenge_hash, username, state, created_at, updated_at, expires_at)
		VALUES ($1, $2, $3, $4, $5, $5, $6) ON CONFLICT DO NOTHING`,
		o.ID, challengeHash, o.Username, enroll.OTAStateIssued, ts(o.CreatedAt), ts(o.ExpiresAt)))
	if errors.Is(err, storage.ErrNotFound) {
		err = storage.ErrConflict
	}
	if err != nil {
		return fmt.Errorf("creating OTA session: %w", err)
	}
	return nil
}

// StartOTASession moves the session of this challenge from issued to
// attributes, recording dev, in one statement. storage.ErrNotFound when
// unknown, expired or already started.
func (s *Store) StartOTASession(ctx context.Context, challengeHash []byte, dev enroll.OTAAttributes, now time.Time) (*enroll.OTASession, error) {
	o, err := scanOTA(s.pool.QueryRow(ctx, `UPDATE ota_sessions SET state = $3,
		udid = $4, serial = $5, product = $6, version = $7, device_name = $8, imei = $9, meid = $10,
		iccid = $11, mac_address = $12, updated_at = $2
		WHERE challenge_hash = $1 AND state = $13 AND expires_at > $2
		RETURNING `+otaColumns, challengeHash, ts(now), enroll.OTAStateAttributes,
		dev.UDID, dev.Serial, dev.Product, dev.Version, dev.DeviceName, dev.IMEI, dev.MEID, dev.ICCID,
		dev.MACAddress, enroll.OTAStateIssued))
	if err != nil {
		return nil, fmt.Errorf("starting OTA session: %w", err)
	}
	return o, nil
}

// OTASession returns a session by ID; storage.ErrNotFound when unknown.
func (s *Store) OTASession(ctx context.Context, id string) (*enroll.OTASession, error) {
	o, err := scanOTA(s.pool.QueryRow(ctx, `SELECT `+otaColumns+` FROM ota_sessions WHERE id = $1`, id))
	if err != nil {
		return nil, fmt.Errorf("reading OTA session %s: %w", id, err)
	}
	return o, nil
}

// OTASessionByChallenge returns the session of a challenge hash;
// storage.ErrNotFound when unknown.
func (s *Store) OTASessionByChallenge(ctx context.Context, hash []byte) (*enroll.OTASession, error) {
	o, err := scanOTA(s.pool.QueryRow(ctx, `SELECT `+otaColumns+` FROM ota_sessions WHERE challenge_hash = $1`, hash))
	if err != nil {
		return nil, fmt.Errorf("reading OTA session: %w", err)
	}
	return o, nil
}

// FinishOTASession moves the session from attributes to enrolled and
// records the device's enrollment route, in one transaction.
// storage.ErrNotFound when unknown, expired or not in attributes.
func (s *Store) FinishOTASession(ctx context.Context, id string, now time.Time) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var udid, username string
		err := tx.QueryRow(ctx, `UPDATE ota_sessions SET state = $2, updated_at = $3
			WHERE id = $1 AND state = $4 AND expires_at > $3 RETURNING udid, username`,
			id, enroll.OTAStateEnrolled, ts(now), enroll.OTAStateAttributes).Scan(&udid, &username)
		if err != nil {
			return notFound(err)
		}
		_, err = tx.Exec(ctx, `INSERT INTO enrollment_routes (device_id, route, username, ref, created_at)
			VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (device_id) DO UPDATE SET route = excluded.route, username = excluded.username,
				ref = excluded.ref, created_at = excluded.created_at`,
			udid, enroll.RouteOTA, username, id, ts(now))
		return err
	})
	if err != nil {
		return fmt.Errorf("finishing OTA session %s: %w", id, err)
	}
	return nil
}

// EnrollmentRoute returns how a device was last enrolled and for whom;
// storage.ErrNotFound when no route is recorded.
func (s *Store) EnrollmentRoute(ctx context.Context, deviceID string) (route, username string, err error) {
	err = s.pool.QueryRow(ctx, `SELECT route, username FROM enrollment_routes WHERE device_id = $1`,
		deviceID).Scan(&route, &username)
	if err != nil {
		return "", "", fmt.Errorf("reading enrollment route of %s: %w", deviceID, notFound(err))
	}
	return route, username, nil
}
