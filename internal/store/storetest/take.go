package storetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	goSync "sync"
	"testing"
	"time"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/store"
)

// The take cases (issue 6): leasing by state as the Boskos-compatible API
// does, with its rank queue, all-or-nothing takes by name, user data
// merged by heartbeats, releases to states of a client's own, and pools
// whose resources start in a state other than free.
var takeCases = []struct {
	name string
	fn   func(t *testing.T, s store.Store)
}{
	{"TakeByState", testTakeByState},
	{"TakeRankQueue", testTakeRankQueue},
	{"TakeRequestExpires", testTakeRequestExpires},
	{"TakeRetryGetsSameLease", testTakeRetry},
	{"TakeNamesAllOrNothing", testTakeNames},
	{"TakeSkipsUnleasable", testTakeSkipsUnleasable},
	{"TakeToCleaningIsClean", testTakeToCleaning},
	{"TakeRacesTake", testTakeRacesTake},
	{"HeartbeatMergesUserData", testHeartbeatUserData},
	{"ReleaseAnyKindToOwnState", testReleaseAnyKind},
	{"InitialState", testInitialState},
	{"AddBoundedByMaxTotal", testAddBounded},
	{"AddBoundedRace", testAddBoundedRace},
	{"ResourceSetState", testResourceSetState},
	{"TakeJoined", testTakeJoined},
	{"UnclaimedHandoffGoesFree", testUnclaimedHandoffGoesFree},
	{"AcquireToOwnState", testAcquireToOwnState},
	{"HeartbeatUserDataBounded", testHeartbeatUserDataBounded},
}

func takeP(typ string, from, to berth.State, owner string, now time.Time) *store.LeaseTakeParams {
	return &store.LeaseTakeParams{Type: typ, From: from, To: to, Owner: owner, LeaseTTL: ttl, Now: now, WaitUntil: now.Add(30 * time.Second), Actor: owner}
}

func mustTake(t *testing.T, s store.Store, p *store.LeaseTakeParams) *store.LeaseTakeResult {
	t.Helper()
	res, err := s.LeaseTake(context.Background(), p)
	if err != nil {
		t.Fatalf("LeaseTake(%+v): %v", p, err)
	}
	return res
}

// initialPool is a pool whose new resources start in state.
func initialPool(typ string, state berth.State, rs ...store.ResourceSpec) store.PoolPolicy {
	p := pool(typ, rs...)
	p.Janitor = "external"
	p.InitialState = state
	return p
}

func testTakeByState(t *testing.T, s store.Store) {
	sync(t, s, t0, initialPool("p", "toBeChecked", names(2, "r")...))
	if res := mustTake(t, s, takeP("p", berth.StateFree, berth.StateBusy, "job", at(time.Second))); len(res.Leases) != 0 {
		t.Fatalf("took %v from free, where nothing is", res.Resources[0].Name)
	}
	res := mustTake(t, s, takeP("p", "toBeChecked", "checking", "job", at(time.Second)))
	if len(res.Leases) != 1 {
		t.Fatalf("took %d resources, want 1", len(res.Leases))
	}
	l, r := res.Leases[0], res.Resources[0]
	if r.Name != "r1" || r.State != "checking" || r.Owner != "job" || r.LeaseID != l.ID || l.Kind != berth.LeaseUse {
		t.Fatalf("took %+v under %+v; want r1 (the older) checking under a use lease", r, l)
	}
	if got := get(t, s, "r1"); got.State != "checking" || got.LeaseID != l.ID {
		t.Fatalf("stored r1 = %+v", got)
	}
	evs, err := s.EventList(context.Background(), &store.EventListParams{Resource: "r1", Kind: berth.EventLease})
	if err != nil || len(evs) != 1 || evs[0].From != "toBeChecked" || evs[0].To != "checking" || evs[0].Token != l.Token {
		t.Fatalf("lease events of r1 = %+v, %v", evs, err)
	}
	// Released to a state of the client's own; then taken from it.
	rel, err := s.LeaseRelease(context.Background(), &store.LeaseReleaseParams{ID: l.ID, To: "checked", Now: at(2 * time.Second)})
	if err != nil || rel.Resource.State != "checked" || rel.Resource.Owner != "" {
		t.Fatalf("release to checked: %+v, %v", rel, err)
	}
	if res := mustTake(t, s, takeP("p", "checked", berth.StateBusy, "job2", at(3*time.Second))); len(res.Leases) != 1 || res.Resources[0].State != berth.StateBusy {
		t.Fatalf("take from checked: %+v", res)
	}
}

