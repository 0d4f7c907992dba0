-- The floor: take the free resource free longest and give it back, two
-- statements, each its own commit. No lease row, no event, no lock.
UPDATE resources SET state = 'busy', state_changed_at = (extract(epoch FROM clock_timestamp()) * 1e9)::bigint
WHERE name = (SELECT name FROM resources WHERE type = 'p' AND state = 'free' AND NOT retiring
    ORDER BY state_changed_at, name LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING name \gset
UPDATE resources SET state = 'free', state_changed_at = (extract(epoch FROM clock_timestamp()) * 1e9)::bigint WHERE name = :name;
