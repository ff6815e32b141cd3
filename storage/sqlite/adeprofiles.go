package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

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
	res, err := s.w.ExecContext(ctx, `INSERT INTO ade_profiles (id, name, profile, created_at, updated_at)
		VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING`,
		p.ID, p.Name, string(body), micros(p.CreatedAt), micros(p.UpdatedAt))
	if err := mustAffect(res, err); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			err = storage.ErrConflict
		}
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

// adeProfiles reads the definition id, or all when id is "".
func (s *Store) adeProfiles(ctx context.Context, id string) ([]ade.ProfileDefinition, error) {
	var out []ade.ProfileDefinition
	err := s.read(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT id, name, profile, created_at, updated_at FROM ade_profiles
			WHERE ?1 = '' OR id = ?1 ORDER BY created_at, id`, id)
		if err != nil {
			return err
		}
		defer rows.Close()
		index := map[string]int{}
		for rows.Next() {
			var p ade.ProfileDefinition
			var body string
			var created, updated int64
			if err := rows.Scan(&p.ID, &p.Name, &body, &created, &updated); err != nil {
				return err
			}
			if err := json.Unmarshal([]byte(body), &p.Profile); err != nil {
				return fmt.Errorf("decoding ADE profile %s: %w", p.ID, err)
			}
			p.CreatedAt, p.UpdatedAt, p.ProfileUUIDs = fromMicros(created), fromMicros(updated), map[string]string{}
			index[p.ID] = len(out)
			out = append(out, p)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		rows, err = tx.QueryContext(ctx, `SELECT profile_id, token_id, profile_uuid FROM ade_profile_uuids
			WHERE ?1 = '' OR profile_id = ?1`, id)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var pid, tid, uuid string
			if err := rows.Scan(&pid, &tid, &uuid); err != nil {
				return err
			}
			if i, ok := index[pid]; ok {
				out[i].ProfileUUIDs[tid] = uuid
			}
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("listing ADE profiles: %w", err)
	}
	return out, nil
}

// SetADEProfileUUID records the UUID Apple gave the profile under the
// token; storage.ErrNotFound when either is unknown. Idempotent.
func (s *Store) SetADEProfileUUID(ctx context.Context, profileID, tokenID, uuid string, at time.Time) error {
	res, err := s.w.ExecContext(ctx, `
		INSERT INTO ade_profile_uuids (profile_id, token_id, profile_uuid, defined_at)
		SELECT p.id, t.id, ?3, ?4 FROM ade_profiles p, ade_tokens t WHERE p.id = ?1 AND t.id = ?2
		ON CONFLICT (profile_id, token_id) DO UPDATE SET
		    profile_uuid = excluded.profile_uuid, defined_at = excluded.defined_at`,
		profileID, tokenID, uuid, micros(at))
	if err := mustAffect(res, err); err != nil {
		return fmt.Errorf("recording ADE profile UUID of %s under %s: %w", profileID, tokenID, err)
	}
	return nil
}

// SetAssignmentRules replaces the ADE assignment rules (see
// ade.AssignmentStore); storage.ErrNotFound when one names an unknown
// profile. Idempotent.
func (s *Store) SetAssignmentRules(ctx context.Context, rules []ade.AssignmentRule) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM ade_assignment_rules`); err != nil {
			return err
		}
		for i, r := range rules {
			m, err := json.Marshal(r.Match)
			if err != nil {
				return err
			}
			if err := mustAffect(tx.ExecContext(ctx, `INSERT INTO ade_assignment_rules (ord, profile_id, match_json)
				SELECT ?1, id, ?3 FROM ade_profiles WHERE id = ?2`, i, r.ProfileID, string(m))); err != nil {
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
	rows, err := s.r.QueryContext(ctx, `SELECT profile_id, match_json FROM ade_assignment_rules ORDER BY ord`)
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
UPDATE ade_devices SET assign_profile_id = ?3, assign_result = ?5, assign_time = ?6,
    profile_uuid = CASE WHEN ?5 = 'SUCCESS' THEN ?4 ELSE profile_uuid END,
    profile_status = CASE WHEN ?5 = 'SUCCESS' THEN 'assigned' ELSE profile_status END,
    profile_assign_time = CASE WHEN ?5 = 'SUCCESS' THEN ?6 ELSE profile_assign_time END
WHERE token_id = ?1 AND serial_number = ?2`

// RecordAssignments records what came of assigning profiles to the
// token's devices (see ade.AssignmentStore), in one transaction. Idempotent.
func (s *Store) RecordAssignments(ctx context.Context, tokenID string, results []ade.Assignment) error {
	if len(results) == 0 {
		return nil
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		for _, a := range results {
			if _, err := tx.ExecContext(ctx, recordAssignmentSQL, tokenID, a.SerialNumber, a.ProfileID,
				a.ProfileUUID, a.Result, micros(a.At)); err != nil {
				return fmt.Errorf("device %s: %w", a.SerialNumber, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("recording ADE assignments of %s: %w", tokenID, err)
	}
	return nil
}

// Lock takes the lock name; SQLite serves one replica, so it always has
// it (see ade.Locker).
func (s *Store) Lock(_ context.Context, _ string) (unlock func(), ok bool, err error) {
	return func() {}, true, nil
}
