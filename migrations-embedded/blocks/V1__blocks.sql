-- The embedded blob store's block index (src/blobs/embedded/index.rs), a SQLite file beside
-- the blob files. Every block of every stored DAG, so the built-in gateway can serve any
-- block by CID. Never edit this file once applied; add V2__... instead.

-- A stored DAG root: its bytes are the file blobs/<cid>.
CREATE TABLE roots (
    cid   TEXT PRIMARY KEY NOT NULL,
    size  INTEGER NOT NULL CHECK (size >= 0)
) WITHOUT ROWID;

-- A leaf is a range of its root's file; an interior node is kept whole (a few KiB).
-- The same block may belong to several roots: one row per (block, root).
CREATE TABLE blocks (
    cid          TEXT NOT NULL,
    root         TEXT NOT NULL REFERENCES roots (cid) ON DELETE CASCADE,
    byte_offset  INTEGER,
    length       INTEGER,
    node         BLOB,
    PRIMARY KEY (cid, root),
    CHECK ((node IS NULL) = (byte_offset IS NOT NULL AND length IS NOT NULL))
) WITHOUT ROWID;
CREATE INDEX blocks_root_idx ON blocks (root);
