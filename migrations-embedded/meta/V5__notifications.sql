-- The notifications outbox in the embedded store, as the PostgreSQL schema's
-- V5__notifications.sql (times in Unix milliseconds).
CREATE TABLE notification_outbox (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint       TEXT NOT NULL,
    event          TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    attempts       INTEGER NOT NULL DEFAULT 0,
    next_attempt   INTEGER NOT NULL,
    claimed_by     TEXT,
    claimed_until  INTEGER,
    failed_at      INTEGER,
    last_error     TEXT
);
CREATE INDEX notification_outbox_due_idx ON notification_outbox (endpoint, id)
    WHERE failed_at IS NULL;
