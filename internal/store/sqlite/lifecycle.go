package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/store"
)

// CleanClaim moves the dirty resource of the type that has waited longest
// (and whose backoff, if any, has passed) to cleaning under a lease of
// kind clean. A janitor looks often and mostly finds nothing, so a read on
// a reader connection comes first: only a look that finds a resource
// takes the writer.
func (s *Store) CleanClaim(ctx context.Context, p *store.CleanClaimParams) (*store.CleanClaimResult, error) {
	t := now(p.Now)
	if p.RequestID == "" {
		ready, next, err := dirtyReady(ctx, s.r, p.Type, p.Name, t)
		if err != nil {
			return nil, fmt.Errorf("sqlite: claim for cleaning: %w", err)
		}
		if !ready {
			return &store.CleanClaimResult{NextAt: next}, nil
		}
	}
	res := &store.CleanClaimResult{}
	err := s.tx(ctx, func(tx *wtx) error {
		*res = store.CleanClaimResult{}
		if p.RequestID != "" {
			// A retry of a claim that got a lease: the same lease.
			l, err := scanLease(tx.QueryRowContext(ctx, "SELECT "+leaseColumns+
				" FROM leases WHERE request_id = ?1 AND ended_at IS NULL AND expires_at > ?2 AND kind = 'clean' LIMIT 1", p.RequestID, nanos(t)))
			switch {
			case errors.Is(err, sql.ErrNoRows):
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
		q := `UPDATE resources SET state = 'cleaning', state_changed_at = ?1, owner = ?2, lease_id = ?3
			WHERE rowid = (SELECT rowid FROM resources WHERE type = ?4 AND state = 'dirty' AND next_clean_at <= ?1`
		args := []any{nanos(t), p.Owner, id, p.Type}
		if p.Name != "" {
			q += " AND name = ?5"
			args = append(args, p.Name)
		}
		q += " ORDER BY state_changed_at LIMIT 1) RETURNING " + resourceColumns
		r, err := scanResource(tx.QueryRowContext(ctx, q, args...))
		if errors.Is(err, sql.ErrNoRows) {
			// Taken meanwhile: say when to look again.
			_, res.NextAt, err = dirtyReady(ctx, tx, p.Type, p.Name, t)
			return err
		}
		if err != nil {
			return fmt.Errorf("claim a dirty resource: %w", err)
		}
		attempt := r.CleanAttempts + 1
		l, err := recordLease(ctx, tx, r, berth.StateDirty, grantArgs{
			id: id, owner: p.Owner, requestID: p.RequestID, ttl: p.LeaseTTL, expires: t.Add(p.LeaseTTL), now: t, actor: actorOr(p.Actor, p.Owner),
			reason: store.ReasonCleaning, kind: berth.LeaseClean, to: berth.StateCleaning, evKind: berth.EventJanitor,
			message: store.CleaningMessage(p.Owner, attempt, r.DeepClean),
		})
		if err != nil {
			return err
		}
		res.Lease, res.Resource, res.Attempt = l, r, attempt
		return nil
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
	query := "SELECT min(next_clean_at) FROM resources WHERE type = ? AND state = 'dirty'"
	args := []any{typ}
	if name != "" {
		query += " AND name = ?"
		args = append(args, name)
	}
	var first sql.NullInt64
	if err := q.QueryRowContext(ctx, query, args...).Scan(&first); err != nil {
		return false, time.Time{}, fmt.Errorf("look for dirty resources: %w", err)
	}
	switch {
	case !first.Valid:
		return false, time.Time{}, nil
	case first.Int64 <= nanos(t):
		return true, time.Time{}, nil
	}
	return false, fromNanos(first.Int64), nil
}

func actorOr(actor, owner string) string {
	if actor != "" {
		return actor
	}
	return owner
}

// CleanEnd ends a cleaning lease with its outcome.
func (s *Store) CleanEnd(ctx context.Context, p *store.CleanEndParams) (*store.CleanEndResult, error) {
	t := now(p.Now)
	res := &store.CleanEndResult{}
	err := s.tx(ctx, func(tx *wtx) error {
		*res = store.CleanEndResult{}
		status, expiry := berth.LeaseReleased, "expires_at > ?1"
		if p.Expired {
			status, expiry = berth.LeaseExpired, "expires_at <= ?1"
		}
		l, err := scanLease(tx.QueryRowContext(ctx, "UPDATE leases SET ended_at = ?1, end_reason = ?2 WHERE id = ?3 AND ended_at IS NULL AND kind = 'clean' AND "+
			expiry+" RETURNING "+leaseColumns, nanos(t), string(status), p.ID))
		if errors.Is(err, sql.ErrNoRows) {
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
		r, err := resourceGet(ctx, tx, l.Resource)
		if err != nil {
			return fmt.Errorf("resource %s of lease %s: %w", l.Resource, l.ID, err)
		}
		if r.LeaseID != l.ID {
			return fmt.Errorf("resource %s is held by lease %q, not %q", r.Name, r.LeaseID, l.ID)
		}
		pol := p.Policy(r.Type)
		o := store.DecideClean(p, pol, r, l, t)
		ev := &eventWriter{tx: tx}
		if err := ev.write(o.Event); err != nil {
			return err
		}
		res.Event = o.Event
		if o.Remove {
			if _, err := tx.ExecContext(ctx, "DELETE FROM resources WHERE name = ?", r.Name); err != nil {
				return fmt.Errorf("remove retired resource: %w", err)
			}
			return nil
		}
		if _, err := tx.ExecContext(ctx, `UPDATE resources SET state = ?, state_reason = ?, state_changed_at = ?, owner = '', lease_id = NULL,
				clean_attempts = ?, next_clean_at = ?, deep_clean = ? WHERE name = ?`,
			string(o.To), o.Reason, nanos(t), o.Attempts, nullNanos(o.NextAt), o.Deep, r.Name); err != nil {
			return fmt.Errorf("move resource on: %w", err)
		}
		r, err = resourceGet(ctx, tx, r.Name)
		if err != nil {
			return err
		}
		res.Resource = r
		if o.To == berth.StateFree {
			h, err := handoff(ctx, tx, r, t, pol.HandoffTTL, o.Event.Actor)
			if err != nil {
				return err
			}
			res.Handoff = h
		}
		return nil
	})
	if err != nil {
		return res, wrap("end cleaning", err)
	}
	return res, nil
}

// nullNanos is t in nanoseconds, 0 for the zero time.
func nullNanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return nanos(t)
}

// onResource runs fn in a write transaction on resource name, as read at
// its start. fn may run more than once (see writer): it must set
// everything it returns each time.
func (s *Store) onResource(ctx context.Context, name, op string, fn func(tx *wtx, r *berth.Resource) error) error {
	err := s.tx(ctx, func(tx *wtx) error {
		r, err := resourceGet(ctx, tx, name)
		if err != nil {
			return err
		}
		return fn(tx, r)
	})
	if err != nil {
		return wrap(op, err)
	}
	return nil
}

// ResourceAdd adds a free resource at runtime and hands it to the first
// waiter it suits.
func (s *Store) ResourceAdd(ctx context.Context, p *store.ResourceAddParams) (*store.ResourceChangeResult, error) {
	t := now(p.Now)
	res := &store.ResourceChangeResult{}
	err := s.tx(ctx, func(tx *wtx) error {
		*res = store.ResourceChangeResult{}
		var one int
		if err := tx.QueryRowContext(ctx, "SELECT 1 FROM pools WHERE type = ?", p.Type).Scan(&one); errors.Is(err, sql.ErrNoRows) {
			return store.UnknownPoolError(p.Type)
		} else if err != nil {
			return fmt.Errorf("read pool: %w", err)
		}
		var have string
		switch err := tx.QueryRowContext(ctx, "SELECT type FROM resources WHERE name = ?", p.Spec.Name).Scan(&have); {
		case err == nil:
			return store.ExistsError(p.Spec.Name, have)
		case !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("read resource: %w", err)
		}
		if p.MaxTotal > 0 {
			var n int
			if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM resources WHERE type = ?", p.Type).Scan(&n); err != nil {
				return fmt.Errorf("count resources: %w", err)
			}
			if n >= p.MaxTotal {
				return store.ErrPoolFull
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO resources (name, type, state, state_changed_at, user_data, labels, created_at, source)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, p.Spec.Name, p.Type, string(p.Initial()), nanos(t), mustJSON(p.Spec.UserData), mustJSON(p.Spec.Labels), nanos(t), p.Source); err != nil {
			return fmt.Errorf("insert resource: %w", err)
		}
		if _, err := tx.ExecContext(ctx, "UPDATE resources SET health_ok = "+healthOKExpr+" WHERE name = ?", p.Spec.Name); err != nil {
			return fmt.Errorf("apply the pool's health policy: %w", err)
		}
		if err := (&eventWriter{tx: tx}).write(store.AddedEvent(p, t)); err != nil {
			return err
		}
		r, err := resourceGet(ctx, tx, p.Spec.Name)
		if err != nil {
			return err
		}
		res.Resource = r
		if r.State != berth.StateFree {
			return nil
		}
		h, err := handoff(ctx, tx, r, t, p.HandoffTTL, p.Actor)
		if err != nil {
			return err
		}
		if h != nil {
			res.Handoffs = append(res.Handoffs, *h)
		}
		return nil
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
	err := s.onResource(ctx, p.Name, "retire resource", func(tx *wtx, r *berth.Resource) error {
		*res = store.ResourceChangeResult{}
		ev, remove, err := store.RetireDecision(p, r, t)
		if err != nil || ev == nil {
			res.Resource, res.Unchanged = r, ev == nil
			return err
		}
		if err := (&eventWriter{tx: tx}).write(ev); err != nil {
			return err
		}
		if remove {
			_, err := tx.ExecContext(ctx, "DELETE FROM resources WHERE name = ?", r.Name)
			return err
		}
		if _, err := tx.ExecContext(ctx, "UPDATE resources SET retiring = 1 WHERE name = ?", r.Name); err != nil {
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
	t := now(p.Now)
	res := &store.ResourceChangeResult{}
	err := s.onResource(ctx, p.Name, "quarantine", func(tx *wtx, r *berth.Resource) error {
		*res = store.ResourceChangeResult{}
		switch r.State {
		case berth.StateQuarantined:
			res.Resource, res.Unchanged = r, true
			return nil
		case berth.StateDeleting:
			return berth.Errorf(berth.EConflict, "resource %q is being deleted by its pool's deprovisioner", r.Name)
		}
		ev := &eventWriter{tx: tx}
		if r.LeaseID != "" {
			l, err := scanLease(tx.QueryRowContext(ctx, "UPDATE leases SET ended_at = ?, end_reason = 'revoked' WHERE id = ? AND ended_at IS NULL RETURNING "+leaseColumns,
				nanos(t), r.LeaseID))
			if err != nil {
				return fmt.Errorf("revoke lease %s: %w", r.LeaseID, err)
			}
			res.Revoked = l
			if err := ev.write(store.RevokedEvent(r, l, p.Actor, p.Reason, t)); err != nil {
				return err
			}
		}
		if err := ev.write(store.AdminEvent(r, berth.StateQuarantined, store.ReasonQuarantined, p.Actor, p.Reason, t)); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE resources SET state = 'quarantined', state_reason = ?, state_changed_at = ?, owner = '', lease_id = NULL,
				next_clean_at = 0, deep_clean = 0 WHERE name = ?`, p.Reason, nanos(t), r.Name); err != nil {
			return fmt.Errorf("quarantine: %w", err)
		}
		var err error
		res.Resource, err = resourceGet(ctx, tx, r.Name)
		return err
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// ResourceUnquarantine returns a quarantined resource to service.
func (s *Store) ResourceUnquarantine(ctx context.Context, p *store.ResourceUnquarantineParams) (*store.ResourceChangeResult, error) {
	t := now(p.Now)
	res := &store.ResourceChangeResult{}
	err := s.onResource(ctx, p.Name, "unquarantine", func(tx *wtx, r *berth.Resource) error {
		*res = store.ResourceChangeResult{}
		if r.State != berth.StateQuarantined {
			return berth.Errorf(berth.EConflict, "resource %q is not quarantined (it is %s)", r.Name, r.State)
		}
		if err := (&eventWriter{tx: tx}).write(store.AdminEvent(r, p.To, store.ReasonUnquarantined, p.Actor, p.Reason, t)); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE resources SET state = ?, state_reason = '', state_changed_at = ?,
				clean_attempts = 0, next_clean_at = 0, deep_clean = 0 WHERE name = ?`, string(p.To), nanos(t), r.Name); err != nil {
			return fmt.Errorf("unquarantine: %w", err)
		}
		return s.afterFreed(ctx, tx, r.Name, p.To, p.HandoffTTL, p.Actor, t, res)
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// afterFreed reads resource name back into res and, if it is free now,
// hands it to the first waiter it suits.
func (s *Store) afterFreed(ctx context.Context, tx *wtx, name string, to berth.State, ttl time.Duration, actor string, t time.Time, res *store.ResourceChangeResult) error {
	r, err := resourceGet(ctx, tx, name)
	if err != nil {
		return err
	}
	res.Resource = r
	if to != berth.StateFree {
		return nil
	}
	h, err := handoff(ctx, tx, r, t, ttl, actor)
	if err != nil || h == nil {
		return err
	}
	res.Handoffs = append(res.Handoffs, *h)
	return nil
}

// ResourceDrain drains or undrains one resource.
func (s *Store) ResourceDrain(ctx context.Context, p *store.ResourceDrainParams) (*store.ResourceChangeResult, error) {
	t := now(p.Now)
	res := &store.ResourceChangeResult{}
	err := s.onResource(ctx, p.Name, "drain", func(tx *wtx, r *berth.Resource) error {
		*res = store.ResourceChangeResult{}
		if r.Draining == p.Drain {
			res.Resource, res.Unchanged = r, true
			return nil
		}
		reason := store.ReasonUndrained
		if p.Drain {
			reason = store.ReasonDrained
		}
		if err := (&eventWriter{tx: tx}).write(store.DrainEvent(r, reason, p.Actor, p.Reason, t)); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "UPDATE resources SET draining = ? WHERE name = ?", p.Drain, r.Name); err != nil {
			return fmt.Errorf("drain: %w", err)
		}
		to := r.State
		if p.Drain {
			to = "" // nothing to hand over
		}
		return s.afterFreed(ctx, tx, r.Name, to, p.HandoffTTL, p.Actor, t, res)
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// PoolDrain drains or undrains a pool. Undrained, its free resources go
// to its waiters.
func (s *Store) PoolDrain(ctx context.Context, p *store.PoolDrainParams) (*store.PoolDrainResult, error) {
	t := now(p.Now)
	res := &store.PoolDrainResult{}
	err := s.tx(ctx, func(tx *wtx) error {
		*res = store.PoolDrainResult{}
		var one int
		if err := tx.QueryRowContext(ctx, "SELECT 1 FROM pools WHERE type = ?", p.Type).Scan(&one); errors.Is(err, sql.ErrNoRows) {
			return store.UnknownPoolError(p.Type)
		} else if err != nil {
			return fmt.Errorf("read pool: %w", err)
		}
		var (
			r   sql.Result
			err error
		)
		if p.Drain {
			r, err = tx.ExecContext(ctx, "INSERT INTO pool_drains (type, reason, actor, since) VALUES (?, ?, ?, ?) ON CONFLICT (type) DO NOTHING",
				p.Type, p.Reason, p.Actor, nanos(t))
		} else {
			r, err = tx.ExecContext(ctx, "DELETE FROM pool_drains WHERE type = ?", p.Type)
		}
		if err != nil {
			return fmt.Errorf("drain pool: %w", err)
		}
		if n, err := r.RowsAffected(); err != nil || n == 0 {
			res.Unchanged = true
			return err
		}
		if err := (&eventWriter{tx: tx}).write(store.PoolDrainEvent(p, t)); err != nil {
			return err
		}
		if p.Drain {
			return nil
		}
		// Each free, leasable resource to the first waiter it suits, while
		// any waits.
		rows, err := tx.QueryContext(ctx, `SELECT name FROM resources WHERE type = ? AND state = 'free' AND retiring = 0 AND health_ok = 1
			AND draining = 0 ORDER BY state_changed_at`, p.Type)
		if err != nil {
			return fmt.Errorf("list free resources: %w", err)
		}
		var free []string
		for rows.Next() {
			var n string
			if err := rows.Scan(&n); err != nil {
				rows.Close()
				return err
			}
			free = append(free, n)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, n := range free {
			if !waiting(ctx, tx, p.Type, t) {
				break
			}
			r, err := resourceGet(ctx, tx, n)
			if err != nil {
				return err
			}
			h, err := handoff(ctx, tx, r, t, p.HandoffTTL, p.Actor)
			if err != nil {
				return err
			}
			if h != nil {
				res.Handoffs = append(res.Handoffs, *h)
			}
		}
		return nil
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
	err := s.onResource(ctx, p.Name, "begin deletion", func(tx *wtx, r *berth.Resource) error {
		out = nil
		ev, err := store.DeleteBeginDecision(p, r, t)
		if err != nil {
			return err
		}
		if ev != nil {
			if err := (&eventWriter{tx: tx}).write(ev); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `UPDATE resources SET state = 'deleting', state_reason = ?, state_changed_at = ?,
					clean_attempts = 0, next_clean_at = 0, deep_clean = 0 WHERE name = ?`, p.Reason, nanos(t), r.Name); err != nil {
				return fmt.Errorf("mark deleting: %w", err)
			}
		}
		out, err = resourceGet(ctx, tx, r.Name)
		return err
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
	err := s.onResource(ctx, p.Name, "end deletion", func(tx *wtx, r *berth.Resource) error {
		out = nil
		o, err := store.DecideDelete(p, r, t)
		if err != nil {
			return err
		}
		if err := (&eventWriter{tx: tx}).write(o.Event); err != nil {
			return err
		}
		if o.Remove {
			_, err := tx.ExecContext(ctx, "DELETE FROM resources WHERE name = ?", r.Name)
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE resources SET state = ?, state_reason = ?, state_changed_at = ?,
				clean_attempts = ?, next_clean_at = ? WHERE name = ?`,
			string(o.To), o.Reason, nanos(t), o.Attempts, nullNanos(o.NextAt), r.Name); err != nil {
			return fmt.Errorf("record deprovisioning: %w", err)
		}
		out, err = resourceGet(ctx, tx, r.Name)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
