package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/client"
	"github.com/berth-ci/berth/internal/store/postgres/pgtest"
)

// alive reports whether process pid runs (a zombie has ended).
func alive(pid int) bool {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	return err == nil && !strings.Contains(string(st), ") Z ")
}

func testdata(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// cli runs berth with args against srv and fails the test unless it exits
// with want.
func cli(t *testing.T, srv *proc, want int, args ...string) string {
	t.Helper()
	out, errOut, code := runCLI(t, srv.URL, nil, args...)
	if code != want {
		t.Fatalf("berth %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, want, out, errOut)
	}
	if want != 0 {
		if lines := strings.Split(strings.TrimSpace(errOut), "\n"); len(lines) != 1 || !strings.HasPrefix(lines[0], "berth: ") {
			t.Fatalf("berth %s: stderr is not one line: %q", strings.Join(args, " "), errOut)
		}
		return errOut
	}
	return out
}

// TestCLILifecycle drives what issue 5 gives an operator and a job, with
// the real binary: a release as broken, quarantine and its reasons, the
// janitor command cleaning, drains, resources added and retired at
// runtime, an outside janitor's claim, failure and finish, and the
// janitors' output in berth events.
func TestCLILifecycle(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, fmt.Sprintf(`pools:
  - type: vm
    leaseTTL: 10m
    resources:
      - name: vm-1
        userData: {ip: 10.0.0.1}
    janitor: {command: [%q, %q]}
  - type: proj
    resources: [proj-1]
    janitor: {external: true, maxAttempts: 2, backoff: 100ms}
`, testdata(t, "janitor.sh"), dir))
	srv := startServer(t, "--config", cfg, "--data", dir)
	one := func(args ...string) *berth.Resource {
		t.Helper()
		var rs []*berth.Resource
		if err := json.Unmarshal([]byte(cli(t, srv, 0, append([]string{"resources", "--json"}, args...)...)), &rs); err != nil || len(rs) != 1 {
			t.Fatalf("resources %v: %v, %v", args, rs, err)
		}
		return rs[0]
	}

	// A job reports its resource broken: quarantined with the reason.
	var got struct{ Lease berth.Lease }
	if err := json.Unmarshal([]byte(cli(t, srv, 0, "acquire", "--type", "vm", "--owner", "job-1", "--json")), &got); err != nil {
		t.Fatal(err)
	}
	cli(t, srv, 0, "release", got.Lease.ID, "--broken", "disk full")
	if out := cli(t, srv, 0, "resources", "--state", "quarantined"); !strings.Contains(out, "vm-1") || !strings.Contains(out, "disk full") {
		t.Fatalf("quarantined resources:\n%s", out)
	}
	pools := cli(t, srv, 0, "pools")
	if !strings.Contains(pools, "QUARANTINED") || !strings.Contains(pools, "DRAINING") {
		t.Fatalf("pools:\n%s", pools)
	}
	// Back in service through the janitor, which cleans it.
	cli(t, srv, 2, "unquarantine", "vm-1") // no reason
	cli(t, srv, 0, "unquarantine", "vm-1", "--reason", "disk replaced", "--actor", "ops")
	waitFor(t, "vm-1 to be cleaned", func() bool { return one("--type", "vm").State == berth.StateFree })
	events := cli(t, srv, 0, "events", "--resource", "vm-1", "--kind", "janitor", "--output")
	for _, want := range []string{"dirty → cleaning", "cleaning → free", "    | wiped vm-1", `    | checked {"ip":"10.0.0.1"}`} {
		if !strings.Contains(events, want) {
			t.Fatalf("janitor events lack %q:\n%s", want, events)
		}
	}
	if out := cli(t, srv, 0, "events", "--actor", "ops"); !strings.Contains(out, "unquarantined") || strings.Contains(out, "acquired") {
		t.Fatalf("events of ops:\n%s", out)
	}

	// Drain the pool: nothing leased, until undrained.
	cli(t, srv, 0, "drain", "--pool", "vm", "--reason", "migration")
	if out := cli(t, srv, 0, "pools"); !strings.Contains(out, "pool") {
		t.Fatalf("pools while draining:\n%s", out)
	}
	cli(t, srv, 75, "acquire", "--type", "vm")
	cli(t, srv, 0, "undrain", "--pool", "vm")
	cli(t, srv, 0, "drain", "vm-1", "--reason", "kernel upgrade")
	if r := one("--type", "vm"); !r.Draining {
		t.Fatalf("drained vm-1: %+v", r)
	}
	cli(t, srv, 0, "undrain", "vm-1")

	// Add a resource at runtime and lease it; retired while leased, it
	// leaves when the lease ends.
	cli(t, srv, 0, "resources", "add", "vm-9", "--type", "vm", "--user-data", "ip=10.0.0.9", "--label", "zone=b")
	if err := json.Unmarshal([]byte(cli(t, srv, 0, "acquire", "--type", "vm", "--owner", "job-3", "--label", "zone=b", "--json")), &got); err != nil {
		t.Fatal(err)
	}
	if got.Lease.Resource != "vm-9" {
		t.Fatalf("acquired %s, want the added vm-9", got.Lease.Resource)
	}
	cli(t, srv, 0, "resources", "retire", "vm-9", "--reason", "borrowed back")
	if out := cli(t, srv, 0, "resources", "--type", "vm"); !strings.Contains(out, "retiring") {
		t.Fatalf("retired while leased:\n%s", out)
	}
	if out := cli(t, srv, 0, "release", got.Lease.ID); !strings.Contains(out, "removed from its pool") {
		t.Fatalf("release of the retired resource: %s", out)
	}
	one("--type", "vm")                           // vm-1 alone again
	cli(t, srv, 1, "resources", "retire", "vm-1") // the config declares it: a conflict, not a usage error

	// An outside janitor: claim, fail with output, claim again, finish.
	if err := json.Unmarshal([]byte(cli(t, srv, 0, "acquire", "--type", "proj", "--json")), &got); err != nil {
		t.Fatal(err)
	}
	cli(t, srv, 0, "release", got.Lease.ID)
	var c client.Cleaning
	if err := json.Unmarshal([]byte(cli(t, srv, 0, "janitor", "claim", "--type", "proj", "--owner", "outside", "--json")), &c); err != nil {
		t.Fatal(err)
	}
	if c.Resource.Name != "proj-1" || c.Attempt != 1 || c.Lease.Kind != berth.LeaseClean {
		t.Fatalf("claim: %+v", c)
	}
	cli(t, srv, 75, "janitor", "claim", "--type", "proj") // nothing more to clean
	cli(t, srv, 2, "janitor", "fail", c.Lease.ID)         // no message
	log := filepath.Join(dir, "gcloud.log")
	if err := os.WriteFile(log, []byte("deleting instances...\nERROR: quota\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := cli(t, srv, 0, "janitor", "fail", c.Lease.ID, "--message", "exit status 1", "--output-file", log); !strings.Contains(out, "proj-1 is now dirty") {
		t.Fatalf("fail: %s", out)
	}
	if err := json.Unmarshal([]byte(cli(t, srv, 0, "janitor", "claim", "--type", "proj", "--owner", "outside", "--wait", "30s", "--json")), &c); err != nil {
		t.Fatal(err)
	}
	if c.Attempt != 2 {
		t.Fatalf("second claim: attempt %d", c.Attempt)
	}
	cli(t, srv, 0, "janitor", "finish", c.Lease.ID)
	if out := cli(t, srv, 0, "janitor", "finish", c.Lease.ID); !strings.Contains(out, "had ended already") {
		t.Fatalf("finish again: %s", out)
	}
	if r := one("--type", "proj"); r.State != berth.StateFree {
		t.Fatalf("proj-1: %+v", r)
	}
	if out := cli(t, srv, 0, "events", "--resource", "proj-1", "--kind", "janitor", "--output"); !strings.Contains(out, "    | ERROR: quota") {
		t.Fatalf("the outside janitor's output was not kept:\n%s", out)
	}

	// Usage errors: one line, exit 2.
	cli(t, srv, 2, "quarantine", "vm-1")
	cli(t, srv, 2, "drain")
	cli(t, srv, 2, "drain", "vm-1", "--pool", "vm", "--reason", "x")
	cli(t, srv, 2, "resources", "add", "vm-10")
	cli(t, srv, 2, "resources", "add", "vm-10", "--type", "vm", "--user-data", "novalue")
	cli(t, srv, 2, "janitor", "claim")
	cli(t, srv, 1, "quarantine", "nope", "--reason", "x") // not found: not a usage error
}

// TestDynamicPoolServesWaiter: a job waits on a dynamic pool with
// nothing in it; the provisioner makes a resource for it; the job's
// release sends it back, and a retire has it deprovisioned.
func TestDynamicPoolServesWaiter(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, fmt.Sprintf(`pools:
  - type: kind
    dynamic:
      minFree: 0
      maxTotal: 2
      provision: {command: [%q, %q]}
      deprovision: {command: [%q, %q]}
`, testdata(t, "provision.sh"), dir, testdata(t, "deprovision.sh"), dir))
	srv := startServer(t, "--config", cfg, "--data", dir)
	out := cli(t, srv, 0, "run", "--type", "kind", "--wait", "30s", "--", "sh", "-c", `echo "got $BERTH_RESOURCE_NAME $BERTH_USERDATA_KUBECONFIG"`)
	if !strings.Contains(out, "got kind-1 /tmp/kind-1") {
		t.Fatalf("run on a dynamic pool: %s", out)
	}
	if out := cli(t, srv, 0, "pools"); !strings.Contains(out, "0-2") {
		t.Fatalf("pools: %s", out)
	}
	cli(t, srv, 0, "resources", "retire", "kind-1")
	waitFor(t, "kind-1 to be deprovisioned", func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, "deleted"))
		return strings.TrimSpace(string(b)) == "kind-1"
	})
	if out := cli(t, srv, 0, "events", "--resource", "kind-1"); !strings.Contains(out, "provisioned") || !strings.Contains(out, "deprovisioned") {
		t.Fatalf("events of kind-1:\n%s", out)
	}
}

