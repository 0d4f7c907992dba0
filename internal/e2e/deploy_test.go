package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/berth-ci/berth/internal/store/postgres/pgtest"
)

// manifest reads one YAML object of deploy/kubernetes.
func manifest(t *testing.T, name string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "kubernetes", name))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return m
}

// dig walks m along keys (a number indexes a list).
func dig(t *testing.T, m any, keys ...any) any {
	t.Helper()
	for _, k := range keys {
		switch k := k.(type) {
		case string:
			mm, ok := m.(map[string]any)
			if !ok {
				t.Fatalf("%v: not a map at %q", keys, k)
			}
			m = mm[k]
		case int:
			l, ok := m.([]any)
			if !ok || k >= len(l) {
				t.Fatalf("%v: no item %d", keys, k)
			}
			m = l[k]
		}
	}
	return m
}

// TestKubernetesManifestsServe checks deploy/kubernetes for what an
// operator relies on — three replicas rolled one at a time, a disruption
// budget and a Service that select the pods, probes on the paths berth
// serves — and then runs the Deployment's own arguments, with its
// ConfigMap and a real PostgreSQL for the Secret's DSN: the probes answer
// 200, /metrics has berth_build_info, and the API asks for a token.
func TestKubernetesManifestsServe(t *testing.T) {
	dep := manifest(t, "deployment.yaml")
	spec := dig(t, dep, "spec")
	if r := dig(t, spec, "replicas"); r != 3 {
		t.Errorf("replicas: %v, want 3", r)
	}
	if s := dig(t, spec, "strategy", "type"); s != "RollingUpdate" || dig(t, spec, "strategy", "rollingUpdate", "maxUnavailable") != 0 {
		t.Errorf("strategy: %v", dig(t, spec, "strategy"))
	}
	podLabels := dig(t, spec, "template", "metadata", "labels").(map[string]any)
	if dig(t, spec, "selector", "matchLabels", "app.kubernetes.io/name") != podLabels["app.kubernetes.io/name"] {
		t.Errorf("the Deployment's selector does not match its pods")
	}
	for _, m := range []string{"pdb.yaml", "service.yaml"} {
		sel := dig(t, manifest(t, m), "spec", "selector")
		if ml, ok := sel.(map[string]any)["matchLabels"]; ok {
			sel = ml
		}
		for k, v := range sel.(map[string]any) {
			if podLabels[k] != v {
				t.Errorf("%s selects %s=%v, which the pods do not carry", m, k, v)
			}
		}
	}
	if dig(t, manifest(t, "pdb.yaml"), "spec", "minAvailable") != 2 {
		t.Errorf("the PodDisruptionBudget should keep two of three")
	}
	c := dig(t, spec, "template", "spec", "containers", 0)
	port := dig(t, c, "ports", 0)
	if dig(t, port, "name") != "http" || dig(t, manifest(t, "service.yaml"), "spec", "ports", 0, "targetPort") != "http" {
		t.Errorf("the Service does not target the container's port")
	}
	ready, live := dig(t, c, "readinessProbe", "httpGet", "path").(string), dig(t, c, "livenessProbe", "httpGet", "path").(string)
	if ready != "/readyz" || live != "/healthz" {
		t.Errorf("probes: readiness %s, liveness %s", ready, live)
	}
	if dig(t, c, "resources", "requests", "cpu") == nil || dig(t, c, "resources", "requests", "memory") == nil {
		t.Errorf("no resource requests")
	}
	env := dig(t, c, "env", 0)
	if dig(t, env, "name") != "BERTH_STORE" || dig(t, env, "valueFrom", "secretKeyRef", "name") != "berth-store" {
		t.Errorf("the DSN does not come from the Secret berth-store: %v", env)
	}

	if dig(t, c, "lifecycle", "preStop", "sleep", "seconds") == nil {
		t.Errorf("no preStop pause: clients would meet refused connections during a rollout")
	}
	// The config is a generated ConfigMap: a change to it rolls the pods.
	kust := manifest(t, "kustomization.yaml")
	if dig(t, kust, "configMapGenerator", 0, "name") != "berth-config" || dig(t, kust, "configMapGenerator", 0, "files", 0) != "berth.yaml" {
		t.Errorf("berth.yaml is not made into the ConfigMap berth-config")
	}

	// Run what the Deployment runs: its arguments, its config, and the
	// store from $BERTH_STORE as the Secret gives it.
	dir := t.TempDir()
	raw, err := os.ReadFile(filepath.Join("..", "..", "deploy", "kubernetes", "berth.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, dir, string(raw))
	var args []string
	for _, a := range dig(t, c, "args").([]any) {
		s := a.(string)
		switch {
		case s == "serve", strings.HasPrefix(s, "--listen="):
			continue // startServer listens on a loopback port of its own
		case strings.HasPrefix(s, "--config="):
			s = "--config=" + cfg
		case strings.HasPrefix(s, "--store"):
			t.Errorf("the store's URL is a flag (%s): its password shows in the process list", s)
		}
		args = append(args, s)
	}
	t.Setenv("BERTH_STORE", pgtest.StoreURL(t))
	srv := startServer(t, args...)
	for _, p := range []string{ready, live, "/version"} {
		if code, body, _ := call(t, "GET", srv.URL+p, "", ""); code != 200 {
			t.Errorf("GET %s: %d %s", p, code, body)
		}
	}
	if code, body, _ := call(t, "GET", srv.URL+"/metrics", "", ""); code != 200 || !strings.Contains(body, "berth_build_info{") {
		t.Errorf("GET /metrics: %d", code)
	}
	if code, _, _ := call(t, "GET", srv.URL+"/v1/pools", "", ""); code != 401 {
		t.Errorf("GET /v1/pools without a token: %d, want 401", code)
	}
}
