-- Pull-through mirrors (docs/mirror.md). Never edit this file once applied; add V8__...
--
-- A mirrored repository holds manifests fetched from an upstream registry whose blobs are
-- fetched only when a client asks for them: its manifests were stored without the
-- reference check a push passes. Its references are recorded as a push's are, so GC keeps
-- every blob fetched for a kept manifest; a reference to a blob never fetched keeps
-- nothing (GC deletes only what exists and nothing references).
CREATE TABLE mirrored_repositories (
    repository_id  bigint PRIMARY KEY REFERENCES repositories (id) ON DELETE CASCADE,
    -- The upstream repository's URL (`https://host/v2/<name>`), for people.
    upstream       text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- When each mirrored tag was last fetched or confirmed by the upstream: it is served
-- without asking the upstream until the mirror's manifest_ttl has passed since then.
CREATE TABLE mirrored_tags (
    repository_id  bigint NOT NULL,
    name           text COLLATE "C" NOT NULL,
    checked_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (repository_id, name),
    FOREIGN KEY (repository_id, name) REFERENCES tags (repository_id, name) ON DELETE CASCADE
);
