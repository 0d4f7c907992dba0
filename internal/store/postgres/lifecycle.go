package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/store"
)

// The lifecycle operations take their locks in the order every release
// takes them: the queue lock of the resource's type (shared), when the
// operation may free the resource; then the lease's row; then the
// resource's. An operation that needs the type or the lease before it can
// lock reads them first, unlocked, and starts again if the locked rows
// say otherwise (errResourceMoved).

// CleanClaim moves the dirty resource of the type that has waited longest
// (and whose backoff, if any, has passed) to cleaning under a lease of
// kind clean. Another replica's claim of the same resource is passed
// over, never waited for (SKIP LOCKED).
func (s *Store) CleanClaim(ctx context.Context, p *store.CleanClaimParams) (*store.CleanClaimResult, error) {
	ctx, cancel := s.bound(ctx, opTimeout)
	defer cancel()
	t := now(p.Now)
	if p.RequestID == "" {
		// A janitor looks often and mostly finds nothing: a read comes
		// first.
		ready, next, err := dirtyReady(ctx, s.pool, p.Type, p.Name, t)
		if err != nil {
			return nil, fmt.Errorf("postgres: claim for cleaning: %w", err)
		}
		if !ready {
			return &store.CleanClaimResult{NextAt: next}, nil
		}
	}
	res := &store.CleanClaimResult{}
	err := s.tx(ctx, func(tx pgx.Tx) error {
		*res = store.CleanClaimResult{}
		if p.RequestID != "" {
			// A retry of a claim that got a lease, perhaps on another
			// replica at this moment: the same lease.
			if _, err := tx.Exec(ctx, requestLock, p.RequestID); err != nil {
				return fmt.Errorf("lock request: %w", err)
			}
			l, err := scanLease(tx.QueryRow(ctx, "SELECT "+leaseColumns+
				" FROM leases WHERE request_id = $1 AND ended_at IS NULL AND expires_at > $2 AND kind = 'clean' LIMIT 1", p.RequestID, nanos(t)))
			switch {
			case errors.Is(err, pgx.ErrNoRows):
			case err != nil:
				return fmt.Errorf("find lease of request: %w", err)
			default:
				if l.Owner != p.Owner || l.Type != p.Type {
					return berth.FieldErrorf("requestId", "request %q was made by another janitor or for another type", p.RequestID)
				}
				r, err := resourceGet(ctx, tx, l.Resource)
				if err != nil {
					return err
				}
				res.Lease, res.Resource, res.Attempt = l, r, r.CleanAttempts+1
				return nil
			}
		}
		id := berth.NewID()
		q := `UPDATE resources SET state = 'cleaning', state_changed_at = $1, owner = $2, lease_id = $3
			WHERE name = (SELECT name FROM resources WHERE type = $4 AND state = 'dirty' AND next_clean_at <= $1`
		args := []any{nanos(t), p.Owner, id, p.Type}
		if p.Name != "" {
			q += " AND name = $5"
			args = append(args, p.Name)
		}
		q += " ORDER BY state_changed_at, name LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING " + resourceColumns
		r, err := scanResource(tx.QueryRow(ctx, q, args...))
		if errors.Is(err, pgx.ErrNoRows) {
			_, res.NextAt, err = dirtyReady(ctx, tx, p.Type, p.Name, t)
			return err
		}
		if err != nil {
			return fmt.Errorf("claim a dirty resource: %w", err)
		}
		attempt := r.CleanAttempts + 1
		ev := &events{}
		actor := p.Actor
		if actor == "" {
			actor = p.Owner
		}
		l, err := recordLease(ctx, tx, ev, r, berth.StateDirty, grantArgs{
			id: id, owner: p.Owner, requestID: p.RequestID, ttl: p.LeaseTTL, expires: t.Add(p.LeaseTTL), now: t, actor: actor,
			reason: store.ReasonCleaning, kind: berth.LeaseClean, to: berth.StateCleaning, evKind: berth.EventJanitor,
			message: store.CleaningMessage(p.Owner, attempt, r.DeepClean),
		})
		if err != nil {
			return err
		}
		res.Lease, res.Resource, res.Attempt = l, r, attempt
		return ev.flush(ctx, tx)
	})
	if err != nil {
		return nil, wrap("claim for cleaning", err)
	}
	return res, nil
}

