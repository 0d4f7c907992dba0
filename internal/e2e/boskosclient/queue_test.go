package boskosclient

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/boskos/client"
	"sigs.k8s.io/boskos/common"
)

// post calls a Boskos endpoint by hand, as the client would, and returns
// the status and the body.
func post(t *testing.T, s *server, path string, q url.Values) (int, string) {
	t.Helper()
	resp, err := http.Post(s.URL+path+"?"+q.Encode(), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// events reads a resource's events through berth's own API.
func events(t *testing.T, s *server, name string) []struct{ From, To, Reason, Owner, Message string } {
	t.Helper()
	resp, err := http.Get(s.URL + "/v1/events?resource=" + name + "&kind=lease&limit=100")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Events []struct{ From, To, Reason, Owner, Message string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	return body.Events
}

// leaseOf reads the lease that holds a resource through berth's own API.
func leaseOf(t *testing.T, s *server, name string) (ttl string) {
	t.Helper()
	var r struct{ Resource struct{ LeaseID string } }
	get := func(path string, v any) {
		resp, err := http.Get(s.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatal(err)
		}
	}
	get("/v1/resources/"+name, &r)
	var l struct{ Lease struct{ TTL string } }
	get("/v1/leases/"+r.Resource.LeaseID, &l)
	return l.Lease.TTL
}

// TestDestsShareOneQueue: a client that leases from free to a state of its
// own waits in the same queue as those that lease to busy; neither a
// later waiter nor a call without a request id overtakes it.
func TestDestsShareOneQueue(t *testing.T) {
	s := serve(t)
	holder := newClient(t, s, "holder")
	if _, err := holder.Acquire("solo", common.Free, common.Busy); err != nil {
		t.Fatal(err)
	}
	acquire := func(owner, dest, id string) (int, string) {
		q := url.Values{"type": {"solo"}, "state": {"free"}, "dest": {dest}, "owner": {owner}}
		if id != "" {
			q.Set("request_id", id)
		}
		return post(t, s, "/acquire", q)
	}
	if code, _ := acquire("own", "leased", "rq-own"); code != http.StatusNotFound {
		t.Fatalf("first waiter: %d", code)
	}
	if code, _ := acquire("busy", "busy", "rq-busy"); code != http.StatusNotFound {
		t.Fatalf("second waiter: %d", code)
	}
	if err := holder.ReleaseOne("solo-1", common.Free); err != nil {
		t.Fatal(err)
	}
	if code, body := acquire("late", "busy", ""); code != http.StatusNotFound {
		t.Fatalf("a later call without a request id got %d %s; the queue comes first", code, body)
	}
	if code, body := acquire("busy", "busy", "rq-busy"); code != http.StatusNotFound {
		t.Fatalf("the second waiter got %d %s before the first", code, body)
	}
	code, body := acquire("own", "leased", "rq-own")
	if code != http.StatusOK || !strings.Contains(body, `"state":"leased"`) || !strings.Contains(body, `"owner":"own"`) {
		t.Fatalf("the first waiter: %d %s; want solo-1, leased, for own", code, body)
	}
	if code, _ := post(t, s, "/release", url.Values{"name": {"solo-1"}, "owner": {"own"}, "dest": {"free"}}); code != http.StatusOK {
		t.Fatalf("release by own: %d", code)
	}
	if code, body := acquire("busy", "busy", "rq-busy"); code != http.StatusOK || !strings.Contains(body, `"owner":"busy"`) {
		t.Fatalf("then the second waiter: %d %s", code, body)
	}
}

// TestWaiterThatLeftDoesNotLeaveTheResourceDirty: a released resource is
// handed to the first waiter, which has gone (its job was cancelled).
// Once its request runs out, nobody used the resource: it is free again,
// not dirty, and not stuck waiting for a janitor that a pool of the
// Boskos config may not have.
func TestWaiterThatLeftDoesNotLeaveTheResourceDirty(t *testing.T) {
	// A request keeps its place, and a resource handed to it, for 10 s
	// without a poll: long enough that the release below comes first.
	s := serve(t, "--boskos-request-ttl", "10s")
	holder, _ := cancelledWaiter(t, s)
	if err := holder.ReleaseOne("solo-1", common.Free); err != nil {
		t.Fatal(err)
	}
	if _, owner, _ := resource(t, s, "solo-1"); owner != "waiter" {
		t.Fatalf("solo-1 after the release is held by %q; the test needs it handed to the waiter that left (did the release come after its 10 s?)", owner)
	}
	eventually(t, "solo-1 is free again", func() bool {
		st, owner, _ := resource(t, s, "solo-1")
		return st == "free" && owner == ""
	})
	evs := events(t, s, "solo-1")
	last := evs[len(evs)-1]
	if last.Reason != "expired" || last.To != "free" || !strings.Contains(last.Message, "did not come for it") {
		t.Fatalf("solo-1's last lease event: %+v; want the unclaimed lease's expiry, to free", last)
	}
	// And the next job gets it.
	if _, err := newClient(t, s, "next").Acquire("solo", common.Free, common.Busy); err != nil {
		t.Fatalf("acquire after: %v", err)
	}
}

// TestHolderThatStopsUpdatingLosesItToDirty: --boskos-lease-ttl is how long
// a holder keeps a resource without an /update (Boskos' reaper: 30
// minutes), whether it got it at once or as a waiter; then the resource
// goes to dirty, for its janitor, as Boskos' reaper sends it.
func TestHolderThatStopsUpdatingLosesItToDirty(t *testing.T) {
	s := serve(t, "--boskos-lease-ttl", "2s")
	holder := newClient(t, s, "holder")
	if _, err := holder.Acquire("solo", common.Free, common.Busy); err != nil {
		t.Fatal(err)
	}
	if ttl := leaseOf(t, s, "solo-1"); ttl != "2s" {
		t.Fatalf("a lease taken at once has TTL %s, want 2s", ttl)
	}
	got := make(chan error, 1)
	waiter := newClient(t, s, "waiter")
	go func() {
		_, err := waiter.AcquireWait(context.Background(), "solo", common.Free, common.Busy)
		got <- err
	}()
	eventually(t, "the waiter is queued", func() bool { return waiters(t, s, "solo") == 1 })
	if err := holder.ReleaseOne("solo-1", common.Free); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if ttl := leaseOf(t, s, "solo-1"); ttl != "2s" {
		t.Fatalf("a lease handed to a waiter has TTL %s, want 2s", ttl)
	}
	// The waiter sends no /update.
	eventually(t, "solo-1 goes to dirty", func() bool {
		st, owner, _ := resource(t, s, "solo-1")
		return st == "dirty" && owner == ""
	})
	if err := waiter.UpdateOne("solo-1", common.Busy, nil); err == nil {
		t.Fatal("an update by the holder that lost solo-1 succeeded")
	}
}

// TestAcquireByStateWait waits until every named resource is in the
// state, then takes them all at once.
func TestAcquireByStateWait(t *testing.T) {
	s := serve(t)
	holder := newClient(t, s, "holder")
	if _, err := holder.AcquireByState(common.Free, common.Busy, []string{"proj-1"}); err != nil {
		t.Fatal(err)
	}
	c := newClient(t, s, "job")
	got := make(chan error, 1)
	go func() {
		rs, err := c.AcquireByStateWait(context.Background(), common.Free, "leased", []string{"proj-1", "proj-2"})
		if err == nil && (len(rs) != 2 || rs[0].State != "leased" || rs[1].Owner != "job") {
			err = errors.New("took " + rs[0].Name + " " + rs[0].State)
		}
		got <- err
	}()
	// proj-2 is free, proj-1 not: nothing is taken while the job waits.
	if st, owner, _ := resource(t, s, "proj-2"); st != "free" || owner != "" {
		t.Fatalf("proj-2 while the job waits: %s/%s", st, owner)
	}
	if err := holder.ReleaseOne("proj-1", common.Free); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"proj-1", "proj-2"} {
		if st, owner, _ := resource(t, s, n); st != "leased" || owner != "job" {
			t.Fatalf("%s: %s/%s, want leased/job", n, st, owner)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := newClient(t, s, "other").AcquireByStateWait(ctx, common.Free, common.Busy, []string{"proj-1"}); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("AcquireByStateWait that runs out: %v; want ErrNotFound", err)
	}
}

// TestAcquireWaitWithPriority: a job that names its request id keeps its
// place under it, as Boskos' prioritised waits do; a job that comes later
// is served after it.
func TestAcquireWaitWithPriority(t *testing.T) {
	s := serve(t)
	holder := newClient(t, s, "holder")
	if _, err := holder.Acquire("solo", common.Free, common.Busy); err != nil {
		t.Fatal(err)
	}
	type got struct {
		owner string
		err   error
	}
	results := make(chan got, 2)
	first := newClient(t, s, "first")
	go func() {
		_, err := first.AcquireWaitWithPriority(context.Background(), "solo", common.Free, common.Busy, "first-request")
		results <- got{"first", err}
	}()
	eventually(t, "the first is queued", func() bool { return waiters(t, s, "solo") == 1 })
	second := newClient(t, s, "second")
	go func() {
		_, err := second.AcquireWait(context.Background(), "solo", common.Free, common.Busy)
		results <- got{"second", err}
	}()
	eventually(t, "both are queued", func() bool { return waiters(t, s, "solo") == 2 })
	if err := holder.ReleaseOne("solo-1", common.Free); err != nil {
		t.Fatal(err)
	}
	if g := <-results; g.owner != "first" || g.err != nil {
		t.Fatalf("served first: %+v", g)
	}
	if err := first.ReleaseOne("solo-1", common.Free); err != nil {
		t.Fatal(err)
	}
	if g := <-results; g.owner != "second" || g.err != nil {
		t.Fatalf("then: %+v", g)
	}
}
