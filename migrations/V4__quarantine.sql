-- Integrity (src/registry/scrub.rs, docs/operations.md "Integrity"). V5 is reserved for
-- another branch.

-- Blobs whose stored bytes failed a scrub (wrong size, digest or CID, or gone). A
-- quarantined blob is seen in no repository (pulls answer 404, so clients push it again)
-- until a verified push of the same digest, or a later scrub that finds it sound, releases
-- it. The row goes with its blob when garbage collection deletes that.
CREATE TABLE quarantined_blobs (
    digest          text COLLATE "C" PRIMARY KEY REFERENCES blobs (digest) ON DELETE CASCADE,
    reason          text NOT NULL,
    quarantined_at  timestamptz NOT NULL DEFAULT now()
);

-- Named leases with an expiry, for work one replica at a time should do (the periodic
-- scrub): taken when free or expired, renewed by its holder.
CREATE TABLE leases (
    name        text COLLATE "C" PRIMARY KEY,
    holder      text NOT NULL,
    expires_at  timestamptz NOT NULL
);
