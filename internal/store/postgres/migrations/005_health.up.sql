-- Health probes (issue 4). A pool records its probe kind and whether only
-- Connected resources may be leased; each resource carries health_ok, kept
-- by every write that changes its health or its pool's policy, so that
-- acquire filters on the predicate of its partial index instead of joining
-- the pool. Disconnected resources are never health_ok. Constant defaults:
-- no table rewrite.
ALTER TABLE pools ADD COLUMN probe TEXT NOT NULL DEFAULT '',
    ADD COLUMN require_connected BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE resources ADD COLUMN health_ok BOOLEAN NOT NULL DEFAULT true;

DROP INDEX resources_free;
CREATE INDEX resources_free ON resources (type, state_changed_at, name) WHERE state = 'free' AND NOT retiring AND health_ok;
