package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/client"
)

// scrape reads url's /metrics as Prometheus would.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	res, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", res.Status)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(res.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// sample returns the value of the series of family name whose labels
// include want (a counter's or gauge's value, a histogram's count), and
// whether there is one.
func sample(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f, ok := fams[name]
	if !ok {
		return 0, false
	}
	sum, found := 0.0, false
next:
	for _, m := range f.Metric {
		have := map[string]string{}
		for _, l := range m.Label {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		found = true
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Histogram != nil:
			sum += float64(m.Histogram.GetSampleCount())
		}
	}
	return sum, found
}

// TestMetricsTellWhatHappened drives a real berth serve through what its
// metrics must show — leases granted at once and after a wait, an error,
// an expiry, a cleaning, a provisioning, probes of a live and of a closed
// port — and reads each back from /metrics as Prometheus would.
func TestMetricsTellWhatHappened(t *testing.T) {
	dir := t.TempDir()
	live, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	go func() {
		for {
			c, err := live.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	// A port that was just free: nothing listens, so probes are refused.
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()

	cfg := writeConfig(t, dir, fmt.Sprintf(`pools:
  - type: vm
    leaseTTL: 1s
    resources: [vm-1]
  - type: disk
    resources: [disk-1]
    janitor: {command: [%q, %q]}
  - type: cluster
    resources:
      - name: up-1
        userData: {addr: %q}
      - name: down-1
        userData: {addr: %q}
    probe:
      tcp: {address: "{{.UserData.addr}}"}
      interval: 200ms
      timeout: 200ms
      failureThreshold: 1
      jitter: 0
  - type: kind
    dynamic:
      minFree: 1
      maxTotal: 1
      provision: {command: [%q, %q]}
      deprovision: {command: [%q, %q]}
`, testdata(t, "janitor.sh"), dir, live.Addr().String(), closedAddr,
		testdata(t, "provision.sh"), dir, testdata(t, "deprovision.sh"), dir))
	srv := startServer(t, "--config", cfg, "--data", dir, "--reap-interval", "50ms")
	c := newClient(t, client.Options{Servers: []string{srv.URL}})
	ctx := context.Background()

	// At once, then a waiter served by the release, then an expiry: the
	// waiter's lease is left to run out.
	first, err := c.Acquire(ctx, client.AcquireParams{Type: "vm", Owner: "job-1"})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() {
		_, err := c.Acquire(ctx, client.AcquireParams{Type: "vm", Owner: "job-2", Wait: 30 * time.Second})
		served <- err
	}()
	waitFor(t, "job-2 to wait", func() bool {
		p, err := c.Pool(ctx, "vm")
		return err == nil && p.Waiters == 1
	})
	if _, err := c.Release(ctx, first.Lease.ID, client.ReleaseParams{}); err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	if _, err := c.Acquire(ctx, client.AcquireParams{Type: "no-such-type", Owner: "job-3"}); berth.ErrorCodeOf(err) != berth.EUnknownType {
		t.Fatalf("acquire of an unknown type: %v", err)
	}
	// A cleaning: the janitor runs when disk-1 comes back.
	d, err := c.Acquire(ctx, client.AcquireParams{Type: "disk", Owner: "job-4"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Release(ctx, d.Lease.ID, client.ReleaseParams{}); err != nil {
		t.Fatal(err)
	}

	var fams map[string]*dto.MetricFamily
	at := func(name string, labels map[string]string, min float64) func() bool {
		return func() bool {
			v, ok := sample(fams, name, labels)
			return ok && v >= min
		}
	}
	for _, c := range []struct {
		what   string
		name   string
		labels map[string]string
		min    float64
	}{
		{"an acquire answered", "berth_requests_total", map[string]string{"api": "native", "op": "acquire", "code": "200"}, 2},
		{"its latency", "berth_request_duration_seconds", map[string]string{"api": "native", "op": "acquire"}, 3},
		{"a release answered", "berth_requests_total", map[string]string{"op": "release", "code": "200"}, 2},
		{"the unknown type's error", "berth_request_errors_total", map[string]string{"op": "acquire", "error": "unknown_type"}, 1},
		{"a lease at once", "berth_leases_granted_total", map[string]string{"type": "vm", "waited": "false"}, 1},
		{"a lease after a wait", "berth_leases_granted_total", map[string]string{"type": "vm", "waited": "true"}, 1},
		{"the wait's time", "berth_acquire_wait_seconds", map[string]string{"type": "vm"}, 1},
		{"the expiry", "berth_lease_expirations_total", map[string]string{"type": "vm", "kind": "use"}, 1},
		{"the cleaning", "berth_janitor_cleanings_total", map[string]string{"type": "disk", "outcome": "cleaned"}, 1},
		{"the provisioning", "berth_provisioner_runs_total", map[string]string{"type": "kind", "action": "create", "outcome": "ok"}, 1},
		{"a refused probe", "berth_probe_results_total", map[string]string{"type": "cluster", "result": "failed", "reason": "ConnectionRefused"}, 1},
		{"a good probe", "berth_probe_results_total", map[string]string{"type": "cluster", "result": "ok"}, 1},
		{"the probes' time", "berth_probe_duration_seconds", map[string]string{"type": "cluster"}, 2},
		{"the disconnected resource", "berth_resources_health", map[string]string{"type": "cluster", "health": "Disconnected"}, 1},
		{"the connected resource", "berth_resources_health", map[string]string{"type": "cluster", "health": "Connected"}, 1},
		{"the vm free again", "berth_resources", map[string]string{"type": "vm", "state": "free"}, 1},
		{"the probed pool", "berth_pool_probed", map[string]string{"type": "cluster"}, 1},
		{"store calls", "berth_store_operation_duration_seconds", map[string]string{"op": "LeaseAcquire"}, 3},
		{"leadership", "berth_leader", nil, 1},
		{"readiness", "berth_ready", nil, 1},
		{"the pool counts", "berth_state_scrape_ok", nil, 1},
	} {
		waitFor(t, c.what+" in /metrics", func() bool {
			fams = scrape(t, srv.URL)
			return at(c.name, c.labels, c.min)()
		})
	}
	if v, _ := sample(fams, "berth_request_errors_total", map[string]string{"op": "release"}); v != 0 {
		t.Errorf("releases counted as errors: %v", v)
	}
	if v, ok := sample(fams, "berth_waiters", map[string]string{"type": "vm"}); !ok || v != 0 {
		t.Errorf("berth_waiters{type=vm} = %v, %v; want 0 once the waiter was served", v, ok)
	}
	if _, ok := sample(fams, "berth_resources", map[string]string{"type": "vm", "state": "quarantined"}); !ok {
		t.Errorf("berth_resources has no quarantined series for vm: rules about a state need one, at 0")
	}
	for _, name := range []string{"go_goroutines", "process_start_time_seconds", "berth_requests_in_flight",
		"berth_leases_held", "berth_resources_leasable", "berth_pool_draining"} {
		if _, ok := fams[name]; !ok {
			t.Errorf("/metrics has no %s", name)
		}
	}

	// berth_build_info agrees with /version: a rollout is verified with
	// either.
	res, err := http.Get(srv.URL + "/version")
	if err != nil {
		t.Fatal(err)
	}
	var v struct{ Version, Commit, GoVersion string }
	if err := json.NewDecoder(res.Body).Decode(&v); err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if n, ok := sample(fams, "berth_build_info", map[string]string{"version": v.Version, "revision": v.Commit, "goversion": v.GoVersion}); !ok || n != 1 {
		t.Errorf("berth_build_info{version=%q, revision=%q, goversion=%q} = %v, %v; want 1", v.Version, v.Commit, v.GoVersion, n, ok)
	}
	if strings.TrimSpace(v.Version) == "" {
		t.Errorf("/version has no version")
	}
}
