-- 0001: devices, their channels, the command queue, issued certificates,
-- admin API keys and settings. Kept in lockstep with
-- storage/sqlite/migrations/0001_init.sql: same tables, same columns.
--
-- Empty text is '' rather than NULL so "keep the old value unless the new one
-- is non-empty" is a plain nullif/coalesce.

CREATE TABLE devices (
    id              text        PRIMARY KEY,
    udid            text        NOT NULL DEFAULT '',
    serial_number   text        NOT NULL DEFAULT '',
    model           text        NOT NULL DEFAULT '',
    model_name      text        NOT NULL DEFAULT '',
    product_name    text        NOT NULL DEFAULT '',
    device_name     text        NOT NULL DEFAULT '',
    os_version      text        NOT NULL DEFAULT '',
    build_version   text        NOT NULL DEFAULT '',
    imei            text        NOT NULL DEFAULT '',
    meid            text        NOT NULL DEFAULT '',
    host_name       text        NOT NULL DEFAULT '',
    topic           text        NOT NULL DEFAULT '',
    enrolled        boolean     NOT NULL DEFAULT false,
    -- The identity certificate bound at Authenticate: one device per certificate.
    cert_hash       bytea       UNIQUE,
    cert_bound_at   timestamptz,
    -- Sealed by the caller; NULL when none is escrowed.
    bootstrap_token bytea,
    last_seen       timestamptz NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);

CREATE INDEX devices_serial_number ON devices (serial_number);
CREATE INDEX devices_udid ON devices (udid);

-- One row per channel: the device channel (id = device_id) and user
-- channels (id = 'device_id:user').
CREATE TABLE enrollments (
    id                     text        PRIMARY KEY,
    device_id              text        NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    user_id                text        NOT NULL DEFAULT '',
    user_short_name        text        NOT NULL DEFAULT '',
    user_long_name         text        NOT NULL DEFAULT '',
    topic                  text        NOT NULL DEFAULT '',
    push_token             bytea,
    push_magic             text        NOT NULL DEFAULT '',
    unlock_token           bytea,
    awaiting_configuration boolean     NOT NULL DEFAULT false,
    enabled                boolean     NOT NULL DEFAULT false,
    last_seen              timestamptz NOT NULL,
    created_at             timestamptz NOT NULL,
    updated_at             timestamptz NOT NULL
);

CREATE INDEX enrollments_device_id ON enrollments (device_id);

-- seq orders commands of equal priority by age.
CREATE TABLE commands (
    seq          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    uuid         text        NOT NULL UNIQUE,
    request_type text        NOT NULL,
    raw          bytea       NOT NULL,
    priority     integer     NOT NULL DEFAULT 0,
    expires_at   timestamptz,
    created_at   timestamptz NOT NULL
);

-- One row per command per enrollment. priority and seq are copied from the
-- command so the next command is found from one index alone.
CREATE TABLE command_queue (
    enrollment_id text        NOT NULL REFERENCES enrollments (id) ON DELETE CASCADE,
    command_uuid  text        NOT NULL REFERENCES commands (uuid) ON DELETE CASCADE,
    status        text        NOT NULL,
    priority      integer     NOT NULL,
    seq           bigint      NOT NULL,
    result        bytea,
    delivered_at  timestamptz,
    updated_at    timestamptz NOT NULL,
    PRIMARY KEY (enrollment_id, command_uuid)
);

CREATE INDEX command_queue_next ON command_queue (enrollment_id, status, priority DESC, seq);
CREATE INDEX command_queue_command ON command_queue (command_uuid);
-- Only the open entries, for the queue-depth metric.
CREATE INDEX command_queue_open ON command_queue (command_uuid) WHERE status IN ('Pending', 'NotNow');

CREATE TABLE certificates (
    serial     text        PRIMARY KEY,
    sha256     bytea       NOT NULL UNIQUE,
    subject    text        NOT NULL DEFAULT '',
    -- No foreign key: a certificate outlives the device row it was issued to.
    device_id  text,
    not_after  timestamptz NOT NULL,
    revoked    boolean     NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL
);

CREATE TABLE api_keys (
    hash       bytea       PRIMARY KEY,
    label      text        NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL
);

CREATE TABLE settings (
    name  text  PRIMARY KEY,
    value bytea NOT NULL
);
