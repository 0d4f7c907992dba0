package postgres

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/store"
)

const resourceColumns = `name, type, state, state_reason, state_changed_at, owner, lease_id,
	user_data, labels, health_status, health_reason, health_message,
	health_probe_time, health_transition_time, retiring,
	source, draining, clean_attempts, next_clean_at, deep_clean, created_at`

func scanResource(row pgx.Row) (*berth.Resource, error) {
	var d resourceDest
	if err := row.Scan(d.dest()...); err != nil {
		return nil, err
	}
	return d.resource(), nil
}

// resourceDest receives resourceColumns, alone or beside other columns of
// one row.
type resourceDest struct {
	r                  berth.Resource
	changed            int64
	leaseID            *string
	probeT, transition *int64
	nextClean          int64
	created            *int64
}

func (d *resourceDest) dest() []any {
	r := &d.r
	return []any{&r.Name, &r.Type, &r.State, &r.StateReason, &d.changed, &r.Owner, &d.leaseID,
		&r.UserData, &r.Labels, &r.Health.Status, &r.Health.Reason, &r.Health.Message,
		&d.probeT, &d.transition, &r.Retiring,
		&r.Source, &r.Draining, &r.CleanAttempts, &d.nextClean, &r.DeepClean, &d.created}
}

func (d *resourceDest) resource() *berth.Resource {
	r := d.r
	r.StateChangedAt = fromNanos(d.changed)
	if d.leaseID != nil {
		r.LeaseID = *d.leaseID
	}
	r.Health.LastProbeTime = nullTime(d.probeT)
	r.Health.LastTransitionTime = nullTime(d.transition)
	if d.nextClean != 0 {
		r.NextCleanAt = nullTime(&d.nextClean)
	}
	r.CreatedAt = nullTime(d.created)
	if r.UserData == nil {
		r.UserData = map[string]string{}
	}
	if r.Labels == nil {
		r.Labels = map[string]string{}
	}
	return &r
}

// querier is a pool or a transaction.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func (s *Store) ResourceGet(ctx context.Context, name string) (*berth.Resource, error) {
	ctx, cancel := s.bound(ctx, opTimeout)
	defer cancel()
	r, err := scanProbedResource(s.pool.QueryRow(ctx, "SELECT "+probedResourceColumns+" FROM "+probedResources+" WHERE r.name = $1", name))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: get resource %s: %w", name, err)
	}
	return r, nil
}

// probedResourceColumns are resourceColumns of resources r, then the
// latest probe's time and message from resource_probes p (NULL when the
// last probe changed the health, which resources holds then).
var probedResourceColumns = qualified("r", resourceColumns) + ", p.probe_time, p.message"

// probedResources joins the latest unchanged probe only while it was made
// under the resource's present status and reason (see migration 006).
const probedResources = "resources r LEFT JOIN resource_probes p ON p.name = r.name AND p.status = r.health_status AND p.reason = r.health_reason"

// scanProbedResource scans probedResourceColumns.
func scanProbedResource(row pgx.Row) (*berth.Resource, error) {
	var (
		d       resourceDest
		probeT  *int64
		message *string
	)
	if err := row.Scan(append(d.dest(), &probeT, &message)...); err != nil {
		return nil, err
	}
	r := d.resource()
	if probeT != nil && message != nil {
		r.Health.LastProbeTime = nullTime(probeT)
		r.Health.Message = *message
	}
	return r, nil
}

// resourceGet reads a resource as its row holds it, without the latest
// unchanged probe (transactions that act on the resource need no more).
func resourceGet(ctx context.Context, q querier, name string) (*berth.Resource, error) {
	r, err := scanResource(q.QueryRow(ctx, "SELECT "+resourceColumns+" FROM resources WHERE name = $1", name))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: get resource %s: %w", name, err)
	}
	return r, nil
}

