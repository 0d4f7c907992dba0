package config_test

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-ci/berth/internal/config"
	"github.com/berth-ci/berth/internal/lease"
)

func TestLoadDesignExample(t *testing.T) {
	c, err := config.Load("testdata/design.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ps := c.EnginePools()
	if len(ps) != 3 {
		t.Fatalf("pools = %+v", ps)
	}
	if ps[0].LeaseTTL != 10*time.Minute || len(ps[0].Resources) != 3 {
		t.Errorf("gce-project = %+v", ps[0])
	}
	if ps[1].LeaseTTL != lease.DefaultLeaseTTL {
		t.Errorf("default TTL = %s", ps[1].LeaseTTL)
	}
	if r := ps[1].Resources[0]; r.UserData["port"] != "443" || r.UserData["endpoint"] != "https://10.0.0.1" || r.Labels["region"] != "us-east1" {
		t.Errorf("cluster-a = %+v (numbers in user data must become strings)", r)
	}
	if ps[1].Probe != "tcp" || !ps[1].RequireConnected || ps[0].Probe != "" {
		t.Errorf("probes: gce-project %q, gke-cluster %q (require connected: %v)", ps[0].Probe, ps[1].Probe, ps[1].RequireConnected)
	}
	pp := c.ProbePools()
	if len(pp) != 1 || pp[0].Type != "gke-cluster" || pp[0].Spec.TCP == nil || pp[0].Spec.TCP.Address != "10.0.0.1:443" ||
		pp[0].Interval != 10*time.Second || pp[0].Timeout != 2*time.Second || pp[0].ConnectTimeout != 2*time.Second ||
		pp[0].FailureThreshold != 3 || pp[0].SuccessThreshold != 1 || pp[0].Jitter != 0.1 || pp[0].MaxBackoff != time.Minute ||
		pp[0].LeaseTTL != lease.DefaultLeaseTTL {
		t.Errorf("probe pools = %+v", pp)
	}
	if ps[2].Janitor != lease.JanitorNone || len(ps[2].Resources) != 3 || ps[2].Resources[2].Name != "pixel-7-3" {
		t.Errorf("pixel-7 = %+v", ps[2])
	}
	if ps[1].Janitor != lease.JanitorCommand || ps[1].Clean.MaxAttempts != 3 || ps[1].OnBroken != lease.OnBrokenQuarantine {
		t.Errorf("gke-cluster janitor = %+v", ps[1])
	}
	jp := c.JanitorPools()
	script, _ := filepath.Abs("testdata/clean-cluster.sh")
	if len(jp) != 1 || jp[0].Type != "gke-cluster" || jp[0].Timeout != 15*time.Minute || len(jp[0].Command) != 1 || jp[0].Command[0] != script {
		t.Errorf("janitor pools = %+v; want the script found beside the config, at %s", jp, script)
	}
}

func TestLoadLifecycle(t *testing.T) {
	c, err := config.Load("testdata/lifecycle.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ps := c.EnginePools()
	vm, proj, kind := ps[0], ps[1], ps[2]
	if vm.Janitor != lease.JanitorCommand || vm.OnBroken != lease.OnBrokenClean || vm.CleanLeaseTTL != 2*time.Minute ||
		vm.Clean != (lease.CleanPolicy{MaxAttempts: 3, Backoff: 5 * time.Second, MaxBackoff: time.Minute}) {
		t.Errorf("vm = %+v", vm)
	}
	if proj.Janitor != lease.JanitorExternal || proj.Clean.MaxAttempts != 0 || proj.CleanLeaseTTL != 30*time.Minute {
		t.Errorf("gce-project = %+v", proj)
	}
	if kind.Dynamic == nil || kind.Dynamic.MinFree != 1 || kind.Dynamic.MaxTotal != 5 || time.Duration(kind.Dynamic.Lifespan) != 24*time.Hour {
		t.Errorf("kind-cluster = %+v", kind)
	}
	jp := c.JanitorPools()
	if len(jp) != 1 || jp[0].Concurrency != 2 || jp[0].DeepCommand[1] != "--deep" || jp[0].Timeout != 15*time.Minute {
		t.Errorf("janitor pools = %+v", jp)
	}
	dp := c.DynamicPools()
	if len(dp) != 1 || dp[0].Provision.Timeout != 10*time.Minute || dp[0].Deprovision.Timeout != 15*time.Minute ||
		dp[0].Deprovision.Argv[1] != "delete" || dp[0].Concurrency != 2 || dp[0].Backoff.MaxAttempts != 3 {
		t.Errorf("dynamic pools = %+v", dp)
	}
}

func TestDemoIsValid(t *testing.T) {
	if ps := config.Demo().Validate(); len(ps) > 0 {
		t.Fatalf("demo config: %+v", ps)
	}
}

func TestProblems(t *testing.T) {
	cases := []struct {
		name, doc string
		want      []string // one line per problem, in order
	}{
		{"empty", ``, []string{"pools: at least one pool is required"}},
		{"not a mapping", "- a\n", []string{"line 1: the document must be a mapping with a pools list"}},
		{"syntax", "pools: [\n", []string{"invalid YAML"}},
		{"tab", "pools:\n\t- type: x\n", []string{"line 2: invalid YAML"}},
		{"unknown field", "pools:\n  - type: vm\n    colour: red\n", []string{"line 3: pools[0].colour: unknown field"}},
		{"probe address", "pools:\n  - type: vm\n    probe: {tcp: {address: x}}\n", []string{"line 3: pools[0].probe.tcp.address: address x: missing port in address"}},
		{"probe kinds", "pools:\n  - type: vm\n    probe: {tcp: {address: \"x:1\"}, exec: {command: [true]}}\n", []string{"line 3: pools[0].probe: only one probe kind"}},
		{"probe none", "pools:\n  - type: vm\n    probe: {interval: 1s}\n", []string{"line 3: pools[0].probe: no probe kind set"}},
		{"probe timing", "pools:\n  - type: vm\n    probe:\n      tcp: {address: \"x:1\"}\n      interval: 5s\n      timeout: 6s\n      connectTimeout: 7s\n" +
			"      failureThreshold: -1\n      successThreshold: 101\n      jitter: 1.5\n      maxBackoff: 1s\n",
			[]string{"line 6: pools[0].probe.timeout: must be more than 0s and at most the interval (5s)",
				"line 7: pools[0].probe.connectTimeout: must be more than 0s and at most the timeout (6s)",
				"line 8: pools[0].probe.failureThreshold: must be between 1 and 100",
				"line 9: pools[0].probe.successThreshold: must be between 1 and 100",
				"line 10: pools[0].probe.jitter: must be a fraction of the interval between 0 and 1",
				"line 11: pools[0].probe.maxBackoff: must be between the interval (5s)"}},
		{"probe interval", "pools:\n  - type: vm\n    probe: {tcp: {address: \"x:1\"}, interval: 10ms}\n", []string{"line 3: pools[0].probe.interval: must be between 100ms and 24h0m0s"}},
		{"probe user data", "pools:\n  - type: vm\n    resources:\n      - name: a\n        userData: {host: h}\n      - b\n    probe: {tcp: {address: \"{{.UserData.host}}:22\"}}\n",
			[]string{`line 6: pools[0].resources[1]: cannot be probed: probe.tcp.address: resource b has no user data key "host"`}},
		{"probe template", "pools:\n  - type: vm\n    probe: {http: {url: \"http://{{.Name\"}}\n", []string{"line 3: pools[0].probe.http.url:"}},
		{"janitor both", "pools:\n  - type: vm\n    janitor: {command: [sh], external: true}\n", []string{"line 3: pools[0].janitor: is either external or a command, not both"}},
		{"janitor neither", "pools:\n  - type: vm\n    janitor: {timeout: 1m}\n", []string{"line 3: pools[0].janitor: needs a command, or external: true"}},
		{"janitor program", "pools:\n  - type: vm\n    janitor:\n      command: [/nonexistent/clean.sh]\n",
			[]string{`line 4: pools[0].janitor.command[0]: "/nonexistent/clean.sh" cannot be run: `}},
		{"janitor limits", "pools:\n  - type: vm\n    janitor:\n      command: [sh]\n      timeout: 100ms\n      maxAttempts: -1\n" +
			"      backoff: 1m\n      maxBackoff: 10s\n      concurrency: 0\n      onBroken: ignore\n", []string{
			"line 5: pools[0].janitor.timeout: must be between 1s and 24h0m0s, not 100ms",
			"line 6: pools[0].janitor.maxAttempts: must be between 0 (never quarantine) and 100, not -1",
			"line 8: pools[0].janitor.maxBackoff: must be between the backoff (1m0s) and 24h0m0s, not 10s",
			`line 10: pools[0].janitor.onBroken: must be "quarantine" or "clean", not "ignore"`}},
		{"flow mapping field", "pools:\n  - type: vm\n    janitor: {command: [sh], timeout: 30}\n",
			[]string{`line 3: pools[0].janitor.timeout: cannot use the number "30" as a duration`}},
		{"external janitor timeout", "pools:\n  - type: vm\n    janitor: {external: true, timeout: 1m}\n",
			[]string{"line 3: pools[0].janitor.timeout: applies to a janitor command"}},
		{"dynamic sizes", "pools:\n  - type: vm\n    resources: [a]\n    dynamic:\n      maxTotal: 2\n      minFree: 3\n      lifespan: 1s\n" +
			"      provision: {command: [sh]}\n", []string{
			"line 4: pools[0].dynamic: a dynamic pool's resources are made by its provisioner",
			"line 6: pools[0].dynamic.minFree: must be between 0 and maxTotal (2), not 3",
			"line 7: pools[0].dynamic.lifespan: must be 0 (for ever) or between 1m0s and 8760h, not 1s",
			"line 4: pools[0].dynamic.deprovision.command: is required"}},
		{"dynamic total", "pools:\n  - type: vm\n    dynamic: {provision: {command: [sh]}, deprovision: {command: [sh]}}\n",
			[]string{"line 3: pools[0].dynamic.maxTotal: must be between 1 and 100000, not 0"}},
		{"bad ttl", "pools:\n  - type: vm\n    leaseTTL: 10x\n", []string{`line 3: pools[0].leaseTTL: cannot use the string "10x" as a duration`}},
		{"ttl range", "pools:\n  - type: vm\n    leaseTTL: 100ms\n", []string{"line 3: pools[0].leaseTTL: must be between 1s and"}},
		{"missing type", "pools:\n  - leaseTTL: 1m\n", []string{"line 2: pools[0].type: is required"}},
		{"bad type", "pools:\n  - type: a b\n", []string{`line 2: pools[0].type: "a b" is not a valid type name`}},
		{"duplicate type", "pools:\n  - type: vm\n  - type: vm\n", []string{`line 3: pools[1].type: "vm" is already the type of pools[0]`}},
		{"duplicate resource", "pools:\n  - type: vm\n    resources: [a]\n  - type: pc\n    resources: [b, a]\n",
			[]string{`line 5: pools[1].resources[1].name: resource "a" is already declared at pools[0].resources[0].name`}},
		{"resource without name", "pools:\n  - type: vm\n    resources:\n      - userData: {a: b}\n", []string{"line 4: pools[0].resources[0].name: is required"}},
		{"bad label", "pools:\n  - type: vm\n    resources:\n      - name: a\n        labels: {\"x y\": z}\n", []string{`line 5: pools[0].resources[0].labels: "x y" is not a valid label key`}},
		{"user data list", "pools:\n  - type: vm\n    resources:\n      - name: a\n        userData: {k: [1]}\n", []string{`line 5: pools[0].resources[0].userData.k: value of "k" must be a string`}},
		{"generate count", "pools:\n  - type: vm\n    generate: {prefix: x-, count: 0}\n", []string{"line 3: pools[0].generate.count: must be between 1 and"}},
		{"type error and a missing field", "pools:\n  - type: vm\n    leaseTTL: 10\n  - leaseTTL: 1m\n", []string{"line 3: pools[0].leaseTTL", "line 4: pools[1].type: is required"}},
		{"two problems", "pools:\n  - type: vm\n    leaseTTL: 0.1s\n  - type: vm\n", []string{"line 3: pools[0].leaseTTL", "line 4: pools[1].type"}},
		{"two documents", "pools:\n  - type: vm\n---\npools:\n  - type: pc\n", []string{"a second YAML document"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := config.Parse([]byte(c.doc))
			var ve *config.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Parse = %v, want a ValidationError", err)
			}
			lines := ve.Lines()
			if len(c.want) > 1 && len(lines) != len(c.want) {
				t.Fatalf("problems:\n%s\nwant %d", strings.Join(lines, "\n"), len(c.want))
			}
			for i, w := range c.want {
				if !strings.Contains(lines[i], w) {
					t.Errorf("problem %d = %q, want it to start with %q", i, lines[i], w)
				}
			}
			for _, l := range lines {
				if strings.Contains(l, "\n") || strings.Contains(l, "config.") {
					t.Errorf("problem line leaks Go internals or spans lines: %q", l)
				}
			}
		})
	}
}

func TestLoadNamesFile(t *testing.T) {
	_, err := config.Load("testdata/missing.yaml")
	if err == nil || !strings.Contains(err.Error(), "testdata/missing.yaml") {
		t.Fatalf("missing file: %v", err)
	}
}
