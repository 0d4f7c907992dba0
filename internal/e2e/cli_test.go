package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/client"
)

func TestCLILeaseRoundTrip(t *testing.T) {
	dir := t.TempDir()
	srv := startServer(t, "--config", writeConfig(t, dir, poolYAML("vm", 2, "10m")), "--data", dir)

	out, errOut, code := runCLI(t, srv.URL, nil, "acquire", "--type", "vm", "--owner", "ci-42", "--json")
	if code != 0 {
		t.Fatalf("acquire: exit %d: %s", code, errOut)
	}
	var acq struct {
		Lease    map[string]any  `json:"lease"`
		Resource *berth.Resource `json:"resource"`
	}
	if err := json.Unmarshal([]byte(out), &acq); err != nil {
		t.Fatalf("acquire --json is not JSON: %v\n%s", err, out)
	}
	for _, k := range []string{"id", "token", "owner", "expiresAt"} {
		if _, ok := acq.Lease[k]; !ok {
			t.Errorf("acquire --json lease lacks %q: %s", k, out)
		}
	}
	if acq.Resource.Name != "vm-1" || acq.Resource.UserData["index"] != "1" || acq.Lease["owner"] != "ci-42" {
		t.Fatalf("acquire --json = %s", out)
	}
	id := acq.Lease["id"].(string)

	if out, errOut, code := runCLI(t, srv.URL, nil, "heartbeat", id); code != 0 || !strings.Contains(out, "renewed until") {
		t.Fatalf("heartbeat: exit %d: %s%s", code, out, errOut)
	}
	out, _, code = runCLI(t, srv.URL, nil, "resources", "--json", "--state", "busy")
	var rs []*berth.Resource
	if code != 0 || json.Unmarshal([]byte(out), &rs) != nil || len(rs) != 1 || rs[0].Owner != "ci-42" {
		t.Fatalf("resources --json: exit %d: %s", code, out)
	}
	for _, k := range []string{`"name"`, `"type"`, `"state"`, `"owner"`, `"userData"`, `"labels"`, `"health"`, `"status"`} {
		if !strings.Contains(out, k) {
			t.Errorf("resources --json lacks %s", k)
		}
	}
	out, _, code = runCLI(t, srv.URL, nil, "pools")
	if code != 0 || !strings.Contains(out, "TYPE") || !strings.Contains(out, "vm ") {
		t.Fatalf("pools: exit %d: %s", code, out)
	}
	if out, errOut, code := runCLI(t, srv.URL, nil, "release", id, "--broken", "disk full"); code != 0 || !strings.Contains(out, "quarantined") {
		t.Fatalf("release --broken: exit %d: %s%s", code, out, errOut)
	}
	out, _, code = runCLI(t, srv.URL, nil, "resources", "--state", "quarantined")
	if code != 0 || !strings.Contains(out, "disk full") {
		t.Fatalf("resources --state quarantined shows no reason: %s", out)
	}
	out, _, code = runCLI(t, srv.URL, nil, "events", "--resource", "vm-1")
	if code != 0 || !strings.Contains(out, "busy → quarantined") || !strings.Contains(out, "ci-42") {
		t.Fatalf("events: exit %d: %s", code, out)
	}
	// Releasing again is harmless; heartbeating a released lease is not.
	out, errOut, code = runCLI(t, srv.URL, nil, "release", id, "--json")
	var rel map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &rel) != nil || rel["alreadyReleased"] != true || rel["lease"] == nil {
		t.Fatalf("second release --json: exit %d: %s%s; want camelCase fields with alreadyReleased true", code, out, errOut)
	}
	if _, errOut, code := runCLI(t, srv.URL, nil, "heartbeat", id); code != 75 || !strings.Contains(errOut, "infrastructure failure") {
		t.Fatalf("heartbeat of a released lease: exit %d: %s", code, errOut)
	}
}