func testTakeRankQueue(t *testing.T, s store.Store) {
	sync(t, s, t0, initialPool("p", "ready", names(1, "r")...))
	// A queue of two: "a" first, then "b". One resource serves "a" only.
	a := takeP("p", "ready", "held", "ja", at(time.Second))
	a.RequestID = "req-a"
	b := takeP("p", "ready", "held", "jb", at(2*time.Second))
	b.RequestID = "req-b"
	// r1 is ready: a takes it at once.
	if res := mustTake(t, s, a); len(res.Leases) != 1 {
		t.Fatalf("a took nothing: %+v", res)
	}
	if res := mustTake(t, s, b); len(res.Leases) != 0 || res.Rank != 1 {
		t.Fatalf("b: %+v; want nothing taken, rank 1", res)
	}
	c := takeP("p", "ready", "held", "jc", at(3*time.Second))
	c.RequestID = "req-c"
	if res := mustTake(t, s, c); res.Rank != 2 {
		t.Fatalf("c: rank %d, want 2", res.Rank)
	}
	// Without a request id, a call ranks behind the whole queue.
	if res := mustTake(t, s, takeP("p", "ready", "held", "jx", at(3*time.Second))); res.Rank != 3 {
		t.Fatalf("call without id: rank %d, want 3", res.Rank)
	}
	// One resource back: c polls first but ranks 2, so it is not served;
	// b, rank 1, is.
	sync(t, s, at(4*time.Second), initialPool("p", "ready", names(2, "r")...))
	c.Now = at(5 * time.Second)
	if res := mustTake(t, s, c); len(res.Leases) != 0 || res.Rank != 2 {
		t.Fatalf("c with one candidate: %+v; want rank 2, nothing", res)
	}
	b.Now = at(6 * time.Second)
	res := mustTake(t, s, b)
	if len(res.Leases) != 1 || res.Resources[0].Name != "r2" {
		t.Fatalf("b: %+v; want r2", res)
	}
	// b left the queue: c is first now.
	c.Now = at(7 * time.Second)
	if res := mustTake(t, s, c); res.Rank != 1 {
		t.Fatalf("c after b was served: rank %d, want 1", res.Rank)
	}
}

func testTakeRequestExpires(t *testing.T, s store.Store) {
	sync(t, s, t0, initialPool("p", "ready"))
	a := takeP("p", "ready", "held", "ja", at(time.Second))
	a.RequestID, a.WaitUntil = "req-a", at(10*time.Second)
	mustTake(t, s, a)
	b := takeP("p", "ready", "held", "jb", at(2*time.Second))
	b.RequestID = "req-b"
	if res := mustTake(t, s, b); res.Rank != 2 {
		t.Fatalf("b: rank %d, want 2", res.Rank)
	}
	// a stops polling: past its hold, it no longer counts ahead of b.
	b.Now = at(11 * time.Second)
	if res := mustTake(t, s, b); res.Rank != 1 {
		t.Fatalf("b after a expired: rank %d, want 1", res.Rank)
	}
	// a comes back: it lost its place and joins behind b.
	a.Now, a.WaitUntil = at(12*time.Second), at(40*time.Second)
	if res := mustTake(t, s, a); res.Rank != 2 {
		t.Fatalf("a back after expiry: rank %d, want 2", res.Rank)
	}
	if n, err := s.RequestPrune(context.Background(), at(41*time.Second)); err != nil || n != 2 {
		t.Fatalf("RequestPrune = %d, %v; want both requests pruned", n, err)
	}
}

