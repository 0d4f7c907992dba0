package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/store"
)

const leaseColumns = `token, id, resource, type, owner, request_id, ttl, acquired_at, expires_at, ended_at, end_reason, kind, principal`

func scanLease(row pgx.Row) (*berth.Lease, error) {
	var d leaseDest
	if err := row.Scan(d.dest()...); err != nil {
		return nil, err
	}
	return d.lease(), nil
}

// leaseDest receives leaseColumns, alone or beside other columns of one
// row.
type leaseDest struct {
	l             berth.Lease
	reqID         *string
	ttl, acq, exp int64
	ended         *int64
	endReason     string
}

func (d *leaseDest) dest() []any {
	l := &d.l
	return []any{&l.Token, &l.ID, &l.Resource, &l.Type, &l.Owner, &d.reqID, &d.ttl, &d.acq, &d.exp, &d.ended, &d.endReason, &l.Kind, &l.Principal}
}

func (d *leaseDest) lease() *berth.Lease {
	l := d.l
	if d.reqID != nil {
		l.RequestID = *d.reqID
	}
	l.TTL = berth.Duration(d.ttl)
	l.AcquiredAt = fromNanos(d.acq)
	l.ExpiresAt = fromNanos(d.exp)
	l.EndedAt = nullTime(d.ended)
	switch {
	case d.ended == nil:
		l.Status = berth.LeaseActive
	case d.endReason == string(berth.LeaseExpired):
		l.Status = berth.LeaseExpired
	case d.endReason == string(berth.LeaseRevoked):
		l.Status = berth.LeaseRevoked
	default:
		l.Status = berth.LeaseReleased
	}
	return &l
}

func (s *Store) LeaseGet(ctx context.Context, id string) (*berth.Lease, error) {
	ctx, cancel := s.bound(ctx, opTimeout)
	defer cancel()
	return leaseGet(ctx, s.pool, id)
}

func leaseGet(ctx context.Context, q querier, id string) (*berth.Lease, error) {
	l, err := scanLease(q.QueryRow(ctx, "SELECT "+leaseColumns+" FROM leases WHERE id = $1", id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get lease: %w", err)
	}
	return l, nil
}

// requestLock serializes, across replicas, the acquires that carry one
// request id: a retry that reaches another replica while the first try is
// still running must find its lease, not take a second resource.
const requestLock = "SELECT pg_advisory_xact_lock(hashtextextended('berth-request:' || current_schema() || ':' || $1, 0))"

func (s *Store) LeaseAcquire(ctx context.Context, p *store.LeaseAcquireParams) (*store.LeaseAcquireResult, error) {
	res, err := s.leaseAcquire(ctx, p)
	if err == nil && res.Lease != nil {
		s.leaseTypes.put(res.Lease.ID, res.Lease.Type)
	}
	return res, err
}

func (s *Store) leaseAcquire(ctx context.Context, p *store.LeaseAcquireParams) (*store.LeaseAcquireResult, error) {
	ctx, cancel := s.bound(ctx, opTimeout)
	defer cancel()
	t := now(p.Now)
	dest := p.To
	if dest == "" {
		dest = berth.StateBusy
	}
	// The one-statement path leases to busy; a Boskos client's state of
	// its own takes the general one.
	if !p.ClaimOnly && dest == berth.StateBusy {
		res, err := s.acquireAtOnce(ctx, p, t)
		if err != nil {
			return nil, wrap("acquire", err)
		}
		if res != nil {
			return res, nil
		}
		if p.RequestID == "" && !p.Wait {
			return &store.LeaseAcquireResult{}, nil // nothing free, and no request to look after
		}
	}
	res := &store.LeaseAcquireResult{}
	err := s.tx(ctx, func(tx pgx.Tx) error {
		*res = store.LeaseAcquireResult{}
		queued := false
		if p.RequestID != "" {
			if _, err := tx.Exec(ctx, requestLock, p.RequestID); err != nil {
				return fmt.Errorf("lock request: %w", err)
			}
			// Whether the request waits in the queue, read before its
			// lease is looked for: only a queued request can be handed a
			// resource by a release running beside this call.
			if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM requests WHERE id = $1)", p.RequestID).Scan(&queued); err != nil {
				return fmt.Errorf("find queued request: %w", err)
			}
			// A retry of an acquire that succeeded, or a waiter coming for
			// the resource it was handed: give it the same lease.
			if found, err := claimLease(ctx, tx, p, t, res); found || err != nil {
				return err
			}
		}
		if p.ClaimOnly {
			return nil
		}
		id := berth.NewID()
		take := func() (bool, error) {
			// The request may be handed a resource by a release at the
			// same time as this call takes one for it. The queue row is
			// not locked meanwhile (a locked row would be passed over, and
			// its waiter served out of turn); instead, after taking, the
			// row is deleted, which waits for such a handoff, and if it is
			// gone the handoff's lease is returned and the take undone.
			var sp pgx.Tx
			if queued {
				var err error
				if sp, err = tx.Begin(ctx); err != nil {
					return false, fmt.Errorf("savepoint: %w", err)
				}
			}
			r, err := takeFree(ctx, tx, p.Type, p.Selector, p.Owner, id, dest, t)
			if err != nil || r == nil {
				if sp != nil {
					_ = sp.Rollback(ctx)
				}
				return false, err
			}
			if queued {
				tag, err := tx.Exec(ctx, "DELETE FROM requests WHERE id = $1", p.RequestID)
				if err != nil {
					return false, fmt.Errorf("delete served request: %w", err)
				}
				if tag.RowsAffected() == 0 {
					if found, err := claimLease(ctx, tx, p, t, res); found || err != nil {
						if rerr := sp.Rollback(ctx); rerr != nil && err == nil {
							err = fmt.Errorf("undo take: %w", rerr)
						}
						return found, err
					}
				}
				if err := sp.Commit(ctx); err != nil {
					return false, fmt.Errorf("release savepoint: %w", err)
				}
			}
			ev := &events{}
			l, err := recordLease(ctx, tx, ev, r, berth.StateFree, grantArgs{
				id: id, owner: p.Owner, requestID: p.RequestID, ttl: p.LeaseTTL,
				expires: t.Add(p.LeaseTTL), now: t, actor: p.Actor, reason: "acquired", to: dest,
			})
			if err != nil {
				return false, err
			}
			res.Lease, res.Resource = l, r
			return true, ev.flush(ctx, tx)
		}
		if done, err := take(); done || err != nil {
			return err
		}
		if !p.Wait {
			return nil
		}
		// Nothing free: queue, under the type's queue lock taken
		// exclusively. A release that frees a resource holds that lock
		// shared from before it looks for waiters until it commits, so by
		// the time the lock is ours every release that missed this request
		// has committed, and the second look below sees what it freed (or
		// the lease it handed this request). Without this, a release and
		// an enqueue running together could each miss the other: a free
		// resource and a waiter waiting.
		if _, err := tx.Exec(ctx, queueLockExclusive, p.Type); err != nil {
			return fmt.Errorf("lock queue of %s: %w", p.Type, err)
		}
		if p.RequestID != "" {
			if found, err := claimLease(ctx, tx, p, t, res); found || err != nil {
				return err
			}
		}
		if done, err := take(); done || err != nil {
			return err
		}
		req, joined, err := enqueue(ctx, tx, p, t)
		if err != nil {
			return err
		}
		res.Request, res.Joined = req, joined
		return nil
	})
	if err != nil {
		return nil, wrap("acquire", err)
	}
	return res, nil
}

