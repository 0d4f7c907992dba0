package lease_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"go.uber.org/goleak"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/lease"
	"github.com/berth-ci/berth/internal/store"
	"github.com/berth-ci/berth/internal/store/sqlite"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const ttl = time.Minute

type fixture struct {
	eng   *lease.Engine
	clock *clockwork.FakeClock
	store store.Store
}

func newFixture(t *testing.T, pools ...lease.Pool) *fixture {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "berth.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := st.Check(context.Background()); err != nil {
			t.Errorf("store consistency: %v", err)
		}
		st.Close()
	})
	fc := clockwork.NewFakeClockAt(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	eng := lease.New(lease.Options{Store: st, Clock: fc, Grace: 30 * time.Second, MaxPoll: 10 * time.Minute})
	if len(pools) == 0 {
		pools = []lease.Pool{vmPool(1)}
	}
	if _, err := eng.SyncPools(ctx, pools, "test"); err != nil {
		t.Fatal(err)
	}
	return &fixture{eng: eng, clock: fc, store: st}
}

func vmPool(n int) lease.Pool {
	p := lease.Pool{Type: "vm", LeaseTTL: ttl}
	for i := 1; i <= n; i++ {
		p.Resources = append(p.Resources, store.ResourceSpec{Name: fmt.Sprintf("vm-%d", i)})
	}
	return p
}

func (f *fixture) acquire(t *testing.T, p lease.AcquireParams) *lease.AcquireResult {
	t.Helper()
	if p.Type == "" {
		p.Type = "vm"
	}
	if p.Owner == "" {
		p.Owner = "job"
	}
	res, err := f.eng.Acquire(context.Background(), p)
	if err != nil {
		t.Fatalf("Acquire(%+v): %v", p, err)
	}
	return res
}

func wantCode(t *testing.T, err error, code berth.ErrorCode, field string) {
	t.Helper()
	var be *berth.Error
	if !errors.As(err, &be) || be.Code != code || be.Field != field {
		t.Fatalf("error = %v (%#v), want code %q field %q", err, be, code, field)
	}
}

// waitQueued blocks until n goroutines wait on the fake clock: a waiting
// acquire starts its timer only after its request is in the queue.
func (f *fixture) waitQueued(t *testing.T, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.clock.BlockUntilContext(ctx, n); err != nil {
		t.Fatalf("waiting for %d queued acquires: %v", n, err)
	}
}

type outcome struct {
	name string
	res  *lease.AcquireResult
	err  error
}

// goAcquire starts a waiting acquire and returns where its outcome arrives.
func (f *fixture) goAcquire(ctx context.Context, name string, p lease.AcquireParams) <-chan outcome {
	ch := make(chan outcome, 1)
	if p.Type == "" {
		p.Type = "vm"
	}
	if p.Owner == "" {
		p.Owner = name
	}
	go func() {
		res, err := f.eng.Acquire(ctx, p)
		ch <- outcome{name: name, res: res, err: err}
	}()
	return ch
}

func recv(t *testing.T, ch <-chan outcome) outcome {
	t.Helper()
	select {
	case o := <-ch:
		return o
	case <-time.After(10 * time.Second):
		t.Fatal("no outcome within 10s")
		return outcome{}
	}
}

