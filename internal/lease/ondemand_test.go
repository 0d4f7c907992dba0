package lease_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/lease"
)

// onDemandPool is a dynamic type of a Boskos config: resources start
// dirty, at least min, at most max, with a lifespan of an hour.
func onDemandPool(min, max int) lease.Pool {
	return lease.Pool{Type: "aws-cluster", LeaseTTL: ttl, Janitor: lease.JanitorExternal, InitialState: berth.StateDirty,
		Dynamic: &berth.Dynamic{MaxTotal: max, Lifespan: berth.Duration(time.Hour)}, OnDemand: &lease.OnDemand{MinCount: min, MaxCount: max}}
}

func (f *fixture) names(t *testing.T, typ string) map[string]berth.State {
	t.Helper()
	rs, err := f.eng.Resources(context.Background(), &lease.ResourceListParams{Type: typ})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]berth.State{}
	for _, r := range rs {
		out[r.Name] = r.State
	}
	return out
}

// TestOnDemandMakesForNewRequests: a request that joins the queue and finds
// nothing makes one resource, in the type's initial state, while the type
// has fewer than MaxCount; polling again makes nothing more.
func TestOnDemandMakesForNewRequests(t *testing.T) {
	f := newFixture(t, onDemandPool(0, 2))
	ctx := context.Background()
	poll := func(id string) {
		res, err := f.eng.Acquire(ctx, lease.AcquireParams{Type: "aws-cluster", Owner: "job", RequestID: id, Hold: 30 * time.Second})
		if err != nil || res.Lease != nil || res.Request == nil {
			t.Fatalf("poll %s: %+v, %v; want queued", id, res, err)
		}
	}
	poll("a")
	got := f.names(t, "aws-cluster")
	if len(got) != 1 {
		t.Fatalf("after one new request: %v; want one resource", got)
	}
	for name, st := range got {
		if st != berth.StateDirty || !strings.HasPrefix(name, "aws-cluster-") {
			t.Fatalf("made %s %s; want aws-cluster-… dirty", name, st)
		}
	}
	poll("a")
	if n := len(f.names(t, "aws-cluster")); n != 1 {
		t.Fatalf("a second poll of the same request made more: %d", n)
	}
	poll("b")
	poll("c") // MaxCount reached: nothing more
	if n := len(f.names(t, "aws-cluster")); n != 2 {
		t.Fatalf("after three requests with max-count 2: %d resources", n)
	}
	// A take by state makes one too.
	_, err := f.eng.Take(ctx, lease.TakeParams{Type: "aws-cluster", From: "ready", To: "held", Owner: "j", RequestID: "d", Hold: time.Minute})
	if code := codeOf(err); code != berth.EExhausted {
		t.Fatalf("take: %v", err)
	}
	if n := len(f.names(t, "aws-cluster")); n != 2 {
		t.Fatalf("a take past max-count made one: %d", n)
	}
	evs, err := f.eng.Events(ctx, &lease.EventListParams{Type: "aws-cluster", Kind: berth.EventProvision}, 0)
	if err != nil || len(evs) != 2 || evs[0].Actor != lease.ActorOnDemand || !strings.Contains(evs[0].Message, "request a") {
		t.Fatalf("provision events: %+v, %v", evs, err)
	}
}

func codeOf(err error) berth.ErrorCode {
	var be *berth.Error
	if errors.As(err, &be) {
		return be.Code
	}
	return ""
}

// TestOnDemandFreeGoesToTheWaiter: a type whose resources start free hands
// the one its new request made straight to that request.
func TestOnDemandFreeGoesToTheWaiter(t *testing.T) {
	p := onDemandPool(0, 1)
	p.InitialState = berth.StateFree
	f := newFixture(t, p)
	ctx := context.Background()
	ap := lease.AcquireParams{Type: "aws-cluster", Owner: "job", RequestID: "a", Hold: 30 * time.Second}
	if res, err := f.eng.Acquire(ctx, ap); err != nil || res.Request == nil {
		t.Fatalf("first poll: %+v, %v; want queued (the call that makes one still finds none)", res, err)
	}
	res, err := f.eng.Acquire(ctx, ap)
	if err != nil || res.Lease == nil || res.Lease.Owner != "job" {
		t.Fatalf("second poll: %+v, %v; want the resource made for it", res, err)
	}
}

// TestTend: tombstones go, expired and surplus resources go toBeDeleted
// (only those nobody holds), and the type is made up to MinCount, counting
// what is on its way out until it is a tombstone.
func TestTend(t *testing.T) {
	f := newFixture(t, onDemandPool(2, 3))
	ctx := context.Background()
	if err := f.eng.Tend(ctx); err != nil {
		t.Fatal(err)
	}
	first := f.names(t, "aws-cluster")
	if len(first) != 2 {
		t.Fatalf("after the first tend: %v; want min-count 2", first)
	}
	// Clean one and lease it; then both outlive their lifespan.
	claim, err := f.eng.CleanClaim(ctx, lease.CleanClaimParams{Type: "aws-cluster", Owner: "janitor"})
	if err != nil || claim.Lease == nil {
		t.Fatalf("claim: %+v, %v", claim, err)
	}
	if _, err := f.eng.CleanEnd(ctx, lease.CleanEndParams{ID: claim.Lease.ID, OK: true}); err != nil {
		t.Fatal(err)
	}
	held := f.acquire(t, lease.AcquireParams{Type: "aws-cluster", Owner: "job"}).Lease.Resource
	f.clock.Advance(time.Hour + time.Second)
	if err := f.eng.Tend(ctx); err != nil {
		t.Fatal(err)
	}
	got := f.names(t, "aws-cluster")
	var other string
	for name := range first {
		if name != held {
			other = name
		}
	}
	if got[held] != berth.StateBusy || got[other] != lease.StateToBeDeleted || len(got) != 2 {
		t.Fatalf("after the lifespan: %v; want %s still busy, %s toBeDeleted, nothing new (it still counts)", got, held, other)
	}
	// A cleaner takes it and leaves a tombstone; the next tend removes it
	// and makes a replacement.
	tk, err := f.eng.Take(ctx, lease.TakeParams{Type: "aws-cluster", From: lease.StateToBeDeleted, To: berth.StateCleaning, Owner: "cleaner"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.eng.ReleaseTo(ctx, lease.ReleaseToParams{ID: tk.Leases[0].ID, To: lease.StateTombstone, Actor: "cleaner"}); err != nil {
		t.Fatal(err)
	}
	if err := f.eng.Tend(ctx); err != nil {
		t.Fatal(err)
	}
	got = f.names(t, "aws-cluster")
	if _, ok := got[other]; ok || len(got) != 2 || got[held] != berth.StateBusy {
		t.Fatalf("after the tombstone: %v; want %s gone, one new beside %s", got, other, held)
	}
	// max-count lowered to 1: the idle one (not the held one) goes.
	f.sync(t, onDemandPool(0, 1))
	if err := f.eng.Tend(ctx); err != nil {
		t.Fatal(err)
	}
	got = f.names(t, "aws-cluster")
	var states []berth.State
	for _, st := range got {
		states = append(states, st)
	}
	slices.Sort(states)
	if got[held] != berth.StateBusy || !slices.Equal(states, []berth.State{berth.StateBusy, lease.StateToBeDeleted}) {
		t.Fatalf("after max-count 1: %v; want the idle one toBeDeleted", got)
	}
}

func (f *fixture) sync(t *testing.T, pools ...lease.Pool) {
	t.Helper()
	if _, err := f.eng.SyncPools(context.Background(), pools, "test"); err != nil {
		t.Fatal(err)
	}
}
