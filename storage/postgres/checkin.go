package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bramley-mdm/bramley/mdm"
	"github.com/bramley-mdm/bramley/storage"
)

// upsertDeviceSQL records an Authenticate: attributes the message omits
// (old iOS sends no DeviceName or Model) keep their stored value.
const upsertDeviceSQL = `
INSERT INTO devices (id, udid, serial_number, model, model_name, product_name, device_name,
    os_version, build_version, imei, meid, topic, enrolled, cert_hash, cert_bound_at,
    last_seen, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, false, $13, $14, $14, $14, $14)
ON CONFLICT (id) DO UPDATE SET
    udid          = coalesce(nullif(excluded.udid, ''), devices.udid),
    serial_number = coalesce(nullif(excluded.serial_number, ''), devices.serial_number),
    model         = coalesce(nullif(excluded.model, ''), devices.model),
    model_name    = coalesce(nullif(excluded.model_name, ''), devices.model_name),
    product_name  = coalesce(nullif(excluded.product_name, ''), devices.product_name),
    device_name   = coalesce(nullif(excluded.device_name, ''), devices.device_name),
    os_version    = coalesce(nullif(excluded.os_version, ''), devices.os_version),
    build_version = coalesce(nullif(excluded.build_version, ''), devices.build_version),
    imei          = coalesce(nullif(excluded.imei, ''), devices.imei),
    meid          = coalesce(nullif(excluded.meid, ''), devices.meid),
    topic         = excluded.topic,
    enrolled      = CASE WHEN $15 THEN devices.enrolled ELSE false END,
    cert_hash     = excluded.cert_hash,
    cert_bound_at = excluded.cert_bound_at,
    last_seen     = excluded.last_seen,
    updated_at    = excluded.updated_at`

// dropQueuedSQL forgets what was queued for a device that enrolls afresh:
// those commands were meant for the installation that is gone. Answered
// entries stay as history.
const dropQueuedSQL = `
DELETE FROM command_queue
WHERE status IN ('Pending', 'NotNow')
  AND enrollment_id IN (SELECT id FROM enrollments WHERE device_id = $1)`

// resetEnrollmentsSQL disables every channel until its TokenUpdate: the old
// push tokens belong to the previous installation.
const resetEnrollmentsSQL = `
UPDATE enrollments SET push_token = NULL, push_magic = '', enabled = false, updated_at = $2
WHERE device_id = $1`

const ensureDeviceChannelSQL = `
INSERT INTO enrollments (id, device_id, topic, enabled, last_seen, created_at, updated_at)
VALUES ($1, $1, $2, false, $3, $3, $3)
ON CONFLICT (id) DO UPDATE SET topic = excluded.topic, last_seen = excluded.last_seen`

// StoreAuthenticate records the device and starts a fresh enrollment: its
// queued commands are dropped, its channels' push tokens cleared and the
// channels disabled until their TokenUpdate, and certHash becomes its
// certificate binding. storage.ErrConflict when certHash is bound to another
// device. Idempotent.
// renewalSQL tells whether a certificate is a renewal bramley issued to
// this very device while it is enrolled.
const renewalSQL = `
SELECT EXISTS (SELECT 1 FROM certificates c JOIN devices d ON d.id = c.device_id
WHERE c.sha256 = $1 AND c.device_id = $2 AND NOT c.revoked AND d.enrolled)`

func (s *Store) StoreAuthenticate(ctx context.Context, msg *mdm.Authenticate, certHash []byte, now time.Time) error {
	id, t := msg.DeviceID(), ts(now)
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var renewal bool
		if err := tx.QueryRow(ctx, renewalSQL, certHash, id).Scan(&renewal); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, upsertDeviceSQL, id, msg.UDID, msg.SerialNumber, msg.Model,
			msg.ModelName, msg.ProductName, msg.DeviceName, msg.OSVersion, msg.BuildVersion, msg.IMEI,
			msg.MEID, msg.Topic, nullBytes(certHash), t, renewal); err != nil {
			if isUnique(err) {
				return fmt.Errorf("certificate is bound to another device: %w", storage.ErrConflict)
			}
			return err
		}
		if renewal {
			// The device installed its renewed enrollment profile: the
			// same enrollment goes on, its queue and tokens intact.
			return nil
		}
		if _, err := tx.Exec(ctx, dropQueuedSQL, id); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, resetEnrollmentsSQL, id, t); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, ensureDeviceChannelSQL, id, msg.Topic, t)
		return err
	})
	if err != nil {
		return fmt.Errorf("storing Authenticate of %s: %w", id, err)
	}
	return nil
}

const enrollDeviceSQL = `UPDATE devices SET enrolled = true, last_seen = $2, updated_at = $2 WHERE id = $1`

// upsertEnrollmentSQL records a TokenUpdate. Apple sends the UnlockToken in
// the first TokenUpdate only, so a later one without it keeps the stored one.
const upsertEnrollmentSQL = `
INSERT INTO enrollments (id, device_id, user_id, user_short_name, user_long_name, topic,
    push_token, push_magic, unlock_token, awaiting_configuration, enabled,
    last_seen, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, true, $11, $11, $11)
ON CONFLICT (id) DO UPDATE SET
    user_id                = excluded.user_id,
    user_short_name        = excluded.user_short_name,
    user_long_name         = excluded.user_long_name,
    topic                  = excluded.topic,
    push_token             = excluded.push_token,
    push_magic             = excluded.push_magic,
    unlock_token           = coalesce(excluded.unlock_token, enrollments.unlock_token),
    awaiting_configuration = excluded.awaiting_configuration,
    enabled                = true,
    last_seen              = excluded.last_seen,
    updated_at             = excluded.updated_at`

