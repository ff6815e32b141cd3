package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/bramley-mdm/bramley/vpp"
)

// PutContentToken stores a location's content token, replacing the one
// stored for the location but keeping its created_at (vpp.TokenStore).
// Idempotent.
func (s *Store) PutContentToken(ctx context.Context, t vpp.TokenRecord) error {
	_, err := s.w.ExecContext(ctx, `
		INSERT INTO vpp_tokens (location, location_name, org_name, sealed, expires_at, claimed, created_at, updated_at)
		VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
		ON CONFLICT (location) DO UPDATE SET
		    location_name = excluded.location_name, org_name = excluded.org_name, sealed = excluded.sealed,
		    expires_at = excluded.expires_at, claimed = excluded.claimed, updated_at = excluded.updated_at`,
		t.Location, t.LocationName, t.OrgName, t.Sealed, micros(t.ExpiresAt), t.Claimed, micros(t.CreatedAt), micros(t.UpdatedAt))
	if err != nil {
		return fmt.Errorf("storing content token: %w", err)
	}
	return nil
}

// ContentTokens returns every content token, the most recently updated first.
func (s *Store) ContentTokens(ctx context.Context) ([]vpp.TokenRecord, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT location, location_name, org_name, sealed, expires_at, claimed,
		created_at, updated_at FROM vpp_tokens ORDER BY updated_at DESC, location`)
	if err != nil {
		return nil, fmt.Errorf("listing content tokens: %w", err)
	}
	defer rows.Close()
	var out []vpp.TokenRecord
	for rows.Next() {
		var t vpp.TokenRecord
		var exp, created, updated int64
		if err := rows.Scan(&t.Location, &t.LocationName, &t.OrgName, &t.Sealed, &exp, &t.Claimed, &created, &updated); err != nil {
			return nil, fmt.Errorf("listing content tokens: %w", err)
		}
		t.ExpiresAt, t.CreatedAt, t.UpdatedAt = fromMicros(exp), fromMicros(created), fromMicros(updated)
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing content tokens: %w", err)
	}
	return out, nil
}

const vppUserColumns = `location, user_id, client_user_id, email, status, id_hash, invite_code, created_at`

func scanVPPUser(row interface{ Scan(...any) error }) (vpp.UserRecord, error) {
	var u vpp.UserRecord
	var created int64
	err := row.Scan(&u.Location, &u.UserID, &u.ClientUserID, &u.Email, &u.Status, &u.IDHash, &u.InviteCode, &created)
	u.CreatedAt = fromMicros(created)
	return u, err
}

func (s *Store) vppUsers(ctx context.Context, q string, args ...any) ([]vpp.UserRecord, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+vppUserColumns+` FROM vpp_users WHERE `+q+` ORDER BY created_at, user_id`, args...)
	if err != nil {
		return nil, fmt.Errorf("listing Apps and Books users: %w", err)
	}
	defer rows.Close()
	var out []vpp.UserRecord
	for rows.Next() {
		u, err := scanVPPUser(rows)
		if err != nil {
			return nil, fmt.Errorf("listing Apps and Books users: %w", err)
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing Apps and Books users: %w", err)
	}
	return out, nil
}

// VPPUser returns the record of a user at a location; storage.ErrNotFound
// when missing (vpp.UserStore).
func (s *Store) VPPUser(ctx context.Context, location, userID string) (vpp.UserRecord, error) {
	u, err := scanVPPUser(s.r.QueryRowContext(ctx, `SELECT `+vppUserColumns+` FROM vpp_users
		WHERE location = ?1 AND user_id = ?2`, location, userID))
	if err != nil {
		return vpp.UserRecord{}, fmt.Errorf("reading Apps and Books user %s: %w", userID, notFound(err))
	}
	return u, nil
}

// CreateVPPUser stores rec unless the location has a record for its user,
// and returns the stored record (vpp.UserStore). Idempotent.
func (s *Store) CreateVPPUser(ctx context.Context, rec vpp.UserRecord) (vpp.UserRecord, error) {
	var stored vpp.UserRecord
	err := s.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO vpp_users (`+vppUserColumns+`)
			VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (location, user_id) DO NOTHING`,
			rec.Location, rec.UserID, rec.ClientUserID, rec.Email, rec.Status, rec.IDHash, rec.InviteCode,
			micros(rec.CreatedAt)); err != nil {
			return err
		}
		var err error
		stored, err = scanVPPUser(tx.QueryRowContext(ctx, `SELECT `+vppUserColumns+` FROM vpp_users
			WHERE location = ?1 AND user_id = ?2`, rec.Location, rec.UserID))
		return err
	})
	if err != nil {
		return vpp.UserRecord{}, fmt.Errorf("creating Apps and Books user: %w", err)
	}
	return stored, nil
}