func TestReleaseFollowsPoolPolicy(t *testing.T) {
	f := newFixture(t, vmPool(1), lease.Pool{Type: "proj", LeaseTTL: ttl, Janitor: lease.JanitorExternal,
		Resources: []store.ResourceSpec{{Name: "p1"}, {Name: "p2"}, {Name: "p3"}}})
	ctx := context.Background()
	for _, c := range []struct {
		typ    string
		to     berth.ReleaseTarget
		reason string
		want   berth.State
	}{
		{"vm", "", "", berth.StateFree},    // no janitor: straight back
		{"proj", "", "", berth.StateDirty}, // external janitor: stays dirty
		{"proj", berth.ReleaseFree, "", berth.StateFree},
		{"proj", berth.ReleaseBroken, "kernel panic", berth.StateQuarantined},
	} {
		l := f.acquire(t, lease.AcquireParams{Type: c.typ}).Lease
		res, err := f.eng.Release(ctx, lease.ReleaseParams{ID: l.ID, To: c.to, Reason: c.reason})
		if err != nil {
			t.Fatal(err)
		}
		if res.Resource.State != c.want || res.Resource.StateReason != c.reason {
			t.Errorf("%s released %q: resource %s (%q), want %s", c.typ, c.to, res.Resource.State, res.Resource.StateReason, c.want)
		}
	}
	l := f.acquire(t, lease.AcquireParams{}).Lease
	_, err := f.eng.Release(ctx, lease.ReleaseParams{ID: l.ID, To: berth.ReleaseBroken})
	wantCode(t, err, berth.EInvalid, "reason")
	_, err = f.eng.Release(ctx, lease.ReleaseParams{ID: l.ID, To: "sideways"})
	wantCode(t, err, berth.EInvalid, "to")
	_, err = f.eng.Release(ctx, lease.ReleaseParams{ID: "no-such-lease"})
	wantCode(t, err, berth.ENotFound, "")
}

func TestAcquireValidation(t *testing.T) {
	f := newFixture(t)
	for _, c := range []struct {
		p     lease.AcquireParams
		code  berth.ErrorCode
		field string
	}{
		{lease.AcquireParams{Owner: "x"}, berth.EInvalid, "type"},
		{lease.AcquireParams{Type: "vm"}, berth.EInvalid, "owner"},
		{lease.AcquireParams{Type: "vm", Owner: "x\x00y"}, berth.EInvalid, "owner"},
		{lease.AcquireParams{Type: "vm", Owner: "x", Priority: 1001}, berth.EInvalid, "priority"},
		{lease.AcquireParams{Type: "vm", Owner: "x", Wait: -time.Second}, berth.EInvalid, "wait"},
		{lease.AcquireParams{Type: "vm", Owner: "x", RequestID: "has space"}, berth.EInvalid, "requestId"},
		{lease.AcquireParams{Type: "vm", Owner: "x", Selector: berth.Selector{`a"b`: "1"}}, berth.EInvalid, `labels.a"b`},
		{lease.AcquireParams{Type: "gpu", Owner: "x"}, berth.EUnknownType, "type"},
	} {
		_, err := f.eng.Acquire(context.Background(), c.p)
		wantCode(t, err, c.code, c.field)
	}
	f.acquire(t, lease.AcquireParams{})
	_, err := f.eng.Acquire(context.Background(), lease.AcquireParams{Type: "vm", Owner: "x"})
	wantCode(t, err, berth.EExhausted, "")
}

func TestWaiterIsHandedReleasedResource(t *testing.T) {
	f := newFixture(t)
	held := f.acquire(t, lease.AcquireParams{}).Lease
	ch := f.goAcquire(context.Background(), "waiter", lease.AcquireParams{Wait: time.Minute})
	f.waitQueued(t, 1)
	if _, err := f.eng.Release(context.Background(), lease.ReleaseParams{ID: held.ID}); err != nil {
		t.Fatal(err)
	}
	o := recv(t, ch)
	if o.err != nil || o.res.Lease == nil {
		t.Fatalf("waiter got %+v, %v", o.res, o.err)
	}
	if o.res.Lease.Resource != held.Resource || o.res.Lease.Token <= held.Token || o.res.Lease.Owner != "waiter" {
		t.Fatalf("waiter's lease = %+v", o.res.Lease)
	}
	// Claimed: it lasts a whole TTL from the handoff.
	if want := f.clock.Now().Add(ttl); !o.res.Lease.ExpiresAt.Equal(want) {
		t.Fatalf("claimed lease expires %s, want %s", o.res.Lease.ExpiresAt, want)
	}
	// Nobody else can take it in between.
	_, err := f.eng.Acquire(context.Background(), lease.AcquireParams{Type: "vm", Owner: "late"})
	wantCode(t, err, berth.EExhausted, "")
}

