package e2e

import (
	"context"
	"testing"

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
