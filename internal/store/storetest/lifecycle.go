package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/store"
)

// The lifecycle cases (issue 5): janitors, quarantine, drain, resources
// added and retired at runtime, and dynamic pools' deletions.
var lifecycleCases = []struct {
	name string
	fn   func(t *testing.T, s store.Store)
}{
	{"CleanClaimAndFinish", testCleanClaimAndFinish},
	{"CleanFailureBacksOffThenQuarantines", testCleanFailureBacksOff},
	{"CleanLeaseExpiry", testCleanLeaseExpiry},
	{"CleanedGoesToWaiter", testCleanedGoesToWaiter},
	{"CleanLeaseKinds", testCleanLeaseKinds},
	{"CleanClaimRacesClaim", testCleanClaimRacesClaim},
	{"CleanEndRacesExpiry", testCleanEndRacesExpiry},
	{"BrokenDeepClean", testBrokenDeepClean},
	{"QuarantineRevokesLease", testQuarantineRevokes},
	{"UnquarantineToWaiter", testUnquarantine},
	{"DrainResource", testDrainResource},
	{"DrainPool", testDrainPool},
	{"AddAndRetire", testAddAndRetire},
	{"SyncKeepsRuntimeResources", testSyncKeepsRuntimeResources},
	{"DynamicDelete", testDynamicDelete},
	{"EventsByKindAndActor", testEventsByKindAndActor},
	{"CleanAbandoned", testCleanAbandoned},
	{"EventRecord", testEventRecord},
	{"CleanClaimIdempotent", testCleanClaimIdempotent},
	{"CleanEndInPoolWithoutJanitor", testCleanEndWithoutJanitor},
}

func janitorPool(typ string, rs ...store.ResourceSpec) store.PoolPolicy {
	p := pool(typ, rs...)
	p.Janitor = "command"
	return p
}

// cleanPolicy: three attempts, a backoff of n seconds after failure n.
func cleanPolicy(string) store.CleanPolicy {
	return store.CleanPolicy{MaxAttempts: 3, HandoffTTL: ttl, Backoff: func(n int) time.Duration { return time.Duration(n) * time.Second }}
}

func claim(t *testing.T, s store.Store, typ string, now time.Time) *store.CleanClaimResult {
	t.Helper()
	res, err := s.CleanClaim(context.Background(), &store.CleanClaimParams{Type: typ, Owner: "janitor", LeaseTTL: ttl, Now: now, Actor: "janitor"})
	if err != nil {
		t.Fatalf("CleanClaim(%s): %v", typ, err)
	}
	return res
}

func mustClaim(t *testing.T, s store.Store, typ string, now time.Time) *store.CleanClaimResult {
	t.Helper()
	res := claim(t, s, typ, now)
	if res.Lease == nil {
		t.Fatalf("claimed nothing of %s at %s (next %s)", typ, now, res.NextAt)
	}
	if res.Lease.Kind != berth.LeaseClean || res.Resource.State != berth.StateCleaning || res.Resource.LeaseID != res.Lease.ID {
		t.Fatalf("claim: lease %+v, resource %+v", res.Lease, res.Resource)
	}
	return res
}

func cleanEnd(t *testing.T, s store.Store, p store.CleanEndParams) *store.CleanEndResult {
	t.Helper()
	if p.Policy == nil {
		p.Policy = cleanPolicy
	}
	res, err := s.CleanEnd(context.Background(), &p)
	if err != nil {
		t.Fatalf("CleanEnd(%+v): %v", p, err)
	}
	return res
}

// dirtyOne makes resource vm-1 of a janitor pool dirty: leased and
// released.
func dirtyOne(t *testing.T, s store.Store) *berth.Lease {
	t.Helper()
	sync(t, s, t0, janitorPool("vm", names(1, "vm-")...))
	l := mustLease(t, acquire(t, s, acq{typ: "vm"}))
	if r := release(t, s, l.ID, berth.StateDirty, at(time.Second)).Resource; r.State != berth.StateDirty || r.CleanAttempts != 0 {
		t.Fatalf("released to dirty: %+v", r)
	}
	return l
}

func reasons(t *testing.T, s store.Store, resource string) []string {
	t.Helper()
	evs, err := s.EventList(context.Background(), &store.EventListParams{Resource: resource})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range evs {
		out = append(out, e.Reason)
	}
	return out
}

func testCleanClaimAndFinish(t *testing.T, s store.Store) {
	dirtyOne(t, s)
	if res := claim(t, s, "other", at(2*time.Second)); res.Lease != nil || !res.NextAt.IsZero() {
		t.Fatalf("claim of a type without dirty resources: %+v", res)
	}
	c := mustClaim(t, s, "vm", at(2*time.Second))
	if c.Attempt != 1 || c.Lease.Owner != "janitor" || c.Lease.ExpiresAt != at(2*time.Second).Add(ttl) {
		t.Fatalf("claim: attempt %d, lease %+v", c.Attempt, c.Lease)
	}
	if res := claim(t, s, "vm", at(2*time.Second)); res.Lease != nil {
		t.Fatalf("a second claim took the resource being cleaned: %+v", res)
	}
	// A cleaning lease is heartbeated like any other.
	hb, err := s.LeaseHeartbeat(context.Background(), &store.LeaseHeartbeatParams{ID: c.Lease.ID, Now: at(3 * time.Second)})
	if err != nil || hb.Resource.State != berth.StateCleaning {
		t.Fatalf("heartbeat of a cleaning lease: %+v, %v", hb, err)
	}
	end := cleanEnd(t, s, store.CleanEndParams{ID: c.Lease.ID, OK: true, Output: "wiped", Now: at(4 * time.Second)})
	if end.Resource.State != berth.StateFree || end.Resource.CleanAttempts != 0 || end.Lease.Status != berth.LeaseReleased {
		t.Fatalf("cleaned: resource %+v, lease %+v", end.Resource, end.Lease)
	}
	if end.Event.Kind != berth.EventJanitor || end.Event.Output != "wiped" || end.Event.From != "cleaning" || end.Event.To != "free" {
		t.Fatalf("cleaned event: %+v", end.Event)
	}
	if got, want := reasons(t, s, "vm-1"), []string{"added", "acquired", "released", "cleaning", "cleaned"}; !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	mustLease(t, acquire(t, s, acq{typ: "vm", now: at(5 * time.Second)}))
}

