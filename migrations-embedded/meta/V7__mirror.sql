-- Pull-through mirrors, as the PostgreSQL schema's V7__mirror.sql (times in milliseconds
-- since the epoch, as the code writes them). Never edit this file once applied; add V8__...
CREATE TABLE mirrored_repositories (
    repository_id  INTEGER PRIMARY KEY REFERENCES repositories (id) ON DELETE CASCADE,
    upstream       TEXT NOT NULL,
    created_at     INTEGER NOT NULL
);

CREATE TABLE mirrored_tags (
    repository_id  INTEGER NOT NULL,
    name           TEXT NOT NULL,
    checked_at     INTEGER NOT NULL,
    PRIMARY KEY (repository_id, name),
    FOREIGN KEY (repository_id, name) REFERENCES tags (repository_id, name) ON DELETE CASCADE
) WITHOUT ROWID;
