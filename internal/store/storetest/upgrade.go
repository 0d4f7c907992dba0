package storetest

import (
	"context"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/store"
)

// Upgrade checks that a database an older berth left is brought up to date
// with its data intact: openOld opens it as the first schema version left
// it and writes pools, leases, a quarantined resource, a waiting request
// and their events; openNew opens the same database as this binary would
// (migrating it to version want), and everything must read back the same.
func Upgrade(t *testing.T, openOld, openNew func(t *testing.T) store.Store, want int) {
	ctx := context.Background()
	old := openOld(t)
	sync(t, old, t0, pool("vm", store.ResourceSpec{Name: "vm-1", UserData: map[string]string{"ip": "10.0.0.1"}, Labels: map[string]string{"zone": "a"}},
		store.ResourceSpec{Name: "vm-2"}), pool("gpu", names(2, "gpu-")...))
	held := mustLease(t, acquire(t, old, acq{typ: "vm", owner: "job-1", requestID: "req-1"}))
	broken := mustLease(t, acquire(t, old, acq{typ: "gpu", owner: "job-2"}))
	if _, err := old.LeaseRelease(ctx, &store.LeaseReleaseParams{ID: broken.ID, To: berth.StateQuarantined, Reason: "disk full", Now: at(time.Second)}); err != nil {
		t.Fatal(err)
	}
	mustLease(t, acquire(t, old, acq{typ: "vm", owner: "job-3"}))
	if res := acquire(t, old, acq{typ: "vm", owner: "job-4", requestID: "req-4", wait: true, waitUntil: at(time.Hour)}); res.Request == nil {
		t.Fatalf("a third vm acquire did not queue: %+v", res)
	}
	type snapshot struct {
		Pools     []*berth.Pool
		Resources []*berth.Resource
		Lease     *berth.Lease
		Request   *berth.Request
	}
	read := func(s store.Store) snapshot {
		t.Helper()
		var snap snapshot
		var err error
		if snap.Pools, err = s.PoolList(ctx); err != nil {
			t.Fatal(err)
		}
		if snap.Resources, err = s.ResourceList(ctx, &store.ResourceListParams{}); err != nil {
			t.Fatal(err)
		}
		if snap.Lease, err = s.LeaseGet(ctx, held.ID); err != nil {
			t.Fatal(err)
		}
		if snap.Request, err = s.RequestGet(ctx, &store.RequestGetParams{ID: "req-4", Now: at(30 * time.Second)}); err != nil {
			t.Fatal(err)
		}
		return snap
	}
	before := read(old)
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}

	s := openNew(t)
	if v := s.SchemaVersion(); v != want {
		t.Fatalf("schema version after the upgrade: %d, want %d", v, want)
	}
	if after := read(s); !reflect.DeepEqual(before, after) {
		t.Fatalf("data changed in the upgrade:\nbefore %+v\nafter  %+v", before, after)
	}
	if err := s.Check(ctx); err != nil {
		t.Fatalf("consistency after the upgrade: %v", err)
	}
	// The events, which a later schema may read differently (so the old
	// code cannot be asked for them): four resources added, three leases,
	// one release to quarantine, in order.
	evs, err := s.EventList(ctx, &store.EventListParams{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for i, ev := range evs {
		if i > 0 && ev.ID <= evs[i-1].ID {
			t.Fatalf("event ids out of order after the upgrade: %d then %d", evs[i-1].ID, ev.ID)
		}
		got = append(got, ev.Reason+":"+ev.Resource)
	}
	wantEvents := []string{"added:vm-1", "added:vm-2", "added:gpu-1", "added:gpu-2", "acquired:vm-1", "acquired:gpu-1", "released:gpu-1", "acquired:vm-2"}
	if !slices.Equal(got, wantEvents) {
		t.Fatalf("events after the upgrade: %v, want %v", got, wantEvents)
	}
	// And the upgraded store works: the held lease can be released, and
	// goes to the waiting request.
	rel, err := s.LeaseRelease(ctx, &store.LeaseReleaseParams{ID: held.ID, To: berth.StateFree, Now: at(30 * time.Second), HandoffTTL: ttl})
	if err != nil || rel.Handoff == nil || rel.Handoff.RequestID != "req-4" {
		t.Fatalf("release after the upgrade: %+v, %v; want a handoff to req-4", rel, err)
	}
}
