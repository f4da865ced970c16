-- Image layouts published in IPFS, as the PostgreSQL schema's V6__image_layouts.sql: the
-- root CID of the OCI Image Layout of a tagged manifest, per (repository, tag, manifest).
-- Never edit this file once applied; add V7__... instead.
--
-- A row lives as long as its tag points at its manifest: a deleted tag (or manifest) takes
-- it along by the cascade, a moved tag by a trigger. Every deleted row queues its CID for
-- unpinning (queued_at in milliseconds since the epoch, as the code writes it).
CREATE TABLE image_layouts (
    repository_id    INTEGER NOT NULL,
    tag              TEXT NOT NULL,
    manifest_digest  TEXT NOT NULL,
    cid              TEXT NOT NULL,
    published_at     INTEGER NOT NULL,
    PRIMARY KEY (repository_id, tag),
    FOREIGN KEY (repository_id, tag) REFERENCES tags (repository_id, name) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX image_layouts_cid_idx ON image_layouts (cid);

CREATE TRIGGER image_layouts_tag_moved AFTER UPDATE OF manifest_digest ON tags
    WHEN NEW.manifest_digest <> OLD.manifest_digest
BEGIN
    DELETE FROM image_layouts WHERE repository_id = NEW.repository_id AND tag = NEW.name;
END;

CREATE TRIGGER image_layouts_unpin AFTER DELETE ON image_layouts
BEGIN
    INSERT INTO gc_unpin_queue (cid, queued_at)
    VALUES (OLD.cid, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))
    ON CONFLICT DO NOTHING;
END;

CREATE TRIGGER image_layouts_replaced AFTER UPDATE OF cid ON image_layouts
    WHEN OLD.cid <> NEW.cid
BEGIN
    INSERT INTO gc_unpin_queue (cid, queued_at)
    VALUES (OLD.cid, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))
    ON CONFLICT DO NOTHING;
END;
