-- `[[federation.follow]]` rules' state (src/registry/follow.rs, docs/federation.md).
-- Never edit this file once applied; add V11__... instead.
--
-- `follow_rules`: per rule (by its name), the index root its last complete pass left it
-- in sync with and when, and the last failure. `followed_tags`: per rule, every local tag
-- it imported, with the layout it imported it from and the manifest that gave; the tag is
-- deleted by the rule (with `delete = true`) only while it still points at that manifest.
-- Rows are keyed by names, not by the tags table: a tag deleted or moved by someone else
-- is seen as such by comparing the manifest, and imported again when the source still has it.
CREATE TABLE follow_rules (
    rule          text COLLATE "C" PRIMARY KEY,
    last_root     text,
    last_success  timestamptz,
    last_error    text,
    error_at      timestamptz
);
CREATE TABLE followed_tags (
    rule             text COLLATE "C" NOT NULL,
    repository       text COLLATE "C" NOT NULL,
    tag              text COLLATE "C" NOT NULL,
    layout_cid       text NOT NULL,
    manifest_digest  text NOT NULL,
    imported_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (rule, repository, tag)
);
