-- Health probes (issue 4). A pool records its probe kind and whether only
-- Connected resources may be leased; each resource carries health_ok, kept
-- by every write that changes its health or its pool's policy, so that
-- acquire filters on one column of a partial index instead of joining the
-- pool. Disconnected resources are never health_ok.
ALTER TABLE pools ADD COLUMN probe TEXT NOT NULL DEFAULT '';
ALTER TABLE pools ADD COLUMN require_connected INTEGER NOT NULL DEFAULT 0;
ALTER TABLE resources ADD COLUMN health_ok INTEGER NOT NULL DEFAULT 1;

-- Free resources that may be leased, in the order acquire takes them. A
-- pool with many disconnected free resources would otherwise make every
-- acquire step over them in resources_pick.
CREATE INDEX resources_free ON resources (type, state_changed_at) WHERE state = 'free' AND retiring = 0 AND health_ok = 1;
