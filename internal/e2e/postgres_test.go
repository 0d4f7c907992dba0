package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/client"
	"github.com/berth-ci/berth/internal/store/postgres/pgtest"
)

// TestPostgresStoreKeepsLeasesAcrossKill9 runs a real `berth serve
// --store postgres://…`, kills it with SIGKILL while it holds a lease, and
// starts it again on the same database: the lease is still held, the
// released one stays released, and tokens keep growing.
func TestPostgresStoreKeepsLeasesAcrossKill9(t *testing.T) {
	store := pgtest.StoreURL(t)
	dir := t.TempDir()
	cfg := writeConfig(t, dir, poolYAML("vm", 2, "10m"))
	srv := startServer(t, "--config", cfg, "--store", store)
	c := newClient(t, client.Options{Servers: []string{srv.URL}})
	ctx := context.Background()

	held, err := c.Acquire(ctx, client.AcquireParams{Type: "vm", Owner: "job-1"})
	if err != nil {
		t.Fatal(err)
	}
	gone, err := c.Acquire(ctx, client.AcquireParams{Type: "vm", Owner: "job-2"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Release(ctx, gone.Lease.ID, client.ReleaseParams{To: berth.ReleaseFree}); err != nil {
		t.Fatal(err)
	}
	srv.kill9()

	srv = startServer(t, "--config", cfg, "--store", store)
	c = newClient(t, client.Options{Servers: []string{srv.URL}})
	l, err := c.Lease(ctx, held.Lease.ID)
	if err != nil {
		t.Fatal(err)
	}
	if l.Status != berth.LeaseActive || l.Token != held.Lease.Token {
		t.Fatalf("held lease after kill -9: %+v; want it active with token %d", l, held.Lease.Token)
	}
	if l, err := c.Lease(ctx, gone.Lease.ID); err != nil || l.Status != berth.LeaseReleased {
		t.Fatalf("released lease after kill -9: %+v, %v; want released", l, err)
	}
	next, err := c.Acquire(ctx, client.AcquireParams{Type: "vm", Owner: "job-3"})
	if err != nil {
		t.Fatal(err)
	}
	if next.Resource.Name != gone.Resource.Name || next.Lease.Token <= gone.Lease.Token {
		t.Fatalf("acquire after restart: %s token %d; want %s with a token above %d",
			next.Resource.Name, next.Lease.Token, gone.Resource.Name, gone.Lease.Token)
	}
	if _, err := c.Acquire(ctx, client.AcquireParams{Type: "vm", Owner: "job-4"}); berth.ErrorCodeOf(err) != berth.EExhausted {
		t.Fatalf("third acquire on two resources: %v; want exhausted", err)
	}
}

// TestPostgresHandoffAcrossReplicas: two `berth serve` processes on one
// PostgreSQL. A job long-polls on replica B for the only resource, which a
// job on replica A holds; A's release hands it over, and B's long poll is
// woken by the notification and answers with the lease long before its
// wait would have ended.
func TestPostgresHandoffAcrossReplicas(t *testing.T) {
	store := pgtest.StoreURL(t)
	dir := t.TempDir()
	cfg := writeConfig(t, dir, poolYAML("vm", 1, "10m"))
	a := startServer(t, "--config", cfg, "--store", store)
	b := startServer(t, "--config", cfg, "--store", store)
	ca := newClient(t, client.Options{Servers: []string{a.URL}})
	cb := newClient(t, client.Options{Servers: []string{b.URL}})
	ctx := context.Background()

	held, err := ca.Acquire(ctx, client.AcquireParams{Type: "vm", Owner: "job-a"})
	if err != nil {
		t.Fatal(err)
	}
	const wait = time.Minute
	type result struct {
		a   *client.Acquired
		err error
		at  time.Time
	}
	got := make(chan result, 1)
	go func() {
		r, err := cb.Acquire(ctx, client.AcquireParams{Type: "vm", Owner: "job-b", Wait: wait})
		got <- result{r, err, time.Now()}
	}()
	waitFor(t, "the job on replica B to queue", func() bool {
		p, err := ca.Pool(ctx, "vm")
		return err == nil && p.Waiters == 1
	})
	released := time.Now()
	if _, err := ca.Release(ctx, held.Lease.ID, client.ReleaseParams{To: berth.ReleaseFree}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-got:
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.a.Lease.Owner != "job-b" || r.a.Resource.Name != held.Resource.Name || r.a.Lease.Token <= held.Lease.Token {
			t.Fatalf("waiter got %+v", r.a.Lease)
		}
		t.Logf("release on A -> waiter on B holds it: %s", r.at.Sub(released))
	case <-time.After(wait / 2):
		t.Fatalf("the waiter on replica B was not woken by the release on replica A within %s", wait/2)
	}
}
