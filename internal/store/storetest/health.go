package storetest

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/store"
)

// probed is a pool whose resources must be Connected to be leased.
func probed(typ string, rs ...store.ResourceSpec) store.PoolPolicy {
	p := pool(typ, rs...)
	p.Probe, p.RequireConnected = "tcp", true
	return p
}

func health(t *testing.T, s store.Store, now time.Time, typ string, updates ...string) *store.ResourceHealthResult {
	t.Helper()
	var us []store.HealthUpdate
	for _, u := range updates {
		// "name=Status/Reason"
		var name, rest string
		for i := range u {
			if u[i] == '=' {
				name, rest = u[:i], u[i+1:]
				break
			}
		}
		status, reason := rest, ""
		for i := range rest {
			if rest[i] == '/' {
				status, reason = rest[:i], rest[i+1:]
				break
			}
		}
		us = append(us, store.HealthUpdate{Name: name, Type: typ, Status: berth.HealthStatus(status), Reason: reason,
			Message: fmt.Sprintf("%s is %s", name, rest), LeaseTTL: ttl})
	}
	res, err := s.ResourceHealth(context.Background(), &store.ResourceHealthParams{Updates: us, Now: now, Actor: "prober"})
	if err != nil {
		t.Fatalf("ResourceHealth(%v): %v", updates, err)
	}
	return res
}

func healthEvents(t *testing.T, s store.Store, name string) []string {
	t.Helper()
	evs, err := s.EventList(context.Background(), &store.EventListParams{Resource: name})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range evs {
		if e.Kind == berth.EventHealth {
			out = append(out, fmt.Sprintf("%s>%s/%s", e.From, e.To, e.Reason))
		}
	}
	return out
}

// A probed pool leases only Connected resources; an unprobed pool leases
// Unknown ones; nobody leases a Disconnected one.
func testHealthGatesAcquire(t *testing.T, s store.Store) {
	sync(t, s, t0, probed("cluster", names(2, "c")...), pool("vm", names(1, "vm-")...))
	if res := acquire(t, s, acq{typ: "cluster"}); res.Lease != nil {
		t.Fatalf("leased %s while its health is Unknown in a probed pool", res.Resource.Name)
	}
	mustLease(t, acquire(t, s, acq{typ: "vm"})) // Unknown, unprobed: fine
	health(t, s, at(time.Second), "cluster", "c1=Disconnected/ConnectionRefused", "c2=Connected")
	l := mustLease(t, acquire(t, s, acq{typ: "cluster", now: at(2 * time.Second)}))
	if l.Resource != "c2" {
		t.Fatalf("leased %s, want the Connected c2", l.Resource)
	}
	if res := acquire(t, s, acq{typ: "cluster", now: at(2 * time.Second)}); res.Lease != nil {
		t.Fatalf("leased the Disconnected %s", res.Resource.Name)
	}
	dis, err := s.ResourceList(context.Background(), &store.ResourceListParams{Health: berth.HealthDisconnected})
	if err != nil || len(dis) != 1 || dis[0].Name != "c1" {
		t.Fatalf("Disconnected resources: %v, %v; want c1", dis, err)
	}
	// An unprobed pool's resource that is somehow Disconnected is not
	// leased either.
	health(t, s, at(3*time.Second), "vm", "vm-1=Disconnected/Timeout")
	ps, err := s.PoolList(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		if p.Type == "cluster" && (p.Probe != "tcp" || p.Health[berth.HealthConnected] != 1 || p.Health[berth.HealthDisconnected] != 1 || p.Leasable != 0) {
			t.Fatalf("cluster pool = %+v", p)
		}
	}
}

// Health changes are written with an event only when the status or the
// reason changes; every result moves the probe time; the transition time
// moves only with the status.
func testHealthTransitions(t *testing.T, s store.Store) {
	sync(t, s, t0, probed("cluster", names(1, "c")...))
	if res := health(t, s, at(1*time.Second), "cluster", "c1=Connected"); len(res.Changed) != 1 {
		t.Fatalf("first probe changed %d, want 1", len(res.Changed))
	}
	if res := health(t, s, at(2*time.Second), "cluster", "c1=Connected"); len(res.Changed) != 0 {
		t.Fatalf("an unchanged result wrote %d events", len(res.Changed))
	}
	r := get(t, s, "c1")
	if r.Health.Status != berth.HealthConnected || !r.Health.LastProbeTime.Equal(at(2*time.Second)) || !r.Health.LastTransitionTime.Equal(at(time.Second)) {
		t.Fatalf("health after two probes = %+v", r.Health)
	}
	health(t, s, at(3*time.Second), "cluster", "c1=Disconnected/ConnectionRefused")
	health(t, s, at(4*time.Second), "cluster", "c1=Disconnected/Timeout")
	r = get(t, s, "c1")
	if r.Health.Reason != "Timeout" || r.Health.Message != "c1 is Disconnected/Timeout" || !r.Health.LastTransitionTime.Equal(at(3*time.Second)) {
		t.Fatalf("health after a change of reason = %+v", r.Health)
	}
	health(t, s, at(5*time.Second), "cluster", "c1=Connected")
	want := []string{"Unknown>Connected/", "Connected>Disconnected/ConnectionRefused", "Disconnected>Disconnected/Timeout", "Disconnected>Connected/"}
	if got := healthEvents(t, s, "c1"); !slices.Equal(got, want) {
		t.Fatalf("health events = %v, want %v", got, want)
	}
	// Results for resources that are gone or moved are dropped.
	res := health(t, s, at(6*time.Second), "vm", "c1=Disconnected/Timeout", "nope=Connected")
	if len(res.Changed) != 0 || !slices.Equal(res.Missing, []string{"c1", "nope"}) {
		t.Fatalf("results for the wrong pool: %+v", res)
	}
}

