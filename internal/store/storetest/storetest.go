// Package storetest is the conformance suite every store.Store must pass.
// Each case gets a fresh store, runs in parallel with the others, and ends
// with the store's own consistency check.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	goSync "sync"
	"testing"
	"time"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/store"
)

// Factory returns a fresh, empty store for one test. It registers its own
// cleanup with t.
type Factory func(t *testing.T) store.Store

// t0 is the suite's fixed "now"; every call passes time explicitly.
var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

const ttl = time.Minute

// Run runs every case against stores made by newStore.
func Run(t *testing.T, newStore Factory) {
	cases := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"SyncAddsResources", testSyncAdds},
		{"SyncReconciles", testSyncReconciles},
		{"SyncRetiresLeased", testSyncRetiresLeased},
		{"AcquireLeastRecentlyUsed", testAcquireLRU},
		{"AcquireTokensIncrease", testTokensIncrease},
		{"AcquireExhausted", testAcquireExhausted},
		{"AcquireSelector", testAcquireSelector},
		{"AcquireIdempotent", testAcquireIdempotent},
		{"AcquireIdempotentAfterExpiry", testAcquireIdempotentAfterExpiry},
		{"ClaimOnlyTakesNothing", testClaimOnly},
		{"SyncFreesDirtyWithoutJanitor", testSyncFreesDirty},
		{"SyncMovesLeasedResource", testSyncMovesLeased},
		{"ReleaseMovedToWaiterOfNewPool", testReleaseMovedToWaiter},
		{"SyncMovesFreeToWaiterOfNewPool", testSyncMovesFreeToWaiter},
		{"RequestShorten", testRequestShorten},
		{"RequestIDServedOnce", testRequestIDServedOnce},
		{"QueuePositions", testQueuePositions},
		{"QueueKeepsPlace", testQueueKeepsPlace},
		{"QueueExpiredLosesPlace", testQueueExpiredLosesPlace},
		{"HandoffOrder", testHandoffOrder},
		{"HandoffSelector", testHandoffSelector},
		{"HandoffBoundedByRequest", testHandoffBounded},
		{"HandoffOnSync", testHandoffOnSync},
		{"Heartbeat", testHeartbeat},
		{"ReleaseTwice", testReleaseTwice},
		{"ReleaseTargets", testReleaseTargets},
		{"ExpireRacesHeartbeat", testExpireRacesHeartbeat},
		{"ListExpired", testListExpired},
		{"RequestCancelAndPrune", testRequestCancelPrune},
		{"Events", testEvents},
		{"PoolList", testPoolList},
		{"NotFound", testNotFound},
		{"ReleaseRacesEnqueue", testReleaseRacesEnqueue},
		{"ReleaseRacesRelease", testReleaseRacesRelease},
		{"ParallelCycles", testParallelCycles},
		{"ResourceListPages", testResourceListPages},
		{"HandoffRacesRetry", testHandoffRacesRetry},
		{"HandoffRacesRepoll", testHandoffRacesRepoll},
		{"HealthGatesAcquire", testHealthGatesAcquire},
		{"HealthTransitions", testHealthTransitions},
		{"HealthHandsToWaiter", testHealthHandsToWaiter},
		{"HealthPolicySync", testHealthPolicySync},
		{"HealthWritesDoNotHideResources", testHealthWritesDoNotHideResources},
		{"HealthReprobe", testHealthReprobe},
	}
	for _, c := range append(append(append(cases, lifecycleCases...), takeCases...), authCases...) {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			s := newStore(t)
			t.Cleanup(func() {
				if err := s.Check(context.Background()); err != nil {
					t.Errorf("store consistency check failed after the test:\n%v", err)
				}
			})
			c.fn(t, s)
		})
	}
}

func at(d time.Duration) time.Time { return t0.Add(d) }

func names(n int, prefix string) []store.ResourceSpec {
	out := make([]store.ResourceSpec, n)
	for i := range out {
		out[i] = store.ResourceSpec{Name: fmt.Sprintf("%s%d", prefix, i+1)}
	}
	return out
}

func sync(t *testing.T, s store.Store, now time.Time, pools ...store.PoolPolicy) *store.PoolSyncResult {
	t.Helper()
	res, err := s.PoolSync(context.Background(), &store.PoolSyncParams{Pools: pools, Now: now, Actor: "test"})
	if err != nil {
		t.Fatalf("PoolSync: %v", err)
	}
	return res
}

func pool(typ string, rs ...store.ResourceSpec) store.PoolPolicy {
	return store.PoolPolicy{Type: typ, LeaseTTL: ttl, Janitor: "none", Resources: rs}
}

type acq struct {
	typ, owner, requestID string
	sel                   berth.Selector
	prio                  int
	wait                  bool
	waitUntil, now        time.Time
}

func acquire(t *testing.T, s store.Store, a acq) *store.LeaseAcquireResult {
	t.Helper()
	if a.owner == "" {
		a.owner = "job"
	}
	if a.now.IsZero() {
		a.now = t0
	}
	if a.waitUntil.IsZero() {
		a.waitUntil = a.now.Add(30 * time.Second)
	}
	res, err := s.LeaseAcquire(context.Background(), &store.LeaseAcquireParams{
		Type: a.typ, Owner: a.owner, RequestID: a.requestID, Selector: a.sel, Priority: a.prio,
		Wait: a.wait, WaitUntil: a.waitUntil, LeaseTTL: ttl, Now: a.now, Actor: a.owner,
	})
	if err != nil {
		t.Fatalf("LeaseAcquire(%+v): %v", a, err)
	}
	return res
}

func mustLease(t *testing.T, res *store.LeaseAcquireResult) *berth.Lease {
	t.Helper()
	if res.Lease == nil {
		t.Fatalf("got no lease (request %+v)", res.Request)
	}
	if res.Resource == nil || res.Resource.LeaseID != res.Lease.ID || res.Resource.State != berth.StateBusy {
		t.Fatalf("resource %+v does not reflect lease %+v", res.Resource, res.Lease)
	}
	return res.Lease
}

func release(t *testing.T, s store.Store, id string, to berth.State, now time.Time) *store.LeaseReleaseResult {
	t.Helper()
	res, err := s.LeaseRelease(context.Background(), &store.LeaseReleaseParams{ID: id, To: to, Now: now, HandoffTTL: ttl, Actor: "test"})
	if err != nil {
		t.Fatalf("LeaseRelease(%s): %v", id, err)
	}
	return res
}

func get(t *testing.T, s store.Store, name string) *berth.Resource {
	t.Helper()
	r, err := s.ResourceGet(context.Background(), name)
	if err != nil {
		t.Fatalf("ResourceGet(%s): %v", name, err)
	}
	return r
}

func testSyncAdds(t *testing.T, s store.Store) {
	res := sync(t, s, t0, pool("vm", store.ResourceSpec{Name: "vm-1", UserData: map[string]string{"ip": "10.0.0.1"}, Labels: map[string]string{"zone": "a"}}),
		pool("proj", names(3, "p")...))
	if len(res.Added) != 4 {
		t.Fatalf("added %v, want 4", res.Added)
	}
	r := get(t, s, "vm-1")
	if r.Type != "vm" || r.State != berth.StateFree || r.UserData["ip"] != "10.0.0.1" || r.Labels["zone"] != "a" ||
		r.Health.Status != berth.HealthUnknown || !r.StateChangedAt.Equal(t0) {
		t.Fatalf("vm-1 = %+v", r)
	}
	rs, err := s.ResourceList(context.Background(), &store.ResourceListParams{Type: "proj"})
	if err != nil || len(rs) != 3 {
		t.Fatalf("ResourceList(proj) = %d resources, %v", len(rs), err)
	}
	rs, err = s.ResourceList(context.Background(), &store.ResourceListParams{State: berth.StateBusy})
	if err != nil || len(rs) != 0 {
		t.Fatalf("ResourceList(busy) = %d resources, %v", len(rs), err)
	}
	// A second identical sync changes nothing.
	res = sync(t, s, at(time.Second), pool("vm", store.ResourceSpec{Name: "vm-1", UserData: map[string]string{"ip": "10.0.0.1"}, Labels: map[string]string{"zone": "a"}}),
		pool("proj", names(3, "p")...))
	if len(res.Added)+len(res.Removed)+len(res.Retiring) != 0 {
		t.Fatalf("idempotent sync changed %+v", res)
	}
}

