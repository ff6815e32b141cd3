-- 0008: ADE profile definitions, the UUIDs Apple gave them per server
-- token, the assignment rules, and each device's last assignment. Kept in
-- lockstep with storage/sqlite/migrations/0008_ade_profiles.sql.

-- A profile definition (ade.ProfileStore); profile is the ade.Profile as
-- JSON, kept as sent. Definitions never change.
CREATE TABLE ade_profiles (
    id         text        PRIMARY KEY,
    name       text        NOT NULL,
    profile    text        NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);

-- The UUID Apple gave a profile when it was defined under a token.
CREATE TABLE ade_profile_uuids (
    profile_id   text        NOT NULL REFERENCES ade_profiles (id) ON DELETE CASCADE,
    token_id     text        NOT NULL REFERENCES ade_tokens (id) ON DELETE CASCADE,
    profile_uuid text        NOT NULL,
    defined_at   timestamptz NOT NULL,
    PRIMARY KEY (profile_id, token_id)
);

-- The assignment rules in order (ade.AssignmentStore); match_json is the
-- ade.Match as JSON.
CREATE TABLE ade_assignment_rules (
    ord        integer PRIMARY KEY,
    profile_id text    NOT NULL REFERENCES ade_profiles (id),
    match_json text    NOT NULL
);

-- What came of the last assignment of a profile to the device.
ALTER TABLE ade_devices ADD COLUMN assign_profile_id text NOT NULL DEFAULT '';
ALTER TABLE ade_devices ADD COLUMN assign_result text NOT NULL DEFAULT '';
ALTER TABLE ade_devices ADD COLUMN assign_time timestamptz;
