package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/bramley-mdm/bramley/ade"
	"github.com/bramley-mdm/bramley/storage"
)

// CreateADEProfile stores a new ADE profile definition (see
// ade.ProfileStore); storage.ErrConflict when its ID is taken.
func (s *Store) CreateADEProfile(ctx context.Context, p ade.ProfileDefinition) error {
	body, err := json.Marshal(p.Profile)
	if err != nil {
		return fmt.Errorf("encoding ADE profile: %w", err)
	}
	err = mustAffect(s.pool.Exec(ctx, `INSERT INTO ade_profiles (id, name, profile, created_at, updated_at)
		VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`,
		p.ID, p.Name, string(body), ts(p.CreatedAt), ts(p.UpdatedAt)))
	if errors.Is(err, storage.ErrNotFound) {
		err = storage.ErrConflict
	}
	if err != nil {
		return fmt.Errorf("creating ADE profile %s: %w", p.ID, err)
	}
	return nil
}

// ADEProfiles returns every ADE profile definition, oldest first, with
// its profile UUIDs.
func (s *Store) ADEProfiles(ctx context.Context) ([]ade.ProfileDefinition, error) {
	return s.adeProfiles(ctx, "")
}

// ADEProfile returns one ADE profile definition with its profile UUIDs;
// storage.ErrNotFound when missing.
func (s *Store) ADEProfile(ctx context.Context, id string) (ade.ProfileDefinition, error) {
	ps, err := s.adeProfiles(ctx, id)
	if err != nil {
		return ade.ProfileDefinition{}, err
	}
	if len(ps) == 0 {
		return ade.ProfileDefinition{}, fmt.Errorf("reading ADE profile %s: %w", id, storage.ErrNotFound)
	}
	return ps[0], nil
}

