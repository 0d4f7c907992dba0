package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/faultnet"
	"github.com/berth-ci/berth/internal/store/postgres/pgtest"
)

// The probe tests run berth serve with a TCP probe against a listener of
// the test's own, and break it by closing the listener.

func down(t *testing.T, l *faultnet.Listener) {
	t.Helper()
	if err := l.Down(); err != nil {
		t.Fatal(err)
	}
}

// probedConfig is one pool, "cluster", of one resource, r1, probed by TCP
// at addr every 200ms and Disconnected after two failures.
func probedConfig(addr string) string {
	return fmt.Sprintf(`pools:
  - type: cluster
    leaseTTL: 3s
    resources:
      - name: r1
        userData: {addr: %q}
    probe:
      tcp: {address: "{{.UserData.addr}}"}
      interval: 200ms
      timeout: 100ms
      failureThreshold: 2
      jitter: 0
`, addr)
}

// health reads r1's health from the server.
func health(t *testing.T, url string) berth.Health {
	t.Helper()
	res, err := http.Get(url + "/v1/resources/r1")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var out struct{ Resource berth.Resource }
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out.Resource.Health
}

// cliProc is a berth CLI command running in the background.
type cliProc struct {
	cmd      *exec.Cmd
	stdin    io.WriteCloser
	lines    chan string // stdout, line by line
	stderr   strings.Builder
	finished chan struct{}
}

func startCLI(t *testing.T, server string, args ...string) *cliProc {
	t.Helper()
	p := &cliProc{cmd: exec.Command(berthBin, args...), lines: make(chan string, 100), finished: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), "BERTH_SERVER="+server)
	p.cmd.Stderr = &p.stderr
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		_ = p.cmd.Wait()
		close(p.finished)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.finished
	})
	return p
}

