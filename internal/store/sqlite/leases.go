package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/store"
)

const leaseColumns = `token, id, resource, type, owner, request_id, ttl, acquired_at, expires_at, ended_at, end_reason, kind, principal`

func scanLease(row scanner) (*berth.Lease, error) {
	var (
		l             berth.Lease
		reqID         sql.NullString
		ttl, acq, exp int64
		ended         sql.NullInt64
		endReason     string
	)
	if err := row.Scan(&l.Token, &l.ID, &l.Resource, &l.Type, &l.Owner, &reqID, &ttl, &acq, &exp, &ended, &endReason, &l.Kind, &l.Principal); err != nil {
		return nil, err
	}
	l.RequestID = reqID.String
	l.TTL = berth.Duration(ttl)
	l.AcquiredAt = fromNanos(acq)
	l.ExpiresAt = fromNanos(exp)
	l.EndedAt = nullTime(ended)
	switch {
	case !ended.Valid:
		l.Status = berth.LeaseActive
	case endReason == string(berth.LeaseExpired):
		l.Status = berth.LeaseExpired
	case endReason == string(berth.LeaseRevoked):
		l.Status = berth.LeaseRevoked
	default:
		l.Status = berth.LeaseReleased
	}
	return &l, nil
}

func (s *Store) LeaseGet(ctx context.Context, id string) (*berth.Lease, error) {
	return leaseGet(ctx, s.r, id)
}

