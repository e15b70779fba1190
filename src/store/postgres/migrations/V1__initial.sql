-- sekoia-relay PostgreSQL store, version 1. Times are unix milliseconds (BIGINT), as in SQLite.
CREATE TABLE events (
    id          BIGSERIAL PRIMARY KEY,
    public_id   TEXT   NOT NULL UNIQUE,     -- the event_id answered to SEKOIA.IO (UUID v7)
    hook        TEXT   NOT NULL,            -- hook name (never its id)
    dedup_key   TEXT   NOT NULL,
    type        TEXT   NOT NULL,
    action      TEXT   NOT NULL,
    alert_uuid  TEXT,
    short_id    TEXT,
    body        TEXT   NOT NULL,            -- the webhook JSON as received
    received_at BIGINT NOT NULL
);
CREATE INDEX events_received ON events (received_at);

-- Dedup across replicas: one row per key, the event that key last got accepted as. The
-- primary key makes two replicas inserting the same key at once wait for each other, so
-- exactly one of them accepts (INSERT … ON CONFLICT, no read-then-write race).
CREATE TABLE dedup (
    dedup_key   TEXT   PRIMARY KEY,
    public_id   TEXT   NOT NULL,
    received_at BIGINT NOT NULL
);

-- One row per (event, target). A claim is a lease: claimed_by = the replica, lease_until =
-- when the others may take the row over if that replica stopped renewing it.
CREATE TABLE deliveries (
    id          BIGSERIAL PRIMARY KEY,
    event_id    BIGINT  NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    target      TEXT    NOT NULL,
    state       TEXT    NOT NULL,           -- pending | delivered | dead | skipped
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_at     BIGINT  NOT NULL,
    age_from    BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL,
    last_status INTEGER,
    last_error  TEXT,
    response    TEXT,
    body        TEXT,
    claimed_by  TEXT,
    lease_until BIGINT,
    UNIQUE (event_id, target)
);
CREATE INDEX deliveries_due ON deliveries (target, next_at) WHERE state = 'pending';
CREATE INDEX deliveries_dead ON deliveries (id) WHERE state = 'dead';
CREATE INDEX deliveries_claimed ON deliveries (claimed_by) WHERE claimed_by IS NOT NULL;

-- Global pacing (GCRA): `tat` is the next free send slot of a key (a target, the SEKOIA.IO
-- API); `paused_until` is a Retry-After every replica honours.
CREATE TABLE pacing (
    key          TEXT   PRIMARY KEY,
    tat          BIGINT NOT NULL DEFAULT 0,
    paused_until BIGINT NOT NULL DEFAULT 0
);

-- /readyz writes here: a real write, one row per replica.
CREATE TABLE replicas (
    replica TEXT   PRIMARY KEY,
    seen_at BIGINT NOT NULL
);
