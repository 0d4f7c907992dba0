package janitor_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"go.uber.org/goleak"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/janitor"
	"github.com/berth-ci/berth/internal/lease"
	"github.com/berth-ci/berth/internal/store"
	"github.com/berth-ci/berth/internal/store/sqlite"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// rig is an engine on a real SQLite store with a fake clock, for a loop
// under test that runs the real scripts in testdata.
type rig struct {
	t     testing.TB
	clock *clockwork.FakeClock
	eng   *lease.Engine
	// dir is where the scripts look for what to do and write what they
	// did ($JANITOR_DIR, $DYN_DIR).
	dir string
	// begun are cleanings read from the fifo but not yet returned by
	// started (two that write at once are read together), as
	// "resource pid"; pids maps each resource to the pid of the last
	// command started on it.
	begun []string
	pids  map[string]int
}

var t0 = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

func newRig(t testing.TB, pools ...lease.Pool) *rig {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "berth.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, clock: clockwork.NewFakeClockAt(t0), dir: t.TempDir()}
	t.Cleanup(func() {
		if err := st.Check(context.Background()); err != nil {
			t.Errorf("store consistency: %v", err)
		}
		st.Close()
	})
	r.eng = lease.New(lease.Options{Store: st, Clock: r.clock})
	if _, err := r.eng.SyncPools(context.Background(), pools, "test"); err != nil {
		t.Fatal(err)
	}
	return r
}

func script(name string) []string {
	p, err := filepath.Abs(filepath.Join("testdata", name))
	if err != nil {
		panic(err)
	}
	return []string{p}
}

func (r *rig) env() []string {
	return append(os.Environ(), "JANITOR_DIR="+r.dir, "DYN_DIR="+r.dir)
}

// run runs loop until the test ends.
func (r *rig) run(loop func(ctx context.Context)) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		loop(ctx)
	}()
	stop = func() {
		cancel()
		<-done
	}
	r.t.Cleanup(stop)
	return stop
}

func (r *rig) runJanitor(pools ...janitor.Pool) (stop func()) {
	j := janitor.New(janitor.Options{Engine: r.eng, Clock: r.clock, Pools: pools, Env: r.env()})
	return r.run(j.Run)
}

// waitFor waits until cond holds, looking again whenever the engine
// writes an event; it fails the test after 20 s.
func (r *rig) waitFor(what string, cond func() bool) {
	r.t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		changed := r.eng.Changed()
		if cond() {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			r.t.Fatalf("waited 20s for %s", what)
		}
	}
}

func (r *rig) resource(name string) *berth.Resource {
	r.t.Helper()
	res, err := r.eng.Resource(context.Background(), name)
	if err != nil {
		r.t.Fatal(err)
	}
	return res
}

func (r *rig) state(name string) berth.State { return r.resource(name).State }

func (r *rig) acquire(typ, owner string) *lease.AcquireResult {
	r.t.Helper()
	res, err := r.eng.Acquire(context.Background(), lease.AcquireParams{Type: typ, Owner: owner})
	if err != nil {
		r.t.Fatal(err)
	}
	return res
}

func (r *rig) release(id string, to berth.ReleaseTarget, reason string) *berth.Resource {
	r.t.Helper()
	res, err := r.eng.Release(context.Background(), lease.ReleaseParams{ID: id, To: to, Reason: reason})
	if err != nil {
		r.t.Fatal(err)
	}
	return res.Resource
}

func (r *rig) events(name string, kind berth.EventKind) []*berth.Event {
	r.t.Helper()
	evs, err := r.eng.Events(context.Background(), &lease.EventListParams{Resource: name, Kind: kind}, 0)
	if err != nil {
		r.t.Fatal(err)
	}
	return evs
}

func reasonsOf(evs []*berth.Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Reason)
	}
	return out
}

func (r *rig) touch(name string) {
	r.t.Helper()
	if err := os.WriteFile(filepath.Join(r.dir, name), nil, 0o644); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rig) untouch(name string) {
	r.t.Helper()
	if err := os.Remove(filepath.Join(r.dir, name)); err != nil {
		r.t.Fatal(err)
	}
}

// blockCleanings makes clean.sh tell, on the fifo "started", which
// resource it is cleaning, and then wait until it is killed.
func (r *rig) blockCleanings() {
	r.t.Helper()
	if err := exec.Command("mkfifo", filepath.Join(r.dir, "started")).Run(); err != nil {
		r.t.Fatal(err)
	}
	r.touch("block")
}

