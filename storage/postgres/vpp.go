package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bramley-mdm/bramley/vpp"
)

// PutContentToken stores a location's content token, replacing the one
// stored for the location but keeping its created_at (vpp.TokenStore).
// Idempotent.
func (s *Store) PutContentToken(ctx context.Context, t vpp.TokenRecord) error {
	_, err := s.pool.Exec(ctx, `
		INSERT INTO vpp_tokens (location, location_name, org_name, sealed, expires_at, claimed, created_at, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
		ON CONFLICT (location) DO UPDATE SET
		    location_name = excluded.location_name, org_name = excluded.org_name, sealed = excluded.sealed,
		    expires_at = excluded.expires_at, claimed = excluded.claimed, updated_at = excluded.updated_at`,
		t.Location, t.LocationName, t.OrgName, t.Sealed, ts(t.ExpiresAt), t.Claimed, ts(t.CreatedAt), ts(t.UpdatedAt))
	if err != nil {
		return fmt.Errorf("storing content token: %w", err)
	}
	return nil
}

// ContentTokens returns every content token, the most recently updated first.
func (s *Store) ContentTokens(ctx context.Context) ([]vpp.TokenRecord, error) {
	rows, err := s.pool.Query(ctx, `SELECT location, location_name, org_name, sealed, expires_at, claimed,
		created_at, updated_at FROM vpp_tokens ORDER BY updated_at DESC, location`)
	if err != nil {
		return nil, fmt.Errorf("listing content tokens: %w", err)
	}
	defer rows.Close()
	var out []vpp.TokenRecord
	for rows.Next() {
		var t vpp.TokenRecord
		if err := rows.Scan(&t.Location, &t.LocationName, &t.OrgName, &t.Sealed, &t.ExpiresAt, &t.Claimed,
			&t.CreatedAt, &t.UpdatedAt); err != nil {
			return nil, fmt.Errorf("listing content tokens: %w", err)
		}
		t.ExpiresAt, t.CreatedAt, t.UpdatedAt = t.ExpiresAt.UTC(), t.CreatedAt.UTC(), t.UpdatedAt.UTC()
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing content tokens: %w", err)
	}
	return out, nil
}

const vppUserColumns = `location, user_id, client_user_id, email, status, id_hash, invite_code, created_at`

func scanVPPUser(row pgx.Row) (vpp.UserRecord, error) {
	var u vpp.UserRecord
	var status string
	err := row.Scan(&u.Location, &u.UserID, &u.ClientUserID, &u.Email, &status, &u.IDHash, &u.InviteCode, &u.CreatedAt)
	u.Status, u.CreatedAt = vpp.UserStatus(status), u.CreatedAt.UTC()
	return u, err
}

func (s *Store) vppUsers(ctx context.Context, q string, args ...any) ([]vpp.UserRecord, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+vppUserColumns+` FROM vpp_users WHERE `+q+` ORDER BY created_at, user_id`, args...)
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
	u, err := scanVPPUser(s.pool.QueryRow(ctx, `SELECT `+vppUserColumns+` FROM vpp_users
		WHERE location = $1 AND user_id = $2`, location, userID))
	if err != nil {
		return vpp.UserRecord{}, fmt.Errorf("reading Apps and Books user %s: %w", userID, notFound(err))
	}
	return u, nil
}

