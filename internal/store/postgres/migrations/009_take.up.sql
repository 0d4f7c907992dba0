-- Leasing by state, for the Boskos-compatible API (issue 6).
--
-- A Boskos client may lease a resource of a type from any state, not only
-- from free, and wait for one with a request id. Those requests queue per
-- (type, state) and are served by rank, as Boskos serves them: a request
-- is served once there are at least as many candidates as requests ahead
-- of it, plus one. berth's own requests (free to busy) keep their queue,
-- which hands a released resource straight to the first waiter.
CREATE TABLE state_requests (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    type       TEXT NOT NULL,
    state      TEXT NOT NULL,
    owner      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX state_requests_queue ON state_requests (type, state, seq);

-- A take by state looks for the unleased resource of a type in a state
-- that has waited longest.
CREATE INDEX resources_unleased ON resources (type, state, state_changed_at, name) WHERE lease_id IS NULL;
