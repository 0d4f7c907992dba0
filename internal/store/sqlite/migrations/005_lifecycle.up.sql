-- Janitors, quarantine, drain and dynamic pools (issue 5).
--
-- A resource records where it came from (source: config, api, dynamic),
-- so that reconciling the config leaves alone what was added at runtime
-- or made by a provisioner; whether an admin drained it; and its
-- cleaning: failed attempts since it went dirty, the time before which it
-- is not tried again (0: at once), and whether it is to be cleaned deeply
-- (its holder reported it broken). created_at is when it joined the
-- store (a dynamic pool's lifespan counts from it); rows from before
-- take the time of their last change.
ALTER TABLE resources ADD COLUMN source TEXT NOT NULL DEFAULT 'config';
ALTER TABLE resources ADD COLUMN draining INTEGER NOT NULL DEFAULT 0;
ALTER TABLE resources ADD COLUMN clean_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE resources ADD COLUMN next_clean_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE resources ADD COLUMN deep_clean INTEGER NOT NULL DEFAULT 0;
ALTER TABLE resources ADD COLUMN created_at INTEGER;
UPDATE resources SET created_at = state_changed_at;

-- A lease is for use (the resource is busy) or for cleaning (a janitor
-- holds it; it is cleaning).
ALTER TABLE leases ADD COLUMN kind TEXT NOT NULL DEFAULT 'use';

-- What a janitor, provisioner or deprovisioner printed, on the event of
-- its attempt.
ALTER TABLE events ADD COLUMN output TEXT NOT NULL DEFAULT '';

-- Pools an admin drained. Kept apart from pools, which a config sync
-- rewrites, so that a drain survives a restart.
CREATE TABLE pool_drains (
    type    TEXT PRIMARY KEY,
    reason  TEXT NOT NULL,
    actor   TEXT NOT NULL,
    since   INTEGER NOT NULL
);

-- Acquire skips drained resources; the index follows.
DROP INDEX resources_free;
CREATE INDEX resources_free ON resources (type, state_changed_at) WHERE state = 'free' AND retiring = 0 AND health_ok = 1 AND draining = 0;
-- Janitors claim the dirty resource of a type that has waited longest.
CREATE INDEX resources_dirty ON resources (type, state_changed_at) WHERE state = 'dirty';

-- A dynamic pool's sizing (JSON of berth.Dynamic), '' for a static pool.
ALTER TABLE pools ADD COLUMN dynamic TEXT NOT NULL DEFAULT '';