func (s *Store) ResourceList(ctx context.Context, p *store.ResourceListParams) ([]*berth.Resource, error) {
	ctx, cancel := s.bound(ctx, opTimeout)
	defer cancel()
	var (
		where []string
		args  []any
	)
	if p.Type != "" {
		args = append(args, p.Type)
		where = append(where, fmt.Sprintf("r.type = $%d", len(args)))
	}
	if p.State != "" {
		args = append(args, string(p.State))
		where = append(where, fmt.Sprintf("r.state = $%d", len(args)))
	}
	if p.Health != "" {
		args = append(args, string(p.Health))
		where = append(where, fmt.Sprintf("r.health_status = $%d", len(args)))
	}
	if p.AfterName != "" {
		args = append(args, p.AfterType, p.AfterName)
		where = append(where, fmt.Sprintf("(r.type, r.name) > ($%d, $%d)", len(args)-1, len(args)))
	}
	q := "SELECT " + probedResourceColumns + " FROM " + probedResources
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY r.type, r.name"
	if p.Limit > 0 {
		args = append(args, p.Limit)
		q += fmt.Sprintf(" LIMIT $%d", len(args))
	}
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("postgres: list resources: %w", err)
	}
	defer rows.Close()
	out := []*berth.Resource{}
	for rows.Next() {
		r, err := scanProbedResource(rows)
		if err != nil {
			return nil, fmt.Errorf("postgres: list resources: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: list resources: %w", err)
	}
	return out, nil
}

