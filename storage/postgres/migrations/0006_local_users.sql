-- 0006: local accounts, who sign in to download the enrollment profile
-- (--enroll-auth basic). Passwords are kept as argon2id PHC strings only.
-- Kept in lockstep with storage/sqlite/migrations/0006_local_users.sql.

CREATE TABLE local_users (
    username      text        PRIMARY KEY,
    password_hash text        NOT NULL,
    created_at    timestamptz NOT NULL
);
