package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/store"
)

// leasableWhere is what a resource must be, besides unleased and in the
// asked state, to be taken for use: healthy enough for its pool, neither
// drained nor retiring. A janitor may take one that is not (cleaning may
// be what brings it back), as CleanClaim does.
const leasableWhere = ` AND retiring = 0 AND health_ok = 1 AND draining = 0
	AND NOT EXISTS (SELECT 1 FROM pool_drains WHERE pool_drains.type = resources.type)`

func (s *Store) LeaseTake(ctx context.Context, p *store.LeaseTakeParams) (*store.LeaseTakeResult, error) {
	t := now(p.Now)
	res := &store.LeaseTakeResult{}
	err := s.tx(ctx, func(tx *wtx) error {
		*res = store.LeaseTakeResult{}
		if len(p.Names) > 0 {
			return takeNames(ctx, tx, p, t, res)
		}
		return takeOne(ctx, tx, p, t, res)
	})
	if err != nil {
		return nil, wrap("take", err)
	}
	return res, nil
}

// candidates is the query for the resources a take may have, oldest in
// their state first.
func candidates(p *store.LeaseTakeParams) string {
	q := "SELECT name FROM resources WHERE type = ?1 AND state = ?2 AND lease_id IS NULL"
	if p.To != berth.StateCleaning {
		q += leasableWhere
	}
	if p.From == berth.StateDirty {
		q += " AND next_clean_at <= ?3"
	}
	return q + " ORDER BY state_changed_at, name LIMIT ?4"
}

func takeOne(ctx context.Context, tx *wtx, p *store.LeaseTakeParams, t time.Time, res *store.LeaseTakeResult) error {
	rank := 1
	var seq int64
	if p.RequestID != "" {
		// A retry of a take that succeeded gets the same lease.
		l, err := scanLease(tx.QueryRowContext(ctx, "SELECT "+leaseColumns+
			" FROM leases WHERE request_id = ?1 AND ended_at IS NULL AND expires_at > ?2 LIMIT 1", p.RequestID, nanos(t)))
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return fmt.Errorf("find lease of request: %w", err)
		case l.Type != p.Type || l.Owner != p.Owner:
			return berth.FieldErrorf("request_id", "request %q was made by another owner or for another type", p.RequestID)
		default:
			r, err := resourceGet(ctx, tx, l.Resource)
			if err != nil {
				return err
			}
			res.Leases, res.Resources = []*berth.Lease{l}, []*berth.Resource{r}
			return nil
		}
		if seq, res.Joined, err = stateRequest(ctx, tx, p, t); err != nil {
			return err
		}
	}
	// Rank: 1 + the unexpired requests ahead (all of them, for a call
	// without a request id).
	q := "SELECT count(*) FROM state_requests WHERE type = ? AND state = ? AND expires_at > ?"
	args := []any{p.Type, string(p.From), nanos(t)}
	if seq != 0 {
		q += " AND seq < ?"
		args = append(args, seq)
	}
	if err := tx.QueryRowContext(ctx, q, args...).Scan(&rank); err != nil {
		return fmt.Errorf("rank request: %w", err)
	}
	rank++
	rows, err := tx.QueryContext(ctx, candidates(p), p.Type, string(p.From), nanos(t), rank)
	if err != nil {
		return fmt.Errorf("find candidates: %w", err)
	}
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return fmt.Errorf("find candidates: %w", err)
		}
		names = append(names, n)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("find candidates: %w", err)
	}
	if len(names) < rank {
		res.Rank = rank
		return nil
	}
	if seq != 0 {
		if _, err := tx.ExecContext(ctx, "DELETE FROM state_requests WHERE seq = ?", seq); err != nil {
			return fmt.Errorf("delete served request: %w", err)
		}
	}
	return take(ctx, tx, p, names[0], t, res)
}

// stateRequest puts p's request in its queue, or keeps its place and
// extends its hold, and returns its sequence number; joined says it was
// put in the queue now.
func stateRequest(ctx context.Context, tx *wtx, p *store.LeaseTakeParams, t time.Time) (seq int64, joined bool, err error) {
	var (
		typ, state, owner string
		exp               int64
	)
	err = tx.QueryRowContext(ctx, "SELECT seq, type, state, owner, expires_at FROM state_requests WHERE id = ?", p.RequestID).
		Scan(&seq, &typ, &state, &owner, &exp)
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return 0, false, fmt.Errorf("find request: %w", err)
	case typ != p.Type || state != string(p.From) || owner != p.Owner:
		return 0, false, berth.FieldErrorf("request_id", "request %q was made by another owner or for another type or state", p.RequestID)
	case exp <= nanos(t):
		// It expired: it lost its place and joins at the back.
		if _, err := tx.ExecContext(ctx, "DELETE FROM state_requests WHERE seq = ?", seq); err != nil {
			return 0, false, fmt.Errorf("drop expired request: %w", err)
		}
	default:
		if nanos(p.WaitUntil) > exp {
			if _, err := tx.ExecContext(ctx, "UPDATE state_requests SET expires_at = ? WHERE seq = ?", nanos(p.WaitUntil), seq); err != nil {
				return 0, false, fmt.Errorf("extend request: %w", err)
			}
		}
		return seq, false, nil
	}
	r, err := tx.ExecContext(ctx, "INSERT INTO state_requests (id, type, state, owner, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
		p.RequestID, p.Type, string(p.From), p.Owner, nanos(t), nanos(p.WaitUntil))
	if err != nil {
		return 0, false, fmt.Errorf("queue request: %w", err)
	}
	seq, err = r.LastInsertId()
	return seq, true, err
}

