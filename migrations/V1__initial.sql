-- Initial schema of the PostgreSQL metadata store (src/meta/postgres/).
--
-- Names, tags and digests are `text COLLATE "C"`: ordering is bytewise, so keyset pagination
-- (`WHERE name > $last ORDER BY name LIMIT $n`) is a range scan of the btree index.
-- Never edit this file once applied; add V2__... instead.

CREATE TABLE repositories (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text COLLATE "C" NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT repositories_name_key UNIQUE (name),
    CONSTRAINT repositories_name_not_empty CHECK (name <> '')
);

-- One row per digest, whichever repositories hold it.
CREATE TABLE blobs (
    digest          text COLLATE "C" PRIMARY KEY,
    cid             text NOT NULL,
    size            bigint NOT NULL CHECK (size >= 0),
    import_profile  text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX blobs_cid_idx ON blobs (cid);

-- A repository sees a blob only through a link.
CREATE TABLE repository_blobs (
    repository_id  bigint NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    digest         text COLLATE "C" NOT NULL REFERENCES blobs (digest),
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (repository_id, digest)
);
-- For GC (is a blob linked anywhere?) and for the FK check when a blob row is deleted.
CREATE INDEX repository_blobs_digest_idx ON repository_blobs (digest);

CREATE TABLE manifests (
    repository_id   bigint NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    digest          text COLLATE "C" NOT NULL,
    media_type      text NOT NULL,
    artifact_type   text,
    -- The exact bytes pushed; `parsed` is the same document as JSONB, for queries only.
    content         bytea NOT NULL,
    parsed          jsonb NOT NULL,
    size            bigint NOT NULL CHECK (size >= 0),
    subject_digest  text COLLATE "C",
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (repository_id, digest),
    CONSTRAINT manifests_size_matches CHECK (size = octet_length(content))
);
-- Referrers: one index range scan, already in digest order.
CREATE INDEX manifests_referrers_idx ON manifests (repository_id, subject_digest, digest)
    WHERE subject_digest IS NOT NULL;

-- What each manifest needs: blobs (config, layers) and child manifests (of an index).
CREATE TABLE manifest_references (
    repository_id      bigint NOT NULL,
    manifest_digest    text COLLATE "C" NOT NULL,
    referenced_digest  text COLLATE "C" NOT NULL,
    kind               text NOT NULL CHECK (kind IN ('blob', 'manifest')),
    PRIMARY KEY (repository_id, manifest_digest, referenced_digest, kind),
    FOREIGN KEY (repository_id, manifest_digest)
        REFERENCES manifests (repository_id, digest) ON DELETE CASCADE
);
CREATE INDEX manifest_references_referenced_idx ON manifest_references (referenced_digest);

-- A tag can never point at a missing manifest: deleting the manifest deletes its tags.
CREATE TABLE tags (
    repository_id    bigint NOT NULL,
    name             text COLLATE "C" NOT NULL,
    manifest_digest  text COLLATE "C" NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (repository_id, name),
    FOREIGN KEY (repository_id, manifest_digest)
        REFERENCES manifests (repository_id, digest) ON DELETE CASCADE
);
-- For the cascade from manifests (find the tags of one manifest).
CREATE INDEX tags_manifest_idx ON tags (repository_id, manifest_digest);

CREATE TABLE upload_sessions (
    id              uuid PRIMARY KEY,
    repository_id   bigint NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    bytes_received  bigint NOT NULL DEFAULT 0 CHECK (bytes_received >= 0),
    -- Serialized running sha256 over all bytes received.
    hash_state      bytea NOT NULL,
    chunk_count     integer NOT NULL DEFAULT 0 CHECK (chunk_count >= 0),
    started_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
-- For expiring abandoned sessions.
CREATE INDEX upload_sessions_updated_at_idx ON upload_sessions (updated_at);

-- Bytes of an upload already stored (pinned) in the blob store, in order.
CREATE TABLE upload_chunks (
    upload_id    uuid NOT NULL REFERENCES upload_sessions (id) ON DELETE CASCADE,
    byte_offset  bigint NOT NULL CHECK (byte_offset >= 0),
    size         bigint NOT NULL CHECK (size > 0),
    cid          text NOT NULL,
    PRIMARY KEY (upload_id, byte_offset)
);
CREATE INDEX upload_chunks_cid_idx ON upload_chunks (cid);