// UpdateVPPUser records what Apple says of a user and returns the record
// and the state before (vpp.UserStore); storage.ErrNotFound when missing.
func (s *Store) UpdateVPPUser(ctx context.Context, location, clientUserID string, st vpp.UserState) (vpp.UserRecord, vpp.UserState, error) {
	var rec vpp.UserRecord
	var prev vpp.UserState
	err := s.write(ctx, func(tx *sql.Tx) error {
		var err error
		rec, err = scanVPPUser(tx.QueryRowContext(ctx, `SELECT `+vppUserColumns+` FROM vpp_users
			WHERE location = ?1 AND client_user_id = ?2`, location, clientUserID))
		if err != nil {
			return notFound(err)
		}
		prev = rec.UserState
		rec.Status, rec.IDHash = st.Status, st.IDHash
		if st.InviteCode != "" {
			rec.InviteCode = st.InviteCode
		}
		_, err = tx.ExecContext(ctx, `UPDATE vpp_users SET status = ?3, id_hash = ?4, invite_code = ?5
			WHERE location = ?1 AND client_user_id = ?2`, location, clientUserID, rec.Status, rec.IDHash, rec.InviteCode)
		return err
	})
	if err != nil {
		return vpp.UserRecord{}, vpp.UserState{}, fmt.Errorf("updating Apps and Books user: %w", err)
	}
	return rec, prev, nil
}

// VPPUsersByIDHash returns the location's users with idHash (vpp.UserStore).
func (s *Store) VPPUsersByIDHash(ctx context.Context, location, idHash string) ([]vpp.UserRecord, error) {
	return s.vppUsers(ctx, `location = ?1 AND id_hash = ?2`, location, idHash)
}

// VPPUsers returns the location's users, oldest first (vpp.UserLister).
func (s *Store) VPPUsers(ctx context.Context, location string) ([]vpp.UserRecord, error) {
	return s.vppUsers(ctx, `location = ?1`, location)
}

const vppPlanColumns = `id, location, username, adam_id, kind, status, result, event_id, error, created_at, updated_at`

func scanPlan(row interface{ Scan(...any) error }) (vpp.Plan, error) {
	var p vpp.Plan
	var created, updated int64
	err := row.Scan(&p.ID, &p.Location, &p.Username, &p.AdamID, &p.Kind, &p.Status, &p.Result, &p.EventID, &p.Error,
		&created, &updated)
	p.CreatedAt, p.UpdatedAt = fromMicros(created), fromMicros(updated)
	return p, err
}

