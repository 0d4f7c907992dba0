-- The identity of each pool's probe spec (issue 4): a resource probed
-- with another spec, or at another target, keeps no health from before,
-- and results of a replica with another config are dropped.
ALTER TABLE pools ADD COLUMN probe_hash TEXT NOT NULL DEFAULT '';
