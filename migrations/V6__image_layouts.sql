-- Image layouts published in IPFS (src/registry/layout.rs, docs/federation.md): the root
-- CID of the OCI Image Layout of a tagged manifest, per (repository, tag, manifest).
-- Never edit this file once applied; add V7__... instead.
--
-- A row lives as long as its tag points at its manifest: a deleted tag (or manifest) takes
-- it along by the cascade, a moved tag by the trigger below. Every deleted row queues its
-- CID for unpinning, like a deleted blob; the unpin itself checks (under the CID's lease)
-- that no other row records the same CID (the same image tagged alike elsewhere).
CREATE TABLE image_layouts (
    repository_id    bigint NOT NULL,
    tag              text COLLATE "C" NOT NULL,
    manifest_digest  text COLLATE "C" NOT NULL,
    cid              text NOT NULL,
    published_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (repository_id, tag),
    FOREIGN KEY (repository_id, tag) REFERENCES tags (repository_id, name) ON DELETE CASCADE
);
CREATE INDEX image_layouts_cid_idx ON image_layouts (cid);

CREATE FUNCTION image_layouts_tag_moved() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM image_layouts
    WHERE repository_id = NEW.repository_id AND tag = NEW.name
      AND manifest_digest <> NEW.manifest_digest;
    RETURN NULL;
END
$$;
CREATE TRIGGER image_layouts_tag_moved AFTER UPDATE OF manifest_digest ON tags
    FOR EACH ROW EXECUTE FUNCTION image_layouts_tag_moved();

CREATE FUNCTION image_layouts_unpin() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO gc_unpin_queue (cid) VALUES (OLD.cid) ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;
CREATE TRIGGER image_layouts_unpin AFTER DELETE ON image_layouts
    FOR EACH ROW EXECUTE FUNCTION image_layouts_unpin();
CREATE TRIGGER image_layouts_replaced AFTER UPDATE OF cid ON image_layouts
    FOR EACH ROW WHEN (OLD.cid <> NEW.cid) EXECUTE FUNCTION image_layouts_unpin();