func TestCLIErrorsAreOneLine(t *testing.T) {
	dir := t.TempDir()
	srv := startServer(t, "--config", writeConfig(t, dir, poolYAML("vm", 1, "10m")), "--data", dir)
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"acquire"}, 2, `required flag(s) "type" not set`},
		{[]string{"acquire", "--type", "vm", "--wait", "soon"}, 2, "--wait"},
		{[]string{"acquire", "--type", "gpu"}, 2, `no pool of type "gpu"`},
		{[]string{"acquire", "--type", "vm", "--label", "novalue"}, 2, "want key=value"},
		{[]string{"release", "x", "--free", "--broken", "r"}, 2, "none of the others can be"},
		{[]string{"release", "no-such-lease"}, 1, `no lease "no-such-lease"`},
		{[]string{"release"}, 2, "LEASE_ID"},
		{[]string{"frobnicate"}, 2, "unknown command"},
		{[]string{"resources", "--state", "bad state"}, 2, "state"},
		{[]string{"--server", "ftp://x", "pools"}, 2, "--server"},
		{[]string{"events", "--since", "tuesday"}, 2, "--since"},
		{[]string{"bench", "--type", "vm", "--concurrency", "-1"}, 2, "must not be negative"},
		{[]string{"bench", "--type", "vm", "--duration", "0s"}, 2, "--duration must be positive"},
		{[]string{"bench", "--type", "vm", "--concurrency", "0"}, 2, "nothing to measure"},
	} {
		out, errOut, code := runCLI(t, srv.URL, nil, c.args...)
		if code != c.code || !strings.Contains(errOut, c.want) {
			t.Errorf("berth %v: exit %d, stderr %q; want exit %d mentioning %q", c.args, code, errOut, c.code, c.want)
		}
		if lines := strings.Count(strings.TrimSpace(errOut), "\n"); lines > 0 || strings.Contains(errOut, "goroutine") {
			t.Errorf("berth %v: error is not one line: %q", c.args, errOut)
		}
		if out != "" {
			t.Errorf("berth %v: printed to stdout on error: %q", c.args, out)
		}
	}
	// Nothing was leased by any of it.
	out, _, _ := runCLI(t, srv.URL, nil, "resources", "--json", "--state", "busy")
	if strings.TrimSpace(out) != "[]" {
		t.Fatalf("bad input changed state: %s", out)
	}
}

func TestRunPassesExitCodeAndEnvironment(t *testing.T) {
	dir := t.TempDir()
	srv := startServer(t, "--config", writeConfig(t, dir, poolYAML("vm", 1, "10m")), "--data", dir)
	out, errOut, code := runCLI(t, srv.URL, nil, "run", "--type", "vm", "--owner", "job-7", "--",
		"sh", "-c", `echo "$BERTH_RESOURCE_NAME $BERTH_RESOURCE_TYPE $BERTH_USERDATA_INDEX $BERTH_USERDATA"; test -n "$BERTH_LEASE_ID" && exit 7`)
	if code != 7 {
		t.Fatalf("run: exit %d, want the command's 7: %s%s", code, out, errOut)
	}
	if strings.TrimSpace(out) != `vm-1 vm 1 {"index":"1"}` {
		t.Fatalf("command saw %q", out)
	}
	// Released afterwards.
	if out, _, _ := runCLI(t, srv.URL, nil, "resources", "--json", "--state", "busy"); strings.TrimSpace(out) != "[]" {
		t.Fatalf("run did not release: %s", out)
	}
	// No resource free: an infrastructure failure, not the command's.
	c := newClient(t, client.Options{Servers: []string{srv.URL}})
	if _, err := c.Acquire(context.Background(), client.AcquireParams{Type: "vm", Owner: "hog"}); err != nil {
		t.Fatal(err)
	}
	_, errOut, code = runCLI(t, srv.URL, nil, "run", "--type", "vm", "--", "true")
	if code != 75 || !strings.Contains(errOut, "infrastructure failure: no vm resource is free") {
		t.Fatalf("run with nothing free: exit %d: %s", code, errOut)
	}
}

// TestRunExits75WhenLeaseLost has the command lose its own lease (it
// releases it behind berth run's back), which is what an operator's force
// release or an expiry looks like from the job's side.
func TestRunExits75WhenLeaseLost(t *testing.T) {
	dir := t.TempDir()
	srv := startServer(t, "--config", writeConfig(t, dir, poolYAML("vm", 1, "3s")), "--data", dir)
	marker := filepath.Join(dir, "stopped")
	start := time.Now()
	// The command's own work is a long sleep; berth run must stop it.
	script := `trap 'touch ` + marker + `; exit 143' TERM; "$BERTH" release --free "$BERTH_LEASE_ID" >/dev/null || exit 9; sleep 120 & wait`
	_, errOut, code := runCLI(t, srv.URL, []string{"BERTH=" + berthBin}, "run", "--type", "vm", "--kill-grace", "5s", "--", "sh", "-c", script)
	if code != 75 {
		t.Fatalf("run: exit %d, want 75: %s", code, errOut)
	}
	// The command's own output (a shell reporting its killed job, say) may
	// come first; berth's word is the last line.
	lines := strings.Split(strings.TrimSpace(errOut), "\n")
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, "berth: infrastructure failure: lease on vm-1 (vm) lost while the command ran: ") || !strings.Contains(last, "was released") {
		t.Fatalf("run's message = %q, want one line blaming the infrastructure", errOut)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Fatalf("the command was not sent SIGTERM: %v", err)
	}
	if d := time.Since(start); d > 60*time.Second {
		t.Fatalf("run took %s: the command was not stopped", d)
	}
}

