-- Tagged images waiting to be published as OCI Image Layouts (src/registry/publish.rs,
-- docs/federation.md). A tagged push of a public repository queues its (tag, manifest)
-- before it answers, and a background publisher in every replica claims rows, publishes
-- them and deletes them: an acknowledged push is published even if the process dies first.
-- Never edit this file once applied; add V9__... instead.
--
-- A row names the manifest the push tagged: a later push of the tag replaces it, a deleted
-- tag (or manifest) takes it along by the cascade. `not_before` is when the row may be
-- claimed: now for a new row, the end of a claim's lease while a replica publishes it, the
-- end of the backoff after a failed attempt.
CREATE TABLE layout_queue (
    repository_id    bigint NOT NULL,
    tag              text COLLATE "C" NOT NULL,
    manifest_digest  text COLLATE "C" NOT NULL,
    queued_at        timestamptz NOT NULL DEFAULT now(),
    attempts         integer NOT NULL DEFAULT 0,
    not_before       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (repository_id, tag),
    FOREIGN KEY (repository_id, tag) REFERENCES tags (repository_id, name) ON DELETE CASCADE
);
CREATE INDEX layout_queue_due_idx ON layout_queue (not_before);
