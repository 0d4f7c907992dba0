package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/client"
	"github.com/berth-ci/berth/internal/api"
	"github.com/berth-ci/berth/internal/lease"
	"github.com/berth-ci/berth/internal/store"
	"github.com/berth-ci/berth/internal/store/sqlite"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// broker starts the API in-process and returns its URL.
func broker(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "berth.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	eng := lease.New(lease.Options{Store: st})
	if _, err := eng.SyncPools(ctx, []lease.Pool{{Type: "vm", LeaseTTL: time.Minute, Resources: []store.ResourceSpec{
		{Name: "vm-1", UserData: map[string]string{"ip": "10.0.0.1"}}}}}, "test"); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api.New(api.Options{Engine: eng}))
	t.Cleanup(func() {
		srv.Close()
		st.Close()
	})
	return srv.URL
}

// cli runs the command line in-process, as a shell would.
func cli(t *testing.T, env map[string]string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, strings.NewReader(""), &out, &errb, func(k string) string { return env[k] })
	return out.String(), errb.String(), code
}

func TestAcquireReleaseInProcess(t *testing.T) {
	url := broker(t)
	env := map[string]string{"BERTH_SERVER": url, "BERTH_OWNER": "ci-7"}
	out, errOut, code := cli(t, env, "acquire", "--type", "vm", "--json")
	if code != 0 {
		t.Fatalf("acquire: %d %s", code, errOut)
	}
	var got struct {
		Lease    *berth.Lease    `json:"lease"`
		Resource *berth.Resource `json:"resource"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil || got.Lease.Owner != "ci-7" || got.Resource.UserData["ip"] != "10.0.0.1" {
		t.Fatalf("acquire --json = %s (%v)", out, err)
	}
	out, _, code = cli(t, env, "resources")
	if code != 0 || !strings.Contains(out, "vm-1") || !strings.Contains(out, "ci-7") || !strings.HasPrefix(out, "NAME") {
		t.Fatalf("resources table:\n%s", out)
	}
	out, _, code = cli(t, env, "pools", "--json")
	var pools []*berth.Pool
	if code != 0 || json.Unmarshal([]byte(out), &pools) != nil || len(pools) != 1 || pools[0].States[berth.StateBusy] != 1 {
		t.Fatalf("pools --json = %s", out)
	}
	if _, errOut, code := cli(t, env, "acquire", "--type", "vm"); code != ExitInfra || !strings.Contains(errOut, "infrastructure failure: no vm resource is free") {
		t.Fatalf("acquire with nothing free: %d %q", code, errOut)
	}
	out, _, code = cli(t, env, "release", got.Lease.ID, "--free")
	if code != 0 || !strings.Contains(out, "released vm-1") || !strings.Contains(out, "now free") {
		t.Fatalf("release: %d %s", code, out)
	}
	out, _, code = cli(t, env, "events", "--json", "--resource", "vm-1")
	if code != 0 || strings.Count(out, "\n") != 3 {
		t.Fatalf("events --json (one object per line, 3 events) = %s", out)
	}
}

func TestUsageErrorsInProcess(t *testing.T) {
	url := broker(t)
	env := map[string]string{"BERTH_SERVER": url}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"acquire", "--type"}, "flag needs an argument"},
		{[]string{"heartbeat"}, "heartbeat needs LEASE_ID"},
		{[]string{"pools", "extra"}, "pools takes no arguments"},
		{[]string{"run", "--type", "vm"}, "run needs a command after --"},
		{[]string{"bench"}, "--type is required"},
		{[]string{"check-config"}, "check-config needs FILE"},
		{[]string{"events", "--since", "-1h"}, "--since must not be negative"},
	} {
		out, errOut, code := cli(t, env, c.args...)
		if code != ExitUsage || !strings.Contains(errOut, c.want) || strings.Count(errOut, "\n") != 1 || out != "" {
			t.Errorf("berth %v: exit %d, stdout %q, stderr %q; want exit 2 and one line mentioning %q", c.args, code, out, errOut, c.want)
		}
	}
}

func TestVersionAndCheckConfig(t *testing.T) {
	out, _, code := cli(t, nil, "version")
	if code != 0 || !strings.HasPrefix(out, "berth ") || !strings.Contains(out, "go: go1.") {
		t.Fatalf("version: %d %q", code, out)
	}
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte("pools:\n  - type: vm\n    resources: [a, b]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, _, code := cli(t, nil, "check-config", good); code != 0 || !strings.Contains(out, "ok (1 pools, 2 resources)") {
		t.Fatalf("check-config: %d %q", code, out)
	}
	// A Boskos resources file, checked as one.
	bk := filepath.Join(dir, "resources.yaml")
	if err := os.WriteFile(bk, []byte("resources:\n- type: vm\n  names: [vm-1]\n- type: c\n  max-count: 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, _, code := cli(t, nil, "check-config", "--boskos", bk); code != 0 || !strings.Contains(out, "ok (2 pools, 1 resources)") {
		t.Fatalf("check-config --boskos: %d %q", code, out)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("resources:\n- type: vm\n  names: [Bad_1]\n  min-count: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := cli(t, nil, "check-config", "--boskos", bad)
	if code != ExitUsage || strings.Count(errOut, "\n") != 2 || !strings.Contains(errOut, bad+":3: resources[0].names[0]") {
		t.Fatalf("check-config --boskos of a bad file: %d %q; want exit 2 and a line per problem", code, errOut)
	}
	// serve refuses it in one line, and a clash with --config too.
	_, errOut, code = cli(t, nil, "serve", "--boskos-config", bad, "--data", t.TempDir())
	if code != ExitUsage || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, "and 1 more problems") {
		t.Fatalf("serve --boskos-config of a bad file: %d %q", code, errOut)
	}
	_, errOut, code = cli(t, nil, "serve", "--config", good, "--boskos-config", bk, "--data", t.TempDir())
	if code != ExitUsage || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, `"vm" is also a pool of the berth config`) {
		t.Fatalf("serve with a clash between the configs: %d %q", code, errOut)
	}
}

func TestUnreachableBrokerIsInfrastructure(t *testing.T) {
	// A port nobody listens on: bind one, then close it.
	srv := httptest.NewServer(nil)
	url := srv.URL
	srv.Close()
	var out, errb bytes.Buffer
	e := &env{ctx: context.Background(), stdin: strings.NewReader(""), stdout: &out, stderr: &errb,
		getenv: func(k string) string { return map[string]string{"BERTH_SERVER": url}[k] },
		tune: func(o *client.Options) {
			o.MaxAttempts, o.MinBackoff, o.MaxBackoff = 3, time.Millisecond, time.Millisecond
		}}
	code := runEnv(e, []string{"run", "--type", "vm", "--", "true"})
	errOut := errb.String()
	if code != ExitInfra || !strings.Contains(errOut, "infrastructure failure") {
		t.Fatalf("run against a closed port: %d %q", code, errOut)
	}
}

// TestEventsFollow: `events --follow` prints new events as they happen
// (the server long-polls; nothing here sleeps) and ends cleanly on ^C.
func TestEventsFollow(t *testing.T) {
	url := broker(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	var errb bytes.Buffer
	done := make(chan int, 1)
	go func() {
		e := &env{ctx: ctx, stdin: strings.NewReader(""), stdout: pw, stderr: &errb,
			getenv: func(k string) string { return map[string]string{"BERTH_SERVER": url}[k] }}
		done <- runEnv(e, []string{"events", "--follow", "--json"})
		pw.Close()
	}()
	lines := bufio.NewScanner(pr)
	// The history first: vm-1 was added.
	if !lines.Scan() || !strings.Contains(lines.Text(), `"reason":"added"`) {
		t.Fatalf("first line = %q", lines.Text())
	}
	if _, errOut, code := cli(t, map[string]string{"BERTH_SERVER": url, "BERTH_OWNER": "watcher-test"}, "acquire", "--type", "vm"); code != 0 {
		t.Fatalf("acquire: %s", errOut)
	}
	if !lines.Scan() || !strings.Contains(lines.Text(), "watcher-test") {
		t.Fatalf("followed line = %q, want the acquire", lines.Text())
	}
	cancel()
	go io.Copy(io.Discard, pr) // drain whatever is left
	if code := <-done; code != 0 {
		t.Fatalf("events --follow ended with %d: %s", code, errb.String())
	}
}