// TestRunExits75WhenLeaseLostJustBeforeTheEnd: the lease is taken away
// and the command then exits 0 before any heartbeat could notice (a long
// TTL, so heartbeats are seconds apart). The command's success means
// nothing without the lease: berth run must still report the loss.
func TestRunExits75WhenLeaseLostJustBeforeTheEnd(t *testing.T) {
	dir := t.TempDir()
	srv := startServer(t, "--config", writeConfig(t, dir, poolYAML("vm", 1, "10m")), "--data", dir)
	script := `"$BERTH" release --free "$BERTH_LEASE_ID" >/dev/null || exit 9; exit 0`
	_, errOut, code := runCLI(t, srv.URL, []string{"BERTH=" + berthBin}, "run", "--type", "vm", "--", "sh", "-c", script)
	if code != 75 || !strings.Contains(errOut, "infrastructure failure: lease on vm-1 (vm) lost while the command ran") {
		t.Fatalf("run: exit %d, want 75 with one line blaming the infrastructure: %s", code, errOut)
	}
}

func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	good := writeConfig(t, dir, poolYAML("vm", 2, "1m"))
	out, errOut, code := runCLI(t, "", nil, "check-config", good)
	if code != 0 || !strings.Contains(out, "ok (1 pools, 2 resources)") {
		t.Fatalf("check-config good: exit %d: %s%s", code, out, errOut)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("pools:\n  - type: vm\n    leaseTTL: 10x\n    colour: red\n  - type: vm\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, errOut, code = runCLI(t, "", nil, "check-config", bad)
	lines := strings.Split(strings.TrimSpace(errOut), "\n")
	if code != 2 || len(lines) != 3 {
		t.Fatalf("check-config bad: exit %d, %d lines:\n%s", code, len(lines), errOut)
	}
	for _, want := range []string{bad + ":3: pools[0].leaseTTL", bad + ":4: pools[0].colour: unknown field", bad + ":5: pools[1].type"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("check-config output lacks %q:\n%s", want, errOut)
		}
	}
}

