package storetest

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/store"
)

// Upgrade checks that a database an older berth left is brought up to date
// with its data intact. The store's test makes a database at the first
// schema version and loads into it the rows that berth wrote at that
// version (testdata/v1-data.sql: pools, leases, a quarantined resource, a
// waiting request and their events, dumped from the commit it names);
// snapshot is what that berth read back from them (testdata/
// v1-snapshot.json). openNew opens the database as this binary would
// (migrating it to version want), and everything must read back the same.
// The fixtures are data, not code, because code of today cannot write a
// database of yesterday's schema.
func Upgrade(t *testing.T, snapshot []byte, openNew func(t *testing.T) store.Store, want int) {
	ctx := context.Background()
	type snap struct {
		Pools     []*berth.Pool
		Resources []*berth.Resource
		Lease     *berth.Lease
		Request   *berth.Request
	}
	var fixture struct {
		HeldLease string `json:"heldLease"`
		Snapshot  snap   `json:"snapshot"`
	}
	if err := json.Unmarshal(snapshot, &fixture); err != nil {
		t.Fatalf("read the snapshot fixture: %v", err)
	}
	before, held := fixture.Snapshot, fixture.HeldLease
	read := func(s store.Store) snap {
		t.Helper()
		var snap snap
		var err error
		if snap.Pools, err = s.PoolList(ctx); err != nil {
			t.Fatal(err)
		}
		if snap.Resources, err = s.ResourceList(ctx, &store.ResourceListParams{}); err != nil {
			t.Fatal(err)
		}
		if snap.Lease, err = s.LeaseGet(ctx, held); err != nil {
			t.Fatal(err)
		}
		if snap.Request, err = s.RequestGet(ctx, &store.RequestGetParams{ID: "req-4", Now: at(30 * time.Second)}); err != nil {
			t.Fatal(err)
		}
		return snap
	}

	s := openNew(t)
	if v := s.SchemaVersion(); v != want {
		t.Fatalf("schema version after the upgrade: %d, want %d", v, want)
	}
	after := read(s)
	// Fields later versions added: the old berth had no health counts.
	for _, p := range after.Pools {
		n := 0
		for _, c := range p.Health {
			n += c
		}
		if n != p.Total || p.Health[berth.HealthUnknown] != p.Total || p.Leasable != p.States[berth.StateFree] || p.Leased != p.States[berth.StateBusy] {
			t.Fatalf("pool %s after the upgrade: health %v, %d leasable, %d leased, of %d (%v)", p.Type, p.Health, p.Leasable, p.Leased, p.Total, p.States)
		}
		p.Health, p.Leasable, p.Leased = nil, 0, 0
	}
	// Fields of issue 5: resources the old berth had came from its
	// config and joined the store at their last change as far as anyone
	// can tell; its leases were all for use.
	for _, r := range before.Resources {
		r.Source = berth.SourceConfig
		at := r.StateChangedAt
		r.CreatedAt = &at
	}
	before.Lease.Kind = berth.LeaseUse
	// Compared as JSON: what clients see must not change.
	if b, a := mustJSON(t, before), mustJSON(t, after); b != a {
		t.Fatalf("data changed in the upgrade:\nbefore %s\nafter  %s", b, a)
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
	rel, err := s.LeaseRelease(ctx, &store.LeaseReleaseParams{ID: held, To: berth.StateFree, Now: at(30 * time.Second), HandoffTTL: ttl})
	if err != nil || rel.Handoff == nil || rel.Handoff.RequestID != "req-4" {
		t.Fatalf("release after the upgrade: %+v, %v; want a handoff to req-4", rel, err)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
