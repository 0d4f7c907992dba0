package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/store"
)

const resourceColumns = `name, type, state, state_reason, state_changed_at, owner, lease_id,
	user_data, labels, health_status, health_reason, health_message,
	health_probe_time, health_transition_time, retiring,
	source, draining, clean_attempts, next_clean_at, deep_clean, created_at`

type scanner interface{ Scan(dest ...any) error }

func scanResource(row scanner) (*berth.Resource, error) {
	var (
		r                  berth.Resource
		changed            int64
		leaseID            sql.NullString
		userData, labels   string
		probeT, transition sql.NullInt64
		retiring, draining int
		deep               int
		nextClean          int64
		created            sql.NullInt64
	)
	err := row.Scan(&r.Name, &r.Type, &r.State, &r.StateReason, &changed, &r.Owner, &leaseID,
		&userData, &labels, &r.Health.Status, &r.Health.Reason, &r.Health.Message,
		&probeT, &transition, &retiring,
		&r.Source, &draining, &r.CleanAttempts, &nextClean, &deep, &created)
	if err != nil {
		return nil, err
	}
	r.StateChangedAt = fromNanos(changed)
	r.LeaseID = leaseID.String
	r.Health.LastProbeTime = nullTime(probeT)
	r.Health.LastTransitionTime = nullTime(transition)
	r.Retiring = retiring != 0
	r.Draining = draining != 0
	r.DeepClean = deep != 0
	if nextClean != 0 {
		r.NextCleanAt = nullTime(sql.NullInt64{Int64: nextClean, Valid: true})
	}
	r.CreatedAt = nullTime(created)
	if r.UserData, err = stringMap(userData); err != nil {
		return nil, fmt.Errorf("resource %s: user data: %w", r.Name, err)
	}
	if r.Labels, err = stringMap(labels); err != nil {
		return nil, fmt.Errorf("resource %s: labels: %w", r.Name, err)
	}
	return &r, nil
}

// stringMap decodes a stored JSON object of strings. Most resources have
// no labels or user data, and every acquire and release reads one back,
// so the empty object skips the decoder.
func stringMap(s string) (map[string]string, error) {
	if s == "{}" {
		return map[string]string{}, nil
	}
	var m map[string]string
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		return nil, err
	}
	return m, nil
}

func mustJSON(v map[string]string) string {
	if v == nil {
		return "{}"
	}
	b, err := json.Marshal(v)
	if err != nil {
		// A map of strings always marshals.
		panic(err)
	}
	return string(b)
}

func (s *Store) ResourceGet(ctx context.Context, name string) (*berth.Resource, error) {
	return resourceGet(ctx, s.r, name)
}

type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

func resourceGet(ctx context.Context, q querier, name string) (*berth.Resource, error) {
	r, err := scanResource(q.QueryRowContext(ctx, "SELECT "+resourceColumns+" FROM resources WHERE name = ?", name))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: get resource %s: %w", name, err)
	}
	return r, nil
}

func (s *Store) ResourceList(ctx context.Context, p *store.ResourceListParams) ([]*berth.Resource, error) {
	var (
		where []string
		args  []any
	)
	if p.Type != "" {
		where = append(where, "type = ?")
		args = append(args, p.Type)
	}
	if p.State != "" {
		where = append(where, "state = ?")
		args = append(args, string(p.State))
	}
	if p.Health != "" {
		where = append(where, "health_status = ?")
		args = append(args, string(p.Health))
	}
	if p.AfterName != "" {
		where = append(where, "(type, name) > (?, ?)")
		args = append(args, p.AfterType, p.AfterName)
	}
	q := "SELECT " + resourceColumns + " FROM resources"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY type, name"
	if p.Limit > 0 {
		q += " LIMIT ?"
		args = append(args, p.Limit)
	}
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list resources: %w", err)
	}
	defer rows.Close()
	out := []*berth.Resource{}
	for rows.Next() {
		r, err := scanResource(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: list resources: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: list resources: %w", err)
	}
	return out, nil
}

