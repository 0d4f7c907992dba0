-- Two fixes of the Boskos-compatible API (issue 6 review).
--
-- A waiting request says the state its resource is to be in: a Boskos
-- client that leases from free to a state of its own ("leased", say)
-- waits in the one queue of everyone who leases from free, so that no
-- later waiter overtakes it.
ALTER TABLE requests ADD COLUMN dest TEXT NOT NULL DEFAULT 'busy';

-- A lease handed to a waiter is unclaimed until the waiter comes for it
-- (polls with its request id, or heartbeats). One that runs out
-- unclaimed was never used: its resource goes back to free and to the
-- next waiter, not to dirty.
ALTER TABLE leases ADD COLUMN claimed INTEGER NOT NULL DEFAULT 1;