// CreateVPPUser stores rec unless the location has a record for its user,
// and returns the stored record (vpp.UserStore). Idempotent.
func (s *Store) CreateVPPUser(ctx context.Context, rec vpp.UserRecord) (vpp.UserRecord, error) {
	// The no-op update makes RETURNING give the row another replica
	// inserted first.
	u, err := scanVPPUser(s.pool.QueryRow(ctx, `INSERT INTO vpp_users (`+vppUserColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
		ON CONFLICT (location, user_id) DO UPDATE SET location = excluded.location
		RETURNING `+vppUserColumns,
		rec.Location, rec.UserID, rec.ClientUserID, rec.Email, string(rec.Status), rec.IDHash, rec.InviteCode, ts(rec.CreatedAt)))
	if err != nil {
		return vpp.UserRecord{}, fmt.Errorf("creating Apps and Books user: %w", err)
	}
	return u, nil
}

// UpdateVPPUser records what Apple says of a user and returns the record
// and the state before (vpp.UserStore); storage.ErrNotFound when missing.
func (s *Store) UpdateVPPUser(ctx context.Context, location, clientUserID string, st vpp.UserState) (vpp.UserRecord, vpp.UserState, error) {
	var rec vpp.UserRecord
	var prev vpp.UserState
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		rec, err = scanVPPUser(tx.QueryRow(ctx, `SELECT `+vppUserColumns+` FROM vpp_users
			WHERE location = $1 AND client_user_id = $2 FOR UPDATE`, location, clientUserID))
		if err != nil {
			return notFound(err)
		}
		prev = rec.UserState
		rec.Status, rec.IDHash = st.Status, st.IDHash
		if st.InviteCode != "" {
			rec.InviteCode = st.InviteCode
		}
		_, err = tx.Exec(ctx, `UPDATE vpp_users SET status = $3, id_hash = $4, invite_code = $5
			WHERE location = $1 AND client_user_id = $2`, location, clientUserID, string(rec.Status), rec.IDHash, rec.InviteCode)
		return err
	})
	if err != nil {
		return vpp.UserRecord{}, vpp.UserState{}, fmt.Errorf("updating Apps and Books user: %w", err)
	}
	return rec, prev, nil
}

// VPPUsersByIDHash returns the location's users with idHash (vpp.UserStore).
func (s *Store) VPPUsersByIDHash(ctx context.Context, location, idHash string) ([]vpp.UserRecord, error) {
	return s.vppUsers(ctx, `location = $1 AND id_hash = $2`, location, idHash)
}

// VPPUsers returns the location's users, oldest first (vpp.UserLister).
func (s *Store) VPPUsers(ctx context.Context, location string) ([]vpp.UserRecord, error) {
	return s.vppUsers(ctx, `location = $1`, location)
}

const vppPlanColumns = `id, location, username, adam_id, kind, status, result, event_id, error, created_at, updated_at`

func scanPlan(row pgx.Row) (vpp.Plan, error) {
	var p vpp.Plan
	var kind, status, result string
	err := row.Scan(&p.ID, &p.Location, &p.Username, &p.AdamID, &kind, &status, &result, &p.EventID, &p.Error,
		&p.CreatedAt, &p.UpdatedAt)
	p.Kind, p.Status, p.Result = vpp.Kind(kind), vpp.PlanStatus(status), vpp.Result(result)
	p.CreatedAt, p.UpdatedAt = p.CreatedAt.UTC(), p.UpdatedAt.UTC()
	return p, err
}

// CreatePlan stores p unless the location has a plan for its username and
// item, and returns the stored plan (vpp.PlanStore). Idempotent.
func (s *Store) CreatePlan(ctx context.Context, p vpp.Plan) (vpp.Plan, error) {
	stored, err := scanPlan(s.pool.QueryRow(ctx, `INSERT INTO vpp_plans (`+vppPlanColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
		ON CONFLICT (location, username, adam_id) DO UPDATE SET location = excluded.location
		RETURNING `+vppPlanColumns,
		p.ID, p.Location, p.Username, p.AdamID, string(p.Kind), string(p.Status), string(p.Result), p.EventID, p.Error,
		ts(p.CreatedAt), ts(p.UpdatedAt)))
	if err != nil {
		return vpp.Plan{}, fmt.Errorf("creating assignment plan: %w", err)
	}
	return stored, nil
}

// UpdatePlan records a plan's progress; storage.ErrNotFound when missing
// (vpp.PlanStore).
func (s *Store) UpdatePlan(ctx context.Context, p vpp.Plan) error {
	tag, err := s.pool.Exec(ctx, `UPDATE vpp_plans SET status = $2, result = $3, event_id = $4, error = $5,
		updated_at = $6 WHERE id = $1`, p.ID, string(p.Status), string(p.Result), p.EventID, p.Error, ts(p.UpdatedAt))
	if err := mustAffect(tag, err); err != nil {
		return fmt.Errorf("updating assignment plan %s: %w", p.ID, err)
	}
	return nil
}

// Plans returns the plans of username (all with ""), oldest first, with
// their installs (vpp.PlanStore).
func (s *Store) Plans(ctx context.Context, username string) ([]vpp.Plan, error) {
	var out []vpp.Plan
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{AccessMode: pgx.ReadOnly, IsoLevel: pgx.RepeatableRead}, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT `+vppPlanColumns+` FROM vpp_plans
			WHERE $1 = '' OR username = $1 ORDER BY created_at, id`, username)
		if err != nil {
			return err
		}
		idx := map[string]int{}
		for rows.Next() {
			p, err := scanPlan(rows)
			if err != nil {
				rows.Close()
				return err
			}
			idx[p.ID] = len(out)
			out = append(out, p)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		irows, err := tx.Query(ctx, `SELECT i.plan_id, i.device_id, i.command_uuid, i.created_at
			FROM vpp_installs i JOIN vpp_plans p ON p.id = i.plan_id
			WHERE $1 = '' OR p.username = $1 ORDER BY i.created_at, i.device_id`, username)
		if err != nil {
			return err
		}
		defer irows.Close()
		for irows.Next() {
			var planID string
			var in vpp.Install
			if err := irows.Scan(&planID, &in.DeviceID, &in.CommandUUID, &in.CreatedAt); err != nil {
				return err
			}
			in.CreatedAt = in.CreatedAt.UTC()
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
	tag, err := s.pool.Exec(ctx, `INSERT INTO vpp_installs (plan_id, device_id, command_uuid, created_at)
		VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`, planID, in.DeviceID, in.CommandUUID, ts(in.CreatedAt))
	if err != nil {
		return false, fmt.Errorf("recording install: %w", err)
	}
	return tag.RowsAffected() == 1, nil
}

// DeleteInstall forgets an install; missing is not an error (vpp.InstallStore).
func (s *Store) DeleteInstall(ctx context.Context, planID, deviceID string) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM vpp_installs WHERE plan_id = $1 AND device_id = $2`,
		planID, deviceID); err != nil {
		return fmt.Errorf("deleting install: %w", err)
	}
	return nil
}