// A waiter gets a resource the moment a probe finds it Connected, and a
// released resource that is Disconnected stays free, not handed over,
// until then.
func testHealthHandsToWaiter(t *testing.T, s store.Store) {
	sync(t, s, t0, probed("cluster", names(1, "c")...))
	if res := acquire(t, s, acq{typ: "cluster", requestID: "w1", wait: true}); res.Request == nil {
		t.Fatalf("no request queued: %+v", res)
	}
	res := health(t, s, at(time.Second), "cluster", "c1=Connected")
	if len(res.Handoffs) != 1 || res.Handoffs[0].RequestID != "w1" {
		t.Fatalf("handoffs = %+v, want one to w1", res.Handoffs)
	}
	l := mustLease(t, acquire(t, s, acq{typ: "cluster", requestID: "w1", wait: true, now: at(2 * time.Second)}))
	// Disconnected while leased: the lease holds and the heartbeat tells.
	health(t, s, at(3*time.Second), "cluster", "c1=Disconnected/ConnectionRefused")
	hb, err := s.LeaseHeartbeat(context.Background(), &store.LeaseHeartbeatParams{ID: l.ID, Now: at(4 * time.Second)})
	if err != nil {
		t.Fatalf("heartbeat of a lease on a Disconnected resource: %v", err)
	}
	if hb.Resource.Health.Status != berth.HealthDisconnected || hb.Resource.Health.Reason != "ConnectionRefused" {
		t.Fatalf("heartbeat says health %+v", hb.Resource.Health)
	}
	acquire(t, s, acq{typ: "cluster", requestID: "w2", wait: true, now: at(5 * time.Second)})
	if rel := release(t, s, l.ID, berth.StateFree, at(6*time.Second)); rel.Handoff != nil {
		t.Fatalf("a Disconnected resource was handed to %s", rel.Handoff.RequestID)
	}
	if r := get(t, s, "c1"); r.State != berth.StateFree {
		t.Fatalf("released Disconnected resource is %s, want free", r.State)
	}
	res = health(t, s, at(7*time.Second), "cluster", "c1=Connected")
	if len(res.Handoffs) != 1 || res.Handoffs[0].RequestID != "w2" {
		t.Fatalf("handoffs when it came back = %+v, want one to w2", res.Handoffs)
	}
}

// Taking a pool's probe out of the config makes its resources Unknown and
// leasable again, and hands them to waiters; putting it back with
// RequireConnected makes Unknown ones unleasable.
func testHealthPolicySync(t *testing.T, s store.Store) {
	sync(t, s, t0, probed("cluster", names(2, "c")...))
	health(t, s, at(time.Second), "cluster", "c1=Disconnected/Timeout")
	acquire(t, s, acq{typ: "cluster", requestID: "w", wait: true, now: at(2 * time.Second)})
	res := sync(t, s, at(3*time.Second), pool("cluster", names(2, "c")...))
	if len(res.Handoffs) != 1 || res.Handoffs[0].RequestID != "w" {
		t.Fatalf("handoffs when the probe went = %+v", res.Handoffs)
	}
	if r := get(t, s, "c1"); r.Health.Status != berth.HealthUnknown || r.Health.Reason != "" {
		t.Fatalf("health of c1 after its probe went: %+v", r.Health)
	}
	if got, want := healthEvents(t, s, "c1"), []string{"Unknown>Disconnected/Timeout", "Disconnected>Unknown/NotProbed"}; !slices.Equal(got, want) {
		t.Fatalf("health events = %v, want %v", got, want)
	}
	sync(t, s, at(4*time.Second), probed("cluster", names(2, "c")...))
	if res := acquire(t, s, acq{typ: "cluster", now: at(5 * time.Second)}); res.Lease != nil {
		t.Fatalf("leased Unknown %s after the probe came back", res.Resource.Name)
	}
	allow := probed("cluster", names(2, "c")...)
	allow.RequireConnected = false
	sync(t, s, at(6*time.Second), allow)
	mustLease(t, acquire(t, s, acq{typ: "cluster", now: at(7 * time.Second)}))
}

