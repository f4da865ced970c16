-- Garbage collection (src/meta/postgres/gc.rs).
--
-- CIDs whose last row a GC sweep deleted, waiting to be unpinned. A row is queued in the
-- transaction that deletes the blob or upload chunk and removed only once the pin is gone
-- (or something records the CID again), so an unpin that fails is retried by the next run
-- instead of leaking a pin forever.
CREATE TABLE gc_unpin_queue (
    cid        text PRIMARY KEY,
    queued_at  timestamptz NOT NULL DEFAULT now()
);

-- The sweep looks for links and blobs older than the grace period.
CREATE INDEX repository_blobs_created_at_idx ON repository_blobs (created_at);
CREATE INDEX blobs_created_at_idx ON blobs (created_at);
