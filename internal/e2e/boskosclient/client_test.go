package boskosclient

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"sigs.k8s.io/boskos/client"
	"sigs.k8s.io/boskos/common"
)

// berthBin is the berth binary under test, built once by TestMain from the
// enclosing module.
var berthBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "berth-boskos-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	berthBin = filepath.Join(dir, "berth")
	build := exec.Command("go", "build", "-o", berthBin, "./cmd/berth")
	build.Dir = "../../.."
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building berth:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	// The client sleeps 1, 4 and 9 s between retries of a failed call;
	// the tests that expect a failure need not wait for it.
	client.SleepFunc = func(time.Duration) {}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// server is one running `berth serve --boskos-config`.
type server struct {
	URL string
	mu  sync.Mutex
	log strings.Builder
}

func (s *server) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.log.String()
}

// serve starts berth with the Boskos resources file testdata/resources.yaml
// and returns once it listens.
func serve(t testing.TB, args ...string) *server {
	t.Helper()
	base := []string{"serve", "--listen", "127.0.0.1:0", "--log-format", "json", "--boskos-config", "testdata/resources.yaml"}
	if !slices.Contains(args, "--store") && !slices.Contains(args, "--data") {
		base = append(base, "--data", t.TempDir())
	}
	args = append(base, args...)
	cmd := exec.Command(berthBin, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &server{}
	addr := make(chan string, 1)
	done := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			s.mu.Lock()
			s.log.WriteString(sc.Text() + "\n")
			s.mu.Unlock()
			var rec struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "listening" {
				addr <- rec.Addr
			}
		}
		_ = cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("berth serve log:\n%s", s.Log())
		}
	})
	select {
	case a := <-addr:
		s.URL = "http://" + a
	case <-done:
		t.Fatalf("berth serve exited before listening:\n%s", s.Log())
	case <-time.After(60 * time.Second):
		t.Fatalf("berth serve not listening after 60s:\n%s", s.Log())
	}
	return s
}