func testSyncReconciles(t *testing.T, s store.Store) {
	sync(t, s, t0, pool("vm", store.ResourceSpec{Name: "vm-1", UserData: map[string]string{"a": "1", "b": "2"}, Labels: map[string]string{"x": "1"}},
		store.ResourceSpec{Name: "vm-2"}))
	res := sync(t, s, at(time.Second), pool("vm", store.ResourceSpec{Name: "vm-1", UserData: map[string]string{"b": "3"}, Labels: map[string]string{"y": "2"}},
		store.ResourceSpec{Name: "vm-3"}))
	if !slices.Equal(res.Added, []string{"vm-3"}) || !slices.Equal(res.Removed, []string{"vm-2"}) {
		t.Fatalf("sync = %+v", res)
	}
	r := get(t, s, "vm-1")
	if r.UserData["a"] != "1" || r.UserData["b"] != "3" {
		t.Errorf("user data = %v, want config keys merged over stored ones", r.UserData)
	}
	if len(r.Labels) != 1 || r.Labels["y"] != "2" {
		t.Errorf("labels = %v, want replaced by the config's", r.Labels)
	}
	if _, err := s.ResourceGet(context.Background(), "vm-2"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("vm-2 after removal: %v, want ErrNotFound", err)
	}
}

func testSyncRetiresLeased(t *testing.T, s store.Store) {
	sync(t, s, t0, pool("vm", names(2, "vm-")...))
	l := mustLease(t, acquire(t, s, acq{typ: "vm"}))
	res := sync(t, s, at(time.Second), pool("vm"))
	if !slices.Equal(res.Retiring, []string{l.Resource}) || len(res.Removed) != 1 {
		t.Fatalf("sync = %+v, want %s retiring and the other removed", res, l.Resource)
	}
	r := get(t, s, l.Resource)
	if !r.Retiring || r.LeaseID != l.ID {
		t.Fatalf("leased resource after removal = %+v, want retiring and still leased", r)
	}
	// The lease still works until it ends; then the resource leaves.
	if _, err := s.LeaseHeartbeat(context.Background(), &store.LeaseHeartbeatParams{ID: l.ID, Now: at(2 * time.Second)}); err != nil {
		t.Fatalf("heartbeat of a retiring resource's lease: %v", err)
	}
	rel := release(t, s, l.ID, berth.StateFree, at(3*time.Second))
	if rel.Resource != nil {
		t.Fatalf("release of a retiring resource returned %+v, want it removed", rel.Resource)
	}
	if _, err := s.ResourceGet(context.Background(), l.Resource); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("retired resource still there: %v", err)
	}
	// Putting a retiring resource back in the config keeps it.
	sync(t, s, at(4*time.Second), pool("vm", names(1, "x-")...))
	l2 := mustLease(t, acquire(t, s, acq{typ: "vm", now: at(5 * time.Second)}))
	sync(t, s, at(6*time.Second), pool("vm"))
	sync(t, s, at(7*time.Second), pool("vm", names(1, "x-")...))
	if r := get(t, s, l2.Resource); r.Retiring {
		t.Fatalf("resource back in the config is still retiring")
	}
	if rel := release(t, s, l2.ID, berth.StateFree, at(8*time.Second)); rel.Resource == nil || rel.Resource.State != berth.StateFree {
		t.Fatalf("release after un-retiring = %+v", rel.Resource)
	}
}

func testAcquireLRU(t *testing.T, s store.Store) {
	sync(t, s, t0, pool("vm", names(3, "vm-")...))
	// Free all three at different times; acquire must return the one free
	// the longest.
	var ls []*berth.Lease
	for i := 0; i < 3; i++ {
		ls = append(ls, mustLease(t, acquire(t, s, acq{typ: "vm", now: at(time.Duration(i) * time.Second)})))
	}
	release(t, s, ls[2].ID, berth.StateFree, at(10*time.Second))
	release(t, s, ls[0].ID, berth.StateFree, at(11*time.Second))
	release(t, s, ls[1].ID, berth.StateFree, at(12*time.Second))
	want := []string{ls[2].Resource, ls[0].Resource, ls[1].Resource}
	for i, w := range want {
		if got := mustLease(t, acquire(t, s, acq{typ: "vm", now: at(20 * time.Second)})); got.Resource != w {
			t.Fatalf("acquire %d got %s, want least recently freed %s", i, got.Resource, w)
		}
	}
}

func testTokensIncrease(t *testing.T, s store.Store) {
	sync(t, s, t0, pool("vm", names(2, "vm-")...))
	var last int64
	for i := 0; i < 20; i++ {
		l := mustLease(t, acquire(t, s, acq{typ: "vm", now: at(time.Duration(i) * time.Second)}))
		if l.Token <= last {
			t.Fatalf("token %d after %d: fencing tokens must strictly increase", l.Token, last)
		}
		last = l.Token
		if len(l.ID) < 20 {
			t.Fatalf("lease id %q is too short to be unguessable", l.ID)
		}
		release(t, s, l.ID, berth.StateFree, at(time.Duration(i)*time.Second+time.Millisecond))
	}
}

func testAcquireExhausted(t *testing.T, s store.Store) {
	sync(t, s, t0, pool("vm", names(1, "vm-")...))
	mustLease(t, acquire(t, s, acq{typ: "vm"}))
	res := acquire(t, s, acq{typ: "vm"})
	if res.Lease != nil || res.Request != nil {
		t.Fatalf("acquire on an exhausted pool without wait = %+v, want nothing", res)
	}
	if res := acquire(t, s, acq{typ: "other"}); res.Lease != nil {
		t.Fatalf("acquire of an unknown type leased %+v", res.Lease)
	}
}

func testAcquireSelector(t *testing.T, s store.Store) {
	sync(t, s, t0, pool("phone",
		store.ResourceSpec{Name: "a", Labels: map[string]string{"os": "14"}},
		store.ResourceSpec{Name: "b", Labels: map[string]string{"os": "15", "example.com/lab": "x"}},
		store.ResourceSpec{Name: "c"}))
	l := mustLease(t, acquire(t, s, acq{typ: "phone", sel: berth.Selector{"os": "15"}}))
	if l.Resource != "b" {
		t.Fatalf("selector os=15 got %s", l.Resource)
	}
	if res := acquire(t, s, acq{typ: "phone", sel: berth.Selector{"os": "15"}}); res.Lease != nil {
		t.Fatalf("selector os=15 got a second lease on %s", res.Lease.Resource)
	}
	if res := acquire(t, s, acq{typ: "phone", sel: berth.Selector{"os": "14", "missing": "1"}}); res.Lease != nil {
		t.Fatalf("selector with a missing label matched %s", res.Lease.Resource)
	}
	release(t, s, l.ID, berth.StateFree, at(time.Second))
	if l := mustLease(t, acquire(t, s, acq{typ: "phone", sel: berth.Selector{"example.com/lab": "x"}, now: at(2 * time.Second)})); l.Resource != "b" {
		t.Fatalf("prefixed label key selected %s", l.Resource)
	}
}

