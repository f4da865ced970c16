-- Joined uploads whose recursive pin is still to be made, as the PostgreSQL schema's
-- V11__pending_pins.sql (times in milliseconds since the epoch, as the code writes them).
-- Never edit this file once applied; add V12__... instead.
CREATE TABLE pending_pins (
    root       TEXT NOT NULL,
    cid        TEXT NOT NULL,
    held_at    INTEGER NOT NULL,
    PRIMARY KEY (root, cid)
) WITHOUT ROWID;
CREATE INDEX pending_pins_cid_idx ON pending_pins (cid);
