-- Times are Unix nanoseconds (INTEGER); durations are nanoseconds.

CREATE TABLE pools (
    type        TEXT PRIMARY KEY,
    lease_ttl   INTEGER NOT NULL,
    janitor     TEXT NOT NULL DEFAULT 'none'
);

CREATE TABLE resources (
    name                    TEXT PRIMARY KEY,
    type                    TEXT NOT NULL,
    state                   TEXT NOT NULL,
    state_reason            TEXT NOT NULL DEFAULT '',
    state_changed_at        INTEGER NOT NULL,
    owner                   TEXT NOT NULL DEFAULT '',
    lease_id                TEXT,
    user_data               TEXT NOT NULL DEFAULT '{}',
    labels                  TEXT NOT NULL DEFAULT '{}',
    health_status           TEXT NOT NULL DEFAULT 'Unknown',
    health_reason           TEXT NOT NULL DEFAULT '',
    health_message          TEXT NOT NULL DEFAULT '',
    health_probe_time       INTEGER,
    health_transition_time  INTEGER,
    retiring                INTEGER NOT NULL DEFAULT 0
);

-- Acquire picks the least recently changed free resource of a type: one
-- index seek whatever the pool size.
CREATE INDEX resources_pick ON resources (type, state, state_changed_at);

-- token is the fencing token: AUTOINCREMENT never reuses a value, so tokens
-- only grow.
CREATE TABLE leases (
    token        INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    resource     TEXT NOT NULL,
    type         TEXT NOT NULL,
    owner        TEXT NOT NULL,
    request_id   TEXT,
    ttl          INTEGER NOT NULL,
    acquired_at  INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    ended_at     INTEGER,
    end_reason   TEXT NOT NULL DEFAULT ''
);

CREATE INDEX leases_expiry ON leases (expires_at) WHERE ended_at IS NULL;
CREATE INDEX leases_request ON leases (request_id) WHERE request_id IS NOT NULL;

-- Waiting acquires. seq orders arrivals; a row leaves when it is served,
-- cancelled or pruned after expiry.
CREATE TABLE requests (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    type        TEXT NOT NULL,
    owner       TEXT NOT NULL,
    priority    INTEGER NOT NULL DEFAULT 0,
    selector    TEXT NOT NULL DEFAULT '{}',
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);

CREATE INDEX requests_queue ON requests (type, priority DESC, seq);

-- Events are never deleted from the newest end, so a plain rowid gives ids
-- that only grow without AUTOINCREMENT's extra write per insert.
CREATE TABLE events (
    id          INTEGER PRIMARY KEY,
    time        INTEGER NOT NULL,
    resource    TEXT NOT NULL DEFAULT '',
    type        TEXT NOT NULL DEFAULT '',
    kind        TEXT NOT NULL,
    from_state  TEXT NOT NULL DEFAULT '',
    to_state    TEXT NOT NULL DEFAULT '',
    reason      TEXT NOT NULL DEFAULT '',
    actor       TEXT NOT NULL DEFAULT '',
    lease_id    TEXT NOT NULL DEFAULT '',
    token       INTEGER NOT NULL DEFAULT 0,
    message     TEXT NOT NULL DEFAULT ''
);

CREATE INDEX events_resource ON events (resource, id);
CREATE INDEX events_type ON events (type, id);
CREATE INDEX events_time ON events (time);