// started returns the next resource a blocked clean.sh started on: by then
// the command runs, and its timeout and heartbeat are set.
func (r *rig) started() string {
	r.t.Helper()
	for len(r.begun) == 0 {
		// Empty when a writer went without writing: a script killed as it
		// began.
		for _, line := range strings.Split(r.readStarted(), "\n") {
			if line = strings.TrimSpace(line); line != "" {
				r.begun = append(r.begun, line)
			}
		}
	}
	name, pid, _ := strings.Cut(r.begun[0], " ")
	r.begun = r.begun[1:]
	if r.pids == nil {
		r.pids = map[string]int{}
	}
	r.pids[name], _ = strconv.Atoi(pid)
	return name
}

// readStarted reads the fifo until its writers have closed it.
func (r *rig) readStarted() string {
	r.t.Helper()
	type read struct {
		s   string
		err error
	}
	got := make(chan read, 1)
	go func() {
		f, err := os.Open(filepath.Join(r.dir, "started")) // waits for a writer
		if err != nil {
			got <- read{err: err}
			return
		}
		defer f.Close()
		b, err := io.ReadAll(f)
		got <- read{s: string(b), err: err}
	}()
	select {
	case g := <-got:
		if g.err != nil {
			r.t.Fatalf("read the started fifo: %v", g.err)
		}
		return g.s
	case <-time.After(20 * time.Second):
		r.t.Fatal("no cleaning started within 20s")
		return ""
	}
}

func (r *rig) ran(name string, attempt int) string {
	r.t.Helper()
	b, err := os.ReadFile(filepath.Join(r.dir, fmt.Sprintf("ran.%s.%d", name, attempt)))
	if err != nil {
		r.t.Fatal(err)
	}
	return string(b)
}

func vmPool(n int) lease.Pool {
	p := lease.Pool{Type: "vm", LeaseTTL: time.Minute, Janitor: lease.JanitorCommand, CleanLeaseTTL: 30 * time.Minute,
		Clean: lease.CleanPolicy{MaxAttempts: 3, Backoff: 10 * time.Second, MaxBackoff: time.Minute}}
	for i := 1; i <= n; i++ {
		p.Resources = append(p.Resources, store.ResourceSpec{Name: fmt.Sprintf("vm-%d", i), UserData: map[string]string{"ip": fmt.Sprintf("10.0.0.%d", i)}})
	}
	return p
}

func vmJanitor() janitor.Pool {
	return janitor.Pool{Type: "vm", Command: script("clean.sh"), Timeout: 5 * time.Minute, Concurrency: 1}
}

func TestJanitorCleans(t *testing.T) {
	r := newRig(t, vmPool(1))
	r.runJanitor(vmJanitor())
	a := r.acquire("vm", "job")
	if got := r.release(a.Lease.ID, berth.ReleaseDirty, ""); got.State != berth.StateDirty {
		t.Fatalf("released to %s, want dirty", got.State)
	}
	r.waitFor("vm-1 to be cleaned", func() bool { return r.state("vm-1") == berth.StateFree })
	got := r.ran("vm-1", 1)
	for _, want := range []string{"BERTH_RESOURCE_NAME=vm-1\n", "BERTH_RESOURCE_TYPE=vm\n", "BERTH_USERDATA_IP=10.0.0.1\n",
		"BERTH_CLEAN_ATTEMPT=1\n", "BERTH_CLEAN_DEEP=false\n", "BERTH_LEASE_ID=", "--- stdin\n{\"ip\":\"10.0.0.1\"}\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("the janitor was not given %q:\n%s", want, got)
		}
	}
	evs := r.events("vm-1", berth.EventJanitor)
	if len(evs) != 2 || evs[1].Reason != store.ReasonCleaned || evs[1].Output != "cleaned vm-1 (deep: false)" || evs[1].Actor != janitor.DefaultOwner {
		t.Fatalf("janitor events: %+v", evs)
	}
}