// acquireAtOnce is the common acquire in one round trip: a free resource
// for a request that neither waits in the queue nor holds a lease already
// (or carries no request id). The request's lock and the statement that
// takes the resource, writes the lease and its event go in one pipelined
// batch, which PostgreSQL runs as one implicit transaction; the statement
// is a snapshot taken after the lock, so no other acquire of the request
// can run between its checks and its take. It returns nil, having changed
// nothing, when the request waits or holds a lease, or nothing is free:
// the general path, one statement at a time, sorts those out.
func (s *Store) acquireAtOnce(ctx context.Context, p *store.LeaseAcquireParams, t time.Time) (*store.LeaseAcquireResult, error) {
	id := berth.NewID()
	who, _ := berth.PrincipalFrom(ctx)
	ev := &berth.Event{Actor: p.Actor}
	store.Audited(ev, who)
	args := []any{nanos(t), p.Owner, id, p.Type, nullString(p.RequestID), int64(p.LeaseTTL), nanos(t.Add(p.LeaseTTL)), ev.Actor,
		string(berth.EventLease), string(berth.StateFree), string(berth.StateBusy), "leased to " + p.Owner, who.Name, ev.Remote}
	q := acquireAtOnceSQL
	if len(p.Selector) > 0 {
		q = acquireAtOnceSelectorSQL
		args = append(args, map[string]string(p.Selector))
	}
	var (
		ld leaseDest
		rd resourceDest
	)
	dest := append([]any{&ld.l.Token}, rd.dest()...)
	var err error
	if berr := s.grouped(ctx, func(b *pgx.Batch) {
		if p.RequestID != "" {
			b.Queue(requestLock, p.RequestID)
		}
		b.Queue(q, args...).QueryRow(func(row pgx.Row) error { err = row.Scan(dest...); return nil })
	}); berr != nil {
		return nil, fmt.Errorf("take a free resource: %w", berr)
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("take a free resource: %w", err)
	}
	r := rd.resource()
	return &store.LeaseAcquireResult{
		Resource: r,
		Lease: &berth.Lease{
			ID: id, Token: ld.l.Token, Kind: berth.LeaseUse, Owner: p.Owner, Resource: r.Name, Type: r.Type, Status: berth.LeaseActive,
			AcquiredAt: t, ExpiresAt: t.Add(p.LeaseTTL), TTL: berth.Duration(p.LeaseTTL), RequestID: p.RequestID, Principal: who.Name,
		},
	}, nil
}

// acquireAtOnceSQL takes the free resource of type $4 that has been free
// longest, if request $5 (NULL for none) neither waits nor holds a live
// lease, and writes its lease $3 and the lease's event. Its variant with
// a selector adds "labels @> $15". $13 is the principal that holds the
// lease, $14 the client's address for the event.
var acquireAtOnceSQL, acquireAtOnceSelectorSQL = acquireAtOnceQuery(""), acquireAtOnceQuery(" AND labels @> $15")

func acquireAtOnceQuery(selector string) string {
	return `WITH pick AS (
		SELECT name FROM resources
		WHERE type = $4 AND state = 'free' AND NOT retiring AND health_ok AND NOT draining` + selector + `
			AND NOT EXISTS (SELECT 1 FROM pool_drains WHERE pool_drains.type = $4)
			AND NOT EXISTS (SELECT 1 FROM requests WHERE id = $5)
			AND NOT EXISTS (SELECT 1 FROM leases WHERE request_id = $5 AND ended_at IS NULL AND expires_at > $1)
		ORDER BY state_changed_at, name LIMIT 1 FOR UPDATE SKIP LOCKED
	), taken AS (
		UPDATE resources SET state = 'busy', state_reason = '', state_changed_at = $1, owner = $2, lease_id = $3
		WHERE name = (SELECT name FROM pick)
		RETURNING ` + resourceColumns + `
	), lease AS (
		INSERT INTO leases (id, resource, type, owner, request_id, ttl, acquired_at, expires_at, principal)
		SELECT $3, name, type, $2, $5, $6::bigint, $1, $7::bigint, $13::text FROM taken
		RETURNING token
	), event AS (
		INSERT INTO events (time, resource, type, kind, from_state, to_state, reason, actor, lease_id, token, message, remote)
		SELECT $1, taken.name, taken.type, $9::text, $10::text, $11::text, 'acquired', $8::text, $3, lease.token, $12::text, $14::text FROM taken, lease
	)
	SELECT lease.token, ` + resourceColumns + ` FROM taken, lease`
}

