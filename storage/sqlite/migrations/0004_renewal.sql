-- 0004: identity renewal attempts. Kept in lockstep with
-- storage/postgres/migrations/0004_renewal.sql.

-- One row per device whose identity bramley has set out to renew (see
-- enroll.RenewalStore): the certificate being renewed, how many
-- InstallProfile commands were sent for it and the last one. A sweep's
-- claim creates or updates the row (claimed_until) before the profile is
-- queued, so that two replicas never both send one; attempted_at stays
-- NULL until a profile is.
CREATE TABLE renewal_attempts (
    device_id     TEXT    PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    cert_sha256   BLOB    NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    command_uuid  TEXT    NOT NULL DEFAULT '',
    attempted_at  INTEGER,
    claimed_until INTEGER
) STRICT;

-- The sweep starts from the certificates about to expire.
CREATE INDEX certificates_not_after ON certificates (not_after);
