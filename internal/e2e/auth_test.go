package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/berth-ci/berth"
)

// makeToken runs berth token create on the store in dir and returns the
// token it prints.
func makeToken(t *testing.T, dir, name, role string) string {
	t.Helper()
	out, errOut, code := runCLI(t, "", nil, "token", "create", name, "--role", role, "--data", dir)
	if code != 0 || !strings.HasPrefix(out, "berth_") {
		t.Fatalf("token create %s: exit %d: %s%s", name, code, out, errOut)
	}
	return strings.TrimSpace(out)
}

// call makes one HTTP request with an optional bearer token and returns
// the status and the body.
func call(t *testing.T, method, u, token, body string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// TestTokensRolesAndHolders drives authentication with the real binary:
// tokens made with berth token, the public endpoints, each role's reach,
// only a lease's holder (or an admin, recorded as forced) ending it, the
// audit trail's actor and address, a revoked token refused, and Boskos
// clients' basic auth.
func TestTokensRolesAndHolders(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, poolYAML("vm", 2, "10m"))
	admin := makeToken(t, dir, "ops", "admin")
	jobA := makeToken(t, dir, "job-a", "client")
	jobB := makeToken(t, dir, "job-b", "client")
	viewer := makeToken(t, dir, "dash", "viewer")
	if out, _, code := runCLI(t, "", nil, "token", "list", "--data", dir); code != 0 || !strings.Contains(out, "job-a") || strings.Contains(out, jobA) {
		t.Fatalf("token list: exit %d:\n%s", code, out)
	}
	if _, errOut, code := runCLI(t, "", nil, "token", "create", "x", "--role", "root", "--data", dir); code != 2 || !strings.Contains(errOut, "--role") {
		t.Fatalf("token create with a bad role: exit %d: %s", code, errOut)
	}
	if _, errOut, code := runCLI(t, "", nil, "token", "create", "ops", "--role", "admin", "--data", dir); code == 0 || !strings.Contains(errOut, "exists already") {
		t.Fatalf("a second token named ops: exit %d: %s", code, errOut)
	}

	srv := startServer(t, "--config", cfg, "--data", dir, "--auth", "tokens")

	// The probes, the version and the metrics need nothing.
	for _, p := range []string{"/healthz", "/readyz", "/version", "/metrics"} {
		if code, body, _ := call(t, "GET", srv.URL+p, "", ""); code != 200 {
			t.Errorf("GET %s without a token: %d %s", p, code, body)
		}
	}
	// Everything else needs a token; a bad one is no better.
	for _, tok := range []string{"", "berth_notatoken", jobA + "x"} {
		code, body, h := call(t, "GET", srv.URL+"/v1/pools", tok, "")
		var e struct{ Error berth.Error }
		if code != 401 || json.Unmarshal([]byte(body), &e) != nil || e.Error.Code != berth.EUnauthenticated || h.Get("WWW-Authenticate") == "" {
			t.Errorf("GET /v1/pools with token %q: %d %s", tok, code, body)
		}
	}
	// A viewer reads, and may not lease.
	if code, body, _ := call(t, "GET", srv.URL+"/v1/pools", viewer, ""); code != 200 {
		t.Fatalf("viewer reads pools: %d %s", code, body)
	}
	if code, body, _ := call(t, "POST", srv.URL+"/v1/leases", viewer, `{"type": "vm", "owner": "x"}`); code != 403 || !strings.Contains(body, `"forbidden"`) {
		t.Fatalf("viewer acquires: %d %s; want 403 forbidden", code, body)
	}
	// A client may not quarantine.
	if code, body, _ := call(t, "POST", srv.URL+"/v1/resources/vm-2/quarantine", jobA, `{"reason": "x"}`); code != 403 {
		t.Fatalf("client quarantines: %d %s", code, body)
	}

	// job-a leases through the CLI, with its token in $BERTH_TOKEN.
	out, errOut, code := runCLI(t, srv.URL, []string{"BERTH_TOKEN=" + jobA}, "acquire", "--type", "vm", "--owner", "ci-1", "--json")
	if code != 0 {
		t.Fatalf("acquire as job-a: exit %d: %s", code, errOut)
	}
	var got struct{ Lease berth.Lease }
	if err := json.Unmarshal([]byte(out), &got); err != nil || got.Lease.ID == "" {
		t.Fatalf("acquire: %v: %s", err, out)
	}
	id := got.Lease.ID
	// job-b may neither heartbeat nor release it.
	if code, body, _ := call(t, "POST", srv.URL+"/v1/leases/"+id+"/heartbeat", jobB, ""); code != 403 || !strings.Contains(body, "held by job-a") {
		t.Fatalf("job-b heartbeats job-a's lease: %d %s", code, body)
	}
	if _, errOut, code := runCLI(t, srv.URL, []string{"BERTH_TOKEN=" + jobB}, "release", id); code == 0 || !strings.Contains(errOut, "held by job-a") {
		t.Fatalf("job-b releases job-a's lease: exit %d: %s", code, errOut)
	}
	if code, body, _ := call(t, "POST", srv.URL+"/v1/leases/"+id+"/heartbeat", jobA, ""); code != 200 {
		t.Fatalf("job-a heartbeats its lease: %d %s", code, body)
	}
	// An admin may: forced, and the record says so and by whom.
	if code, body, _ := call(t, "POST", srv.URL+"/v1/leases/"+id+"/release", admin, `{"to": "free"}`); code != 200 {
		t.Fatalf("admin releases job-a's lease: %d %s", code, body)
	}
	out, _, code = runCLI(t, srv.URL, []string{"BERTH_TOKEN=" + viewer}, "events", "--resource", got.Lease.Resource, "--json")
	if code != 0 {
		t.Fatalf("events: exit %d", code)
	}
	var evs []berth.Event
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var ev berth.Event
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("events --json line %q: %v", line, err)
		}
		evs = append(evs, ev)
	}
	last := evs[len(evs)-1]
	if last.Actor != "ops" || !strings.Contains(last.Message, "forced by admin ops") || !strings.HasPrefix(last.Remote, "127.0.0.1:") {
		t.Fatalf("the forced release's event: %+v; want actor ops, forced, from 127.0.0.1", last)
	}
	// The audit trail by actor: job-a's acquire, with its address, not
	// the owner name it chose.
	out, _, code = runCLI(t, srv.URL, []string{"BERTH_TOKEN=" + viewer}, "events", "--actor", "job-a", "--json")
	if code != 0 || !strings.Contains(out, `"reason":"acquired"`) || !strings.Contains(out, `"remote":"127.0.0.1:`) || strings.Contains(out, `"actor":"ci-1"`) {
		t.Fatalf("events --actor job-a: exit %d:\n%s", code, out)
	}

	// Boskos clients send the token as the password of basic auth.
	q := url.Values{"type": {"vm"}, "state": {"free"}, "dest": {"busy"}, "owner": {"boskos-job"}}
	req, _ := http.NewRequest("POST", srv.URL+"/acquire?"+q.Encode(), nil)
	req.SetBasicAuth("boskos", jobB)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("Boskos acquire with basic auth: %s", resp.Status)
	}
	// Without, it is told plainly (a 403: the client reads 401 as "in use").
	resp, err = http.Post(srv.URL+"/acquire?"+q.Encode(), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 403 || !strings.Contains(string(b), "credentials") || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("Boskos acquire without credentials: %s %s", resp.Status, b)
	}

	// A revoked token is refused within the cache's 2 seconds.
	if out, errOut, code := runCLI(t, "", nil, "token", "revoke", "job-a", "--data", dir); code != 0 {
		t.Fatalf("revoke: exit %d: %s%s", code, out, errOut)
	}
	waitFor(t, "job-a's token to be refused", func() bool {
		code, _, _ := call(t, "GET", srv.URL+"/v1/pools", jobA, "")
		return code == 401
	})
	if _, errOut, code := runCLI(t, "", nil, "token", "revoke", "job-a", "--data", dir); code != 2 || !strings.Contains(errOut, "no token named") {
		t.Fatalf("revoke again: exit %d: %s", code, errOut)
	}
}

