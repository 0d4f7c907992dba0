package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/Shopify/toxiproxy/v2"
	"github.com/Shopify/toxiproxy/v2/collectors"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/berth-ci/berth/internal/store/postgres/pgtest"
)

// TestPostgresLostAndBack cuts the connection between a real berth serve
// and PostgreSQL with a TCP proxy (toxiproxy, in process), then restores
// it. While the database is unreachable, berth answers promptly with 503
// and a JSON error saying so (never a hang, never a 500) and /readyz
// fails; when it is back, berth recovers on its own.
func TestPostgresLostAndBack(t *testing.T) {
	proxy, store := pgProxy(t, pgtest.Schema(t))

	dir := t.TempDir()
	berth := startServer(t, "--config", writeConfig(t, dir, poolYAML("vm", 2, "10m")), "--store", store, "--store-timeout", "1s")
	hc := &http.Client{Timeout: 20 * time.Second} // far beyond what any answer may take
	acquire := `{"type":"vm","owner":"job"}`
	if res, err := doJSON(hc, "POST", berth.URL+"/v1/leases", acquire); err != nil || res.status != http.StatusOK {
		t.Fatalf("acquire before the cut: %+v, %v", res, err)
	}

	proxy.Stop()
	for _, c := range []struct{ method, path, body string }{
		{"GET", "/readyz", ""},
		{"POST", "/v1/leases", acquire},
		{"GET", "/v1/pools", ""},
	} {
		res, err := doJSON(hc, c.method, berth.URL+c.path, c.body)
		if err != nil {
			t.Fatalf("%s %s with the database cut off: %v", c.method, c.path, err)
		}
		if res.status != http.StatusServiceUnavailable || res.code != "unavailable" || res.took > 10*time.Second {
			t.Fatalf("%s %s with the database cut off: %d %q after %s; want a prompt 503 unavailable", c.method, c.path, res.status, res.code, res.took)
		}
	}

	if err := proxy.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "berth to be ready again", func() bool {
		res, err := doJSON(hc, "GET", berth.URL+"/readyz", "")
		return err == nil && res.status == http.StatusOK
	})

	// Black-holed: connections stay open but nothing comes back, which TCP
	// alone would notice only after many minutes. --store-timeout bounds
	// the wait.
	if _, err := proxy.Toxics.AddToxicJson(strings.NewReader(`{"name":"blackhole","type":"timeout","stream":"downstream","attributes":{"timeout":0}}`)); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ method, path, body string }{
		{"GET", "/readyz", ""},
		{"POST", "/v1/leases", acquire},
	} {
		res, err := doJSON(hc, c.method, berth.URL+c.path, c.body)
		if err != nil {
			t.Fatalf("%s %s with the database black-holed: %v", c.method, c.path, err)
		}
		if res.status != http.StatusServiceUnavailable || res.code != "unavailable" || res.took > 5*time.Second {
			t.Fatalf("%s %s with the database black-holed: %d %q after %s; want 503 unavailable after about 1 s", c.method, c.path, res.status, res.code, res.took)
		}
	}
	if err := proxy.Toxics.RemoveToxic(context.Background(), "blackhole"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "berth to be ready after the black hole", func() bool {
		res, err := doJSON(hc, "GET", berth.URL+"/readyz", "")
		return err == nil && res.status == http.StatusOK
	})
	if res, err := doJSON(hc, "POST", berth.URL+"/v1/leases", acquire); err != nil || res.status != http.StatusOK {
		t.Fatalf("acquire after the database came back: %+v, %v", res, err)
	}
}

// pgProxy starts a TCP proxy (toxiproxy, in process) to the test
// PostgreSQL server and returns it with a store URL for schema through it.
func pgProxy(t *testing.T, schema string) (*toxiproxy.Proxy, string) {
	t.Helper()
	base := pgtest.URL(t)
	upstream := "127.0.0.1:5432"
	if i := strings.Index(base, "@"); i >= 0 {
		rest := base[i+1:]
		upstream = rest[:strings.IndexAny(rest+"/", "/?")]
	}
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	srv.Metrics.ProxyMetrics = collectors.NewProxyMetricCollectors()
	proxy := toxiproxy.NewProxy(srv, "postgres", "127.0.0.1:0", upstream)
	if err := proxy.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Stop)
	return proxy, fmt.Sprintf("postgres://postgres@%s/test?search_path=%s&connect_timeout=2", proxy.Listen, schema)
}

// blackHole makes the proxy swallow everything in both directions without
// closing anything, as a network split does; the returned func undoes it.
func blackHole(t *testing.T, proxy *toxiproxy.Proxy) func() {
	t.Helper()
	for _, dir := range []string{"upstream", "downstream"} {
		toxic := fmt.Sprintf(`{"name":"blackhole-%s","type":"timeout","stream":%q,"attributes":{"timeout":0}}`, dir, dir)
		if _, err := proxy.Toxics.AddToxicJson(strings.NewReader(toxic)); err != nil {
			t.Fatal(err)
		}
	}
	return func() {
		for _, dir := range []string{"upstream", "downstream"} {
			if err := proxy.Toxics.RemoveToxic(context.Background(), "blackhole-"+dir); err != nil {
				t.Fatal(err)
			}
		}
	}
}

type jsonAnswer struct {
	status int
	code   string
	took   time.Duration
}

// doJSON makes one call and reads the error code of a JSON error answer.
func doJSON(hc *http.Client, method, url, body string) (jsonAnswer, error) {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return jsonAnswer{}, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	start := time.Now()
	res, err := hc.Do(req)
	if err != nil {
		return jsonAnswer{}, err
	}
	defer res.Body.Close()
	var e struct {
		Error struct{ Code string } `json:"error"`
	}
	_ = json.NewDecoder(res.Body).Decode(&e)
	return jsonAnswer{status: res.StatusCode, code: e.Error.Code, took: time.Since(start)}, nil
}