func testCleanFailureBacksOff(t *testing.T, s store.Store) {
	dirtyOne(t, s)
	c := mustClaim(t, s, "vm", at(2*time.Second))
	end := cleanEnd(t, s, store.CleanEndParams{ID: c.Lease.ID, Message: "exit status 1", Output: "rm: cannot remove", Now: at(3 * time.Second)})
	r := end.Resource
	if r.State != berth.StateDirty || r.CleanAttempts != 1 || r.NextCleanAt == nil || !r.NextCleanAt.Equal(at(4*time.Second)) {
		t.Fatalf("after a failed cleaning: %+v", r)
	}
	if end.Event.Reason != store.ReasonCleanFailed || end.Event.Output != "rm: cannot remove" || !strings.Contains(end.Event.Message, "attempt 1 of 3") {
		t.Fatalf("failure event: %+v", end.Event)
	}
	// Not before its backoff has passed; the claim says when.
	if res := claim(t, s, "vm", at(3500*time.Millisecond)); res.Lease != nil || !res.NextAt.Equal(at(4*time.Second)) {
		t.Fatalf("claim during the backoff: %+v", res)
	}
	if _, err := s.LeaseAcquire(context.Background(), &store.LeaseAcquireParams{Type: "vm", Owner: "job", LeaseTTL: ttl, Now: at(3500 * time.Millisecond)}); err != nil {
		t.Fatal(err)
	} else if r := get(t, s, "vm-1"); r.State != berth.StateDirty {
		t.Fatalf("a dirty resource was leased: %+v", r)
	}
	c = mustClaim(t, s, "vm", at(4*time.Second))
	if c.Attempt != 2 {
		t.Fatalf("second claim: attempt %d", c.Attempt)
	}
	end = cleanEnd(t, s, store.CleanEndParams{ID: c.Lease.ID, Message: "exit status 2", Now: at(5 * time.Second)})
	if !end.Resource.NextCleanAt.Equal(at(7 * time.Second)) {
		t.Fatalf("second backoff: %+v", end.Resource)
	}
	c = mustClaim(t, s, "vm", at(7*time.Second))
	end = cleanEnd(t, s, store.CleanEndParams{ID: c.Lease.ID, Message: "exit status 3", Output: "disk on fire", Now: at(8 * time.Second)})
	r = end.Resource
	if r.State != berth.StateQuarantined || r.CleanAttempts != 3 || !strings.Contains(r.StateReason, "cleaning failed 3 times") ||
		!strings.Contains(r.StateReason, "exit status 3: disk on fire") {
		t.Fatalf("after the last attempt: %+v", r)
	}
	if res := claim(t, s, "vm", at(time.Hour)); res.Lease != nil || !res.NextAt.IsZero() {
		t.Fatalf("a quarantined resource was claimed: %+v", res)
	}
	want := []string{"added", "acquired", "released", "cleaning", "clean-failed", "cleaning", "clean-failed", "cleaning", "quarantined"}
	if got := reasons(t, s, "vm-1"); !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
}

