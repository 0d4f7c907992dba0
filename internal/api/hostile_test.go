package api_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-ci/berth/internal/api"
	"github.com/berth-ci/berth/internal/boskos"
	"github.com/berth-ci/berth/internal/lease"
	"github.com/berth-ci/berth/internal/store"
	"github.com/berth-ci/berth/internal/store/sqlite"
)

// hostileBodies are request bodies no endpoint may accept: malformed,
// wrong-typed, oversized, deeply nested, and injection-shaped.
var hostileBodies = map[string]string{
	"empty":          "",
	"truncated":      `{"type": "vm"`,
	"array":          `[1, 2]`,
	"string":         `"vm"`,
	"number":         `7`,
	"wrong types":    `{"type": 1, "owner": true, "to": [], "reason": {}, "name": 2, "userData": "x", "labels": 3}`,
	"unknown fields": `{"colour": "red", "shape": "round"}`,
	"nul":            "{\"type\": \"vm\", \"owner\": \"a\\u0000b\", \"reason\": \"x\\u0000\", \"name\": \"n\\u0000\"}",
	"bad utf-8":      "{\"type\": \"vm\xff\", \"owner\": \"\xfe\"}",
	"sql":            `{"type": "vm'; DROP TABLE resources; --", "owner": "x' OR '1'='1", "name": "r'; DELETE FROM leases; --", "to": "free' --"}`,
	"path":           `{"type": "../../etc/passwd", "name": "../../etc/passwd", "owner": "../.."}`,
	"nested":         strings.Repeat("[", 100000) + strings.Repeat("]", 100000),
	"oversized":      `{"type": "vm", "reason": "` + strings.Repeat("x", api.MaxBodyBytes+1) + `"}`,
	"duplicate keys": `{"type": "vm", "type": "vm", "owner": "x", "owner": "y"}`,
}

// hostileNames stand in for {id}, {name} and {type}: none exists.
var hostileNames = []string{
	url.PathEscape("'; DROP TABLE leases; --"),
	url.PathEscape("../../etc/passwd"),
	strings.Repeat("x", 300),
	url.PathEscape("a\x00b"),
	"%ff%fe",
}

// TestHostileInputEveryEndpoint sends malformed, oversized, wrong-typed
// and injection-shaped input to every route of the native API and every
// Boskos endpoint: each answer is a 4xx with the error shape of its API,
// and the store is exactly as it was.
func TestHostileInputEveryEndpoint(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "berth.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	eng := lease.New(lease.Options{Store: st})
	if _, err := eng.SyncPools(ctx, []lease.Pool{{Type: "vm", LeaseTTL: time.Minute, Janitor: lease.JanitorExternal,
		Resources: []store.ResourceSpec{{Name: "vm-1"}, {Name: "vm-2"}}}}, "test"); err != nil {
		t.Fatal(err)
	}
	h := api.New(api.Options{Engine: eng, SchemaVersion: sqlite.SchemaVersion(), Boskos: boskos.New(boskos.Options{Engine: eng})})
	f := &fixture{store: st}
	// A lease held, so that a hostile release has something to spoil.
	if _, err := eng.Acquire(ctx, lease.AcquireParams{Type: "vm", Owner: "holder"}); err != nil {
		t.Fatal(err)
	}
	before := f.snapshot(t)
	send := func(method, target, body string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, "http://berth"+target, strings.NewReader(body))
		req.RequestURI = "" // set by NewRequest; not what a server sees here
		req.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w
	}
	check := func(t *testing.T, method, target, body string, wantJSON bool) {
		t.Helper()
		w := send(method, target, body)
		if w.Code < 400 || w.Code >= 500 {
			t.Errorf("%s %s: %d %.200s; want a 4xx", method, target, w.Code, w.Body.String())
			return
		}
		ct := w.Header().Get("Content-Type")
		switch {
		case wantJSON && (ct != "application/json" || !strings.Contains(w.Body.String(), `"error":{"code":`)):
			t.Errorf("%s %s: %d %s %.200s; want the JSON error shape", method, target, w.Code, ct, w.Body.String())
		case !wantJSON && !strings.HasPrefix(ct, "text/plain"):
			t.Errorf("%s %s: %d %s; want Boskos' plain text", method, target, w.Code, ct)
		}
	}
	n := 0
	for _, route := range h.Routes() {
		method, pattern, _ := strings.Cut(route, " ")
		if pattern == "/healthz" || pattern == "/readyz" || pattern == "/version" || pattern == "/metrics" {
			continue // take no input
		}
		for _, name := range hostileNames {
			path := strings.NewReplacer("{id}", name, "{name}", name, "{type}", name).Replace(pattern)
			if method == http.MethodGet || method == http.MethodDelete {
				check(t, method, path+"?colour='%3B--&limit=-1&type=%00", "", true)
				n++
				continue
			}
			for _, body := range hostileBodies {
				check(t, method, path, body, true)
				n++
			}
			if !strings.Contains(pattern, "{") {
				break // the path takes no name: one round of bodies is enough
			}
		}
	}
	// Boskos: hostile parameters, and hostile bodies for /update.
	params := []string{"", "type=vm", "type=vm'%3B--&state=free&dest=busy&owner=x%00",
		"type=vm&state=free&dest=busy&owner=" + strings.Repeat("o", 10000), "name=../../x&dest=free&owner=a",
		"type=vm&state=free&dest=free&owner=a", "state=free&dest=busy&owner=a&names=vm-1,vm-1'--,", "type=vm&state=busy&expire=forever&dest=free",
		"name=vm-1&owner=intruder&state=busy", "name=vm-1&owner=intruder&dest=free", "type=vm&state=free&dest=busy&owner=a&request_id=a%20b"}
	for _, path := range []string{"/acquire", "/acquirebystate", "/release", "/update", "/reset"} {
		for _, q := range params {
			check(t, http.MethodPost, path+"?"+q, "", false)
			n++
		}
		check(t, http.MethodGet, path+"?type=vm", "", false)
	}
	// Someone else's update is refused whatever it sends; the holder's,
	// whenever its body is not user data (a flat JSON object of strings,
	// valid UTF-8, no NUL).
	for name, body := range hostileBodies {
		check(t, http.MethodPost, "/update?name=vm-1&owner=intruder&state=busy", body, false)
		switch name {
		case "empty", "unknown fields", "sql", "path", "duplicate keys":
			continue // user data as Boskos has it: a heartbeat that merges it
		}
		check(t, http.MethodPost, "/update?name=vm-1&owner=holder&state=busy", body, false)
	}
	if after := f.snapshot(t); after != before {
		t.Fatalf("hostile input changed the store:\nbefore %s\nafter  %s", before, after)
	}
	if err := st.Check(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d hostile requests", n)
}
