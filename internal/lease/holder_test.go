package lease_test

import (
	"context"
	"strings"
	"testing"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/lease"
)

func as(name string, role berth.Role) context.Context {
	return berth.WithPrincipal(context.Background(), berth.Principal{Name: name, Role: role, Remote: "10.0.0.1:1"})
}

// TestOnlyTheHolderEndsALease: with authentication, only the principal
// that acquired a lease heartbeats or releases it; an admin may, forced,
// and says so. An engine that did not grant the lease (another replica,
// or after a restart) reads who holds it and decides the same.
func TestOnlyTheHolderEndsALease(t *testing.T) {
	f := newFixture(t, vmPool(2))
	a, err := f.eng.Acquire(as("job-a", berth.RoleClient), lease.AcquireParams{Type: "vm", Owner: "ci-1"})
	if err != nil {
		t.Fatal(err)
	}
	other := lease.New(lease.Options{Store: f.store, Clock: f.clock})
	if _, err := other.SyncPools(context.Background(), []lease.Pool{vmPool(2)}, "test"); err != nil {
		t.Fatal(err)
	}
	for name, eng := range map[string]*lease.Engine{"granting engine": f.eng, "other engine": other} {
		if _, err := eng.Heartbeat(as("job-b", berth.RoleClient), a.Lease.ID); berth.ErrorCodeOf(err) != berth.EForbidden {
			t.Fatalf("%s: job-b's heartbeat: %v, want forbidden", name, err)
		}
		if _, err := eng.Release(as("job-b", berth.RoleJanitor), lease.ReleaseParams{ID: a.Lease.ID}); berth.ErrorCodeOf(err) != berth.EForbidden {
			t.Fatalf("%s: a janitor's release: %v, want forbidden", name, err)
		}
		if _, err := eng.Heartbeat(as("job-a", berth.RoleClient), a.Lease.ID); err != nil {
			t.Fatalf("%s: the holder's heartbeat: %v", name, err)
		}
	}
	// Without authentication (no principal name), anyone with the id.
	if _, err := other.Heartbeat(context.Background(), a.Lease.ID); err != nil {
		t.Fatalf("heartbeat without authentication: %v", err)
	}
	res, err := other.Release(as("ops", berth.RoleAdmin), lease.ReleaseParams{ID: a.Lease.ID, To: berth.ReleaseFree, Reason: "stuck job"})
	if err != nil {
		t.Fatalf("admin's release: %v", err)
	}
	evs, err := f.eng.Events(context.Background(), &lease.EventListParams{Resource: res.Lease.Resource, Kind: berth.EventLease}, 0)
	if err != nil {
		t.Fatal(err)
	}
	last := evs[len(evs)-1]
	if last.Actor != "ops" || !strings.Contains(last.Message, "forced by admin ops (the lease is job-a's): stuck job") || last.Remote != "10.0.0.1:1" {
		t.Fatalf("the forced release: %+v", last)
	}
}
