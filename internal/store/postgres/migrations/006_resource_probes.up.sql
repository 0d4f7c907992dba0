-- The time and message of the latest probe of a resource whose health did
-- not change, kept apart from resources: writing them into resources, a
-- thousand rows a second for 10,000 probed resources, locked those rows,
-- and acquire, which skips locked rows, then passed over free resources
-- (0.5 % of acquires found "nothing free" beside free ones; a waiter could
-- queue beside a free resource). A change of health is written into
-- resources and deletes the row. The row also records the status and
-- reason it was probed under, and readers take its time and message only
-- while they are still the resource's: the write reads resources without
-- a lock, so a change committed just after that read could otherwise be
-- followed by a row that describes the state before it. No foreign key:
-- its check would lock the resource row too.
CREATE TABLE resource_probes (
    name        TEXT PRIMARY KEY,
    status      TEXT NOT NULL,
    reason      TEXT NOT NULL,
    probe_time  BIGINT NOT NULL,
    message     TEXT NOT NULL
);
ALTER TABLE resource_probes SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000);
