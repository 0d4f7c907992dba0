package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/store"
)

// stateQueueLock serializes, across replicas, the takes from one (type,
// state): a request's rank and the candidates it is counted against must
// be read together.
const stateQueueLock = "SELECT pg_advisory_xact_lock(hashtextextended('berth-state-queue:' || current_schema() || ':' || $1 || ':' || $2, 0))"

// leasableWhere is what a resource must be, besides unleased and in the
// asked state, to be taken for use: healthy enough for its pool, neither
// drained nor retiring. A janitor may take one that is not (cleaning may
// be what brings it back), as CleanClaim does.
const leasableWhere = ` AND NOT retiring AND health_ok AND NOT draining
	AND NOT EXISTS (SELECT 1 FROM pool_drains WHERE pool_drains.type = resources.type)`

func (s *Store) LeaseTake(ctx context.Context, p *store.LeaseTakeParams) (*store.LeaseTakeResult, error) {
	ctx, cancel := s.bound(ctx, opTimeout)
	defer cancel()
	t := now(p.Now)
	res := &store.LeaseTakeResult{}
	err := s.tx(ctx, func(tx pgx.Tx) error {
		*res = store.LeaseTakeResult{}
		ev := &events{}
		var err error
		if len(p.Names) > 0 {
			err = takeNames(ctx, tx, ev, p, t, res)
		} else {
			err = takeOne(ctx, tx, ev, p, t, res)
		}
		if err != nil {
			return err
		}
		return ev.flush(ctx, tx)
	})
	if err != nil {
		return nil, wrap("take", err)
	}
	return res, nil
}