func (s *Store) PoolList(ctx context.Context) ([]*berth.Pool, error) {
	pools := map[string]*berth.Pool{}
	var order []string
	rows, err := s.r.QueryContext(ctx, `SELECT p.type, p.lease_ttl, p.janitor, p.probe, p.dynamic, d.type IS NOT NULL
		FROM pools p LEFT JOIN pool_drains d ON d.type = p.type ORDER BY p.type`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list pools: %w", err)
	}
	for rows.Next() {
		p := &berth.Pool{States: map[berth.State]int{}, Health: map[berth.HealthStatus]int{}}
		var (
			ttl     int64
			dynamic string
		)
		if err := rows.Scan(&p.Type, &ttl, &p.Janitor, &p.Probe, &dynamic, &p.Draining); err != nil {
			rows.Close()
			return nil, fmt.Errorf("sqlite: list pools: %w", err)
		}
		p.LeaseTTL = berth.Duration(ttl)
		if p.Dynamic, err = decodeDynamic(dynamic); err != nil {
			rows.Close()
			return nil, fmt.Errorf("sqlite: pool %s: %w", p.Type, err)
		}
		pools[p.Type] = p
		order = append(order, p.Type)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: list pools: %w", err)
	}

	rows, err = s.r.QueryContext(ctx, `SELECT type, state, health_status, count(*),
		sum(health_ok AND state = 'free' AND retiring = 0 AND draining = 0), sum(draining), count(lease_id)
		FROM resources GROUP BY type, state, health_status`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: count resources: %w", err)
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
			return nil, fmt.Errorf("sqlite: count resources: %w", err)
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
		return nil, fmt.Errorf("sqlite: count resources: %w", err)
	}

	rows, err = s.r.QueryContext(ctx, "SELECT type, count(*) FROM requests GROUP BY type")
	if err != nil {
		return nil, fmt.Errorf("sqlite: count requests: %w", err)
	}
	for rows.Next() {
		var (
			typ string
			n   int
		)
		if err := rows.Scan(&typ, &n); err != nil {
			rows.Close()
			return nil, fmt.Errorf("sqlite: count requests: %w", err)
		}
		if p, ok := pools[typ]; ok {
			p.Waiters = n
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: count requests: %w", err)
	}
	out := make([]*berth.Pool, 0, len(order))
	for _, t := range order {
		out = append(out, pools[t])
	}
	return out, nil
}

// decodeDynamic reads a pool's stored dynamic sizing; "" is a static pool.
func decodeDynamic(s string) (*berth.Dynamic, error) {
	if s == "" {
		return nil, nil
	}
	var d berth.Dynamic
	if err := json.Unmarshal([]byte(s), &d); err != nil {
		return nil, fmt.Errorf("dynamic sizing: %w", err)
	}
	return &d, nil
}

// encodeDynamic is the stored form of d.
func encodeDynamic(d *berth.Dynamic) string {
	if d == nil {
		return ""
	}
	b, _ := json.Marshal(d) // a struct of numbers always marshals
	return string(b)
}

// PoolSync makes the stored pools match the config: new resources are added
// free, resources gone from the config are deleted, or marked retiring while
// leased so that no lease is lost. Config user data is merged over what is
// stored (keys the config does not name are kept); labels are replaced.
func (s *Store) PoolSync(ctx context.Context, p *store.PoolSyncParams) (*store.PoolSyncResult, error) {
	t := now(p.Now)
	res := &store.PoolSyncResult{}
	err := s.tx(ctx, func(tx *wtx) error {
		*res = store.PoolSyncResult{}
		type have struct {
			typ, state, userData, labels, source string
			leased, retiring                     bool
		}
		existing := map[string]*have{}
		rows, err := tx.QueryContext(ctx, "SELECT name, type, state, user_data, labels, lease_id IS NOT NULL, retiring, source FROM resources")
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

		oldHash := map[string]string{}
		hrows, err := tx.QueryContext(ctx, "SELECT type, probe_hash FROM pools")
		if err != nil {
			return fmt.Errorf("read pools: %w", err)
		}
		for hrows.Next() {
			var typ, h string
			if err := hrows.Scan(&typ, &h); err != nil {
				hrows.Close()
				return fmt.Errorf("read pools: %w", err)
			}
			oldHash[typ] = h
		}
		hrows.Close()
		if err := hrows.Err(); err != nil {
			return fmt.Errorf("read pools: %w", err)
		}
		reprobe := map[string]bool{} // resources whose probe target may have changed
		if _, err := tx.ExecContext(ctx, "DELETE FROM pools"); err != nil {
			return fmt.Errorf("clear pools: %w", err)
		}
		ev, err := newEventWriter(ctx, tx)
		if err != nil {
			return err
		}
		defer ev.Close()

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
			if _, err := tx.ExecContext(ctx, "INSERT INTO pools (type, lease_ttl, janitor, probe, require_connected, probe_hash, dynamic) VALUES (?, ?, ?, ?, ?, ?, ?)",
				pool.Type, int64(pool.LeaseTTL), janitor, pool.Probe, pool.Probe != "" && pool.RequireConnected, pool.ProbeHash, encodeDynamic(pool.Dynamic)); err != nil {
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
			rows, err := tx.QueryContext(ctx, `UPDATE resources SET state = 'free', state_reason = '', state_changed_at = ?,
					clean_attempts = 0, next_clean_at = 0, deep_clean = 0
				WHERE type = ? AND state = 'dirty' AND lease_id IS NULL RETURNING name`, nanos(t), pool.Type)
			if err != nil {
				return fmt.Errorf("free dirty resources of %s: %w", pool.Type, err)
			}
			var freed []string
			for rows.Next() {
				var n string
				if err := rows.Scan(&n); err != nil {
					rows.Close()
					return err
				}
				freed = append(freed, n)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
			for _, n := range freed {
				if err := ev.write(&berth.Event{Time: t, Resource: n, Type: pool.Type, Kind: berth.EventConfig, From: string(berth.StateDirty),
					To: string(berth.StateFree), Reason: "no janitor", Actor: p.Actor, Message: "the pool has no janitor to clean it"}); err != nil {
					return err
				}
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
			h, err := handoff(ctx, tx, r, t, a.ttl, p.Actor)
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
				if _, err := tx.ExecContext(ctx, "UPDATE resources SET retiring = 1 WHERE name = ?", name); err != nil {
					return fmt.Errorf("retire %s: %w", name, err)
				}
				res.Retiring = append(res.Retiring, name)
				if err := ev.write(&berth.Event{Time: t, Resource: name, Type: h.typ, Kind: berth.EventConfig,
					From: h.state, To: h.state, Reason: "retiring", Actor: p.Actor,
					Message: gone + " while leased; leaves the pool when its lease ends"}); err != nil {
					return err
				}
				continue
			}
			if _, err := tx.ExecContext(ctx, "DELETE FROM resources WHERE name = ?", name); err != nil {
				return fmt.Errorf("remove %s: %w", name, err)
			}
			res.Removed = append(res.Removed, name)
			if err := ev.write(&berth.Event{Time: t, Resource: name, Type: h.typ, Kind: berth.EventConfig,
				From: h.state, Reason: "removed", Actor: p.Actor, Message: gone}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: sync pools: %w", err)
	}
	return res, nil
}

// syncHealth applies the pools' probe policies: the health of resources in
// a pool without a probe goes back to Unknown (a stale Disconnected would
// keep them out of use for ever), and health_ok is brought in line with
// each pool's policy. It returns the free resources that became leasable,
// for the waiters.
func syncHealth(ctx context.Context, tx *wtx, ev *eventWriter, pools []store.PoolPolicy, oldHash map[string]string, reprobe map[string]bool,
	t time.Time, actor string) ([]newResource, error) {
	ttl := map[string]time.Duration{}
	for _, pool := range pools {
		ttl[pool.Type] = pool.LeaseTTL
		reason, msg := "NotProbed", "the pool has no probe in the config"
		if pool.Probe != "" {
			reason, msg = "ProbeChanged", "what is probed changed in the config (the probe, the pool, the user data or labels); probing again"
		}
		rows, err := tx.QueryContext(ctx, "SELECT name, health_status FROM resources WHERE type = ? AND (health_status <> 'Unknown' OR health_reason <> '')", pool.Type)
		if err != nil {
			return nil, fmt.Errorf("read health of %s: %w", pool.Type, err)
		}
		var names, was []string
		whole := pool.Probe == "" || oldHash[pool.Type] != pool.ProbeHash
		for rows.Next() {
			var n, st string
			if err := rows.Scan(&n, &st); err != nil {
				rows.Close()
				return nil, fmt.Errorf("read health of %s: %w", pool.Type, err)
			}
			if whole || reprobe[n] {
				names, was = append(names, n), append(was, st)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("read health of %s: %w", pool.Type, err)
		}
		for i, n := range names {
			if _, err := tx.ExecContext(ctx, `UPDATE resources SET health_status = 'Unknown', health_reason = '', health_message = '',
				health_transition_time = ? WHERE name = ?`, nanos(t), n); err != nil {
				return nil, fmt.Errorf("reset health of %s: %w", n, err)
			}
			if err := ev.write(&berth.Event{Time: t, Resource: n, Type: pool.Type, Kind: berth.EventHealth, From: was[i],
				To: string(berth.HealthUnknown), Reason: reason, Actor: actor, Message: msg}); err != nil {
				return nil, err
			}
		}
	}
	rows, err := tx.QueryContext(ctx, `UPDATE resources SET health_ok = `+healthOKExpr+` WHERE health_ok IS NOT `+healthOKExpr+`
		RETURNING name, type, health_ok, state = 'free' AND retiring = 0`)
	if err != nil {
		return nil, fmt.Errorf("apply health policies: %w", err)
	}
	defer rows.Close()
	var out []newResource
	for rows.Next() {
		var (
			n, typ   string
			ok, free bool
		)
		if err := rows.Scan(&n, &typ, &ok, &free); err != nil {
			return nil, fmt.Errorf("apply health policies: %w", err)
		}
		if ok && free {
			out = append(out, newResource{spec: store.ResourceSpec{Name: n}, typ: typ, ttl: ttl[typ], freed: true})
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("apply health policies: %w", err)
	}
	return out, nil
}

// healthOKExpr is whether a resource row's health lets it be leased under
// its pool's policy: Connected, or Unknown in a pool that allows it. A
// resource whose pool has gone (retiring) is never leased anyway.
const healthOKExpr = `(health_status = 'Connected' OR (health_status = 'Unknown'
	AND NOT coalesce((SELECT require_connected FROM pools WHERE pools.type = resources.type), 0)))`

// syncExisting brings a resource in line with the config and says
// whether anything changed.
func syncExisting(ctx context.Context, tx *wtx, ev *eventWriter, spec store.ResourceSpec, typ, haveType, userData, labels, source string,
	retiring bool, t time.Time, actor string) (bool, error) {
	var ud map[string]string
	if err := json.Unmarshal([]byte(userData), &ud); err != nil {
		return false, fmt.Errorf("resource %s: user data: %w", spec.Name, err)
	}
	if ud == nil {
		ud = map[string]string{}
	}
	merged := maps.Clone(ud)
	maps.Copy(merged, spec.UserData)
	newUD := mustJSON(merged)
	newLabels := mustJSON(spec.Labels)
	// A leased resource moves to its new pool at once: its lease keeps the
	// TTL it was granted with and its own type, so the holder sees no
	// change, and when it is released it goes to the new pool's waiters.
	newType := typ
	if newUD == mustJSON(ud) && newLabels == canonical(labels) && newType == haveType && !retiring && source == berth.SourceConfig {
		return false, nil
	}
	if _, err := tx.ExecContext(ctx, "UPDATE resources SET type = ?, user_data = ?, labels = ?, retiring = 0, source = 'config' WHERE name = ?",
		newType, newUD, newLabels, spec.Name); err != nil {
		return false, fmt.Errorf("update resource %s: %w", spec.Name, err)
	}
	msg := "user data or labels changed in the config"
	if source != berth.SourceConfig {
		msg = "now declared in the config"
	}
	if newType != haveType {
		msg = fmt.Sprintf("moved from pool %s", haveType)
	}
	if retiring {
		msg = "back in the config; no longer retiring"
	}
	return true, ev.write(&berth.Event{Time: t, Resource: spec.Name, Type: newType, Kind: berth.EventConfig, Reason: "updated", Actor: actor, Message: msg})
}

// canonical re-marshals a JSON object so that comparisons ignore formatting.
func canonical(s string) string {
	var m map[string]string
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		return s
	}
	return mustJSON(m)
}

func typesWithRequests(ctx context.Context, tx *wtx) (map[string]bool, error) {
	rows, err := tx.QueryContext(ctx, "SELECT DISTINCT type FROM requests")
	if err != nil {
		return nil, fmt.Errorf("read requests: %w", err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			return nil, err
		}
		out[t] = true
	}
	return out, rows.Err()
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

// insertResources adds resources and their "added" events a hundred rows
// to a statement: a first start with 100,000 resources must not take
// 200,000 statements.
func insertResources(ctx context.Context, tx *wtx, rs []newResource, t time.Time, actor string) error {
	const chunk = 100
	for len(rs) > 0 {
		n := min(chunk, len(rs))
		part := rs[:n]
		rs = rs[n:]
		res := make([]any, 0, n*7)
		evs := make([]any, 0, n*6)
		for _, r := range part {
			res = append(res, r.spec.Name, r.typ, string(r.initial()), nanos(t), mustJSON(r.spec.UserData), mustJSON(r.spec.Labels), nanos(t))
			evs = append(evs, nanos(t), r.spec.Name, r.typ, string(berth.EventConfig), string(r.initial()), actor)
		}
		// Full chunks reuse one prepared statement; the last, shorter one
		// runs unprepared rather than fill the statement cache.
		exec := tx.exec
		if n < chunk {
			exec = func(q string, args ...any) (sql.Result, error) {
				return tx.w.conn.ExecContext(context.Background(), q, args...) // never interruptible; see wtx
			}
		}
		q := "INSERT INTO resources (name, type, state, state_changed_at, user_data, labels, created_at) VALUES " + rows("(?, ?, ?, ?, ?, ?, ?)", n)
		if _, err := exec(q, res...); err != nil {
			return fmt.Errorf("insert resources: %w", err)
		}
		q = "INSERT INTO events (time, resource, type, kind, to_state, reason, actor) VALUES " + rows("(?, ?, ?, ?, ?, 'added', ?)", n)
		if _, err := exec(q, evs...); err != nil {
			return fmt.Errorf("record added resources: %w", err)
		}
	}
	return nil
}

func rows(tuple string, n int) string {
	return strings.TrimSuffix(strings.Repeat(tuple+", ", n), ", ")
}