func newClient(t testing.TB, s *server, owner string) *client.Client {
	t.Helper()
	c, err := client.NewClient(owner, s.URL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	c.DistinguishNotFoundVsTypeNotFound = true
	return c
}

// resource reads a resource through berth's own API.
func resource(t *testing.T, s *server, name string) (state, owner string, userData map[string]string) {
	t.Helper()
	resp, err := http.Get(s.URL + "/v1/resources/" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Resource struct {
			State, Owner string
			UserData     map[string]string
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	return body.Resource.State, body.Resource.Owner, body.Resource.UserData
}

// waiters reads how many requests wait for a pool, through berth's API.
func waiters(t testing.TB, s *server, typ string) int {
	t.Helper()
	resp, err := http.Get(s.URL + "/v1/pools/" + typ)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct{ Pool struct{ Waiters int } }
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	return body.Pool.Waiters
}

// eventually polls cond until it holds or 30 s pass: a wait on a
// condition, not a sleep.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestAcquireAndRelease(t *testing.T) {
	s := serve(t)
	c := newClient(t, s, "job-1")
	r, err := c.Acquire("gce-project", common.Free, common.Busy)
	if err != nil {
		t.Fatal(err)
	}
	if r.Type != "gce-project" || r.State != common.Busy || r.Owner != "job-1" || r.LastUpdate.IsZero() {
		t.Fatalf("acquired %+v", r)
	}
	if st, owner, _ := resource(t, s, r.Name); st != "busy" || owner != "job-1" {
		t.Fatalf("berth has %s %s/%s", r.Name, st, owner)
	}
	if !c.HasResource() {
		t.Fatal("the client does not know it holds a resource")
	}
	// An unknown type and an exhausted one are told apart.
	if _, err := c.Acquire("no-such-type", common.Free, common.Busy); !errors.Is(err, client.ErrTypeNotFound) {
		t.Fatalf("acquire of an unknown type: %v; want ErrTypeNotFound", err)
	}
	other := newClient(t, s, "job-2")
	r2, err := other.Acquire("gce-project", common.Free, common.Busy)
	if err != nil || r2.Name == r.Name {
		t.Fatalf("second acquire: %+v, %v", r2, err)
	}
	if _, err := other.Acquire("gce-project", common.Free, common.Busy); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("acquire from an exhausted pool: %v; want ErrNotFound", err)
	}
	// Release: to dirty with Release, to free with ReleaseOne.
	if err := c.ReleaseOne(r.Name, common.Dirty); err != nil {
		t.Fatal(err)
	}
	if st, owner, _ := resource(t, s, r.Name); st != "dirty" || owner != "" {
		t.Fatalf("after release to dirty: %s/%s", st, owner)
	}
	if err := other.ReleaseOne(r2.Name, common.Free); err != nil {
		t.Fatal(err)
	}
	if other.HasResource() {
		t.Fatal("the client still thinks it holds a resource")
	}
	// Releasing what someone else holds fails.
	r3, err := c.Acquire("gce-project", common.Free, common.Busy)
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Release(r3.Name, common.Free); err == nil {
		t.Fatal("released a resource another owner holds")
	}
	if st, owner, _ := resource(t, s, r3.Name); st != "busy" || owner != "job-1" {
		t.Fatalf("after a stranger's release: %s/%s", st, owner)
	}
	// ReleaseAll gives back everything the client holds.
	if err := c.ReleaseAll(common.Free); err != nil {
		t.Fatal(err)
	}
	if st, _, _ := resource(t, s, r3.Name); st != "free" {
		t.Fatalf("after ReleaseAll: %s", st)
	}
	if err := c.ReleaseAll(common.Free); err == nil {
		t.Fatal("ReleaseAll with nothing held succeeded")
	}
}

func TestAcquireWaitServesWaitersInOrder(t *testing.T) {
	s := serve(t)
	holder := newClient(t, s, "holder")
	r, err := holder.Acquire("solo", common.Free, common.Busy)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	type got struct {
		owner string
		res   *common.Resource
		err   error
	}
	results := make(chan got, 2)
	wait := func(owner string) *client.Client {
		c := newClient(t, s, owner)
		go func() {
			res, err := c.AcquireWait(ctx, "solo", common.Free, common.Busy)
			results <- got{owner, res, err}
		}()
		return c
	}
	first := wait("first")
	// The second waits only once the first is in the queue.
	eventually(t, "the first waiter is queued", func() bool { return waiters(t, s, "solo") == 1 })
	wait("second")
	eventually(t, "both waiters are queued", func() bool { return waiters(t, s, "solo") == 2 })

	if err := holder.ReleaseOne(r.Name, common.Free); err != nil {
		t.Fatal(err)
	}
	g := <-results
	if g.err != nil || g.owner != "first" || g.res.Name != "solo-1" || g.res.Owner != "first" {
		t.Fatalf("first served: %+v (%v); want the first waiter with solo-1", g, g.err)
	}
	if err := first.ReleaseOne("solo-1", common.Free); err != nil {
		t.Fatal(err)
	}
	g = <-results
	if g.err != nil || g.owner != "second" || g.res.Owner != "second" {
		t.Fatalf("then: %+v (%v); want the second waiter", g, g.err)
	}
}

// cancelledWaiter has "holder" take solo-1 and "waiter" wait for it with
// AcquireWait until it is queued, then cancels the wait, which gives up
// with ErrNotFound.
func cancelledWaiter(t *testing.T, s *server) (holder, waiter *client.Client) {
	t.Helper()
	holder = newClient(t, s, "holder")
	if _, err := holder.Acquire("solo", common.Free, common.Busy); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	waiter = newClient(t, s, "waiter")
	done := make(chan error, 1)
	go func() {
		_, err := waiter.AcquireWait(ctx, "solo", common.Free, common.Busy)
		done <- err
	}()
	eventually(t, "the waiter is queued", func() bool { return waiters(t, s, "solo") == 1 })
	cancel()
	if err := <-done; !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("AcquireWait after cancel: %v; want ErrNotFound", err)
	}
	return holder, waiter
}