func takeOne(ctx context.Context, tx pgx.Tx, ev *events, p *store.LeaseTakeParams, t time.Time, res *store.LeaseTakeResult) error {
	if _, err := tx.Exec(ctx, stateQueueLock, p.Type, string(p.From)); err != nil {
		return fmt.Errorf("lock queue of %s in %s: %w", p.Type, p.From, err)
	}
	var seq int64
	if p.RequestID != "" {
		// A retry of a take that succeeded gets the same lease.
		l, err := scanLease(tx.QueryRow(ctx, "SELECT "+leaseColumns+
			" FROM leases WHERE request_id = $1 AND ended_at IS NULL AND expires_at > $2 LIMIT 1", p.RequestID, nanos(t)))
		switch {
		case errors.Is(err, pgx.ErrNoRows):
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
	var ahead int
	err := tx.QueryRow(ctx, `SELECT count(*) FROM state_requests WHERE type = $1 AND state = $2 AND expires_at > $3
		AND ($4::bigint = 0 OR seq < $4::bigint)`, p.Type, string(p.From), nanos(t), seq).Scan(&ahead)
	if err != nil {
		return fmt.Errorf("rank request: %w", err)
	}
	rank := ahead + 1
	q := "SELECT name FROM resources WHERE type = $1 AND state = $2 AND lease_id IS NULL"
	if p.To != berth.StateCleaning {
		q += leasableWhere
	}
	if p.From == berth.StateDirty {
		q += " AND next_clean_at <= $3"
	} else {
		q += " AND $3::bigint IS NOT NULL"
	}
	q += " ORDER BY state_changed_at, name LIMIT $4 FOR UPDATE SKIP LOCKED"
	rows, err := tx.Query(ctx, q, p.Type, string(p.From), nanos(t), rank)
	if err != nil {
		return fmt.Errorf("find candidates: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("find candidates: %w", err)
	}
	if len(names) < rank {
		res.Rank = rank
		return nil
	}
	if seq != 0 {
		if _, err := tx.Exec(ctx, "DELETE FROM state_requests WHERE seq = $1", seq); err != nil {
			return fmt.Errorf("delete served request: %w", err)
		}
	}
	return take(ctx, tx, ev, p, names[0], t, res)
}

// stateRequest puts p's request in its queue, or keeps its place and
// extends its hold, and returns its sequence number; joined says it was
// put in the queue now. The caller holds the queue's lock.
func stateRequest(ctx context.Context, tx pgx.Tx, p *store.LeaseTakeParams, t time.Time) (seq int64, joined bool, err error) {
	var (
		typ, state, owner string
		exp               int64
	)
	err = tx.QueryRow(ctx, "SELECT seq, type, state, owner, expires_at FROM state_requests WHERE id = $1 FOR UPDATE", p.RequestID).
		Scan(&seq, &typ, &state, &owner, &exp)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return 0, false, fmt.Errorf("find request: %w", err)
	case typ != p.Type || state != string(p.From) || owner != p.Owner:
		return 0, false, berth.FieldErrorf("request_id", "request %q was made by another owner or for another type or state", p.RequestID)
	case exp <= nanos(t):
		// It expired: it lost its place and joins at the back.
		if _, err := tx.Exec(ctx, "DELETE FROM state_requests WHERE seq = $1", seq); err != nil {
			return 0, false, fmt.Errorf("drop expired request: %w", err)
		}
	default:
		if nanos(p.WaitUntil) > exp {
			if _, err := tx.Exec(ctx, "UPDATE state_requests SET expires_at = $1 WHERE seq = $2", nanos(p.WaitUntil), seq); err != nil {
				return 0, false, fmt.Errorf("extend request: %w", err)
			}
		}
		return seq, false, nil
	}
	err = tx.QueryRow(ctx, `INSERT INTO state_requests (id, type, state, owner, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)
		RETURNING seq`, p.RequestID, p.Type, string(p.From), p.Owner, nanos(t), nanos(p.WaitUntil)).Scan(&seq)
	if err != nil {
		return 0, false, fmt.Errorf("queue request: %w", err)
	}
	return seq, true, nil
}

func takeNames(ctx context.Context, tx pgx.Tx, ev *events, p *store.LeaseTakeParams, t time.Time, res *store.LeaseTakeResult) error {
	// Lock the rows in name order, as every multi-row lock here is taken,
	// then check that every one is there to take; else take none.
	names := slices.Sorted(slices.Values(p.Names))
	q := "SELECT name FROM resources WHERE name = ANY($1) AND state = $2 AND lease_id IS NULL"
	if p.To != berth.StateCleaning {
		q += leasableWhere
	}
	if p.From == berth.StateDirty {
		q += " AND next_clean_at <= $3"
	} else {
		q += " AND $3::bigint IS NOT NULL"
	}
	rows, err := tx.Query(ctx, q+" ORDER BY name FOR UPDATE", names, string(p.From), nanos(t))
	if err != nil {
		return fmt.Errorf("lock resources to take: %w", err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("lock resources to take: %w", err)
	}
	if len(got) != len(p.Names) {
		return nil
	}
	for _, name := range p.Names {
		if err := take(ctx, tx, ev, p, name, t, res); err != nil {
			return err
		}
	}
	return nil
}

// take leases the resource name, which the caller locked and found there
// to take, moving it from p.From to p.To.
func take(ctx context.Context, tx pgx.Tx, ev *events, p *store.LeaseTakeParams, name string, t time.Time, res *store.LeaseTakeResult) error {
	id := berth.NewID()
	// Only a resource going to be cleaned keeps its cleaning record (the
	// failed attempts, a backoff, a deep cleaning).
	r, err := scanResource(tx.QueryRow(ctx, `UPDATE resources SET state = $1, state_reason = '', state_changed_at = $2, owner = $3, lease_id = $4,
			clean_attempts = CASE WHEN $1 = 'cleaning' THEN clean_attempts ELSE 0 END,
			next_clean_at = CASE WHEN $1 = 'cleaning' THEN next_clean_at ELSE 0 END,
			deep_clean = CASE WHEN $1 = 'cleaning' THEN deep_clean ELSE false END
		WHERE name = $5 AND lease_id IS NULL RETURNING `+resourceColumns, string(p.To), nanos(t), p.Owner, id, name))
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
	l, err := recordLease(ctx, tx, ev, r, p.From, g)
	if err != nil {
		return err
	}
	res.Leases = append(res.Leases, l)
	res.Resources = append(res.Resources, r)
	return nil
}

func (s *Store) ResourceSetState(ctx context.Context, p *store.ResourceSetStateParams) (*berth.Resource, error) {
	ctx, cancel := s.bound(ctx, opTimeout)
	defer cancel()
	t := now(p.Now)
	var out *berth.Resource
	err := s.tx(ctx, func(tx pgx.Tx) error {
		out = nil
		r, err := scanResource(tx.QueryRow(ctx, "SELECT "+resourceColumns+" FROM resources WHERE name = $1 FOR UPDATE", p.Name))
		if errors.Is(err, pgx.ErrNoRows) {
			return store.ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", p.Name, err)
		}
		if r.LeaseID != "" || r.State != p.From {
			return store.ErrStateChanged
		}
		ev := &events{}
		ev.add(&berth.Event{Time: t, Resource: r.Name, Type: r.Type, Kind: berth.EventProvision, From: string(r.State), To: string(p.To),
			Reason: p.Reason, Actor: p.Actor, Message: p.Message})
		if p.To == "" {
			if _, err := tx.Exec(ctx, "DELETE FROM resources WHERE name = $1", r.Name); err != nil {
				return fmt.Errorf("remove %s: %w", r.Name, err)
			}
			return ev.flush(ctx, tx)
		}
		out, err = scanResource(tx.QueryRow(ctx, `UPDATE resources SET state = $1, state_reason = $2, state_changed_at = $3,
				clean_attempts = 0, next_clean_at = 0, deep_clean = false
			WHERE name = $4 RETURNING `+resourceColumns, string(p.To), p.Message, nanos(t), r.Name))
		if err != nil {
			return fmt.Errorf("move %s to %s: %w", r.Name, p.To, err)
		}
		return ev.flush(ctx, tx)
	})
	if err != nil {
		return nil, wrap("set state", err)
	}
	return out, nil
}
