package postgres

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/store"
)

// ResourceHealth records probe results. Results that change nothing but
// the probe time, nearly all of them, go to resource_probes with one
// statement, which reads resources without locking a row: an acquire,
// which skips locked rows, must never pass over a free resource because
// its probe time was being written. The changes of status or reason then
// go into resources in one transaction: the queue locks of their types
// and their rows, in name order, as a release and a pool sync take them;
// the conditions with one statement; their events; and a handoff for each
// resource that became leasable while a request of its type waits.
func (s *Store) ResourceHealth(ctx context.Context, p *store.ResourceHealthParams) (*store.ResourceHealthResult, error) {
	ctx, cancel := s.bound(ctx, opTimeout)
	defer cancel()
	t := now(p.Now)
	cols := healthArrays(p.Updates, t)
	rows, err := s.pool.Query(ctx, `INSERT INTO resource_probes (name, status, reason, probe_time, message)
		SELECT u.n, u.s, u.r, u.pt, u.m FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[]) AS u(pt, n, t, s, r, m, h)
		JOIN resources r ON r.name = u.n AND r.type = u.t AND r.health_status = u.s AND r.health_reason = u.r
		JOIN pools p ON p.type = u.t AND p.probe_hash = u.h
		ON CONFLICT (name) DO UPDATE SET status = excluded.status, reason = excluded.reason,
			probe_time = excluded.probe_time, message = excluded.message
		RETURNING name`, cols.times, cols.names, cols.types, cols.statuses, cols.reasons, cols.messages, cols.hashes)
	if err != nil {
		return nil, fmt.Errorf("postgres: record probes: %w", err)
	}
	done, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("postgres: record probes: %w", err)
	}
	recorded := make(map[string]bool, len(done))
	for _, n := range done {
		recorded[n] = true
	}
	var changes []store.HealthUpdate
	for _, u := range p.Updates {
		if !recorded[u.Name] {
			changes = append(changes, u)
		}
	}
	res := &store.ResourceHealthResult{}
	if len(changes) == 0 {
		return res, nil
	}
	slices.SortFunc(changes, func(a, b store.HealthUpdate) int { return cmpString(a.Name, b.Name) })
	err = s.tx(ctx, func(tx pgx.Tx) error {
		*res = store.ResourceHealthResult{}
		return recordChanges(ctx, tx, changes, t, p.Actor, res)
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: record health: %w", err)
	}
	return res, nil
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

type healthCols struct {
	times                                             []int64
	names, types, statuses, reasons, messages, hashes []string
}

func healthArrays(ups []store.HealthUpdate, t time.Time) healthCols {
	n := len(ups)
	c := healthCols{times: make([]int64, n), names: make([]string, n), types: make([]string, n),
		statuses: make([]string, n), reasons: make([]string, n), messages: make([]string, n), hashes: make([]string, n)}
	for i, u := range ups {
		c.times[i] = nanos(probed(u, t))
		c.names[i], c.types[i], c.statuses[i], c.reasons[i], c.messages[i] = u.Name, u.Type, string(u.Status), u.Reason, u.Message
		c.hashes[i] = u.ProbeHash
	}
	return c
}

// recordChanges writes changes (sorted by name) of status or reason.
func recordChanges(ctx context.Context, tx pgx.Tx, changes []store.HealthUpdate, t time.Time, actor string, res *store.ResourceHealthResult) error {
	types := map[string]bool{}
	for _, u := range changes {
		types[u.Type] = true
	}
	for _, typ := range slices.Sorted(func(yield func(string) bool) {
		for k := range types {
			if !yield(k) {
				return
			}
		}
	}) {
		if _, err := tx.Exec(ctx, queueLockShared, typ); err != nil {
			return fmt.Errorf("lock queue of %s: %w", typ, err)
		}
	}
	cols := healthArrays(changes, t)
	rows, err := tx.Query(ctx, `SELECT r.name, r.type, r.health_status, coalesce(p.probe_hash, '') FROM resources r
		LEFT JOIN pools p ON p.type = r.type WHERE r.name = ANY($1) ORDER BY r.name FOR UPDATE OF r`, cols.names)
	if err != nil {
		return fmt.Errorf("lock resources: %w", err)
	}
	type was struct{ Name, Type, Status, Hash string }
	locked, err := pgx.CollectRows(rows, pgx.RowToStructByPos[was])
	if err != nil {
		return fmt.Errorf("lock resources: %w", err)
	}
	before := make(map[string]was, len(locked))
	for _, w := range locked {
		before[w.Name] = w
	}
	var apply []store.HealthUpdate
	for _, u := range changes {
		if w, ok := before[u.Name]; !ok || w.Type != u.Type || w.Hash != u.ProbeHash {
			// Gone, moved to another pool, or probed by a spec the stored
			// config no longer has.
			res.Missing = append(res.Missing, u.Name)
			continue
		}
		apply = append(apply, u)
	}
	if len(apply) == 0 {
		return nil
	}
	cols = healthArrays(apply, t)
	rows, err = tx.Query(ctx, `UPDATE resources r SET health_status = u.s, health_reason = u.r, health_message = u.m,
			health_probe_time = u.pt, health_transition_time = CASE WHEN r.health_status = u.s THEN r.health_transition_time ELSE $7 END,
			health_ok = `+healthOKExpr("u.s", "r")+`
		FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) AS u(pt, n, t, s, r, m)
		WHERE r.name = u.n
		RETURNING r.name, r.health_ok AND r.state = 'free' AND NOT r.retiring`,
		cols.times, cols.names, cols.types, cols.statuses, cols.reasons, cols.messages, nanos(t))
	if err != nil {
		return fmt.Errorf("record health: %w", err)
	}
	type leasable struct {
		Name string
		Free bool
	}
	after, err := pgx.CollectRows(rows, pgx.RowToStructByPos[leasable])
	if err != nil {
		return fmt.Errorf("record health: %w", err)
	}
	// The probes before these changes no longer describe the resources.
	if _, err := tx.Exec(ctx, "DELETE FROM resource_probes WHERE name = ANY($1)", cols.names); err != nil {
		return fmt.Errorf("record health: %w", err)
	}
	ev := &events{}
	for _, u := range apply {
		e := &berth.Event{Time: t, Resource: u.Name, Type: u.Type, Kind: berth.EventHealth, From: before[u.Name].Status,
			To: string(u.Status), Reason: u.Reason, Actor: actor, Message: u.Message}
		ev.add(e)
		res.Changed = append(res.Changed, e)
	}
	ttl := map[string]time.Duration{}
	for _, u := range apply {
		ttl[u.Name] = u.LeaseTTL
	}
	var waiting map[string]bool
	for _, a := range after {
		if !a.Free {
			continue
		}
		if waiting == nil {
			if waiting, err = typesWithRequests(ctx, tx); err != nil {
				return err
			}
		}
		// Only where a request waits: 10,000 resources coming up must not
		// cost a read each.
		if !waiting[before[a.Name].Type] {
			continue
		}
		r, err := resourceGet(ctx, tx, a.Name)
		if err != nil {
			return err
		}
		h, err := handoff(ctx, tx, ev, r, t, ttl[a.Name], actor)
		if err != nil {
			return err
		}
		if h != nil {
			res.Handoffs = append(res.Handoffs, *h)
		}
	}
	return ev.flush(ctx, tx)
}

// probed is when u's probe was made.
func probed(u store.HealthUpdate, now time.Time) time.Time {
	if u.ProbeTime.IsZero() {
		return now
	}
	return u.ProbeTime
}