// dirtyReady says whether a dirty resource of typ (named name, if set) may
// be cleaned at t, and if not, when the first one may (zero if none is
// dirty).
func dirtyReady(ctx context.Context, q querier, typ, name string, t time.Time) (bool, time.Time, error) {
	query := "SELECT min(next_clean_at) FROM resources WHERE type = $1 AND state = 'dirty'"
	args := []any{typ}
	if name != "" {
		query += " AND name = $2"
		args = append(args, name)
	}
	var first *int64
	if err := q.QueryRow(ctx, query, args...).Scan(&first); err != nil {
		return false, time.Time{}, fmt.Errorf("look for dirty resources: %w", err)
	}
	switch {
	case first == nil:
		return false, time.Time{}, nil
	case *first <= nanos(t):
		return true, time.Time{}, nil
	}
	return false, fromNanos(*first), nil
}

// CleanEnd ends a cleaning lease with its outcome.
func (s *Store) CleanEnd(ctx context.Context, p *store.CleanEndParams) (*store.CleanEndResult, error) {
	ctx, cancel := s.bound(ctx, opTimeout)
	defer cancel()
	for attempt := 1; ; attempt++ {
		res, err := s.cleanEnd(ctx, p)
		if errors.Is(err, errResourceMoved) && attempt < 3 {
			continue
		}
		if err != nil {
			return res, wrap("end cleaning", err)
		}
		return res, nil
	}
}

func (s *Store) cleanEnd(ctx context.Context, p *store.CleanEndParams) (*store.CleanEndResult, error) {
	t := now(p.Now)
	// The type whose queue a cleaned resource goes to, read first (see
	// above).
	var resType string
	err := s.pool.QueryRow(ctx, `SELECT coalesce(r.type, l.type) FROM leases l LEFT JOIN resources r ON r.name = l.resource WHERE l.id = $1`,
		p.ID).Scan(&resType)
	if errors.Is(err, pgx.ErrNoRows) {
		return &store.CleanEndResult{}, store.ErrNotFound
	}
	if err != nil {
		return &store.CleanEndResult{}, fmt.Errorf("find lease: %w", err)
	}
	res := &store.CleanEndResult{}
	err = s.tx(ctx, func(tx pgx.Tx) error {
		*res = store.CleanEndResult{}
		if _, err := tx.Exec(ctx, queueLockShared, resType); err != nil {
			return fmt.Errorf("lock queue of %s: %w", resType, err)
		}
		status, expiry := berth.LeaseReleased, "expires_at > $1"
		if p.Expired {
			status, expiry = berth.LeaseExpired, "expires_at <= $1"
		}
		l, err := scanLease(tx.QueryRow(ctx, "UPDATE leases SET ended_at = $1, end_reason = $2 WHERE id = $3 AND ended_at IS NULL AND kind = 'clean' AND "+
			expiry+" RETURNING "+leaseColumns, nanos(t), string(status), p.ID))
		if errors.Is(err, pgx.ErrNoRows) {
			l, err := leaseGet(ctx, tx, p.ID)
			if err != nil {
				return err
			}
			res.Lease = l
			return store.CleanEndRefused(l, p.Expired)
		}
		if err != nil {
			return fmt.Errorf("end cleaning lease: %w", err)
		}
		res.Lease = l
		r, err := lockResource(ctx, tx, l.Resource)
		if err != nil {
			return fmt.Errorf("resource %s of lease %s: %w", l.Resource, l.ID, err)
		}
		if r.LeaseID != l.ID {
			return fmt.Errorf("resource %s is held by lease %q, not %q", r.Name, r.LeaseID, l.ID)
		}
		if r.Type != resType {
			return errResourceMoved
		}
		pol := p.Policy(r.Type)
		o := store.DecideClean(p, pol, r, l, t)
		ev := &events{}
		ev.add(o.Event)
		res.Event = o.Event
		if o.Remove {
			if err := removeResource(ctx, tx, r.Name); err != nil {
				return err
			}
			return ev.flush(ctx, tx)
		}
		r, err = scanResource(tx.QueryRow(ctx, `UPDATE resources SET state = $1, state_reason = $2, state_changed_at = $3, owner = '', lease_id = NULL,
				clean_attempts = $4, next_clean_at = $5, deep_clean = $6 WHERE name = $7 RETURNING `+resourceColumns,
			string(o.To), o.Reason, nanos(t), o.Attempts, nullNanos(o.NextAt), o.Deep, r.Name))
		if err != nil {
			return fmt.Errorf("move resource on: %w", err)
		}
		res.Resource = r
		if o.To == berth.StateFree {
			if res.Handoff, err = handoff(ctx, tx, ev, r, t, pol.HandoffTTL, o.Event.Actor); err != nil {
				return err
			}
		}
		return ev.flush(ctx, tx)
	})
	return res, err
}