// TestServeRefusesToServeOthersWithoutAuth: berth without authentication
// listens only on a loopback address, unless told --insecure. The check
// comes before the port is taken, so nothing listens beyond loopback.
func TestServeRefusesToServeOthersWithoutAuth(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, poolYAML("vm", 1, "10m"))
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0", "berth.example:0"} {
		_, errOut, code := runCLI(t, "", nil, "serve", "--config", cfg, "--data", filepath.Join(dir, "d"), "--auth", "none", "--listen", addr)
		lines := strings.Split(strings.TrimSpace(errOut), "\n")
		if code != 2 || len(lines) != 1 || !strings.Contains(errOut, "refusing to serve") || !strings.Contains(errOut, "--insecure") {
			t.Errorf("serve --auth none --listen %s: exit %d: %s", addr, code, errOut)
		}
	}
	if _, errOut, code := runCLI(t, "", nil, "serve", "--config", cfg, "--data", dir, "--auth", "maybe"); code != 2 || !strings.Contains(errOut, "--auth must be") {
		t.Errorf("serve --auth maybe: exit %d: %s", code, errOut)
	}
	// On loopback, without authentication, it serves.
	srv := startServer(t, "--config", cfg, "--data", dir, "--auth", "none")
	if code, body, _ := call(t, "GET", srv.URL+"/v1/pools", "", ""); code != 200 {
		t.Fatalf("loopback without auth: %d %s", code, body)
	}
	if !strings.Contains(srv.Log(), `"auth":false`) {
		t.Errorf("the listening line does not say auth is off:\n%s", srv.Log())
	}
}