// claimLease finds the live lease of request p.RequestID (active and not
// past its expiry; at most one is), extends it to a full TTL from t if it
// was a handoff not yet claimed, and puts it in res. found is false when
// the request has no live lease.
func claimLease(ctx context.Context, tx pgx.Tx, p *store.LeaseAcquireParams, t time.Time, res *store.LeaseAcquireResult) (found bool, err error) {
	l, err := scanLease(tx.QueryRow(ctx, "SELECT "+leaseColumns+
		" FROM leases WHERE request_id = $1 AND ended_at IS NULL AND expires_at > $2 LIMIT 1", p.RequestID, nanos(t)))
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("find lease of request: %w", err)
	case l.Type != p.Type:
		return false, berth.FieldErrorf("requestId", "request %q was made for type %q, not %q", p.RequestID, l.Type, p.Type)
	case l.Owner != p.Owner:
		return false, berth.FieldErrorf("requestId", "request %q belongs to another owner", p.RequestID)
	case otherPrincipal(ctx, l.Principal):
		return false, berth.Errorf(berth.EForbidden, "request %q is another token's", p.RequestID)
	}
	// Claimed: from now on it is the waiter's, and ends as any lease does.
	// The read above locked nothing: a reaper may have ended the lease
	// since (and, it being unclaimed, handed the resource on). The update
	// claims it only if it is still live; else there is nothing to claim.
	if exp := t.Add(time.Duration(l.TTL)); exp.After(l.ExpiresAt) {
		l.ExpiresAt = exp
	}
	tag, err := tx.Exec(ctx, "UPDATE leases SET expires_at = $1, claimed = true WHERE token = $2 AND ended_at IS NULL AND expires_at > $3",
		nanos(l.ExpiresAt), l.Token, nanos(t))
	if err != nil {
		return false, fmt.Errorf("claim lease: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return false, nil
	}
	r, err := resourceGet(ctx, tx, l.Resource)
	if err != nil {
		return false, err
	}
	res.Lease, res.Resource = l, r
	return true, nil
}

// The queue lock of a type orders enqueues after the releases that could
// have served them (see LeaseAcquire). Releases share it, so they never wait
// for each other; only an enqueue, which happens when the pool is
// exhausted, waits for the releases in flight and holds new ones back until
// it commits.
const (
	queueLockShared    = "SELECT pg_advisory_xact_lock_shared(hashtextextended('berth-queue:' || current_schema() || ':' || $1, 0))"
	queueLockExclusive = "SELECT pg_advisory_xact_lock(hashtextextended('berth-queue:' || current_schema() || ':' || $1, 0))"
)

// wrap adds context to err unless it is a sentinel or a caller-facing
// *berth.Error, which must reach the engine unchanged.
func wrap(op string, err error) error {
	var be *berth.Error
	if errors.As(err, &be) || errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrLeaseEnded) || errors.Is(err, store.ErrLeaseActive) {
		return err
	}
	return fmt.Errorf("postgres: %s: %w", op, err)
}

// takeFree marks the free resource of the type that matches sel and has
// been free longest as leased to owner under leaseID, and returns it; nil
// if there is none. SKIP LOCKED: a resource another replica is taking at
// this moment is passed over, never waited for.
func takeFree(ctx context.Context, tx pgx.Tx, typ string, sel berth.Selector, owner, leaseID string, dest berth.State, t time.Time) (*berth.Resource, error) {
	q := `UPDATE resources SET state = $5, state_reason = '', state_changed_at = $1, owner = $2, lease_id = $3
		WHERE name = (SELECT name FROM resources WHERE type = $4 AND state = 'free' AND NOT retiring AND health_ok AND NOT draining
			AND NOT EXISTS (SELECT 1 FROM pool_drains WHERE pool_drains.type = $4)`
	args := []any{nanos(t), owner, leaseID, typ, string(dest)}
	if len(sel) > 0 {
		q += " AND labels @> $6"
		args = append(args, map[string]string(sel))
	}
	q += " ORDER BY state_changed_at, name LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING " + resourceColumns
	r, err := scanResource(tx.QueryRow(ctx, q, args...))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("take a free resource: %w", err)
	}
	return r, nil
}

type grantArgs struct {
	id, owner, requestID string
	ttl                  time.Duration
	expires, now         time.Time
	actor, reason        string
	// kind is berth.LeaseUse unless set; to is the state the lease puts
	// the resource in, berth.StateBusy unless set; message replaces the
	// event's "leased to OWNER".
	kind    berth.LeaseKind
	to      berth.State
	message string
	evKind  berth.EventKind
	// unclaimed marks a lease handed to a waiter that has not come for it.
	unclaimed bool
	// principal holds the lease: the waiting request's for a handoff,
	// else the caller's (from ctx).
	principal string
}

