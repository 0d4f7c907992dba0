// Package api serves berth's HTTP interface: the native JSON API under /v1/
// and the operational endpoints at the root. Handlers decode and validate
// input, call the lease engine, and encode the answer; errors become HTTP
// statuses in exactly one place (errors.go).
package api

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"path"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/auth"
	"github.com/berth-ci/berth/internal/boskos"
	"github.com/berth-ci/berth/internal/buildinfo"
	"github.com/berth-ci/berth/internal/lease"
	"github.com/berth-ci/berth/internal/metrics"
	"github.com/berth-ci/berth/internal/web"
)

// Options configure a Server.
type Options struct {
	Engine *lease.Engine
	Logger *slog.Logger
	// SchemaVersion is reported by /version.
	SchemaVersion int
	// BodyReadTimeout bounds reading one request body; default
	// DefaultBodyReadTimeout.
	BodyReadTimeout time.Duration
	// Replica names this process in /v1/status.
	Replica string
	// Leader names the process that runs the background loops, for
	// /v1/status; nil means this one (a store only it uses).
	Leader func(ctx context.Context) (string, error)
	// Boskos, if set, serves the Boskos-compatible endpoints at the root.
	Boskos *boskos.Server
	// Metrics, if set, records every request; MetricsHandler, if set,
	// serves GET /metrics.
	Metrics        *metrics.Metrics
	MetricsHandler http.Handler
	// Auth, if set, authenticates every request but the public ones and
	// checks its role (see roles); nil serves everyone.
	Auth *auth.Authenticator
	// Web, if set, serves the dashboard at / and its assets at /static/.
	Web *web.Server
}

// Server is the HTTP handler for everything berth serves.
type Server struct {
	engine *lease.Engine
	log    *slog.Logger
	schema int
	bodyTO time.Duration
	mux    *http.ServeMux

	replica string
	leader  func(ctx context.Context) (string, error)

	metrics *metrics.Metrics
	auth    *auth.Authenticator
	// routes lists "METHOD pattern" for each route, for the test that
	// keeps ops complete.
	routes []string
}

// New returns the handler with every route registered.
func New(opts Options) *Server {
	s := &Server{engine: opts.Engine, log: opts.Logger, schema: opts.SchemaVersion, bodyTO: opts.BodyReadTimeout, mux: http.NewServeMux(),
		replica: opts.Replica, leader: opts.Leader, metrics: opts.Metrics, auth: opts.Auth}
	if s.leader == nil {
		s.leader = func(context.Context) (string, error) { return s.replica, nil }
	}
	if s.bodyTO <= 0 {
		s.bodyTO = DefaultBodyReadTimeout
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.route("/healthz", methods{"GET": s.healthz})
	s.route("/readyz", methods{"GET": s.readyz})
	s.route("/version", methods{"GET": s.version})
	if opts.Web != nil {
		s.dashboard(opts.Web)
	}
	if opts.MetricsHandler != nil {
		h := opts.MetricsHandler
		s.route("/metrics", methods{"GET": func(w http.ResponseWriter, r *http.Request) error { h.ServeHTTP(w, r); return nil }})
	}

	s.route("/v1/status", methods{"GET": s.status})
	s.route("/v1/leases", methods{"POST": s.acquire})
	s.route("/v1/leases/{id}", methods{"GET": s.getLease})
	s.route("/v1/leases/{id}/heartbeat", methods{"POST": s.heartbeat})
	s.route("/v1/leases/{id}/release", methods{"POST": s.release})
	s.route("/v1/leases/{id}/ready", methods{"GET": s.ready})
	s.route("/v1/requests/{id}", methods{"GET": s.getRequest, "DELETE": s.cancelRequest})
	s.route("/v1/pools", methods{"GET": s.listPools})
	s.route("/v1/pools/{type}", methods{"GET": s.getPool})
	s.route("/v1/resources", methods{"GET": s.listResources, "POST": s.addResource})
	s.route("/v1/resources/{name}", methods{"GET": s.getResource})
	s.route("/v1/events", methods{"GET": s.listEvents})
	s.lifecycleRoutes()
	if opts.Boskos != nil {
		opts.Boskos.Register(s.mux)
	}
	s.mux.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, berth.Errorf(berth.ENotFound, "no such endpoint: %s %s", r.Method, r.URL.Path))
	})
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if opts.Boskos != nil {
			// Boskos answers any other path, "/" included, with 200 and
			// nothing: its clients and health checks call GET / to learn
			// that it is up.
			w.WriteHeader(http.StatusOK)
			return
		}
		s.writeError(w, r, berth.Errorf(berth.ENotFound, "no such endpoint: %s %s", r.Method, r.URL.Path))
	})
	return s
}