func TestJanitorBacksOffThenQuarantines(t *testing.T) {
	r := newRig(t, vmPool(1))
	r.touch("fail")
	r.runJanitor(vmJanitor())
	a := r.acquire("vm", "job")
	r.release(a.Lease.ID, berth.ReleaseDirty, "")
	r.waitFor("a failed attempt", func() bool { return r.resource("vm-1").CleanAttempts == 1 })
	res := r.resource("vm-1")
	// Backoff 10s, jittered by a fifth either way.
	if res.State != berth.StateDirty || res.NextCleanAt == nil || res.NextCleanAt.Before(t0.Add(8*time.Second)) || res.NextCleanAt.After(t0.Add(12*time.Second)) {
		t.Fatalf("after a failure: %+v", res)
	}
	r.clock.Advance(res.NextCleanAt.Sub(r.clock.Now()))
	r.waitFor("the second attempt", func() bool { return r.resource("vm-1").CleanAttempts == 2 })
	r.clock.Advance(r.resource("vm-1").NextCleanAt.Sub(r.clock.Now()))
	r.waitFor("the third attempt", func() bool { return r.state("vm-1") == berth.StateQuarantined })
	res = r.resource("vm-1")
	if !strings.Contains(res.StateReason, "cleaning failed 3 times; the last time: exit status 3: wiping vm-1") ||
		!strings.Contains(res.StateReason, "rm: cannot remove /data: device busy") {
		t.Fatalf("quarantine reason: %q", res.StateReason)
	}
	evs := r.events("vm-1", berth.EventJanitor)
	want := []string{"cleaning", "clean-failed", "cleaning", "clean-failed", "cleaning", "quarantined"}
	if got := reasonsOf(evs); !slices.Equal(got, want) {
		t.Fatalf("janitor events %v, want %v", got, want)
	}
	// Every attempt's output is kept on its event.
	for _, i := range []int{1, 3, 5} {
		if !strings.Contains(evs[i].Output, "rm: cannot remove") || !strings.Contains(evs[i].Output, "wiping vm-1") {
			t.Errorf("attempt %d output: %q", (i+1)/2, evs[i].Output)
		}
	}
	if r.ran("vm-1", 3) == "" {
		t.Fatal("no third attempt ran")
	}
}

func TestJanitorTimeout(t *testing.T) {
	r := newRig(t, vmPool(1))
	r.blockCleanings()
	r.runJanitor(vmJanitor())
	a := r.acquire("vm", "job")
	r.release(a.Lease.ID, berth.ReleaseDirty, "")
	if got := r.started(); got != "vm-1" {
		t.Fatalf("started %q", got)
	}
	r.clock.Advance(5 * time.Minute)
	r.waitFor("the timed-out attempt to be recorded", func() bool { return r.resource("vm-1").CleanAttempts == 1 })
	evs := r.events("vm-1", berth.EventJanitor)
	if last := evs[len(evs)-1]; last.Reason != store.ReasonCleanFailed || !strings.Contains(last.Message, "timed out after 5m0s (the command was killed)") {
		t.Fatalf("last event: %+v", last)
	}
}

func TestJanitorDeepCleansBroken(t *testing.T) {
	p := vmPool(1)
	p.OnBroken = lease.OnBrokenClean
	r := newRig(t, p)
	j := vmJanitor()
	j.DeepCommand = append(script("clean.sh"), "--deep")
	r.runJanitor(j)
	a := r.acquire("vm", "job")
	if got := r.release(a.Lease.ID, berth.ReleaseBroken, "kubelet wedged"); got.State != berth.StateDirty || !got.DeepClean {
		t.Fatalf("reported broken: %+v", got)
	}
	r.waitFor("vm-1 to be cleaned", func() bool { return r.state("vm-1") == berth.StateFree })
	if got := r.ran("vm-1", 1); !strings.Contains(got, "BERTH_CLEAN_DEEP=true\n") || !strings.Contains(got, "BERTH_CLEAN_REASON=kubelet wedged\n") {
		t.Fatalf("the deep cleaning was given:\n%s", got)
	}
	evs := r.events("vm-1", berth.EventJanitor)
	if evs[0].Message != "cleaning attempt 1 by berth-janitor (deep: reported broken)" || evs[1].Output != "cleaned vm-1 (deep: true)" {
		t.Fatalf("events: %+v %+v", evs[0], evs[1])
	}
	// Without onBroken: clean, broken is quarantine.
	r2 := newRig(t, vmPool(1))
	a = r2.acquire("vm", "job")
	if got := r2.release(a.Lease.ID, berth.ReleaseBroken, "disk full"); got.State != berth.StateQuarantined || got.StateReason != "disk full" {
		t.Fatalf("broken in a pool that quarantines: %+v", got)
	}
}