// userIDTakenSQL tells whether another managed user of the device holds
// the short name: a Mac's user keeps its UserID (its GUID) for life, so a
// new one under a known short name is a different account, or a forgery.
const userIDTakenSQL = `
SELECT EXISTS (SELECT 1 FROM enrollments
WHERE device_id = $1 AND user_short_name = $2 AND user_id <> $3 AND enabled)`

// StoreTokenUpdate creates or updates the enrollment of the message's
// channel, enables it, resets its push state (clearing a token marked
// invalid) and marks the device enrolled. storage.ErrNotFound when the
// device is unknown; storage.ErrConflict, storing nothing, when a macOS user
// channel names a short name an enabled user of the device holds under
// another UserID.
func (s *Store) StoreTokenUpdate(ctx context.Context, msg *mdm.TokenUpdate, sealedUnlockToken []byte, now time.Time) error {
	deviceID, id, t := msg.DeviceID(), msg.ID(), ts(now)
	u := userOf(msg.Enrollment)
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := mustAffect(tx.Exec(ctx, enrollDeviceSQL, deviceID, t)); err != nil {
			return err
		}
		if macUser(msg.Enrollment) {
			var taken bool
			if err := tx.QueryRow(ctx, userIDTakenSQL, deviceID, u.shortName, u.id).Scan(&taken); err != nil {
				return err
			}
			if taken {
				return fmt.Errorf("user %q has another UserID on this device: %w", u.shortName, storage.ErrConflict)
			}
		}
		if _, err := tx.Exec(ctx, upsertEnrollmentSQL, id, deviceID, u.id, u.shortName, u.longName,
			msg.Topic, msg.Token, msg.PushMagic, nullBytes(sealedUnlockToken), msg.AwaitingConfiguration, t); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, resetPushStateSQL, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("storing TokenUpdate of %s: %w", id, err)
	}
	return nil
}

type user struct{ id, shortName, longName string }

// macUser reports whether e is a macOS user channel, named by its UserID
// and carrying a short name. Shared iPad users share one UserID and User
// Enrollment names its user otherwise; neither is checked for a changed ID.
func macUser(e mdm.Enrollment) bool {
	return e.UserID != "" && e.UserID != mdm.SharedIPadUserID && e.UserShortName != ""
}

// userOf returns the user keys of a user channel, and nothing for the
// device channel. User Enrollment names its user by EnrollmentUserID.
func userOf(e mdm.Enrollment) user {
	if !e.IsUserChannel() {
		return user{}
	}
	u := user{id: e.UserID, shortName: e.UserShortName, longName: e.UserLongName}
	if u.id == "" {
		u.id = e.EnrollmentUserID
	}
	return u
}

// CheckOut disables the enrollment, and for a device channel every user
// channel of the device and the device's enrolled flag. Idempotent;
// storage.ErrNotFound when the enrollment is unknown.
func (s *Store) CheckOut(ctx context.Context, enrollmentID string, now time.Time) error {
	t := ts(now)
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var deviceID string
		if err := tx.QueryRow(ctx, `SELECT device_id FROM enrollments WHERE id = $1`,
			enrollmentID).Scan(&deviceID); err != nil {
			return notFound(err)
		}
		// The device row first, as every check-in write locks it.
		if deviceID != enrollmentID {
			if _, err := tx.Exec(ctx, `UPDATE devices SET last_seen = $2 WHERE id = $1`, deviceID, t); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `UPDATE enrollments SET enabled = false, last_seen = $2, updated_at = $2
				WHERE id = $1`, enrollmentID, t)
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE devices SET enrolled = false, last_seen = $2, updated_at = $2
			WHERE id = $1`, deviceID, t); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE enrollments SET enabled = false, updated_at = $2,
			last_seen = CASE WHEN id = $1 THEN $2 ELSE last_seen END
			WHERE device_id = $1`, deviceID, t)
		return err
	})
	if err != nil {
		return fmt.Errorf("storing CheckOut of %s: %w", enrollmentID, err)
	}
	return nil
}

// StoreBootstrapToken replaces the device's sealed bootstrap token; nil (or
// empty) deletes it. storage.ErrNotFound when the device is unknown.
func (s *Store) StoreBootstrapToken(ctx context.Context, deviceID string, sealed []byte, now time.Time) error {
	err := mustAffect(s.pool.Exec(ctx, `UPDATE devices
		SET bootstrap_token = $2, last_seen = $3, updated_at = $3 WHERE id = $1`,
		deviceID, nullBytes(sealed), ts(now)))
	if err != nil {
		return fmt.Errorf("storing bootstrap token of %s: %w", deviceID, err)
	}
	return nil
}

// BootstrapToken returns the device's sealed bootstrap token;
// storage.ErrNotFound when the device is unknown or has none.
func (s *Store) BootstrapToken(ctx context.Context, deviceID string) ([]byte, error) {
	var tok []byte
	err := s.pool.QueryRow(ctx, `SELECT bootstrap_token FROM devices WHERE id = $1`, deviceID).Scan(&tok)
	if err == nil && tok == nil {
		err = storage.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("reading bootstrap token of %s: %w", deviceID, notFound(err))
	}
	return tok, nil
}
