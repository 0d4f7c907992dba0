package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/api"
	"github.com/berth-ci/berth/internal/boskos"
	"github.com/berth-ci/berth/internal/lease"
	"github.com/berth-ci/berth/internal/store"
	"github.com/berth-ci/berth/internal/store/sqlite"
)

// fuzzServer is a handler over a real SQLite store, shared by one fuzz
// target's executions, with its store for the consistency check.
func fuzzServer(f *testing.F) (http.Handler, store.Store) {
	f.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(f.TempDir(), "berth.db"), sqlite.Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	eng := lease.New(lease.Options{Store: st, MaxPoll: time.Millisecond, Grace: time.Millisecond})
	if _, err := eng.SyncPools(ctx, []lease.Pool{
		{Type: "vm", LeaseTTL: time.Minute, Resources: []store.ResourceSpec{{Name: "vm-1", Labels: map[string]string{"zone": "a"}}, {Name: "vm-2"}}},
		{Type: "proj", LeaseTTL: time.Minute, Janitor: lease.JanitorExternal, Resources: []store.ResourceSpec{{Name: "proj-1"}}},
	}, "fuzz"); err != nil {
		f.Fatal(err)
	}
	return api.New(api.Options{Engine: eng, SchemaVersion: sqlite.SchemaVersion(), Boskos: boskos.New(boskos.Options{Engine: eng})}), st
}

// FuzzNativeAPI sends fuzzed path values, queries and bodies to every
// route of the native API: no input may get a 5xx, an error that is not
// the JSON error shape, or leave the store inconsistent.
func FuzzNativeAPI(f *testing.F) {
	h, st := fuzzServer(f)
	routes := h.(*api.Server).Routes()
	f.Add(uint8(1), "vm", "", []byte(`{"type": "vm", "owner": "a"}`))
	f.Add(uint8(2), "x", "wait=1ms", []byte(`{"type": "vm", "owner": "b", "wait": "1ms", "requestId": "r-1"}`))
	f.Add(uint8(3), "vm-1", "type=vm&state=free&limit=1", []byte(`{"to": "broken", "reason": "r"}`))
	f.Add(uint8(7), "proj", "after=0&kind=lease", []byte(`{"type": "proj", "owner": "j", "ok": true}`))
	f.Add(uint8(11), "vm-2", "", []byte(`{"reason": "x", "name": "n", "type": "vm", "userData": {"a": "b"}}`))
	f.Fuzz(func(t *testing.T, route uint8, name, query string, body []byte) {
		method, pattern, _ := strings.Cut(routes[int(route)%len(routes)], " ")
		if pattern == "/v1/events" && strings.Contains(query, "wait") {
			query = "" // a long poll: the point is decoding, not waiting
		}
		path := strings.NewReplacer("{id}", url.PathEscape(name), "{name}", url.PathEscape(name), "{type}", url.PathEscape(name)).Replace(pattern)
		req := httptest.NewRequest(method, "http://berth"+path, strings.NewReader(string(body)))
		req.URL.RawQuery = query
		req.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code >= 500 {
			t.Fatalf("%s %s?%s %q: %d %s", method, path, query, body, w.Code, w.Body.String())
		}
		if w.Code >= 400 {
			var e struct{ Error *berth.Error }
			if json.Unmarshal(w.Body.Bytes(), &e) != nil || e.Error == nil || e.Error.Code == "" || e.Error.Message == "" {
				t.Fatalf("%s %s: %d with no JSON error: %s", method, path, w.Code, w.Body.String())
			}
		}
		if err := st.Check(context.Background()); err != nil {
			t.Fatalf("after %s %s %q: %v", method, path, body, err)
		}
	})
}

// FuzzBoskosAPI does the same for the Boskos-compatible endpoints, whose
// errors are plain text.
func FuzzBoskosAPI(f *testing.F) {
	h, st := fuzzServer(f)
	paths := []string{"/acquire", "/acquirebystate", "/release", "/update", "/reset", "/metric"}
	f.Add(uint8(0), "type=proj&state=free&dest=busy&owner=a", []byte(nil))
	f.Add(uint8(0), "type=proj&state=free&dest=leased&owner=b&request_id=q1", []byte(nil))
	f.Add(uint8(1), "state=free&dest=busy&owner=c&names=vm-1,vm-2", []byte(nil))
	f.Add(uint8(2), "name=proj-1&dest=dirty&owner=a", []byte(nil))
	f.Add(uint8(3), "name=proj-1&owner=a&state=busy", []byte(`{"k": "v", "gone": ""}`))
	f.Add(uint8(4), "type=proj&state=busy&expire=1s&dest=dirty", []byte(nil))
	f.Add(uint8(5), "type=proj", []byte(nil))
	f.Fuzz(func(t *testing.T, p uint8, query string, body []byte) {
		path := paths[int(p)%len(paths)]
		method := http.MethodPost
		if path == "/metric" {
			method = http.MethodGet
		}
		req := httptest.NewRequest(method, "http://berth"+path, strings.NewReader(string(body)))
		req.URL.RawQuery = query
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code >= 500 {
			t.Fatalf("%s %s?%s %q: %d %s", method, path, query, body, w.Code, w.Body.String())
		}
		if w.Code >= 400 && (!strings.HasPrefix(w.Header().Get("Content-Type"), "text/plain") || strings.TrimSpace(w.Body.String()) == "") {
			t.Fatalf("%s %s: %d %q %q; want a plain-text error", method, path, w.Code, w.Header().Get("Content-Type"), w.Body.String())
		}
		if err := st.Check(context.Background()); err != nil {
			t.Fatalf("after %s %s?%s: %v", method, path, query, err)
		}
	})
}
