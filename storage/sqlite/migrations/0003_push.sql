-- 0003: the push state of enrollments, and push certificates. Kept in
-- lockstep with storage/postgres/migrations/0003_push.sql.

-- push_state is how an enrollment's pushes went, one row beside each
-- enrollment that has sent a TokenUpdate: every replica reads and writes
-- it, so they agree on back-off without talking to each other. The row is
-- created, or reset, by each TokenUpdate, so that the sweep's claim can
-- lock it (there is no row to lock in an outer join). next_push_at NULL
-- means no push state: neither pushed nor claimed since the TokenUpdate.
CREATE TABLE push_state (
    enrollment_id TEXT    PRIMARY KEY REFERENCES enrollments (id) ON DELETE CASCADE,
    -- APNs refused the token for good: not pushed until the next TokenUpdate.
    token_invalid INTEGER NOT NULL DEFAULT 0,
    pushed_at     INTEGER,
    status        INTEGER NOT NULL DEFAULT 0,
    reason        TEXT    NOT NULL DEFAULT '',
    attempts      INTEGER NOT NULL DEFAULT 0,
    next_push_at  INTEGER,
    retry         INTEGER NOT NULL DEFAULT 0
) STRICT;

-- The sweep's retries: failed pushes due again without open commands.
CREATE INDEX push_state_retry ON push_state (next_push_at) WHERE retry = 1;

INSERT INTO push_state (enrollment_id) SELECT id FROM enrollments WHERE push_token IS NOT NULL;

-- One APNs certificate per topic; the key is sealed by the caller.
CREATE TABLE push_certificates (
    topic      TEXT    PRIMARY KEY,
    cert_pem   BLOB    NOT NULL,
    sealed_key BLOB    NOT NULL,
    not_after  INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;