func testTakeRetry(t *testing.T, s store.Store) {
	sync(t, s, t0, initialPool("p", "ready", names(2, "r")...))
	p := takeP("p", "ready", "held", "job", at(time.Second))
	p.RequestID = "req"
	first := mustTake(t, s, p)
	p.Now = at(2 * time.Second)
	again := mustTake(t, s, p)
	if len(first.Leases) != 1 || len(again.Leases) != 1 || again.Leases[0].ID != first.Leases[0].ID {
		t.Fatalf("retry: %+v, then %+v; want the same lease", first.Leases, again.Leases)
	}
	other := *p
	other.Owner = "someone-else"
	if _, err := s.LeaseTake(context.Background(), &other); !isField(err, "request_id") {
		t.Fatalf("take with another owner's request id: %v; want a request_id field error", err)
	}
}

func isField(err error, field string) bool {
	var be *berth.Error
	return errors.As(err, &be) && be.Field == field
}

func testTakeNames(t *testing.T, s store.Store) {
	sync(t, s, t0, pool("p", names(3, "r")...))
	l := mustLease(t, acquire(t, s, acq{typ: "p"})) // r1
	p := takeP("", berth.StateFree, berth.StateBusy, "job", at(time.Second))
	p.Names = []string{"r2", l.Resource, "r3"}
	if res := mustTake(t, s, p); len(res.Leases) != 0 {
		t.Fatalf("took %d with one of them leased; want none", len(res.Leases))
	}
	for _, n := range []string{"r2", "r3"} {
		if r := get(t, s, n); r.State != berth.StateFree || r.LeaseID != "" {
			t.Fatalf("%s after a refused take: %+v", n, r)
		}
	}
	p.Names = []string{"r3", "r2"}
	res := mustTake(t, s, p)
	if len(res.Leases) != 2 || res.Resources[0].Name != "r3" || res.Resources[1].Name != "r2" || res.Leases[0].ID == res.Leases[1].ID {
		t.Fatalf("take r3, r2: %+v", res)
	}
	p.Names = []string{"nope"}
	if res := mustTake(t, s, p); len(res.Leases) != 0 {
		t.Fatalf("took a resource that does not exist: %+v", res)
	}
}

func testTakeSkipsUnleasable(t *testing.T, s store.Store) {
	sync(t, s, t0, pool("p", names(2, "r")...))
	if _, err := s.ResourceDrain(context.Background(), &store.ResourceDrainParams{Name: "r1", Drain: true, Reason: "x", Now: at(time.Second)}); err != nil {
		t.Fatal(err)
	}
	res := mustTake(t, s, takeP("p", berth.StateFree, "held", "job", at(2*time.Second)))
	if len(res.Leases) != 1 || res.Resources[0].Name != "r2" {
		t.Fatalf("take with r1 drained: %+v; want r2", res)
	}
	if res := mustTake(t, s, takeP("p", berth.StateFree, "held", "job", at(3*time.Second))); len(res.Leases) != 0 {
		t.Fatalf("took the drained r1: %+v", res)
	}
	p := takeP("", berth.StateFree, "held", "job", at(3*time.Second))
	p.Names = []string{"r1"}
	if res := mustTake(t, s, p); len(res.Leases) != 0 {
		t.Fatalf("took the drained r1 by name: %+v", res)
	}
}

func testTakeToCleaning(t *testing.T, s store.Store) {
	sync(t, s, t0, initialPool("p", berth.StateDirty, names(1, "r")...))
	res := mustTake(t, s, takeP("p", berth.StateDirty, berth.StateCleaning, "janitor", at(time.Second)))
	if len(res.Leases) != 1 || res.Leases[0].Kind != berth.LeaseClean {
		t.Fatalf("take dirty to cleaning: %+v; want a clean lease", res)
	}
	// It ends as any cleaning does.
	end := cleanEnd(t, s, store.CleanEndParams{ID: res.Leases[0].ID, OK: true, Now: at(2 * time.Second)})
	if end.Resource.State != berth.StateFree {
		t.Fatalf("cleaned: %+v", end.Resource)
	}
}

