-- Access control in the embedded store (src/meta/sqlite/users.rs): the tables of the
-- PostgreSQL schema's V3__auth.sql. Lists of actions are JSON arrays, sorted.

CREATE TABLE users (
    -- AUTOINCREMENT: a re-created name never gets an old id back (refresh tokens carry it).
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    name                 TEXT NOT NULL UNIQUE CHECK (name <> ''),
    -- PHC string (argon2id); never the password.
    password_hash        TEXT NOT NULL,
    admin                INTEGER NOT NULL DEFAULT 0 CHECK (admin IN (0, 1)),
    -- Refresh tokens issued before this are no longer honoured.
    password_changed_at  INTEGER NOT NULL,
    created_at           INTEGER NOT NULL
);

CREATE TABLE permissions (
    user_id  INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    pattern  TEXT NOT NULL,
    actions  TEXT NOT NULL CHECK (json_valid(actions) AND json_type(actions) = 'array'),
    PRIMARY KEY (user_id, pattern)
) WITHOUT ROWID;

CREATE TABLE public_repositories (
    pattern     TEXT PRIMARY KEY NOT NULL,
    created_at  INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE robot_tokens (
    id             TEXT PRIMARY KEY NOT NULL,
    user_id        INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    secret_sha256  BLOB NOT NULL,
    scopes         TEXT NOT NULL,
    expires_at     INTEGER NOT NULL,
    created_at     INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX robot_tokens_user_idx ON robot_tokens (user_id);