// lockResource reads resource name, locked for the transaction.
func lockResource(ctx context.Context, tx pgx.Tx, name string) (*berth.Resource, error) {
	r, err := scanResource(tx.QueryRow(ctx, "SELECT "+resourceColumns+" FROM resources WHERE name = $1 FOR UPDATE", name))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("lock resource %s: %w", name, err)
	}
	return r, nil
}

// onLockedResource runs fn in a transaction on resource name, locked and
// read at its start (for operations that free nothing, so need no queue
// lock). fn may run more than once (a deadlock retried): it must set
// everything it returns each time.
func (s *Store) onLockedResource(ctx context.Context, name, op string, fn func(tx pgx.Tx, r *berth.Resource, ev *events) error) error {
	ctx, cancel := s.bound(ctx, opTimeout)
	defer cancel()
	err := s.tx(ctx, func(tx pgx.Tx) error {
		r, err := lockResource(ctx, tx, name)
		if err != nil {
			return err
		}
		ev := &events{}
		if err := fn(tx, r, ev); err != nil {
			return err
		}
		return ev.flush(ctx, tx)
	})
	if err != nil {
		return wrap(op, err)
	}
	return nil
}

// removeResource deletes a resource's row and what is kept of its
// probes.
func removeResource(ctx context.Context, tx pgx.Tx, name string) error {
	if _, err := tx.Exec(ctx, "DELETE FROM resources WHERE name = $1", name); err != nil {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	if _, err := tx.Exec(ctx, "DELETE FROM resource_probes WHERE name = $1", name); err != nil {
		return fmt.Errorf("forget probes of %s: %w", name, err)
	}
	return nil
}

// nullNanos is t in nanoseconds, 0 for the zero time.
func nullNanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return nanos(t)
}

// ResourceAdd adds a free resource at runtime and hands it to the first
// waiter it suits.
// addLock serializes the adds to one pool that are bounded by MaxTotal.
const addLock = "SELECT pg_advisory_xact_lock(hashtextextended('berth-add:' || current_schema() || ':' || $1, 0))"

