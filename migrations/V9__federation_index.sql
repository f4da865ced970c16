-- The registry's public index (src/registry/federation.rs, docs/federation.md): one UnixFS
-- directory naming every published image as `<repository path>:<tag>`, rebuilt after the
-- published layouts change, and the IPNS name it was last published under.
-- Never edit this file once applied; add V11__... instead.
--
-- One row. Replacing the root queues the old one for unpinning, as a replaced image layout
-- does (the function of V6); the unpin checks that no record holds the CID any more.
CREATE TABLE federation_index (
    id                  smallint PRIMARY KEY CHECK (id = 1),
    cid                 text NOT NULL,
    built_at            timestamptz NOT NULL DEFAULT now(),
    ipns_name           text,
    ipns_cid            text,
    ipns_published_at   timestamptz
);
CREATE TRIGGER federation_index_replaced AFTER UPDATE OF cid ON federation_index
    FOR EACH ROW WHEN (OLD.cid <> NEW.cid) EXECUTE FUNCTION image_layouts_unpin();