// Routes lists "METHOD pattern" for every route of the native API, for
// the tests that visit each one.
func (s *Server) Routes() []string { return slices.Clone(s.routes) }

type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// methods maps HTTP methods to handlers for one path, so that a wrong
// method gets a JSON 405 with an Allow header rather than the mux's text.
type methods map[string]handlerFunc

func (s *Server) route(pattern string, m methods) {
	allowed := make([]string, 0, len(m))
	for k := range m {
		allowed = append(allowed, k)
	}
	if _, ok := m["GET"]; ok {
		allowed = append(allowed, "HEAD")
	}
	sort.Strings(allowed)
	for k := range m {
		s.routes = append(s.routes, k+" "+pattern)
	}
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		method := r.Method
		if method == http.MethodHead {
			method = http.MethodGet
		}
		h, ok := m[method]
		if !ok {
			w.Header().Set("Allow", strings.Join(allowed, ", "))
			s.writeError(w, r, berth.Errorf(berth.EMethod, "%s is not allowed on %s (allowed: %s)", r.Method, r.URL.Path, strings.Join(allowed, ", ")))
			return
		}
		if err := h(w, r); err != nil {
			s.writeError(w, r, err)
		}
	})
}

// ServeHTTP gives each request an id (X-Request-Id, in the answer and in
// every log line about it), records it in the metrics, and recovers from
// panics so that a bug answers 500 with the JSON error shape and a log
// line, not a dropped connection.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	api := apiOf(r.URL.Path)
	defer s.metrics.InFlight(api)()
	id := requestID(r)
	w.Header().Set(requestIDHeader, id)
	r = r.WithContext(context.WithValue(r.Context(), logKey{}, s.log.With("request_id", id)))
	rec := &recorder{ResponseWriter: w}
	w = rec
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			s.logFrom(r.Context()).Error("panic serving request", "method", r.Method, "path", r.URL.Path, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			noteError(w, berth.EInternal)
			writeJSON(w, http.StatusInternalServerError, errorBody{Error: berth.Errorf(berth.EInternal, "internal error; see the server log")})
		}
		s.observe(r, rec, api, start)
	}()
	if r.URL.Path != "/" && r.URL.Path != path.Clean(r.URL.Path) {
		// The mux would answer with an HTML redirect to the clean path;
		// an API client is better told plainly.
		s.writeError(w, r, berth.Errorf(berth.ENotFound, "no such endpoint: %s %s (paths have no empty or dot segments)", r.Method, r.URL.Path))
		return
	}
	p, err := s.authorize(r)
	// The principal travels with the request: the events it causes
	// record who and from where, and the engine checks that only a
	// lease's holder ends it.
	r = r.WithContext(berth.WithPrincipal(r.Context(), p))
	if err != nil {
		s.writeAuthError(w, r, err)
		return
	}
	s.mux.ServeHTTP(w, r)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"error":{"code":"internal","message":"cannot encode the answer"}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

// Readiness is the answer of GET /readyz.
type Readiness struct {
	Status string `json:"status"`
	// SchemaVersion is the store's, which is this binary's (else it is
	// not ready).
	SchemaVersion int `json:"schemaVersion"`
	// Pools counts the pools of the loaded config. berth serves nothing
	// before its config is loaded and reconciled with the store.
	Pools int `json:"pools"`
}

// readyz answers 200 while the store answers and is at this binary's
// schema version, else 503 naming what is wrong.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) error {
	if err := s.engine.Ready(r.Context()); err != nil {
		return &berth.Error{Code: berth.EUnavailable, Message: "not ready: " + strings.Join(strings.Fields(err.Error()), " ")}
	}
	writeJSON(w, http.StatusOK, Readiness{Status: "ready", SchemaVersion: s.schema, Pools: s.engine.PoolCount()})
	return nil
}

func (s *Server) version(w http.ResponseWriter, r *http.Request) error {
	i := buildinfo.Get()
	i.SchemaVersion = s.schema
	writeJSON(w, http.StatusOK, i)
	return nil
}

// Status is the answer of GET /v1/status.
type Status struct {
	// Replica is the process that answered; Leader the one that runs the
	// background loops (the reaper), "" while none does.
	Replica       string `json:"replica"`
	Leader        string `json:"leader"`
	SchemaVersion int    `json:"schemaVersion"`
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) error {
	if err := newQuery(r).err; err != nil {
		return err
	}
	leader, err := s.leader(r.Context())
	if err != nil {
		return &berth.Error{Code: berth.EUnavailable, Message: "cannot tell the leader: " + strings.Join(strings.Fields(err.Error()), " ")}
	}
	writeJSON(w, http.StatusOK, Status{Replica: s.replica, Leader: leader, SchemaVersion: s.schema})
	return nil
}

