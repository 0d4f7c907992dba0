package sqlite

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/store"
)

const leaseColumns = `token, id, resource, type, owner, request_id, ttl, acquired_at, expires_at, ended_at, end_reason`

func scanLease(row scanner) (*berth.Lease, error) {
	var (
		l             berth.Lease
		reqID         sql.NullString
		ttl, acq, exp int64
		ended         sql.NullInt64
		endReason     string
	)
	if err := row.Scan(&l.Token, &l.ID, &l.Resource, &l.Type, &l.Owner, &reqID, &ttl, &acq, &exp, &ended, &endReason); err != nil {
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

func nullString(s string) sql.NullString { return sql.NullString{String: s, Valid: s != ""} }

func (s *Store) LeaseAcquire(ctx context.Context, p *store.LeaseAcquireParams) (*store.LeaseAcquireResult, error) {
	t := now(p.Now)
	res := &store.LeaseAcquireResult{}
	err := s.tx(ctx, func(tx *sql.Tx) error {
		*res = store.LeaseAcquireResult{}
		if p.RequestID != "" {
			// A retry of an acquire that succeeded, or a waiter coming for
			// the resource it was handed: give it the same lease.
			l, err := scanLease(tx.QueryRowContext(ctx, "SELECT "+leaseColumns+
				" FROM leases WHERE request_id = ? AND ended_at IS NULL ORDER BY token DESC LIMIT 1", p.RequestID))
			switch {
			case errors.Is(err, sql.ErrNoRows):
			case err != nil:
				return fmt.Errorf("find lease of request: %w", err)
			case l.Type != p.Type:
				return berth.FieldErrorf("requestId", "request %q was made for type %q, not %q", p.RequestID, l.Type, p.Type)
			case l.ExpiresAt.After(t):
				if exp := t.Add(time.Duration(l.TTL)); exp.After(l.ExpiresAt) {
					if _, err := tx.ExecContext(ctx, "UPDATE leases SET expires_at = ? WHERE token = ?", nanos(exp), l.Token); err != nil {
						return fmt.Errorf("claim lease: %w", err)
					}
					l.ExpiresAt = exp
				}
				r, err := resourceGet(ctx, tx, l.Resource)
				if err != nil {
					return err
				}
				res.Lease, res.Resource = l, r
				return nil
			}
		}
		r, err := pickFree(ctx, tx, p.Type, p.Selector)
		if err != nil {
			return err
		}
		if r != nil {
			if p.RequestID != "" {
				if _, err := tx.ExecContext(ctx, "DELETE FROM requests WHERE id = ?", p.RequestID); err != nil {
					return fmt.Errorf("delete served request: %w", err)
				}
			}
			ev, err := newEventWriter(ctx, tx)
			if err != nil {
				return err
			}
			defer ev.Close()
			l, err := grant(ctx, tx, ev, r, grantArgs{
				owner: p.Owner, requestID: p.RequestID, ttl: p.LeaseTTL,
				expires: t.Add(p.LeaseTTL), now: t, actor: p.Actor, reason: "acquired",
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
		req, err := enqueue(ctx, tx, p, t)
		if err != nil {
			return err
		}
		res.Request = req
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

func pickFree(ctx context.Context, tx *sql.Tx, typ string, sel berth.Selector) (*berth.Resource, error) {
	var b strings.Builder
	b.WriteString("SELECT " + resourceColumns + " FROM resources WHERE type = ? AND state = 'free' AND retiring = 0")
	args := []any{typ}
	for _, k := range sel.Keys() {
		b.WriteString(" AND json_extract(labels, ?) = ?")
		args = append(args, jsonPath(k), sel[k])
	}
	b.WriteString(" ORDER BY state_changed_at LIMIT 1")
	r, err := scanResource(tx.QueryRowContext(ctx, b.String(), args...))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("pick free resource: %w", err)
	}
	return r, nil
}

type grantArgs struct {
	owner, requestID string
	ttl              time.Duration
	expires, now     time.Time
	actor, reason    string
}

// grant leases r (which must be free) and updates r in place.
func grant(ctx context.Context, tx *sql.Tx, ev *eventWriter, r *berth.Resource, g grantArgs) (*berth.Lease, error) {
	id := rand.Text()
	res, err := tx.ExecContext(ctx, `INSERT INTO leases (id, resource, type, owner, request_id, ttl, acquired_at, expires_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		id, r.Name, r.Type, g.owner, nullString(g.requestID), int64(g.ttl), nanos(g.now), nanos(g.expires))
	if err != nil {
		return nil, fmt.Errorf("insert lease: %w", err)
	}
	token, err := res.LastInsertId()
	if err != nil {
		return nil, fmt.Errorf("insert lease: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE resources SET state = 'busy', state_reason = '', state_changed_at = ?, owner = ?, lease_id = ?
		WHERE name = ?`, nanos(g.now), g.owner, id, r.Name); err != nil {
		return nil, fmt.Errorf("mark resource busy: %w", err)
	}
	if err := ev.write(&berth.Event{Time: g.now, Resource: r.Name, Type: r.Type, Kind: berth.EventLease,
		From: string(r.State), To: string(berth.StateBusy), Reason: g.reason, Actor: g.actor, LeaseID: id, Token: token,
		Message: "leased to " + g.owner}); err != nil {
		return nil, err
	}
	r.State, r.StateReason, r.StateChangedAt, r.Owner, r.LeaseID = berth.StateBusy, "", g.now, g.owner, id
	return &berth.Lease{
		ID: id, Token: token, Owner: g.owner, Resource: r.Name, Type: r.Type, Status: berth.LeaseActive,
		AcquiredAt: g.now, ExpiresAt: g.expires, TTL: berth.Duration(g.ttl), RequestID: g.requestID,
	}, nil
}

func enqueue(ctx context.Context, tx *sql.Tx, p *store.LeaseAcquireParams, t time.Time) (*berth.Request, error) {
	if p.RequestID == "" {
		return nil, errors.New("a waiting acquire needs a request id")
	}
	var (
		seq          int64
		typ          string
		exp, created int64
		prio         int
	)
	err := tx.QueryRowContext(ctx, "SELECT seq, type, priority, created_at, expires_at FROM requests WHERE id = ?", p.RequestID).
		Scan(&seq, &typ, &prio, &created, &exp)
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return nil, fmt.Errorf("find request: %w", err)
	case typ != p.Type:
		return nil, berth.FieldErrorf("requestId", "request %q was made for type %q, not %q", p.RequestID, typ, p.Type)
	case exp > nanos(t):
		// Still in the queue: keep the place, extend the hold on it.
		if nanos(p.WaitUntil) > exp {
			exp = nanos(p.WaitUntil)
			if _, err := tx.ExecContext(ctx, "UPDATE requests SET expires_at = ? WHERE seq = ?", exp, seq); err != nil {
				return nil, fmt.Errorf("extend request: %w", err)
			}
		}
		return requestWithPosition(ctx, tx, &berth.Request{
			ID: p.RequestID, Type: typ, Owner: p.Owner, Priority: prio, Selector: p.Selector,
			CreatedAt: fromNanos(created), ExpiresAt: fromNanos(exp),
		}, seq, t)
	default:
		// It expired: it lost its place and joins at the back.
		if _, err := tx.ExecContext(ctx, "DELETE FROM requests WHERE seq = ?", seq); err != nil {
			return nil, fmt.Errorf("drop expired request: %w", err)
		}
	}
	sel, err := json.Marshal(p.Selector)
	if err != nil {
		return nil, err
	}
	if p.Selector == nil {
		sel = []byte("{}")
	}
	res, err := tx.ExecContext(ctx, `INSERT INTO requests (id, type, owner, priority, selector, created_at, expires_at)
		VALUES (?, ?, ?, ?, ?, ?, ?)`, p.RequestID, p.Type, p.Owner, p.Priority, string(sel), nanos(t), nanos(p.WaitUntil))
	if err != nil {
		return nil, fmt.Errorf("queue request: %w", err)
	}
	seq, err = res.LastInsertId()
	if err != nil {
		return nil, fmt.Errorf("queue request: %w", err)
	}
	return requestWithPosition(ctx, tx, &berth.Request{
		ID: p.RequestID, Type: p.Type, Owner: p.Owner, Priority: p.Priority, Selector: p.Selector,
		CreatedAt: t, ExpiresAt: p.WaitUntil,
	}, seq, t)
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
	err := s.r.QueryRowContext(ctx, "SELECT seq, id, type, owner, priority, selector, created_at, expires_at FROM requests WHERE id = ?", p.ID).
		Scan(&seq, &r.ID, &r.Type, &r.Owner, &r.Priority, &sel, &created, &exp)
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
	err := s.tx(ctx, func(tx *sql.Tx) error {
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

func (s *Store) RequestPrune(ctx context.Context, t time.Time) (int, error) {
	var n int64
	err := s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "DELETE FROM requests WHERE expires_at <= ?", nanos(now(t)))
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("sqlite: prune requests: %w", err)
	}
	return int(n), nil
}

func (s *Store) LeaseHeartbeat(ctx context.Context, p *store.LeaseHeartbeatParams) (*berth.Lease, error) {
	t := now(p.Now)
	var l *berth.Lease
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var err error
		l, err = scanLease(tx.QueryRowContext(ctx, "UPDATE leases SET expires_at = ?1 + ttl WHERE id = ?2 AND ended_at IS NULL AND expires_at > ?1 RETURNING "+leaseColumns,
			nanos(t), p.ID))
		if errors.Is(err, sql.ErrNoRows) {
			if _, err := leaseGet(ctx, tx, p.ID); err != nil {
				return err
			}
			return store.ErrLeaseEnded
		}
		return err
	})
	if err != nil {
		return nil, wrap("heartbeat", err)
	}
	return l, nil
}

// errLeaseActive: a reaper asked to expire a lease that a heartbeat renewed.
var errLeaseActive = store.ErrLeaseActive

func (s *Store) LeaseRelease(ctx context.Context, p *store.LeaseReleaseParams) (*store.LeaseReleaseResult, error) {
	t := now(p.Now)
	res := &store.LeaseReleaseResult{}
	err := s.tx(ctx, func(tx *sql.Tx) error {
		*res = store.LeaseReleaseResult{}
		l, err := leaseGet(ctx, tx, p.ID)
		if err != nil {
			return err
		}
		if l.Status != berth.LeaseActive {
			res.Lease = l
			return store.ErrLeaseEnded
		}
		if p.Expired && l.ExpiresAt.After(t) {
			return errLeaseActive
		}
		status := berth.LeaseReleased
		if p.Expired {
			status = berth.LeaseExpired
		}
		if _, err := tx.ExecContext(ctx, "UPDATE leases SET ended_at = ?, end_reason = ? WHERE token = ?", nanos(t), string(status), l.Token); err != nil {
			return fmt.Errorf("end lease: %w", err)
		}
		l.Status, l.EndedAt = status, &t
		res.Lease = l

		r, err := resourceGet(ctx, tx, l.Resource)
		if err != nil {
			return fmt.Errorf("resource %s of lease %s: %w", l.Resource, l.ID, err)
		}
		if r.LeaseID != l.ID {
			return fmt.Errorf("resource %s is held by lease %q, not %q", r.Name, r.LeaseID, l.ID)
		}
		ev, err := newEventWriter(ctx, tx)
		if err != nil {
			return err
		}
		defer ev.Close()
		reason := string(status)
		if r.Retiring {
			if _, err := tx.ExecContext(ctx, "DELETE FROM resources WHERE name = ?", r.Name); err != nil {
				return fmt.Errorf("remove retired resource: %w", err)
			}
			if err := ev.write(&berth.Event{Time: t, Resource: r.Name, Type: r.Type, Kind: berth.EventLease, From: string(r.State),
				Reason: reason, Actor: p.Actor, LeaseID: l.ID, Token: l.Token,
				Message: "lease " + reason + "; resource removed from the pool (no longer in the config)"}); err != nil {
				return err
			}
			res.Resource = nil
			return nil
		}
		stateReason := ""
		if p.To == berth.StateQuarantined {
			stateReason = p.Reason
		}
		if _, err := tx.ExecContext(ctx, `UPDATE resources SET state = ?, state_reason = ?, state_changed_at = ?, owner = '', lease_id = NULL
			WHERE name = ?`, string(p.To), stateReason, nanos(t), r.Name); err != nil {
			return fmt.Errorf("move resource on: %w", err)
		}
		if err := ev.write(&berth.Event{Time: t, Resource: r.Name, Type: r.Type, Kind: berth.EventLease, From: string(r.State),
			To: string(p.To), Reason: reason, Actor: p.Actor, LeaseID: l.ID, Token: l.Token, Message: p.Reason}); err != nil {
			return err
		}
		r.State, r.StateReason, r.StateChangedAt, r.Owner, r.LeaseID = p.To, stateReason, t, "", ""
		res.Resource = r
		if p.To == berth.StateFree {
			h, err := handoff(ctx, tx, ev, r, t, p.HandoffTTL, p.Actor)
			if err != nil {
				return err
			}
			res.Handoff = h
		}
		return nil
	})
	if err != nil {
		return res, wrap("release", err)
	}
	return res, nil
}

// handoff gives the free resource r to the first waiting request it suits:
// highest priority first, then oldest. It returns nil when none waits.
func handoff(ctx context.Context, tx *sql.Tx, ev *eventWriter, r *berth.Resource, t time.Time, ttl time.Duration, actor string) (*store.Handoff, error) {
	rows, err := tx.QueryContext(ctx, `SELECT id, owner, selector, expires_at FROM requests
		WHERE type = ? AND expires_at > ? ORDER BY priority DESC, seq`, r.Type, nanos(t))
	if err != nil {
		return nil, fmt.Errorf("find waiter: %w", err)
	}
	var (
		found        bool
		id, owner    string
		reqExpiresAt int64
	)
	for rows.Next() {
		var sel string
		if err := rows.Scan(&id, &owner, &sel, &reqExpiresAt); err != nil {
			rows.Close()
			return nil, fmt.Errorf("find waiter: %w", err)
		}
		var s berth.Selector
		if err := json.Unmarshal([]byte(sel), &s); err != nil {
			rows.Close()
			return nil, fmt.Errorf("request %s selector: %w", id, err)
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
	if _, err := tx.ExecContext(ctx, "DELETE FROM requests WHERE id = ?", id); err != nil {
		return nil, fmt.Errorf("delete served request: %w", err)
	}
	// The waiter may have gone away and be due back within its grace. Until
	// it claims the lease, it lasts no longer than the request would have.
	exp := t.Add(ttl)
	if re := fromNanos(reqExpiresAt); re.Before(exp) {
		exp = re
	}
	l, err := grant(ctx, tx, ev, r, grantArgs{owner: owner, requestID: id, ttl: ttl, expires: exp, now: t, actor: actor, reason: "handoff"})
	if err != nil {
		return nil, err
	}
	return &store.Handoff{RequestID: id, LeaseID: l.ID, Type: r.Type}, nil
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