func testTakeRacesTake(t *testing.T, s store.Store) {
	sync(t, s, t0, initialPool("p", "ready", names(3, "r")...))
	const n = 8
	var (
		wg  goSync.WaitGroup
		mu  goSync.Mutex
		got = map[string]int{}
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := takeP("p", "ready", "held", "job", at(time.Second))
			if i%2 == 0 {
				p.Type, p.Names = "", []string{"r1", "r2"}
			}
			res, err := s.LeaseTake(context.Background(), p)
			if err != nil {
				t.Errorf("LeaseTake: %v", err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			for _, r := range res.Resources {
				got[r.Name]++
			}
		}()
	}
	wg.Wait()
	for name, c := range got {
		if c > 1 {
			t.Errorf("%s taken %d times", name, c)
		}
	}
}

func testHeartbeatUserData(t *testing.T, s store.Store) {
	sync(t, s, t0, pool("p", store.ResourceSpec{Name: "r1", UserData: map[string]string{"zone": "a", "keep": "1"}}))
	l := mustLease(t, acquire(t, s, acq{typ: "p"}))
	hb, err := s.LeaseHeartbeat(context.Background(), &store.LeaseHeartbeatParams{ID: l.ID, Now: at(time.Second),
		UserData: map[string]string{"zone": "", "cluster": "c1"}})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"keep": "1", "cluster": "c1"}
	if !mapsEqual(hb.Resource.UserData, want) || !mapsEqual(get(t, s, "r1").UserData, want) {
		t.Fatalf("user data after merge: %v (stored %v); want %v", hb.Resource.UserData, get(t, s, "r1").UserData, want)
	}
	if !hb.Lease.ExpiresAt.Equal(at(time.Second).Add(ttl)) {
		t.Fatalf("lease expires %s; want extended", hb.Lease.ExpiresAt)
	}
	// A sync keeps what the holder set.
	sync(t, s, at(2*time.Second), pool("p", store.ResourceSpec{Name: "r1", UserData: map[string]string{"keep": "1"}}))
	if ud := get(t, s, "r1").UserData; ud["cluster"] != "c1" {
		t.Fatalf("user data after a sync: %v", ud)
	}
	// A lost lease merges nothing.
	if _, err := s.LeaseHeartbeat(context.Background(), &store.LeaseHeartbeatParams{ID: l.ID, Now: at(time.Hour),
		UserData: map[string]string{"late": "x"}}); !errors.Is(err, store.ErrLeaseEnded) {
		t.Fatalf("late heartbeat: %v", err)
	}
	if ud := get(t, s, "r1").UserData; ud["late"] != "" {
		t.Fatalf("a lost lease's heartbeat changed user data: %v", ud)
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func testReleaseAnyKind(t *testing.T, s store.Store) {
	sync(t, s, t0, initialPool("p", "toBeDeleted", names(1, "r")...))
	res := mustTake(t, s, takeP("p", "toBeDeleted", berth.StateCleaning, "cleaner", at(time.Second)))
	id := res.Leases[0].ID
	if _, err := s.LeaseRelease(context.Background(), &store.LeaseReleaseParams{ID: id, To: "tombstone", Now: at(2 * time.Second)}); err == nil {
		t.Fatal("a cleaning lease was released without AnyKind")
	}
	rel, err := s.LeaseRelease(context.Background(), &store.LeaseReleaseParams{ID: id, To: "tombstone", AnyKind: true, Now: at(2 * time.Second)})
	if err != nil || rel.Resource.State != "tombstone" || rel.Lease.Status != berth.LeaseReleased {
		t.Fatalf("release with AnyKind: %+v, %v", rel, err)
	}
}

func testInitialState(t *testing.T, s store.Store) {
	// A waiter for the pool must not be handed a resource that starts
	// dirty.
	sync(t, s, t0, initialPool("p", berth.StateDirty))
	req := acquire(t, s, acq{typ: "p", requestID: "w", wait: true})
	if req.Request == nil {
		t.Fatalf("acquire from an empty pool: %+v", req)
	}
	res := sync(t, s, at(time.Second), initialPool("p", berth.StateDirty, names(1, "r")...))
	if len(res.Handoffs) != 0 {
		t.Fatalf("handed a dirty resource to a waiter: %+v", res.Handoffs)
	}
	if r := get(t, s, "r1"); r.State != berth.StateDirty {
		t.Fatalf("new resource is %s, want dirty", r.State)
	}
	// Cleaned, it goes to the waiter.
	c := mustClaim(t, s, "p", at(2*time.Second))
	end := cleanEnd(t, s, store.CleanEndParams{ID: c.Lease.ID, OK: true, Now: at(3 * time.Second)})
	if end.Handoff == nil || end.Handoff.RequestID != "w" {
		t.Fatalf("cleaned: handoff %+v; want to w", end.Handoff)
	}
}

func testAddBounded(t *testing.T, s store.Store) {
	ctx := context.Background()
	sync(t, s, t0, initialPool("p", berth.StateDirty, names(1, "r")...))
	// A waiter must not get a resource that starts dirty.
	if req := acquire(t, s, acq{typ: "p", requestID: "w", wait: true}); req.Request == nil {
		t.Fatalf("acquire: %+v", req)
	}
	add := func(name string, max int) (*store.ResourceChangeResult, error) {
		return s.ResourceAdd(ctx, &store.ResourceAddParams{Type: "p", Spec: store.ResourceSpec{Name: name}, Source: berth.SourceDynamic,
			State: berth.StateDirty, MaxTotal: max, HandoffTTL: ttl, Actor: "t", Now: at(time.Second)})
	}
	res, err := add("d1", 2)
	if err != nil || res.Resource.State != berth.StateDirty || len(res.Handoffs) != 0 {
		t.Fatalf("add d1: %+v, %v; want dirty, no handoff", res, err)
	}
	if _, err := add("d2", 2); !errors.Is(err, store.ErrPoolFull) {
		t.Fatalf("add d2 to a full pool: %v; want ErrPoolFull", err)
	}
	if _, err := s.ResourceGet(ctx, "d2"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("d2 was added to a full pool: %v", err)
	}
	evs, err := s.EventList(ctx, &store.EventListParams{Resource: "d1"})
	if err != nil || len(evs) != 1 || evs[0].To != string(berth.StateDirty) || evs[0].Reason != store.ReasonProvisioned {
		t.Fatalf("events of d1: %+v, %v", evs, err)
	}
}

func testAddBoundedRace(t *testing.T, s store.Store) {
	sync(t, s, t0, initialPool("p", berth.StateFree))
	var wg goSync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.ResourceAdd(context.Background(), &store.ResourceAddParams{Type: "p", Spec: store.ResourceSpec{Name: fmt.Sprintf("d%d", i)},
				Source: berth.SourceDynamic, MaxTotal: 3, HandoffTTL: ttl, Actor: "t", Now: at(time.Second)})
			if err != nil && !errors.Is(err, store.ErrPoolFull) {
				t.Errorf("add: %v", err)
			}
		}()
	}
	wg.Wait()
	rs, err := s.ResourceList(context.Background(), &store.ResourceListParams{Type: "p"})
	if err != nil || len(rs) != 3 {
		t.Fatalf("%d resources after 8 racing adds bounded by 3 (%v)", len(rs), err)
	}
}