// recordLease writes the lease row and queues its event for r, which the
// caller has already marked busy under g.id; from is the state r was in.
func recordLease(ctx context.Context, tx pgx.Tx, ev *events, r *berth.Resource, from berth.State, g grantArgs) (*berth.Lease, error) {
	if g.kind == "" {
		g.kind = berth.LeaseUse
	}
	if g.to == "" {
		g.to = berth.StateBusy
	}
	if g.message == "" {
		g.message = "leased to " + g.owner
	}
	if g.evKind == "" {
		g.evKind = berth.EventLease
	}
	var token int64
	if g.principal == "" && !g.unclaimed {
		p, _ := berth.PrincipalFrom(ctx)
		g.principal = p.Name
	}
	err := tx.QueryRow(ctx, `INSERT INTO leases (id, resource, type, owner, request_id, ttl, acquired_at, expires_at, kind, claimed, principal)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING token`,
		g.id, r.Name, r.Type, g.owner, nullString(g.requestID), int64(g.ttl), nanos(g.now), nanos(g.expires), string(g.kind), !g.unclaimed, g.principal).Scan(&token)
	if err != nil {
		return nil, fmt.Errorf("insert lease: %w", err)
	}
	ev.add(&berth.Event{Time: g.now, Resource: r.Name, Type: r.Type, Kind: g.evKind,
		From: string(from), To: string(g.to), Reason: g.reason, Actor: g.actor, LeaseID: g.id, Token: token,
		Message: g.message})
	return &berth.Lease{
		ID: g.id, Token: token, Kind: g.kind, Owner: g.owner, Resource: r.Name, Type: r.Type, Status: berth.LeaseActive,
		AcquiredAt: g.now, ExpiresAt: g.expires, TTL: berth.Duration(g.ttl), RequestID: g.requestID, Principal: g.principal,
	}, nil
}

func enqueue(ctx context.Context, tx pgx.Tx, p *store.LeaseAcquireParams, t time.Time) (req *berth.Request, joined bool, err error) {
	if p.RequestID == "" {
		return nil, false, errors.New("a waiting acquire needs a request id")
	}
	var (
		seq          int64
		typ, owner   string
		exp, created int64
		prio         int
	)
	var principal string
	err = tx.QueryRow(ctx, "SELECT seq, type, owner, priority, created_at, expires_at, principal FROM requests WHERE id = $1", p.RequestID).
		Scan(&seq, &typ, &owner, &prio, &created, &exp, &principal)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return nil, false, fmt.Errorf("find request: %w", err)
	case typ != p.Type:
		return nil, false, berth.FieldErrorf("requestId", "request %q was made for type %q, not %q", p.RequestID, typ, p.Type)
	case owner != p.Owner:
		return nil, false, berth.FieldErrorf("requestId", "request %q belongs to another owner", p.RequestID)
	case otherPrincipal(ctx, principal):
		return nil, false, berth.Errorf(berth.EForbidden, "request %q is another token's", p.RequestID)
	case exp > nanos(t):
		// Still in the queue: keep the place, extend the hold on it.
		if nanos(p.WaitUntil) > exp {
			exp = nanos(p.WaitUntil)
			if _, err := tx.Exec(ctx, "UPDATE requests SET expires_at = $1 WHERE seq = $2", exp, seq); err != nil {
				return nil, false, fmt.Errorf("extend request: %w", err)
			}
		}
		req, err = requestWithPosition(ctx, tx, &berth.Request{
			ID: p.RequestID, Type: typ, Owner: p.Owner, Priority: prio, Selector: p.Selector,
			CreatedAt: fromNanos(created), ExpiresAt: fromNanos(exp),
		}, seq, t)
		return req, false, err
	default:
		// It expired: it lost its place and joins at the back.
		if _, err := tx.Exec(ctx, "DELETE FROM requests WHERE seq = $1", seq); err != nil {
			return nil, false, fmt.Errorf("drop expired request: %w", err)
		}
	}
	sel := map[string]string(p.Selector)
	if sel == nil {
		sel = map[string]string{}
	}
	dest := p.To
	if dest == "" {
		dest = berth.StateBusy
	}
	who, _ := berth.PrincipalFrom(ctx)
	err = tx.QueryRow(ctx, `INSERT INTO requests (id, type, owner, priority, selector, created_at, expires_at, dest, principal)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING seq`, p.RequestID, p.Type, p.Owner, p.Priority, sel, nanos(t), nanos(p.WaitUntil), string(dest), who.Name).Scan(&seq)
	if err != nil {
		return nil, false, fmt.Errorf("queue request: %w", err)
	}
	req, err = requestWithPosition(ctx, tx, &berth.Request{
		ID: p.RequestID, Type: p.Type, Owner: p.Owner, Priority: p.Priority, Selector: p.Selector,
		CreatedAt: t, ExpiresAt: p.WaitUntil,
	}, seq, t)
	return req, true, err
}

func requestWithPosition(ctx context.Context, q querier, r *berth.Request, seq int64, t time.Time) (*berth.Request, error) {
	var ahead int
	err := q.QueryRow(ctx, `SELECT count(*) FROM requests WHERE type = $1 AND expires_at > $2
		AND (priority > $3 OR (priority = $3 AND seq < $4))`, r.Type, nanos(t), r.Priority, seq).Scan(&ahead)
	if err != nil {
		return nil, fmt.Errorf("request position: %w", err)
	}
	r.Position = ahead + 1
	return r, nil
}

func (s *Store) RequestGet(ctx context.Context, p *store.RequestGetParams) (*berth.Request, error) {
	ctx, cancel := s.bound(ctx, opTimeout)
	defer cancel()
	t := now(p.Now)
	var (
		r            berth.Request
		seq          int64
		sel          map[string]string
		created, exp int64
	)
	err := s.pool.QueryRow(ctx, "SELECT seq, id, type, owner, priority, selector, created_at, expires_at, principal FROM requests WHERE id = $1", p.ID).
		Scan(&seq, &r.ID, &r.Type, &r.Owner, &r.Priority, &sel, &created, &exp, &r.Principal)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: get request: %w", err)
	}
	if len(sel) > 0 {
		r.Selector = sel
	}
	r.CreatedAt, r.ExpiresAt = fromNanos(created), fromNanos(exp)
	out, err := requestWithPosition(ctx, s.pool, &r, seq, t)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	return out, nil
}

