package e2e

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/client"
	"github.com/berth-ci/berth/internal/store/postgres/pgtest"
)

// freeAddr returns a loopback address with a port nothing listens on now,
// so that a replica can be restarted where its clients expect it.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestPostgresReplicasSurviveKill9Loop: three `berth serve` replicas on one
// PostgreSQL, clients that know all three, sustained acquire, heartbeat and
// release; every two seconds one replica is killed with SIGKILL and
// started again, for a minute. Checked: no resource is ever held twice
// (the fence, in real time, and the server's event log afterwards); every
// acknowledged acquire and release is in the store; no client call failed
// beyond its retries; and the reaper still runs.
func TestPostgresReplicasSurviveKill9Loop(t *testing.T) {
	if testing.Short() {
		t.Skip("a minute of chaos; skipped with -short")
	}
	store := pgtest.StoreURL(t)
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "pools:\n  - type: vm\n    leaseTTL: 1m\n    generate: {prefix: vm-, count: 4}\n"+
		"  - type: short\n    leaseTTL: 1s\n    resources: [short-1]\n")
	addrs := []string{freeAddr(t), freeAddr(t), freeAddr(t)}
	urls := make([]string, len(addrs))
	srvs := make([]*proc, len(addrs))
	for i, a := range addrs {
		srvs[i] = startServer(t, "--config", cfg, "--store", store, "--listen", a)
		urls[i] = "http://" + a
	}

	type acked struct {
		id       string
		resource string
		token    int64
		released bool
	}
	var (
		f       = &fence{holder: map[string]int64{}, last: map[string]int64{}}
		mu      sync.Mutex
		log     []*acked
		failed  []error
		stop    atomic.Bool
		wg      sync.WaitGroup
		workers = 10
	)
	for i := range workers {
		owner := fmt.Sprintf("job-%d", i)
		// Each worker starts with a different replica, so load is spread.
		servers := append(append([]string{}, urls[i%3:]...), urls[:i%3]...)
		c := newClient(t, client.Options{Servers: servers, MaxAttempts: 100, MaxBackoff: 200 * time.Millisecond})
		wg.Go(func() {
			ctx := context.Background()
			fail := func(err error) {
				mu.Lock()
				failed = append(failed, err)
				mu.Unlock()
				stop.Store(true)
			}
			for !stop.Load() {
				got, err := c.Acquire(ctx, client.AcquireParams{Type: "vm", Owner: owner, Wait: 30 * time.Second})
				if err != nil {
					fail(fmt.Errorf("%s acquire: %w", owner, err))
					return
				}
				l := got.Lease
				a := &acked{id: l.ID, resource: l.Resource, token: l.Token}
				mu.Lock()
				log = append(log, a)
				mu.Unlock()
				f.enter(l.Resource, l.Token, owner)
				if _, err := c.Heartbeat(ctx, l.ID); err != nil {
					fail(fmt.Errorf("%s heartbeat of %s: %w", owner, l.ID, err))
					return
				}
				f.exit(l.Resource, l.Token)
				if _, err := c.Release(ctx, l.ID, client.ReleaseParams{To: berth.ReleaseFree}); err != nil {
					fail(fmt.Errorf("%s release of %s: %w", owner, l.ID, err))
					return
				}
				mu.Lock()
				a.released = true
				mu.Unlock()
			}
		})
	}

	// The chaos: kill one replica, start it again on its address, next.
	kills := 0
	for end := time.Now().Add(time.Minute); time.Now().Before(end) && !stop.Load(); kills++ {
		i := kills % len(srvs)
		srvs[i].kill9()
		srvs[i] = startServer(t, "--config", cfg, "--store", store, "--listen", addrs[i])
		// Not a synchronisation sleep: the pace of the chaos.
		time.Sleep(2 * time.Second)
	}
	stop.Store(true)
	wg.Wait()
	for _, err := range failed {
		t.Error(err)
	}
	if len(failed) > 0 {
		// Who held what when the clients gave up.
		c := newClient(t, client.Options{Servers: urls})
		if rs, err := c.Resources(context.Background(), client.ResourceFilter{Type: "vm"}); err == nil {
			for _, r := range rs {
				t.Logf("%s: %s owner=%q lease=%s changed=%s", r.Name, r.State, r.Owner, r.LeaseID, r.StateChangedAt.Format(time.RFC3339Nano))
				if r.LeaseID != "" {
					if l, err := c.Lease(context.Background(), r.LeaseID); err == nil {
						t.Logf("  lease %+v", l)
					}
				}
			}
		}
		if evs, err := c.Events(context.Background(), client.EventFilter{Limit: 40, Desc: true}); err == nil {
			for _, ev := range evs {
				t.Logf("event %d %s %s %s %s→%s %s %s", ev.ID, ev.Time.Format(time.RFC3339Nano), ev.Resource, ev.Reason, ev.From, ev.To, ev.Actor, ev.Message)
			}
		}
	}
	for _, e := range f.errs {
		t.Error(e)
	}
	if t.Failed() {
		t.FailNow()
	}

	c := newClient(t, client.Options{Servers: urls, MaxAttempts: 100, MaxBackoff: 200 * time.Millisecond})
	ctx := context.Background()
	served, events := checkLeaseLog(t, c)
	for _, a := range log {
		if !served[a.token] {
			t.Errorf("acknowledged acquire of %s (token %d) is not in the server's log", a.resource, a.token)
		}
		l, err := c.Lease(ctx, a.id)
		if err != nil {
			t.Errorf("acknowledged lease %s: %v", a.id, err)
			continue
		}
		if a.released && l.Status != berth.LeaseReleased {
			t.Errorf("acknowledged release of %s is not in the store: lease is %s", a.id, l.Status)
		}
	}

	// The reaper still runs, in whichever replica leads now.
	gone, err := c.Acquire(ctx, client.AcquireParams{Type: "short", Owner: "vanished"})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the reaper to end a lease nobody heartbeats", func() bool {
		// Ended by the reaper (endedAt set, resource free again), not
		// merely read as expired: a lease past its expiry reads expired
		// whether or not anything reaped it.
		l, err := c.Lease(ctx, gone.Lease.ID)
		if err != nil || l.Status != berth.LeaseExpired || l.EndedAt == nil {
			return false
		}
		r, err := c.Resource(ctx, gone.Resource.Name)
		return err == nil && r.State == berth.StateFree
	})
	t.Logf("%d kill -9s; %d acknowledged acquire+release cycles by %d clients; %d events checked", kills, len(log), workers, events)
	if len(log) < 100 {
		t.Fatalf("only %d cycles in a minute: the load was not sustained", len(log))
	}
}
