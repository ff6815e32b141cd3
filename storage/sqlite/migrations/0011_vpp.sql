-- 0011: Apps and Books (VPP): content tokens per location, the people
-- registered with Apple, assignment plans and the devices they reached,
-- and which person a device belongs to. Kept in lockstep with
-- storage/postgres/migrations/0011_vpp.sql.

-- One content token per location (uId); sealed with the server's key.
CREATE TABLE vpp_tokens (
    location      TEXT    PRIMARY KEY,
    location_name TEXT    NOT NULL DEFAULT '',
    org_name      TEXT    NOT NULL DEFAULT '',
    sealed        BLOB    NOT NULL,
    expires_at    INTEGER NOT NULL,
    claimed       INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
) STRICT;

-- People registered at a location (vpp.UserStore); client_user_id is
-- bramley's random name for them at Apple.
CREATE TABLE vpp_users (
    location       TEXT    NOT NULL,
    user_id        TEXT    NOT NULL,
    client_user_id TEXT    NOT NULL,
    email          TEXT    NOT NULL DEFAULT '',
    status         TEXT    NOT NULL DEFAULT '',
    id_hash        TEXT    NOT NULL DEFAULT '',
    invite_code    TEXT    NOT NULL DEFAULT '',
    created_at     INTEGER NOT NULL,
    PRIMARY KEY (location, user_id),
    UNIQUE (location, client_user_id)
) STRICT;
CREATE INDEX vpp_users_id_hash ON vpp_users (location, id_hash);

-- An app or book planned for a person (vpp.PlanStore).
CREATE TABLE vpp_plans (
    id         TEXT    PRIMARY KEY,
    location   TEXT    NOT NULL,
    username   TEXT    NOT NULL,
    adam_id    TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    status     TEXT    NOT NULL,
    result     TEXT    NOT NULL DEFAULT '',
    event_id   TEXT    NOT NULL DEFAULT '',
    error      TEXT    NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (location, username, adam_id)
) STRICT;

-- The devices a plan's item was queued for: once per plan and device.
CREATE TABLE vpp_installs (
    plan_id      TEXT    NOT NULL REFERENCES vpp_plans (id) ON DELETE CASCADE,
    device_id    TEXT    NOT NULL,
    command_uuid TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (plan_id, device_id)
) STRICT;

-- The person a device belongs to (vpp.OwnerStore). No foreign key: an
-- owner may be recorded before the device first checks in.
CREATE TABLE device_owners (
    device_id  TEXT    PRIMARY KEY,
    username   TEXT    NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;
CREATE INDEX device_owners_username ON device_owners (username);
