-- Access control (src/meta/postgres/users.rs, docs/architecture.md "Authentication").
-- V2 is reserved for the GC branch.

CREATE TABLE users (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name           text COLLATE "C" NOT NULL,
    -- PHC string (argon2id); never the password.
    password_hash  text NOT NULL,
    -- Admins may do everything, everywhere.
    admin          boolean NOT NULL DEFAULT false,
    -- Refresh tokens issued before this are no longer honoured.
    password_changed_at  timestamptz NOT NULL DEFAULT now(),
    created_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_name_key UNIQUE (name),
    CONSTRAINT users_name_not_empty CHECK (name <> '')
);

-- What a user may do in the repositories matching `pattern`: an exact repository name,
-- `prefix/*` (everything below `prefix/`) or `*` (everything).
CREATE TABLE permissions (
    user_id  bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    pattern  text COLLATE "C" NOT NULL,
    actions  text[] NOT NULL,
    PRIMARY KEY (user_id, pattern),
    CONSTRAINT permissions_actions_known
        CHECK (actions <@ ARRAY['pull', 'push', 'delete', 'admin']::text[])
);

-- Repositories (same pattern forms) anyone may pull, without credentials.
CREATE TABLE public_repositories (
    pattern     text COLLATE "C" PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Robot tokens (`ipfs-registry token create`): opaque credentials a CI robot presents as its
-- password at /token. Honoured only while the row exists and has not expired, so removing
-- the user (cascade) revokes them.
CREATE TABLE robot_tokens (
    id          uuid PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- The token is `<id>.<secret>`; only the secret's sha256 is kept.
    secret_sha256  bytea NOT NULL,
    scopes      text NOT NULL,
    expires_at  timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX robot_tokens_user_idx ON robot_tokens (user_id);