func testAcquireIdempotent(t *testing.T, s store.Store) {
	sync(t, s, t0, pool("vm", names(2, "vm-")...))
	l1 := mustLease(t, acquire(t, s, acq{typ: "vm", requestID: "req-1"}))
	l2 := mustLease(t, acquire(t, s, acq{typ: "vm", requestID: "req-1", now: at(10 * time.Second)}))
	if l1.ID != l2.ID || l1.Token != l2.Token {
		t.Fatalf("retried acquire got lease %s, want the same %s", l2.ID, l1.ID)
	}
	if !l2.ExpiresAt.Equal(at(10*time.Second + ttl)) {
		t.Fatalf("retried acquire expiry %s, want renewed to %s", l2.ExpiresAt, at(10*time.Second+ttl))
	}
	if r := get(t, s, "vm-2"); r.State != berth.StateFree {
		t.Fatalf("retried acquire took a second resource")
	}
	// The same request id for another type, or by another owner, is a
	// caller mistake, never a way to get someone else's lease.
	_, err := s.LeaseAcquire(context.Background(), &store.LeaseAcquireParams{Type: "other", Owner: "job", RequestID: "req-1", LeaseTTL: ttl, Now: t0})
	if berth.ErrorCodeOf(err) != berth.EInvalid {
		t.Fatalf("request id reused for another type: %v, want an EInvalid error", err)
	}
	_, err = s.LeaseAcquire(context.Background(), &store.LeaseAcquireParams{Type: "vm", Owner: "thief", RequestID: "req-1", LeaseTTL: ttl, Now: t0})
	if berth.ErrorCodeOf(err) != berth.EInvalid {
		t.Fatalf("request id reused by another owner: %v, want an EInvalid error", err)
	}
	mustLease(t, acquire(t, s, acq{typ: "vm"}))
	acquire(t, s, acq{typ: "vm", requestID: "queued", wait: true})
	_, err = s.LeaseAcquire(context.Background(), &store.LeaseAcquireParams{Type: "vm", Owner: "thief", RequestID: "queued", Wait: true, WaitUntil: at(time.Hour), LeaseTTL: ttl, Now: t0})
	if berth.ErrorCodeOf(err) != berth.EInvalid {
		t.Fatalf("queued request id reused by another owner: %v, want an EInvalid error", err)
	}
}

func testQueuePositions(t *testing.T, s store.Store) {
	sync(t, s, t0, pool("vm", names(1, "vm-")...))
	mustLease(t, acquire(t, s, acq{typ: "vm"}))
	want := map[string]int{}
	for i, r := range []struct {
		id   string
		prio int
	}{{"a", 0}, {"b", 0}, {"c", 5}, {"d", 0}, {"e", 5}} {
		res := acquire(t, s, acq{typ: "vm", requestID: r.id, prio: r.prio, wait: true, now: at(time.Duration(i) * time.Second)})
		if res.Request == nil || res.Lease != nil {
			t.Fatalf("waiting acquire %s = %+v", r.id, res)
		}
	}
	// Priority first, then arrival: c e a b d.
	for i, id := range []string{"c", "e", "a", "b", "d"} {
		want[id] = i + 1
	}
	for id, pos := range want {
		r, err := s.RequestGet(context.Background(), &store.RequestGetParams{ID: id, Now: at(10 * time.Second)})
		if err != nil {
			t.Fatalf("RequestGet(%s): %v", id, err)
		}
		if r.Position != pos {
			t.Errorf("request %s position %d, want %d", id, r.Position, pos)
		}
	}
}

func testQueueKeepsPlace(t *testing.T, s store.Store) {
	sync(t, s, t0, pool("vm", names(1, "vm-")...))
	mustLease(t, acquire(t, s, acq{typ: "vm"}))
	acquire(t, s, acq{typ: "vm", requestID: "first", wait: true, waitUntil: at(30 * time.Second)})
	acquire(t, s, acq{typ: "vm", requestID: "second", wait: true, waitUntil: at(60 * time.Second), now: at(time.Second)})
	// "first" comes back within its grace: still first, expiry extended.
	res := acquire(t, s, acq{typ: "vm", requestID: "first", wait: true, now: at(20 * time.Second), waitUntil: at(90 * time.Second)})
	if res.Request == nil || res.Request.Position != 1 || !res.Request.ExpiresAt.Equal(at(90*time.Second)) {
		t.Fatalf("re-poll = %+v, want position 1 until %s", res.Request, at(90*time.Second))
	}
}

func testQueueExpiredLosesPlace(t *testing.T, s store.Store) {
	sync(t, s, t0, pool("vm", names(1, "vm-")...))
	mustLease(t, acquire(t, s, acq{typ: "vm"}))
	acquire(t, s, acq{typ: "vm", requestID: "first", wait: true, waitUntil: at(30 * time.Second)})
	acquire(t, s, acq{typ: "vm", requestID: "second", wait: true, waitUntil: at(120 * time.Second), now: at(time.Second)})
	// "first" comes back after its place expired: it queues behind.
	res := acquire(t, s, acq{typ: "vm", requestID: "first", wait: true, now: at(40 * time.Second), waitUntil: at(100 * time.Second)})
	if res.Request == nil || res.Request.Position != 2 {
		t.Fatalf("late re-poll = %+v, want position 2", res.Request)
	}
}

func testHandoffOrder(t *testing.T, s store.Store) {
	sync(t, s, t0, pool("vm", names(1, "vm-")...))
	l := mustLease(t, acquire(t, s, acq{typ: "vm"}))
	for i, r := range []struct {
		id   string
		prio int
	}{{"low-1", 0}, {"low-2", 0}, {"high", 1}} {
		acquire(t, s, acq{typ: "vm", owner: "owner-" + r.id, requestID: r.id, prio: r.prio, wait: true, now: at(time.Duration(i) * time.Second), waitUntil: at(time.Hour)})
	}
	for i, want := range []string{"high", "low-1", "low-2"} {
		now := at(time.Duration(10+i) * time.Second)
		rel := release(t, s, l.ID, berth.StateFree, now)
		if rel.Handoff == nil || rel.Handoff.RequestID != want {
			t.Fatalf("release %d handed off to %+v, want %s", i, rel.Handoff, want)
		}
		if rel.Resource.State != berth.StateBusy || rel.Resource.Owner != "owner-"+want || rel.Resource.LeaseID != rel.Handoff.LeaseID {
			t.Fatalf("resource after handoff = %+v", rel.Resource)
		}
		// The waiter claims its lease by acquiring with its request id.
		got := mustLease(t, acquire(t, s, acq{typ: "vm", owner: "owner-" + want, requestID: want, wait: true, now: now}))
		if got.ID != rel.Handoff.LeaseID || got.Token <= l.Token {
			t.Fatalf("claim got %+v, want lease %s with a larger token than %d", got, rel.Handoff.LeaseID, l.Token)
		}
		l = got
	}
	if rel := release(t, s, l.ID, berth.StateFree, at(time.Minute)); rel.Handoff != nil || rel.Resource.State != berth.StateFree {
		t.Fatalf("release with no waiter = %+v", rel)
	}
}

