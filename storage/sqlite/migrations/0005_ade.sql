-- 0005: Automated Device Enrollment server tokens and the devices Apple
-- assigned to them. Kept in lockstep with
-- storage/postgres/migrations/0005_ade.sql.

-- One row per MDM server in Apple Business Manager (see ade.TokenStore).
-- sealed holds the OAuth secrets, sealed with the server's secret key; a
-- renewed token of the same server (same consumer key) replaces it.
-- device_cursor is the syncer's cursor (ade.CursorStore), '' before the
-- first fetch.
CREATE TABLE ade_tokens (
    id                  TEXT    PRIMARY KEY,
    consumer_key        TEXT    NOT NULL UNIQUE,
    sealed              BLOB    NOT NULL,
    access_token_expiry INTEGER NOT NULL,
    server_name         TEXT    NOT NULL DEFAULT '',
    device_cursor       TEXT    NOT NULL DEFAULT '',
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL
) STRICT;

-- The devices assigned to each token's MDM server, as the syncer last
-- heard of them (ade.DeviceSink). Unassigned devices stay, marked deleted.
CREATE TABLE ade_devices (
    token_id             TEXT    NOT NULL REFERENCES ade_tokens (id) ON DELETE CASCADE,
    serial_number        TEXT    NOT NULL,
    model                TEXT    NOT NULL DEFAULT '',
    description          TEXT    NOT NULL DEFAULT '',
    color                TEXT    NOT NULL DEFAULT '',
    asset_tag            TEXT    NOT NULL DEFAULT '',
    os                   TEXT    NOT NULL DEFAULT '',
    device_family        TEXT    NOT NULL DEFAULT '',
    profile_status       TEXT    NOT NULL DEFAULT '',
    profile_uuid         TEXT    NOT NULL DEFAULT '',
    profile_assign_time  INTEGER,
    profile_push_time    INTEGER,
    device_assigned_date INTEGER,
    device_assigned_by   TEXT    NOT NULL DEFAULT '',
    op_type              TEXT    NOT NULL DEFAULT '',
    op_date              INTEGER,
    deleted              INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (token_id, serial_number)
) STRICT;