// TestClientsDoNoJanitorsWork: with tokens, a client's token cannot skip
// or fake a cleaning, through the Boskos endpoints or berth's own, nor
// touch berth's janitor's lease, nor cancel or reuse another token's
// request. (Found by the issue 7 review.)
func TestClientsDoNoJanitorsWork(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, fmt.Sprintf(`pools:
  - type: ext
    resources: [ext-1]
    janitor: {external: true}
  - type: disk
    resources: [disk-1]
    janitor: {command: [%q, %q]}
  - type: one
    resources: [one-1]
`, testdata(t, "janitor.sh"), dir))
	jobA := makeToken(t, dir, "job-a", "client")
	jobB := makeToken(t, dir, "job-b", "client")
	jan := makeToken(t, dir, "jan", "janitor")
	if _, errOut, code := runCLI(t, "", nil, "token", "create", "berth-janitor", "--role", "admin", "--data", dir); code != 2 || !strings.Contains(errOut, "berth-") {
		t.Fatalf("a token posing as berth's janitor: exit %d: %s", code, errOut)
	}
	srv := startServer(t, "--config", cfg, "--data", dir, "--auth", "tokens")
	boskos := func(token, path string, q url.Values) int {
		t.Helper()
		req, _ := http.NewRequest("POST", srv.URL+path+"?"+q.Encode(), nil)
		req.SetBasicAuth("x", token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// ext-1 goes dirty.
	if c := boskos(jobA, "/acquire", url.Values{"type": {"ext"}, "state": {"free"}, "dest": {"busy"}, "owner": {"a"}}); c != 200 {
		t.Fatalf("acquire ext: %d", c)
	}
	if c := boskos(jobA, "/release", url.Values{"name": {"ext-1"}, "owner": {"a"}, "dest": {"dirty"}}); c != 200 {
		t.Fatalf("release ext-1: %d", c)
	}
	// A client may not take it dirty, to clean it or to skip the cleaning.
	for _, dest := range []string{"cleaning", "busy"} {
		if c := boskos(jobA, "/acquire", url.Values{"type": {"ext"}, "state": {"dirty"}, "dest": {dest}, "owner": {"a"}}); c != 403 {
			t.Errorf("a client takes a dirty resource to %s: %d, want 403", dest, c)
		}
	}
	if c := boskos(jobA, "/acquirebystate", url.Values{"names": {"ext-1"}, "state": {"dirty"}, "dest": {"busy"}, "owner": {"a"}}); c != 403 {
		t.Errorf("a client takes dirty ext-1 by name: %d, want 403", c)
	}
	if c := boskos(jan, "/acquire", url.Values{"type": {"ext"}, "state": {"dirty"}, "dest": {"cleaning"}, "owner": {"jan"}}); c != 200 {
		t.Errorf("the janitor claims ext-1: %d", c)
	}

	// berth's own janitor's lease is its own: block its command, and try.
	if err := os.WriteFile(filepath.Join(dir, "block"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	out, _, code := runCLI(t, srv.URL, []string{"BERTH_TOKEN=" + jobA}, "acquire", "--type", "disk", "--owner", "a", "--json")
	var got struct{ Lease berth.Lease }
	if code != 0 || json.Unmarshal([]byte(out), &got) != nil {
		t.Fatalf("acquire disk: %d %s", code, out)
	}
	if code, body, _ := call(t, "POST", srv.URL+"/v1/leases/"+got.Lease.ID+"/release", jobA, ""); code != 200 {
		t.Fatalf("release disk-1: %d %s", code, body)
	}
	var cleaning string
	waitFor(t, "berth's janitor to be cleaning disk-1", func() bool {
		_, body, _ := call(t, "GET", srv.URL+"/v1/resources/disk-1", jobA, "")
		var r struct{ Resource berth.Resource }
		_ = json.Unmarshal([]byte(body), &r)
		cleaning = r.Resource.LeaseID
		return r.Resource.State == berth.StateCleaning
	})
	if code, body, _ := call(t, "POST", srv.URL+"/v1/leases/"+cleaning+"/heartbeat", jobA, ""); code != 403 {
		t.Errorf("a client heartbeats berth's janitor's lease: %d %s", code, body)
	}
	if code, body, _ := call(t, "POST", srv.URL+"/v1/cleanings/"+cleaning+"/finish", jan, `{"output": "done"}`); code != 403 {
		t.Errorf("another janitor finishes berth's cleaning: %d %s", code, body)
	}
	if c := boskos(jobA, "/release", url.Values{"name": {"disk-1"}, "owner": {"berth-janitor"}, "dest": {"free"}}); c != 403 {
		t.Errorf("a client releases berth's janitor's cleaning to free: %d, want 403", c)
	}
	_ = os.Remove(filepath.Join(dir, "block"))
	if b, err := os.ReadFile(filepath.Join(dir, "blocked")); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}

	// Requests: another token may neither cancel one nor use its id.
	if code, body, _ := call(t, "POST", srv.URL+"/v1/leases", jobA, `{"type": "one", "owner": "a", "requestId": "rq-a"}`); code != 200 {
		t.Fatalf("job-a leases one-1: %d %s", code, body)
	}
	if code, body, _ := call(t, "POST", srv.URL+"/v1/leases", jobB, `{"type": "one", "owner": "a", "requestId": "rq-a"}`); code != 403 {
		t.Errorf("job-b acquires with job-a's request id: %d %s", code, body)
	}
	if code, body, _ := call(t, "POST", srv.URL+"/v1/leases", jobB, `{"type": "one", "owner": "b", "requestId": "rq-b", "wait": "1ms"}`); code != 202 {
		t.Fatalf("job-b waits: %d %s", code, body)
	}
	if code, body, _ := call(t, "DELETE", srv.URL+"/v1/requests/rq-b", jobA, ""); code != 403 {
		t.Errorf("job-a cancels job-b's request: %d %s", code, body)
	}
	if code, body, _ := call(t, "DELETE", srv.URL+"/v1/requests/rq-b", jobB, ""); code != 204 {
		t.Errorf("job-b cancels its request: %d %s", code, body)
	}
	// A request refused for its token is counted under its operation.
	_, body, _ := call(t, "GET", srv.URL+"/metrics", "", "")
	if !strings.Contains(body, `berth_requests_total{api="native",code="403",op="cancel_request"}`) {
		t.Errorf("a refused cancel is not counted as cancel_request")
	}
}

// TestDemoIgnoresBerthStore: --demo is throw-away whatever the shell's
// $BERTH_STORE says (the token commands read it): it must never serve,
// and overwrite, a real store's pools. (Found by the second review.)
func TestDemoIgnoresBerthStore(t *testing.T) {
	// Nothing listens on port 1: a server that used it would not start.
	t.Setenv("BERTH_STORE", "postgres://postgres@127.0.0.1:1/nowhere")
	srv := startServer(t, "--demo")
	if code, body, _ := call(t, "GET", srv.URL+"/readyz", "", ""); code != 200 {
		t.Fatalf("demo /readyz: %d %s", code, body)
	}
}