func takeNames(ctx context.Context, tx *wtx, p *store.LeaseTakeParams, t time.Time, res *store.LeaseTakeResult) error {
	// Every name must be there to take, or none is taken.
	q := "SELECT count(*) FROM resources WHERE name IN (" + strings.Repeat("?, ", len(p.Names)-1) + "?) AND state = ? AND lease_id IS NULL"
	if p.To != berth.StateCleaning {
		q += leasableWhere
	}
	if p.From == berth.StateDirty {
		q += " AND next_clean_at <= ?"
	}
	args := make([]any, 0, len(p.Names)+2)
	for _, n := range p.Names {
		args = append(args, n)
	}
	args = append(args, string(p.From))
	if p.From == berth.StateDirty {
		args = append(args, nanos(t))
	}
	var n int
	if err := tx.QueryRowContext(ctx, q, args...).Scan(&n); err != nil {
		return fmt.Errorf("count resources to take: %w", err)
	}
	if n != len(p.Names) {
		return nil
	}
	for _, name := range p.Names {
		if err := take(ctx, tx, p, name, t, res); err != nil {
			return err
		}
	}
	return nil
}

// take leases the resource name, which the caller found there to take,
// moving it from p.From to p.To.
func take(ctx context.Context, tx *wtx, p *store.LeaseTakeParams, name string, t time.Time, res *store.LeaseTakeResult) error {
	id := berth.NewID()
	// Only a resource going to be cleaned keeps its cleaning record (the
	// failed attempts, a backoff, a deep cleaning).
	r, err := scanResource(tx.QueryRowContext(ctx, `UPDATE resources SET state = ?1, state_reason = '', state_changed_at = ?2, owner = ?3, lease_id = ?4,
			clean_attempts = CASE WHEN ?1 = 'cleaning' THEN clean_attempts ELSE 0 END,
			next_clean_at = CASE WHEN ?1 = 'cleaning' THEN next_clean_at ELSE 0 END,
			deep_clean = CASE WHEN ?1 = 'cleaning' THEN deep_clean ELSE 0 END
		WHERE name = ?5 AND lease_id IS NULL RETURNING `+resourceColumns, string(p.To), nanos(t), p.Owner, id, name))
	if err != nil {
		return fmt.Errorf("take %s: %w", name, err)
	}
	g := grantArgs{
		id: id, owner: p.Owner, requestID: p.RequestID, ttl: p.LeaseTTL, expires: t.Add(p.LeaseTTL), now: t,
		actor: p.Actor, reason: "acquired", to: p.To,
	}
	if p.To == berth.StateCleaning {
		g.kind, g.evKind, g.reason = berth.LeaseClean, berth.EventJanitor, store.ReasonCleaning
		g.message = store.CleaningMessage(p.Owner, r.CleanAttempts+1, r.DeepClean)
	}
	if len(p.Names) > 0 {
		g.requestID = ""
	}
	l, err := recordLease(ctx, tx, r, p.From, g)
	if err != nil {
		return err
	}
	res.Leases = append(res.Leases, l)
	res.Resources = append(res.Resources, r)
	return nil
}

func (s *Store) ResourceSetState(ctx context.Context, p *store.ResourceSetStateParams) (*berth.Resource, error) {
	t := now(p.Now)
	var out *berth.Resource
	err := s.tx(ctx, func(tx *wtx) error {
		out = nil
		r, err := resourceGet(ctx, tx, p.Name)
		if err != nil {
			return err
		}
		if r.LeaseID != "" || r.State != p.From {
			return store.ErrStateChanged
		}
		ev := &berth.Event{Time: t, Resource: r.Name, Type: r.Type, Kind: berth.EventProvision, From: string(r.State), To: string(p.To),
			Reason: p.Reason, Actor: p.Actor, Message: p.Message}
		if p.To == "" {
			if _, err := tx.ExecContext(ctx, "DELETE FROM resources WHERE name = ?", r.Name); err != nil {
				return fmt.Errorf("remove %s: %w", r.Name, err)
			}
			return (&eventWriter{tx: tx}).write(ev)
		}
		out, err = scanResource(tx.QueryRowContext(ctx, `UPDATE resources SET state = ?, state_reason = ?, state_changed_at = ?,
				clean_attempts = 0, next_clean_at = 0, deep_clean = 0
			WHERE name = ? RETURNING `+resourceColumns, string(p.To), p.Message, nanos(t), r.Name))
		if err != nil {
			return fmt.Errorf("move %s to %s: %w", r.Name, p.To, err)
		}
		return (&eventWriter{tx: tx}).write(ev)
	})
	if err != nil {
		return nil, wrap("set state", err)
	}
	return out, nil
}