// Probe results written while jobs acquire never make an acquire pass over
// a free Connected resource (PostgreSQL once locked the rows it wrote the
// probe time into, and acquire skips locked rows).
func testHealthWritesDoNotHideResources(t *testing.T, s store.Store) {
	ctx := context.Background()
	sync(t, s, t0, probed("cluster", names(3, "c")...))
	health(t, s, t0, "cluster", "c1=Connected", "c2=Connected", "c3=Connected")
	stop := make(chan struct{})
	writer := make(chan error, 1)
	go func() {
		ups := []store.HealthUpdate{}
		for _, n := range []string{"c1", "c2", "c3"} {
			ups = append(ups, store.HealthUpdate{Name: n, Type: "cluster", Status: berth.HealthConnected, Message: "ok", LeaseTTL: ttl})
		}
		for i := 0; ; i++ {
			select {
			case <-stop:
				writer <- nil
				return
			default:
			}
			if _, err := s.ResourceHealth(ctx, &store.ResourceHealthParams{Updates: ups, Now: at(time.Duration(i) * time.Millisecond), Actor: "prober"}); err != nil {
				writer <- err
				return
			}
		}
	}()
	for i := range 300 {
		now := at(time.Second + time.Duration(i)*time.Millisecond)
		res := acquire(t, s, acq{typ: "cluster", now: now})
		if res.Lease == nil {
			close(stop)
			<-writer
			t.Fatalf("cycle %d: no lease with three free Connected resources and one job", i)
		}
		release(t, s, res.Lease.ID, berth.StateFree, now)
	}
	close(stop)
	if err := <-writer; err != nil {
		t.Fatal(err)
	}
}

// What is probed changing (the pool's spec, the pool a resource is in,
// its user data or labels) makes the resource Unknown until probed again;
// results made with another spec than the stored one are dropped.
func testHealthReprobe(t *testing.T, s store.Store) {
	ctx := context.Background()
	spec := func(hash string, rs ...store.ResourceSpec) store.PoolPolicy {
		p := probed("cluster", rs...)
		p.ProbeHash = hash
		return p
	}
	c1 := store.ResourceSpec{Name: "c1", UserData: map[string]string{"addr": "a:1"}}
	c2 := store.ResourceSpec{Name: "c2"}
	sync(t, s, t0, spec("h1", c1, c2))
	result := func(now time.Time, hash string, names ...string) *store.ResourceHealthResult {
		var ups []store.HealthUpdate
		for _, n := range names {
			ups = append(ups, store.HealthUpdate{Name: n, Type: "cluster", Status: berth.HealthConnected, Message: "ok", LeaseTTL: ttl, ProbeHash: hash})
		}
		res, err := s.ResourceHealth(ctx, &store.ResourceHealthParams{Updates: ups, Now: now, Actor: "prober"})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	result(at(time.Second), "h1", "c1", "c2")
	c1.UserData = map[string]string{"addr": "b:1"}
	sync(t, s, at(2*time.Second), spec("h1", c1, c2))
	if h1, h2 := get(t, s, "c1").Health, get(t, s, "c2").Health; h1.Status != berth.HealthUnknown || h1.Reason != "" || h2.Status != berth.HealthConnected {
		t.Fatalf("after c1's user data changed: c1 %+v, c2 %+v", h1, h2)
	}
	if got := healthEvents(t, s, "c1"); !slices.Equal(got, []string{"Unknown>Connected/", "Connected>Unknown/ProbeChanged"}) {
		t.Fatalf("c1's health events: %v", got)
	}
	sync(t, s, at(3*time.Second), spec("h2", c1, c2))
	if h2 := get(t, s, "c2").Health; h2.Status != berth.HealthUnknown {
		t.Fatalf("c2 after the pool's probe changed: %+v", h2)
	}
	if res := result(at(4*time.Second), "h1", "c1", "c2"); len(res.Changed) != 0 || len(res.Missing) != 2 {
		t.Fatalf("results of the old spec: %+v; want both dropped", res)
	}
	if res := result(at(5*time.Second), "h2", "c1", "c2"); len(res.Changed) != 2 {
		t.Fatalf("results of the new spec: %+v; want both recorded", res)
	}
	moved := probed("rack", c2)
	moved.ProbeHash = "h2"
	sync(t, s, at(6*time.Second), spec("h2", c1), moved)
	if h2 := get(t, s, "c2").Health; h2.Status != berth.HealthUnknown {
		t.Fatalf("c2 after it moved to another pool: %+v", h2)
	}
}
