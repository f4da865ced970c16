-- The notifications outbox (src/registry/notify/, docs/notifications.md). One row per event
-- and endpoint, written in the transaction of the change it reports, so an acknowledged
-- change is never without its event. Delivered rows are deleted; a row that used up its
-- attempts is kept as failed until replayed (`ipfs-registry notifications replay`).
CREATE TABLE notification_outbox (
    id             bigserial PRIMARY KEY,
    endpoint       text COLLATE "C" NOT NULL,
    -- One event of the envelope's `events` array, as JSON text.
    event          text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    attempts       integer NOT NULL DEFAULT 0,
    next_attempt   timestamptz NOT NULL DEFAULT now(),
    -- The replica delivering it, until `claimed_until` (a crashed one's claim expires).
    claimed_by     text,
    claimed_until  timestamptz,
    failed_at      timestamptz,
    last_error     text
);
-- What a delivery round claims: due rows of one endpoint, oldest first.
CREATE INDEX notification_outbox_due_idx ON notification_outbox (endpoint, id)
    WHERE failed_at IS NULL;