// adeProfiles reads the definition id, or all when id is "", with their
// UUIDs in one query.
func (s *Store) adeProfiles(ctx context.Context, id string) ([]ade.ProfileDefinition, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT p.id, p.name, p.profile, p.created_at, p.updated_at, u.token_id, u.profile_uuid
		FROM ade_profiles p LEFT JOIN ade_profile_uuids u ON u.profile_id = p.id
		WHERE $1 = '' OR p.id = $1
		ORDER BY p.created_at, p.id`, id)
	if err != nil {
		return nil, fmt.Errorf("listing ADE profiles: %w", err)
	}
	defer rows.Close()
	var out []ade.ProfileDefinition
	for rows.Next() {
		var p ade.ProfileDefinition
		var body string
		var tokenID, uuid pgtype.Text
		if err := rows.Scan(&p.ID, &p.Name, &body, &p.CreatedAt, &p.UpdatedAt, &tokenID, &uuid); err != nil {
			return nil, fmt.Errorf("listing ADE profiles: %w", err)
		}
		if n := len(out); n == 0 || out[n-1].ID != p.ID {
			if err := json.Unmarshal([]byte(body), &p.Profile); err != nil {
				return nil, fmt.Errorf("decoding ADE profile %s: %w", p.ID, err)
			}
			p.CreatedAt, p.UpdatedAt, p.ProfileUUIDs = p.CreatedAt.UTC(), p.UpdatedAt.UTC(), map[string]string{}
			out = append(out, p)
		}
		if tokenID.Valid {
			out[len(out)-1].ProfileUUIDs[tokenID.String] = uuid.String
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing ADE profiles: %w", err)
	}
	return out, nil
}

// SetADEProfileUUID records the UUID Apple gave the profile under the
// token; storage.ErrNotFound when either is unknown. Idempotent.
func (s *Store) SetADEProfileUUID(ctx context.Context, profileID, tokenID, uuid string, at time.Time) error {
	err := mustAffect(s.pool.Exec(ctx, `
		INSERT INTO ade_profile_uuids (profile_id, token_id, profile_uuid, defined_at)
		SELECT p.id, t.id, $3::text, $4::timestamptz FROM ade_profiles p, ade_tokens t WHERE p.id = $1 AND t.id = $2
		ON CONFLICT (profile_id, token_id) DO UPDATE SET
		    profile_uuid = excluded.profile_uuid, defined_at = excluded.defined_at`,
		profileID, tokenID, uuid, ts(at)))
	if err != nil {
		return fmt.Errorf("recording ADE profile UUID of %s under %s: %w", profileID, tokenID, err)
	}
	return nil
}

// SetAssignmentRules replaces the ADE assignment rules (see
// ade.AssignmentStore); storage.ErrNotFound when one names an unknown
// profile. Idempotent.
func (s *Store) SetAssignmentRules(ctx context.Context, rules []ade.AssignmentRule) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM ade_assignment_rules`); err != nil {
			return err
		}
		for i, r := range rules {
			m, err := json.Marshal(r.Match)
			if err != nil {
				return err
			}
			if err := mustAffect(tx.Exec(ctx, `INSERT INTO ade_assignment_rules (ord, profile_id, match_json)
				SELECT $1::integer, id, $3::text FROM ade_profiles WHERE id = $2`, i, r.ProfileID, string(m))); err != nil {
				return fmt.Errorf("rule %d, profile %s: %w", i, r.ProfileID, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("storing ADE assignment rules: %w", err)
	}
	return nil
}

// AssignmentRules returns the ADE assignment rules in order.
func (s *Store) AssignmentRules(ctx context.Context) ([]ade.AssignmentRule, error) {
	rows, err := s.pool.Query(ctx, `SELECT profile_id, match_json FROM ade_assignment_rules ORDER BY ord`)
	if err != nil {
		return nil, fmt.Errorf("listing ADE assignment rules: %w", err)
	}
	defer rows.Close()
	var out []ade.AssignmentRule
	for rows.Next() {
		var r ade.AssignmentRule
		var m string
		if err := rows.Scan(&r.ProfileID, &m); err != nil {
			return nil, fmt.Errorf("listing ADE assignment rules: %w", err)
		}
		if err := json.Unmarshal([]byte(m), &r.Match); err != nil {
			return nil, fmt.Errorf("decoding ADE assignment rule: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing ADE assignment rules: %w", err)
	}
	return out, nil
}

// recordAssignmentSQL records an assignment's outcome; a success also
// sets what Apple's next sync will report.
const recordAssignmentSQL = `
UPDATE ade_devices SET assign_profile_id = $3, assign_result = $5, assign_time = $6,
    profile_uuid = CASE WHEN $5 = 'SUCCESS' THEN $4 ELSE profile_uuid END,
    profile_status = CASE WHEN $5 = 'SUCCESS' THEN 'assigned' ELSE profile_status END,
    profile_assign_time = CASE WHEN $5 = 'SUCCESS' THEN $6 ELSE profile_assign_time END
WHERE token_id = $1 AND serial_number = $2`

// RecordAssignments records what came of assigning profiles to the
// token's devices (see ade.AssignmentStore), in one transaction. Idempotent.
func (s *Store) RecordAssignments(ctx context.Context, tokenID string, results []ade.Assignment) error {
	if len(results) == 0 {
		return nil
	}
	b := &pgx.Batch{}
	for _, a := range results {
		b.Queue(recordAssignmentSQL, tokenID, a.SerialNumber, a.ProfileID, a.ProfileUUID, a.Result, ts(a.At))
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil {
		return fmt.Errorf("recording ADE assignments of %s: %w", tokenID, err)
	}
	return nil
}

// Lock takes the session-level advisory lock name on a connection of its
// own, held until unlock (see ade.Locker): one replica runs what it
// guards, the others find ok false. Should the connection die, PostgreSQL
// releases the lock with it.
func (s *Store) Lock(ctx context.Context, name string) (unlock func(), ok bool, err error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("acquiring a connection for lock %s: %w", name, err)
	}
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(hashtextextended($1, 0))`, name).Scan(&ok); err != nil {
		conn.Release()
		return nil, false, fmt.Errorf("taking lock %s: %w", name, err)
	}
	if !ok {
		conn.Release()
		return nil, false, nil
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := conn.Exec(ctx, `SELECT pg_advisory_unlock(hashtextextended($1, 0))`, name); err != nil {
			// A connection still holding the lock must not go back to the pool.
			_ = conn.Conn().Close(ctx)
		}
		conn.Release()
	}, true, nil
}
