-- sekoia-relay SQLite store, version 1. Idempotent: stores created before versioned migrations
-- already have these tables.
CREATE TABLE IF NOT EXISTS events (
    id          INTEGER PRIMARY KEY,
    public_id   TEXT    NOT NULL,          -- the event_id answered to SEKOIA.IO (UUID v7)
    hook        TEXT    NOT NULL,          -- hook name (never its id)
    dedup_key   TEXT    NOT NULL,
    type        TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    alert_uuid  TEXT,
    short_id    TEXT,
    body        TEXT    NOT NULL,          -- the webhook JSON as received
    received_at INTEGER NOT NULL           -- unix ms
);
CREATE INDEX IF NOT EXISTS events_dedup ON events (dedup_key, received_at);

-- One row per (event, target): each target's delivery state is independent.
CREATE TABLE IF NOT EXISTS deliveries (
    id          INTEGER PRIMARY KEY,
    event_id    INTEGER NOT NULL REFERENCES events (id),
    target      TEXT    NOT NULL,
    state       TEXT    NOT NULL,          -- pending | delivered | dead | skipped (claims are in memory)
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_at     INTEGER NOT NULL,          -- unix ms: earliest next attempt
    age_from    INTEGER NOT NULL,          -- unix ms: max_age_secs counts from here
    updated_at  INTEGER NOT NULL,
    last_status INTEGER,                   -- last HTTP status, if any
    last_error  TEXT,                      -- last failure, human-readable
    response    TEXT,                      -- bounded excerpt of the last response body
    body        TEXT,                      -- rendered request body, kept for retries and dead letters
    UNIQUE (event_id, target)
);
-- Only pending rows are indexed: the index stays as small as the backlog, and finishing a
-- delivery removes its entry instead of moving it.
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (target, next_at) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_dead ON deliveries (id) WHERE state = 'dead';

CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
INSERT OR IGNORE INTO meta (k, v) VALUES ('schema_version', '1'), ('probe', '0');
