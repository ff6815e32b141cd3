-- 0008: ADE profile definitions, the UUIDs Apple gave them per server
-- token, the assignment rules, and each device's last assignment. Kept in
-- lockstep with storage/postgres/migrations/0008_ade_profiles.sql.

-- A profile definition (ade.ProfileStore); profile is the ade.Profile as
-- JSON. Definitions never change.
CREATE TABLE ade_profiles (
    id         TEXT    PRIMARY KEY,
    name       TEXT    NOT NULL,
    profile    TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;

-- The UUID Apple gave a profile when it was defined under a token.
CREATE TABLE ade_profile_uuids (
    profile_id   TEXT    NOT NULL REFERENCES ade_profiles (id) ON DELETE CASCADE,
    token_id     TEXT    NOT NULL REFERENCES ade_tokens (id) ON DELETE CASCADE,
    profile_uuid TEXT    NOT NULL,
    defined_at   INTEGER NOT NULL,
    PRIMARY KEY (profile_id, token_id)
) STRICT;

-- The assignment rules in order (ade.AssignmentStore); match_json is the
-- ade.Match as JSON.
CREATE TABLE ade_assignment_rules (
    ord        INTEGER PRIMARY KEY,
    profile_id TEXT    NOT NULL REFERENCES ade_profiles (id),
    match_json TEXT    NOT NULL
) STRICT;

-- What came of the last assignment of a profile to the device.
ALTER TABLE ade_devices ADD COLUMN assign_profile_id TEXT NOT NULL DEFAULT '';
ALTER TABLE ade_devices ADD COLUMN assign_result TEXT NOT NULL DEFAULT '';
ALTER TABLE ade_devices ADD COLUMN assign_time INTEGER;
