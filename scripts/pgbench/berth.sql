-- What berth's PostgreSQL store sends for one acquire and one release when
-- nothing waits (internal/store/postgres/leases.go: acquireAtOnce,
-- releaseAtOnce; the release of a lease the same replica granted): two
-- pipelines, each one implicit transaction. Keep in step with the store.
\set rq random(1, 9000000000000000)
\startpipeline
SELECT pg_advisory_xact_lock(hashtextextended('berth-request:' || current_schema() || ':' || 'q' || :rq, 0));
WITH pick AS (
    SELECT name FROM resources
    WHERE type = 'p' AND state = 'free' AND NOT retiring
        AND NOT EXISTS (SELECT 1 FROM requests WHERE id = 'q' || :rq)
        AND NOT EXISTS (SELECT 1 FROM leases WHERE request_id = 'q' || :rq AND ended_at IS NULL
            AND expires_at > (extract(epoch FROM clock_timestamp()) * 1e9)::bigint)
    ORDER BY state_changed_at, name LIMIT 1 FOR UPDATE SKIP LOCKED
), taken AS (
    UPDATE resources SET state = 'busy', state_reason = '', state_changed_at = (extract(epoch FROM clock_timestamp()) * 1e9)::bigint,
        owner = 'job', lease_id = 'l' || :rq
    WHERE name = (SELECT name FROM pick)
    RETURNING *
), lease AS (
    INSERT INTO leases (id, resource, type, owner, request_id, ttl, acquired_at, expires_at)
    SELECT 'l' || :rq, name, type, 'job', 'q' || :rq, 600000000000, state_changed_at, state_changed_at + 600000000000 FROM taken
    RETURNING token
), event AS (
    INSERT INTO events (time, resource, type, kind, from_state, to_state, reason, actor, lease_id, token, message)
    SELECT taken.state_changed_at, taken.name, taken.type, 'lease', 'free', 'busy', 'acquired', 'job', 'l' || :rq, lease.token, 'leased to job'
    FROM taken, lease
)
SELECT lease.token, taken.name FROM taken, lease;
\endpipeline
\startpipeline
SELECT pg_advisory_xact_lock_shared(hashtextextended('berth-queue:' || current_schema() || ':' || 'p', 0));
SELECT 1 FROM leases l JOIN resources r ON r.name = l.resource WHERE l.id = 'l' || :rq FOR UPDATE;
WITH l AS (
    UPDATE leases SET ended_at = (extract(epoch FROM clock_timestamp()) * 1e9)::bigint, end_reason = 'released'
    WHERE id = 'l' || :rq AND ended_at IS NULL AND expires_at > (extract(epoch FROM clock_timestamp()) * 1e9)::bigint
        AND EXISTS (SELECT 1 FROM resources r WHERE r.name = leases.resource AND r.lease_id = leases.id AND NOT r.retiring)
        AND NOT EXISTS (SELECT 1 FROM requests q WHERE q.type = leases.type AND q.expires_at > (extract(epoch FROM clock_timestamp()) * 1e9)::bigint)
    RETURNING *
), old AS (
    SELECT r.name, r.state FROM resources r, l WHERE r.name = l.resource
), moved AS (
    UPDATE resources SET state = 'free', state_reason = '', state_changed_at = l.ended_at, owner = '', lease_id = NULL
    FROM l WHERE resources.name = l.resource
    RETURNING resources.*
), event AS (
    INSERT INTO events (time, resource, type, kind, from_state, to_state, reason, actor, lease_id, token, message)
    SELECT l.ended_at, moved.name, moved.type, 'lease', old.state, 'free', 'released', l.owner, l.id, l.token, ''
    FROM l, old, moved
)
SELECT l.token, moved.name FROM l, moved;
\endpipeline
