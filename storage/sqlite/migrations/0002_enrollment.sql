-- 0002: enrollment tokens and one-time SCEP challenges. Only the SHA-256 of
-- each secret is kept, so a database dump yields nothing usable. Kept in
-- lockstep with storage/postgres/migrations/0002_enrollment.sql.

CREATE TABLE enrollment_tokens (
    id         TEXT    PRIMARY KEY,
    hash       BLOB    NOT NULL UNIQUE,
    label      TEXT    NOT NULL DEFAULT '',
    max_uses   INTEGER NOT NULL DEFAULT 0, -- 0: unlimited
    uses       INTEGER NOT NULL DEFAULT 0,
    expires_at INTEGER,                    -- NULL: never
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE scep_challenges (
    hash          BLOB    PRIMARY KEY,
    subject       TEXT    NOT NULL DEFAULT '',
    enrollment_id TEXT    NOT NULL DEFAULT '',
    source        TEXT    NOT NULL DEFAULT '',
    expires_at    INTEGER,                 -- NULL: never
    used_at       INTEGER,                 -- NULL: not yet
    created_at    INTEGER NOT NULL
) STRICT;
