package api

import (
	"net/http"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/web"
)

// public are the routes anyone may call, with or without credentials:
// probes, the version and the metrics (Prometheus and kubelets do not
// carry tokens), and Boskos' GET /, which its clients call to see that
// it is up.
var public = map[string]bool{
	"GET /healthz": true,
	"GET /readyz":  true,
	"GET /version": true,
	"GET /metrics": true,
	"GET /":        true,
	// The dashboard checks for itself: without credentials it answers
	// 200 with its sign-in page, as Boskos' health checks of / expect.
	"GET /{$}":       true,
	"GET /resources": true,
	"GET /static/":   true,
}

// roles is the least role each route needs when berth authenticates.
// Reads need a viewer: user data can hold what is not for everyone.
// TestEveryRouteHasARole keeps it complete; a route missing here needs
// an admin.
var roles = map[string]berth.Role{
	"GET /v1/status":                         berth.RoleViewer,
	"POST /v1/leases":                        berth.RoleClient,
	"GET /v1/leases/{id}":                    berth.RoleViewer,
	"POST /v1/leases/{id}/heartbeat":         berth.RoleClient,
	"POST /v1/leases/{id}/release":           berth.RoleClient,
	"GET /v1/leases/{id}/ready":              berth.RoleViewer,
	"GET /v1/requests/{id}":                  berth.RoleViewer,
	"DELETE /v1/requests/{id}":               berth.RoleClient,
	"GET /v1/pools":                          berth.RoleViewer,
	"GET /v1/pools/{type}":                   berth.RoleViewer,
	"GET /v1/resources":                      berth.RoleViewer,
	"POST /v1/resources":                     berth.RoleAdmin,
	"GET /v1/resources/{name}":               berth.RoleViewer,
	"GET /v1/events":                         berth.RoleViewer,
	"POST /v1/cleanings":                     berth.RoleJanitor,
	"POST /v1/cleanings/{id}/finish":         berth.RoleJanitor,
	"POST /v1/cleanings/{id}/fail":           berth.RoleJanitor,
	"POST /v1/resources/{name}/quarantine":   berth.RoleAdmin,
	"POST /v1/resources/{name}/unquarantine": berth.RoleAdmin,
	"POST /v1/resources/{name}/drain":        berth.RoleAdmin,
	"POST /v1/resources/{name}/undrain":      berth.RoleAdmin,
	"POST /v1/resources/{name}/retire":       berth.RoleAdmin,
	"POST /v1/pools/{type}/drain":            berth.RoleAdmin,
	"POST /v1/pools/{type}/undrain":          berth.RoleAdmin,

	// Boskos: a job acquires, updates and releases; a janitor also
	// resets holders that went quiet.
	"POST /acquire":        berth.RoleClient,
	"POST /acquirebystate": berth.RoleClient,
	"POST /release":        berth.RoleClient,
	"POST /update":         berth.RoleClient,
	"POST /reset":          berth.RoleJanitor,
	"GET /metric":          berth.RoleViewer,
}

// routeKey is r's method and the mux pattern that serves it ("" for a
// path no route serves).
func (s *Server) routeKey(r *http.Request) string {
	_, pattern := s.mux.Handler(r)
	// Kept on the request: one refused here never reaches the mux, and
	// its metrics and log line still name its operation.
	r.Pattern = pattern
	method := r.Method
	if method == http.MethodHead {
		method = http.MethodGet
	}
	return method + " " + pattern
}

// authorize finds r's principal and checks its role. Without an
// authenticator every caller may do everything, and the principal only
// records its address. A path or method that no route serves passes, to
// be answered 404 or 405 by the mux.
func (s *Server) authorize(r *http.Request) (berth.Principal, error) {
	anon := berth.Principal{Remote: r.RemoteAddr}
	if s.auth == nil {
		return anon, nil
	}
	key := s.routeKey(r)
	if public[key] {
		return anon, nil
	}
	need, ok := roles[key]
	if !ok {
		if _, known := ops[key]; !known {
			return anon, nil // 404 or 405, from the mux
		}
		need = berth.RoleAdmin
	}
	p, err := s.auth.Authenticate(r.Context(), r)
	if err != nil {
		return anon, err
	}
	if !p.Role.Allows(need) {
		return p, berth.Errorf(berth.EForbidden, "%s has the role %s; %s %s needs %s", p.Name, p.Role, r.Method, r.URL.Path, need)
	}
	return p, nil
}

// writeAuthError answers a request that authorize refused: as JSON on the
// native API, in plain text on the Boskos one. The Boskos client takes a
// 401 from /acquire for "in use" and would wait for ever, so the Boskos
// endpoints answer 403 for missing credentials too.
func (s *Server) writeAuthError(w http.ResponseWriter, r *http.Request, err error) {
	code := berth.ErrorCodeOf(err)
	if code == berth.EUnauthenticated {
		w.Header().Set("WWW-Authenticate", `Bearer realm="berth"`)
	}
	if apiOf(r.URL.Path) == "boskos" && (code == berth.EUnauthenticated || code == berth.EForbidden) {
		noteError(w, code)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.WriteHeader(http.StatusForbidden)
		_, _ = w.Write([]byte(err.Error() + "\n"))
		return
	}
	s.writeError(w, r, err)
}

// dashboard serves the web dashboard: the overview at / for a viewer (or
// anyone, without authentication), the sign-in page otherwise.
func (s *Server) dashboard(d *web.Server) {
	s.route("/{$}", methods{"GET": func(w http.ResponseWriter, r *http.Request) error {
		who, ok := s.viewer(r)
		if !ok {
			return d.SignIn(w)
		}
		return d.Overview(r.Context(), w, who)
	}})
	s.route("/resources", methods{"GET": func(w http.ResponseWriter, r *http.Request) error {
		who, ok := s.viewer(r)
		if !ok {
			return d.SignIn(w)
		}
		return d.Resources(r.Context(), w, r.URL.Query(), who)
	}})
	static := d.Static()
	s.route("/static/", methods{"GET": func(w http.ResponseWriter, r *http.Request) error {
		static.ServeHTTP(w, r)
		return nil
	}})
}

// viewer is who looks at a dashboard page, and whether they may: anyone
// without authentication, a viewer (or more) with it.
func (s *Server) viewer(r *http.Request) (berth.Principal, bool) {
	who, _ := berth.PrincipalFrom(r.Context())
	if s.auth == nil {
		return who, true
	}
	p, err := s.auth.Authenticate(r.Context(), r)
	if err != nil || !p.Role.Allows(berth.RoleViewer) {
		return who, false
	}
	return p, true
}