func testResourceSetState(t *testing.T, s store.Store) {
	ctx := context.Background()
	sync(t, s, t0, initialPool("p", "ready", names(2, "r")...))
	l := mustTake(t, s, takeP("p", "ready", "held", "job", at(time.Second))).Leases[0]
	set := func(name string, from, to berth.State) (*berth.Resource, error) {
		return s.ResourceSetState(ctx, &store.ResourceSetStateParams{Name: name, From: from, To: to, Reason: "expired", Message: "old",
			Actor: "t", Now: at(2 * time.Second)})
	}
	if _, err := set(l.Resource, "held", "toBeDeleted"); !errors.Is(err, store.ErrStateChanged) {
		t.Fatalf("set state of a leased resource: %v; want ErrStateChanged", err)
	}
	if _, err := set("r2", "free", "toBeDeleted"); !errors.Is(err, store.ErrStateChanged) {
		t.Fatalf("set state from the wrong state: %v; want ErrStateChanged", err)
	}
	r, err := set("r2", "ready", "toBeDeleted")
	if err != nil || r.State != "toBeDeleted" || r.StateReason != "old" {
		t.Fatalf("set state: %+v, %v", r, err)
	}
	if _, err := set("r2", "toBeDeleted", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ResourceGet(ctx, "r2"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("removed r2 is still there: %v", err)
	}
	if _, err := set("nope", "ready", ""); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("set state of no resource: %v", err)
	}
	evs, err := s.EventList(ctx, &store.EventListParams{Resource: "r2", Kind: berth.EventProvision})
	if err != nil || len(evs) != 2 || evs[0].To != "toBeDeleted" || evs[1].From != "toBeDeleted" || evs[1].To != "" {
		t.Fatalf("events of r2: %+v, %v", evs, err)
	}
}