// AcquireRequest is the body of POST /v1/leases.
type AcquireRequest struct {
	Type     string            `json:"type"`
	Owner    string            `json:"owner"`
	Priority int               `json:"priority,omitempty"`
	Labels   map[string]string `json:"labels,omitempty"`
	// Wait is a Go duration string ("30s"); parsed here so that an error
	// can name the field.
	Wait      string `json:"wait,omitempty"`
	RequestID string `json:"requestId,omitempty"`
}

// LeaseResponse answers a successful acquire or heartbeat.
type LeaseResponse struct {
	Lease    *berth.Lease    `json:"lease"`
	Resource *berth.Resource `json:"resource"`
	// AlreadyReleased is set on a release that had happened before.
	AlreadyReleased bool `json:"alreadyReleased,omitempty"`
}

// RequestResponse answers an acquire that is waiting in the queue.
type RequestResponse struct {
	Request *berth.Request `json:"request"`
}

func (s *Server) acquire(w http.ResponseWriter, r *http.Request) error {
	var req AcquireRequest
	if err := decodeJSON(w, r, &req, false, s.bodyTO); err != nil {
		return err
	}
	var wait time.Duration
	if req.Wait != "" {
		d, err := time.ParseDuration(req.Wait)
		if err != nil {
			return berth.FieldErrorf("wait", "must be a duration such as \"30s\" or \"10m\", not %q", req.Wait)
		}
		wait = d
	}
	res, err := s.engine.Acquire(r.Context(), lease.AcquireParams{
		Type: req.Type, Owner: req.Owner, Priority: req.Priority, Selector: req.Labels,
		Wait: wait, RequestID: req.RequestID,
	})
	if err != nil {
		return err
	}
	if res.Lease == nil {
		writeJSON(w, http.StatusAccepted, RequestResponse{Request: res.Request})
		return nil
	}
	writeJSON(w, http.StatusOK, LeaseResponse{Lease: res.Lease, Resource: res.Resource})
	return nil
}

func (s *Server) getLease(w http.ResponseWriter, r *http.Request) error {
	if err := newQuery(r).err; err != nil {
		return err
	}
	l, err := s.engine.Lease(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"lease": l})
	return nil
}

func (s *Server) heartbeat(w http.ResponseWriter, r *http.Request) error {
	var empty struct{}
	if err := decodeJSON(w, r, &empty, true, s.bodyTO); err != nil {
		return err
	}
	res, err := s.engine.Heartbeat(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, LeaseResponse{Lease: res.Lease, Resource: res.Resource})
	return nil
}

// ReadyResponse answers GET /v1/leases/{id}/ready: whether the leased
// resource is Connected, with the lease and the resource as they are.
type ReadyResponse struct {
	Ready    bool            `json:"ready"`
	Lease    *berth.Lease    `json:"lease"`
	Resource *berth.Resource `json:"resource"`
}

// ready waits (?wait=60s, at most MaxPoll) for the resource a lease holds
// to be Connected.
func (s *Server) ready(w http.ResponseWriter, r *http.Request) error {
	q := newQuery(r, "wait")
	wait := q.duration("wait", lease.DefaultMaxPoll)
	if q.err != nil {
		return q.err
	}
	res, err := s.engine.WaitReady(r.Context(), r.PathValue("id"), wait)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, ReadyResponse{Ready: res.Ready, Lease: res.Lease, Resource: res.Resource})
	return nil
}

// ReleaseRequest is the (optional) body of POST /v1/leases/{id}/release.
type ReleaseRequest struct {
	To     berth.ReleaseTarget `json:"to,omitempty"`
	Reason string              `json:"reason,omitempty"`
}

func (s *Server) release(w http.ResponseWriter, r *http.Request) error {
	var req ReleaseRequest
	if err := decodeJSON(w, r, &req, true, s.bodyTO); err != nil {
		return err
	}
	res, err := s.engine.Release(r.Context(), lease.ReleaseParams{ID: r.PathValue("id"), To: req.To, Reason: req.Reason})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, LeaseResponse{Lease: res.Lease, Resource: res.Resource, AlreadyReleased: res.AlreadyReleased})
	return nil
}

func (s *Server) getRequest(w http.ResponseWriter, r *http.Request) error {
	if err := newQuery(r).err; err != nil {
		return err
	}
	req, err := s.engine.Request(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, RequestResponse{Request: req})
	return nil
}