func TestFIFOWithinPriority(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	held := f.acquire(t, lease.AcquireParams{}).Lease
	results := make(chan outcome, 4)
	for i, w := range []struct {
		name string
		prio int
	}{{"w1", 0}, {"w2", 0}, {"w3", 5}, {"w4", 0}} {
		ch := f.goAcquire(ctx, w.name, lease.AcquireParams{Wait: time.Minute, Priority: w.prio})
		go func() { results <- <-ch }()
		f.waitQueued(t, i+1) // arrival order is the loop's order
	}
	var order []string
	for range 4 {
		if _, err := f.eng.Release(ctx, lease.ReleaseParams{ID: held.ID}); err != nil {
			t.Fatal(err)
		}
		o := recv(t, results)
		if o.err != nil || o.res.Lease == nil {
			t.Fatalf("%s: %+v, %v", o.name, o.res, o.err)
		}
		order = append(order, o.name)
		held = o.res.Lease
	}
	if fmt.Sprint(order) != "[w3 w1 w2 w4]" {
		t.Fatalf("served %v, want [w3 w1 w2 w4]: priority first, then arrival", order)
	}
}

func TestLongPollReturnsPlaceAndKeepsIt(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	held := f.acquire(t, lease.AcquireParams{}).Lease
	first := f.goAcquire(ctx, "first", lease.AcquireParams{Wait: 10 * time.Second, RequestID: "req-first"})
	f.waitQueued(t, 1)
	second := f.goAcquire(ctx, "second", lease.AcquireParams{Wait: time.Minute})
	f.waitQueued(t, 2)
	f.clock.Advance(10 * time.Second)
	o := recv(t, first)
	if o.err != nil || o.res.Request == nil || o.res.Request.Position != 1 || o.res.Request.ID != "req-first" {
		t.Fatalf("long poll ended with %+v, %v; want request req-first at position 1", o.res, o.err)
	}
	// Within the grace period, "first" comes back and is still first.
	again := f.goAcquire(ctx, "first", lease.AcquireParams{Wait: 10 * time.Second, RequestID: "req-first"})
	f.waitQueued(t, 2)
	if _, err := f.eng.Release(ctx, lease.ReleaseParams{ID: held.ID}); err != nil {
		t.Fatal(err)
	}
	if o := recv(t, again); o.err != nil || o.res.Lease == nil {
		t.Fatalf("returning waiter got %+v, %v; want the lease", o.res, o.err)
	}
	f.clock.Advance(time.Minute)
	if o := recv(t, second); o.err != nil || o.res.Request == nil || o.res.Request.Position != 1 {
		t.Fatalf("second waiter = %+v, %v", o.res, o.err)
	}
}

func TestMaxPollCapsOneCall(t *testing.T) {
	f := newFixture(t)
	f.acquire(t, lease.AcquireParams{})
	ch := f.goAcquire(context.Background(), "w", lease.AcquireParams{Wait: 24 * time.Hour})
	f.waitQueued(t, 1)
	f.clock.Advance(10 * time.Minute) // the engine's MaxPoll
	if o := recv(t, ch); o.err != nil || o.res.Request == nil {
		t.Fatalf("capped poll = %+v, %v", o.res, o.err)
	}
}

