package api

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/berth-ci/berth/internal/boskos"
)

// TestEveryRouteHasAnOp: a route added without a name in ops would be
// counted as "other", where no alert rule looks.
func TestEveryRouteHasAnOp(t *testing.T) {
	s := New(Options{Boskos: boskos.New(boskos.Options{}), MetricsHandler: http.NotFoundHandler()})
	for _, r := range s.routes {
		if _, ok := ops[r]; !ok {
			t.Errorf("route %q has no name in ops", r)
		}
	}
	for path := range boskosPaths {
		method := http.MethodPost
		if path == "/metric" {
			method = http.MethodGet
		}
		req := httptest.NewRequest(method, path, nil)
		_, req.Pattern = s.mux.Handler(req)
		if op := opOf(req); op == "other" {
			t.Errorf("Boskos endpoint %s %s has no name in ops", method, path)
		}
	}
	if len(s.routes) < 20 {
		t.Fatalf("only %d routes seen: %v", len(s.routes), s.routes)
	}
}

func TestRequestIDIsKeptOnlyIfSane(t *testing.T) {
	for _, c := range []struct {
		in   string
		keep bool
	}{
		{"abc-123", true},
		{"", false},
		{"has space", false},
		{"nul\x00", false},
		{string(make([]byte, 200)), false},
		{"ünicode", false},
	} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set(requestIDHeader, c.in)
		got := requestID(r)
		if (got == c.in) != c.keep || got == "" {
			t.Errorf("requestID(%q) = %q, keep %v", c.in, got, c.keep)
		}
	}
}

// TestEveryRouteHasARole: a route left out of roles would need an admin,
// which is safe but surely not meant.
func TestEveryRouteHasARole(t *testing.T) {
	s := New(Options{Boskos: boskos.New(boskos.Options{}), MetricsHandler: http.NotFoundHandler()})
	for _, r := range s.routes {
		if _, ok := roles[r]; !ok && !public[r] {
			t.Errorf("route %q has no role in roles", r)
		}
	}
	for path := range boskosPaths {
		method := http.MethodPost
		if path == "/metric" {
			method = http.MethodGet
		}
		if _, ok := roles[method+" "+path]; !ok {
			t.Errorf("Boskos endpoint %s %s has no role", method, path)
		}
	}
}