func (s *Store) RequestCancel(ctx context.Context, id string) error {
	ctx, cancel := s.bound(ctx, opTimeout)
	defer cancel()
	tag, err := s.pool.Exec(ctx, "DELETE FROM requests WHERE id = $1", id)
	if err != nil {
		return fmt.Errorf("postgres: cancel request: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return store.ErrNotFound
	}
	return nil
}

func (s *Store) RequestShorten(ctx context.Context, p *store.RequestShortenParams) error {
	ctx, cancel := s.bound(ctx, opTimeout)
	defer cancel()
	if _, err := s.pool.Exec(ctx, "UPDATE requests SET expires_at = least(expires_at, $1) WHERE id = $2", nanos(p.ExpiresAt), p.ID); err != nil {
		return fmt.Errorf("postgres: shorten request: %w", err)
	}
	return nil
}

func (s *Store) RequestPrune(ctx context.Context, t time.Time) (int, error) {
	ctx, cancel := s.bound(ctx, opTimeout)
	defer cancel()
	n := 0
	for _, table := range []string{"requests", "state_requests"} {
		tag, err := s.pool.Exec(ctx, "DELETE FROM "+table+" WHERE expires_at <= $1", nanos(now(t)))
		if err != nil {
			return n, fmt.Errorf("postgres: prune %s: %w", table, err)
		}
		n += int(tag.RowsAffected())
	}
	return n, nil
}

func (s *Store) LeaseHeartbeat(ctx context.Context, p *store.LeaseHeartbeatParams) (*store.LeaseHeartbeatResult, error) {
	ctx, cancel := s.bound(ctx, opTimeout)
	defer cancel()
	t := now(p.Now)
	if p.UserData != nil {
		return s.heartbeatWithData(ctx, p, t)
	}
	// One statement: extend the lease and read its resource.
	var (
		ld leaseDest
		rd resourceDest
	)
	err := s.pool.QueryRow(ctx, heartbeatSQL, nanos(t), p.ID).Scan(append(ld.dest(), rd.dest()...)...)
	if err == nil {
		return &store.LeaseHeartbeatResult{Lease: ld.lease(), Resource: rd.resource()}, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("postgres: heartbeat: %w", err)
	}
	l, err := leaseGet(ctx, s.pool, p.ID)
	if err != nil {
		return nil, wrap("heartbeat", err)
	}
	if l.Status == berth.LeaseActive && l.ExpiresAt.After(t) {
		// Extended, but its resource is gone: the join found no row.
		return nil, fmt.Errorf("postgres: heartbeat: resource %s of lease %s: %w", l.Resource, l.ID, store.ErrNotFound)
	}
	return nil, store.ErrLeaseEnded
}

// heartbeatWithData extends the lease and merges p.UserData into its
// resource's user data, in one transaction: the lease's row, then the
// resource's, in the order every other writer locks them.
func (s *Store) heartbeatWithData(ctx context.Context, p *store.LeaseHeartbeatParams, t time.Time) (*store.LeaseHeartbeatResult, error) {
	res := &store.LeaseHeartbeatResult{}
	err := s.tx(ctx, func(tx pgx.Tx) error {
		l, err := scanLease(tx.QueryRow(ctx, "UPDATE leases SET expires_at = $1 + ttl, claimed = true WHERE id = $2 AND ended_at IS NULL AND expires_at > $1 RETURNING "+leaseColumns,
			nanos(t), p.ID))
		if errors.Is(err, pgx.ErrNoRows) {
			if _, err := leaseGet(ctx, tx, p.ID); err != nil {
				return err
			}
			return store.ErrLeaseEnded
		}
		if err != nil {
			return fmt.Errorf("extend lease: %w", err)
		}
		r, err := scanResource(tx.QueryRow(ctx, "SELECT "+resourceColumns+" FROM resources WHERE name = $1 FOR UPDATE", l.Resource))
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("resource %s of lease %s: %w", l.Resource, l.ID, store.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("resource %s of lease %s: %w", l.Resource, l.ID, err)
		}
		if r.UserData, err = store.MergeUserData(p.UserDataField, r.UserData, p.UserData); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "UPDATE resources SET user_data = $1 WHERE name = $2", r.UserData, r.Name); err != nil {
			return fmt.Errorf("update user data of %s: %w", r.Name, err)
		}
		res.Lease, res.Resource = l, r
		return nil
	})
	if err != nil {
		return nil, wrap("heartbeat", err)
	}
	return res, nil
}

// heartbeatSQL extends lease $2, active and not past its expiry at $1, to
// $1 + its TTL, and returns it with its resource.
var heartbeatSQL = `WITH l AS (
		UPDATE leases SET expires_at = $1 + ttl, claimed = true WHERE id = $2 AND ended_at IS NULL AND expires_at > $1
		RETURNING ` + leaseColumns + `
	)
	SELECT ` + qualified("l", leaseColumns) + `, ` + qualified("r", resourceColumns) + ` FROM l JOIN resources r ON r.name = l.resource`

func (s *Store) LeaseRelease(ctx context.Context, p *store.LeaseReleaseParams) (*store.LeaseReleaseResult, error) {
	ctx, cancel := s.bound(ctx, opTimeout)
	defer cancel()
	t := now(p.Now)
	decide := func(leaseType string) store.Outcome {
		if p.Decide != nil {
			return p.Decide(leaseType)
		}
		return store.Outcome{To: p.To, Deep: p.Deep, HandoffTTL: p.HandoffTTL}
	}
	// A lease this process granted has its type at hand: its release tries
	// the one-statement path at once. That path declines, changing
	// nothing, if a request waits or the resource has moved to another
	// pool since (a config change); the general path below serves those.
	leaseType, known := s.leaseTypes.take(p.ID)
	if known {
		if res, err := s.releaseAtOnce(ctx, p, leaseType, decide(leaseType), t); err != nil || res != nil {
			if err != nil {
				return &store.LeaseReleaseResult{}, wrap("release", err)
			}
			return res, nil
		}
	}
	for attempt := 1; ; attempt++ {
		res, err := s.release(ctx, p, decide, !known, t)
		if errors.Is(err, errResourceMoved) && attempt < 3 {
			continue
		}
		if err != nil {
			return res, wrap("release", err)
		}
		return res, nil
	}
}

