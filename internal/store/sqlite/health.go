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

// ResourceHealth records probe results in one transaction. Most results
// change nothing but the probe time and are written with one statement per
// 500; a change of status or reason reads the row, writes the condition
// and its event, and hands a resource that became leasable to a waiter.
func (s *Store) ResourceHealth(ctx context.Context, p *store.ResourceHealthParams) (*store.ResourceHealthResult, error) {
	t := now(p.Now)
	res := &store.ResourceHealthResult{}
	err := s.tx(ctx, func(tx *wtx) error {
		*res = store.ResourceHealthResult{}
		ev, err := newEventWriter(ctx, tx)
		if err != nil {
			return err
		}
		defer ev.Close()
		recorded, err := recordProbes(ctx, tx, p.Updates, t)
		if err != nil {
			return err
		}
		for _, u := range p.Updates {
			if recorded[u.Name] {
				continue
			}
			var typ, was, hash string
			err = tx.QueryRowContext(ctx, `SELECT r.type, r.health_status, coalesce(p.probe_hash, '') FROM resources r
				LEFT JOIN pools p ON p.type = r.type WHERE r.name = ?`, u.Name).Scan(&typ, &was, &hash)
			// Gone, moved to another pool, or probed by a spec the stored
			// config no longer has.
			if errors.Is(err, sql.ErrNoRows) || err == nil && (typ != u.Type || hash != u.ProbeHash) {
				res.Missing = append(res.Missing, u.Name)
				continue
			}
			if err != nil {
				return fmt.Errorf("read health of %s: %w", u.Name, err)
			}
			if _, err := tx.ExecContext(ctx, `UPDATE resources SET health_status = ?1, health_reason = ?2, health_message = ?3,
				health_probe_time = ?5, health_transition_time = CASE WHEN health_status = ?1 THEN health_transition_time ELSE ?4 END
				WHERE name = ?6`, string(u.Status), u.Reason, u.Message, nanos(t), nanos(probed(u, t)), u.Name); err != nil {
				return fmt.Errorf("record health of %s: %w", u.Name, err)
			}
			var ok bool
			if err := tx.QueryRowContext(ctx, "UPDATE resources SET health_ok = "+healthOKExpr+" WHERE name = ? RETURNING health_ok", u.Name).Scan(&ok); err != nil {
				return fmt.Errorf("record health of %s: %w", u.Name, err)
			}
			e := &berth.Event{Time: t, Resource: u.Name, Type: typ, Kind: berth.EventHealth, From: was, To: string(u.Status),
				Reason: u.Reason, Actor: p.Actor, Message: u.Message}
			if err := ev.write(e); err != nil {
				return err
			}
			res.Changed = append(res.Changed, e)
			if !ok {
				continue
			}
			rs, err := resourceGet(ctx, tx, u.Name)
			if err != nil {
				return err
			}
			if rs.State != berth.StateFree || rs.Retiring {
				continue
			}
			h, err := handoff(ctx, tx, rs, t, u.LeaseTTL, p.Actor)
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
		return nil, wrap("record health", err)
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

// recordProbes writes the probe time and message of every update whose
// status and reason are already the resource's, and returns their names.
// One statement per chunk: a statement per result cost a prober of 10,000
// resources a tenth of its CPU.
func recordProbes(ctx context.Context, tx *wtx, ups []store.HealthUpdate, t time.Time) (map[string]bool, error) {
	const chunk = 500
	done := make(map[string]bool, len(ups))
	for len(ups) > 0 {
		part := ups[:min(chunk, len(ups))]
		ups = ups[len(part):]
		args := make([]any, 0, 6*len(part))
		for _, u := range part {
			args = append(args, nanos(probed(u, t)), u.Message, u.Name, u.Type, string(u.Status), u.Reason, u.ProbeHash)
		}
		rows, err := tx.QueryContext(ctx, `UPDATE resources SET health_probe_time = v.column1, health_message = v.column2
			FROM (VALUES `+rows("(?, ?, ?, ?, ?, ?, ?)", len(part))+`) AS v
			WHERE resources.name = v.column3 AND resources.type = v.column4
				AND resources.health_status = v.column5 AND resources.health_reason = v.column6
				AND EXISTS (SELECT 1 FROM pools WHERE pools.type = v.column4 AND pools.probe_hash = v.column7)
			RETURNING resources.name`, args...)
		if err != nil {
			return nil, fmt.Errorf("record probes: %w", err)
		}
		for rows.Next() {
			var n string
			if err := rows.Scan(&n); err != nil {
				rows.Close()
				return nil, fmt.Errorf("record probes: %w", err)
			}
			done[n] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("record probes: %w", err)
		}
	}
	return done, nil
}
