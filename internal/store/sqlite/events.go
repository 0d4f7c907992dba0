package sqlite

import (
	"context"
	"fmt"
	"strings"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/store"
)

// insertEventSQL[n] inserts n events; built once, read by every writer.
var insertEventSQL = func() (qs [eventChunk + 1]string) {
	for n := 1; n <= eventChunk; n++ {
		qs[n] = `INSERT INTO events
	(time, resource, type, kind, from_state, to_state, reason, actor, lease_id, token, message, output, remote)
	VALUES ` + rows("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", n)
	}
	return qs
}()

// insertEvents returns the INSERT for n events, 1 <= n <= eventChunk.
func insertEvents(n int) string { return insertEventSQL[n] }

// eventWriter records events of a write transaction; they are written
// together before it commits.
type eventWriter struct{ tx *wtx }

func newEventWriter(_ context.Context, tx *wtx) (*eventWriter, error) {
	return &eventWriter{tx: tx}, nil
}

// write queues e. An event a request caused records its principal as the
// actor, and its address; see store.Audited.
func (w *eventWriter) write(e *berth.Event) error {
	store.Audited(e, w.tx.principal)
	w.tx.addEvent(nanos(e.Time), e.Resource, e.Type, string(e.Kind), e.From, e.To,
		e.Reason, e.Actor, e.LeaseID, e.Token, e.Message, e.Output, e.Remote)
	return nil
}

func (w *eventWriter) Close() error { return nil }

func (s *Store) EventList(ctx context.Context, p *store.EventListParams) ([]*berth.Event, error) {
	var (
		where []string
		args  []any
	)
	if p.Resource != "" {
		where = append(where, "resource = ?")
		args = append(args, p.Resource)
	}
	if p.Type != "" {
		where = append(where, "type = ?")
		args = append(args, p.Type)
	}
	if p.Kind != "" {
		where = append(where, "kind = ?")
		args = append(args, string(p.Kind))
	}
	if p.Actor != "" {
		where = append(where, "actor = ?")
		args = append(args, p.Actor)
	}
	if !p.Since.IsZero() {
		where = append(where, "time >= ?")
		args = append(args, nanos(p.Since))
	}
	if p.AfterID > 0 {
		where = append(where, "id > ?")
		args = append(args, p.AfterID)
	}
	q := `SELECT id, time, resource, type, kind, from_state, to_state, reason, actor, lease_id, token, message, output, remote FROM events`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	if p.Desc {
		q += " ORDER BY id DESC"
	} else {
		q += " ORDER BY id"
	}
	if p.Limit > 0 {
		q += " LIMIT ?"
		args = append(args, p.Limit)
	}
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list events: %w", err)
	}
	defer rows.Close()
	out := []*berth.Event{}
	for rows.Next() {
		var (
			e berth.Event
			t int64
		)
		if err := rows.Scan(&e.ID, &t, &e.Resource, &e.Type, &e.Kind, &e.From, &e.To, &e.Reason, &e.Actor, &e.LeaseID, &e.Token, &e.Message, &e.Output, &e.Remote); err != nil {
			return nil, fmt.Errorf("sqlite: list events: %w", err)
		}
		e.Time = fromNanos(t)
		out = append(out, &e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: list events: %w", err)
	}
	return out, nil
}

// EventRecord writes one event on its own.
func (s *Store) EventRecord(ctx context.Context, e *berth.Event) error {
	err := s.tx(ctx, func(tx *wtx) error { return (&eventWriter{tx: tx}).write(e) })
	if err != nil {
		return fmt.Errorf("sqlite: record event: %w", err)
	}
	return nil
}