func (s *Store) PoolList(ctx context.Context) ([]*berth.Pool, error) {
	ctx, cancel := s.bound(ctx, opTimeout)
	defer cancel()
	pools := map[string]*berth.Pool{}
	var order []string
	// One snapshot for the three reads, so that the counts agree.
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT p.type, p.lease_ttl, p.janitor, p.probe, p.dynamic, d.type IS NOT NULL
			FROM pools p LEFT JOIN pool_drains d ON d.type = p.type ORDER BY p.type`)
		if err != nil {
			return fmt.Errorf("list pools: %w", err)
		}
		for rows.Next() {
			p := &berth.Pool{States: map[berth.State]int{}, Health: map[berth.HealthStatus]int{}}
			var ttl int64
			if err := rows.Scan(&p.Type, &ttl, &p.Janitor, &p.Probe, &p.Dynamic, &p.Draining); err != nil {
				rows.Close()
				return fmt.Errorf("list pools: %w", err)
			}
			p.LeaseTTL = berth.Duration(ttl)
			pools[p.Type] = p
			order = append(order, p.Type)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("list pools: %w", err)
		}

		rows, err = tx.Query(ctx, `SELECT type, state, health_status, count(*),
			sum(CASE WHEN health_ok AND state = 'free' AND NOT retiring AND NOT draining THEN 1 ELSE 0 END),
			sum(CASE WHEN draining THEN 1 ELSE 0 END), count(lease_id)
			FROM resources GROUP BY type, state, health_status`)
		if err != nil {
			return fmt.Errorf("count resources: %w", err)
		}
		for rows.Next() {
			var (
				typ                           string
				state                         berth.State
				n, leasable, draining, leased int
				health                        berth.HealthStatus
			)
			if err := rows.Scan(&typ, &state, &health, &n, &leasable, &draining, &leased); err != nil {
				rows.Close()
				return fmt.Errorf("count resources: %w", err)
			}
			p, ok := pools[typ]
			if !ok {
				// Resources of a pool gone from the config, still leased.
				p = &berth.Pool{Type: typ, Janitor: "none", States: map[berth.State]int{}, Health: map[berth.HealthStatus]int{}}
				pools[typ] = p
				order = append(order, typ)
			}
			p.States[state] += n
			p.Total += n
			p.Health[health] += n
			p.DrainingResources += draining
			p.Leased += leased
			if !p.Draining {
				p.Leasable += leasable
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("count resources: %w", err)
		}

		rows, err = tx.Query(ctx, "SELECT type, count(*) FROM requests GROUP BY type")
		if err != nil {
			return fmt.Errorf("count requests: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var (
				typ string
				n   int
			)
			if err := rows.Scan(&typ, &n); err != nil {
				return fmt.Errorf("count requests: %w", err)
			}
			if p, ok := pools[typ]; ok {
				p.Waiters = n
			}
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	out := make([]*berth.Pool, 0, len(order))
	for _, t := range order {
		out = append(out, pools[t])
	}
	return out, nil
}

// syncLock serializes config reconciliation between replicas that start
// together: each reads every resource and decides from what it read.
const syncLock = "SELECT pg_advisory_xact_lock(hashtextextended('berth-sync:' || current_schema(), 0))"

// PoolSync makes the stored pools match the config: new resources are added
// free, resources gone from the config are deleted, or marked retiring while
// leased so that no lease is lost. Config user data is merged over what is
// stored (keys the config does not name are kept); labels are replaced.
func (s *Store) PoolSync(ctx context.Context, p *store.PoolSyncParams) (*store.PoolSyncResult, error) {
	ctx, cancel := s.bound(ctx, syncTimeout)
	defer cancel()
	t := now(p.Now)
	res := &store.PoolSyncResult{}
	err := s.tx(ctx, func(tx pgx.Tx) error {
		*res = store.PoolSyncResult{}
		if _, err := tx.Exec(ctx, syncLock); err != nil {
			return fmt.Errorf("lock for sync: %w", err)
		}
		type have struct {
			typ, state, source string
			userData, labels   map[string]string
			leased, retiring   bool
		}
		// Resources this sync adds or frees may go to waiters: hold each
		// pool's queue lock as a release does (see LeaseAcquire), and
		// first, as a release does, before any row.
		// In type order, as health updates take them.
		for _, typ := range slices.Sorted(func(yield func(string) bool) {
			for _, pool := range p.Pools {
				if !yield(pool.Type) {
					return
				}
			}
		}) {
			if _, err := tx.Exec(ctx, queueLockShared, typ); err != nil {
				return fmt.Errorf("lock queue of %s: %w", typ, err)
			}
		}
		// Locked as they are read: what this sync decides from a row (to
		// retire it because it is leased, to delete it because it is not)
		// must still hold when it acts, though acquires and releases run
		// meanwhile.
		existing := map[string]*have{}
		// In name order, as health updates lock them (see ResourceHealth).
		rows, err := tx.Query(ctx, "SELECT name, type, state, user_data, labels, lease_id IS NOT NULL, retiring, source FROM resources ORDER BY name FOR UPDATE")
		if err != nil {
			return fmt.Errorf("read resources: %w", err)
		}
		for rows.Next() {
			var name string
			h := &have{}
			if err := rows.Scan(&name, &h.typ, &h.state, &h.userData, &h.labels, &h.leased, &h.retiring, &h.source); err != nil {
				rows.Close()
				return fmt.Errorf("read resources: %w", err)
			}
			existing[name] = h
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("read resources: %w", err)
		}

		hrows, err := tx.Query(ctx, "SELECT type, probe_hash FROM pools")
		if err != nil {
			return fmt.Errorf("read pools: %w", err)
		}
		type poolHash struct{ Type, Hash string }
		hashes, err := pgx.CollectRows(hrows, pgx.RowToStructByPos[poolHash])
		if err != nil {
			return fmt.Errorf("read pools: %w", err)
		}
		oldHash := map[string]string{}
		for _, h := range hashes {
			oldHash[h.Type] = h.Hash
		}
		reprobe := map[string]bool{} // resources whose probe target may have changed
		if _, err := tx.Exec(ctx, "DELETE FROM pools"); err != nil {
			return fmt.Errorf("clear pools: %w", err)
		}
		ev := &events{}
		waiting, err := typesWithRequests(ctx, tx)
		if err != nil {
			return err
		}
		var added, moved []newResource
		seen := map[string]bool{}
		configured := map[string]bool{}
		for _, pool := range p.Pools {
			configured[pool.Type] = true
			janitor := pool.Janitor
			if janitor == "" {
				janitor = "none"
			}
			if _, err := tx.Exec(ctx, "INSERT INTO pools (type, lease_ttl, janitor, probe, require_connected, probe_hash, dynamic) VALUES ($1, $2, $3, $4, $5, $6, $7)",
				pool.Type, int64(pool.LeaseTTL), janitor, pool.Probe, pool.Probe != "" && pool.RequireConnected, pool.ProbeHash, pool.Dynamic); err != nil {
				return fmt.Errorf("insert pool %s: %w", pool.Type, err)
			}
			for _, spec := range pool.Resources {
				seen[spec.Name] = true
				h, ok := existing[spec.Name]
				if !ok {
					added = append(added, newResource{spec: spec, typ: pool.Type, ttl: pool.LeaseTTL, state: pool.InitialState})
					continue
				}
				changed, err := syncExisting(ctx, tx, ev, spec, pool.Type, h.typ, h.userData, h.labels, h.source, h.retiring, t, p.Actor)
				if err != nil {
					return err
				}
				if changed {
					reprobe[spec.Name] = true
				}
				if h.typ != pool.Type && h.state == string(berth.StateFree) && !h.leased && !h.retiring {
					// Free, and now in a pool whose requests may wait.
					moved = append(moved, newResource{spec: spec, typ: pool.Type, ttl: pool.LeaseTTL, freed: true})
				}
			}
		}
		if err := insertResources(ctx, tx, added, t, p.Actor); err != nil {
			return err
		}
		added = append(added, moved...)
		healthy, err := syncHealth(ctx, tx, ev, p.Pools, oldHash, reprobe, t, p.Actor)
		if err != nil {
			return err
		}
		listed := map[string]bool{}
		for _, a := range added {
			listed[a.spec.Name] = true
		}
		for _, h := range healthy {
			if waiting[h.typ] && !listed[h.spec.Name] {
				added = append(added, h)
			}
		}
		// A pool without a janitor has nothing that would ever clean a
		// dirty resource (one left by an earlier config): free it rather
		// than let it leave the pool silently.
		for _, pool := range p.Pools {
			if pool.Janitor != "" && pool.Janitor != "none" {
				continue
			}
			rows, err := tx.Query(ctx, `UPDATE resources SET state = 'free', state_reason = '', state_changed_at = $1,
					clean_attempts = 0, next_clean_at = 0, deep_clean = false
				WHERE type = $2 AND state = 'dirty' AND lease_id IS NULL RETURNING name`, nanos(t), pool.Type)
			if err != nil {
				return fmt.Errorf("free dirty resources of %s: %w", pool.Type, err)
			}
			freed, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				return fmt.Errorf("free dirty resources of %s: %w", pool.Type, err)
			}
			for _, n := range freed {
				ev.add(&berth.Event{Time: t, Resource: n, Type: pool.Type, Kind: berth.EventConfig, From: string(berth.StateDirty),
					To: string(berth.StateFree), Reason: "no janitor", Actor: p.Actor, Message: "the pool has no janitor to clean it"})
				if waiting[pool.Type] {
					added = append(added, newResource{spec: store.ResourceSpec{Name: n}, typ: pool.Type, ttl: pool.LeaseTTL, freed: true})
				}
			}
		}
		for _, a := range added {
			if !a.freed {
				res.Added = append(res.Added, a.spec.Name)
			}
			if !waiting[a.typ] || a.initial() != berth.StateFree {
				continue
			}
			r, err := resourceGet(ctx, tx, a.spec.Name)
			if err != nil {
				return err
			}
			// The events so far come first: a handoff's event follows the
			// one that made the resource free.
			h, err := handoff(ctx, tx, ev, r, t, a.ttl, p.Actor)
			if err != nil {
				return err
			}
			if h != nil {
				res.Handoffs = append(res.Handoffs, *h)
			}
		}
		for name, h := range existing {
			if seen[name] || h.retiring && h.leased {
				continue
			}
			if h.source != berth.SourceConfig && configured[h.typ] {
				continue // added at runtime or provisioned: not the config's to remove
			}
			gone := "removed from the config"
			if h.source != berth.SourceConfig {
				gone = "its pool left the config"
				if h.source == berth.SourceDynamic {
					gone += " (berth did not deprovision it)"
				}
			}
			if h.leased {
				if _, err := tx.Exec(ctx, "UPDATE resources SET retiring = true WHERE name = $1", name); err != nil {
					return fmt.Errorf("retire %s: %w", name, err)
				}
				res.Retiring = append(res.Retiring, name)
				ev.add(&berth.Event{Time: t, Resource: name, Type: h.typ, Kind: berth.EventConfig,
					From: h.state, To: h.state, Reason: "retiring", Actor: p.Actor,
					Message: gone + " while leased; leaves the pool when its lease ends"})
				continue
			}
			if _, err := tx.Exec(ctx, "DELETE FROM resources WHERE name = $1", name); err != nil {
				return fmt.Errorf("remove %s: %w", name, err)
			}
			res.Removed = append(res.Removed, name)
			ev.add(&berth.Event{Time: t, Resource: name, Type: h.typ, Kind: berth.EventConfig,
				From: h.state, Reason: "removed", Actor: p.Actor, Message: gone})
		}
		if _, err := tx.Exec(ctx, "DELETE FROM resource_probes p WHERE NOT EXISTS (SELECT 1 FROM resources r WHERE r.name = p.name)"); err != nil {
			return fmt.Errorf("forget probes of removed resources: %w", err)
		}
		return ev.flush(ctx, tx)
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: sync pools: %w", err)
	}
	return res, nil
}

// syncHealth applies the pools' probe policies: the health of resources in
// a pool without a probe goes back to Unknown (a stale Disconnected would
// keep them out of use for ever), and health_ok is brought in line with
// each pool's policy. It returns the free resources that became leasable,
// for the waiters. The caller holds every resource row's lock.
func syncHealth(ctx context.Context, tx pgx.Tx, ev *events, pools []store.PoolPolicy, oldHash map[string]string, reprobe map[string]bool,
	t time.Time, actor string) ([]newResource, error) {
	ttl := map[string]time.Duration{}
	for _, pool := range pools {
		ttl[pool.Type] = pool.LeaseTTL
		reason, msg := "NotProbed", "the pool has no probe in the config"
		if pool.Probe != "" {
			reason, msg = "ProbeChanged", "what is probed changed in the config (the probe, the pool, the user data or labels); probing again"
		}
		whole := pool.Probe == "" || oldHash[pool.Type] != pool.ProbeHash
		var only []string // when not the whole pool
		for n := range reprobe {
			only = append(only, n)
		}
		if !whole && len(only) == 0 {
			continue
		}
		rows, err := tx.Query(ctx, `UPDATE resources r SET health_status = 'Unknown', health_reason = '', health_message = '',
			health_transition_time = $1 FROM resources old
			WHERE r.name = old.name AND r.type = $2 AND (r.health_status <> 'Unknown' OR r.health_reason <> '')
				AND ($3 OR r.name = ANY($4))
			RETURNING r.name, old.health_status`, nanos(t), pool.Type, whole, only)
		if err != nil {
			return nil, fmt.Errorf("reset health of %s: %w", pool.Type, err)
		}
		type reset struct{ Name, Was string }
		resets, err := pgx.CollectRows(rows, pgx.RowToStructByPos[reset])
		if err != nil {
			return nil, fmt.Errorf("reset health of %s: %w", pool.Type, err)
		}
		var cleared []string
		for _, r := range resets {
			cleared = append(cleared, r.Name)
			ev.add(&berth.Event{Time: t, Resource: r.Name, Type: pool.Type, Kind: berth.EventHealth, From: r.Was,
				To: string(berth.HealthUnknown), Reason: reason, Actor: actor, Message: msg})
		}
		if _, err := tx.Exec(ctx, "DELETE FROM resource_probes WHERE name = ANY($1)", cleared); err != nil {
			return nil, fmt.Errorf("reset health of %s: %w", pool.Type, err)
		}
	}
	rows, err := tx.Query(ctx, `UPDATE resources SET health_ok = `+healthOKExpr("resources.health_status", "resources")+`
		WHERE health_ok IS DISTINCT FROM `+healthOKExpr("resources.health_status", "resources")+`
		RETURNING name, type, health_ok AND state = 'free' AND NOT retiring`)
	if err != nil {
		return nil, fmt.Errorf("apply health policies: %w", err)
	}
	type flip struct {
		Name, Type string
		Free       bool
	}
	flips, err := pgx.CollectRows(rows, pgx.RowToStructByPos[flip])
	if err != nil {
		return nil, fmt.Errorf("apply health policies: %w", err)
	}
	var out []newResource
	for _, f := range flips {
		if f.Free {
			out = append(out, newResource{spec: store.ResourceSpec{Name: f.Name}, typ: f.Type, ttl: ttl[f.Type], freed: true})
		}
	}
	return out, nil
}

// healthOKExpr is whether a resource row with health status (a column or
// a parameter) may be leased under its pool's policy: Connected, or
// Unknown in a pool that allows it; table names the resources row. A
// resource whose pool has gone
// (retiring) is never leased anyway.
func healthOKExpr(status, table string) string {
	return `(` + status + ` = 'Connected' OR (` + status + ` = 'Unknown'
		AND NOT coalesce((SELECT require_connected FROM pools WHERE pools.type = ` + table + `.type), false)))`
}

// syncExisting brings a resource in line with the config and says
// whether anything changed.
func syncExisting(ctx context.Context, tx pgx.Tx, ev *events, spec store.ResourceSpec, typ, haveType string, userData, labels map[string]string,
	source string, retiring bool, t time.Time, actor string) (bool, error) {
	if userData == nil {
		userData = map[string]string{}
	}
	merged := maps.Clone(userData)
	maps.Copy(merged, spec.UserData)
	newLabels := spec.Labels
	if newLabels == nil {
		newLabels = map[string]string{}
	}
	// A leased resource moves to its new pool at once: its lease keeps the
	// TTL it was granted with and its own type, so the holder sees no
	// change, and when it is released it goes to the new pool's waiters.
	if maps.Equal(merged, userData) && maps.Equal(newLabels, labels) && typ == haveType && !retiring && source == berth.SourceConfig {
		return false, nil
	}
	if _, err := tx.Exec(ctx, "UPDATE resources SET type = $1, user_data = $2, labels = $3, retiring = false, source = 'config' WHERE name = $4",
		typ, merged, newLabels, spec.Name); err != nil {
		return false, fmt.Errorf("update resource %s: %w", spec.Name, err)
	}
	msg := "user data or labels changed in the config"
	if source != berth.SourceConfig {
		msg = "now declared in the config"
	}
	if typ != haveType {
		msg = fmt.Sprintf("moved from pool %s", haveType)
	}
	if retiring {
		msg = "back in the config; no longer retiring"
	}
	ev.add(&berth.Event{Time: t, Resource: spec.Name, Type: typ, Kind: berth.EventConfig, Reason: "updated", Actor: actor, Message: msg})
	return true, nil
}

func typesWithRequests(ctx context.Context, tx pgx.Tx) (map[string]bool, error) {
	rows, err := tx.Query(ctx, "SELECT DISTINCT type FROM requests")
	if err != nil {
		return nil, fmt.Errorf("read requests: %w", err)
	}
	types, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("read requests: %w", err)
	}
	out := map[string]bool{}
	for _, t := range types {
		out[t] = true
	}
	return out, nil
}

type newResource struct {
	spec store.ResourceSpec
	typ  string
	ttl  time.Duration
	// freed: not new, but made free by this sync; it may go to a waiter.
	freed bool
	// state is the state a new resource starts in; free if unset.
	state berth.State
}

func (r newResource) initial() berth.State {
	if r.state == "" {
		return berth.StateFree
	}
	return r.state
}

// insertResources adds resources and their "added" events with one
// statement each per 10,000 rows, from arrays: a first start with 100,000
// resources must not take 200,000 round trips.
func insertResources(ctx context.Context, tx pgx.Tx, rs []newResource, t time.Time, actor string) error {
	const chunk = 10_000
	for len(rs) > 0 {
		n := min(chunk, len(rs))
		part := rs[:n]
		rs = rs[n:]
		names := make([]string, n)
		types := make([]string, n)
		states := make([]string, n)
		uds := make([]map[string]string, n)
		labels := make([]map[string]string, n)
		for i, r := range part {
			names[i], types[i], states[i] = r.spec.Name, r.typ, string(r.initial())
			uds[i], labels[i] = nonNil(r.spec.UserData), nonNil(r.spec.Labels)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO resources (name, type, state, state_changed_at, user_data, labels, created_at)
			SELECT n, t, s, $3, u, l, $3 FROM unnest($1::text[], $2::text[], $4::jsonb[], $5::jsonb[], $6::text[]) AS x(n, t, u, l, s)`,
			names, types, nanos(t), uds, labels, states); err != nil {
			return fmt.Errorf("insert resources: %w", err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO events (time, resource, type, kind, to_state, reason, actor)
			SELECT $3, n, t, 'config', s, 'added', $4 FROM unnest($1::text[], $2::text[], $5::text[]) AS x(n, t, s)`,
			names, types, nanos(t), actor, states); err != nil {
			return fmt.Errorf("record added resources: %w", err)
		}
	}
	return nil
}

func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}
