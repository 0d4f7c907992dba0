package boskos_test

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/berth-ci/berth/internal/api"
	"github.com/berth-ci/berth/internal/boskos"
	"github.com/berth-ci/berth/internal/lease"
	"github.com/berth-ci/berth/internal/store"
	"github.com/berth-ci/berth/internal/store/sqlite"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// server is berth's API, Boskos endpoints included, over a real SQLite
// store, on a fake clock so that answers hold no wall-clock times.
func server(t *testing.T) *httptest.Server {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "berth.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	clock := clockwork.NewFakeClockAt(time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC))
	eng := lease.New(lease.Options{Store: st, Clock: clock})
	_, err = eng.SyncPools(ctx, []lease.Pool{
		{Type: "gce-project", LeaseTTL: 30 * time.Minute, Janitor: lease.JanitorExternal,
			Resources: []store.ResourceSpec{{Name: "proj-1"}, {Name: "proj-2"}}},
	}, "test")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api.New(api.Options{Engine: eng, Boskos: boskos.New(boskos.Options{Engine: eng})}))
	t.Cleanup(func() {
		srv.Close()
		if err := st.Check(context.Background()); err != nil {
			t.Errorf("store consistency: %v", err)
		}
		st.Close()
	})
	return srv
}

func call(t *testing.T, srv *httptest.Server, method, path, body string) string {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%d\nContent-Type: %s\n\n%s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
}

// TestGolden compares the raw answers (status, content type, body) of the
// Boskos endpoints, every error case of boskos-api.md among them, with
// testdata/golden. Run with -update to rewrite them after a change.
func TestGolden(t *testing.T) {
	srv := server(t)
	// A sequence on one server: each step sees the ones before.
	steps := []struct{ name, method, path, body string }{
		{"root", "GET", "/", ""},
		{"unknown-path", "GET", "/no/such/thing", ""},
		{"acquire-wrong-method", "GET", "/acquire?type=gce-project&state=free&dest=busy&owner=a", ""},
		{"acquire-missing-params", "POST", "/acquire?type=gce-project", ""},
		{"acquire-unknown-type", "POST", "/acquire?type=nope&state=free&dest=busy&owner=a", ""},
		{"acquire", "POST", "/acquire?type=gce-project&state=free&dest=busy&owner=a", ""},
		{"acquire-second", "POST", "/acquire?type=gce-project&state=free&dest=busy&owner=b", ""},
		{"acquire-none-available", "POST", "/acquire?type=gce-project&state=free&dest=busy&owner=c", ""},
		{"acquire-queued", "POST", "/acquire?type=gce-project&state=free&dest=busy&owner=c&request_id=req-1", ""},
		{"acquire-bad-dest", "POST", "/acquire?type=gce-project&state=dirty&dest=free&owner=c", ""},
		{"update-missing-params", "POST", "/update?name=proj-1", ""},
		{"update-unknown-name", "POST", "/update?name=nope&owner=a&state=busy", ""},
		{"update-owner-mismatch", "POST", "/update?name=proj-1&owner=b&state=busy", ""},
		{"update-state-mismatch", "POST", "/update?name=proj-1&owner=a&state=cleaning", ""},
		{"update-bad-json", "POST", "/update?name=proj-1&owner=a&state=busy", "{not json"},
		{"update-non-string", "POST", "/update?name=proj-1&owner=a&state=busy", `{"k": 1}`},
		{"update", "POST", "/update?name=proj-1&owner=a&state=busy", `{"k": "v"}`},
		{"release-wrong-method", "GET", "/release?name=proj-1&dest=dirty&owner=a", ""},
		{"release-missing-params", "POST", "/release?name=proj-1", ""},
		{"release-unknown-name", "POST", "/release?name=nope&dest=dirty&owner=a", ""},
		{"release-owner-mismatch", "POST", "/release?name=proj-1&dest=dirty&owner=b", ""},
		{"release-bad-dest", "POST", "/release?name=proj-1&dest=busy&owner=a", ""},
		{"release", "POST", "/release?name=proj-1&dest=free&owner=a", ""},
		{"acquire-served-request", "POST", "/acquire?type=gce-project&state=free&dest=busy&owner=c&request_id=req-1", ""},
		{"acquirebystate-missing-params", "POST", "/acquirebystate?state=free", ""},
		{"acquirebystate-none", "POST", "/acquirebystate?state=free&dest=busy&owner=d&names=proj-1,proj-2", ""},
		{"reset-missing-params", "POST", "/reset?type=gce-project", ""},
		{"reset-bad-expire", "POST", "/reset?type=gce-project&state=busy&expire=soon&dest=dirty", ""},
		{"reset-unknown-type", "POST", "/reset?type=nope&state=busy&expire=1m&dest=dirty", ""},
		{"reset", "POST", "/reset?type=gce-project&state=busy&expire=0s&dest=dirty", ""},
		{"acquirebystate-from-dirty", "POST", "/acquirebystate?state=dirty&dest=cleaning&owner=janitor&names=proj-2", ""},
		{"metric-wrong-method", "POST", "/metric?type=gce-project", ""},
		{"metric-missing-type", "GET", "/metric", ""},
		{"metric-unknown-type", "GET", "/metric?type=nope", ""},
		{"metric", "GET", "/metric?type=gce-project", ""},
		// Added after review: every endpoint's wrong method, a name that
		// does not exist, input quoted back only in part, a bad reset
		// dest refused whether or not anything matches, user data that
		// would grow without bound.
		{"acquirebystate-wrong-method", "GET", "/acquirebystate?state=free&dest=busy&owner=d&names=proj-1", ""},
		{"acquirebystate-unknown-name", "POST", "/acquirebystate?state=free&dest=busy&owner=d&names=nope", ""},
		{"acquirebystate-duplicate-name", "POST", "/acquirebystate?state=dirty&dest=leased&owner=d&names=proj-1,proj-1", ""},
		{"update-wrong-method", "GET", "/update?name=proj-1&owner=d&state=leased", ""},
		{"reset-wrong-method", "GET", "/reset?type=gce-project&state=busy&expire=1m&dest=dirty", ""},
		{"reset-bad-dest", "POST", "/reset?type=gce-project&state=nothing-here&expire=1m&dest=busy", ""},
		{"update-long-owner", "POST", "/update?name=proj-1&state=leased&owner=" + strings.Repeat("o", 300), ""},
		{"acquire-long-type", "POST", "/acquire?state=free&dest=busy&owner=d&type=" + strings.Repeat("t", 300), ""},
		{"update-too-many-keys", "POST", "/update?name=proj-1&owner=d&state=leased", manyKeys(300)},
		{"acquire-bad-request-id", "POST", "/acquire?type=gce-project&state=free&dest=busy&owner=d&request_id=a%20b", ""},
	}
	for i, s := range steps {
		got := call(t, srv, s.method, s.path, s.body)
		file := filepath.Join("testdata", "golden", fmt.Sprintf("%02d-%s.txt", i+1, s.name))
		if *update {
			if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(file, []byte(got), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(file)
		if err != nil {
			t.Fatalf("%s: %v (run with -update to write it)", s.name, err)
		}
		if got != string(want) {
			t.Errorf("%s %s %s:\ngot:\n%s\nwant (%s):\n%s", s.name, s.method, s.path, got, file, want)
		}
	}
}

// manyKeys is a user-data object of n keys.
func manyKeys(n int) string {
	var b strings.Builder
	b.WriteString("{")
	for i := range n {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, "%q: \"v\"", fmt.Sprintf("k%d", i))
	}
	b.WriteString("}")
	return b.String()
}
