// Package janitor keeps what jobs give back fit for the next one: berth's
// own janitor runs each pool's janitor command on its dirty resources,
// holding a cleaning lease as an outside janitor would through the API
// (janitor.go), and the provisioner keeps dynamic pools at their size,
// making and deleting resources with the pools' commands (dynamic.go).
// Both run on the leader only.
package janitor

import (
	"context"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/berth-ci/berth/internal/lease"
)

// loop calls once whenever something may be to do, until ctx ends: at
// once, then when the engine touches one of types, when a job says it is
// done (finished), when once's answer (the next time something is due)
// comes, and every poll (if set: a store that several processes share
// does not announce what the others do).
func loop(ctx context.Context, clock clockwork.Clock, eng *lease.Engine, types []string, poll time.Duration, finished <-chan struct{},
	once func(ctx context.Context) time.Time) {
	var tick <-chan time.Time
	if poll > 0 {
		t := clock.NewTicker(poll)
		defer t.Stop()
		tick = t.Chan()
	}
	for {
		watch, unwatch := eng.Watch(types...) // before the pass, so that nothing is missed
		next := once(ctx)
		var (
			timer clockwork.Timer
			due   <-chan time.Time
		)
		if !next.IsZero() {
			timer = clock.NewTimer(max(next.Sub(clock.Now()), 0))
			due = timer.Chan()
			if !clock.Now().Before(next) {
				// Due already: the clock moved on between the reading of
				// it above and the timer's start, which then runs late.
				timer.Stop()
				unwatch()
				continue
			}
		}
		select {
		case <-ctx.Done():
		case <-watch:
		case <-finished:
		case <-tick:
		case <-due:
		}
		if timer != nil {
			timer.Stop()
		}
		unwatch()
		if ctx.Err() != nil {
			return
		}
	}
}

// earliest is the earlier of two due times, zero meaning none.
func earliest(a, b time.Time) time.Time {
	switch {
	case a.IsZero():
		return b
	case b.IsZero() || a.Before(b):
		return a
	}
	return b
}

// signal says "done" on ch without blocking: one pending signal is enough
// for the loop to look again.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