func testHandoffSelector(t *testing.T, s store.Store) {
	sync(t, s, t0, pool("phone", store.ResourceSpec{Name: "old", Labels: map[string]string{"os": "14"}},
		store.ResourceSpec{Name: "new", Labels: map[string]string{"os": "15"}}))
	lOld := mustLease(t, acquire(t, s, acq{typ: "phone", sel: berth.Selector{"os": "14"}}))
	lNew := mustLease(t, acquire(t, s, acq{typ: "phone", sel: berth.Selector{"os": "15"}}))
	acquire(t, s, acq{typ: "phone", requestID: "wants-15", sel: berth.Selector{"os": "15"}, wait: true, waitUntil: at(time.Hour)})
	acquire(t, s, acq{typ: "phone", requestID: "any", wait: true, now: at(time.Second), waitUntil: at(time.Hour)})
	// "old" does not suit the first waiter; it goes to the second.
	if rel := release(t, s, lOld.ID, berth.StateFree, at(2*time.Second)); rel.Handoff == nil || rel.Handoff.RequestID != "any" {
		t.Fatalf("release of os=14 handed off to %+v, want \"any\"", rel.Handoff)
	}
	if rel := release(t, s, lNew.ID, berth.StateFree, at(3*time.Second)); rel.Handoff == nil || rel.Handoff.RequestID != "wants-15" {
		t.Fatalf("release of os=15 handed off to %+v, want \"wants-15\"", rel.Handoff)
	}
}

func testHandoffBounded(t *testing.T, s store.Store) {
	sync(t, s, t0, pool("vm", names(1, "vm-")...))
	l := mustLease(t, acquire(t, s, acq{typ: "vm"}))
	acquire(t, s, acq{typ: "vm", requestID: "w", wait: true, waitUntil: at(5 * time.Second)})
	rel := release(t, s, l.ID, berth.StateFree, at(time.Second))
	hl, err := s.LeaseGet(context.Background(), rel.Handoff.LeaseID)
	if err != nil {
		t.Fatal(err)
	}
	// Unclaimed, the handed-off lease lasts only as long as the request's
	// hold on its place, not a whole TTL.
	if !hl.ExpiresAt.Equal(at(5 * time.Second)) {
		t.Fatalf("handed-off lease expires %s, want the request's %s", hl.ExpiresAt, at(5*time.Second))
	}
	exp, err := s.LeaseListExpired(context.Background(), &store.LeaseListExpiredParams{Now: at(6 * time.Second)})
	if err != nil || len(exp) != 1 || exp[0].ID != hl.ID {
		t.Fatalf("expired leases = %v, %v; want the unclaimed one", exp, err)
	}
	// A request past its hold cannot claim.
	res := acquire(t, s, acq{typ: "vm", requestID: "w", wait: true, now: at(6 * time.Second), waitUntil: at(time.Minute)})
	if res.Lease != nil {
		t.Fatalf("an expired handoff was claimed: %+v", res.Lease)
	}
}

func testHandoffOnSync(t *testing.T, s store.Store) {
	sync(t, s, t0, pool("vm", names(1, "vm-")...))
	mustLease(t, acquire(t, s, acq{typ: "vm"}))
	acquire(t, s, acq{typ: "vm", requestID: "w", wait: true, waitUntil: at(time.Hour)})
	res := sync(t, s, at(time.Second), pool("vm", names(2, "vm-")...))
	if len(res.Handoffs) != 1 || res.Handoffs[0].RequestID != "w" {
		t.Fatalf("a resource added while a request waits went to %+v, want the waiter", res.Handoffs)
	}
}

