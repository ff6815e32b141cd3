-- 0004: identity renewal attempts. Kept in lockstep with
-- storage/sqlite/migrations/0004_renewal.sql.

-- One row per device whose identity bramley has set out to renew (see
-- enroll.RenewalStore): the certificate being renewed, how many
-- InstallProfile commands were sent for it and the last one. A sweep's
-- claim creates or updates the row (claimed_until) before the profile is
-- queued, so that two replicas never both send one: the claim is an
-- upsert whose conflict clause re-checks the row as committed. attempted_at
-- stays NULL until a profile is sent.
CREATE TABLE renewal_attempts (
    device_id     text        PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    cert_sha256   bytea       NOT NULL,
    attempts      integer     NOT NULL DEFAULT 0,
    command_uuid  text        NOT NULL DEFAULT '',
    attempted_at  timestamptz,
    claimed_until timestamptz
);

-- The sweep starts from the certificates about to expire.
CREATE INDEX certificates_not_after ON certificates (not_after);