func TestAcquireWaitGivesUpWithContext(t *testing.T) {
	s := serve(t)
	_, c := cancelledWaiter(t, s)
	//lint:ignore SA1012 the client's own check for a nil context is what is tested
	if _, err := c.AcquireWait(nil, "solo", common.Free, common.Busy); !errors.Is(err, client.ErrContextRequired) {
		t.Fatalf("AcquireWait(nil): %v", err)
	}
}

func TestAcquireByState(t *testing.T) {
	s := serve(t)
	c := newClient(t, s, "job")
	rs, err := c.AcquireByState(common.Free, common.Busy, []string{"proj-1", "solo-1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 || rs[0].Name != "proj-1" || rs[1].Name != "solo-1" || rs[0].Owner != "job" || rs[1].State != common.Busy {
		t.Fatalf("AcquireByState: %+v", rs)
	}
	// All or nothing: proj-2 is free, proj-1 is not; neither is taken.
	other := newClient(t, s, "other")
	if _, err := other.AcquireByState(common.Free, common.Busy, []string{"proj-2", "proj-1"}); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("AcquireByState with one taken: %v; want ErrNotFound", err)
	}
	if st, owner, _ := resource(t, s, "proj-2"); st != "free" || owner != "" {
		t.Fatalf("proj-2 after a refused AcquireByState: %s/%s", st, owner)
	}
	if err := c.ReleaseAll(common.Dirty); err != nil {
		t.Fatal(err)
	}
}

func TestUpdateAndUserData(t *testing.T) {
	s := serve(t)
	c := newClient(t, s, "job")
	a, err := c.Acquire("gce-project", common.Free, common.Busy)
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Acquire("gce-project", common.Free, common.Busy)
	if err != nil {
		t.Fatal(err)
	}
	// UpdateOne merges user data; "" deletes a key.
	if err := c.UpdateOne(a.Name, common.Busy, common.UserDataFromMap(common.UserDataMap{"cluster": "c1", "zone": "z"})); err != nil {
		t.Fatal(err)
	}
	if err := c.UpdateOne(a.Name, common.Busy, common.UserDataFromMap(common.UserDataMap{"zone": ""})); err != nil {
		t.Fatal(err)
	}
	if _, _, ud := resource(t, s, a.Name); len(ud) != 1 || ud["cluster"] != "c1" {
		t.Fatalf("user data of %s: %v; want cluster=c1 only", a.Name, ud)
	}
	// Update with the wrong state is refused (409), by Update and UpdateOne.
	if err := c.Update(a.Name, common.Dirty, nil); err == nil {
		t.Fatal("update with the wrong state succeeded")
	}
	if err := c.UpdateOne("not-mine", common.Busy, nil); err == nil {
		t.Fatal("UpdateOne of a resource the client does not hold succeeded")
	}
	// UpdateAll and SyncAll heartbeat every held resource.
	if err := c.UpdateAll(common.Busy); err != nil {
		t.Fatal(err)
	}
	if err := c.SyncAll(); err != nil {
		t.Fatal(err)
	}
	// A stranger may not update.
	stranger := newClient(t, s, "stranger")
	if err := stranger.Update(b.Name, common.Busy, nil); err == nil {
		t.Fatal("a stranger's update succeeded")
	}
	if err := c.ReleaseAll(common.Free); err != nil {
		t.Fatal(err)
	}
	if err := c.UpdateAll(common.Busy); err == nil {
		t.Fatal("UpdateAll with nothing held succeeded")
	}
}

