-- `[[federation.follow]]` rules' state, as the PostgreSQL schema's V10__follow.sql (times
-- in milliseconds since the epoch, as the code writes them).
-- Never edit this file once applied; add V11__... instead.
CREATE TABLE follow_rules (
    rule          TEXT PRIMARY KEY,
    last_root     TEXT,
    last_success  INTEGER,
    last_error    TEXT,
    error_at      INTEGER
) WITHOUT ROWID;
CREATE TABLE followed_tags (
    rule             TEXT NOT NULL,
    repository       TEXT NOT NULL,
    tag              TEXT NOT NULL,
    layout_cid       TEXT NOT NULL,
    manifest_digest  TEXT NOT NULL,
    imported_at      INTEGER NOT NULL,
    PRIMARY KEY (rule, repository, tag)
) WITHOUT ROWID;
