-- 0005: Automated Device Enrollment server tokens and the devices Apple
-- assigned to them. Kept in lockstep with
-- storage/sqlite/migrations/0005_ade.sql.

-- One row per MDM server in Apple Business Manager (see ade.TokenStore).
-- sealed holds the OAuth secrets, sealed with the server's secret key; a
-- renewed token of the same server (same consumer key) replaces it.
-- device_cursor is the syncer's cursor (ade.CursorStore), '' before the
-- first fetch.
CREATE TABLE ade_tokens (
    id                  text        PRIMARY KEY,
    consumer_key        text        NOT NULL UNIQUE,
    sealed              bytea       NOT NULL,
    access_token_expiry timestamptz NOT NULL,
    server_name         text        NOT NULL DEFAULT '',
    device_cursor       text        NOT NULL DEFAULT '',
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL
);

-- The devices assigned to each token's MDM server, as the syncer last
-- heard of them (ade.DeviceSink). Unassigned devices stay, marked deleted.
CREATE TABLE ade_devices (
    token_id             text        NOT NULL REFERENCES ade_tokens (id) ON DELETE CASCADE,
    serial_number        text        NOT NULL,
    model                text        NOT NULL DEFAULT '',
    description          text        NOT NULL DEFAULT '',
    color                text        NOT NULL DEFAULT '',
    asset_tag            text        NOT NULL DEFAULT '',
    os                   text        NOT NULL DEFAULT '',
    device_family        text        NOT NULL DEFAULT '',
    profile_status       text        NOT NULL DEFAULT '',
    profile_uuid         text        NOT NULL DEFAULT '',
    profile_assign_time  timestamptz,
    profile_push_time    timestamptz,
    device_assigned_date timestamptz,
    device_assigned_by   text        NOT NULL DEFAULT '',
    op_type              text        NOT NULL DEFAULT '',
    op_date              timestamptz,
    deleted              boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (token_id, serial_number)
);
