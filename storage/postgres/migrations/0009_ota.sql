-- 0009: over-the-air (OTA) profile-service enrollment. Kept in lockstep
-- with storage/sqlite/migrations/0009_ota.sql.

-- One row per Profile Service payload handed to a signed-in person: the
-- SHA-256 of its one-time challenge, who it was for, and how far the
-- device got: issued → attributes (first signed POST, attributes recorded)
-- → enrolled (second POST answered with the enrollment profile).
CREATE TABLE ota_sessions (
    id             text        PRIMARY KEY,
    challenge_hash bytea       NOT NULL UNIQUE,
    username       text        NOT NULL,
    state          text        NOT NULL DEFAULT 'issued',
    udid           text        NOT NULL DEFAULT '',
    serial         text        NOT NULL DEFAULT '',
    product        text        NOT NULL DEFAULT '',
    version        text        NOT NULL DEFAULT '',
    device_name    text        NOT NULL DEFAULT '',
    imei           text        NOT NULL DEFAULT '',
    meid           text        NOT NULL DEFAULT '',
    iccid          text        NOT NULL DEFAULT '',
    mac_address    text        NOT NULL DEFAULT '',
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL
);

-- How a device was last enrolled and for whom: route 'ota' (the person
-- who signed in), later others. No foreign key: the route is recorded
-- before the device's first check-in creates its row.
CREATE TABLE enrollment_routes (
    device_id  text        PRIMARY KEY,
    route      text        NOT NULL,
    username   text        NOT NULL DEFAULT '',
    ref        text        NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL
);
