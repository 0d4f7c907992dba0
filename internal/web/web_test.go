package web_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/api"
	"github.com/berth-ci/berth/internal/auth"
	"github.com/berth-ci/berth/internal/boskos"
	"github.com/berth-ci/berth/internal/lease"
	"github.com/berth-ci/berth/internal/store"
	"github.com/berth-ci/berth/internal/store/sqlite"
	"github.com/berth-ci/berth/internal/web"
)

type rig struct {
	eng *lease.Engine
	st  store.Store
}

func newRig(t *testing.T) *rig {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "berth.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	eng := lease.New(lease.Options{Store: st})
	if _, err := eng.SyncPools(ctx, []lease.Pool{
		{Type: "vm", LeaseTTL: time.Minute, Resources: []store.ResourceSpec{{Name: "vm-1"}, {Name: "vm-2"}}},
		{Type: "dev", LeaseTTL: time.Minute, Resources: []store.ResourceSpec{{Name: "dev-1"}}},
	}, "test"); err != nil {
		t.Fatal(err)
	}
	return &rig{eng: eng, st: st}
}

func get(t *testing.T, h http.Handler, path, token string) (int, string, http.Header) {
	t.Helper()
	req := httptest.NewRequest("GET", "http://berth"+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	b, _ := io.ReadAll(w.Result().Body)
	return w.Code, string(b), w.Header()
}

// cell is the text of the overview's cell of pool typ and column col.
func cell(t *testing.T, page, typ, col string) string {
	t.Helper()
	_, row, ok := strings.Cut(page, `data-pool="`+typ+`"`)
	if !ok {
		t.Fatalf("no row for pool %s in:\n%s", typ, page)
	}
	row, _, _ = strings.Cut(row, "</tr>")
	_, c, ok := strings.Cut(row, `data-col="`+col+`">`)
	if !ok {
		t.Fatalf("no %s column in the row of %s", col, typ)
	}
	c, _, _ = strings.Cut(c, "<")
	return strings.TrimSpace(c)
}

// TestOverviewCountsPools: the overview at / shows each pool's counts as
// the store has them, HTML from the binary alone, and Boskos' health
// check of / still gets its 200.
func TestOverviewCountsPools(t *testing.T) {
	r := newRig(t)
	h := api.New(api.Options{Engine: r.eng, Web: web.New(r.eng), Boskos: boskos.New(boskos.Options{Engine: r.eng})})
	code, page, hdr := get(t, h, "/", "")
	if code != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), "text/html") || !strings.Contains(hdr.Get("Content-Security-Policy"), "default-src 'self'") {
		t.Fatalf("GET /: %d %v", code, hdr)
	}
	if cell(t, page, "vm", "total") != "2" || cell(t, page, "vm", "free") != "2" || cell(t, page, "vm", "busy") != "0" || cell(t, page, "dev", "total") != "1" {
		t.Fatalf("counts before an acquire:\n%s", page)
	}
	if _, err := r.eng.Acquire(context.Background(), lease.AcquireParams{Type: "vm", Owner: "job"}); err != nil {
		t.Fatal(err)
	}
	_, page, _ = get(t, h, "/", "")
	if cell(t, page, "vm", "busy") != "1" || cell(t, page, "vm", "free") != "1" || !strings.Contains(page, `<meter min="0" max="100" value="50">`) {
		t.Fatalf("counts after an acquire:\n%s", page)
	}
	if strings.Contains(page, "http://") || strings.Contains(page, "https://") {
		t.Errorf("the page loads something from elsewhere")
	}
	code, css, hdr := get(t, h, "/static/berth.css", "")
	if code != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), "text/css") || !strings.Contains(css, "table") {
		t.Fatalf("GET /static/berth.css: %d %s", code, hdr.Get("Content-Type"))
	}
	// Other paths outside /v1/ are still Boskos' empty 200s.
	if code, body, _ := get(t, h, "/no/such/thing", ""); code != 200 || body != "" {
		t.Fatalf("an unknown path: %d %q", code, body)
	}
}

// TestOverviewNeedsAViewer: with authentication, / shows nothing of the
// store without a viewer's credentials, yet answers 200.
func TestOverviewNeedsAViewer(t *testing.T) {
	r := newRig(t)
	tok, hash, err := auth.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.st.TokenCreate(context.Background(), &store.TokenCreateParams{Name: "dash", Role: berth.RoleViewer, Hash: hash}); err != nil {
		t.Fatal(err)
	}
	h := api.New(api.Options{Engine: r.eng, Web: web.New(r.eng), Auth: auth.New(auth.Options{Store: r.st})})
	for _, token := range []string{"", "berth_wrong"} {
		code, page, _ := get(t, h, "/", token)
		if code != 200 || strings.Contains(page, `data-pool=`) || !strings.Contains(page, "credentials") {
			t.Fatalf("GET / with token %q: %d\n%s", token, code, page)
		}
	}
	code, page, _ := get(t, h, "/", tok)
	if code != 200 || cell(t, page, "vm", "total") != "2" || !strings.Contains(page, "Signed in as dash") {
		t.Fatalf("GET / as a viewer: %d\n%s", code, page)
	}
}

// TestResourceTableFilters: the table lists every resource, and each
// filter narrows it; without a viewer's credentials it shows nothing.
func TestResourceTableFilters(t *testing.T) {
	r := newRig(t)
	if _, err := r.eng.Acquire(context.Background(), lease.AcquireParams{Type: "vm", Owner: "job-7"}); err != nil {
		t.Fatal(err)
	}
	h := api.New(api.Options{Engine: r.eng, Web: web.New(r.eng)})
	rows := func(query string) []string {
		t.Helper()
		code, page, _ := get(t, h, "/resources"+query, "")
		if code != 200 {
			t.Fatalf("GET /resources%s: %d", query, code)
		}
		var out []string
		for _, part := range strings.Split(page, `data-resource="`)[1:] {
			name, _, _ := strings.Cut(part, `"`)
			out = append(out, name)
		}
		return out
	}
	for q, want := range map[string]string{
		"":                     "dev-1 vm-1 vm-2",
		"?type=vm":             "vm-1 vm-2",
		"?state=busy":          "vm-1",
		"?owner=job-7":         "vm-1",
		"?q=DEV":               "dev-1",
		"?type=vm&state=free":  "vm-2",
		"?health=Disconnected": "",
		"?q=%3Cscript%3E":      "",
	} {
		if got := strings.Join(rows(q), " "); got != want {
			t.Errorf("GET /resources%s: %q, want %q", q, got, want)
		}
	}
	// What a filter echoes back is escaped.
	if _, page, _ := get(t, h, "/resources?q=%3Cscript%3E", ""); strings.Contains(page, "<script>") {
		t.Errorf("the text filter is echoed unescaped")
	}
	tok, hash, err := auth.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.st.TokenCreate(context.Background(), &store.TokenCreateParams{Name: "dash", Role: berth.RoleViewer, Hash: hash}); err != nil {
		t.Fatal(err)
	}
	ha := api.New(api.Options{Engine: r.eng, Web: web.New(r.eng), Auth: auth.New(auth.Options{Store: r.st})})
	if _, page, _ := get(t, ha, "/resources", ""); strings.Contains(page, "data-resource") {
		t.Errorf("the table without credentials shows resources")
	}
	if _, page, _ := get(t, ha, "/resources?type=vm", tok); !strings.Contains(page, `data-resource="vm-1"`) {
		t.Errorf("the table for a viewer shows no vm-1")
	}
}
