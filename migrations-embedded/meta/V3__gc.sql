-- Garbage collection in the embedded store (src/meta/sqlite/gc.rs), as the PostgreSQL
-- schema's V2__gc.sql: CIDs whose last row a sweep deleted, waiting to be unpinned (an
-- unpin that fails is retried by the next run), and indexes for the sweep's age checks.
CREATE TABLE gc_unpin_queue (
    cid        TEXT PRIMARY KEY NOT NULL,
    queued_at  INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX repository_blobs_created_at_idx ON repository_blobs (created_at);
CREATE INDEX blobs_created_at_idx ON blobs (created_at);
