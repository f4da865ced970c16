-- The embedded (SQLite) metadata store (src/meta/sqlite/): the same tables and guarantees
-- as the PostgreSQL schema in migrations/. Text compares bytewise (SQLite's BINARY
-- collation), so tag and catalog pagination are index range scans in the same order.
-- Times are milliseconds since the Unix epoch. Never edit this file once applied.

CREATE TABLE repositories (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE CHECK (name <> ''),
    created_at  INTEGER NOT NULL
);

CREATE TABLE blobs (
    digest          TEXT PRIMARY KEY NOT NULL,
    cid             TEXT NOT NULL,
    size            INTEGER NOT NULL CHECK (size >= 0),
    import_profile  TEXT NOT NULL,
    created_at      INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX blobs_cid_idx ON blobs (cid);

CREATE TABLE repository_blobs (
    repository_id  INTEGER NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    digest         TEXT NOT NULL REFERENCES blobs (digest),
    created_at     INTEGER NOT NULL,
    PRIMARY KEY (repository_id, digest)
) WITHOUT ROWID;
CREATE INDEX repository_blobs_digest_idx ON repository_blobs (digest);

CREATE TABLE manifests (
    repository_id   INTEGER NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    digest          TEXT NOT NULL,
    media_type      TEXT NOT NULL,
    artifact_type   TEXT,
    content         BLOB NOT NULL,
    parsed          TEXT NOT NULL CHECK (json_valid(parsed)),
    size            INTEGER NOT NULL CHECK (size = length(content)),
    subject_digest  TEXT,
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (repository_id, digest)
) WITHOUT ROWID;
CREATE INDEX manifests_referrers_idx ON manifests (repository_id, subject_digest, digest)
    WHERE subject_digest IS NOT NULL;

CREATE TABLE manifest_references (
    repository_id      INTEGER NOT NULL,
    manifest_digest    TEXT NOT NULL,
    referenced_digest  TEXT NOT NULL,
    kind               TEXT NOT NULL CHECK (kind IN ('blob', 'manifest')),
    PRIMARY KEY (repository_id, manifest_digest, referenced_digest, kind),
    FOREIGN KEY (repository_id, manifest_digest)
        REFERENCES manifests (repository_id, digest) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX manifest_references_referenced_idx ON manifest_references (referenced_digest);

CREATE TABLE tags (
    repository_id    INTEGER NOT NULL,
    name             TEXT NOT NULL,
    manifest_digest  TEXT NOT NULL,
    updated_at       INTEGER NOT NULL,
    PRIMARY KEY (repository_id, name),
    FOREIGN KEY (repository_id, manifest_digest)
        REFERENCES manifests (repository_id, digest) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX tags_manifest_idx ON tags (repository_id, manifest_digest);

CREATE TABLE upload_sessions (
    id              TEXT PRIMARY KEY NOT NULL,
    repository_id   INTEGER NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    bytes_received  INTEGER NOT NULL DEFAULT 0 CHECK (bytes_received >= 0),
    hash_state      BLOB NOT NULL,
    chunk_count     INTEGER NOT NULL DEFAULT 0 CHECK (chunk_count >= 0),
    started_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX upload_sessions_updated_at_idx ON upload_sessions (updated_at);

CREATE TABLE upload_chunks (
    upload_id    TEXT NOT NULL REFERENCES upload_sessions (id) ON DELETE CASCADE,
    byte_offset  INTEGER NOT NULL CHECK (byte_offset >= 0),
    size         INTEGER NOT NULL CHECK (size > 0),
    cid          TEXT NOT NULL,
    PRIMARY KEY (upload_id, byte_offset)
) WITHOUT ROWID;
CREATE INDEX upload_chunks_cid_idx ON upload_chunks (cid);