func leaseGet(ctx context.Context, q querier, id string) (*berth.Lease, error) {
	l, err := scanLease(q.QueryRowContext(ctx, "SELECT "+leaseColumns+" FROM leases WHERE id = ?", id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get lease: %w", err)
	}
	return l, nil
}

// otherPrincipal says whether a lease or request held by holder is out
// of reach of ctx's principal: with authentication, another token's
// request id does not serve, or extend, its lease.
func otherPrincipal(ctx context.Context, holder string) bool {
	p, ok := berth.PrincipalFrom(ctx)
	return ok && p.Name != "" && holder != "" && holder != p.Name && !p.Role.Allows(berth.RoleAdmin)
}

// principalName is the name of the principal ctx carries, "" if none.
func principalName(ctx context.Context) string {
	p, _ := berth.PrincipalFrom(ctx)
	return p.Name
}

func nullString(s string) sql.NullString { return sql.NullString{String: s, Valid: s != ""} }

func (s *Store) LeaseAcquire(ctx context.Context, p *store.LeaseAcquireParams) (*store.LeaseAcquireResult, error) {
	t := now(p.Now)
	res := &store.LeaseAcquireResult{}
	err := s.tx(ctx, func(tx *wtx) error {
		*res = store.LeaseAcquireResult{}
		if p.RequestID != "" {
			// A retry of an acquire that succeeded, or a waiter coming for
			// the resource it was handed: give it the same lease.
			// At most one lease of a request is live (active and not past
			// its expiry) at a time; an expired one the reaper has not
			// ended yet must not hide a newer one. (No ORDER BY: it would
			// make SQLite walk the table in token order.)
			l, err := scanLease(tx.QueryRowContext(ctx, "SELECT "+leaseColumns+
				" FROM leases WHERE request_id = ?1 AND ended_at IS NULL AND expires_at > ?2 LIMIT 1", p.RequestID, nanos(t)))
			switch {
			case errors.Is(err, sql.ErrNoRows):
			case err != nil:
				return fmt.Errorf("find lease of request: %w", err)
			case l.Type != p.Type:
				return berth.FieldErrorf("requestId", "request %q was made for type %q, not %q", p.RequestID, l.Type, p.Type)
			case l.Owner != p.Owner:
				return berth.FieldErrorf("requestId", "request %q belongs to another owner", p.RequestID)
			case otherPrincipal(ctx, l.Principal):
				return berth.Errorf(berth.EForbidden, "request %q is another token's", p.RequestID)
			default:
				// Claimed: from now on it is the waiter's, and ends as
				// any lease does.
				if exp := t.Add(time.Duration(l.TTL)); exp.After(l.ExpiresAt) {
					l.ExpiresAt = exp
				}
				if _, err := tx.ExecContext(ctx, "UPDATE leases SET expires_at = ?, claimed = 1 WHERE token = ?", nanos(l.ExpiresAt), l.Token); err != nil {
					return fmt.Errorf("claim lease: %w", err)
				}
				r, err := resourceGet(ctx, tx, l.Resource)
				if err != nil {
					return err
				}
				res.Lease, res.Resource = l, r
				return nil
			}
		}
		if p.ClaimOnly {
			return nil
		}
		id := berth.NewID()
		dest := p.To
		if dest == "" {
			dest = berth.StateBusy
		}
		r, err := takeFree(ctx, tx, p.Type, p.Selector, p.Owner, id, dest, t)
		if err != nil {
			return err
		}
		if r != nil {
			if p.RequestID != "" {
				// The same id may also wait in the queue (a waiting call,
				// then one that does not wait): served now, it must not be
				// served again there.
				if _, err := tx.ExecContext(ctx, "DELETE FROM requests WHERE id = ?", p.RequestID); err != nil {
					return fmt.Errorf("delete served request: %w", err)
				}
			}
			l, err := recordLease(ctx, tx, r, berth.StateFree, grantArgs{
				id: id, owner: p.Owner, requestID: p.RequestID, ttl: p.LeaseTTL,
				expires: t.Add(p.LeaseTTL), now: t, actor: p.Actor, reason: "acquired", to: dest,
			})
			if err != nil {
				return err
			}
			res.Lease, res.Resource = l, r
			return nil
		}
		if !p.Wait {
			return nil
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

// wrap adds context to err unless it is a sentinel or a caller-facing
// *berth.Error, which must reach the engine unchanged.
func wrap(op string, err error) error {
	var be *berth.Error
	if errors.As(err, &be) || errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrLeaseEnded) || errors.Is(err, errLeaseActive) {
		return err
	}
	return fmt.Errorf("sqlite: %s: %w", op, err)
}

// jsonPath quotes a label key for json_extract. Label keys are validated
// before they get here (no quotes or backslashes), and the path is passed as
// a parameter, never spliced into SQL.
func jsonPath(key string) string { return `$."` + key + `"` }

// takeFree marks the least recently changed free resource of the type that
// matches sel as leased to owner under leaseID, in one statement, and
// returns it; nil if there is none.
func takeFree(ctx context.Context, tx *wtx, typ string, sel berth.Selector, owner, leaseID string, dest berth.State, t time.Time) (*berth.Resource, error) {
	var b strings.Builder
	// Numbered: the selector's placeholders that follow take 6, 7, …
	b.WriteString(`UPDATE resources SET state = ?5, state_reason = '', state_changed_at = ?1, owner = ?2, lease_id = ?3
		WHERE rowid = (SELECT rowid FROM resources WHERE type = ?4 AND state = 'free' AND retiring = 0 AND health_ok = 1 AND draining = 0
			AND NOT EXISTS (SELECT 1 FROM pool_drains WHERE pool_drains.type = ?4)`)
	args := []any{nanos(t), owner, leaseID, typ, string(dest)}
	for _, k := range sel.Keys() {
		b.WriteString(" AND json_extract(labels, ?) = ?")
		args = append(args, jsonPath(k), sel[k])
	}
	b.WriteString(" ORDER BY state_changed_at LIMIT 1) RETURNING " + resourceColumns)
	r, err := scanResource(tx.QueryRowContext(ctx, b.String(), args...))
	if errors.Is(err, sql.ErrNoRows) {
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

// recordLease writes the lease row and its event for r, which the caller
// has already marked busy under g.id; from is the state r was in.
func recordLease(ctx context.Context, tx *wtx, r *berth.Resource, from berth.State, g grantArgs) (*berth.Lease, error) {
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
	if g.principal == "" && !g.unclaimed {
		g.principal = principalName(ctx)
	}
	res, err := tx.ExecContext(ctx, `INSERT INTO leases (id, resource, type, owner, request_id, ttl, acquired_at, expires_at, kind, claimed, principal)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		g.id, r.Name, r.Type, g.owner, nullString(g.requestID), int64(g.ttl), nanos(g.now), nanos(g.expires), string(g.kind), !g.unclaimed, g.principal)
	if err != nil {
		return nil, fmt.Errorf("insert lease: %w", err)
	}
	token, err := res.LastInsertId()
	if err != nil {
		return nil, fmt.Errorf("insert lease: %w", err)
	}
	ev := &eventWriter{tx: tx}
	if err := ev.write(&berth.Event{Time: g.now, Resource: r.Name, Type: r.Type, Kind: g.evKind,
		From: string(from), To: string(g.to), Reason: g.reason, Actor: g.actor, LeaseID: g.id, Token: token,
		Message: g.message}); err != nil {
		return nil, err
	}
	return &berth.Lease{
		ID: g.id, Token: token, Kind: g.kind, Owner: g.owner, Resource: r.Name, Type: r.Type, Status: berth.LeaseActive,
		AcquiredAt: g.now, ExpiresAt: g.expires, TTL: berth.Duration(g.ttl), RequestID: g.requestID, Principal: g.principal,
	}, nil
}

func enqueue(ctx context.Context, tx *wtx, p *store.LeaseAcquireParams, t time.Time) (req *berth.Request, joined bool, err error) {
	if p.RequestID == "" {
		return nil, false, errors.New("a waiting acquire needs a request id")
	}
	var (
		seq          int64
		typ          string
		exp, created int64
		prio         int
	)
	var owner, principal string
	err = tx.QueryRowContext(ctx, "SELECT seq, type, owner, priority, created_at, expires_at, principal FROM requests WHERE id = ?", p.RequestID).
		Scan(&seq, &typ, &owner, &prio, &created, &exp, &principal)
	switch {
	case errors.Is(err, sql.ErrNoRows):
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
			if _, err := tx.ExecContext(ctx, "UPDATE requests SET expires_at = ? WHERE seq = ?", exp, seq); err != nil {
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
		if _, err := tx.ExecContext(ctx, "DELETE FROM requests WHERE seq = ?", seq); err != nil {
			return nil, false, fmt.Errorf("drop expired request: %w", err)
		}
	}
	sel, err := json.Marshal(p.Selector)
	if err != nil {
		return nil, false, err
	}
	if p.Selector == nil {
		sel = []byte("{}")
	}
	dest := p.To
	if dest == "" {
		dest = berth.StateBusy
	}
	res, err := tx.ExecContext(ctx, `INSERT INTO requests (id, type, owner, priority, selector, created_at, expires_at, dest, principal)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, p.RequestID, p.Type, p.Owner, p.Priority, string(sel), nanos(t), nanos(p.WaitUntil), string(dest), principalName(ctx))
	if err != nil {
		return nil, false, fmt.Errorf("queue request: %w", err)
	}
	seq, err = res.LastInsertId()
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
	err := q.QueryRowContext(ctx, `SELECT count(*) FROM requests WHERE type = ? AND expires_at > ?
		AND (priority > ? OR (priority = ? AND seq < ?))`, r.Type, nanos(t), r.Priority, r.Priority, seq).Scan(&ahead)
	if err != nil {
		return nil, fmt.Errorf("request position: %w", err)
	}
	r.Position = ahead + 1
	return r, nil
}

func (s *Store) RequestGet(ctx context.Context, p *store.RequestGetParams) (*berth.Request, error) {
	t := now(p.Now)
	var (
		r            berth.Request
		seq          int64
		sel          string
		created, exp int64
	)
	err := s.r.QueryRowContext(ctx, "SELECT seq, id, type, owner, priority, selector, created_at, expires_at, principal FROM requests WHERE id = ?", p.ID).
		Scan(&seq, &r.ID, &r.Type, &r.Owner, &r.Priority, &sel, &created, &exp, &r.Principal)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: get request: %w", err)
	}
	if err := json.Unmarshal([]byte(sel), &r.Selector); err != nil {
		return nil, fmt.Errorf("sqlite: request %s selector: %w", r.ID, err)
	}
	r.CreatedAt, r.ExpiresAt = fromNanos(created), fromNanos(exp)
	out, err := requestWithPosition(ctx, s.r, &r, seq, t)
	if err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	return out, nil
}

func (s *Store) RequestCancel(ctx context.Context, id string) error {
	var n int64
	err := s.tx(ctx, func(tx *wtx) error {
		res, err := tx.ExecContext(ctx, "DELETE FROM requests WHERE id = ?", id)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite: cancel request: %w", err)
	}
	if n == 0 {
		return store.ErrNotFound
	}
	return nil
}

func (s *Store) RequestShorten(ctx context.Context, p *store.RequestShortenParams) error {
	err := s.tx(ctx, func(tx *wtx) error {
		_, err := tx.ExecContext(ctx, "UPDATE requests SET expires_at = min(expires_at, ?) WHERE id = ?", nanos(p.ExpiresAt), p.ID)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite: shorten request: %w", err)
	}
	return nil
}

func (s *Store) RequestPrune(ctx context.Context, t time.Time) (int, error) {
	var n int64
	err := s.tx(ctx, func(tx *wtx) error {
		for _, table := range []string{"requests", "state_requests"} {
			res, err := tx.ExecContext(ctx, "DELETE FROM "+table+" WHERE expires_at <= ?", nanos(now(t)))
			if err != nil {
				return err
			}
			d, err := res.RowsAffected()
			if err != nil {
				return err
			}
			n += d
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("sqlite: prune requests: %w", err)
	}
	return int(n), nil
}

func (s *Store) LeaseHeartbeat(ctx context.Context, p *store.LeaseHeartbeatParams) (*store.LeaseHeartbeatResult, error) {
	t := now(p.Now)
	res := &store.LeaseHeartbeatResult{}
	err := s.tx(ctx, func(tx *wtx) error {
		l, err := scanLease(tx.QueryRowContext(ctx, "UPDATE leases SET expires_at = ?1 + ttl, claimed = 1 WHERE id = ?2 AND ended_at IS NULL AND expires_at > ?1 RETURNING "+leaseColumns,
			nanos(t), p.ID))
		if errors.Is(err, sql.ErrNoRows) {
			if _, err := leaseGet(ctx, tx, p.ID); err != nil {
				return err
			}
			return store.ErrLeaseEnded
		}
		if err != nil {
			return err
		}
		r, err := resourceGet(ctx, tx, l.Resource)
		if err != nil {
			return fmt.Errorf("resource %s of lease %s: %w", l.Resource, l.ID, err)
		}
		if p.UserData != nil {
			if r.UserData, err = store.MergeUserData(p.UserDataField, r.UserData, p.UserData); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, "UPDATE resources SET user_data = ? WHERE name = ?", mustJSON(r.UserData), r.Name); err != nil {
				return fmt.Errorf("update user data of %s: %w", r.Name, err)
			}
		}
		res.Lease, res.Resource = l, r
		return nil
	})
	if err != nil {
		return nil, wrap("heartbeat", err)
	}
	return res, nil
}

// errLeaseActive: a reaper asked to expire a lease that a heartbeat renewed.
var errLeaseActive = store.ErrLeaseActive

func (s *Store) LeaseRelease(ctx context.Context, p *store.LeaseReleaseParams) (*store.LeaseReleaseResult, error) {
	t := now(p.Now)
	res := &store.LeaseReleaseResult{}
	err := s.tx(ctx, func(tx *wtx) error {
		*res = store.LeaseReleaseResult{}
		status := berth.LeaseReleased
		// A lease past its expiry is lost: only the reaper ends it, as
		// expired, so that the record says what happened.
		// A cleaning lease ends through CleanEnd, with its outcome.
		q := "UPDATE leases SET ended_at = ?1, end_reason = ?2 WHERE id = ?3 AND ended_at IS NULL AND expires_at > ?1"
		if p.Expired {
			status = berth.LeaseExpired
			// Only if still past its expiry: a heartbeat may have won.
			q = "UPDATE leases SET ended_at = ?1, end_reason = ?2 WHERE id = ?3 AND ended_at IS NULL AND expires_at <= ?1"
		}
		if !p.AnyKind {
			q += " AND kind = 'use'"
		}
		q += " RETURNING " + leaseColumns
		l, err := scanLease(tx.QueryRowContext(ctx, q, nanos(t), string(status), p.ID))
		if errors.Is(err, sql.ErrNoRows) {
			l, err := leaseGet(ctx, tx, p.ID)
			if err != nil {
				return err
			}
			if l.Kind == berth.LeaseClean && l.Status == berth.LeaseActive {
				return store.CleanLeaseError(l.ID)
			}
			if l.Status == berth.LeaseActive && p.Expired {
				return errLeaseActive
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
		out := store.Outcome{To: p.To, Deep: p.Deep, HandoffTTL: p.HandoffTTL}
		if p.Decide != nil {
			out = p.Decide(l.Type)
		}
		why := p.Reason
		unclaimed := false
		if p.Expired && l.RequestID != "" {
			if err := tx.QueryRowContext(ctx, "SELECT claimed = 0 FROM leases WHERE id = ?", l.ID).Scan(&unclaimed); err != nil {
				return fmt.Errorf("read lease: %w", err)
			}
		}
		if unclaimed {
			// Handed to a waiter that never came for it: nobody used the
			// resource, so it is free again, for the next waiter.
			out = store.Outcome{To: berth.StateFree, HandoffTTL: out.HandoffTTL}
			why = store.UnclaimedReason(l)
		}
		to := out.To

		// The common case in one statement: a busy resource that stays in
		// the pool and that no request waits for. Anything else (a
		// handoff, a retiring resource, a resource a config change moved
		// to another pool, whose waiters were not asked about, a row that
		// does not say what it should) takes the general way below.
		if to != berth.StateFree || !waiting(ctx, tx, l.Type, t) {
			r, err := scanResource(tx.QueryRowContext(ctx, `UPDATE resources SET state = ?1, state_reason = ?2, state_changed_at = ?3, owner = '', lease_id = NULL,
					clean_attempts = 0, next_clean_at = 0, deep_clean = ?7
				WHERE name = ?4 AND lease_id = ?5 AND state = 'busy' AND retiring = 0 AND type = ?6 RETURNING `+resourceColumns,
				string(to), store.ReleaseReason(out, why), nanos(t), l.Resource, l.ID, l.Type, out.Deep && to == berth.StateDirty))
			switch {
			case errors.Is(err, sql.ErrNoRows):
			case err != nil:
				return fmt.Errorf("move resource on: %w", err)
			default:
				res.Resource = r
				return (&eventWriter{tx: tx}).write(&berth.Event{Time: t, Resource: r.Name, Type: r.Type, Kind: berth.EventLease,
					From: string(berth.StateBusy), To: string(to), Reason: string(status), Actor: actor, LeaseID: l.ID, Token: l.Token, Message: why})
			}
		}
		r, err := resourceGet(ctx, tx, l.Resource)
		if err != nil {
			return fmt.Errorf("resource %s of lease %s: %w", l.Resource, l.ID, err)
		}
		if r.LeaseID != l.ID {
			return fmt.Errorf("resource %s is held by lease %q, not %q", r.Name, r.LeaseID, l.ID)
		}
		if p.Decide != nil && r.Type != l.Type && !unclaimed {
			// A config change moved it: the pool it is in now decides.
			out = p.Decide(r.Type)
			to = out.To
		}
		ev := &eventWriter{tx: tx}
		reason := string(status)
		from := r.State
		if r.Retiring && r.Source != berth.SourceDynamic {
			if _, err := tx.ExecContext(ctx, "DELETE FROM resources WHERE name = ?", r.Name); err != nil {
				return fmt.Errorf("remove retired resource: %w", err)
			}
			return ev.write(&berth.Event{Time: t, Resource: r.Name, Type: r.Type, Kind: berth.EventLease, From: string(from),
				Reason: reason, Actor: actor, LeaseID: l.ID, Token: l.Token,
				Message: strings.TrimSuffix("lease "+reason+"; resource removed from the pool ("+store.WhyRetiring(r)+"); "+why, "; ")})
		}
		if err := ev.write(&berth.Event{Time: t, Resource: r.Name, Type: r.Type, Kind: berth.EventLease, From: string(from),
			To: string(to), Reason: reason, Actor: actor, LeaseID: l.ID, Token: l.Token, Message: why}); err != nil {
			return err
		}
		r.Owner, r.LeaseID, r.StateReason, r.StateChangedAt = "", "", "", t
		r.CleanAttempts, r.NextCleanAt, r.DeepClean = 0, nil, out.Deep && to == berth.StateDirty
		if to == berth.StateFree && !r.Retiring {
			// Straight to the first waiter it suits, if any: one update.
			h, err := handoff(ctx, tx, r, t, out.HandoffTTL, actor)
			if err != nil {
				return err
			}
			if h != nil {
				res.Resource, res.Handoff = r, h
				return nil
			}
		}
		r.StateReason = store.ReleaseReason(out, why)
		r.State = to
		if _, err := tx.ExecContext(ctx, `UPDATE resources SET state = ?, state_reason = ?, state_changed_at = ?, owner = '', lease_id = NULL,
				clean_attempts = 0, next_clean_at = 0, deep_clean = ?
			WHERE name = ?`, string(to), r.StateReason, nanos(t), r.DeepClean, r.Name); err != nil {
			return fmt.Errorf("move resource on: %w", err)
		}
		res.Resource = r
		return nil
	})
	if err != nil {
		return res, wrap("release", err)
	}
	return res, nil
}

// waiting says whether any request of type typ waits at t. An error says
// yes, so that the caller takes the way that finds the waiter, and meets
// the error there.
func waiting(ctx context.Context, tx *wtx, typ string, t time.Time) bool {
	var one int
	err := tx.QueryRowContext(ctx, "SELECT 1 FROM requests WHERE type = ? AND expires_at > ? LIMIT 1", typ, nanos(t)).Scan(&one)
	return !errors.Is(err, sql.ErrNoRows)
}

// handoff gives the free resource r to the first waiting request it suits:
// highest priority first, then oldest. It updates r in place and returns
// nil when none waits (r is then untouched in the database).
func handoff(ctx context.Context, tx *wtx, r *berth.Resource, t time.Time, ttl time.Duration, actor string) (*store.Handoff, error) {
	// Only a resource healthy enough for its pool is handed over; one that
	// is not stays free until a probe finds it so (see ResourceHealth).
	// Nor one that an admin drained, alone or with its pool.
	var ok bool
	if err := tx.QueryRowContext(ctx, `SELECT health_ok AND draining = 0 AND retiring = 0
		AND NOT EXISTS (SELECT 1 FROM pool_drains d WHERE d.type = resources.type) FROM resources WHERE name = ?`, r.Name).Scan(&ok); err != nil {
		return nil, fmt.Errorf("read health of %s: %w", r.Name, err)
	}
	if !ok {
		return nil, nil
	}
	rows, err := tx.QueryContext(ctx, `SELECT id, owner, selector, expires_at, dest, created_at, principal FROM requests
		WHERE type = ? AND expires_at > ? ORDER BY priority DESC, seq`, r.Type, nanos(t))
	if err != nil {
		return nil, fmt.Errorf("find waiter: %w", err)
	}
	var (
		found                         bool
		reqID, owner, dest, principal string
		reqExpiresAt, reqCreate       int64
	)
	for rows.Next() {
		var sel string
		if err := rows.Scan(&reqID, &owner, &sel, &reqExpiresAt, &dest, &reqCreate, &principal); err != nil {
			rows.Close()
			return nil, fmt.Errorf("find waiter: %w", err)
		}
		var s berth.Selector
		if err := json.Unmarshal([]byte(sel), &s); err != nil {
			rows.Close()
			return nil, fmt.Errorf("request %s selector: %w", reqID, err)
		}
		if s.Matches(r.Labels) {
			found = true
			break
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("find waiter: %w", err)
	}
	if !found {
		return nil, nil
	}
	if _, err := tx.ExecContext(ctx, "DELETE FROM requests WHERE id = ?", reqID); err != nil {
		return nil, fmt.Errorf("delete served request: %w", err)
	}
	id := berth.NewID()
	if _, err := tx.ExecContext(ctx, `UPDATE resources SET state = ?, state_reason = '', state_changed_at = ?, owner = ?, lease_id = ?
		WHERE name = ?`, dest, nanos(t), owner, id, r.Name); err != nil {
		return nil, fmt.Errorf("hand resource over: %w", err)
	}
	// The waiter may have gone away and be due back within its grace. Until
	// it claims the lease, it lasts no longer than the request would have.
	exp := t.Add(ttl)
	if re := fromNanos(reqExpiresAt); re.Before(exp) {
		exp = re
	}
	if _, err := recordLease(ctx, tx, r, berth.StateFree, grantArgs{id: id, owner: owner, requestID: reqID, ttl: ttl, expires: exp, now: t, actor: actor, reason: "handoff",
		to: berth.State(dest), unclaimed: true, principal: principal}); err != nil {
		return nil, err
	}
	r.State, r.StateReason, r.StateChangedAt, r.Owner, r.LeaseID = berth.State(dest), "", t, owner, id
	return &store.Handoff{RequestID: reqID, LeaseID: id, Type: r.Type, Waited: t.Sub(fromNanos(reqCreate))}, nil
}

func (s *Store) LeaseListExpired(ctx context.Context, p *store.LeaseListExpiredParams) ([]*berth.Lease, error) {
	limit := p.Limit
	if limit <= 0 {
		limit = 1000
	}
	rows, err := s.r.QueryContext(ctx, "SELECT "+leaseColumns+" FROM leases WHERE ended_at IS NULL AND expires_at <= ? ORDER BY expires_at LIMIT ?",
		nanos(now(p.Now)), limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list expired leases: %w", err)
	}
	defer rows.Close()
	var out []*berth.Lease
	for rows.Next() {
		l, err := scanLease(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: list expired leases: %w", err)
		}
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: list expired leases: %w", err)
	}
	return out, nil
}
