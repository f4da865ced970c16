-- The registry's public index, as the PostgreSQL schema's V9__federation_index.sql (times
-- in milliseconds since the epoch, as the code writes them).
-- Never edit this file once applied; add V11__... instead.
CREATE TABLE federation_index (
    id                  INTEGER PRIMARY KEY CHECK (id = 1),
    cid                 TEXT NOT NULL,
    built_at            INTEGER NOT NULL,
    ipns_name           TEXT,
    ipns_cid            TEXT,
    ipns_published_at   INTEGER
);

CREATE TRIGGER federation_index_replaced AFTER UPDATE OF cid ON federation_index
    WHEN OLD.cid <> NEW.cid
BEGIN
    INSERT INTO gc_unpin_queue (cid, queued_at)
    VALUES (OLD.cid, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))
    ON CONFLICT DO NOTHING;
END;
