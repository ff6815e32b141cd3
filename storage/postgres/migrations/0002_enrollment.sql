-- 0002: enrollment tokens and one-time SCEP challenges. Only the SHA-256 of
-- each secret is kept, so a database dump yields nothing usable. Kept in
-- lockstep with storage/sqlite/migrations/0002_enrollment.sql.

CREATE TABLE enrollment_tokens (
    id         text        PRIMARY KEY,
    hash       bytea       NOT NULL UNIQUE,
    label      text        NOT NULL DEFAULT '',
    max_uses   integer     NOT NULL DEFAULT 0, -- 0: unlimited
    uses       integer     NOT NULL DEFAULT 0,
    expires_at timestamptz,                    -- NULL: never
    created_at timestamptz NOT NULL
);

CREATE TABLE scep_challenges (
    hash          bytea       PRIMARY KEY,
    subject       text        NOT NULL DEFAULT '',
    enrollment_id text        NOT NULL DEFAULT '',
    source        text        NOT NULL DEFAULT '',
    expires_at    timestamptz,                 -- NULL: never
    used_at       timestamptz,                 -- NULL: not yet
    created_at    timestamptz NOT NULL
);