func testCleanLeaseExpiry(t *testing.T, s store.Store) {
	ctx := context.Background()
	dirtyOne(t, s)
	c := mustClaim(t, s, "vm", at(2*time.Second))
	p := &store.CleanEndParams{ID: c.Lease.ID, Expired: true, Message: "the janitor stopped heartbeating", Policy: cleanPolicy,
		Actor: "reaper", Now: c.Lease.ExpiresAt.Add(-time.Millisecond)}
	if _, err := s.CleanEnd(ctx, p); !errors.Is(err, store.ErrLeaseActive) {
		t.Fatalf("expiring a cleaning lease before its expiry: %v, want ErrLeaseActive", err)
	}
	// Past its expiry the janitor has lost it: it can no longer finish.
	if _, err := s.CleanEnd(ctx, &store.CleanEndParams{ID: c.Lease.ID, OK: true, Policy: cleanPolicy, Now: c.Lease.ExpiresAt}); !errors.Is(err, store.ErrLeaseEnded) {
		t.Fatalf("finishing an expired cleaning lease: %v, want ErrLeaseEnded", err)
	}
	p.Now = c.Lease.ExpiresAt
	res, err := s.CleanEnd(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if res.Lease.Status != berth.LeaseExpired || res.Resource.State != berth.StateDirty || res.Resource.CleanAttempts != 1 || res.Event.Actor != "reaper" {
		t.Fatalf("expired cleaning: lease %+v, resource %+v, event %+v", res.Lease, res.Resource, res.Event)
	}
	expired, err := s.LeaseListExpired(ctx, &store.LeaseListExpiredParams{Now: at(time.Hour)})
	if err != nil || len(expired) != 0 {
		t.Fatalf("expired leases after the reap: %v, %v", expired, err)
	}
}

func testCleanedGoesToWaiter(t *testing.T, s store.Store) {
	dirtyOne(t, s)
	c := mustClaim(t, s, "vm", at(2*time.Second))
	if res := acquire(t, s, acq{typ: "vm", owner: "waiter", requestID: "w", wait: true, now: at(2 * time.Second), waitUntil: at(time.Hour)}); res.Request == nil {
		t.Fatalf("the waiter did not queue: %+v", res)
	}
	end := cleanEnd(t, s, store.CleanEndParams{ID: c.Lease.ID, OK: true, Now: at(3 * time.Second)})
	if end.Handoff == nil || end.Handoff.RequestID != "w" {
		t.Fatalf("cleaned with a waiter: handoff %+v", end.Handoff)
	}
	got := mustLease(t, acquire(t, s, acq{typ: "vm", owner: "waiter", requestID: "w", wait: true, now: at(3 * time.Second), waitUntil: at(time.Hour)}))
	if got.Resource != "vm-1" || got.Kind != berth.LeaseUse {
		t.Fatalf("the waiter got %+v", got)
	}
}

func testCleanLeaseKinds(t *testing.T, s store.Store) {
	ctx := context.Background()
	dirtyOne(t, s)
	c := mustClaim(t, s, "vm", at(2*time.Second))
	_, err := s.LeaseRelease(ctx, &store.LeaseReleaseParams{ID: c.Lease.ID, To: berth.StateFree, Now: at(3 * time.Second), HandoffTTL: ttl})
	if berth.ErrorCodeOf(err) != berth.EConflict {
		t.Fatalf("release of a cleaning lease: %v, want a conflict", err)
	}
	if r := get(t, s, "vm-1"); r.State != berth.StateCleaning {
		t.Fatalf("a refused release changed the resource: %+v", r)
	}
	cleanEnd(t, s, store.CleanEndParams{ID: c.Lease.ID, OK: true, Now: at(3 * time.Second)})
	l := mustLease(t, acquire(t, s, acq{typ: "vm", now: at(4 * time.Second)}))
	if _, err := s.CleanEnd(ctx, &store.CleanEndParams{ID: l.ID, OK: true, Policy: cleanPolicy, Now: at(5 * time.Second)}); berth.ErrorCodeOf(err) != berth.EConflict {
		t.Fatalf("clean end of a job's lease: %v, want a conflict", err)
	}
	if _, err := s.CleanEnd(ctx, &store.CleanEndParams{ID: "nope", OK: true, Policy: cleanPolicy, Now: at(5 * time.Second)}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("clean end of no lease: %v, want ErrNotFound", err)
	}
}

func testCleanClaimRacesClaim(t *testing.T, s store.Store) {
	ctx := context.Background()
	sync(t, s, t0, janitorPool("vm", names(1, "vm-")...))
	for i := range 20 {
		now := at(time.Duration(i) * time.Minute)
		l := mustLease(t, acquire(t, s, acq{typ: "vm", now: now}))
		release(t, s, l.ID, berth.StateDirty, now)
		var got [2]*store.CleanClaimResult
		one := func(k int) func() error {
			return func() (err error) {
				got[k], err = s.CleanClaim(ctx, &store.CleanClaimParams{Type: "vm", Owner: fmt.Sprintf("j%d", k), LeaseTTL: ttl, Now: now})
				return err
			}
		}
		if err := together(one(0), one(1)); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		if (got[0].Lease == nil) == (got[1].Lease == nil) {
			t.Fatalf("round %d: both claims or neither got the resource: %+v, %+v", i, got[0], got[1])
		}
		winner := got[0]
		if winner.Lease == nil {
			winner = got[1]
		}
		cleanEnd(t, s, store.CleanEndParams{ID: winner.Lease.ID, OK: true, Now: now})
	}
}

// testCleanEndRacesExpiry ends a cleaning lease at its expiry twice at
// once, as the janitor (too late) and the reaper: exactly one wins, and
// the resource moves on once.
func testCleanEndRacesExpiry(t *testing.T, s store.Store) {
	ctx := context.Background()
	sync(t, s, t0, janitorPool("vm", names(1, "vm-")...))
	for i := range 20 {
		now := at(time.Duration(i) * time.Hour)
		l := mustLease(t, acquire(t, s, acq{typ: "vm", now: now}))
		release(t, s, l.ID, berth.StateDirty, now)
		c := mustClaim(t, s, "vm", now)
		var ended [2]bool
		end := func(k int, expired bool) func() error {
			return func() error {
				_, err := s.CleanEnd(ctx, &store.CleanEndParams{ID: c.Lease.ID, Expired: expired, OK: !expired, Policy: cleanPolicy, Now: c.Lease.ExpiresAt})
				if errors.Is(err, store.ErrLeaseEnded) {
					return nil
				}
				ended[k] = err == nil
				return err
			}
		}
		if err := together(end(0, true), end(1, false)); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		if !ended[0] || ended[1] {
			t.Fatalf("round %d: ended by the reaper %v, by the late janitor %v; want the reaper only", i, ended[0], ended[1])
		}
		c = mustClaim(t, s, "vm", now.Add(time.Minute+time.Second))
		cleanEnd(t, s, store.CleanEndParams{ID: c.Lease.ID, OK: true, Now: now.Add(time.Minute + time.Second)})
	}
}

func testBrokenDeepClean(t *testing.T, s store.Store) {
	sync(t, s, t0, janitorPool("vm", names(1, "vm-")...))
	l := mustLease(t, acquire(t, s, acq{typ: "vm"}))
	res, err := s.LeaseRelease(context.Background(), &store.LeaseReleaseParams{ID: l.ID, To: berth.StateDirty, Deep: true,
		Reason: "kubelet wedged", Now: at(time.Second), HandoffTTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	if r := res.Resource; r.State != berth.StateDirty || !r.DeepClean || r.StateReason != "kubelet wedged" {
		t.Fatalf("reported broken, to be cleaned deeply: %+v", r)
	}
	c := mustClaim(t, s, "vm", at(2*time.Second))
	if !c.Resource.DeepClean {
		t.Fatalf("the janitor was not told to clean deeply: %+v", c.Resource)
	}
	end := cleanEnd(t, s, store.CleanEndParams{ID: c.Lease.ID, Message: "exit status 1", Now: at(3 * time.Second)})
	if r := end.Resource; !r.DeepClean || r.StateReason != "kubelet wedged" {
		t.Fatalf("a failed deep cleaning forgot what it was for: %+v", r)
	}
	c = mustClaim(t, s, "vm", at(time.Minute))
	end = cleanEnd(t, s, store.CleanEndParams{ID: c.Lease.ID, OK: true, Now: at(time.Minute)})
	if r := end.Resource; r.DeepClean || r.StateReason != "" || r.State != berth.StateFree {
		t.Fatalf("after the deep cleaning: %+v", r)
	}
	// A job's report goes on its release event, with the job as actor.
	evs, err := s.EventList(context.Background(), &store.EventListParams{Resource: "vm-1", Limit: 3})
	if err != nil {
		t.Fatal(err)
	}
	if rel := evs[2]; rel.Reason != "released" || rel.To != "dirty" || rel.Message != "kubelet wedged" || rel.Actor != "job" {
		t.Fatalf("release event: %+v", rel)
	}
}

func testQuarantineRevokes(t *testing.T, s store.Store) {
	ctx := context.Background()
	sync(t, s, t0, janitorPool("vm", names(2, "vm-")...))
	l := mustLease(t, acquire(t, s, acq{typ: "vm"}))
	q := func(name string) *store.ResourceChangeResult {
		t.Helper()
		res, err := s.ResourceQuarantine(ctx, &store.ResourceQuarantineParams{Name: name, Reason: "fan failure", Actor: "admin", Now: at(time.Second)})
		if err != nil {
			t.Fatalf("quarantine %s: %v", name, err)
		}
		return res
	}
	res := q(l.Resource)
	if res.Resource.State != berth.StateQuarantined || res.Resource.StateReason != "fan failure" || res.Resource.LeaseID != "" || res.Revoked == nil {
		t.Fatalf("quarantine of a leased resource: %+v", res)
	}
	got, err := s.LeaseGet(ctx, l.ID)
	if err != nil || got.Status != berth.LeaseRevoked || got.EndedAt == nil {
		t.Fatalf("the revoked lease: %+v, %v", got, err)
	}
	if _, err := s.LeaseHeartbeat(ctx, &store.LeaseHeartbeatParams{ID: l.ID, Now: at(2 * time.Second)}); !errors.Is(err, store.ErrLeaseEnded) {
		t.Fatalf("heartbeat of a revoked lease: %v, want ErrLeaseEnded", err)
	}
	if _, err := s.LeaseRelease(ctx, &store.LeaseReleaseParams{ID: l.ID, To: berth.StateFree, Now: at(2 * time.Second)}); !errors.Is(err, store.ErrLeaseEnded) {
		t.Fatalf("release of a revoked lease: %v, want ErrLeaseEnded", err)
	}
	if again := q(l.Resource); !again.Unchanged {
		t.Fatalf("quarantine twice: %+v", again)
	}
	// A free resource, and one being cleaned (the janitor's lease goes).
	other := "vm-1"
	if l.Resource == other {
		other = "vm-2"
	}
	if res := q(other); res.Revoked != nil || res.Resource.State != berth.StateQuarantined {
		t.Fatalf("quarantine of a free resource: %+v", res)
	}
	if _, err := s.ResourceQuarantine(ctx, &store.ResourceQuarantineParams{Name: "nope", Reason: "x", Now: at(time.Second)}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("quarantine of no resource: %v", err)
	}
	if res := acquire(t, s, acq{typ: "vm", now: at(3 * time.Second)}); res.Lease != nil {
		t.Fatalf("a quarantined resource was leased: %+v", res)
	}
	if got, want := reasons(t, s, l.Resource), []string{"added", "acquired", "revoked", "quarantined"}; !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
}

func testUnquarantine(t *testing.T, s store.Store) {
	ctx := context.Background()
	sync(t, s, t0, janitorPool("vm", names(2, "vm-")...))
	for _, n := range []string{"vm-1", "vm-2"} {
		if _, err := s.ResourceQuarantine(ctx, &store.ResourceQuarantineParams{Name: n, Reason: "check", Actor: "admin", Now: at(time.Second)}); err != nil {
			t.Fatal(err)
		}
	}
	if res := acquire(t, s, acq{typ: "vm", owner: "waiter", requestID: "w", wait: true, now: at(2 * time.Second), waitUntil: at(time.Hour)}); res.Request == nil {
		t.Fatalf("the waiter did not queue: %+v", res)
	}
	un := func(name string, to berth.State) (*store.ResourceChangeResult, error) {
		return s.ResourceUnquarantine(ctx, &store.ResourceUnquarantineParams{Name: name, To: to, Reason: "fixed", HandoffTTL: ttl, Actor: "admin", Now: at(3 * time.Second)})
	}
	res, err := un("vm-1", berth.StateDirty)
	if err != nil || res.Resource.State != berth.StateDirty || res.Resource.StateReason != "" || len(res.Handoffs) != 0 {
		t.Fatalf("unquarantine to dirty: %+v, %v", res, err)
	}
	res, err = un("vm-2", berth.StateFree)
	if err != nil || len(res.Handoffs) != 1 || res.Handoffs[0].RequestID != "w" || res.Resource.State != berth.StateBusy {
		t.Fatalf("unquarantine to free with a waiter: %+v, %v", res, err)
	}
	if _, err := un("vm-1", berth.StateFree); berth.ErrorCodeOf(err) != berth.EConflict {
		t.Fatalf("unquarantine of a dirty resource: %v, want a conflict", err)
	}
}

func testDrainResource(t *testing.T, s store.Store) {
	ctx := context.Background()
	sync(t, s, t0, pool("vm", names(1, "vm-")...))
	drain := func(d bool, now time.Time) *store.ResourceChangeResult {
		t.Helper()
		res, err := s.ResourceDrain(ctx, &store.ResourceDrainParams{Name: "vm-1", Drain: d, Reason: "kernel upgrade", HandoffTTL: ttl, Actor: "admin", Now: now})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	l := mustLease(t, acquire(t, s, acq{typ: "vm"}))
	if res := drain(true, at(time.Second)); !res.Resource.Draining || res.Resource.LeaseID != l.ID {
		t.Fatalf("drain of a leased resource: %+v", res.Resource)
	}
	if !drain(true, at(time.Second)).Unchanged {
		t.Fatal("draining twice changed something")
	}
	// Its lease runs as usual; released, it is free but not leased again.
	if _, err := s.LeaseHeartbeat(ctx, &store.LeaseHeartbeatParams{ID: l.ID, Now: at(2 * time.Second)}); err != nil {
		t.Fatalf("heartbeat of a lease on a draining resource: %v", err)
	}
	if res := acquire(t, s, acq{typ: "vm", owner: "waiter", requestID: "w", wait: true, now: at(2 * time.Second), waitUntil: at(time.Hour)}); res.Request == nil {
		t.Fatalf("the waiter did not queue: %+v", res)
	}
	if rel := release(t, s, l.ID, berth.StateFree, at(3*time.Second)); rel.Handoff != nil || rel.Resource.State != berth.StateFree {
		t.Fatalf("a draining resource was handed over: %+v", rel)
	}
	ps, err := s.PoolList(ctx)
	if err != nil || ps[0].DrainingResources != 1 || ps[0].Leasable != 0 {
		t.Fatalf("pool of a drained resource: %+v, %v", ps[0], err)
	}
	if res := drain(false, at(4*time.Second)); len(res.Handoffs) != 1 || res.Handoffs[0].RequestID != "w" {
		t.Fatalf("undrain with a waiter: %+v", res)
	}
}

func testDrainPool(t *testing.T, s store.Store) {
	ctx := context.Background()
	sync(t, s, t0, pool("vm", names(3, "vm-")...), pool("gpu", names(1, "gpu-")...))
	d := func(drain bool, now time.Time) *store.PoolDrainResult {
		t.Helper()
		res, err := s.PoolDrain(ctx, &store.PoolDrainParams{Type: "vm", Drain: drain, Reason: "migration", HandoffTTL: ttl, Actor: "admin", Now: now})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	l := mustLease(t, acquire(t, s, acq{typ: "vm"}))
	if res := d(true, at(time.Second)); res.Unchanged {
		t.Fatal("drain changed nothing")
	}
	if !d(true, at(time.Second)).Unchanged {
		t.Fatal("draining twice changed something")
	}
	if res := acquire(t, s, acq{typ: "vm", now: at(2 * time.Second)}); res.Lease != nil {
		t.Fatalf("a drained pool leased %+v", res.Lease)
	}
	mustLease(t, acquire(t, s, acq{typ: "gpu", now: at(2 * time.Second)}))
	for _, w := range []string{"w1", "w2"} {
		if res := acquire(t, s, acq{typ: "vm", owner: w, requestID: w, wait: true, now: at(2 * time.Second), waitUntil: at(time.Hour)}); res.Request == nil {
			t.Fatalf("%s did not queue: %+v", w, res)
		}
	}
	if rel := release(t, s, l.ID, berth.StateFree, at(3*time.Second)); rel.Handoff != nil {
		t.Fatalf("a drained pool handed a released resource over: %+v", rel.Handoff)
	}
	ps, err := s.PoolList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		if p.Type == "vm" && (!p.Draining || p.Leasable != 0) || p.Type == "gpu" && p.Draining {
			t.Fatalf("pool %+v", p)
		}
	}
	res := d(false, at(4*time.Second))
	if len(res.Handoffs) != 2 || res.Handoffs[0].RequestID != "w1" || res.Handoffs[1].RequestID != "w2" {
		t.Fatalf("undrain with two waiters: %+v", res.Handoffs)
	}
	if _, err := s.PoolDrain(ctx, &store.PoolDrainParams{Type: "nope", Drain: true, Now: at(time.Second)}); berth.ErrorCodeOf(err) != berth.EUnknownType {
		t.Fatalf("drain of no pool: %v", err)
	}
	// The drain lives apart from the pool's row, which a sync rewrites.
	d(true, at(5*time.Second))
	sync(t, s, at(6*time.Second), pool("vm", names(3, "vm-")...), pool("gpu", names(1, "gpu-")...))
	if ps, err := s.PoolList(ctx); err != nil || !ps[1].Draining {
		t.Fatalf("the drain did not survive a sync: %+v, %v", ps, err)
	}
}

func testAddAndRetire(t *testing.T, s store.Store) {
	ctx := context.Background()
	sync(t, s, t0, pool("vm", names(1, "vm-")...))
	mustLease(t, acquire(t, s, acq{typ: "vm"}))
	if res := acquire(t, s, acq{typ: "vm", owner: "waiter", requestID: "w", wait: true, now: at(time.Second), waitUntil: at(time.Hour)}); res.Request == nil {
		t.Fatalf("the waiter did not queue: %+v", res)
	}
	add := func(name, typ string) (*store.ResourceChangeResult, error) {
		return s.ResourceAdd(ctx, &store.ResourceAddParams{Type: typ, Spec: store.ResourceSpec{Name: name, UserData: map[string]string{"ip": "10.1.1.1"}},
			Source: berth.SourceAPI, HandoffTTL: ttl, Actor: "admin", Now: at(2 * time.Second)})
	}
	res, err := add("vm-extra", "vm")
	if err != nil || len(res.Handoffs) != 1 || res.Handoffs[0].RequestID != "w" || res.Resource.Source != berth.SourceAPI {
		t.Fatalf("add with a waiter: %+v, %v", res, err)
	}
	if r := get(t, s, "vm-extra"); r.UserData["ip"] != "10.1.1.1" || r.CreatedAt == nil || !r.CreatedAt.Equal(at(2*time.Second)) {
		t.Fatalf("added resource: %+v", r)
	}
	if _, err := add("vm-1", "vm"); berth.ErrorCodeOf(err) != berth.EConflict {
		t.Fatalf("add of a name in use: %v", err)
	}
	if _, err := add("x-1", "nope"); berth.ErrorCodeOf(err) != berth.EUnknownType {
		t.Fatalf("add to no pool: %v", err)
	}
	retire := func(name string) (*store.ResourceChangeResult, error) {
		return s.ResourceRetire(ctx, &store.ResourceRetireParams{Name: name, Reason: "decommissioned", Actor: "admin", Now: at(3 * time.Second)})
	}
	if _, err := retire("vm-1"); berth.ErrorCodeOf(err) != berth.EConflict {
		t.Fatalf("retire of a resource the config declares: %v", err)
	}
	// Leased: it goes when its lease ends.
	res, err = retire("vm-extra")
	if err != nil || !res.Resource.Retiring {
		t.Fatalf("retire of a leased resource: %+v, %v", res, err)
	}
	got := mustLease(t, acquire(t, s, acq{typ: "vm", owner: "waiter", requestID: "w", wait: true, now: at(3 * time.Second), waitUntil: at(time.Hour)}))
	if rel := release(t, s, got.ID, berth.StateFree, at(4*time.Second)); rel.Resource != nil {
		t.Fatalf("a retired resource stayed after its lease: %+v", rel.Resource)
	}
	if _, err := s.ResourceGet(ctx, "vm-extra"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("retired resource: %v", err)
	}
	// Not leased: it goes at once.
	if _, err := add("vm-spare", "vm"); err != nil {
		t.Fatal(err)
	}
	if res, err := retire("vm-spare"); err != nil || res.Resource != nil {
		t.Fatalf("retire of a free resource: %+v, %v", res, err)
	}
	if got, want := reasons(t, s, "vm-spare"), []string{"added", "removed"}; !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
}

func testSyncKeepsRuntimeResources(t *testing.T, s store.Store) {
	ctx := context.Background()
	sync(t, s, t0, pool("vm", names(1, "vm-")...), pool("gpu"))
	for _, r := range []struct{ name, typ string }{{"vm-api", "vm"}, {"gpu-api", "gpu"}, {"vm-2", "vm"}} {
		if _, err := s.ResourceAdd(ctx, &store.ResourceAddParams{Type: r.typ, Spec: store.ResourceSpec{Name: r.name}, Source: berth.SourceAPI,
			HandoffTTL: ttl, Actor: "admin", Now: at(time.Second)}); err != nil {
			t.Fatal(err)
		}
	}
	// vm stays, with what was added to it; gpu goes, and so does what
	// was added to it; vm-2 is in the config now, and belongs to it.
	res := sync(t, s, at(2*time.Second), pool("vm", names(2, "vm-")...))
	if !slices.Equal(res.Removed, []string{"gpu-api"}) {
		t.Fatalf("sync removed %v, want only gpu-api", res.Removed)
	}
	if r := get(t, s, "vm-api"); r.Source != berth.SourceAPI {
		t.Fatalf("vm-api: %+v", r)
	}
	if r := get(t, s, "vm-2"); r.Source != berth.SourceConfig {
		t.Fatalf("vm-2, now in the config: %+v", r)
	}
}

func testDynamicDelete(t *testing.T, s store.Store) {
	ctx := context.Background()
	p := pool("vm")
	p.Dynamic = &berth.Dynamic{MinFree: 1, MaxTotal: 3}
	sync(t, s, t0, p)
	add := func(name string) {
		t.Helper()
		if _, err := s.ResourceAdd(ctx, &store.ResourceAddParams{Type: "vm", Spec: store.ResourceSpec{Name: name}, Source: berth.SourceDynamic,
			Message: "made by the provisioner", Output: "created " + name, HandoffTTL: ttl, Actor: "provisioner", Now: at(time.Second)}); err != nil {
			t.Fatal(err)
		}
	}
	add("vm-a")
	add("vm-b")
	if ps, err := s.PoolList(ctx); err != nil || ps[0].Dynamic == nil || ps[0].Dynamic.MaxTotal != 3 || ps[0].Total != 2 {
		t.Fatalf("dynamic pool: %+v, %v", ps, err)
	}
	begin := func(name string, again bool, now time.Time) (*berth.Resource, error) {
		return s.ResourceDeleteBegin(ctx, &store.ResourceDeleteBeginParams{Name: name, Reason: "past its lifespan", Again: again, Actor: "provisioner", Now: now})
	}
	backoff := func(n int) time.Duration { return time.Duration(n) * time.Minute }
	end := func(name string, ok bool, now time.Time) *berth.Resource {
		t.Helper()
		r, err := s.ResourceDeleteEnd(ctx, &store.ResourceDeleteEndParams{Name: name, OK: ok, Message: "exit status 1", Output: "quota",
			MaxAttempts: 2, Backoff: backoff, Actor: "provisioner", Now: now})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	l := mustLease(t, acquire(t, s, acq{typ: "vm", now: at(2 * time.Second)}))
	if _, err := begin(l.Resource, false, at(3*time.Second)); berth.ErrorCodeOf(err) != berth.EConflict {
		t.Fatalf("delete of a leased resource: %v, want a conflict", err)
	}
	// Retired while leased, it is neither removed nor leased again when
	// its lease ends: it waits for the deprovisioner.
	if res, err := s.ResourceRetire(ctx, &store.ResourceRetireParams{Name: l.Resource, Actor: "admin", Now: at(2500 * time.Millisecond)}); err != nil || !res.Resource.Retiring {
		t.Fatalf("retire a leased dynamic resource: %+v, %v", res, err)
	}
	if rel := release(t, s, l.ID, berth.StateFree, at(2700*time.Millisecond)); rel.Resource == nil || rel.Resource.State != berth.StateFree {
		t.Fatalf("release of a retiring dynamic resource: %+v", rel)
	}
	other := "vm-a"
	if l.Resource == other {
		other = "vm-b"
	}
	r, err := begin(other, false, at(3*time.Second))
	if err != nil || r.State != berth.StateDeleting {
		t.Fatalf("begin deletion: %+v, %v", r, err)
	}
	if res := acquire(t, s, acq{typ: "vm", now: at(3 * time.Second)}); res.Lease != nil {
		t.Fatalf("a resource being deleted was leased: %+v", res)
	}
	if _, err := begin(other, false, at(3*time.Second)); berth.ErrorCodeOf(err) != berth.EConflict {
		t.Fatalf("deleting twice: %v, want a conflict", err)
	}
	if r := end(other, false, at(4*time.Second)); r.State != berth.StateDeleting || r.CleanAttempts != 1 || !r.NextCleanAt.Equal(at(4*time.Second+time.Minute)) {
		t.Fatalf("after a failed deletion: %+v", r)
	}
	if _, err := begin(other, true, at(5*time.Second)); berth.ErrorCodeOf(err) != berth.EConflict {
		t.Fatalf("retry during the backoff: %v, want a conflict", err)
	}
	if _, err := begin(other, true, at(2*time.Minute)); err != nil {
		t.Fatalf("retry after the backoff: %v", err)
	}
	if r := end(other, true, at(2*time.Minute)); r != nil {
		t.Fatalf("deleted resource still there: %+v", r)
	}
	want := []string{"provisioned", "deprovisioning", "deprovision-failed", "deprovisioned"}
	if got := reasons(t, s, other); !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	if res := acquire(t, s, acq{typ: "vm", now: at(5 * time.Minute)}); res.Lease != nil {
		t.Fatalf("a retiring resource was leased: %+v", res)
	}
	// Two failures quarantine it, with the deprovisioner's last words.
	if _, err := begin(l.Resource, false, at(6*time.Minute)); err != nil {
		t.Fatal(err)
	}
	end(l.Resource, false, at(6*time.Minute))
	if _, err := begin(l.Resource, true, at(8*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if r := end(l.Resource, false, at(8*time.Minute)); r.State != berth.StateQuarantined || !strings.Contains(r.StateReason, "deprovisioning failed 2 times") {
		t.Fatalf("after the last failed deletion: %+v", r)
	}
	// Only what a provisioner made is deleted by one.
	sync(t, s, at(9*time.Minute), p, pool("static", names(1, "st-")...))
	if _, err := begin("st-1", false, at(9*time.Minute)); berth.ErrorCodeOf(err) != berth.EConflict {
		t.Fatalf("delete of a static resource: %v, want a conflict", err)
	}
}

func testEventsByKindAndActor(t *testing.T, s store.Store) {
	ctx := context.Background()
	dirtyOne(t, s)
	c := mustClaim(t, s, "vm", at(2*time.Second))
	cleanEnd(t, s, store.CleanEndParams{ID: c.Lease.ID, OK: true, Output: "ok", Now: at(3 * time.Second)})
	evs, err := s.EventList(ctx, &store.EventListParams{Kind: berth.EventJanitor})
	if err != nil || len(evs) != 2 || evs[0].Reason != "cleaning" || evs[1].Output != "ok" {
		t.Fatalf("janitor events: %+v, %v", evs, err)
	}
	evs, err = s.EventList(ctx, &store.EventListParams{Actor: "job"})
	if err != nil || len(evs) != 1 || evs[0].Reason != "acquired" {
		t.Fatalf("events of job: %+v, %v", evs, err)
	}
}

func testCleanAbandoned(t *testing.T, s store.Store) {
	dirtyOne(t, s)
	c := mustClaim(t, s, "vm", at(2*time.Second))
	end := cleanEnd(t, s, store.CleanEndParams{ID: c.Lease.ID, Message: "exit status 1", Now: at(3 * time.Second)})
	c = mustClaim(t, s, "vm", end.Resource.NextCleanAt.Add(0))
	if c.Attempt != 2 {
		t.Fatalf("attempt %d, want 2", c.Attempt)
	}
	end = cleanEnd(t, s, store.CleanEndParams{ID: c.Lease.ID, Abandon: true, Message: "berth shut down", Now: at(10 * time.Second)})
	r := end.Resource
	if r.State != berth.StateDirty || r.CleanAttempts != 1 || r.NextCleanAt != nil || end.Event.Reason != store.ReasonCleanAbandoned {
		t.Fatalf("abandoned: resource %+v, event %+v", r, end.Event)
	}
	if c := mustClaim(t, s, "vm", at(10*time.Second)); c.Attempt != 2 {
		t.Fatalf("after an abandoned attempt: attempt %d, want 2 again", c.Attempt)
	}
}

func testEventRecord(t *testing.T, s store.Store) {
	ctx := context.Background()
	sync(t, s, t0, pool("vm"))
	ev := &berth.Event{Time: at(time.Second), Type: "vm", Kind: berth.EventProvision, Reason: "provision-failed", Actor: "provisioner",
		Message: "exit status 3", Output: "quota exceeded"}
	if err := s.EventRecord(ctx, ev); err != nil {
		t.Fatal(err)
	}
	evs, err := s.EventList(ctx, &store.EventListParams{Type: "vm", Kind: berth.EventProvision})
	if err != nil || len(evs) != 1 {
		t.Fatalf("recorded events: %+v, %v", evs, err)
	}
	got := *evs[0]
	got.ID = 0
	if got != *ev {
		t.Fatalf("recorded %+v, read back %+v", *ev, got)
	}
}

func testCleanClaimIdempotent(t *testing.T, s store.Store) {
	ctx := context.Background()
	sync(t, s, t0, janitorPool("vm", names(2, "vm-")...))
	for _, n := range []string{"a", "b"} {
		l := mustLease(t, acquire(t, s, acq{typ: "vm", owner: n}))
		release(t, s, l.ID, berth.StateDirty, at(time.Second))
	}
	p := &store.CleanClaimParams{Type: "vm", Owner: "janitor", RequestID: "claim-1", LeaseTTL: ttl, Now: at(2 * time.Second)}
	first, err := s.CleanClaim(ctx, p)
	if err != nil || first.Lease == nil || first.Lease.RequestID != "claim-1" {
		t.Fatalf("claim: %+v, %v", first, err)
	}
	again, err := s.CleanClaim(ctx, p)
	if err != nil || again.Lease == nil || again.Lease.ID != first.Lease.ID || again.Attempt != 1 {
		t.Fatalf("retried claim: %+v, %v; want lease %s again", again, err, first.Lease.ID)
	}
	p.Owner = "other"
	if _, err := s.CleanClaim(ctx, p); berth.ErrorCodeOf(err) != berth.EInvalid {
		t.Fatalf("claim with another janitor's request id: %v", err)
	}
	// Once its lease has ended, the request id claims afresh.
	cleanEnd(t, s, store.CleanEndParams{ID: first.Lease.ID, OK: true, Now: at(3 * time.Second)})
	p.Owner, p.Now = "janitor", at(3*time.Second)
	if next, err := s.CleanClaim(ctx, p); err != nil || next.Lease == nil || next.Lease.ID == first.Lease.ID {
		t.Fatalf("claim after the first ended: %+v, %v", next, err)
	}
}

// testCleanEndWithoutJanitor: a cleaning that fails (or whose lease runs
// out) after its pool lost its janitor leaves the resource free, not dirty
// with nothing to clean it.
func testCleanEndWithoutJanitor(t *testing.T, s store.Store) {
	dirtyOne(t, s)
	c := mustClaim(t, s, "vm", at(2*time.Second))
	sync(t, s, at(3*time.Second), pool("vm", names(1, "vm-")...)) // the janitor leaves the config
	if res := acquire(t, s, acq{typ: "vm", owner: "waiter", requestID: "w", wait: true, now: at(3 * time.Second), waitUntil: at(time.Hour)}); res.Request == nil {
		t.Fatalf("the waiter did not queue: %+v", res)
	}
	none := func(string) store.CleanPolicy {
		return store.CleanPolicy{MaxAttempts: 3, HandoffTTL: ttl, NoJanitor: true}
	}
	end := cleanEnd(t, s, store.CleanEndParams{ID: c.Lease.ID, Expired: true, Message: "gone", Policy: none, Actor: "reaper", Now: c.Lease.ExpiresAt})
	if end.Handoff == nil || end.Handoff.RequestID != "w" || end.Event.To != "free" || end.Resource.CleanAttempts != 0 {
		t.Fatalf("end of a cleaning in a pool without a janitor: %+v, event %+v", end.Resource, end.Event)
	}
}