func (s *Store) ResourceAdd(ctx context.Context, p *store.ResourceAddParams) (*store.ResourceChangeResult, error) {
	ctx, cancel := s.bound(ctx, opTimeout)
	defer cancel()
	t := now(p.Now)
	res := &store.ResourceChangeResult{}
	err := s.tx(ctx, func(tx pgx.Tx) error {
		*res = store.ResourceChangeResult{}
		if _, err := tx.Exec(ctx, queueLockShared, p.Type); err != nil {
			return fmt.Errorf("lock queue of %s: %w", p.Type, err)
		}
		var exists bool
		if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pools WHERE type = $1)", p.Type).Scan(&exists); err != nil {
			return fmt.Errorf("read pool: %w", err)
		}
		if !exists {
			return store.UnknownPoolError(p.Type)
		}
		if p.MaxTotal > 0 {
			// Adds that count the pool's resources take turns, across
			// replicas, so that two never both take the last place.
			if _, err := tx.Exec(ctx, addLock, p.Type); err != nil {
				return fmt.Errorf("lock adds to %s: %w", p.Type, err)
			}
			var n int
			if err := tx.QueryRow(ctx, "SELECT count(*) FROM resources WHERE type = $1", p.Type).Scan(&n); err != nil {
				return fmt.Errorf("count resources: %w", err)
			}
			if n >= p.MaxTotal {
				return store.ErrPoolFull
			}
		}
		r, err := scanResource(tx.QueryRow(ctx, `INSERT INTO resources (name, type, state, state_changed_at, user_data, labels, created_at, source, health_ok)
			VALUES ($1, $2, $7, $3, $4, $5, $3, $6, NOT coalesce((SELECT require_connected FROM pools WHERE type = $2), false))
			ON CONFLICT (name) DO NOTHING RETURNING `+resourceColumns,
			p.Spec.Name, p.Type, nanos(t), nonNil(p.Spec.UserData), nonNil(p.Spec.Labels), p.Source, string(p.Initial())))
		if errors.Is(err, pgx.ErrNoRows) {
			var have string
			if err := tx.QueryRow(ctx, "SELECT type FROM resources WHERE name = $1", p.Spec.Name).Scan(&have); err != nil {
				return fmt.Errorf("read resource: %w", err)
			}
			return store.ExistsError(p.Spec.Name, have)
		}
		if err != nil {
			return fmt.Errorf("insert resource: %w", err)
		}
		ev := &events{}
		ev.add(store.AddedEvent(p, t))
		res.Resource = r
		if r.State != berth.StateFree {
			return ev.flush(ctx, tx)
		}
		h, err := handoff(ctx, tx, ev, r, t, p.HandoffTTL, p.Actor)
		if err != nil {
			return err
		}
		if h != nil {
			res.Handoffs = append(res.Handoffs, *h)
		}
		return ev.flush(ctx, tx)
	})
	if err != nil {
		return nil, wrap("add resource", err)
	}
	return res, nil
}