// SetDeviceOwner records the person a device belongs to (vpp.OwnerStore).
// Idempotent.
func (s *Store) SetDeviceOwner(ctx context.Context, deviceID, username string, now time.Time) error {
	if _, err := s.pool.Exec(ctx, `INSERT INTO device_owners (device_id, username, updated_at) VALUES ($1, $2, $3)
		ON CONFLICT (device_id) DO UPDATE SET username = excluded.username, updated_at = excluded.updated_at`,
		deviceID, username, ts(now)); err != nil {
		return fmt.Errorf("setting owner of %s: %w", deviceID, err)
	}
	return nil
}

// DeviceOwner returns a device's owner; storage.ErrNotFound when it has
// none (vpp.OwnerStore).
func (s *Store) DeviceOwner(ctx context.Context, deviceID string) (string, error) {
	var u string
	if err := s.pool.QueryRow(ctx, `SELECT username FROM device_owners WHERE device_id = $1`, deviceID).Scan(&u); err != nil {
		return "", fmt.Errorf("reading owner of %s: %w", deviceID, notFound(err))
	}
	return u, nil
}

// OwnedDevices returns the devices of a person (vpp.OwnerStore).
func (s *Store) OwnedDevices(ctx context.Context, username string) ([]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT device_id FROM device_owners WHERE username = $1 ORDER BY device_id`, username)
	if err != nil {
		return nil, fmt.Errorf("listing devices of %s: %w", username, err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("listing devices of %s: %w", username, err)
	}
	return ids, nil
}
