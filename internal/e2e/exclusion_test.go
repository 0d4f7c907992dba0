package e2e

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/client"
)

// fence models a resource that only accepts the current holder: it is the
// independent checker, outside the broker, that sees every client's enter
// and exit in real time.
type fence struct {
	mu     sync.Mutex
	holder map[string]int64 // resource → token of the client inside
	last   map[string]int64 // resource → highest token seen
	errs   []string
}

func (f *fence) enter(resource string, token int64, owner string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if h := f.holder[resource]; h != 0 {
		f.errs = append(f.errs, fmt.Sprintf("%s entered %s with token %d while token %d holds it", owner, resource, token, h))
	}
	if token <= f.last[resource] {
		f.errs = append(f.errs, fmt.Sprintf("%s entered %s with stale token %d (last %d)", owner, resource, token, f.last[resource]))
	}
	f.holder[resource], f.last[resource] = token, token
}

func (f *fence) exit(resource string, token int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.holder[resource] != token {
		f.errs = append(f.errs, fmt.Sprintf("token %d left %s, but token %d held it", token, resource, f.holder[resource]))
	}
	f.holder[resource] = 0
}

// TestNoResourceHeldTwice has many clients fight over few resources of a
// real `berth serve` for thousands of cycles. Two independent checks prove
// that no two leases on a resource ever overlapped: the fence above, and the
// server's own event log, in which each resource's leases must start and end
// strictly in turn with increasing fencing tokens.
func TestNoResourceHeldTwice(t *testing.T) {
	dir := t.TempDir()
	srv := startServer(t, "--config", writeConfig(t, dir, poolYAML("vm", 3, "1m")), "--data", dir)
	const clients = 24
	// Thousands of cycles; fewer under the race detector, which slows the
	// broker several times over, so the test stays under ~15 s.
	cycles := 3000
	if raceEnabled {
		cycles = 2000
	}
	f := &fence{holder: map[string]int64{}, last: map[string]int64{}}
	var done atomic.Int64
	type held struct {
		resource string
		token    int64
	}
	var mu sync.Mutex
	var history []held
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	c := newClient(t, client.Options{Servers: []string{srv.URL}})
	for i := range clients {
		owner := fmt.Sprintf("client-%d", i)
		wg.Go(func() {
			ctx := context.Background()
			for done.Load() < int64(cycles) {
				got, err := c.Acquire(ctx, client.AcquireParams{Type: "vm", Owner: owner, Wait: time.Minute, Priority: i % 3})
				if err != nil {
					errs <- fmt.Errorf("%s acquire: %w", owner, err)
					return
				}
				l := got.Lease
				f.enter(l.Resource, l.Token, owner)
				mu.Lock()
				history = append(history, held{l.Resource, l.Token})
				mu.Unlock()
				// Hold the resource across a real round trip to the broker,
				// as a job would, so that an overlap has a window of
				// milliseconds, not microseconds, in which to show.
				if _, err := c.Heartbeat(ctx, l.ID); err != nil {
					errs <- fmt.Errorf("%s heartbeat: %w", owner, err)
					return
				}
				f.exit(l.Resource, l.Token)
				if _, err := c.Release(ctx, l.ID, client.ReleaseParams{To: berth.ReleaseFree}); err != nil {
					errs <- fmt.Errorf("%s release: %w", owner, err)
					return
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, e := range f.errs {
		t.Error(e)
	}

	// The server's log: per resource, acquired(T) then ended(T), strictly
	// alternating, tokens increasing.
	served, evs := checkLeaseLog(t, c)
	// Every hold a client saw is in the server's log.
	sort.Slice(history, func(i, j int) bool { return history[i].token < history[j].token })
	for _, h := range history {
		if !served[h.token] {
			t.Errorf("client held %s with token %d, which the server never granted", h.resource, h.token)
		}
	}
	t.Logf("%d acquire+release cycles by %d clients over 3 resources; %d events checked", len(history), clients, evs)
	if len(history) < cycles {
		t.Fatalf("only %d cycles ran", len(history))
	}
}

// checkLeaseLog reads the server's whole event log and checks that each
// resource's leases start and end strictly in turn, with increasing
// fencing tokens. It returns the tokens granted and the number of events.
func checkLeaseLog(t *testing.T, c *client.Client) (map[int64]bool, int) {
	t.Helper()
	ctx := context.Background()
	var evs []*berth.Event
	var after int64
	for {
		page, err := c.Events(ctx, client.EventFilter{After: after, Limit: 10000})
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		evs = append(evs, page...)
		after = page[len(page)-1].ID
	}
	open := map[string]int64{}
	last := map[string]int64{}
	served := map[int64]bool{}
	for _, ev := range evs {
		if ev.Kind != berth.EventLease {
			continue
		}
		switch {
		case ev.To == string(berth.StateBusy):
			if open[ev.Resource] != 0 {
				t.Fatalf("server log: %s leased with token %d while token %d still held it", ev.Resource, ev.Token, open[ev.Resource])
			}
			if ev.Token <= last[ev.Resource] {
				t.Fatalf("server log: %s token %d after %d", ev.Resource, ev.Token, last[ev.Resource])
			}
			open[ev.Resource], last[ev.Resource] = ev.Token, ev.Token
			served[ev.Token] = true
		default:
			if open[ev.Resource] != ev.Token {
				t.Fatalf("server log: %s lease %d ended but %d held it", ev.Resource, ev.Token, open[ev.Resource])
			}
			open[ev.Resource] = 0
		}
	}
	return served, len(evs)
}