// ResourceRetire removes a resource added at runtime, at once if no lease
// holds it, else once its lease ends. A resource of a dynamic pool is
// left to the pool's deprovisioner instead (it is retiring until then).
func (s *Store) ResourceRetire(ctx context.Context, p *store.ResourceRetireParams) (*store.ResourceChangeResult, error) {
	t := now(p.Now)
	res := &store.ResourceChangeResult{}
	err := s.onLockedResource(ctx, p.Name, "retire resource", func(tx pgx.Tx, r *berth.Resource, ev *events) error {
		*res = store.ResourceChangeResult{}
		e, remove, err := store.RetireDecision(p, r, t)
		if err != nil || e == nil {
			res.Resource, res.Unchanged = r, e == nil
			return err
		}
		ev.add(e)
		if remove {
			return removeResource(ctx, tx, r.Name)
		}
		if _, err := tx.Exec(ctx, "UPDATE resources SET retiring = true WHERE name = $1", r.Name); err != nil {
			return fmt.Errorf("retire: %w", err)
		}
		r.Retiring = true
		res.Resource = r
		return nil
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// ResourceQuarantine takes a resource out of service, revoking its lease.
func (s *Store) ResourceQuarantine(ctx context.Context, p *store.ResourceQuarantineParams) (*store.ResourceChangeResult, error) {
	ctx, cancel := s.bound(ctx, opTimeout)
	defer cancel()
	t := now(p.Now)
	for attempt := 1; ; attempt++ {
		res := &store.ResourceChangeResult{}
		err := s.tx(ctx, func(tx pgx.Tx) error {
			*res = store.ResourceChangeResult{}
			// The lease's row before the resource's, as a release
			// locks them.
			var leaseID *string
			if err := tx.QueryRow(ctx, "SELECT lease_id FROM resources WHERE name = $1", p.Name).Scan(&leaseID); errors.Is(err, pgx.ErrNoRows) {
				return store.ErrNotFound
			} else if err != nil {
				return fmt.Errorf("read resource: %w", err)
			}
			if leaseID != nil {
				if _, err := tx.Exec(ctx, "SELECT 1 FROM leases WHERE id = $1 FOR UPDATE", *leaseID); err != nil {
					return fmt.Errorf("lock lease: %w", err)
				}
			}
			r, err := lockResource(ctx, tx, p.Name)
			if err != nil {
				return err
			}
			if (leaseID == nil) != (r.LeaseID == "") || leaseID != nil && *leaseID != r.LeaseID {
				return errResourceMoved // leased or released meanwhile: lock again
			}
			switch r.State {
			case berth.StateQuarantined:
				res.Resource, res.Unchanged = r, true
				return nil
			case berth.StateDeleting:
				return berth.Errorf(berth.EConflict, "resource %q is being deleted by its pool's deprovisioner", r.Name)
			}
			ev := &events{}
			if r.LeaseID != "" {
				l, err := scanLease(tx.QueryRow(ctx, "UPDATE leases SET ended_at = $1, end_reason = 'revoked' WHERE id = $2 AND ended_at IS NULL RETURNING "+leaseColumns,
					nanos(t), r.LeaseID))
				if err != nil {
					return fmt.Errorf("revoke lease %s: %w", r.LeaseID, err)
				}
				res.Revoked = l
				ev.add(store.RevokedEvent(r, l, p.Actor, p.Reason, t))
				// Delivered at commit to every replica: the leader's
				// janitor, if it holds the lease, stops at once.
				if _, err := tx.Exec(ctx, "SELECT pg_notify("+handoffChannel+", $1)", store.LeaseEndedPrefix+l.ID); err != nil {
					return fmt.Errorf("notify revocation: %w", err)
				}
			}
			ev.add(store.AdminEvent(r, berth.StateQuarantined, store.ReasonQuarantined, p.Actor, p.Reason, t))
			res.Resource, err = scanResource(tx.QueryRow(ctx, `UPDATE resources SET state = 'quarantined', state_reason = $1, state_changed_at = $2,
					owner = '', lease_id = NULL, next_clean_at = 0, deep_clean = false WHERE name = $3 RETURNING `+resourceColumns, p.Reason, nanos(t), r.Name))
			if err != nil {
				return fmt.Errorf("quarantine: %w", err)
			}
			return ev.flush(ctx, tx)
		})
		if errors.Is(err, errResourceMoved) && attempt < 5 {
			continue
		}
		if err != nil {
			return nil, wrap("quarantine", err)
		}
		return res, nil
	}
}

// lockToFree locks, in a transaction, the queue of resource name's type
// and then its row, as an operation that may make it free must; it reads
// the type first and, should the resource have moved to another pool
// meanwhile, runs fn again (a few times).
func (s *Store) lockToFree(ctx context.Context, name string, fn func(tx pgx.Tx, r *berth.Resource, ev *events) error) error {
	for attempt := 1; ; attempt++ {
		var typ string
		if err := s.pool.QueryRow(ctx, "SELECT type FROM resources WHERE name = $1", name).Scan(&typ); errors.Is(err, pgx.ErrNoRows) {
			return store.ErrNotFound
		} else if err != nil {
			return fmt.Errorf("read resource: %w", err)
		}
		err := s.tx(ctx, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, queueLockShared, typ); err != nil {
				return fmt.Errorf("lock queue of %s: %w", typ, err)
			}
			r, err := lockResource(ctx, tx, name)
			if err != nil {
				return err
			}
			if r.Type != typ {
				return errResourceMoved
			}
			ev := &events{}
			if err := fn(tx, r, ev); err != nil {
				return err
			}
			return ev.flush(ctx, tx)
		})
		if errors.Is(err, errResourceMoved) && attempt < 3 {
			continue
		}
		return err
	}
}

// ResourceUnquarantine returns a quarantined resource to service.
func (s *Store) ResourceUnquarantine(ctx context.Context, p *store.ResourceUnquarantineParams) (*store.ResourceChangeResult, error) {
	ctx, cancel := s.bound(ctx, opTimeout)
	defer cancel()
	t := now(p.Now)
	res := &store.ResourceChangeResult{}
	err := s.lockToFree(ctx, p.Name, func(tx pgx.Tx, r *berth.Resource, ev *events) error {
		*res = store.ResourceChangeResult{}
		if r.State != berth.StateQuarantined {
			return berth.Errorf(berth.EConflict, "resource %q is not quarantined (it is %s)", r.Name, r.State)
		}
		ev.add(store.AdminEvent(r, p.To, store.ReasonUnquarantined, p.Actor, p.Reason, t))
		r, err := scanResource(tx.QueryRow(ctx, `UPDATE resources SET state = $1, state_reason = '', state_changed_at = $2,
				clean_attempts = 0, next_clean_at = 0, deep_clean = false WHERE name = $3 RETURNING `+resourceColumns, string(p.To), nanos(t), r.Name))
		if err != nil {
			return fmt.Errorf("unquarantine: %w", err)
		}
		return afterFreed(ctx, tx, ev, r, p.To, p.HandoffTTL, p.Actor, t, res)
	})
	if err != nil {
		return nil, wrap("unquarantine", err)
	}
	return res, nil
}

// afterFreed puts r in res and, if it is free now, hands it to the first
// waiter it suits.
func afterFreed(ctx context.Context, tx pgx.Tx, ev *events, r *berth.Resource, to berth.State, ttl time.Duration, actor string, t time.Time,
	res *store.ResourceChangeResult) error {
	res.Resource = r
	if to != berth.StateFree {
		return nil
	}
	h, err := handoff(ctx, tx, ev, r, t, ttl, actor)
	if err != nil || h == nil {
		return err
	}
	res.Handoffs = append(res.Handoffs, *h)
	return nil
}

// ResourceDrain drains or undrains one resource.
func (s *Store) ResourceDrain(ctx context.Context, p *store.ResourceDrainParams) (*store.ResourceChangeResult, error) {
	ctx, cancel := s.bound(ctx, opTimeout)
	defer cancel()
	t := now(p.Now)
	res := &store.ResourceChangeResult{}
	err := s.lockToFree(ctx, p.Name, func(tx pgx.Tx, r *berth.Resource, ev *events) error {
		*res = store.ResourceChangeResult{}
		if r.Draining == p.Drain {
			res.Resource, res.Unchanged = r, true
			return nil
		}
		reason := store.ReasonUndrained
		if p.Drain {
			reason = store.ReasonDrained
		}
		ev.add(store.DrainEvent(r, reason, p.Actor, p.Reason, t))
		r, err := scanResource(tx.QueryRow(ctx, "UPDATE resources SET draining = $1 WHERE name = $2 RETURNING "+resourceColumns, p.Drain, r.Name))
		if err != nil {
			return fmt.Errorf("drain: %w", err)
		}
		to := r.State
		if p.Drain {
			to = "" // nothing to hand over
		}
		return afterFreed(ctx, tx, ev, r, to, p.HandoffTTL, p.Actor, t, res)
	})
	if err != nil {
		return nil, wrap("drain", err)
	}
	return res, nil
}

// PoolDrain drains or undrains a pool. Undrained, its free resources go
// to its waiters.
func (s *Store) PoolDrain(ctx context.Context, p *store.PoolDrainParams) (*store.PoolDrainResult, error) {
	ctx, cancel := s.bound(ctx, opTimeout)
	defer cancel()
	t := now(p.Now)
	res := &store.PoolDrainResult{}
	err := s.tx(ctx, func(tx pgx.Tx) error {
		*res = store.PoolDrainResult{}
		if _, err := tx.Exec(ctx, queueLockShared, p.Type); err != nil {
			return fmt.Errorf("lock queue of %s: %w", p.Type, err)
		}
		var exists bool
		if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pools WHERE type = $1)", p.Type).Scan(&exists); err != nil {
			return fmt.Errorf("read pool: %w", err)
		}
		if !exists {
			return store.UnknownPoolError(p.Type)
		}
		q, args := "DELETE FROM pool_drains WHERE type = $1", []any{p.Type}
		if p.Drain {
			q, args = "INSERT INTO pool_drains (type, reason, actor, since) VALUES ($1, $2, $3, $4) ON CONFLICT (type) DO NOTHING",
				[]any{p.Type, p.Reason, p.Actor, nanos(t)}
		}
		tag, err := tx.Exec(ctx, q, args...)
		if err != nil {
			return fmt.Errorf("drain pool: %w", err)
		}
		if tag.RowsAffected() == 0 {
			res.Unchanged = true
			return nil
		}
		ev := &events{}
		ev.add(store.PoolDrainEvent(p, t))
		if p.Drain {
			return ev.flush(ctx, tx)
		}
		// Each free, leasable resource to the first waiter it suits, while
		// any waits. Locked as a sync locks rows, in name order; one that
		// another transaction holds is on its way elsewhere.
		rows, err := tx.Query(ctx, `SELECT `+resourceColumns+` FROM resources WHERE type = $1 AND state = 'free' AND NOT retiring AND health_ok
			AND NOT draining ORDER BY state_changed_at, name FOR UPDATE SKIP LOCKED`, p.Type)
		if err != nil {
			return fmt.Errorf("list free resources: %w", err)
		}
		free, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*berth.Resource, error) { return scanResource(row) })
		if err != nil {
			return fmt.Errorf("list free resources: %w", err)
		}
		for _, r := range free {
			h, err := handoff(ctx, tx, ev, r, t, p.HandoffTTL, p.Actor)
			if err != nil {
				return err
			}
			if h == nil {
				var waits bool
				if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM requests WHERE type = $1 AND expires_at > $2)", p.Type, nanos(t)).Scan(&waits); err != nil {
					return fmt.Errorf("find waiters: %w", err)
				}
				if !waits {
					break
				}
				continue
			}
			res.Handoffs = append(res.Handoffs, *h)
		}
		return ev.flush(ctx, tx)
	})
	if err != nil {
		return nil, wrap("drain pool", err)
	}
	return res, nil
}