// CreatePlan stores p unless the location has a plan for its username and
// item, and returns the stored plan (vpp.PlanStore). Idempotent.
func (s *Store) CreatePlan(ctx context.Context, p vpp.Plan) (vpp.Plan, error) {
	var stored vpp.Plan
	err := s.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO vpp_plans (`+vppPlanColumns+`)
			VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) ON CONFLICT (location, username, adam_id) DO NOTHING`,
			p.ID, p.Location, p.Username, p.AdamID, p.Kind, p.Status, p.Result, p.EventID, p.Error,
			micros(p.CreatedAt), micros(p.UpdatedAt)); err != nil {
			return err
		}
		var err error
		stored, err = scanPlan(tx.QueryRowContext(ctx, `SELECT `+vppPlanColumns+` FROM vpp_plans
			WHERE location = ?1 AND username = ?2 AND adam_id = ?3`, p.Location, p.Username, p.AdamID))
		return err
	})
	if err != nil {
		return vpp.Plan{}, fmt.Errorf("creating assignment plan: %w", err)
	}
	return stored, nil
}

// UpdatePlan records a plan's progress; storage.ErrNotFound when missing
// (vpp.PlanStore).
func (s *Store) UpdatePlan(ctx context.Context, p vpp.Plan) error {
	res, err := s.w.ExecContext(ctx, `UPDATE vpp_plans SET status = ?2, result = ?3, event_id = ?4, error = ?5,
		updated_at = ?6 WHERE id = ?1`, p.ID, p.Status, p.Result, p.EventID, p.Error, micros(p.UpdatedAt))
	if err := mustAffect(res, err); err != nil {
		return fmt.Errorf("updating assignment plan %s: %w", p.ID, err)
	}
	return nil
}

// Plans returns the plans of username (all with ""), oldest first, with
// their installs (vpp.PlanStore).
func (s *Store) Plans(ctx context.Context, username string) ([]vpp.Plan, error) {
	var out []vpp.Plan
	err := s.read(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT `+vppPlanColumns+` FROM vpp_plans
			WHERE ?1 = '' OR username = ?1 ORDER BY created_at, id`, username)
		if err != nil {
			return err
		}
		defer rows.Close()
		idx := map[string]int{}
		for rows.Next() {
			p, err := scanPlan(rows)
			if err != nil {
				return err
			}
			idx[p.ID] = len(out)
			out = append(out, p)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		rows.Close()
		irows, err := tx.QueryContext(ctx, `SELECT i.plan_id, i.device_id, i.command_uuid, i.created_at
			FROM vpp_installs i JOIN vpp_plans p ON p.id = i.plan_id
			WHERE ?1 = '' OR p.username = ?1 ORDER BY i.created_at, i.device_id`, username)
		if err != nil {
			return err
		}
		defer irows.Close()
		for irows.Next() {
			var planID string
			var in vpp.Install
			var created int64
			if err := irows.Scan(&planID, &in.DeviceID, &in.CommandUUID, &created); err != nil {
				return err
			}
			in.CreatedAt = fromMicros(created)
			if i, ok := idx[planID]; ok {
				out[i].Installs = append(out[i].Installs, in)
			}
		}
		return irows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("listing assignment plans: %w", err)
	}
	return out, nil
}

// RecordInstall records that the plan's item was queued for a device,
// unless it was already; it reports whether it recorded (vpp.InstallStore).
func (s *Store) RecordInstall(ctx context.Context, planID string, in vpp.Install) (bool, error) {
	res, err := s.w.ExecContext(ctx, `INSERT INTO vpp_installs (plan_id, device_id, command_uuid, created_at)
		VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING`, planID, in.DeviceID, in.CommandUUID, micros(in.CreatedAt))
	if err != nil {
		return false, fmt.Errorf("recording install: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("recording install: %w", err)
	}
	return n == 1, nil
}

// DeleteInstall forgets an install; missing is not an error (vpp.InstallStore).
func (s *Store) DeleteInstall(ctx context.Context, planID, deviceID string) error {
	if _, err := s.w.ExecContext(ctx, `DELETE FROM vpp_installs WHERE plan_id = ?1 AND device_id = ?2`,
		planID, deviceID); err != nil {
		return fmt.Errorf("deleting install: %w", err)
	}
	return nil
}

// SetDeviceOwner records the person a device belongs to (vpp.OwnerStore).
// Idempotent.
func (s *Store) SetDeviceOwner(ctx context.Context, deviceID, username string, now time.Time) error {
	if _, err := s.w.ExecContext(ctx, `INSERT INTO device_owners (device_id, username, updated_at) VALUES (?1, ?2, ?3)
		ON CONFLICT (device_id) DO UPDATE SET username = excluded.username, updated_at = excluded.updated_at`,
		deviceID, username, micros(now)); err != nil {
		return fmt.Errorf("setting owner of %s: %w", deviceID, err)
	}
	return nil
}

// DeviceOwner returns a device's owner; storage.ErrNotFound when it has
// none (vpp.OwnerStore).
func (s *Store) DeviceOwner(ctx context.Context, deviceID string) (string, error) {
	var u string
	if err := s.r.QueryRowContext(ctx, `SELECT username FROM device_owners WHERE device_id = ?1`, deviceID).Scan(&u); err != nil {
		return "", fmt.Errorf("reading owner of %s: %w", deviceID, notFound(err))
	}
	return u, nil
}

// OwnedDevices returns the devices of a person (vpp.OwnerStore).
func (s *Store) OwnedDevices(ctx context.Context, username string) ([]string, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT device_id FROM device_owners WHERE username = ?1 ORDER BY device_id`, username)
	if err != nil {
		return nil, fmt.Errorf("listing devices of %s: %w", username, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("listing devices of %s: %w", username, err)
		}
		out = append(out, id)
	}
	return out, rows.Err()
}