func TestJanitorConcurrencyLimit(t *testing.T) {
	r := newRig(t, vmPool(3))
	r.blockCleanings()
	j := vmJanitor()
	j.Concurrency = 2
	r.runJanitor(j)
	for range 3 {
		a := r.acquire("vm", "job")
		r.release(a.Lease.ID, berth.ReleaseDirty, "")
	}
	first, second := r.started(), r.started()
	cleaning := func() (n int) {
		for i := 1; i <= 3; i++ {
			if r.state(fmt.Sprintf("vm-%d", i)) == berth.StateCleaning {
				n++
			}
		}
		return n
	}
	if n := cleaning(); n != 2 || first == second {
		t.Fatalf("%d cleaning (started %s, %s); want 2 at once", n, first, second)
	}
	// A slot frees when a cleaning ends (here: times out); the third
	// starts then.
	r.clock.Advance(5 * time.Minute)
	if third := r.started(); third == first || third == second {
		t.Fatalf("the third cleaning was of %s again", third)
	}
}

// TestJanitorStopsWhenLeaseLost: an admin quarantines a resource being
// cleaned; the janitor learns of it at its next heartbeat, kills its
// command and records nothing more; its slot goes to the next resource.
func TestJanitorStopsWhenLeaseLost(t *testing.T) {
	r := newRig(t, vmPool(2))
	r.blockCleanings()
	j := vmJanitor() // one at a time
	j.Timeout = time.Hour
	r.runJanitor(j)
	for range 2 {
		a := r.acquire("vm", "job")
		r.release(a.Lease.ID, berth.ReleaseDirty, "")
	}
	first := r.started()
	firstPid := r.pids[first]
	q, err := r.eng.Quarantine(context.Background(), lease.AdminParams{Name: first, Reason: "on fire", Actor: "admin"})
	if err != nil || q.Revoked == nil || q.Revoked.Kind != berth.LeaseClean {
		t.Fatalf("quarantine: %+v, %v", q, err)
	}
	// At once, not at the next heartbeat (the clock does not move): the
	// command is killed and the slot goes to the other resource.
	second := r.started()
	if second == first {
		t.Fatalf("cleaned %s again", second)
	}
	if alive(firstPid) {
		t.Fatalf("the revoked cleaning's command (pid %d) still runs", firstPid)
	}
	if got := reasonsOf(r.events(first, "")); !slices.Equal(got[len(got)-3:], []string{"cleaning", "revoked", "quarantined"}) {
		t.Fatalf("events of %s: %v", first, got)
	}
}

// alive reports whether process pid runs (a zombie has ended).
func alive(pid int) bool {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	return err == nil && !strings.Contains(string(st), ") Z ")
}

