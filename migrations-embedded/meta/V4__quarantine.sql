-- Integrity in the embedded store, as the PostgreSQL schema's V4__quarantine.sql: blobs
-- whose stored bytes failed a scrub, and named leases (times in Unix milliseconds). V5 is
-- reserved for another branch.
CREATE TABLE quarantined_blobs (
    digest          TEXT PRIMARY KEY NOT NULL REFERENCES blobs (digest) ON DELETE CASCADE,
    reason          TEXT NOT NULL,
    quarantined_at  INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE leases (
    name        TEXT PRIMARY KEY NOT NULL,
    holder      TEXT NOT NULL,
    expires_at  INTEGER NOT NULL
) WITHOUT ROWID;