func TestJanitorAndReset(t *testing.T) {
	s := serve(t)
	// aws-account starts dirty: a Boskos janitor cleans it.
	jan := newClient(t, s, "janitor")
	if _, err := newClient(t, s, "job").Acquire("aws-account", common.Free, common.Busy); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("acquire before cleaning: %v; want ErrNotFound", err)
	}
	r, err := jan.Acquire("aws-account", common.Dirty, common.Cleaning)
	if err != nil {
		t.Fatal(err)
	}
	if err := jan.UpdateOne(r.Name, common.Cleaning, nil); err != nil {
		t.Fatal(err)
	}
	if err := jan.ReleaseOne(r.Name, common.Free); err != nil {
		t.Fatal(err)
	}
	job := newClient(t, s, "job")
	got, err := job.Acquire("aws-account", common.Free, common.Busy)
	if err != nil || got.Name != r.Name {
		t.Fatalf("acquire after cleaning: %+v, %v; want %s", got, err, r.Name)
	}
	// Reset takes what was not updated for expire back from its holder.
	if m, err := job.Reset("aws-account", common.Busy, time.Hour, common.Dirty); err != nil || len(m) != 0 {
		t.Fatalf("Reset with a fresh holder: %v, %v; want nothing reset", m, err)
	}
	m, err := job.Reset("aws-account", common.Busy, 0, common.Dirty)
	if err != nil || m[r.Name] != "job" || len(m) != 1 {
		t.Fatalf("Reset: %v, %v; want %s from job", m, err, r.Name)
	}
	if st, owner, _ := resource(t, s, r.Name); st != "dirty" || owner != "" {
		t.Fatalf("after reset: %s/%s", st, owner)
	}
	if err := job.UpdateOne(r.Name, common.Busy, nil); err == nil {
		t.Fatal("the holder that was reset could still update")
	}
	if m, err := job.Reset("no-such-type", common.Busy, 0, common.Dirty); err != nil || len(m) != 0 {
		t.Fatalf("Reset of an unknown type: %v, %v; want {}", m, err)
	}
}

func TestMetric(t *testing.T) {
	s := serve(t)
	c := newClient(t, s, "job")
	if _, err := c.Acquire("gce-project", common.Free, common.Busy); err != nil {
		t.Fatal(err)
	}
	m, err := c.Metric("gce-project")
	if err != nil {
		t.Fatal(err)
	}
	if m.Type != "gce-project" || m.Current["busy"] != 1 || m.Current["free"] != 1 || m.Owners["job"] != 1 || m.Owners[""] != 1 {
		t.Fatalf("metric: %+v", m)
	}
	if _, err := c.Metric("no-such-type"); err == nil {
		t.Fatal("metric of an unknown type succeeded")
	}
}

func TestDynamicTypes(t *testing.T) {
	s := serve(t)
	// warm keeps its min-count from the start, in its initial state.
	m, err := newClient(t, s, "job").Metric("warm")
	if err != nil || m.Current["dirty"] != 1 || len(m.Current) != 1 {
		t.Fatalf("metric of warm: %+v, %v; want one dirty resource", m, err)
	}
	// on-demand has none: a waiter's first poll makes one (it starts
	// free, so it is handed to that waiter), and its next poll gets it.
	c := newClient(t, s, "job")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := c.AcquireWait(ctx, "on-demand", common.Free, common.Busy)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(r.Name, "on-demand-") || r.Owner != "job" || r.ExpirationDate == nil ||
		r.ExpirationDate.Sub(r.LastUpdate) < 47*time.Hour || r.ExpirationDate.Sub(r.LastUpdate) > 49*time.Hour {
		t.Fatalf("acquired %+v (expires %v); want a made resource expiring in 48h", r, r.ExpirationDate)
	}
	// max-count 1: nothing more is made.
	if _, err := newClient(t, s, "other").AcquireWithPriority("on-demand", common.Free, common.Busy, "other-request"); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("acquire past max-count: %v; want ErrNotFound", err)
	}
	if m, err := c.Metric("on-demand"); err != nil || m.Current["busy"] != 1 || len(m.Current) != 1 {
		t.Fatalf("metric of on-demand: %+v, %v; want the one busy resource", m, err)
	}
}
