-- 0009: over-the-air (OTA) profile-service enrollment. Kept in lockstep
-- with storage/postgres/migrations/0009_ota.sql.

-- One row per Profile Service payload handed to a signed-in person: the
-- SHA-256 of its one-time challenge, who it was for, and how far the
-- device got: issued → attributes (first signed POST, attributes recorded)
-- → enrolled (second POST answered with the enrollment profile).
CREATE TABLE ota_sessions (
    id             TEXT    PRIMARY KEY,
    challenge_hash BLOB    NOT NULL UNIQUE,
    username       TEXT    NOT NULL,
    state          TEXT    NOT NULL DEFAULT 'issued',
    udid           TEXT    NOT NULL DEFAULT '',
    serial         TEXT    NOT NULL DEFAULT '',
    product        TEXT    NOT NULL DEFAULT '',
    version        TEXT    NOT NULL DEFAULT '',
    device_name    TEXT    NOT NULL DEFAULT '',
    imei           TEXT    NOT NULL DEFAULT '',
    meid           TEXT    NOT NULL DEFAULT '',
    iccid          TEXT    NOT NULL DEFAULT '',
    mac_address    TEXT    NOT NULL DEFAULT '',
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL
) STRICT;

-- How a device was last enrolled and for whom: route 'ota' (the person
-- who signed in), later others. No foreign key: the route is recorded
-- before the device's first check-in creates its row.
CREATE TABLE enrollment_routes (
    device_id  TEXT    PRIMARY KEY,
    route      TEXT    NOT NULL,
    username   TEXT    NOT NULL DEFAULT '',
    ref        TEXT    NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL
) STRICT;
