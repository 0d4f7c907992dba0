// Package bench drives a running broker through its public client and
// measures it: acquire+release throughput and latency under concurrency, and
// the delay from a release to the next waiter holding the resource.
package bench

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/client"
)

// Options for Cycles.
type Options struct {
	// Clients: worker i uses Clients[i % len(Clients)], so that several
	// replicas share the load.
	Clients     []*client.Client
	Type        string
	Concurrency int
	Duration    time.Duration
	Owner       string
}

// Latencies summarises a set of durations.
type Latencies struct {
	N             int
	P50, P99, Max time.Duration
}

func summarise(ds []time.Duration) Latencies {
	if len(ds) == 0 {
		return Latencies{}
	}
	slices.Sort(ds)
	at := func(q float64) time.Duration { return ds[min(len(ds)-1, int(q*float64(len(ds))))] }
	return Latencies{N: len(ds), P50: at(0.50), P99: at(0.99), Max: ds[len(ds)-1]}
}

func (l Latencies) String() string {
	return fmt.Sprintf("p50 %s  p99 %s  max %s", round(l.P50), round(l.P99), round(l.Max))
}

func round(d time.Duration) time.Duration {
	switch {
	case d > time.Second:
		return d.Round(time.Millisecond)
	case d > time.Millisecond:
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}

// CycleResult is what Cycles measured.
type CycleResult struct {
	Cycles    int
	Errors    int
	FirstErr  error
	Elapsed   time.Duration
	PerSecond float64
	Cycle     Latencies // acquire + release
	Acquire   Latencies
	Release   Latencies
}

// Cycles runs Concurrency workers that acquire a resource and release it
// (as free, so no janitor is involved) as fast as they can for Duration.
func Cycles(ctx context.Context, o Options) (*CycleResult, error) {
	if o.Concurrency < 1 {
		return nil, errors.New("concurrency must be at least 1")
	}
	if o.Duration <= 0 {
		return nil, errors.New("duration must be positive")
	}
	if len(o.Clients) == 0 {
		return nil, errors.New("no client")
	}
	if _, err := o.Clients[0].Pool(ctx, o.Type); err != nil {
		return nil, fmt.Errorf("pool %s: %w", o.Type, err)
	}
	type worker struct {
		cycle, acq, rel []time.Duration
		errs            int
		firstErr        error
	}
	ws := make([]*worker, o.Concurrency)
	ctx, cancel := context.WithTimeout(ctx, o.Duration)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for i := range ws {
		w := &worker{}
		ws[i] = w
		owner := fmt.Sprintf("%s-%d", o.Owner, i)
		c := o.Clients[i%len(o.Clients)]
		wg.Go(func() {
			for ctx.Err() == nil {
				t0 := time.Now()
				got, err := c.Acquire(ctx, client.AcquireParams{Type: o.Type, Owner: owner, Wait: o.Duration})
				t1 := time.Now()
				if err != nil {
					if ctx.Err() == nil {
						w.errs++
						if w.firstErr == nil {
							w.firstErr = err
						}
					}
					continue
				}
				// Release even when the run has ended, so the pool is left
				// as it was found.
				_, err = c.Release(context.WithoutCancel(ctx), got.Lease.ID, client.ReleaseParams{To: berth.ReleaseFree})
				t2 := time.Now()
				if err != nil {
					w.errs++
					if w.firstErr == nil {
						w.firstErr = err
					}
					continue
				}
				if ctx.Err() != nil {
					break // the cycle straddled the end; do not count it
				}
				w.acq = append(w.acq, t1.Sub(t0))
				w.rel = append(w.rel, t2.Sub(t1))
				w.cycle = append(w.cycle, t2.Sub(t0))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	res := &CycleResult{Elapsed: elapsed}
	var cycle, acq, rel []time.Duration
	for _, w := range ws {
		cycle = append(cycle, w.cycle...)
		acq = append(acq, w.acq...)
		rel = append(rel, w.rel...)
		res.Errors += w.errs
		if res.FirstErr == nil {
			res.FirstErr = w.firstErr
		}
	}
	res.Cycles = len(cycle)
	res.PerSecond = float64(res.Cycles) / min(elapsed, o.Duration).Seconds()
	res.Cycle, res.Acquire, res.Release = summarise(cycle), summarise(acq), summarise(rel)
	return res, nil
}

// HandoffOptions for Handoff.
type HandoffOptions struct {
	// Clients[0] holds and releases; waiter i uses Clients[1 + i % (n-1)]
	// when there are several, so that handoffs cross replicas.
	Clients []*client.Client
	Type    string
	Waiters int
	Rounds  int
	Owner   string
}

// HandoffResult is what Handoff measured.
type HandoffResult struct {
	Waiters int
	Handoff Latencies
}

// Handoff leases every free resource of the type, parks Waiters waiting
// acquires behind them, and then, Rounds times, releases one held lease and
// measures until a waiter holds that resource (from just before the release
// call is sent to just after the waiter's acquire returns). The waiter gives
// its lease to the releaser and queues again, so the queue stays full.
func Handoff(ctx context.Context, o HandoffOptions) (*HandoffResult, error) {
	if o.Waiters < 1 || o.Rounds < 1 {
		return nil, errors.New("waiters and rounds must be at least 1")
	}
	if len(o.Clients) == 0 {
		return nil, errors.New("no client")
	}
	holder := o.Clients[0]
	waiterClient := func(i int) *client.Client {
		if len(o.Clients) == 1 {
			return holder
		}
		return o.Clients[1+i%(len(o.Clients)-1)]
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var held []*berth.Lease
	defer func() {
		for _, l := range held {
			_, _ = holder.Release(context.WithoutCancel(ctx), l.ID, client.ReleaseParams{To: berth.ReleaseFree})
		}
	}()
	for {
		got, err := holder.Acquire(ctx, client.AcquireParams{Type: o.Type, Owner: o.Owner + "-holder"})
		if berth.ErrorCodeOf(err) == berth.EExhausted {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("take the pool: %w", err)
		}
		held = append(held, got.Lease)
	}
	if len(held) == 0 {
		return nil, fmt.Errorf("pool %s has no free resource to hand off", o.Type)
	}

	type handed struct {
		lease *berth.Lease
		at    time.Time
		err   error
	}
	got := make(chan handed)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for i := 0; i < o.Waiters; i++ {
		owner := fmt.Sprintf("%s-waiter-%d", o.Owner, i)
		c := waiterClient(i)
		wg.Go(func() {
			for ctx.Err() == nil {
				a, err := c.Acquire(ctx, client.AcquireParams{Type: o.Type, Owner: owner, Wait: time.Hour})
				at := time.Now()
				if ctx.Err() != nil {
					if err == nil {
						_, _ = c.Release(context.WithoutCancel(ctx), a.Lease.ID, client.ReleaseParams{To: berth.ReleaseFree})
					}
					return
				}
				h := handed{at: at, err: err}
				if err == nil {
					h.lease = a.Lease
				}
				select {
				case got <- h:
				case <-ctx.Done():
					if err == nil {
						_, _ = c.Release(context.WithoutCancel(ctx), a.Lease.ID, client.ReleaseParams{To: berth.ReleaseFree})
					}
					return
				}
			}
		})
	}
	// Every waiter must be in line before the first release. The broker
	// has no "tell me when N wait" call, so the harness looks every few
	// milliseconds; this is set-up, not part of what is measured.
	if err := waitForWaiters(ctx, holder, o.Type, o.Waiters); err != nil {
		return nil, err
	}
	lat := make([]time.Duration, 0, o.Rounds)
	for i := 0; i < o.Rounds; i++ {
		l := held[0]
		held = held[1:]
		t0 := time.Now()
		if _, err := holder.Release(ctx, l.ID, client.ReleaseParams{To: berth.ReleaseFree}); err != nil {
			return nil, fmt.Errorf("release: %w", err)
		}
		var h handed
		select {
		case h = <-got:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if h.err != nil {
			return nil, fmt.Errorf("waiter: %w", h.err)
		}
		lat = append(lat, h.at.Sub(t0))
		held = append(held, h.lease)
		// Let the waiter that was served queue again, so that every round
		// has the same queue.
		if err := waitForWaiters(ctx, holder, o.Type, o.Waiters); err != nil {
			return nil, err
		}
	}
	return &HandoffResult{Waiters: o.Waiters, Handoff: summarise(lat)}, nil
}

func waitForWaiters(ctx context.Context, c *client.Client, typ string, n int) error {
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		p, err := c.Pool(ctx, typ)
		if err != nil {
			return fmt.Errorf("pool %s: %w", typ, err)
		}
		if p.Waiters >= n {
			return nil
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
