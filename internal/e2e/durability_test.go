package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/client"
	"github.com/berth-ci/berth/internal/store/sqlite"
)

// opLog is one client's record of what it asked for and what the server
// acknowledged, written before and after each call.
type opLog struct {
	owner string
	// acked leases, and whether their release was acknowledged.
	acquired map[string]*ackedLease
	// inflightAcquire: an acquire was sent and got no answer.
	inflightAcquire bool
}

type ackedLease struct {
	resource        string
	token           int64
	releaseSent     bool
	releaseAcked    bool
	releaseInflight bool
}

// TestKill9KeepsAcknowledgedMutations runs acquires and releases from
// several clients against a real `berth serve`, kills it with SIGKILL in
// the middle of the load, restarts it on the same data directory, and
// checks that every acknowledged acquire and release is there and that
// nothing else is.
func TestKill9KeepsAcknowledgedMutations(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, poolYAML("vm", 6, "10m"))
	data := filepath.Join(dir, "data")
	srv := startServer(t, "--config", cfg, "--data", data)

	const workers = 8
	const killAfter = 600 // acknowledged mutations before the kill
	var acked atomic.Int64
	killed := make(chan struct{})
	kill := sync.OnceFunc(func() {
		srv.kill9()
		close(killed)
	})
	logs := make([]*opLog, workers)
	var wg sync.WaitGroup
	for i := range logs {
		lg := &opLog{owner: fmt.Sprintf("worker-%d", i), acquired: map[string]*ackedLease{}}
		logs[i] = lg
		// One attempt per call: a retry would blur what was acknowledged.
		c := newClient(t, client.Options{Servers: []string{srv.URL}, MaxAttempts: 1, ConnectTimeout: time.Second})
		wg.Go(func() {
			ctx := context.Background()
			for {
				select {
				case <-killed:
					return
				default:
				}
				got, err := c.Acquire(ctx, client.AcquireParams{Type: "vm", Owner: lg.owner, Wait: 10 * time.Second})
				if err != nil {
					if berth.ErrorCodeOf(err) == berth.EExhausted {
						continue
					}
					lg.inflightAcquire = true // sent; the answer never came
					return
				}
				l := &ackedLease{resource: got.Lease.Resource, token: got.Lease.Token}
				lg.acquired[got.Lease.ID] = l
				if acked.Add(1) >= killAfter {
					kill()
				}
				l.releaseSent = true
				if _, err := c.Release(ctx, got.Lease.ID, client.ReleaseParams{To: berth.ReleaseFree}); err != nil {
					l.releaseInflight = true
					return
				}
				l.releaseAcked = true
				if acked.Add(1) >= killAfter {
					kill()
				}
			}
		})
	}
	wg.Wait()
	select {
	case <-killed:
	default:
		t.Fatalf("workers stopped before the kill after %d acknowledged mutations:\n%s", acked.Load(), srv.Log())
	}

	srv2 := startServer(t, "--config", cfg, "--data", data)
	c := newClient(t, client.Options{Servers: []string{srv2.URL}})
	ctx := context.Background()
	known := map[string]bool{}
	nAcq, nRel := 0, 0
	for _, lg := range logs {
		for id, want := range lg.acquired {
			known[id] = true
			nAcq++
			got, err := c.Lease(ctx, id)
			if err != nil {
				t.Errorf("%s: acknowledged lease %s lost in the crash: %v", lg.owner, id, err)
				continue
			}
			if got.Token != want.token || got.Resource != want.resource || got.Owner != lg.owner {
				t.Errorf("lease %s after restart = %+v, want token %d on %s", id, got, want.token, want.resource)
			}
			switch {
			case want.releaseAcked:
				nRel++
				if got.Status != berth.LeaseReleased {
					t.Errorf("%s: acknowledged release of %s lost: lease is %s", lg.owner, id, got.Status)
				}
			case want.releaseInflight:
				// Either outcome is honest: the release may or may not
				// have committed before the kill.
			default:
				if got.Status != berth.LeaseActive {
					t.Errorf("%s: lease %s was never released but is %s", lg.owner, id, got.Status)
				}
			}
		}
	}
	// Nothing else: every lease the server knows of was acknowledged, or is
	// the one unanswered acquire of a worker that had one in flight.
	evs, err := c.Events(ctx, client.EventFilter{Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	inflight := map[string]bool{}
	for _, lg := range logs {
		inflight[lg.owner] = lg.inflightAcquire
	}
	unknownPerOwner := map[string]int{}
	for _, ev := range evs {
		if ev.Kind != berth.EventLease || ev.To != string(berth.StateBusy) || known[ev.LeaseID] {
			continue
		}
		// The event's actor is whoever caused it (for a handoff, the
		// releaser); the lease says whose it is.
		l, err := c.Lease(ctx, ev.LeaseID)
		if err != nil {
			t.Fatalf("lease %s of event %d: %v", ev.LeaseID, ev.ID, err)
		}
		owner := l.Owner
		unknownPerOwner[owner]++
		if !inflight[owner] || unknownPerOwner[owner] > 1 {
			t.Errorf("lease %s for %s exists but was never acknowledged, and %s had no acquire in flight", ev.LeaseID, owner, owner)
		}
	}
	t.Logf("checked %d acknowledged acquires and %d acknowledged releases across a SIGKILL", nAcq, nRel)
	if nAcq+nRel < killAfter {
		t.Fatalf("only %d acknowledged mutations checked", nAcq+nRel)
	}

	srv2.stop()
	if code := srv2.exitCode(); code != 0 {
		t.Errorf("berth serve exited %d on SIGTERM, want 0", code)
	}
	st, err := sqlite.Open(ctx, filepath.Join(data, "berth.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Check(ctx); err != nil {
		t.Fatalf("store after crash and restart is inconsistent: %v", err)
	}
}
