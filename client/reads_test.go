package client

import (
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/lease"
	"github.com/berth-ci/berth/internal/store"
	"github.com/berth-ci/berth/internal/store/sqlite"
)

func TestReads(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	pools := []lease.Pool{
		{Type: "vm", LeaseTTL: time.Minute, Resources: []store.ResourceSpec{{Name: "vm-1"}, {Name: "vm-2"}}},
		{Type: "phone", LeaseTTL: time.Hour, Janitor: lease.JanitorExternal, Resources: []store.ResourceSpec{
			{Name: "pixel-7", Labels: map[string]string{"os": "android"}}}},
	}
	b := newBroker(t, brokerOptions{pools: pools})
	c := newClient(t, testOptions(b.srv.URL))
	a := acquireOrFail(t, c, "job-1")

	ps, err := c.Pools(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 2 {
		t.Fatalf("pools = %d; want 2", len(ps))
	}
	p, err := c.Pool(ctx, "vm")
	if err != nil {
		t.Fatal(err)
	}
	if p.Total != 2 || p.States[berth.StateBusy] != 1 || p.States[berth.StateFree] != 1 || p.LeaseTTL.Std() != time.Minute {
		t.Fatalf("pool vm = %+v", p)
	}
	_, err = c.Pool(ctx, "gpu")
	wantCode(t, err, berth.EUnknownType)

	rs, err := c.Resources(ctx, ResourceFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 3 {
		t.Fatalf("resources = %d; want 3", len(rs))
	}
	rs, err = c.Resources(ctx, ResourceFilter{Type: "vm", State: berth.StateBusy})
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 1 || rs[0].Name != a.Resource.Name || rs[0].Owner != "job-1" {
		t.Fatalf("busy vms = %+v", rs)
	}
	rs, err = c.Resources(ctx, ResourceFilter{Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 1 {
		t.Fatalf("resources with limit 1 = %d", len(rs))
	}
	r, err := c.Resource(ctx, "pixel-7")
	if err != nil {
		t.Fatal(err)
	}
	if r.Type != "phone" || r.Labels["os"] != "android" || r.State != berth.StateFree {
		t.Fatalf("pixel-7 = %+v", r)
	}
	_, err = c.Resource(ctx, "pixel-8")
	wantCode(t, err, berth.ENotFound)

	v, err := c.Version(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v.Version == "" || v.Commit == "" || v.GoVersion != runtime.Version() || v.SchemaVersion != sqlite.SchemaVersion() {
		t.Fatalf("version = %+v", v)
	}
}

func TestEvents(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	b := newBroker(t, brokerOptions{pools: vmPool("vm-1", "vm-2")})
	c := newClient(t, testOptions(b.srv.URL))
	start := time.Now().Add(-time.Minute)
	a := acquireOrFail(t, c, "job-1")

	evs, err := c.Events(ctx, EventFilter{Resource: a.Resource.Name, Since: start})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) == 0 {
		t.Fatal("no events for the leased resource")
	}
	last := evs[len(evs)-1]
	if last.Kind != berth.EventLease || last.To != string(berth.StateBusy) || last.LeaseID != a.Lease.ID {
		t.Fatalf("last event = %+v; want the lease", last)
	}
	all, err := c.Events(ctx, EventFilter{Type: "vm", Desc: true, Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 || all[0].ID < all[1].ID {
		t.Fatalf("newest two events = %+v", all)
	}
	none, err := c.Events(ctx, EventFilter{After: all[0].ID})
	if err != nil {
		t.Fatal(err)
	}
	if len(none) != 0 {
		t.Fatalf("events after the newest = %d; want 0", len(none))
	}

	// A long poll answers as soon as an event is written.
	type result struct {
		evs []*berth.Event
		err error
	}
	done := make(chan result, 1)
	go func() {
		evs, err := c.Events(ctx, EventFilter{After: all[0].ID, Wait: 30 * time.Second})
		done <- result{evs, err}
	}()
	if _, err := c.Release(ctx, a.Lease.ID, ReleaseParams{}); err != nil {
		t.Fatal(err)
	}
	res := receive(t, "the long poll to answer", done)
	if res.err != nil {
		t.Fatal(res.err)
	}
	if len(res.evs) == 0 || res.evs[0].ID <= all[0].ID {
		t.Fatalf("long poll returned %+v", res.evs)
	}

	_, err = c.Events(ctx, EventFilter{Wait: time.Hour})
	if be := wantCode(t, err, berth.EInvalid); be.Field != "wait" {
		t.Fatalf("Events with a wait over the cap: %v; want field wait", err)
	}
}

func TestPathsAreEscaped(t *testing.T) {
	t.Parallel()
	s := newScripted(t, errorAnswer(http.StatusNotFound, berth.ENotFound))
	c := newClient(t, testOptions(s.srv.URL+"/prefix/"))
	_, _ = c.Lease(testContext(t), "a/b?c")
	reqs := s.requests()
	if len(reqs) != 1 || reqs[0] != "GET /prefix/v1/leases/a%2Fb%3Fc" {
		t.Fatalf("server saw %q", reqs)
	}
}
