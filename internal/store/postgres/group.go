package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Group commit. Each commit waits for its WAL flush, and the commits of
// a cycle cost more than its statements: PostgreSQL ran berth's statements
// at 1,200-1,500 cycles/s with 8 clients committing each acquire and
// release on its own, and at 3,800-4,100 with two acquires, and two
// releases, committed together (BENCHMARKS.md). So the one-round-trip
// acquires and releases of concurrent callers go to a worker (see
// groupWorkers), which sends whatever has gathered as one pipelined batch:
// one implicit transaction, one commit. The units of a batch cannot disturb
// each other: each is correct alone at READ COMMITTED, and a later
// statement of the transaction sees what an earlier one changed, as a
// later transaction would. If any statement fails, the whole batch rolls
// back, and each unit is sent again on its own, so that one caller's
// error stays its own. A unit that waits for a row lock holds up the
// units of its batch, and the next batch, until the lock is free or the
// store's timeout passes. (A batch can meet a pool sync, which locks every
// resource row, in a deadlock; PostgreSQL breaks it within a second, and
// whichever side it aborts runs again.)

// unit is one caller's statements: queue adds them to a batch, with
// callbacks that keep their results (a later, successful send overwrites
// what a rolled-back one left).
type unit struct {
	queue func(b *pgx.Batch)
	done  chan error
}

const (
	// groupWorkers send batches at the same time; each holds a connection
	// while its batch is out. One does best: the larger its batches, the
	// fewer the commits. berth bench, one replica, 10,000 resources,
	// concurrency 16, alternating 8 s runs: 1 worker 2,554-2,958 cycles/s,
	// 2 workers 2,438-2,510, 4 workers 2,044-2,074 (and at concurrency 64,
	// 3,532 against 3,220 for 2).
	groupWorkers = 1
	// groupMax caps the units of one batch, and so how long a
	// transaction holds its locks.
	groupMax = 32
)

// grouped sends u's statements in a batch with those of other callers
// and waits until that batch is committed or rolled back.
func (s *Store) grouped(ctx context.Context, queue func(b *pgx.Batch)) error {
	u := &unit{queue: queue, done: make(chan error, 1)}
	select {
	case s.group <- u:
	case <-ctx.Done():
		return ctx.Err()
	case <-s.backgroundCtx.Done():
		return fmt.Errorf("the store is closed")
	}
	// Once handed over, the unit is sent whatever happens to ctx: its
	// outcome is only known when the batch returns, bounded by the
	// store's timeout.
	return <-u.done
}

// groupWorker gathers units and sends them until the store closes.
func (s *Store) groupWorker() {
	for {
		var units []*unit
		select {
		case u := <-s.group:
			units = append(units, u)
		case <-s.backgroundCtx.Done():
			return
		}
	gather:
		for len(units) < groupMax {
			select {
			case u := <-s.group:
				units = append(units, u)
			default:
				break gather
			}
		}
		s.sendUnits(units)
	}
}

func (s *Store) sendUnits(units []*unit) {
	ctx, cancel := context.WithTimeout(s.backgroundCtx, s.opTimeout)
	defer cancel()
	if len(units) > 1 {
		b := &pgx.Batch{}
		for _, u := range units {
			u.queue(b)
		}
		err := s.pool.SendBatch(ctx, b).Close()
		var pe *pgconn.PgError
		if err == nil || !errors.As(err, &pe) {
			// Committed, or failed in a way that does not say whether it
			// committed (the connection broke): sending the units again
			// could apply them twice, so each caller gets the outcome.
			for _, u := range units {
				u.done <- err
			}
			return
		}
		// A statement failed, so PostgreSQL rolled the batch back.
	}
	for _, u := range units {
		var err error
		for attempt := 1; attempt <= 3; attempt++ {
			b := &pgx.Batch{}
			u.queue(b)
			if err = s.pool.SendBatch(ctx, b).Close(); !isDeadlock(err) {
				break
			}
		}
		u.done <- err
	}
}
