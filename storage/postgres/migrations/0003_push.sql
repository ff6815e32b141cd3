-- 0003: the push state of enrollments, and push certificates. Kept in
-- lockstep with storage/sqlite/migrations/0003_push.sql.

-- push_state is how an enrollment's pushes went, one row beside each
-- enrollment that has sent a TokenUpdate: every replica reads and writes
-- it, so they agree on back-off without talking to each other. The row is
-- created, or reset, by each TokenUpdate, so that the sweep's claim can
-- lock it with FOR UPDATE SKIP LOCKED (there is no row to lock in an outer
-- join). next_push_at NULL means no push state: neither pushed nor claimed
-- since the TokenUpdate.
CREATE TABLE push_state (
    enrollment_id text        PRIMARY KEY REFERENCES enrollments (id) ON DELETE CASCADE,
    -- APNs refused the token for good: not pushed until the next TokenUpdate.
    token_invalid boolean     NOT NULL DEFAULT false,
    pushed_at     timestamptz,
    status        integer     NOT NULL DEFAULT 0,
    reason        text        NOT NULL DEFAULT '',
    attempts      integer     NOT NULL DEFAULT 0,
    next_push_at  timestamptz,
    retry         boolean     NOT NULL DEFAULT false
);

-- The sweep's retries: failed pushes due again without open commands.
CREATE INDEX push_state_retry ON push_state (next_push_at) WHERE retry;

INSERT INTO push_state (enrollment_id) SELECT id FROM enrollments WHERE push_token IS NOT NULL;

-- One APNs certificate per topic; the key is sealed by the caller.
CREATE TABLE push_certificates (
    topic      text        PRIMARY KEY,
    cert_pem   bytea       NOT NULL,
    sealed_key bytea       NOT NULL,
    not_after  timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
