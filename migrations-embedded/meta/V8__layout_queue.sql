-- Tagged images waiting to be published as OCI Image Layouts, as the PostgreSQL schema's
-- V8__layout_queue.sql (times in milliseconds since the epoch, as the code writes them).
-- Never edit this file once applied; add V9__... instead.
CREATE TABLE layout_queue (
    repository_id    INTEGER NOT NULL,
    tag              TEXT NOT NULL,
    manifest_digest  TEXT NOT NULL,
    queued_at        INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    not_before       INTEGER NOT NULL,
    PRIMARY KEY (repository_id, tag),
    FOREIGN KEY (repository_id, tag) REFERENCES tags (repository_id, name) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX layout_queue_due_idx ON layout_queue (not_before);