func TestServeRefusesBadStartWithOneLine(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("pools:\n  - type: vm\n    leaseTTL: never\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	good := writeConfig(t, dir, poolYAML("vm", 1, "1m"))
	taken := startServer(t, "--config", good, "--data", filepath.Join(dir, "taken"))
	notDir := filepath.Join(dir, "file")
	if err := os.WriteFile(notDir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"serve", "--config", bad, "--data", dir}, "pools[0].leaseTTL"},
		{[]string{"serve", "--config", filepath.Join(dir, "missing.yaml"), "--listen", "127.0.0.1:0"}, "missing.yaml"},
		{[]string{"serve", "--listen", "127.0.0.1:0"}, "--config"},
		{[]string{"serve", "--demo", "--config", good, "--listen", "127.0.0.1:0"}, "exclude"},
		{[]string{"serve", "--config", good, "--data", filepath.Join(dir, "d2"), "--listen", strings.TrimPrefix(taken.URL, "http://")}, "address already in use"},
		{[]string{"serve", "--config", good, "--data", filepath.Join(notDir, "sub"), "--listen", "127.0.0.1:0"}, "data directory"},
		{[]string{"serve", "--config", good, "--store", "mysql://localhost/berth", "--listen", "127.0.0.1:0"}, "mysql stores are not supported"},
		// Port 1 on loopback: nothing listens, the connection is refused.
		{[]string{"serve", "--config", good, "--store", "postgres://postgres@127.0.0.1:1/berth", "--listen", "127.0.0.1:0"}, "connection refused"},
		{[]string{"serve", "--config", good, "--store", "postgres://u:secret@127.0.0.1/db?sslmode=bogus", "--listen", "127.0.0.1:0"}, "not a valid PostgreSQL connection string"},
		{[]string{"serve", "--config", good, "--store", "host=127.0.0.1 password=secret dbname=test", "--listen", "127.0.0.1:0"}, "key=value connection string"},
		{[]string{"serve", "--config", good, "--data", dir, "--sqlite-sync", "sometimes", "--listen", "127.0.0.1:0"}, "--sqlite-sync"},
		{[]string{"serve", "--config", good, "--data", dir, "--log-format", "xml", "--listen", "127.0.0.1:0"}, "--log-format"},
		{[]string{"serve", "--config", good, "--data", dir, "--store", "sqlite:" + filepath.Join(dir, "x.db"), "--listen", "127.0.0.1:0"}, "exclude each other"},
		{[]string{"serve", "--config", good, "--data", dir, "--wait-grace", "-1s", "--listen", "127.0.0.1:0"}, "--wait-grace must be positive"},
		{[]string{"serve", "--config", good, "--data", dir, "--reap-interval", "0s", "--listen", "127.0.0.1:0"}, "--reap-interval must be positive"},
	} {
		out, errOut, code := runCLI(t, "", nil, c.args...)
		if code != 2 {
			t.Errorf("berth %v: exit %d, want 2:\n%s%s", c.args, code, out, errOut)
			continue
		}
		lines := strings.Split(strings.TrimSpace(errOut), "\n")
		if len(lines) != 1 || !strings.HasPrefix(lines[0], "berth: ") || !strings.Contains(lines[0], c.want) {
			t.Errorf("berth %v: stderr %q, want one line mentioning %q", c.args, errOut, c.want)
		}
		if strings.Contains(errOut, "secret") {
			t.Errorf("berth %v: stderr %q shows the store URL's password", c.args, errOut)
		}
	}
}

// TestRestartReconcilesConfigAndKeepsLeases changes the config between two
// runs: new resources arrive, removed free ones go, a removed leased one
// stays until its holder lets go, and a SIGTERM loses no lease.
func TestRestartReconcilesConfigAndKeepsLeases(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, poolYAML("vm", 3, "10m"))
	srv := startServer(t, "--config", cfg, "--data", dir)
	c := newClient(t, client.Options{Servers: []string{srv.URL}})
	ctx := context.Background()
	var held []*client.Acquired
	for range 3 {
		a, err := c.Acquire(ctx, client.AcquireParams{Type: "vm", Owner: "job"})
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, a)
	}
	if _, err := c.Release(ctx, held[0].Lease.ID, client.ReleaseParams{To: berth.ReleaseFree}); err != nil {
		t.Fatal(err)
	}
	srv.stop()
	if srv.exitCode() != 0 {
		t.Fatalf("SIGTERM exit code %d", srv.exitCode())
	}

	// vm-1 (free) and vm-3 (leased) leave the config; vm-4 joins.
	cfg = writeConfig(t, dir, "pools:\n  - type: vm\n    leaseTTL: 10m\n    resources: [vm-2, vm-4]\n")
	srv = startServer(t, "--config", cfg, "--data", dir)
	c = newClient(t, client.Options{Servers: []string{srv.URL}})
	rs, err := c.Resources(ctx, client.ResourceFilter{Type: "vm"})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*berth.Resource{}
	for _, r := range rs {
		got[r.Name] = r
	}
	if _, ok := got["vm-1"]; ok || got["vm-4"] == nil || got["vm-4"].State != berth.StateFree {
		t.Fatalf("after restart: %v", got)
	}
	if r := got["vm-3"]; r == nil || !r.Retiring || r.LeaseID != held[2].Lease.ID {
		t.Fatalf("leased resource removed from config = %+v, want retiring and still leased", r)
	}
	for _, h := range held[1:] {
		if _, err := c.Heartbeat(ctx, h.Lease.ID); err != nil {
			t.Fatalf("lease %s lost across restart: %v", h.Lease.ID, err)
		}
	}
	if _, err := c.Release(ctx, held[2].Lease.ID, client.ReleaseParams{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Resource(ctx, "vm-3"); berth.ErrorCodeOf(err) != berth.ENotFound {
		t.Fatalf("vm-3 after its lease ended: %v, want gone", err)
	}
}
