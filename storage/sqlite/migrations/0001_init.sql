-- 0001: devices, their channels, the command queue, issued certificates,
-- admin API keys and settings. Kept in lockstep with
-- storage/postgres/migrations/0001_init.sql: same tables, same columns.
--
-- Times are INTEGER Unix microseconds, UTC: they compare and sort as plain
-- integers (the queue's expiry test runs on every connect) and round-trip
-- exactly at the precision PostgreSQL keeps. Booleans are INTEGER 0/1.
-- Empty text is '' rather than NULL so "keep the old value unless the new one
-- is non-empty" is a plain nullif/coalesce.

CREATE TABLE devices (
    id              TEXT    PRIMARY KEY,
    udid            TEXT    NOT NULL DEFAULT '',
    serial_number   TEXT    NOT NULL DEFAULT '',
    model           TEXT    NOT NULL DEFAULT '',
    model_name      TEXT    NOT NULL DEFAULT '',
    product_name    TEXT    NOT NULL DEFAULT '',
    device_name     TEXT    NOT NULL DEFAULT '',
    os_version      TEXT    NOT NULL DEFAULT '',
    build_version   TEXT    NOT NULL DEFAULT '',
    imei            TEXT    NOT NULL DEFAULT '',
    meid            TEXT    NOT NULL DEFAULT '',
    host_name       TEXT    NOT NULL DEFAULT '',
    topic           TEXT    NOT NULL DEFAULT '',
    enrolled        INTEGER NOT NULL DEFAULT 0,
    -- The identity certificate bound at Authenticate: one device per certificate.
    cert_hash       BLOB    UNIQUE,
    cert_bound_at   INTEGER,
    -- Sealed by the caller; NULL when none is escrowed.
    bootstrap_token BLOB,
    last_seen       INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
) STRICT;

CREATE INDEX devices_serial_number ON devices (serial_number);
CREATE INDEX devices_udid ON devices (udid);

-- One row per channel: the device channel (id = device_id) and user
-- channels (id = 'device_id:user').
CREATE TABLE enrollments (
    id                     TEXT    PRIMARY KEY,
    device_id              TEXT    NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    user_id                TEXT    NOT NULL DEFAULT '',
    user_short_name        TEXT    NOT NULL DEFAULT '',
    user_long_name         TEXT    NOT NULL DEFAULT '',
    topic                  TEXT    NOT NULL DEFAULT '',
    push_token             BLOB,
    push_magic             TEXT    NOT NULL DEFAULT '',
    unlock_token           BLOB,
    awaiting_configuration INTEGER NOT NULL DEFAULT 0,
    enabled                INTEGER NOT NULL DEFAULT 0,
    last_seen              INTEGER NOT NULL,
    created_at             INTEGER NOT NULL,
    updated_at             INTEGER NOT NULL
) STRICT;

CREATE INDEX enrollments_device_id ON enrollments (device_id);

-- seq orders commands of equal priority by age; AUTOINCREMENT keeps it
-- increasing even after the newest command is deleted.
CREATE TABLE commands (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid         TEXT    NOT NULL UNIQUE,
    request_type TEXT    NOT NULL,
    raw          BLOB    NOT NULL,
    priority     INTEGER NOT NULL DEFAULT 0,
    expires_at   INTEGER,
    created_at   INTEGER NOT NULL
) STRICT;

-- One row per command per enrollment. priority and seq are copied from the
-- command so the next command is found from one index alone.
CREATE TABLE command_queue (
    enrollment_id TEXT    NOT NULL REFERENCES enrollments (id) ON DELETE CASCADE,
    command_uuid  TEXT    NOT NULL REFERENCES commands (uuid) ON DELETE CASCADE,
    status        TEXT    NOT NULL,
    priority      INTEGER NOT NULL,
    seq           INTEGER NOT NULL,
    result        BLOB,
    delivered_at  INTEGER,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (enrollment_id, command_uuid)
) STRICT;

CREATE INDEX command_queue_next ON command_queue (enrollment_id, status, priority DESC, seq);
CREATE INDEX command_queue_command ON command_queue (command_uuid);
-- Only the open entries, for the queue-depth metric.
CREATE INDEX command_queue_open ON command_queue (command_uuid) WHERE status IN ('Pending', 'NotNow');

CREATE TABLE certificates (
    serial     TEXT    PRIMARY KEY,
    sha256     BLOB    NOT NULL UNIQUE,
    subject    TEXT    NOT NULL DEFAULT '',
    -- No foreign key: a certificate outlives the device row it was issued to.
    device_id  TEXT,
    not_after  INTEGER NOT NULL,
    revoked    INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE api_keys (
    hash       BLOB    PRIMARY KEY,
    label      TEXT    NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
) STRICT;