// TestPostgresJanitorOnLeaderSurvivesKill9: two replicas share
// PostgreSQL; only the leader runs janitors. The leader is killed -9 in
// the middle of a cleaning: its janitor command dies with it, the
// cleaning lease runs out, and the new leader reaps it (a failed attempt)
// and cleans the resource. Every janitor run is the leader's.
func TestPostgresJanitorOnLeaderSurvivesKill9(t *testing.T) {
	store := pgtest.StoreURL(t)
	dir := t.TempDir()
	cfg := writeConfig(t, dir, fmt.Sprintf(`pools:
  - type: vm
    leaseTTL: 10m
    resources: [vm-1, vm-2, vm-3]
    janitor: {command: [%q, %q], leaseTTL: 2s, backoff: 100ms}
`, testdata(t, "janitor.sh"), dir))
	srvs := []*proc{startServer(t, "--config", cfg, "--store", store), startServer(t, "--config", cfg, "--store", store)}
	leading := func(p *proc) bool {
		st, err := status(t, p.URL)
		return err == nil && strings.HasSuffix(st.Leader, "/"+strings.TrimPrefix(p.URL, "http://")) && strings.Contains(p.Log(), `"msg":"leading`)
	}
	var leader, other *proc
	waitFor(t, "a leader", func() bool {
		for i, p := range srvs {
			if leading(p) {
				leader, other = p, srvs[1-i]
				return true
			}
		}
		return false
	})
	runs := func() map[int][]string { // berth pid -> "resource attempt"
		b, err := os.ReadFile(filepath.Join(dir, "janitor.log"))
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		out := map[int][]string{}
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			f := strings.Fields(line)
			if len(f) != 3 {
				continue
			}
			pid, _ := strconv.Atoi(f[0])
			out[pid] = append(out[pid], f[1]+" "+f[2])
		}
		return out
	}
	ctx := context.Background()
	c := newClient(t, client.Options{Servers: []string{other.URL}})
	free := func(n string) bool {
		r, err := c.Resource(ctx, n)
		return err == nil && r.State == berth.StateFree
	}
	// Released on the replica that does not lead, cleaned by the one that
	// does.
	for _, n := range []string{"vm-1", "vm-2"} {
		a, err := c.Acquire(ctx, client.AcquireParams{Type: "vm", Owner: "job"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Release(ctx, a.Lease.ID, client.ReleaseParams{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, n+" to be cleaned", func() bool { return free(a.Resource.Name) })
	}
	if got := runs(); len(got[other.cmd.Process.Pid]) > 0 || len(got[leader.cmd.Process.Pid]) != 2 {
		t.Fatalf("janitor runs by berth process: %v; want the leader's (%d) only", got, leader.cmd.Process.Pid)
	}

	// Kill the leader in the middle of a cleaning.
	if err := os.WriteFile(filepath.Join(dir, "block"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	a, err := c.Acquire(ctx, client.AcquireParams{Type: "vm", Owner: "job"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Release(ctx, a.Lease.ID, client.ReleaseParams{}); err != nil {
		t.Fatal(err)
	}
	var blocked int
	waitFor(t, "the leader's janitor to start", func() bool {
		b, err := os.ReadFile(filepath.Join(dir, "blocked"))
		blocked, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil && blocked > 0
	})
	if err := os.Remove(filepath.Join(dir, "block")); err != nil {
		t.Fatal(err)
	}
	leader.kill9()
	// Its janitor command dies with it, and so does the child the command
	// started (the kernel signals the supervising shell, which kills the
	// group).
	waitFor(t, "the killed leader's janitor's child to die", func() bool { return !alive(blocked) })
	waitFor(t, "the new leader to clean "+a.Resource.Name, func() bool { return free(a.Resource.Name) })
	got := runs()
	if n := len(got[other.cmd.Process.Pid]); n != 1 || got[other.cmd.Process.Pid][0] != a.Resource.Name+" 2" {
		t.Fatalf("janitor runs by berth process: %v; want the new leader's (%d) to be attempt 2 of %s", got, other.cmd.Process.Pid, a.Resource.Name)
	}
	evs, err := c.Events(ctx, client.EventFilter{Resource: a.Resource.Name, Kind: berth.EventJanitor})
	if err != nil {
		t.Fatal(err)
	}
	var steps []string
	for _, e := range evs {
		steps = append(steps, e.Reason+" by "+e.Actor)
	}
	// The third acquire took the resource that had been free longest:
	// one not leased before.
	want := []string{"cleaning by berth-janitor", "clean-failed by reaper", "cleaning by berth-janitor", "cleaned by berth-janitor"}
	if strings.Join(steps, ", ") != strings.Join(want, ", ") {
		t.Fatalf("janitor events of %s: %v, want %v", a.Resource.Name, steps, want)
	}
	if reap := evs[1]; !strings.Contains(reap.Message, "the janitor berth-janitor sent no heartbeat for 2s") {
		t.Fatalf("the reaped cleaning: %+v", reap)
	}
	if got := runs()[leader.cmd.Process.Pid]; len(got) != 3 || got[2] != a.Resource.Name+" 1" {
		t.Fatalf("the killed leader's janitor runs: %v", got)
	}
}

// TestKill9MidCleanAndOutage: on the embedded store, berth is killed -9
// while its janitor cleans one resource and jobs hold two others whose
// leases then run out. The janitor's command and the child it started
// die with berth. After the restart, the leases are reaped,
// the interrupted cleaning's lease runs out and counts as a failed
// attempt, and every resource is cleaned and free again, with events that
// explain each step.
func TestKill9MidCleanAndOutage(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, fmt.Sprintf(`pools:
  - type: vm
    leaseTTL: 1s
    resources: [vm-1, vm-2, vm-3]
    janitor: {command: [%q, %q], leaseTTL: 1s, backoff: 100ms}
`, testdata(t, "janitor.sh"), dir))
	srv := startServer(t, "--config", cfg, "--data", dir)
	ctx := context.Background()
	c := newClient(t, client.Options{Servers: []string{srv.URL}})
	if err := os.WriteFile(filepath.Join(dir, "block"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	first, err := c.Acquire(ctx, client.AcquireParams{Type: "vm", Owner: "job-1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Release(ctx, first.Lease.ID, client.ReleaseParams{}); err != nil {
		t.Fatal(err)
	}
	var blocked int
	waitFor(t, "the janitor to start", func() bool {
		b, err := os.ReadFile(filepath.Join(dir, "blocked"))
		blocked, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil && blocked > 0
	})
	var held []*client.Acquired
	for _, o := range []string{"job-2", "job-3"} {
		a, err := c.Acquire(ctx, client.AcquireParams{Type: "vm", Owner: o})
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, a)
	}
	if err := os.Remove(filepath.Join(dir, "block")); err != nil {
		t.Fatal(err)
	}
	srv.kill9()
	waitFor(t, "the janitor's child to die with berth", func() bool { return !alive(blocked) })

	// The leases (1 s) run out while berth is down or just after it is
	// back; the reaper ends them either way.
	srv = startServer(t, "--config", cfg, "--data", dir)
	c = newClient(t, client.Options{Servers: []string{srv.URL}})
	for _, n := range []string{"vm-1", "vm-2", "vm-3"} {
		waitFor(t, n+" to be free", func() bool {
			r, err := c.Resource(ctx, n)
			return err == nil && r.State == berth.StateFree
		})
	}
	steps := func(name string) string {
		evs, err := c.Events(ctx, client.EventFilter{Resource: name})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range evs {
			out = append(out, e.Reason+" by "+e.Actor)
		}
		return strings.Join(out, ", ")
	}
	if got, want := steps(first.Resource.Name), "added by config, acquired by job-1, released by job-1, cleaning by berth-janitor, "+
		"clean-failed by reaper, cleaning by berth-janitor, cleaned by berth-janitor"; got != want {
		t.Fatalf("events of %s:\n%s\nwant\n%s", first.Resource.Name, got, want)
	}
	for i, h := range held {
		if got, want := steps(h.Resource.Name), fmt.Sprintf("added by config, acquired by job-%d, expired by reaper, cleaning by berth-janitor, cleaned by berth-janitor", i+2); got != want {
			t.Fatalf("events of %s:\n%s\nwant\n%s", h.Resource.Name, got, want)
		}
	}
}
