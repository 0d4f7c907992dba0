package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/client"
	"github.com/berth-ci/berth/internal/api"
	"github.com/berth-ci/berth/internal/store/postgres/pgtest"
)

// TestPostgresStoreKeepsLeasesAcrossKill9 runs a real `berth serve
// --store postgres://…`, kills it with SIGKILL while it holds a lease, and
// starts it again on the same database: the lease is still held, the
// released one stays released, and tokens keep growing.
func TestPostgresStoreKeepsLeasesAcrossKill9(t *testing.T) {
	store := pgtest.StoreURL(t)
	dir := t.TempDir()
	cfg := writeConfig(t, dir, poolYAML("vm", 2, "10m"))
	srv := startServer(t, "--config", cfg, "--store", store)
	c := newClient(t, client.Options{Servers: []string{srv.URL}})
	ctx := context.Background()

	held, err := c.Acquire(ctx, client.AcquireParams{Type: "vm", Owner: "job-1"})
	if err != nil {
		t.Fatal(err)
	}
	gone, err := c.Acquire(ctx, client.AcquireParams{Type: "vm", Owner: "job-2"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Release(ctx, gone.Lease.ID, client.ReleaseParams{To: berth.ReleaseFree}); err != nil {
		t.Fatal(err)
	}
	srv.kill9()

	srv = startServer(t, "--config", cfg, "--store", store)
	c = newClient(t, client.Options{Servers: []string{srv.URL}})
	l, err := c.Lease(ctx, held.Lease.ID)
	if err != nil {
		t.Fatal(err)
	}
	if l.Status != berth.LeaseActive || l.Token != held.Lease.Token {
		t.Fatalf("held lease after kill -9: %+v; want it active with token %d", l, held.Lease.Token)
	}
	if l, err := c.Lease(ctx, gone.Lease.ID); err != nil || l.Status != berth.LeaseReleased {
		t.Fatalf("released lease after kill -9: %+v, %v; want released", l, err)
	}
	next, err := c.Acquire(ctx, client.AcquireParams{Type: "vm", Owner: "job-3"})
	if err != nil {
		t.Fatal(err)
	}
	if next.Resource.Name != gone.Resource.Name || next.Lease.Token <= gone.Lease.Token {
		t.Fatalf("acquire after restart: %s token %d; want %s with a token above %d",
			next.Resource.Name, next.Lease.Token, gone.Resource.Name, gone.Lease.Token)
	}
	if _, err := c.Acquire(ctx, client.AcquireParams{Type: "vm", Owner: "job-4"}); berth.ErrorCodeOf(err) != berth.EExhausted {
		t.Fatalf("third acquire on two resources: %v; want exhausted", err)
	}
}

// TestPostgresHandoffAcrossReplicas: two `berth serve` processes on one
// PostgreSQL. A job long-polls on replica B for the only resource, which a
// job on replica A holds; A's release hands it over, and B's long poll is
// woken by the notification and answers with the lease long before its
// wait would have ended.
func TestPostgresHandoffAcrossReplicas(t *testing.T) {
	store := pgtest.StoreURL(t)
	dir := t.TempDir()
	cfg := writeConfig(t, dir, poolYAML("vm", 1, "10m"))
	a := startServer(t, "--config", cfg, "--store", store)
	b := startServer(t, "--config", cfg, "--store", store)
	ca := newClient(t, client.Options{Servers: []string{a.URL}})
	cb := newClient(t, client.Options{Servers: []string{b.URL}})
	ctx := context.Background()

	held, err := ca.Acquire(ctx, client.AcquireParams{Type: "vm", Owner: "job-a"})
	if err != nil {
		t.Fatal(err)
	}
	const wait = time.Minute
	type result struct {
		a   *client.Acquired
		err error
		at  time.Time
	}
	got := make(chan result, 1)
	go func() {
		r, err := cb.Acquire(ctx, client.AcquireParams{Type: "vm", Owner: "job-b", Wait: wait})
		got <- result{r, err, time.Now()}
	}()
	waitFor(t, "the job on replica B to queue", func() bool {
		p, err := ca.Pool(ctx, "vm")
		return err == nil && p.Waiters == 1
	})
	released := time.Now()
	if _, err := ca.Release(ctx, held.Lease.ID, client.ReleaseParams{To: berth.ReleaseFree}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-got:
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.a.Lease.Owner != "job-b" || r.a.Resource.Name != held.Resource.Name || r.a.Lease.Token <= held.Lease.Token {
			t.Fatalf("waiter got %+v", r.a.Lease)
		}
		t.Logf("release on A -> waiter on B holds it: %s", r.at.Sub(released))
	case <-time.After(wait / 2):
		t.Fatalf("the waiter on replica B was not woken by the release on replica A within %s", wait/2)
	}
}

// TestPostgresEventsFollowAcrossReplicas: a follower of the event feed on
// replica B sees the lease taken on replica A, though B wrote nothing.
func TestPostgresEventsFollowAcrossReplicas(t *testing.T) {
	store := pgtest.StoreURL(t)
	cfg := writeConfig(t, t.TempDir(), poolYAML("vm", 1, "10m"))
	a := startServer(t, "--config", cfg, "--store", store)
	b := startServer(t, "--config", cfg, "--store", store)
	ca := newClient(t, client.Options{Servers: []string{a.URL}})
	cb := newClient(t, client.Options{Servers: []string{b.URL}})
	ctx := context.Background()
	evs, err := cb.Events(ctx, client.EventFilter{Desc: true, Limit: 1})
	if err != nil || len(evs) != 1 {
		t.Fatalf("latest event = %v, %v", evs, err)
	}
	type result struct {
		evs []*berth.Event
		err error
	}
	got := make(chan result, 1)
	go func() {
		evs, err := cb.Events(ctx, client.EventFilter{After: evs[0].ID, Wait: 50 * time.Second})
		got <- result{evs, err}
	}()
	held, err := ca.Acquire(ctx, client.AcquireParams{Type: "vm", Owner: "job-a"})
	if err != nil {
		t.Fatal(err)
	}
	r := <-got
	if r.err != nil {
		t.Fatal(r.err)
	}
	if len(r.evs) == 0 || r.evs[0].LeaseID != held.Lease.ID {
		t.Fatalf("follower on B got %+v; want the lease event of %s (or its long poll ended empty)", r.evs, held.Lease.ID)
	}
}

// TestPostgresLeaderCutOffSilently: the leader's network to PostgreSQL is
// black-holed (nothing arrives, nothing is closed, as in a split). The
// leader stops its loops when its pings go unanswered; PostgreSQL ends
// its silent session and frees the lock; another replica leads, never
// while the first still runs its loops. When the network is back, the
// cut-off replica serves again and wakes its waiters on handoffs made
// elsewhere.
func TestPostgresLeaderCutOffSilently(t *testing.T) {
	schema := pgtest.Schema(t)
	proxy, viaProxy := pgProxy(t, schema)
	cfg := writeConfig(t, t.TempDir(), poolYAML("vm", 1, "10m"))
	a := startServer(t, "--config", cfg, "--store", viaProxy, "--store-timeout", "1s")
	var aName string
	waitFor(t, "replica A to lead", func() bool {
		st, err := status(t, a.URL)
		aName = st.Replica
		return err == nil && st.Leader == st.Replica && strings.Contains(a.Log(), "leading: running the reaper")
	})
	direct := pgtest.URL(t)
	sep := "?"
	if strings.Contains(direct, "?") {
		sep = "&"
	}
	b := startServer(t, "--config", cfg, "--store", direct+sep+"search_path="+schema)

	restore := blackHole(t, proxy)
	cut := time.Now()
	var bName string
	waitFor(t, "replica B to lead", func() bool {
		st, err := status(t, b.URL)
		bName = st.Replica
		return err == nil && st.Leader == st.Replica && strings.Contains(b.Log(), "leading: running the reaper")
	})
	took := time.Since(cut)
	t.Logf("cut -> B runs the leader's loops: %s", took.Round(time.Millisecond))
	if took > 15*time.Second {
		t.Errorf("B took %s to lead after A was cut off; want within 15 s", took)
	}
	aStopped := logTime(t, a, "no longer leading")
	bStarted := logTime(t, b, "leading: running the reaper, the prober, the janitor and the provisioner")
	if aStopped.IsZero() || !aStopped.Before(bStarted) {
		t.Fatalf("A (%s) stopped leading at %v, B (%s) started at %v: two leaders at once", aName, aStopped, bName, bStarted)
	}

	restore()
	waitFor(t, "replica A to be ready again", func() bool {
		res, err := doJSON(&http.Client{Timeout: 10 * time.Second}, "GET", a.URL+"/readyz", "")
		return err == nil && res.status == http.StatusOK
	})
	ctx := context.Background()
	ca := newClient(t, client.Options{Servers: []string{a.URL}})
	cb := newClient(t, client.Options{Servers: []string{b.URL}})
	held, err := cb.Acquire(ctx, client.AcquireParams{Type: "vm", Owner: "holder"})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		_, err := ca.Acquire(ctx, client.AcquireParams{Type: "vm", Owner: "waiter", Wait: 50 * time.Second})
		got <- err
	}()
	waitFor(t, "the waiter on A to queue", func() bool {
		p, err := cb.Pool(ctx, "vm")
		return err == nil && p.Waiters == 1
	})
	if _, err := cb.Release(ctx, held.Lease.ID, client.ReleaseParams{To: berth.ReleaseFree}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("waiter on A: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the waiter on A was not handed the resource released on B within 20 s")
	}
}

// logTime is the time of the first line of p's JSON log whose message is
// msg; zero if there is none.
func logTime(t *testing.T, p *proc, msg string) time.Time {
	t.Helper()
	for _, line := range strings.Split(p.Log(), "\n") {
		var rec struct {
			Time time.Time
			Msg  string
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == msg {
			return rec.Time
		}
	}
	return time.Time{}
}

// status reads GET /v1/status from url.
func status(t *testing.T, url string) (api.Status, error) {
	t.Helper()
	var st api.Status
	res, err := http.Get(url + "/v1/status")
	if err != nil {
		return st, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return st, fmt.Errorf("GET /v1/status: %s", res.Status)
	}
	return st, json.NewDecoder(res.Body).Decode(&st)
}

// TestPostgresLeaderFailover: three replicas on one PostgreSQL agree on one
// leader, which runs the reaper. When it is killed with SIGKILL, another
// replica leads within a few seconds, and leases that run out are still
// reaped.
func TestPostgresLeaderFailover(t *testing.T) {
	store := pgtest.StoreURL(t)
	dir := t.TempDir()
	cfg := writeConfig(t, dir, poolYAML("vm", 2, "1s"))
	var srvs []*proc
	for range 3 {
		srvs = append(srvs, startServer(t, "--config", cfg, "--store", store))
	}
	leaderOf := func(ps []*proc) (int, bool) {
		names := map[string]bool{}
		for _, p := range ps {
			st, err := status(t, p.URL)
			if err != nil {
				return -1, false
			}
			names[st.Leader] = true
		}
		if len(names) != 1 {
			return -1, false // not yet agreed
		}
		for i, p := range ps {
			for name := range names {
				if strings.HasSuffix(name, "/"+strings.TrimPrefix(p.URL, "http://")) {
					return i, true
				}
			}
		}
		return -1, false
	}
	var leader int
	waitFor(t, "the three replicas to agree on a leader", func() bool {
		var ok bool
		leader, ok = leaderOf(srvs)
		return ok
	})
	killed := time.Now()
	srvs[leader].kill9()
	rest := slices.Delete(slices.Clone(srvs), leader, leader+1)
	waitFor(t, "a surviving replica to lead", func() bool {
		_, ok := leaderOf(rest)
		return ok
	})
	t.Logf("new leader %s after the old one was killed", time.Since(killed))

	// The new leader reaps: a lease left to run out comes back free.
	c := newClient(t, client.Options{Servers: []string{rest[0].URL}})
	ctx := context.Background()
	a, err := c.Acquire(ctx, client.AcquireParams{Type: "vm", Owner: "gone"})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the expired lease to be reaped", func() bool {
		// Ended by the reaper (endedAt set, resource free again), not
		// merely read as expired: a lease past its expiry reads expired
		// whether or not anything reaped it.
		l, err := c.Lease(ctx, a.Lease.ID)
		if err != nil || l.Status != berth.LeaseExpired || l.EndedAt == nil {
			return false
		}
		r, err := c.Resource(ctx, a.Resource.Name)
		return err == nil && r.State == berth.StateFree
	})
}