// TestJanitorNeverOverlapsOnOneResource: a resource whose cleaning was
// revoked and that is dirty again at once (unquarantined) is cleaned
// again only once the first command is dead.
func TestJanitorNeverOverlapsOnOneResource(t *testing.T) {
	r := newRig(t, vmPool(1))
	r.blockCleanings()
	j := vmJanitor()
	j.Timeout, j.Concurrency = time.Hour, 2
	r.runJanitor(j)
	a := r.acquire("vm", "job")
	r.release(a.Lease.ID, berth.ReleaseDirty, "")
	r.started()
	firstPid := r.pids["vm-1"]
	ctx := context.Background()
	if _, err := r.eng.Quarantine(ctx, lease.AdminParams{Name: "vm-1", Reason: "check", Actor: "admin"}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.eng.Unquarantine(ctx, lease.AdminParams{Name: "vm-1", Reason: "fine", Actor: "admin"}); err != nil {
		t.Fatal(err)
	}
	if again := r.started(); again != "vm-1" || r.pids["vm-1"] == firstPid {
		t.Fatalf("second cleaning: %s (pid %d)", again, r.pids["vm-1"])
	}
	if alive(firstPid) {
		t.Fatalf("the first cleaning's command (pid %d) still ran when the second began", firstPid)
	}
}

// TestJanitorAbandonsOnStop: when berth stops, a cleaning under way is
// killed and its resource is dirty again at once, the attempt not
// counted.
func TestJanitorAbandonsOnStop(t *testing.T) {
	r := newRig(t, vmPool(1))
	r.blockCleanings()
	stop := r.runJanitor(vmJanitor())
	a := r.acquire("vm", "job")
	r.release(a.Lease.ID, berth.ReleaseDirty, "")
	r.started()
	stop()
	res := r.resource("vm-1")
	if res.State != berth.StateDirty || res.CleanAttempts != 0 || res.NextCleanAt != nil {
		t.Fatalf("after stopping: %+v", res)
	}
	evs := r.events("vm-1", berth.EventJanitor)
	if last := evs[len(evs)-1]; last.Reason != store.ReasonCleanAbandoned {
		t.Fatalf("last event: %+v", last)
	}
}

// TestReaperExpiresCleaningLease: a janitor (an outside one, here) that
// stops heartbeating loses its lease; the resource is dirty again, the
// attempt counted.
func TestReaperExpiresCleaningLease(t *testing.T) {
	p := vmPool(1)
	p.Janitor = lease.JanitorExternal
	r := newRig(t, p)
	a := r.acquire("vm", "job")
	r.release(a.Lease.ID, berth.ReleaseDirty, "")
	c, err := r.eng.CleanClaim(context.Background(), lease.CleanClaimParams{Type: "vm", Owner: "outside"})
	if err != nil || c.Lease == nil {
		t.Fatalf("claim: %+v, %v", c, err)
	}
	r.clock.Advance(30 * time.Minute)
	if n, err := r.eng.ReapOnce(context.Background()); err != nil || n != 1 {
		t.Fatalf("reap: %d, %v", n, err)
	}
	res := r.resource("vm-1")
	if res.State != berth.StateDirty || res.CleanAttempts != 1 {
		t.Fatalf("after the janitor's lease expired: %+v", res)
	}
	evs := r.events("vm-1", berth.EventJanitor)
	if last := evs[len(evs)-1]; last.Actor != "reaper" || !strings.Contains(last.Message, "the janitor outside sent no heartbeat for 30m0s") {
		t.Fatalf("last event: %+v", last)
	}
	// The janitor, too late, cannot end it.
	_, err = r.eng.CleanEnd(context.Background(), lease.CleanEndParams{ID: c.Lease.ID, OK: true})
	if berth.ErrorCodeOf(err) != berth.ELeaseLost {
		t.Fatalf("finishing an expired cleaning: %v", err)
	}
}

// TestCleanClaimWaits: a claim that waits gets a resource the moment one
// is released dirty, not after a poll.
func TestCleanClaimWaits(t *testing.T) {
	p := vmPool(1)
	p.Janitor = lease.JanitorExternal
	r := newRig(t, p)
	a := r.acquire("vm", "job")
	got := make(chan *lease.CleanClaimResult, 1)
	go func() {
		c, err := r.eng.CleanClaim(context.Background(), lease.CleanClaimParams{Type: "vm", Owner: "outside", Wait: time.Minute})
		if err != nil {
			t.Error(err)
		}
		got <- c
	}()
	// The claim is waiting once it has looked and found nothing; the
	// release wakes it whether or not it has begun to wait yet.
	r.release(a.Lease.ID, berth.ReleaseDirty, "")
	select {
	case c := <-got:
		if c == nil || c.Lease == nil || c.Resource.Name != "vm-1" {
			t.Fatalf("claim: %+v", c)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the waiting claim did not get the released resource")
	}
}

// BenchmarkCleanCycle: a job releases a resource dirty, and berth's
// janitor runs its command (/bin/true) on it: the time from the release
// to the resource being free again, one at a time.
func BenchmarkCleanCycle(b *testing.B) {
	r := newRig(b, vmPool(1))
	r.runJanitor(janitor.Pool{Type: "vm", Command: []string{"/bin/true"}, Timeout: time.Minute, Concurrency: 1})
	ctx := context.Background()
	for b.Loop() {
		a, err := r.eng.Acquire(ctx, lease.AcquireParams{Type: "vm", Owner: "job"})
		if err != nil || a.Lease == nil {
			b.Fatalf("acquire: %+v, %v", a, err)
		}
		if _, err := r.eng.Release(ctx, lease.ReleaseParams{ID: a.Lease.ID}); err != nil {
			b.Fatal(err)
		}
		r.waitFor("vm-1 to be cleaned", func() bool { return r.state("vm-1") == berth.StateFree })
	}
}