// errResourceMoved says that a release locked the queue of a type its
// resource no longer has: a config change moved it meanwhile. The release
// starts again.
var errResourceMoved = errors.New("the resource moved to another pool")

// release reads what the lease's release needs to know, then ends it: in
// one statement if that can (and tryAtOnce), else in the general way.
func (s *Store) release(ctx context.Context, p *store.LeaseReleaseParams, decide func(string) store.Outcome, tryAtOnce bool, t time.Time) (*store.LeaseReleaseResult, error) {
	// The type of the lease's resource: the pool it is in now, whose
	// policy Decide applies and whose queue a freed resource goes to (not
	// the lease's type when a config change moved the resource to another
	// pool); and whether a request of that type waits, in which case the
	// resource may be handed over, which only the general path does.
	// Read on their own, outside the transaction; the transaction checks
	// the resource's type again once it holds the row.
	var (
		resType string
		waiting bool
	)
	err := s.pool.QueryRow(ctx, `SELECT coalesce(r.type, l.type),
			EXISTS (SELECT 1 FROM requests q WHERE q.type = coalesce(r.type, l.type) AND q.expires_at > $2)
		FROM leases l LEFT JOIN resources r ON r.name = l.resource WHERE l.id = $1`, p.ID, nanos(t)).Scan(&resType, &waiting)
	if errors.Is(err, pgx.ErrNoRows) {
		return &store.LeaseReleaseResult{}, store.ErrNotFound
	}
	if err != nil {
		return &store.LeaseReleaseResult{}, fmt.Errorf("find lease: %w", err)
	}
	// The pool the resource is in now decides what becomes of it.
	out := decide(resType)
	to := out.To
	if tryAtOnce && (!waiting || to != berth.StateFree) {
		if res, err := s.releaseAtOnce(ctx, p, resType, out, t); err != nil || res != nil {
			if err != nil {
				return &store.LeaseReleaseResult{}, err
			}
			return res, nil
		}
	}
	res := &store.LeaseReleaseResult{}
	err = s.tx(ctx, func(tx pgx.Tx) error {
		*res = store.LeaseReleaseResult{}
		out, to, why := out, to, p.Reason
		// First the queue lock of the resource's type (see
		// queueLockShared), then the lease's row, then the resource's:
		// every release takes them in this order, so that two releases of
		// one lease never deadlock.
		if _, err := tx.Exec(ctx, queueLockShared, resType); err != nil {
			return fmt.Errorf("lock queue of %s: %w", resType, err)
		}
		status := berth.LeaseReleased
		// A lease past its expiry is lost: only the reaper ends it, as
		// expired, so that the record says what happened.
		// A cleaning lease ends through CleanEnd, with its outcome.
		q := "UPDATE leases SET ended_at = $1, end_reason = $2 WHERE id = $3 AND ended_at IS NULL AND expires_at > $1"
		if p.Expired {
			status = berth.LeaseExpired
			// Only if still past its expiry: a heartbeat may have won.
			q = "UPDATE leases SET ended_at = $1, end_reason = $2 WHERE id = $3 AND ended_at IS NULL AND expires_at <= $1"
		}
		if !p.AnyKind {
			q += " AND kind = 'use'"
		}
		q += " RETURNING " + leaseColumns
		l, err := scanLease(tx.QueryRow(ctx, q, nanos(t), string(status), p.ID))
		if errors.Is(err, pgx.ErrNoRows) {
			l, err := leaseGet(ctx, tx, p.ID)
			if err != nil {
				return err
			}
			if l.Kind == berth.LeaseClean && l.Status == berth.LeaseActive {
				return store.CleanLeaseError(l.ID)
			}
			if l.Status == berth.LeaseActive && p.Expired {
				return store.ErrLeaseActive
			}
			res.Lease = l
			return store.ErrLeaseEnded
		}
		if err != nil {
			return fmt.Errorf("end lease: %w", err)
		}
		res.Lease = l
		actor := p.Actor
		if actor == "" {
			actor = l.Owner // the holder released it
		}
		if p.Expired && l.RequestID != "" {
			var unclaimed bool
			if err := tx.QueryRow(ctx, "SELECT NOT claimed FROM leases WHERE id = $1", l.ID).Scan(&unclaimed); err != nil {
				return fmt.Errorf("read lease: %w", err)
			}
			if unclaimed {
				// Handed to a waiter that never came for it: nobody used
				// the resource, so it is free again, for the next waiter.
				out = store.Outcome{To: berth.StateFree, HandoffTTL: out.HandoffTTL}
				to, why = out.To, store.UnclaimedReason(l)
			}
		}
		// The resource row is locked by the lease's end above only in
		// spirit: lock it for real before deciding what becomes of it.
		r, err := scanResource(tx.QueryRow(ctx, "SELECT "+resourceColumns+" FROM resources WHERE name = $1 FOR UPDATE", l.Resource))
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("resource %s of lease %s: %w", l.Resource, l.ID, store.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("resource %s of lease %s: %w", l.Resource, l.ID, err)
		}
		if r.LeaseID != l.ID {
			return fmt.Errorf("resource %s is held by lease %q, not %q", r.Name, r.LeaseID, l.ID)
		}
		if r.Type != resType {
			return errResourceMoved // the queue locked is not its queue
		}
		ev := &events{}
		reason := string(status)
		from := r.State
		if r.Retiring && r.Source != berth.SourceDynamic {
			if _, err := tx.Exec(ctx, "DELETE FROM resources WHERE name = $1", r.Name); err != nil {
				return fmt.Errorf("remove retired resource: %w", err)
			}
			ev.add(&berth.Event{Time: t, Resource: r.Name, Type: r.Type, Kind: berth.EventLease, From: string(from),
				Reason: reason, Actor: actor, LeaseID: l.ID, Token: l.Token,
				Message: strings.TrimSuffix("lease "+reason+"; resource removed from the pool ("+store.WhyRetiring(r)+"); "+why, "; ")})
			return ev.flush(ctx, tx)
		}
		ev.add(&berth.Event{Time: t, Resource: r.Name, Type: r.Type, Kind: berth.EventLease, From: string(from),
			To: string(to), Reason: reason, Actor: actor, LeaseID: l.ID, Token: l.Token, Message: why})
		r.Owner, r.LeaseID, r.StateReason, r.StateChangedAt = "", "", "", t
		r.CleanAttempts, r.NextCleanAt, r.DeepClean = 0, nil, out.Deep && to == berth.StateDirty
		if to == berth.StateFree && !r.Retiring {
			// Straight to the first waiter it suits, if any: one update.
			h, err := handoff(ctx, tx, ev, r, t, out.HandoffTTL, actor)
			if err != nil {
				return err
			}
			if h != nil {
				res.Resource, res.Handoff = r, h
				return ev.flush(ctx, tx)
			}
		}
		r.StateReason = store.ReleaseReason(out, why)
		r.State = to
		if _, err := tx.Exec(ctx, `UPDATE resources SET state = $1, state_reason = $2, state_changed_at = $3, owner = '', lease_id = NULL,
				clean_attempts = 0, next_clean_at = 0, deep_clean = $5
			WHERE name = $4`, string(to), r.StateReason, nanos(t), r.Name, r.DeepClean); err != nil {
			return fmt.Errorf("move resource on: %w", err)
		}
		res.Resource = r
		return ev.flush(ctx, tx)
	})
	return res, err
}

