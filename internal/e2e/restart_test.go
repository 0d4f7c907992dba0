package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/client"
)

// waitFor polls cond every few milliseconds until it holds or the deadline
// passes. It is for conditions in another process that offers no signal
// to wait on.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestWaiterSurvivesRollingRestart: a job waiting for a resource while the
// broker is restarted (SIGTERM, new process, same data) keeps its place and
// gets the resource when it is released on the new process.
func TestWaiterSurvivesRollingRestart(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, poolYAML("vm", 1, "10m"))
	srv := startServer(t, "--config", cfg, "--data", dir)
	addr := strings.TrimPrefix(srv.URL, "http://")
	ctx := context.Background()
	c := newClient(t, client.Options{Servers: []string{srv.URL}, MaxAttempts: 100, MaxBackoff: 200 * time.Millisecond})
	held, err := c.Acquire(ctx, client.AcquireParams{Type: "vm", Owner: "holder"})
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		a   *client.Acquired
		err error
	}
	got := make(chan result, 1)
	go func() {
		a, err := c.Acquire(ctx, client.AcquireParams{Type: "vm", Owner: "waiter", RequestID: "waiter-1", Wait: 2 * time.Minute})
		got <- result{a, err}
	}()
	waitFor(t, "the waiter to queue", func() bool {
		r, err := c.Request(ctx, "waiter-1")
		return err == nil && r.Position == 1
	})

	srv.stop()
	if srv.exitCode() != 0 {
		t.Fatalf("berth serve exited %d on SIGTERM", srv.exitCode())
	}
	select {
	case r := <-got:
		t.Fatalf("the waiter gave up during the restart: %+v, %v", r.a, r.err)
	default:
	}
	startServer(t, "--config", cfg, "--data", dir, "--listen", addr)
	if _, err := c.Release(ctx, held.Lease.ID, client.ReleaseParams{To: berth.ReleaseFree}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-got:
		if r.err != nil || r.a.Lease.Owner != "waiter" || r.a.Lease.RequestID != "waiter-1" {
			t.Fatalf("waiter = %+v, %v", r.a, r.err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the waiter did not get the released resource")
	}
}
