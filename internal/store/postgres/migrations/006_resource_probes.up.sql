-- The time and message of the latest probe of a resource whose health did
-- not change, kept apart from resources: writing them into resources, a
-- thousand rows a second for 10,000 probed resources, locked those rows,
-- and acquire, which skips locked rows, then passed over free resources
-- (0.5 % of acquires found "nothing free" beside free ones; a waiter could
-- queue beside a free resource). A row here exists only since the last
-- change of its resource's health, which is written into resources and
-- deletes the row; readers take this row's time and message when there is
-- one. No foreign key: its check would lock the resource row too.
CREATE TABLE resource_probes (
    name        TEXT PRIMARY KEY,
    probe_time  BIGINT NOT NULL,
    message     TEXT NOT NULL
);
ALTER TABLE resource_probes SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000);