// typeCache remembers the types of the leases this process granted, so
// that their release need not read it first. A lease's type never changes,
// and its id is never reused, so an entry is never wrong; entries of
// leases released elsewhere are dropped with the rest when it fills up.
type typeCache struct {
	mu sync.Mutex
	m  map[string]string
}

const typeCacheSize = 50_000

func (c *typeCache) put(id, typ string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= typeCacheSize {
		c.m = make(map[string]string)
	}
	c.m[id] = typ
}

// take returns the type of lease id, if known, and forgets it.
func (c *typeCache) take(id string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	typ, ok := c.m[id]
	delete(c.m, id)
	return typ, ok
}

// releaseAtOnce is the common release in one round trip: the lease ends
// and its resource moves to state to, when the resource is not retiring
// and, if it becomes free, no request of its type waits. One pipelined
// batch, which PostgreSQL runs as one implicit transaction, takes the
// locks in the general path's order (the type's queue lock, then the
// lease's and the resource's rows) and then, in a statement whose
// snapshot follows the locks, checks all that and makes the change with
// its event. It returns nil, having changed nothing, when any check fails:
// the general path sorts those cases out.
func (s *Store) releaseAtOnce(ctx context.Context, p *store.LeaseReleaseParams, typ string, out store.Outcome, t time.Time) (*store.LeaseReleaseResult, error) {
	// typ is the type whose queue lock the batch takes; the statement
	// declines unless the resource is of that type.
	status, q := berth.LeaseReleased, releaseAtOnceSQL
	if p.Expired {
		status, q = berth.LeaseExpired, releaseExpiredAtOnceSQL
	}
	to := out.To
	stateReason := store.ReleaseReason(out, p.Reason)
	// The event's actor and address, as store.Audited has them: $7 (""
	// for the lease's owner) and $12.
	who, _ := berth.PrincipalFrom(ctx)
	ev := &berth.Event{Actor: p.Actor}
	store.Audited(ev, who)
	var (
		ld  leaseDest
		rd  resourceDest
		err error
	)
	if berr := s.grouped(ctx, func(b *pgx.Batch) {
		b.Queue(queueLockShared, typ)
		b.Queue("SELECT 1 FROM leases l JOIN resources r ON r.name = l.resource WHERE l.id = $1 FOR UPDATE", p.ID)
		b.Queue(q, nanos(t), string(status), p.ID, string(to), stateReason, string(berth.EventLease), ev.Actor, p.Reason,
			string(berth.StateFree), typ, out.Deep && to == berth.StateDirty, ev.Remote).QueryRow(func(row pgx.Row) error {
			err = row.Scan(append(ld.dest(), rd.dest()...)...)
			return nil
		})
	}); berr != nil {
		return nil, fmt.Errorf("end lease: %w", berr)
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("end lease: %w", err)
	}
	return &store.LeaseReleaseResult{Lease: ld.lease(), Resource: rd.resource()}, nil
}

// releaseAtOnceSQL ends lease $3 (not past its expiry; past it for the
// Expired variant) and moves its resource to state $4 with its event,
// unless the resource is retiring, is not of type $10 (the queue the
// batch locked), or, to become free ($9), would find a request of that
// type waiting.
// The Expired variant declines a handoff its waiter never claimed: the
// general path sends that resource back to free.
var releaseAtOnceSQL, releaseExpiredAtOnceSQL = releaseAtOnceQuery("expires_at > $1"), releaseAtOnceQuery("expires_at <= $1 AND claimed")