// ResourceDeleteBegin moves an unleased resource to deleting.
func (s *Store) ResourceDeleteBegin(ctx context.Context, p *store.ResourceDeleteBeginParams) (*berth.Resource, error) {
	t := now(p.Now)
	var out *berth.Resource
	err := s.onLockedResource(ctx, p.Name, "begin deletion", func(tx pgx.Tx, r *berth.Resource, ev *events) error {
		out = r
		e, err := store.DeleteBeginDecision(p, r, t)
		if err != nil || e == nil {
			return err
		}
		ev.add(e)
		out, err = scanResource(tx.QueryRow(ctx, `UPDATE resources SET state = 'deleting', state_reason = $1, state_changed_at = $2,
				clean_attempts = 0, next_clean_at = 0, deep_clean = false WHERE name = $3 RETURNING `+resourceColumns, p.Reason, nanos(t), r.Name))
		if err != nil {
			return fmt.Errorf("mark deleting: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ResourceDeleteEnd records a deprovisioner's outcome.
func (s *Store) ResourceDeleteEnd(ctx context.Context, p *store.ResourceDeleteEndParams) (*berth.Resource, error) {
	t := now(p.Now)
	var out *berth.Resource
	err := s.onLockedResource(ctx, p.Name, "end deletion", func(tx pgx.Tx, r *berth.Resource, ev *events) error {
		out = nil
		o, err := store.DecideDelete(p, r, t)
		if err != nil {
			return err
		}
		ev.add(o.Event)
		if o.Remove {
			return removeResource(ctx, tx, r.Name)
		}
		out, err = scanResource(tx.QueryRow(ctx, `UPDATE resources SET state = $1, state_reason = $2, state_changed_at = $3,
				clean_attempts = $4, next_clean_at = $5 WHERE name = $6 RETURNING `+resourceColumns,
			string(o.To), o.Reason, nanos(t), o.Attempts, nullNanos(o.NextAt), r.Name))
		if err != nil {
			return fmt.Errorf("record deprovisioning: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