func TestReaperExpiresSilentLeases(t *testing.T) {
	f := newFixture(t, vmPool(2))
	ctx := context.Background()
	quiet := f.acquire(t, lease.AcquireParams{Owner: "quiet"}).Lease
	alive := f.acquire(t, lease.AcquireParams{Owner: "alive"}).Lease
	f.clock.Advance(ttl / 2)
	if _, err := f.eng.Heartbeat(ctx, alive.ID); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(ttl / 2)
	n, err := f.eng.ReapOnce(ctx)
	if err != nil || n != 1 {
		t.Fatalf("ReapOnce = %d, %v; want 1", n, err)
	}
	l, err := f.eng.Lease(ctx, quiet.ID)
	if err != nil || l.Status != berth.LeaseExpired {
		t.Fatalf("silent lease = %+v, %v", l, err)
	}
	if r, _ := f.eng.Resource(ctx, quiet.Resource); r.State != berth.StateFree {
		t.Fatalf("reaped resource is %s", r.State)
	}
	if l, _ := f.eng.Lease(ctx, alive.ID); l.Status != berth.LeaseActive {
		t.Fatalf("heartbeated lease is %s", l.Status)
	}
	_, err = f.eng.Heartbeat(ctx, quiet.ID)
	wantCode(t, err, berth.ELeaseLost, "")
	evs, err := f.eng.Events(ctx, &lease.EventListParams{Resource: quiet.Resource, Desc: true, Limit: 1}, 0)
	if err != nil || len(evs) != 1 || evs[0].Reason != "expired" || evs[0].Actor != "reaper" || evs[0].LeaseID != quiet.ID {
		t.Fatalf("last event = %+v, %v", evs, err)
	}
	// A second pass finds nothing.
	if n, err := f.eng.ReapOnce(ctx); err != nil || n != 0 {
		t.Fatalf("second ReapOnce = %d, %v", n, err)
	}
}

func TestExpiredLeaseGoesToWaiter(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.acquire(t, lease.AcquireParams{Owner: "crashed"})
	ch := f.goAcquire(ctx, "waiter", lease.AcquireParams{Wait: 2 * ttl})
	f.waitQueued(t, 1)
	f.clock.Advance(ttl)
	if n, err := f.eng.ReapOnce(ctx); err != nil || n != 1 {
		t.Fatalf("ReapOnce = %d, %v", n, err)
	}
	if o := recv(t, ch); o.err != nil || o.res.Lease == nil {
		t.Fatalf("waiter = %+v, %v", o.res, o.err)
	}
}

func TestAbandonedHandoffIsReclaimed(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	held := f.acquire(t, lease.AcquireParams{}).Lease
	gone, cancel := context.WithCancel(ctx)
	a := f.goAcquire(gone, "a", lease.AcquireParams{Wait: 10 * time.Second, RequestID: "req-a"})
	f.waitQueued(t, 1)
	b := f.goAcquire(ctx, "b", lease.AcquireParams{Wait: 5 * time.Minute})
	f.waitQueued(t, 2)
	cancel() // a's client disconnects; its place is held for the grace period
	if o := recv(t, a); !errors.Is(o.err, context.Canceled) {
		t.Fatalf("cancelled waiter = %+v, %v", o.res, o.err)
	}
	rel, err := f.eng.Release(ctx, lease.ReleaseParams{ID: held.ID})
	if err != nil {
		t.Fatal(err)
	}
	if rel.Resource.Owner != "a" {
		t.Fatalf("released resource went to %q, want a (first in line)", rel.Resource.Owner)
	}
	// a never comes back: after its grace the unclaimed lease expires and
	// the resource moves on to b.
	f.clock.Advance(10*time.Second + 30*time.Second)
	if n, err := f.eng.ReapOnce(ctx); err != nil || n != 1 {
		t.Fatalf("ReapOnce = %d, %v", n, err)
	}
	if o := recv(t, b); o.err != nil || o.res.Lease == nil || o.res.Lease.Owner != "b" {
		t.Fatalf("b = %+v, %v", o.res, o.err)
	}
}

