package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/store"
)

// ResourceHealth records probe results in one transaction. Most results
// change nothing but the probe time and take one statement; a change of
// status or reason reads the row, writes the condition and its event, and
// hands a resource that became leasable to a waiter.
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
		for _, u := range p.Updates {
			r, err := tx.ExecContext(ctx, `UPDATE resources SET health_probe_time = ?, health_message = ?
				WHERE name = ? AND type = ? AND health_status = ? AND health_reason = ?`,
				nanos(t), u.Message, u.Name, u.Type, string(u.Status), u.Reason)
			if err != nil {
				return fmt.Errorf("record probe of %s: %w", u.Name, err)
			}
			if n, err := r.RowsAffected(); err != nil {
				return fmt.Errorf("record probe of %s: %w", u.Name, err)
			} else if n == 1 {
				continue
			}
			var typ, was string
			err = tx.QueryRowContext(ctx, "SELECT type, health_status FROM resources WHERE name = ?", u.Name).Scan(&typ, &was)
			if errors.Is(err, sql.ErrNoRows) || err == nil && typ != u.Type {
				res.Missing = append(res.Missing, u.Name)
				continue
			}
			if err != nil {
				return fmt.Errorf("read health of %s: %w", u.Name, err)
			}
			if _, err := tx.ExecContext(ctx, `UPDATE resources SET health_status = ?1, health_reason = ?2, health_message = ?3,
				health_probe_time = ?4, health_transition_time = CASE WHEN health_status = ?1 THEN health_transition_time ELSE ?4 END
				WHERE name = ?5`, string(u.Status), u.Reason, u.Message, nanos(t), u.Name); err != nil {
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
