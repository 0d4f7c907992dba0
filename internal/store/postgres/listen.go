package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/berth-ci/berth/internal/store"
)

// handoffChannel is the NOTIFY channel of handoffs, per schema, so that
// berth instances on separate schemas of one database do not hear each
// other. As SQL: it is spliced into statements, never a parameter.
const handoffChannel = "'berth_handoff:' || current_schema()"

var _ store.HandoffListener = (*Store)(nil)

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
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		fn(n.Payload)
	}
}