func (s *Server) cancelRequest(w http.ResponseWriter, r *http.Request) error {
	if err := newQuery(r).err; err != nil {
		return err
	}
	if err := s.engine.CancelRequest(r.Context(), r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) listPools(w http.ResponseWriter, r *http.Request) error {
	if err := newQuery(r).err; err != nil {
		return err
	}
	ps, err := s.engine.Pools(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"pools": ps})
	return nil
}

func (s *Server) getPool(w http.ResponseWriter, r *http.Request) error {
	if err := newQuery(r).err; err != nil {
		return err
	}
	p, err := s.engine.Pool(r.Context(), r.PathValue("type"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"pool": p})
	return nil
}

const maxListLimit = 100000

func (s *Server) listResources(w http.ResponseWriter, r *http.Request) error {
	q := newQuery(r, "type", "state", "health", "limit")
	p := &lease.ResourceListParams{Type: q.name("type"), State: berth.State(q.name("state")), Limit: q.int("limit", 0, 0, maxListLimit)}
	switch h := berth.HealthStatus(q.str("health")); h {
	case "", berth.HealthConnected, berth.HealthDisconnected, berth.HealthUnknown:
		p.Health = h
	default:
		if q.err == nil {
			q.err = berth.FieldErrorf("health", "must be %q, %q or %q, not %q", berth.HealthConnected, berth.HealthDisconnected, berth.HealthUnknown, h)
		}
	}
	if q.err != nil {
		return q.err
	}
	if p.Limit > 0 {
		rs, err := s.engine.Resources(r.Context(), p)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, map[string]any{"resources": rs})
		return nil
	}
	return s.streamResources(w, r, p)
}

// resourcePage is how many resources an unlimited listing reads at a time.
const resourcePage = 500

// streamResources writes every resource that p selects a page at a time,
// so that listing 100,000 resources does not hold them all in memory
// (it took the server from 114 to 167 MiB). The first page is read before
// anything is written, so a store that fails at once gets a proper error
// answer; one that fails later aborts the connection, so that the client
// sees a broken answer, never a short list that looks complete.
func (s *Server) streamResources(w http.ResponseWriter, r *http.Request, p *lease.ResourceListParams) error {
	page := *p
	page.Limit = resourcePage
	rs, err := s.engine.Resources(r.Context(), &page)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	bw := bufio.NewWriterSize(w, 64<<10)
	_, _ = bw.WriteString(`{"resources":[`)
	first := true
	for {
		for _, res := range rs {
			if !first {
				_ = bw.WriteByte(',')
			}
			first = false
			b, err := json.Marshal(res)
			if err != nil {
				panic(http.ErrAbortHandler)
			}
			_, _ = bw.Write(b)
		}
		if len(rs) < resourcePage {
			break
		}
		last := rs[len(rs)-1]
		page.AfterType, page.AfterName = last.Type, last.Name
		if rs, err = s.engine.Resources(r.Context(), &page); err != nil {
			s.log.Warn("resource listing cut short", "err", err)
			panic(http.ErrAbortHandler)
		}
	}
	_, _ = bw.WriteString("]}\n")
	if err := bw.Flush(); err != nil {
		panic(http.ErrAbortHandler)
	}
	return nil
}

func (s *Server) getResource(w http.ResponseWriter, r *http.Request) error {
	if err := newQuery(r).err; err != nil {
		return err
	}
	res, err := s.engine.Resource(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"resource": res})
	return nil
}

// MaxEventWait caps a long poll on /v1/events.
const MaxEventWait = lease.DefaultMaxPoll

func (s *Server) listEvents(w http.ResponseWriter, r *http.Request) error {
	q := newQuery(r, "resource", "type", "kind", "actor", "since", "after", "limit", "wait", "order")
	p := &lease.EventListParams{
		Resource: q.name("resource"), Type: q.name("type"), Kind: berth.EventKind(q.name("kind")), Actor: q.str("actor"),
		Since: q.time("since"), AfterID: q.int64("after"), Limit: q.int("limit", 100, 1, 10000),
	}
	wait := q.duration("wait", MaxEventWait)
	if k := p.Kind; k != "" && !slices.Contains(berth.EventKinds, k) && q.err == nil {
		q.err = berth.FieldErrorf("kind", "must be one of %v, not %q", berth.EventKinds, k)
	}
	switch o := q.str("order"); o {
	case "", "asc":
	case "desc":
		p.Desc = true
	default:
		if q.err == nil {
			q.err = berth.FieldErrorf("order", "must be \"asc\" or \"desc\", not %q", o)
		}
	}
	if q.err != nil {
		return q.err
	}
	evs, err := s.engine.Events(r.Context(), p, wait)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"events": evs})
	return nil
}
