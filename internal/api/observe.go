package api

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/berth-ci/berth"
)

// ops names each route and method for metrics: bounded, readable label
// values that alert rules can name. TestEveryRouteHasAnOp keeps it
// complete.
var ops = map[string]string{
	"GET /healthz":   "healthz",
	"GET /readyz":    "readyz",
	"GET /version":   "version",
	"GET /metrics":   "metrics",
	"GET /{$}":       "dashboard",
	"GET /resources": "dashboard_resources",
	"GET /static/":   "static",

	"GET /v1/status":                         "status",
	"POST /v1/leases":                        "acquire",
	"GET /v1/leases/{id}":                    "get_lease",
	"POST /v1/leases/{id}/heartbeat":         "heartbeat",
	"POST /v1/leases/{id}/release":           "release",
	"GET /v1/leases/{id}/ready":              "lease_ready",
	"GET /v1/requests/{id}":                  "get_request",
	"DELETE /v1/requests/{id}":               "cancel_request",
	"GET /v1/pools":                          "list_pools",
	"GET /v1/pools/{type}":                   "get_pool",
	"GET /v1/resources":                      "list_resources",
	"POST /v1/resources":                     "add_resource",
	"GET /v1/resources/{name}":               "get_resource",
	"GET /v1/events":                         "list_events",
	"POST /v1/cleanings":                     "clean_claim",
	"POST /v1/cleanings/{id}/finish":         "clean_finish",
	"POST /v1/cleanings/{id}/fail":           "clean_fail",
	"POST /v1/resources/{name}/quarantine":   "quarantine",
	"POST /v1/resources/{name}/unquarantine": "unquarantine",
	"POST /v1/resources/{name}/drain":        "drain_resource",
	"POST /v1/resources/{name}/undrain":      "undrain_resource",
	"POST /v1/resources/{name}/retire":       "retire_resource",
	"POST /v1/pools/{type}/drain":            "drain_pool",
	"POST /v1/pools/{type}/undrain":          "undrain_pool",

	// The Boskos-compatible endpoints, as Boskos names its handlers.
	"POST /acquire":        "acquire",
	"POST /acquirebystate": "acquire_by_state",
	"POST /release":        "release",
	"POST /update":         "update",
	"POST /reset":          "reset",
	"GET /metric":          "metric",
}

// boskosPaths are the paths of the Boskos-compatible endpoints.
var boskosPaths = map[string]bool{"/acquire": true, "/acquirebystate": true, "/release": true, "/update": true, "/reset": true, "/metric": true}

// apiOf is the api label of a request: boskos for the Boskos-compatible
// endpoints, native for everything else.
func apiOf(path string) string {
	if boskosPaths[path] {
		return "boskos"
	}
	return "native"
}

// opOf names what r asked for, once the mux has routed it: "other" for a
// path or method no route serves.
func opOf(r *http.Request) string {
	method := r.Method
	if method == http.MethodHead {
		method = http.MethodGet
	}
	if op, ok := ops[method+" "+r.Pattern]; ok {
		return op
	}
	return "other"
}

// recorder remembers the status an answer had and, for an error, berth's
// code for it, for the metrics and the request log.
type recorder struct {
	http.ResponseWriter
	status  int
	errCode berth.ErrorCode
}

func (r *recorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
	r.ResponseWriter.WriteHeader(status)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection (read
// deadlines, flushes) through the recorder.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// noteError records berth's code for the error w answers with.
func noteError(w http.ResponseWriter, code berth.ErrorCode) {
	if rec, ok := w.(*recorder); ok {
		rec.errCode = code
	}
}

// errorCodeOf is the error label of an answer: berth's code where the
// handler said it, else one read off the status (the Boskos endpoints
// answer in plain text).
func errorCodeOf(status int, code berth.ErrorCode) string {
	switch {
	case code != "":
		return string(code)
	case status < 400:
		return ""
	case status == http.StatusBadRequest:
		return string(berth.EInvalid)
	case status == http.StatusUnauthorized:
		return string(berth.EUnauthenticated)
	case status == http.StatusForbidden:
		return string(berth.EForbidden)
	case status == http.StatusNotFound:
		return string(berth.ENotFound)
	case status == http.StatusMethodNotAllowed:
		return string(berth.EMethod)
	case status == http.StatusConflict:
		return string(berth.EConflict)
	case status == http.StatusGone:
		return string(berth.ELeaseLost)
	case status == http.StatusRequestEntityTooLarge:
		return string(berth.ETooLarge)
	case status == http.StatusServiceUnavailable:
		return string(berth.EUnavailable)
	case status < 500:
		return string(berth.EInvalid)
	}
	return string(berth.EInternal)
}

// requestIDHeader carries a request's id: a client (or a proxy in front
// of berth) may set it, and berth always answers with it.
const requestIDHeader = "X-Request-Id"

// requestID returns the id r came with, if it is a sane one, else a new
// one. A client's id is kept so that its log and berth's can be joined;
// one that is too long or not printable is replaced, not logged.
func requestID(r *http.Request) string {
	id := r.Header.Get(requestIDHeader)
	if id == "" || len(id) > 128 || strings.IndexFunc(id, func(c rune) bool { return c <= ' ' || c > '~' }) >= 0 {
		return berth.NewID()
	}
	return id
}

type logKey struct{}

// logFrom returns the logger of r's context: the server's, with the
// request id.
func (s *Server) logFrom(ctx context.Context) *slog.Logger {
	if l, ok := ctx.Value(logKey{}).(*slog.Logger); ok {
		return l
	}
	return s.log
}

// observe records one answered request: metrics, and a log line at debug
// level (at warn for a server error, which writeError has logged with
// its cause already).
func (s *Server) observe(r *http.Request, rec *recorder, api string, start time.Time) {
	d := time.Since(start)
	status := rec.status
	if status == 0 {
		status = http.StatusOK // a handler that wrote nothing
	}
	op := opOf(r)
	code := errorCodeOf(status, rec.errCode)
	s.metrics.Request(api, op, status, code, d)
	log := s.logFrom(r.Context())
	if log.Enabled(r.Context(), slog.LevelDebug) {
		log.Debug("request", "method", r.Method, "path", r.URL.Path, "op", op, "status", status, "error", code,
			"duration", d, "remote", r.RemoteAddr)
	}
}