func testHeartbeat(t *testing.T, s store.Store) {
	ctx := context.Background()
	sync(t, s, t0, pool("vm", names(1, "vm-")...))
	l := mustLease(t, acquire(t, s, acq{typ: "vm"}))
	res, err := s.LeaseHeartbeat(ctx, &store.LeaseHeartbeatParams{ID: l.ID, Now: at(30 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	hb := res.Lease
	if !hb.ExpiresAt.Equal(at(30*time.Second+ttl)) || hb.Token != l.Token || res.Resource == nil || res.Resource.LeaseID != l.ID {
		t.Fatalf("heartbeat = %+v", res)
	}
	// At its expiry the lease is lost, even before a reaper runs.
	if _, err := s.LeaseHeartbeat(ctx, &store.LeaseHeartbeatParams{ID: l.ID, Now: hb.ExpiresAt}); !errors.Is(err, store.ErrLeaseEnded) {
		t.Fatalf("heartbeat at expiry: %v, want ErrLeaseEnded", err)
	}
	if _, err := s.LeaseHeartbeat(ctx, &store.LeaseHeartbeatParams{ID: "nope", Now: t0}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("heartbeat of an unknown lease: %v, want ErrNotFound", err)
	}
}

func testReleaseTwice(t *testing.T, s store.Store) {
	sync(t, s, t0, pool("vm", names(1, "vm-")...))
	l := mustLease(t, acquire(t, s, acq{typ: "vm"}))
	release(t, s, l.ID, berth.StateFree, at(time.Second))
	res, err := s.LeaseRelease(context.Background(), &store.LeaseReleaseParams{ID: l.ID, To: berth.StateFree, Now: at(2 * time.Second)})
	if !errors.Is(err, store.ErrLeaseEnded) || res == nil || res.Lease == nil || res.Lease.Status != berth.LeaseReleased {
		t.Fatalf("second release = %+v, %v; want ErrLeaseEnded with the released lease", res, err)
	}
	if _, err := s.LeaseHeartbeat(context.Background(), &store.LeaseHeartbeatParams{ID: l.ID, Now: at(3 * time.Second)}); !errors.Is(err, store.ErrLeaseEnded) {
		t.Fatalf("heartbeat after release: %v, want ErrLeaseEnded", err)
	}
	// Past its expiry a lease cannot be released as if it were still held:
	// it is lost, and only the reaper ends it, as expired.
	l2 := mustLease(t, acquire(t, s, acq{typ: "vm", now: at(10 * time.Second)}))
	_, err = s.LeaseRelease(context.Background(), &store.LeaseReleaseParams{ID: l2.ID, To: berth.StateFree, Now: l2.ExpiresAt})
	if !errors.Is(err, store.ErrLeaseEnded) {
		t.Fatalf("release at expiry: %v, want ErrLeaseEnded", err)
	}
	if r := get(t, s, l2.Resource); r.LeaseID != l2.ID {
		t.Fatalf("a refused release changed the resource: %+v", r)
	}
	res, err = s.LeaseRelease(context.Background(), &store.LeaseReleaseParams{ID: l2.ID, To: berth.StateFree, Expired: true, Now: l2.ExpiresAt})
	if err != nil || res.Lease.Status != berth.LeaseExpired {
		t.Fatalf("expiring = %+v, %v", res, err)
	}
}

func testReleaseTargets(t *testing.T, s store.Store) {
	sync(t, s, t0, pool("vm", names(3, "vm-")...))
	for _, c := range []struct {
		to     berth.State
		reason string
	}{{berth.StateDirty, ""}, {berth.StateQuarantined, "disk full"}, {berth.StateFree, ""}} {
		l := mustLease(t, acquire(t, s, acq{typ: "vm"}))
		res, err := s.LeaseRelease(context.Background(), &store.LeaseReleaseParams{ID: l.ID, To: c.to, Reason: c.reason, Now: at(time.Second), HandoffTTL: ttl})
		if err != nil {
			t.Fatal(err)
		}
		r := get(t, s, l.Resource)
		if r.State != c.to || r.Owner != "" || r.LeaseID != "" || r.StateReason != c.reason || res.Lease.Status != berth.LeaseReleased {
			t.Fatalf("after release to %s: resource %+v, lease %+v", c.to, r, res.Lease)
		}
	}
}

func testExpireRacesHeartbeat(t *testing.T, s store.Store) {
	ctx := context.Background()
	sync(t, s, t0, pool("vm", names(1, "vm-")...))
	l := mustLease(t, acquire(t, s, acq{typ: "vm"}))
	if _, err := s.LeaseHeartbeat(ctx, &store.LeaseHeartbeatParams{ID: l.ID, Now: at(50 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	// A reaper that listed the lease before the heartbeat must not end it.
	_, err := s.LeaseRelease(ctx, &store.LeaseReleaseParams{ID: l.ID, To: berth.StateFree, Expired: true, Now: at(61 * time.Second)})
	if !errors.Is(err, store.ErrLeaseActive) {
		t.Fatalf("expiring a renewed lease: %v, want ErrLeaseActive", err)
	}
	res, err := s.LeaseRelease(ctx, &store.LeaseReleaseParams{ID: l.ID, To: berth.StateDirty, Expired: true, Now: at(111 * time.Second), Reason: "no heartbeat"})
	if err != nil || res.Lease.Status != berth.LeaseExpired || res.Resource.State != berth.StateDirty {
		t.Fatalf("expiring = %+v, %v", res, err)
	}
}

func testListExpired(t *testing.T, s store.Store) {
	sync(t, s, t0, pool("vm", names(3, "vm-")...))
	l1 := mustLease(t, acquire(t, s, acq{typ: "vm", now: t0}))
	l2 := mustLease(t, acquire(t, s, acq{typ: "vm", now: at(10 * time.Second)}))
	mustLease(t, acquire(t, s, acq{typ: "vm", now: at(20 * time.Second)}))
	exp, err := s.LeaseListExpired(context.Background(), &store.LeaseListExpiredParams{Now: at(ttl + 10*time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if len(exp) != 2 || exp[0].ID != l1.ID || exp[1].ID != l2.ID {
		t.Fatalf("expired = %v, want %s and %s (expiry is inclusive)", exp, l1.ID, l2.ID)
	}
}

func testRequestCancelPrune(t *testing.T, s store.Store) {
	ctx := context.Background()
	sync(t, s, t0, pool("vm", names(1, "vm-")...))
	mustLease(t, acquire(t, s, acq{typ: "vm"}))
	acquire(t, s, acq{typ: "vm", requestID: "a", wait: true, waitUntil: at(10 * time.Second)})
	acquire(t, s, acq{typ: "vm", requestID: "b", wait: true, waitUntil: at(20 * time.Second)})
	acquire(t, s, acq{typ: "vm", requestID: "c", wait: true, waitUntil: at(30 * time.Second)})
	if err := s.RequestCancel(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if err := s.RequestCancel(ctx, "b"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second cancel: %v, want ErrNotFound", err)
	}
	n, err := s.RequestPrune(ctx, at(15*time.Second))
	if err != nil || n != 1 {
		t.Fatalf("prune = %d, %v; want 1", n, err)
	}
	r, err := s.RequestGet(ctx, &store.RequestGetParams{ID: "c", Now: at(15 * time.Second)})
	if err != nil || r.Position != 1 {
		t.Fatalf("c after prune = %+v, %v", r, err)
	}
}

func testEvents(t *testing.T, s store.Store) {
	ctx := context.Background()
	sync(t, s, t0, pool("vm", names(1, "vm-")...), pool("proj", names(1, "p")...))
	l := mustLease(t, acquire(t, s, acq{typ: "vm", owner: "alice", now: at(time.Second)}))
	if _, err := s.LeaseRelease(ctx, &store.LeaseReleaseParams{ID: l.ID, To: berth.StateQuarantined, Reason: "smoke", Now: at(2 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	all, err := s.EventList(ctx, &store.EventListParams{})
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for i, e := range all {
		if i > 0 && e.ID <= all[i-1].ID {
			t.Fatalf("event ids not increasing: %d after %d", e.ID, all[i-1].ID)
		}
		kinds = append(kinds, fmt.Sprintf("%s:%s:%s>%s", e.Resource, e.Kind, e.From, e.To))
	}
	want := []string{"vm-1:config:>free", "p1:config:>free", "vm-1:lease:free>busy", "vm-1:lease:busy>quarantined"}
	if !slices.Equal(kinds, want) {
		t.Fatalf("events = %v, want %v", kinds, want)
	}
	acqEv := all[2]
	if acqEv.LeaseID != l.ID || acqEv.Token != l.Token || acqEv.Actor != "alice" || !acqEv.Time.Equal(at(time.Second)) {
		t.Fatalf("acquire event = %+v", acqEv)
	}
	check := func(p store.EventListParams, want int) {
		t.Helper()
		evs, err := s.EventList(ctx, &p)
		if err != nil || len(evs) != want {
			t.Fatalf("EventList(%+v) = %d events, %v; want %d", p, len(evs), err, want)
		}
	}
	check(store.EventListParams{Resource: "vm-1"}, 3)
	check(store.EventListParams{Type: "proj"}, 1)
	check(store.EventListParams{Since: at(time.Second)}, 2)
	check(store.EventListParams{AfterID: acqEv.ID}, 1)
	check(store.EventListParams{Limit: 2}, 2)
	evs, err := s.EventList(ctx, &store.EventListParams{Desc: true, Limit: 1})
	if err != nil || len(evs) != 1 || evs[0].ID != all[len(all)-1].ID {
		t.Fatalf("newest event = %v, %v", evs, err)
	}
}

func testPoolList(t *testing.T, s store.Store) {
	sync(t, s, t0, pool("vm", names(3, "vm-")...), store.PoolPolicy{Type: "proj", LeaseTTL: time.Hour, Janitor: "external"})
	mustLease(t, acquire(t, s, acq{typ: "vm"}))
	l := mustLease(t, acquire(t, s, acq{typ: "vm"}))
	release(t, s, l.ID, berth.StateDirty, at(time.Second))
	mustLease(t, acquire(t, s, acq{typ: "vm"}))
	acquire(t, s, acq{typ: "vm", requestID: "w", wait: true, now: at(2 * time.Second)})
	ps, err := s.PoolList(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 2 {
		t.Fatalf("pools = %+v", ps)
	}
	var vm, proj *berth.Pool
	for _, p := range ps {
		switch p.Type {
		case "vm":
			vm = p
		case "proj":
			proj = p
		}
	}
	if vm == nil || vm.Total != 3 || vm.States[berth.StateBusy] != 2 || vm.States[berth.StateDirty] != 1 || vm.Waiters != 1 || vm.LeaseTTL.Std() != ttl {
		t.Fatalf("vm pool = %+v", vm)
	}
	if proj == nil || proj.Total != 0 || proj.Janitor != "external" || proj.LeaseTTL.Std() != time.Hour {
		t.Fatalf("proj pool = %+v", proj)
	}
}

func testNotFound(t *testing.T, s store.Store) {
	ctx := context.Background()
	if _, err := s.ResourceGet(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("ResourceGet: %v", err)
	}
	if _, err := s.LeaseGet(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("LeaseGet: %v", err)
	}
	if _, err := s.RequestGet(ctx, &store.RequestGetParams{ID: "nope"}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("RequestGet: %v", err)
	}
	if _, err := s.LeaseRelease(ctx, &store.LeaseReleaseParams{ID: "nope", To: berth.StateFree}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("LeaseRelease: %v", err)
	}
}

// testAcquireIdempotentAfterExpiry: once a request's lease has expired
// (reaped or not), the same request id gets one new lease, and retries of
// that get the new one, not another resource.
func testAcquireIdempotentAfterExpiry(t *testing.T, s store.Store) {
	sync(t, s, t0, pool("vm", names(3, "vm-")...))
	old := mustLease(t, acquire(t, s, acq{typ: "vm", requestID: "rq"}))
	later := old.ExpiresAt.Add(time.Second)
	l1 := mustLease(t, acquire(t, s, acq{typ: "vm", requestID: "rq", now: later}))
	l2 := mustLease(t, acquire(t, s, acq{typ: "vm", requestID: "rq", now: later}))
	if l1.ID == old.ID || l2.ID != l1.ID {
		t.Fatalf("after expiry: %s then %s (old %s); want one new lease, then the same again", l1.ID, l2.ID, old.ID)
	}
}

func testClaimOnly(t *testing.T, s store.Store) {
	sync(t, s, t0, pool("vm", names(1, "vm-")...))
	res, err := s.LeaseAcquire(context.Background(), &store.LeaseAcquireParams{Type: "vm", Owner: "job", RequestID: "gone",
		ClaimOnly: true, Wait: true, WaitUntil: at(time.Hour), LeaseTTL: ttl, Now: t0})
	if err != nil || res.Lease != nil || res.Request != nil {
		t.Fatalf("claim without a grant = %+v, %v; want nothing", res, err)
	}
	if r := get(t, s, "vm-1"); r.State != berth.StateFree {
		t.Fatalf("a claim took a free resource: %+v", r)
	}
}

func testSyncFreesDirty(t *testing.T, s store.Store) {
	sync(t, s, t0, store.PoolPolicy{Type: "vm", LeaseTTL: ttl, Janitor: "external", Resources: names(1, "vm-")})
	l := mustLease(t, acquire(t, s, acq{typ: "vm"}))
	release(t, s, l.ID, berth.StateDirty, at(time.Second))
	acquire(t, s, acq{typ: "vm", requestID: "w", wait: true, now: at(2 * time.Second), waitUntil: at(time.Hour)})
	res := sync(t, s, at(3*time.Second), pool("vm", names(1, "vm-")...))
	if len(res.Added) != 0 || len(res.Handoffs) != 1 || res.Handoffs[0].RequestID != "w" {
		t.Fatalf("sync = %+v; want the dirty resource freed and handed to the waiter", res)
	}
}

// testSyncMovesLeasedResource: a leased resource moved to another pool
// keeps its lease, and once released serves the new pool.
func testSyncMovesLeased(t *testing.T, s store.Store) {
	sync(t, s, t0, pool("old", names(1, "r-")...))
	l := mustLease(t, acquire(t, s, acq{typ: "old"}))
	sync(t, s, at(time.Second), pool("new", names(1, "r-")...))
	if _, err := s.LeaseHeartbeat(context.Background(), &store.LeaseHeartbeatParams{ID: l.ID, Now: at(2 * time.Second)}); err != nil {
		t.Fatalf("lease after its resource moved: %v", err)
	}
	release(t, s, l.ID, berth.StateFree, at(3*time.Second))
	if got := mustLease(t, acquire(t, s, acq{typ: "new", now: at(4 * time.Second)})); got.Resource != "r-1" {
		t.Fatalf("acquire from the new pool got %s", got.Resource)
	}
}

func testRequestShorten(t *testing.T, s store.Store) {
	ctx := context.Background()
	sync(t, s, t0, pool("vm", names(1, "vm-")...))
	mustLease(t, acquire(t, s, acq{typ: "vm"}))
	acquire(t, s, acq{typ: "vm", requestID: "w", wait: true, waitUntil: at(time.Hour)})
	for _, until := range []time.Duration{time.Minute, 2 * time.Minute} { // never later
		if err := s.RequestShorten(ctx, &store.RequestShortenParams{ID: "w", ExpiresAt: at(until)}); err != nil {
			t.Fatal(err)
		}
	}
	r, err := s.RequestGet(ctx, &store.RequestGetParams{ID: "w", Now: t0})
	if err != nil || !r.ExpiresAt.Equal(at(time.Minute)) {
		t.Fatalf("shortened request = %+v, %v; want expiry %s", r, err, at(time.Minute))
	}
	if err := s.RequestShorten(ctx, &store.RequestShortenParams{ID: "gone", ExpiresAt: t0}); err != nil {
		t.Fatalf("shortening a request that is not there: %v", err)
	}
}

// testRequestIDServedOnce: a request that waits and is then served by a
// call that does not wait leaves the queue, so it is never served twice.
func testRequestIDServedOnce(t *testing.T, s store.Store) {
	sync(t, s, t0, pool("vm",
		store.ResourceSpec{Name: "vm-a", Labels: map[string]string{"zone": "a"}},
		store.ResourceSpec{Name: "vm-b", Labels: map[string]string{"zone": "b"}}))
	la := mustLease(t, acquire(t, s, acq{typ: "vm", owner: "other", sel: berth.Selector{"zone": "a"}}))
	if res := acquire(t, s, acq{typ: "vm", requestID: "r", sel: berth.Selector{"zone": "a"}, wait: true, waitUntil: at(time.Hour)}); res.Request == nil {
		t.Fatalf("want r queued, got %+v", res)
	}
	mustLease(t, acquire(t, s, acq{typ: "vm", requestID: "r"})) // takes vm-b
	if rel := release(t, s, la.ID, berth.StateFree, at(time.Second)); rel.Handoff != nil {
		t.Fatalf("vm-a was handed to request r, which already holds vm-b")
	}
}

// testReleaseRacesEnqueue releases the only resource of a pool at the same
// moment as another caller, finding none free, queues for one, many
// times. Whatever the interleaving, the two must not miss each other:
// never a free resource and a request left waiting for it (that waiter
// would sit until its poll timed out).
func testReleaseRacesEnqueue(t *testing.T, s store.Store) {
	sync(t, s, t0, pool("vm", names(1, "vm-")...))
	ctx := context.Background()
	for i := range 100 {
		now := at(time.Duration(i) * time.Second)
		held := mustLease(t, acquire(t, s, acq{typ: "vm", owner: "holder", now: now}))
		var got *store.LeaseAcquireResult
		if err := together(func() error {
			_, err := s.LeaseRelease(ctx, &store.LeaseReleaseParams{ID: held.ID, To: berth.StateFree, Now: now, HandoffTTL: ttl})
			return err
		}, func() error {
			var err error
			got, err = s.LeaseAcquire(ctx, &store.LeaseAcquireParams{Type: "vm", Owner: "waiter", RequestID: fmt.Sprintf("w-%d", i),
				Wait: true, WaitUntil: now.Add(time.Minute), LeaseTTL: ttl, Now: now, Actor: "waiter"})
			return err
		}); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		// The waiter holds the resource now: got it at once, or was
		// handed it by the release.
		r, err := s.ResourceGet(ctx, "vm-1")
		if err != nil {
			t.Fatal(err)
		}
		if r.State != berth.StateBusy || r.Owner != "waiter" {
			t.Fatalf("round %d: resource %s is %s (owner %q) and the acquire got %+v; a release and a queued acquire missed each other",
				i, r.Name, r.State, r.Owner, got)
		}
		if _, err := s.LeaseRelease(ctx, &store.LeaseReleaseParams{ID: r.LeaseID, To: berth.StateFree, Now: now, HandoffTTL: ttl}); err != nil {
			t.Fatalf("round %d: release the waiter's lease: %v", i, err)
		}
	}
}

// testReleaseMovedToWaiter: a leased resource that a config change moved
// to another pool goes, when released, to the request waiting in its new
// pool (found by the independent review of issue 3).
func testReleaseMovedToWaiter(t *testing.T, s store.Store) {
	sync(t, s, t0, pool("old", names(1, "r-")...), pool("new", names(1, "n-")...))
	l := mustLease(t, acquire(t, s, acq{typ: "old"}))
	mustLease(t, acquire(t, s, acq{typ: "new", owner: "other"}))
	sync(t, s, at(time.Second), pool("old"), pool("new", append(names(1, "r-"), names(1, "n-")...)...))
	if res := acquire(t, s, acq{typ: "new", owner: "waiter", requestID: "w", wait: true, now: at(2 * time.Second), waitUntil: at(time.Hour)}); res.Request == nil {
		t.Fatalf("the waiter did not queue: %+v", res)
	}
	// The new pool's policy applies: its lease TTL for the handoff.
	rel, err := s.LeaseRelease(context.Background(), &store.LeaseReleaseParams{ID: l.ID, Now: at(3 * time.Second),
		Decide: func(typ string) store.Outcome {
			if typ == "new" {
				return store.Outcome{To: berth.StateFree, HandoffTTL: 2 * time.Hour}
			}
			return store.Outcome{To: berth.StateFree, HandoffTTL: ttl}
		}})
	if err != nil {
		t.Fatal(err)
	}
	if r := get(t, s, "r-1"); rel.Handoff == nil || r.Owner != "waiter" {
		t.Fatalf("release handoff = %+v, r-1 is %s (owner %q); want it handed to the request waiting in its new pool", rel.Handoff, r.State, r.Owner)
	}
	if h, err := s.LeaseGet(context.Background(), rel.Handoff.LeaseID); err != nil || time.Duration(h.TTL) != 2*time.Hour {
		t.Fatalf("handed-over lease = %+v, %v; want the new pool's TTL, 2h", h, err)
	}
}

// testSyncMovesFreeToWaiter: a free resource that a config change moves to
// a pool where a request waits goes to that request at once (found by the
// second independent review of issue 3).
func testSyncMovesFreeToWaiter(t *testing.T, s store.Store) {
	sync(t, s, t0, pool("old", names(1, "r-")...), pool("new", names(1, "n-")...))
	mustLease(t, acquire(t, s, acq{typ: "new", owner: "other"}))
	if res := acquire(t, s, acq{typ: "new", owner: "waiter", requestID: "w", wait: true, now: at(time.Second), waitUntil: at(time.Hour)}); res.Request == nil {
		t.Fatalf("the waiter did not queue: %+v", res)
	}
	res := sync(t, s, at(2*time.Second), pool("old"), pool("new", append(names(1, "r-"), names(1, "n-")...)...))
	if r := get(t, s, "r-1"); len(res.Handoffs) != 1 || res.Handoffs[0].RequestID != "w" || r.Owner != "waiter" {
		t.Fatalf("sync handoffs = %+v, r-1 is %s %s (owner %q); want it handed to the waiting request", res.Handoffs, r.Type, r.State, r.Owner)
	}
}

// testReleaseRacesRelease releases one lease twice at once, as a client's
// retry on another replica can: one release ends it and moves the
// resource on, with one event; the other finds it ended. Every third
// round a request waits, so the resource is handed over; every third it
// goes to dirty.
func testReleaseRacesRelease(t *testing.T, s store.Store) {
	sync(t, s, t0, pool("vm", names(1, "vm-")...))
	ctx := context.Background()
	for i := range 60 {
		now := at(time.Duration(i) * time.Second)
		held := mustLease(t, acquire(t, s, acq{typ: "vm", owner: "holder", now: now}))
		to := berth.StateFree
		switch i % 3 {
		case 1:
			if res := acquire(t, s, acq{typ: "vm", owner: "waiter", requestID: fmt.Sprintf("w-%d", i), wait: true, now: now}); res.Request == nil {
				t.Fatalf("round %d: the waiter did not queue: %+v", i, res)
			}
		case 2:
			to = berth.StateDirty
		}
		var ended [2]bool
		rel := func(k int) func() error {
			return func() error {
				_, err := s.LeaseRelease(ctx, &store.LeaseReleaseParams{ID: held.ID, To: to, Now: now, HandoffTTL: ttl})
				if errors.Is(err, store.ErrLeaseEnded) {
					return nil
				}
				ended[k] = err == nil
				return err
			}
		}
		if err := together(rel(0), rel(1)); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		if ended[0] == ended[1] {
			t.Fatalf("round %d: both releases or neither ended the lease: %v", i, ended)
		}
		r := get(t, s, "vm-1")
		switch {
		case i%3 == 1 && (r.State != berth.StateBusy || r.Owner != "waiter"):
			t.Fatalf("round %d: resource %+v; want it handed to the waiter", i, r)
		case i%3 == 2 && r.State != berth.StateDirty:
			t.Fatalf("round %d: resource %+v; want dirty", i, r)
		case i%3 == 0 && r.State != berth.StateFree:
			t.Fatalf("round %d: resource %+v; want free", i, r)
		}
		evs, err := s.EventList(ctx, &store.EventListParams{Resource: "vm-1"})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, e := range evs {
			if e.LeaseID == held.ID && e.Reason == string(berth.LeaseReleased) {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("round %d: %d release events for lease %s; want 1", i, n, held.ID)
		}
		if err := s.Check(ctx); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		if r.LeaseID != "" {
			if _, err := s.LeaseRelease(ctx, &store.LeaseReleaseParams{ID: r.LeaseID, To: berth.StateFree, Now: now, HandoffTTL: ttl}); err != nil {
				t.Fatalf("round %d: release the waiter's lease: %v", i, err)
			}
		}
		if r.State == berth.StateDirty {
			// A pool without a janitor: a sync frees what is dirty.
			sync(t, s, now, pool("vm", names(1, "vm-")...))
		}
	}
}

// testParallelCycles runs many acquire+release cycles at once on fewer
// resources than callers (a store may commit concurrent calls together):
// every lease granted is on a resource no other active lease holds, every
// release succeeds, and the store's invariants hold at the end.
func testParallelCycles(t *testing.T, s store.Store) {
	sync(t, s, t0, pool("vm", names(5, "vm-")...))
	ctx := context.Background()
	const callers, cycles = 8, 30
	var (
		mu      goSync.Mutex
		holding = map[string]string{} // resource -> lease
	)
	errs := make(chan error, callers)
	for c := range callers {
		go func() {
			errs <- func() error {
				for i := range cycles {
					now := at(time.Duration(c*cycles+i) * time.Millisecond)
					res, err := s.LeaseAcquire(ctx, &store.LeaseAcquireParams{Type: "vm", Owner: fmt.Sprintf("c%d", c),
						RequestID: fmt.Sprintf("c%d-%d", c, i), LeaseTTL: ttl, Now: now, Actor: "test"})
					if err != nil {
						return fmt.Errorf("acquire: %w", err)
					}
					if res.Lease == nil {
						continue // all five held
					}
					mu.Lock()
					if other, ok := holding[res.Lease.Resource]; ok {
						mu.Unlock()
						return fmt.Errorf("%s leased to %s while %s holds it", res.Lease.Resource, res.Lease.ID, other)
					}
					holding[res.Lease.Resource] = res.Lease.ID
					mu.Unlock()
					// Forget it before releasing: once released, another
					// caller may be granted it at any moment.
					mu.Lock()
					delete(holding, res.Lease.Resource)
					mu.Unlock()
					if _, err := s.LeaseRelease(ctx, &store.LeaseReleaseParams{ID: res.Lease.ID, To: berth.StateFree, Now: now, HandoffTTL: ttl}); err != nil {
						return fmt.Errorf("release %s: %w", res.Lease.ID, err)
					}
				}
				return nil
			}()
		}()
	}
	for range callers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Check(ctx); err != nil {
		t.Fatal(err)
	}
	rs, err := s.ResourceList(ctx, &store.ResourceListParams{Type: "vm"})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if r.State != berth.StateFree {
			t.Fatalf("after all releases %s is %s", r.Name, r.State)
		}
	}
}

// testResourceListPages reads resources a page at a time after the last
// one seen, as an unlimited listing does, and must see each once, in
// (type, name) order, with filters applied.
func testResourceListPages(t *testing.T, s store.Store) {
	sync(t, s, t0, pool("b-vm", names(7, "b-")...), pool("a-vm", names(5, "a-")...))
	ctx := context.Background()
	var got []string
	p := &store.ResourceListParams{Limit: 3}
	for {
		rs, err := s.ResourceList(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			got = append(got, r.Type+"/"+r.Name)
		}
		if len(rs) < p.Limit {
			break
		}
		p.AfterType, p.AfterName = rs[len(rs)-1].Type, rs[len(rs)-1].Name
	}
	want := []string{"a-vm/a-1", "a-vm/a-2", "a-vm/a-3", "a-vm/a-4", "a-vm/a-5",
		"b-vm/b-1", "b-vm/b-2", "b-vm/b-3", "b-vm/b-4", "b-vm/b-5", "b-vm/b-6", "b-vm/b-7"}
	if !slices.Equal(got, want) {
		t.Fatalf("pages: %v, want %v", got, want)
	}
	rs, err := s.ResourceList(ctx, &store.ResourceListParams{Type: "b-vm", Limit: 2, AfterType: "b-vm", AfterName: "b-5"})
	if err != nil || len(rs) != 2 || rs[0].Name != "b-6" || rs[1].Name != "b-7" {
		t.Fatalf("page of b-vm after b-5: %v, %v", rs, err)
	}
}

// testHandoffRacesRetry: a waiting request is handed a resource by a
// release at the same moment as its owner's retry, arriving on another
// connection, takes another free resource for it. One request must never
// end up holding two resources (the second would sit leased to nobody
// until it expired).
func testHandoffRacesRetry(t *testing.T, s store.Store) {
	sync(t, s, t0, pool("vm",
		store.ResourceSpec{Name: "vm-a", Labels: map[string]string{"zone": "a"}},
		store.ResourceSpec{Name: "vm-b", Labels: map[string]string{"zone": "b"}}))
	ctx := context.Background()
	for i := range 50 {
		now := at(time.Duration(i) * time.Second)
		held := mustLease(t, acquire(t, s, acq{typ: "vm", owner: "holder", sel: berth.Selector{"zone": "a"}, now: now}))
		req := fmt.Sprintf("r-%d", i)
		// Waits for zone a (held); zone b stays free, which the queued
		// request does not want but its retry, asking for any zone, takes.
		if res := acquire(t, s, acq{typ: "vm", owner: "job", requestID: req, sel: berth.Selector{"zone": "a"}, wait: true, now: now}); res.Request == nil {
			t.Fatalf("round %d: the request did not queue: %+v", i, res)
		}
		if err := together(func() error {
			_, err := s.LeaseRelease(ctx, &store.LeaseReleaseParams{ID: held.ID, To: berth.StateFree, Now: now, HandoffTTL: ttl})
			return err
		}, func() error {
			_, err := s.LeaseAcquire(ctx, &store.LeaseAcquireParams{Type: "vm", Owner: "job", RequestID: req, LeaseTTL: ttl, Now: now, Actor: "job"})
			return err
		}); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		if err := s.Check(ctx); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		// Free everything for the next round.
		rs, err := s.ResourceList(ctx, &store.ResourceListParams{Type: "vm"})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			if r.LeaseID != "" {
				if _, err := s.LeaseRelease(ctx, &store.LeaseReleaseParams{ID: r.LeaseID, To: berth.StateFree, Now: now, HandoffTTL: ttl}); err != nil {
					t.Fatalf("round %d: free %s: %v", i, r.Name, err)
				}
			}
		}
		if err := s.RequestCancel(ctx, req); err != nil && !errors.Is(err, store.ErrNotFound) {
			t.Fatal(err)
		}
	}
}

// testHandoffRacesRepoll: the oldest waiter polls again (as a long poll
// does on every wake, and a client after every poll) at the moment a
// release frees the resource. It must still be served first: a waiter
// that polls is not out of the queue. (Found by review: locking the
// request's row during the poll made the release pass it over, and the
// later waiter won 174 of 200 rounds.)
func testHandoffRacesRepoll(t *testing.T, s store.Store) {
	sync(t, s, t0, pool("vm", names(1, "vm-")...))
	ctx := context.Background()
	for i := range 100 {
		now := at(time.Duration(i) * time.Second)
		held := mustLease(t, acquire(t, s, acq{typ: "vm", owner: "holder", now: now}))
		w := func(owner string) *store.LeaseAcquireParams {
			return &store.LeaseAcquireParams{Type: "vm", Owner: owner, RequestID: fmt.Sprintf("%s-%d", owner, i), Wait: true,
				WaitUntil: now.Add(time.Hour), LeaseTTL: ttl, Now: now, Actor: owner}
		}
		for _, owner := range []string{"w1", "w2"} {
			if res, err := s.LeaseAcquire(ctx, w(owner)); err != nil || res.Request == nil {
				t.Fatalf("round %d: queue %s: %+v, %v", i, owner, res, err)
			}
		}
		if err := together(func() error {
			_, err := s.LeaseAcquire(ctx, w("w1"))
			return err
		}, func() error {
			_, err := s.LeaseRelease(ctx, &store.LeaseReleaseParams{ID: held.ID, To: berth.StateFree, Now: now, HandoffTTL: ttl})
			return err
		}); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		r, err := s.ResourceGet(ctx, "vm-1")
		if err != nil {
			t.Fatal(err)
		}
		if r.Owner != "w1" {
			t.Fatalf("round %d: %s went to %q, not to w1, which queued first and was polling again", i, r.Name, r.Owner)
		}
		if _, err := s.LeaseRelease(ctx, &store.LeaseReleaseParams{ID: r.LeaseID, To: berth.StateFree, Now: now, HandoffTTL: ttl}); err != nil {
			t.Fatal(err)
		}
		// w2 was handed the resource by that release; free it for the
		// next round.
		r, err = s.ResourceGet(ctx, "vm-1")
		if err != nil {
			t.Fatal(err)
		}
		if r.LeaseID != "" {
			if _, err := s.LeaseRelease(ctx, &store.LeaseReleaseParams{ID: r.LeaseID, To: berth.StateFree, Now: now, HandoffTTL: ttl}); err != nil {
				t.Fatal(err)
			}
		}
		for _, owner := range []string{"w1", "w2"} {
			if err := s.RequestCancel(ctx, fmt.Sprintf("%s-%d", owner, i)); err != nil && !errors.Is(err, store.ErrNotFound) {
				t.Fatal(err)
			}
		}
	}
}

// together runs a and b at the same moment, as two callers racing each
// other, and returns the first error either returned.
func together(a, b func() error) error {
	start := make(chan struct{})
	errs := make(chan error, 2)
	for _, f := range []func() error{a, b} {
		go func() {
			<-start
			errs <- f()
		}()
	}
	close(start)
	return errors.Join(<-errs, <-errs)
}
