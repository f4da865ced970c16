-- Joined uploads whose recursive pin is still to be made (src/registry/releaser.rs,
-- docs/ipfs-node.md). Never edit this file once applied; add V12__... instead.
--
-- An IPFS node's recursive pin of a blob joined from an upload's chunks walks every block
-- of it, which the push need not wait for: the join pins its root and new interior nodes
-- directly, and its leaves stay held by the chunks' own pins. Each row holds one CID
-- (a chunk, or a directly pinned interior node) of the joined blob `root` until the
-- registry has pinned `root` recursively; then the rows go and their CIDs are queued for
-- unpinning in the same transaction. A held CID counts as in use, so neither GC nor the
-- start-up check unpins it meanwhile.
CREATE TABLE pending_pins (
    root       text NOT NULL,
    cid        text NOT NULL,
    held_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (root, cid)
);
CREATE INDEX pending_pins_cid_idx ON pending_pins (cid);
