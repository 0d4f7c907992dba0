package postgres

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/store"
)

// events collects a transaction's events; flush writes them in order with
// one statement, just before the commit.
type events struct{ list []*berth.Event }

func (e *events) add(ev *berth.Event) { e.list = append(e.list, ev) }

func (e *events) flush(ctx context.Context, tx pgx.Tx) error {
	if len(e.list) == 0 {
		return nil
	}
	n := len(e.list)
	var (
		times, tokens                                = make([]int64, n), make([]int64, n)
		res, typ, kind, from, to, reason, actor, ids = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		msg, out, remote                             = make([]string, n), make([]string, n), make([]string, n)
	)
	// An event a request caused records its principal as the actor, and
	// its address; see store.Audited.
	who, _ := berth.PrincipalFrom(ctx)
	for i, ev := range e.list {
		store.Audited(ev, who)
		remote[i] = ev.Remote
		times[i], tokens[i] = nanos(ev.Time), ev.Token
		res[i], typ[i], kind[i], from[i], to[i] = ev.Resource, ev.Type, string(ev.Kind), ev.From, ev.To
		reason[i], actor[i], ids[i], msg[i], out[i] = ev.Reason, ev.Actor, ev.LeaseID, ev.Message, ev.Output
	}
	// WITH ORDINALITY and ORDER BY keep the ids in the order of the list.
	if _, err := tx.Exec(ctx, `INSERT INTO events (time, resource, type, kind, from_state, to_state, reason, actor, lease_id, token, message, output, remote)
		SELECT a, b, c, d, e, f, g, h, i, j, k, l, m FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
			$7::text[], $8::text[], $9::text[], $10::bigint[], $11::text[], $12::text[], $13::text[]) WITH ORDINALITY AS x(a, b, c, d, e, f, g, h, i, j, k, l, m, o) ORDER BY o`,
		times, res, typ, kind, from, to, reason, actor, ids, tokens, msg, out, remote); err != nil {
		return fmt.Errorf("write events: %w", err)
	}
	e.list = e.list[:0]
	return nil
}

// eventHorizon is the time before which every event that will ever be
// visible already is. Ids are drawn at insert, in one order, and become
// visible at commit, in another: with id 100 in a transaction still
// running and 101 committed, a reader that saw 101 and asks for what comes
// after it would never see 100. Every id a running transaction drew was
// drawn after that transaction began, so events written before the start
// of the oldest transaction running now are settled; so are those written
// before this statement began, if none runs. (The statement's start, not
// the clock at its end: a transaction that begins while pg_stat_activity
// is read writes its events after that start.) The events query that uses
// the horizon runs after it is read, so it sees every transaction that
// finished before.
//
// Only this deployment's transactions count: those of connections with
// this one's application name, which Open sets to "berth" and the search
// path, so that other programs, other berth deployments in other schemas,
// and berth's own vacuums (maintenanceConn) do not hold the feed back.
// Replicas must connect as one role (or as roles allowed to read each
// other's activity, pg_read_all_stats): PostgreSQL hides other roles'
// transaction starts, and the listing fails rather than guess. The
// server's clock must not step back (written_at and xact_start are
// compared). A long transaction of
// this deployment holds the feed back for as long as it runs: at most the
// store timeout (a pool sync's five minutes), and a transaction left open
// by a replica that froze ends after idleInTransaction.
func (s *Store) eventHorizon(ctx context.Context) (time.Time, error) {
	var (
		h      time.Time
		hidden int
	)
	// A session of another role shows no state and no transaction start
	// (without pg_read_all_stats): its transactions cannot be waited for,
	// so the listing is refused rather than risk skipping an event. (A
	// session of this role shows no state only while it starts up, before
	// it can have begun a transaction.)
	err := s.pool.QueryRow(ctx, `SELECT least(statement_timestamp(), min(xact_start)), count(*) FILTER (WHERE state IS NULL AND usename <> current_user)
		FROM pg_stat_activity
		WHERE datname = current_database() AND application_name = current_setting('application_name') AND pid <> pg_backend_pid()`).Scan(&h, &hidden)
	if err != nil {
		return time.Time{}, fmt.Errorf("postgres: list events: read running transactions: %w", err)
	}
	if hidden > 0 {
		return time.Time{}, fmt.Errorf("postgres: list events: %d connection(s) of this deployment belong to another role, which hides "+
			"their transactions; connect every replica as the same role, or grant this one pg_read_all_stats", hidden)
	}
	return h, nil
}

func (s *Store) EventList(ctx context.Context, p *store.EventListParams) ([]*berth.Event, error) {
	ctx, cancel := s.bound(ctx, opTimeout)
	defer cancel()
	var (
		where []string
		args  []any
	)
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	if p.Resource != "" {
		where = append(where, "resource = "+arg(p.Resource))
	}
	if p.Type != "" {
		where = append(where, "type = "+arg(p.Type))
	}
	if p.Kind != "" {
		where = append(where, "kind = "+arg(string(p.Kind)))
	}
	if p.Actor != "" {
		where = append(where, "actor = "+arg(p.Actor))
	}
	if !p.Since.IsZero() {
		where = append(where, "time >= "+arg(nanos(p.Since)))
	}
	if p.AfterID > 0 {
		where = append(where, "id > "+arg(p.AfterID))
	}
	if !p.Desc {
		// A reader pages forward by id, so it must never see an event
		// while one with a smaller id can still appear.
		horizon, err := s.eventHorizon(ctx)
		if err != nil {
			return nil, err
		}
		where = append(where, "(written_at IS NULL OR written_at < "+arg(horizon)+")")
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
		q += " LIMIT " + arg(p.Limit)
	}
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("postgres: list events: %w", err)
	}
	defer rows.Close()
	out := []*berth.Event{}
	for rows.Next() {
		var (
			e berth.Event
			t int64
		)
		if err := rows.Scan(&e.ID, &t, &e.Resource, &e.Type, &e.Kind, &e.From, &e.To, &e.Reason, &e.Actor, &e.LeaseID, &e.Token, &e.Message, &e.Output, &e.Remote); err != nil {
			return nil, fmt.Errorf("postgres: list events: %w", err)
		}
		e.Time = fromNanos(t)
		out = append(out, &e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: list events: %w", err)
	}
	return out, nil
}

// EventRecord writes one event on its own.
func (s *Store) EventRecord(ctx context.Context, e *berth.Event) error {
	ctx, cancel := s.bound(ctx, opTimeout)
	defer cancel()
	err := s.tx(ctx, func(tx pgx.Tx) error {
		ev := &events{}
		ev.add(e)
		return ev.flush(ctx, tx)
	})
	if err != nil {
		return fmt.Errorf("postgres: record event: %w", err)
	}
	return nil
}
