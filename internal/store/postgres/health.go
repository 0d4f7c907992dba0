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

// ResourceHealth records probe results. Results that change nothing but
// the probe time, nearly all of them, are written with one statement for
// the whole batch. Each change of status or reason then gets a transaction
// of its own: the type's queue lock and the row's, as a release takes
// them, the condition, its event and, for a resource that became
// leasable, a handoff to the first waiter.
func (s *Store) ResourceHealth(ctx context.Context, p *store.ResourceHealthParams) (*store.ResourceHealthResult, error) {
	ctx, cancel := s.bound(ctx, opTimeout)
	defer cancel()
	t := now(p.Now)
	n := len(p.Updates)
	names, types, statuses, reasons, messages := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	times := make([]int64, n)
	for i, u := range p.Updates {
		names[i], types[i], statuses[i], reasons[i], messages[i] = u.Name, u.Type, string(u.Status), u.Reason, u.Message
		times[i] = nanos(probed(u, t))
	}
	rows, err := s.pool.Query(ctx, `UPDATE resources r SET health_probe_time = u.pt, health_message = u.m
		FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) AS u(pt, n, t, s, r, m)
		WHERE r.name = u.n AND r.type = u.t AND r.health_status = u.s AND r.health_reason = u.r
		RETURNING r.name`, times, names, types, statuses, reasons, messages)
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
	res := &store.ResourceHealthResult{}
	for _, u := range p.Updates {
		if recorded[u.Name] {
			continue
		}
		var (
			changed *berth.Event
			h       *store.Handoff
			missing bool
		)
		err := s.tx(ctx, func(tx pgx.Tx) error {
			changed, h, missing = nil, nil, false
			if _, err := tx.Exec(ctx, queueLockShared, u.Type); err != nil {
				return fmt.Errorf("lock queue of %s: %w", u.Type, err)
			}
			var typ, was string
			err := tx.QueryRow(ctx, "SELECT type, health_status FROM resources WHERE name = $1 FOR UPDATE", u.Name).Scan(&typ, &was)
			if errors.Is(err, pgx.ErrNoRows) || err == nil && typ != u.Type {
				missing = true
				return nil
			}
			if err != nil {
				return fmt.Errorf("read health of %s: %w", u.Name, err)
			}
			var leasable bool
			if err := tx.QueryRow(ctx, `UPDATE resources SET health_status = $1, health_reason = $2, health_message = $3,
				health_probe_time = $6, health_transition_time = CASE WHEN health_status = $1 THEN health_transition_time ELSE $4 END,
				health_ok = `+healthOKExpr("$1::text")+`
				WHERE name = $5 RETURNING health_ok AND state = 'free' AND NOT retiring`,
				string(u.Status), u.Reason, u.Message, nanos(t), u.Name, nanos(probed(u, t))).Scan(&leasable); err != nil {
				return fmt.Errorf("record health of %s: %w", u.Name, err)
			}
			ev := &events{}
			changed = &berth.Event{Time: t, Resource: u.Name, Type: typ, Kind: berth.EventHealth, From: was, To: string(u.Status),
				Reason: u.Reason, Actor: p.Actor, Message: u.Message}
			ev.add(changed)
			if leasable {
				r, err := resourceGet(ctx, tx, u.Name)
				if err != nil {
					return err
				}
				if h, err = handoff(ctx, tx, ev, r, t, u.LeaseTTL, p.Actor); err != nil {
					return err
				}
			}
			return ev.flush(ctx, tx)
		})
		if err != nil {
			return nil, fmt.Errorf("postgres: record health of %s: %w", u.Name, err)
		}
		switch {
		case missing:
			res.Missing = append(res.Missing, u.Name)
		default:
			res.Changed = append(res.Changed, changed)
			if h != nil {
				res.Handoffs = append(res.Handoffs, *h)
			}
		}
	}
	return res, nil
}

// probed is when u's probe was made.
func probed(u store.HealthUpdate, now time.Time) time.Time {
	if u.ProbeTime.IsZero() {
		return now
	}
	return u.ProbeTime
}
