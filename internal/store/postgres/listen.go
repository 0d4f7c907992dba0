package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/berth-ci/berth/internal/store"
)

// handoffChannel is the NOTIFY channel of handoffs, per schema, so that
// berth instances on separate schemas of one database do not hear each
// other. As SQL: it is spliced into statements, never a parameter.
const handoffChannel = "'berth_handoff:' || current_schema()"

var (
	_ store.HandoffListener = (*Store)(nil)
	_ store.ProbeRequester  = (*Store)(nil)
)

// RequestProbe implements store.ProbeRequester with a notification on the
// handoff channel, which every replica listens to.
func (s *Store) RequestProbe(ctx context.Context, name string) error {
	ctx, cancel := s.bound(ctx, opTimeout)
	defer cancel()
	if _, err := s.pool.Exec(ctx, "SELECT pg_notify("+handoffChannel+", $1)", store.ProbeRequestPrefix+name); err != nil {
		return fmt.Errorf("postgres: request a probe of %s: %w", name, err)
	}
	return nil
}

// ListenHandoffs implements store.HandoffListener with LISTEN on a
// connection of its own. When that connection fails (the database
// restarts, the network drops), it connects again, with a growing pause
// of at most 5 s, and calls fn("") once it listens again.
func (s *Store) ListenHandoffs(ctx context.Context, fn func(requestID string)) {
	pause := 100 * time.Millisecond
	for ctx.Err() == nil {
		if err := s.listen(ctx, fn, func() { pause = 100 * time.Millisecond }); err == nil || ctx.Err() != nil {
			return
		}
		// Deaf until it reconnects: every long poll here looks at the
		// store for itself now, rather than wait for a word that cannot
		// come (and answers 503 if the store cannot be reached either).
		fn("")
		select {
		case <-ctx.Done():
			return
		case <-time.After(pause):
		}
		pause = min(2*pause, 5*time.Second)
	}
}

// listen runs one LISTEN session until ctx ends (nil) or the connection
// fails (its error). listening is called once LISTEN is in place.
func (s *Store) listen(ctx context.Context, fn func(string), listening func()) error {
	conn, err := pgx.ConnectConfig(ctx, s.pool.Config().ConnConfig.Copy())
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var channel string
	if err := conn.QueryRow(ctx, "SELECT "+handoffChannel).Scan(&channel); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{channel}.Sanitize()); err != nil {
		return err
	}
	listening()
	fn("") // whatever was handed off before this connection listened
	for {
		// Wait a while, then make sure the connection still answers: a
		// connection cut silently (a network split) would otherwise leave
		// this replica deaf to handoffs for as long as TCP takes to notice.
		wctx, cancel := context.WithTimeout(ctx, listenCheck)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return nil
		case err == nil:
			fn(n.Payload)
			continue
		case wctx.Err() == nil:
			return err
		}
		pctx, cancel := context.WithTimeout(ctx, listenCheck)
		err = conn.Ping(pctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}

// listenCheck is how long the listener waits for a notification before it
// checks that its connection still answers, and how long it gives the
// check.
const listenCheck = 5 * time.Second