func testTakeJoined(t *testing.T, s store.Store) {
	sync(t, s, t0, initialPool("p", "ready"))
	p := takeP("p", "ready", "held", "job", at(time.Second))
	p.RequestID = "req"
	if res := mustTake(t, s, p); !res.Joined {
		t.Fatalf("first call: %+v; want joined", res)
	}
	p.Now = at(2 * time.Second)
	if res := mustTake(t, s, p); res.Joined {
		t.Fatalf("second call: %+v; want not joined again", res)
	}
	// berth's own queue says the same, even for a call at the same time.
	if res := acquire(t, s, acq{typ: "p", requestID: "w", wait: true}); !res.Joined {
		t.Fatalf("first acquire: %+v; want joined", res)
	}
	if res := acquire(t, s, acq{typ: "p", requestID: "w", wait: true}); res.Joined || res.Request == nil {
		t.Fatalf("second acquire: %+v; want queued, not joined again", res)
	}
}

// testUnclaimedHandoffGoesFree: a resource handed to a waiter that never
// comes for it was never used. When that lease runs out, the resource is
// free again and goes to the next waiter, not to dirty as a job's
// expired lease would send it. A handoff that was claimed expires as any
// lease does.
func testUnclaimedHandoffGoesFree(t *testing.T, s store.Store) {
	ctx := context.Background()
	p := pool("p", names(1, "r")...)
	p.Janitor = "external"
	sync(t, s, t0, p)
	l := mustLease(t, acquire(t, s, acq{typ: "p", owner: "holder"}))
	acquire(t, s, acq{typ: "p", owner: "job-gone", requestID: "gone", wait: true, now: at(time.Second), waitUntil: at(20 * time.Second)})
	acquire(t, s, acq{typ: "p", owner: "job-next", requestID: "next", wait: true, now: at(2 * time.Second), waitUntil: at(time.Hour)})
	rel := release(t, s, l.ID, berth.StateFree, at(5*time.Second))
	if rel.Handoff == nil || rel.Handoff.RequestID != "gone" {
		t.Fatalf("release handed off to %+v, want gone", rel.Handoff)
	}
	// "gone" never polls again: its lease lasts no longer than its request.
	dirty := func(string) store.Outcome { return store.Outcome{To: berth.StateDirty, HandoffTTL: ttl} }
	exp, err := s.LeaseRelease(ctx, &store.LeaseReleaseParams{ID: rel.Handoff.LeaseID, Decide: dirty, Expired: true, Actor: "reaper",
		Reason: "no heartbeat", Now: at(21 * time.Second), HandoffTTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	if exp.Lease.Status != berth.LeaseExpired || exp.Handoff == nil || exp.Handoff.RequestID != "next" {
		t.Fatalf("unclaimed handoff ran out: %+v, handoff %+v; want it expired and r1 handed to next", exp.Lease, exp.Handoff)
	}
	if r := get(t, s, "r1"); r.Owner != "job-next" || r.State != berth.StateBusy {
		t.Fatalf("r1 = %+v, want busy for job-next", r)
	}
	evs, err := s.EventList(ctx, &store.EventListParams{Resource: "r1", Kind: berth.EventLease, Desc: true, Limit: 2})
	if err != nil || len(evs) != 2 || evs[1].To != string(berth.StateFree) || evs[1].Reason != string(berth.LeaseExpired) ||
		!strings.Contains(evs[1].Message, "did not come for it") {
		t.Fatalf("events = %+v, %v; want the unclaimed lease's end, to free, saying why", evs, err)
	}
	// "next" claims its lease; if it then stops heartbeating, the
	// resource goes the way of any expired lease: dirty.
	claimed := mustLease(t, acquire(t, s, acq{typ: "p", owner: "job-next", requestID: "next", wait: true, now: at(22 * time.Second)}))
	end, err := s.LeaseRelease(ctx, &store.LeaseReleaseParams{ID: claimed.ID, Decide: dirty, Expired: true, Actor: "reaper",
		Reason: "no heartbeat", Now: at(22*time.Second + ttl), HandoffTTL: ttl})
	if err != nil || end.Resource == nil || end.Resource.State != berth.StateDirty {
		t.Fatalf("claimed handoff ran out: %+v, %v; want r1 dirty", end, err)
	}
	if err := s.Check(ctx); err != nil {
		t.Fatal(err)
	}
}

// testAcquireToOwnState: an acquire may move the resource to a state of
// the client's own (a Boskos "dest"), at once or through the queue, which
// it shares with acquires to busy: first come, first served.
func testAcquireToOwnState(t *testing.T, s store.Store) {
	ctx := context.Background()
	p := pool("p", names(1, "r")...)
	p.Janitor = "external"
	sync(t, s, t0, p)
	own := func(owner, id string, now time.Time) *store.LeaseAcquireResult {
		t.Helper()
		res, err := s.LeaseAcquire(ctx, &store.LeaseAcquireParams{Type: "p", Owner: owner, RequestID: id, To: "leased",
			Wait: id != "", WaitUntil: now.Add(time.Minute), LeaseTTL: ttl, Now: now, Actor: owner})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	first := own("ja", "", at(time.Second))
	if first.Lease == nil || first.Resource.State != "leased" || first.Resource.Owner != "ja" {
		t.Fatalf("acquire to leased: %+v", first)
	}
	// The queue: "own" to leased, then "busy" to busy.
	if res := own("jo", "own", at(2*time.Second)); res.Request == nil || res.Request.Position != 1 {
		t.Fatalf("own queued: %+v", res)
	}
	if res := acquire(t, s, acq{typ: "p", owner: "jb", requestID: "busy", wait: true, now: at(3 * time.Second)}); res.Request == nil || res.Request.Position != 2 {
		t.Fatalf("busy queued: %+v", res)
	}
	rel := release(t, s, first.Lease.ID, berth.StateFree, at(4*time.Second))
	if rel.Handoff == nil || rel.Handoff.RequestID != "own" || rel.Resource.State != "leased" {
		t.Fatalf("release handed to %+v, resource %+v; want own, leased", rel.Handoff, rel.Resource)
	}
	got := own("jo", "own", at(5*time.Second))
	if got.Lease == nil || got.Lease.ID != rel.Handoff.LeaseID || got.Resource.State != "leased" {
		t.Fatalf("own's claim: %+v", got)
	}
	rel = release(t, s, got.Lease.ID, berth.StateFree, at(6*time.Second))
	if rel.Handoff == nil || rel.Handoff.RequestID != "busy" || rel.Resource.State != berth.StateBusy {
		t.Fatalf("second release handed to %+v, resource %+v; want busy, busy", rel.Handoff, rel.Resource)
	}
	if err := s.Check(ctx); err != nil {
		t.Fatal(err)
	}
}

// testHeartbeatUserDataBounded: updates merged into a resource's user data
// cannot grow it past its bounds; the refused one changes nothing, not
// even the lease's expiry.
func testHeartbeatUserDataBounded(t *testing.T, s store.Store) {
	ctx := context.Background()
	sync(t, s, t0, pool("p", names(1, "r")...))
	l := mustLease(t, acquire(t, s, acq{typ: "p"}))
	big := map[string]string{}
	for i := range store.MaxUserDataKeys {
		big[fmt.Sprintf("k%d", i)] = "v"
	}
	if _, err := s.LeaseHeartbeat(ctx, &store.LeaseHeartbeatParams{ID: l.ID, Now: at(time.Second), UserData: big, UserDataField: "userdata"}); err != nil {
		t.Fatal(err)
	}
	more := map[string]string{"one-too-many": "v"}
	_, err := s.LeaseHeartbeat(ctx, &store.LeaseHeartbeatParams{ID: l.ID, Now: at(2 * time.Second), UserData: more, UserDataField: "userdata"})
	var be *berth.Error
	if !errors.As(err, &be) || be.Code != berth.EInvalid || be.Field != "userdata" {
		t.Fatalf("257th key: %v, want an invalid userdata error", err)
	}
	// Deleting one key makes room for another.
	more[fmt.Sprintf("k%d", 0)] = ""
	if _, err := s.LeaseHeartbeat(ctx, &store.LeaseHeartbeatParams{ID: l.ID, Now: at(3 * time.Second), UserData: more, UserDataField: "userdata"}); err != nil {
		t.Fatalf("swap a key: %v", err)
	}
	huge := map[string]string{"a": strings.Repeat("x", store.MaxUserDataBytes)}
	if _, err := s.LeaseHeartbeat(ctx, &store.LeaseHeartbeatParams{ID: l.ID, Now: at(4 * time.Second), UserData: huge, UserDataField: "userdata"}); !errors.As(err, &be) || be.Code != berth.EInvalid {
		t.Fatalf("a megabyte more: %v, want invalid", err)
	}
	got, err := s.LeaseGet(ctx, l.ID)
	if err != nil || !got.ExpiresAt.Equal(at(3*time.Second).Add(ttl)) {
		t.Fatalf("lease after the refused update: %+v, %v; want the expiry of the last good heartbeat", got, err)
	}
	if r := get(t, s, "r1"); len(r.UserData) != store.MaxUserDataKeys || r.UserData["one-too-many"] != "v" || r.UserData["k0"] != "" {
		t.Fatalf("user data has %d keys", len(r.UserData))
	}
	// A resource that is over the bounds already (the store does not
	// check what a config gives it) still takes heartbeats and deletions:
	// only growth is refused.
	over := map[string]string{}
	for i := range store.MaxUserDataKeys + 10 {
		over[fmt.Sprintf("k%d", i)] = "v"
	}
	sync(t, s, at(5*time.Second), pool("p", store.ResourceSpec{Name: "r1"}), pool("q", store.ResourceSpec{Name: "big", UserData: over}))
	bl := mustLease(t, acquire(t, s, acq{typ: "q", now: at(6 * time.Second)}))
	for i, ud := range []map[string]string{{}, {"k0": ""}, {"k1": "w"}} {
		if _, err := s.LeaseHeartbeat(ctx, &store.LeaseHeartbeatParams{ID: bl.ID, Now: at(7 * time.Second), UserData: ud, UserDataField: "userdata"}); err != nil {
			t.Fatalf("update %d of a resource over the bounds that does not grow it: %v", i, err)
		}
	}
	if _, err := s.LeaseHeartbeat(ctx, &store.LeaseHeartbeatParams{ID: bl.ID, Now: at(8 * time.Second), UserData: map[string]string{"new": "v"}, UserDataField: "userdata"}); !errors.As(err, &be) {
		t.Fatalf("growing it: %v, want invalid", err)
	}
}