func releaseAtOnceQuery(expiry string) string {
	return `WITH l AS (
		UPDATE leases SET ended_at = $1, end_reason = $2
		WHERE id = $3 AND ended_at IS NULL AND kind = 'use' AND ` + expiry + `
			AND EXISTS (SELECT 1 FROM resources r WHERE r.name = leases.resource AND r.lease_id = leases.id AND NOT r.retiring
				AND r.type = $10::text)
			AND ($4::text <> $9::text OR NOT EXISTS (SELECT 1 FROM requests q WHERE q.type = $10::text AND q.expires_at > $1))
		RETURNING ` + leaseColumns + `
	), old AS (
		SELECT r.name, r.state FROM resources r, l WHERE r.name = l.resource
	), moved AS (
		UPDATE resources SET state = $4, state_reason = $5, state_changed_at = $1, owner = '', lease_id = NULL,
			clean_attempts = 0, next_clean_at = 0, deep_clean = $11::boolean
		FROM l WHERE resources.name = l.resource
		RETURNING ` + qualified("resources", resourceColumns) + `
	), event AS (
		INSERT INTO events (time, resource, type, kind, from_state, to_state, reason, actor, lease_id, token, message, remote)
		SELECT $1, moved.name, moved.type, $6::text, old.state, $4::text, $2::text, coalesce(nullif($7::text, ''), l.owner), l.id, l.token, $8::text, $12::text
		FROM l, old, moved
	)
	SELECT ` + qualified("l", leaseColumns) + `, moved.* FROM l, moved`
}

// qualified prefixes each of the comma-separated columns with table.
func qualified(table, columns string) string {
	cols := strings.Split(columns, ",")
	for i, c := range cols {
		cols[i] = table + "." + strings.TrimSpace(c)
	}
	return strings.Join(cols, ", ")
}

// handoff gives the free resource r to the first waiting request it suits:
// highest priority first, then oldest. A request another replica is
// serving at this moment is passed over (SKIP LOCKED). It updates r in
// place and returns nil when none waits (r is then untouched).
func handoff(ctx context.Context, tx pgx.Tx, ev *events, r *berth.Resource, t time.Time, ttl time.Duration, actor string) (*store.Handoff, error) {
	var (
		reqID, owner, dest, principal string
		reqExpiresAt, reqCreate       int64
	)
	labels := r.Labels
	if labels == nil {
		labels = map[string]string{}
	}
	// Only a resource healthy enough for its pool is handed over; one that
	// is not stays free until a probe finds it so (see ResourceHealth).
	// Nor one that an admin drained, alone or with its pool.
	err := tx.QueryRow(ctx, `SELECT id, owner, expires_at, dest, created_at, principal FROM requests
		WHERE type = $1 AND expires_at > $2 AND $3::jsonb @> selector
			AND EXISTS (SELECT 1 FROM resources WHERE name = $4 AND health_ok AND NOT draining AND NOT retiring)
			AND NOT EXISTS (SELECT 1 FROM pool_drains d WHERE d.type = $1)
		ORDER BY priority DESC, seq LIMIT 1 FOR UPDATE SKIP LOCKED`, r.Type, nanos(t), labels, r.Name).Scan(&reqID, &owner, &reqExpiresAt, &dest, &reqCreate, &principal)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("find waiter: %w", err)
	}
	if _, err := tx.Exec(ctx, "DELETE FROM requests WHERE id = $1", reqID); err != nil {
		return nil, fmt.Errorf("delete served request: %w", err)
	}
	// Delivered at commit to every replica: the one where the waiter's
	// long poll runs wakes it (see ListenHandoffs).
	if _, err := tx.Exec(ctx, "SELECT pg_notify("+handoffChannel+", $1)", reqID); err != nil {
		return nil, fmt.Errorf("notify handoff: %w", err)
	}
	id := berth.NewID()
	if _, err := tx.Exec(ctx, `UPDATE resources SET state = $5, state_reason = '', state_changed_at = $1, owner = $2, lease_id = $3
		WHERE name = $4`, nanos(t), owner, id, r.Name, dest); err != nil {
		return nil, fmt.Errorf("hand resource over: %w", err)
	}
	// The waiter may have gone away and be due back within its grace. Until
	// it claims the lease, it lasts no longer than the request would have.
	exp := t.Add(ttl)
	if re := fromNanos(reqExpiresAt); re.Before(exp) {
		exp = re
	}
	if _, err := recordLease(ctx, tx, ev, r, berth.StateFree, grantArgs{id: id, owner: owner, requestID: reqID, ttl: ttl, expires: exp, now: t, actor: actor, reason: "handoff",
		to: berth.State(dest), unclaimed: true, principal: principal}); err != nil {
		return nil, err
	}
	r.State, r.StateReason, r.StateChangedAt, r.Owner, r.LeaseID = berth.State(dest), "", t, owner, id
	return &store.Handoff{RequestID: reqID, LeaseID: id, Type: r.Type, Waited: t.Sub(fromNanos(reqCreate))}, nil
}

func (s *Store) LeaseListExpired(ctx context.Context, p *store.LeaseListExpiredParams) ([]*berth.Lease, error) {
	ctx, cancel := s.bound(ctx, opTimeout)
	defer cancel()
	limit := p.Limit
	if limit <= 0 {
		limit = 1000
	}
	rows, err := s.pool.Query(ctx, "SELECT "+leaseColumns+" FROM leases WHERE ended_at IS NULL AND expires_at <= $1 ORDER BY expires_at LIMIT $2",
		nanos(now(p.Now)), limit)
	if err != nil {
		return nil, fmt.Errorf("postgres: list expired leases: %w", err)
	}
	defer rows.Close()
	var out []*berth.Lease
	for rows.Next() {
		l, err := scanLease(rows)
		if err != nil {
			return nil, fmt.Errorf("postgres: list expired leases: %w", err)
		}
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: list expired leases: %w", err)
	}
	return out, nil
}

// otherPrincipal says whether a lease or request held by holder is out
// of reach of ctx's principal: with authentication, another token's
// request id does not serve, or extend, its lease.
func otherPrincipal(ctx context.Context, holder string) bool {
	p, ok := berth.PrincipalFrom(ctx)
	return ok && p.Name != "" && holder != "" && holder != p.Name && !p.Role.Allows(berth.RoleAdmin)
}