// line waits for the next line of output.
func (p *cliProc) line(t *testing.T) string {
	t.Helper()
	select {
	case l := <-p.lines:
		return l
	case <-p.finished:
		t.Fatalf("%v ended without the expected output: %s", p.cmd.Args, p.stderr.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("%v printed nothing within 60s", p.cmd.Args)
	}
	return ""
}

// wait waits for the command to end and returns its exit code and the
// last line of its stderr.
func (p *cliProc) wait(t *testing.T) (int, string) {
	t.Helper()
	select {
	case <-p.finished:
	case <-time.After(60 * time.Second):
		t.Fatalf("%v did not end within 60s", p.cmd.Args)
	}
	lines := strings.Split(strings.TrimSpace(p.stderr.String()), "\n")
	return p.cmd.ProcessState.ExitCode(), lines[len(lines)-1]
}

// TestRunStopsWhenResourceDisconnects: berth run --ready starts the
// command once r1 is Connected; when r1's listener goes away while the
// command runs, the heartbeats tell berth run, which stops the command
// and exits 75 blaming the infrastructure.
func TestRunStopsWhenResourceDisconnects(t *testing.T) {
	target := faultnet.ListenTest(t)
	dir := t.TempDir()
	srv := startServer(t, "--config", writeConfig(t, dir, probedConfig(target.Addr())), "--data", dir)
	run := startCLI(t, srv.URL, "run", "--type", "cluster", "--wait", "30s", "--ready", "--kill-grace", "5s", "--",
		"sh", "-c", `echo "started on $BERTH_RESOURCE_NAME"; sleep 120 & wait`)
	if l := run.line(t); l != "started on r1" {
		t.Fatalf("the command said %q", l)
	}
	down(t, target)
	code, last := run.wait(t)
	if code != 75 || !strings.HasPrefix(last, "berth: infrastructure failure: r1 disconnected: ConnectionRefused (") ||
		!strings.Contains(last, "connection refused") {
		t.Fatalf("run: exit %d, last line %q; want 75 and r1 disconnected: ConnectionRefused", code, last)
	}
}

// TestRunFailureWhileDisconnectedIsInfrastructure: a command that fails
// while its resource is Disconnected (within --disconnect-grace) exits 75,
// not with its own code: the test did not fail, the cluster did.
func TestRunFailureWhileDisconnectedIsInfrastructure(t *testing.T) {
	target := faultnet.ListenTest(t)
	dir := t.TempDir()
	srv := startServer(t, "--config", writeConfig(t, dir, probedConfig(target.Addr())), "--data", dir)
	run := startCLI(t, srv.URL, "run", "--type", "cluster", "--wait", "30s", "--ready", "--disconnect-grace", "1h", "--",
		"sh", "-c", `echo started; read line; exit 1`)
	run.line(t)
	down(t, target)
	waitFor(t, "r1 to be Disconnected", func() bool { return health(t, srv.URL).Status == berth.HealthDisconnected })
	if _, err := io.WriteString(run.stdin, "go\n"); err != nil {
		t.Fatal(err)
	}
	code, last := run.wait(t)
	if code != 75 || !strings.HasPrefix(last, "berth: infrastructure failure: r1 disconnected: ConnectionRefused") {
		t.Fatalf("run: exit %d, last line %q; want 75 and r1 disconnected", code, last)
	}
}

// TestWaitReady: a job holding r1 while its network is down waits for it
// with berth wait-ready, which answers as soon as r1 is back (the server
// probes it at once, not after its backoff), or exits 75 at its timeout.
func TestWaitReady(t *testing.T) {
	target := faultnet.ListenTest(t)
	dir := t.TempDir()
	cfg := strings.Replace(probedConfig(target.Addr()), "jitter: 0", "jitter: 0\n      maxBackoff: 1h", 1)
	srv := startServer(t, "--config", writeConfig(t, dir, cfg), "--data", dir)
	out, errOut, code := runCLI(t, srv.URL, nil, "acquire", "--type", "cluster", "--wait", "30s", "--json")
	if code != 0 {
		t.Fatalf("acquire: exit %d: %s", code, errOut)
	}
	var got struct{ Lease berth.Lease }
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	id := got.Lease.ID
	hb := startCLI(t, srv.URL, "heartbeat", id) // the lease TTL is 3s
	hb.wait(t)
	if out, errOut, code := runCLI(t, srv.URL, nil, "wait-ready", id); code != 0 || !strings.HasPrefix(out, "r1 is Connected: ") {
		t.Fatalf("wait-ready while Connected: exit %d, %q %q", code, out, errOut)
	}
	down(t, target)
	waitFor(t, "r1 to be Disconnected", func() bool { return health(t, srv.URL).Status == berth.HealthDisconnected })
	_, errOut, code = runCLI(t, srv.URL, nil, "wait-ready", id, "--timeout", "300ms")
	if code != 75 || !strings.Contains(errOut, "infrastructure failure: r1 not ready within 300ms: Disconnected: ConnectionRefused") {
		t.Fatalf("wait-ready that times out: exit %d, %q", code, errOut)
	}
	wait := startCLI(t, srv.URL, "wait-ready", id, "--timeout", "60s")
	if err := target.Up(); err != nil {
		t.Fatal(err)
	}
	if l := wait.line(t); !strings.HasPrefix(l, "r1 is Connected: ") {
		t.Fatalf("wait-ready said %q", l)
	}
	if code, last := wait.wait(t); code != 0 {
		t.Fatalf("wait-ready: exit %d: %s", code, last)
	}
	_, errOut, code = runCLI(t, srv.URL, nil, "wait-ready", "no-such-lease")
	if code != 75 || !strings.Contains(errOut, "no-such-lease") {
		t.Fatalf("wait-ready of an unknown lease: exit %d, %q", code, errOut)
	}
}

// TestPostgresProbesOnlyOnLeader: two replicas on one PostgreSQL, a pool
// probed by a command that writes the process id of the berth that ran it.
// Only the leader probes; when it is killed, the other replica takes over
// the probing.
func TestPostgresProbesOnlyOnLeader(t *testing.T) {
	store := pgtest.StoreURL(t)
	dir := t.TempDir()
	log := filepath.Join(dir, "probes.log")
	cfg := writeConfig(t, dir, fmt.Sprintf(`pools:
  - type: device
    resources: [d1, d2]
    probe:
      exec: {command: [sh, -c, 'echo "$PPID" >> %s']}
      interval: 100ms
      timeout: 100ms
`, log))
	srvs := []*proc{startServer(t, "--config", cfg, "--store", store), startServer(t, "--config", cfg, "--store", store)}
	// probers returns the process ids that have probed, with how many
	// probes each made.
	probers := func() map[int]int {
		b, err := os.ReadFile(log)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		out := map[int]int{}
		for _, f := range strings.Fields(string(b)) {
			pid, err := strconv.Atoi(f)
			if err != nil {
				continue // a line being written
			}
			out[pid]++
		}
		return out
	}
	leading := func(p *proc) bool {
		st, err := status(t, p.URL)
		return err == nil && strings.HasSuffix(st.Leader, "/"+strings.TrimPrefix(p.URL, "http://"))
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
	waitFor(t, "20 probes", func() bool { return probers()[leader.cmd.Process.Pid] >= 20 })
	if n := probers()[other.cmd.Process.Pid]; n > 0 {
		t.Fatalf("the replica that does not lead made %d probes", n)
	}
	leader.kill9()
	before := probers()[leader.cmd.Process.Pid] // dead: it probes no more
	waitFor(t, "the other replica to lead", func() bool { return leading(other) })
	waitFor(t, "20 probes by the new leader", func() bool { return probers()[other.cmd.Process.Pid] >= 20 })
	got := probers()
	if len(got) != 2 || got[leader.cmd.Process.Pid] != before {
		t.Fatalf("probes by process: %v; want only the old leader's %d and the new leader's", got, before)
	}
	for _, r := range []string{"d1", "d2"} {
		res, err := http.Get(other.URL + "/v1/resources/" + r)
		if err != nil {
			t.Fatal(err)
		}
		var out struct{ Resource berth.Resource }
		err = json.NewDecoder(res.Body).Decode(&out)
		res.Body.Close()
		if err != nil || out.Resource.Health.Status != berth.HealthConnected {
			t.Fatalf("%s: %+v, %v", r, out.Resource.Health, err)
		}
	}
}

// TestPostgresWaitReadyOnFollower: with two replicas on PostgreSQL, a
// wait-ready served by the replica that does not probe still gets the
// resource probed at once: it asks the leader through the database. The
// pool probes every 5s and backs off from there, so only that request can
// make r1 Connected within wait-ready's 4s.
func TestPostgresWaitReadyOnFollower(t *testing.T) {
	store := pgtest.StoreURL(t)
	target := faultnet.ListenTest(t)
	dir := t.TempDir()
	cfg := strings.NewReplacer("leaseTTL: 3s", "leaseTTL: 1m", "interval: 200ms", "interval: 5s", "failureThreshold: 2", "failureThreshold: 1",
		"jitter: 0", "jitter: 0\n      maxBackoff: 1h").Replace(probedConfig(target.Addr()))
	cfgPath := writeConfig(t, dir, cfg)
	srvs := []*proc{startServer(t, "--config", cfgPath, "--store", store), startServer(t, "--config", cfgPath, "--store", store)}
	var follower *proc
	waitFor(t, "a leader", func() bool {
		for i, p := range srvs {
			if st, err := status(t, p.URL); err == nil && st.Leader != "" && st.Leader == st.Replica {
				follower = srvs[1-i]
				return true
			}
		}
		return false
	})
	out, errOut, code := runCLI(t, follower.URL, nil, "acquire", "--type", "cluster", "--wait", "30s", "--json")
	if code != 0 {
		t.Fatalf("acquire: exit %d: %s", code, errOut)
	}
	var got struct{ Lease berth.Lease }
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	down(t, target)
	waitFor(t, "r1 to be Disconnected", func() bool { return health(t, follower.URL).Status == berth.HealthDisconnected })
	if err := target.Up(); err != nil {
		t.Fatal(err)
	}
	_, errOut, code = runCLI(t, follower.URL, nil, "wait-ready", got.Lease.ID, "--timeout", "4s")
	if code != 0 {
		t.Fatalf("wait-ready on the follower: exit %d: %s", code, errOut)
	}
}

// TestRestartWithNewProbeTarget: a resource Connected at one address is
// given another address in the config (nothing listens there) and berth is
// restarted: it keeps no health from the old address, so it is not leased
// on the strength of a probe of something else.
func TestRestartWithNewProbeTarget(t *testing.T) {
	target := faultnet.ListenTest(t)
	dir := t.TempDir()
	slow := func(addr string) string { // first probe of a known resource: anywhere in 10s
		return strings.Replace(probedConfig(addr), "interval: 200ms", "interval: 10s", 1)
	}
	cfg := writeConfig(t, dir, probedConfig(target.Addr()))
	srv := startServer(t, "--config", cfg, "--data", dir)
	waitFor(t, "r1 to be Connected", func() bool { return health(t, srv.URL).Status == berth.HealthConnected })
	srv.stop()

	elsewhere := faultnet.ListenTest(t)
	down(t, elsewhere)
	cfg = writeConfig(t, dir, slow(elsewhere.Addr()))
	srv = startServer(t, "--config", cfg, "--data", dir)
	if h := health(t, srv.URL); h.Status == berth.HealthConnected {
		t.Fatalf("r1 at a new address is %+v; want it not Connected until probed there", h)
	}
	if _, errOut, code := runCLI(t, srv.URL, nil, "acquire", "--type", "cluster"); code != 75 {
		t.Fatalf("acquire of r1 at an address never probed: exit %d (%s); want 75, nothing leasable", code, errOut)
	}
}