func TestReleaseIsIdempotent(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	l := f.acquire(t, lease.AcquireParams{}).Lease
	if _, err := f.eng.Release(ctx, lease.ReleaseParams{ID: l.ID}); err != nil {
		t.Fatal(err)
	}
	res, err := f.eng.Release(ctx, lease.ReleaseParams{ID: l.ID})
	if err != nil || !res.AlreadyReleased {
		t.Fatalf("second release = %+v, %v", res, err)
	}
	l2 := f.acquire(t, lease.AcquireParams{}).Lease
	f.clock.Advance(ttl)
	if _, err := f.eng.ReapOnce(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = f.eng.Release(ctx, lease.ReleaseParams{ID: l2.ID})
	wantCode(t, err, berth.ELeaseLost, "")
}

func TestCancelRequest(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.acquire(t, lease.AcquireParams{})
	gone, cancel := context.WithCancel(ctx)
	ch := f.goAcquire(gone, "w", lease.AcquireParams{Wait: time.Minute, RequestID: "r1"})
	f.waitQueued(t, 1)
	cancel()
	recv(t, ch)
	if r, err := f.eng.Request(ctx, "r1"); err != nil || r.Position != 1 {
		t.Fatalf("request after its poll ended = %+v, %v; want still in line", r, err)
	}
	if err := f.eng.CancelRequest(ctx, "r1"); err != nil {
		t.Fatal(err)
	}
	wantCode(t, f.eng.CancelRequest(ctx, "r1"), berth.ENotFound, "")
	_, err := f.eng.Request(ctx, "r1")
	wantCode(t, err, berth.ENotFound, "")
}

func TestRequestIDWithoutWaitIsIdempotentNotQueued(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	l1 := f.acquire(t, lease.AcquireParams{RequestID: "retry-me"}).Lease
	l2 := f.acquire(t, lease.AcquireParams{RequestID: "retry-me"}).Lease
	if l1.ID != l2.ID {
		t.Fatalf("retried acquire got %s, want %s", l2.ID, l1.ID)
	}
	_, err := f.eng.Acquire(ctx, lease.AcquireParams{Type: "vm", Owner: "x", RequestID: "other"})
	wantCode(t, err, berth.EExhausted, "")
	_, err = f.eng.Request(ctx, "other")
	wantCode(t, err, berth.ENotFound, "")
}

func TestEventsLongPoll(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	evs, err := f.eng.Events(ctx, &lease.EventListParams{}, 0)
	if err != nil || len(evs) == 0 {
		t.Fatalf("events = %v, %v", evs, err)
	}
	last := evs[len(evs)-1].ID
	got := make(chan []*berth.Event, 1)
	go func() {
		evs, _ := f.eng.Events(ctx, &lease.EventListParams{AfterID: last}, time.Minute)
		got <- evs
	}()
	f.waitQueued(t, 1)
	l := f.acquire(t, lease.AcquireParams{}).Lease
	select {
	case evs := <-got:
		if len(evs) != 1 || evs[0].LeaseID != l.ID {
			t.Fatalf("followed events = %+v", evs)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("event long poll did not wake")
	}
}

func TestCancelDuringLongPollDoesNotRequeue(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	held := f.acquire(t, lease.AcquireParams{}).Lease
	ch := f.goAcquire(ctx, "w", lease.AcquireParams{Wait: time.Minute, RequestID: "r1"})
	f.waitQueued(t, 1)
	if err := f.eng.CancelRequest(ctx, "r1"); err != nil {
		t.Fatal(err)
	}
	// Even with a resource free when the poll ends, a cancelled request
	// takes nothing.
	if _, err := f.eng.Release(ctx, lease.ReleaseParams{ID: held.ID}); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(time.Minute)
	o := recv(t, ch)
	wantCode(t, o.err, berth.EExhausted, "")
	_, err := f.eng.Request(ctx, "r1")
	wantCode(t, err, berth.ENotFound, "")
	if r, _ := f.eng.Resource(ctx, held.Resource); r.State != berth.StateFree {
		t.Fatalf("a cancelled request took %s", r.Name)
	}
}

func TestLeasePastExpiryReadsExpired(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	l := f.acquire(t, lease.AcquireParams{}).Lease
	f.clock.Advance(ttl)
	got, err := f.eng.Lease(ctx, l.ID)
	if err != nil || got.Status != berth.LeaseExpired {
		t.Fatalf("lease past expiry, before the reaper = %+v, %v; want expired", got, err)
	}
	_, err = f.eng.Release(ctx, lease.ReleaseParams{ID: l.ID})
	wantCode(t, err, berth.ELeaseLost, "")
}

// TestReapRetiringResource expires a lease on a resource that left the
// config while leased: the resource goes, and the reaper carries on.
func TestReapRetiringResource(t *testing.T) {
	f := newFixture(t, vmPool(2))
	ctx := context.Background()
	l := f.acquire(t, lease.AcquireParams{}).Lease
	keep := vmPool(2)
	keep.Resources = []store.ResourceSpec{{Name: "vm-2"}}
	if l.Resource == "vm-2" {
		keep.Resources = []store.ResourceSpec{{Name: "vm-1"}}
	}
	if _, err := f.eng.SyncPools(ctx, []lease.Pool{keep}, "test"); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(ttl)
	if n, err := f.eng.ReapOnce(ctx); err != nil || n != 1 {
		t.Fatalf("ReapOnce = %d, %v", n, err)
	}
	_, err := f.eng.Resource(ctx, l.Resource)
	wantCode(t, err, berth.ENotFound, "")
}

// TestDrainAnswersLongPolls: when the server begins to shut down, every
// long poll answers at once with its place, which it keeps.
func TestDrainAnswersLongPolls(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.acquire(t, lease.AcquireParams{})
	ch := f.goAcquire(ctx, "w", lease.AcquireParams{Wait: time.Hour, RequestID: "r1"})
	f.waitQueued(t, 1)
	f.eng.Drain()
	o := recv(t, ch)
	if o.err != nil || o.res.Request == nil || o.res.Request.ID != "r1" || o.res.Request.Position != 1 {
		t.Fatalf("drained poll = %+v, %v; want its place", o.res, o.err)
	}
	r, err := f.eng.Request(ctx, "r1")
	if err != nil || r.Position != 1 {
		t.Fatalf("after drain: %+v, %v; want still in line", r, err)
	}
	// Its hold runs for the grace period from the drain, not from when its
	// hour-long wait would have ended.
	if want := f.clock.Now().Add(30 * time.Second); !r.ExpiresAt.Equal(want) {
		t.Fatalf("drained request holds its place until %s, want %s", r.ExpiresAt, want)
	}
}

// TestEventsRecheck: with EventRecheck, a follower sees an event that
// another process wrote to the shared store, which this engine never
// announced, at the next recheck.
func TestEventsRecheck(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "berth.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	fc := clockwork.NewFakeClockAt(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	eng := lease.New(lease.Options{Store: st, Clock: fc, EventRecheck: time.Second})
	if _, err := eng.SyncPools(ctx, []lease.Pool{vmPool(1)}, "test"); err != nil {
		t.Fatal(err)
	}
	evs, err := eng.Events(ctx, &lease.EventListParams{}, 0)
	if err != nil || len(evs) == 0 {
		t.Fatalf("events = %v, %v", evs, err)
	}
	last := evs[len(evs)-1].ID
	got := make(chan []*berth.Event, 1)
	go func() {
		evs, _ := eng.Events(ctx, &lease.EventListParams{AfterID: last}, time.Minute)
		got <- evs
	}()
	// The follower's timer and ticker.
	if err := fc.BlockUntilContext(ctx, 2); err != nil {
		t.Fatal(err)
	}
	// Another replica leases the resource: straight through the store.
	res, err := st.LeaseAcquire(ctx, &store.LeaseAcquireParams{Type: "vm", Owner: "elsewhere", LeaseTTL: ttl, Now: fc.Now(), Actor: "elsewhere"})
	if err != nil || res.Lease == nil {
		t.Fatalf("acquire through the store = %+v, %v", res, err)
	}
	fc.Advance(time.Second)
	select {
	case evs := <-got:
		if len(evs) != 1 || evs[0].LeaseID != res.Lease.ID {
			t.Fatalf("followed events = %+v", evs)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("event long poll did not look again at the recheck")
	}
}
