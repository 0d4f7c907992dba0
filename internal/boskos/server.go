// Package boskos serves the Boskos wire API (shared/boskos-api.md) on top
// of berth's lease engine, so that jobs using the Boskos client, or
// boskosctl, work unchanged with only the URL changed. Every call maps onto
// the engine's leases: a Boskos owner holds a resource under a lease with a
// fencing token, /update is its heartbeat, and a holder that goes quiet for
// LeaseTTL loses the resource to its pool's cleaning policy, as Boskos'
// reaper would take it. Nothing here keeps state of its own.
package boskos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/lease"
	"github.com/berth-ci/berth/internal/store"
)

// Defaults for Options.
const (
	// DefaultLeaseTTL is how long a Boskos holder keeps a resource without
	// an update: Boskos' reaper resets resources not updated for 30
	// minutes.
	DefaultLeaseTTL = 30 * time.Minute
	// DefaultHold is how long a request id keeps its place in the queue
	// without a poll (Boskos: 30 s; its client polls every 3 s).
	DefaultHold = 30 * time.Second
	// maxBody bounds an /update body (user data).
	maxBody = 1 << 20
)

// Options configure a Server.
type Options struct {
	Engine   *lease.Engine
	Logger   *slog.Logger
	LeaseTTL time.Duration
	Hold     time.Duration
}

// Server answers the Boskos endpoints.
type Server struct {
	engine *lease.Engine
	log    *slog.Logger
	ttl    time.Duration
	hold   time.Duration
}

// New returns a Server.
func New(opts Options) *Server {
	s := &Server{engine: opts.Engine, log: opts.Logger, ttl: opts.LeaseTTL, hold: opts.Hold}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.ttl <= 0 {
		s.ttl = DefaultLeaseTTL
	}
	if s.hold <= 0 {
		s.hold = DefaultHold
	}
	return s
}

// Paths are the endpoints Boskos serves, which berth serves at its root.
var Paths = []string{"/acquire", "/acquirebystate", "/release", "/update", "/reset", "/metric"}

// Register adds the Boskos endpoints to mux.
func (s *Server) Register(mux *http.ServeMux) {
	mux.HandleFunc("/acquire", s.only(http.MethodPost, s.acquire))
	mux.HandleFunc("/acquirebystate", s.only(http.MethodPost, s.acquireByState))
	mux.HandleFunc("/release", s.only(http.MethodPost, s.release))
	mux.HandleFunc("/update", s.only(http.MethodPost, s.update))
	mux.HandleFunc("/reset", s.only(http.MethodPost, s.reset))
	mux.HandleFunc("/metric", s.only(http.MethodGet, s.metric))
}

// Resource is a resource as Boskos writes it.
type Resource struct {
	Type       string            `json:"type"`
	Name       string            `json:"name"`
	State      string            `json:"state"`
	Owner      string            `json:"owner"`
	LastUpdate time.Time         `json:"lastupdate"`
	UserData   map[string]string `json:"userdata"`
	// ExpirationDate is set on the resources of a dynamic pool with a
	// lifespan.
	ExpirationDate *time.Time `json:"expiration-date,omitempty"`
}

// Metric is the answer of /metric.
type Metric struct {
	Type    string         `json:"type"`
	Current map[string]int `json:"current"`
	Owners  map[string]int `json:"owner"`
}

// httpError is an answer with a status and Boskos' plain-text body.
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func fail(status int, format string, args ...any) error {
	return &httpError{status: status, msg: fmt.Sprintf(format, args...)}
}

// typeNotFound is the text the Boskos client looks for to tell an unknown
// type from an exhausted one (its ErrTypeNotFound).
func typeNotFound(typ string) string {
	// Cut only past the longest type name: the Boskos client matches this
	// text with the type it asked for.
	return fmt.Sprintf("resource type %q does not exist", store.Head(typ, 253))
}

func (s *Server) only(method string, h func(w http.ResponseWriter, r *http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != method {
			w.Header().Set("Allow", method)
			writeText(w, http.StatusMethodNotAllowed, fmt.Sprintf("Method %s: %s accepts only %s", r.Method, r.URL.Path, method))
			return
		}
		if err := h(w, r); err != nil {
			s.writeError(w, r, err)
		}
	}
}

func writeText(w http.ResponseWriter, status int, msg string) {
	// As net/http's Error writes it, which is what Boskos answers with.
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	fmt.Fprintln(w, msg)
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeText(w, http.StatusInternalServerError, "cannot encode the answer")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

// writeError maps err onto Boskos' statuses: the client treats 401 and 404
// on acquire as answers (in use, not found) and retries anything else.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		return
	}
	var he *httpError
	var be *berth.Error
	var se *lease.StoreError
	switch {
	case errors.As(err, &he):
		writeText(w, he.status, he.msg)
	case errors.As(err, &be):
		status := http.StatusInternalServerError
		switch be.Code {
		case berth.EInvalid:
			status = http.StatusBadRequest
		case berth.ENotFound, berth.EUnknownType, berth.EExhausted:
			status = http.StatusNotFound
		case berth.EConflict:
			status = http.StatusConflict
		case berth.EForbidden, berth.EUnauthenticated:
			// Not 401: the Boskos client reads that as "in use".
			status = http.StatusForbidden
		case berth.ELeaseLost:
			status = http.StatusGone
		case berth.EUnavailable:
			status = http.StatusServiceUnavailable
		}
		msg := be.Message
		if be.Field != "" {
			msg = boskosField(be.Field) + ": " + msg
		}
		if op := opName[r.URL.Path]; op != "" {
			msg = op + ": " + msg
		}
		writeText(w, status, msg)
	case errors.As(err, &se):
		s.log.Error("store failure", "method", r.Method, "path", r.URL.Path, "err", err)
		writeText(w, http.StatusServiceUnavailable, "store unavailable: "+oneLine(se.Err.Error()))
	default:
		s.log.Error("boskos request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		writeText(w, http.StatusInternalServerError, "internal error; see the server log")
	}
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// opName is the context Boskos puts before its errors, by endpoint.
var opName = map[string]string{
	"/acquire":        "Acquire failed",
	"/acquirebystate": "AcquireByState failed",
	"/release":        "Release failed",
	"/update":         "Update failed",
	"/reset":          "Reset failed",
	"/metric":         "Metric failed",
}

// boskosField names a field as the Boskos API spells it: its parameters
// are snake_case and lower case, berth's JSON camelCase.
func boskosField(f string) string {
	switch f {
	case "requestId":
		return "request_id"
	case "userData":
		return "userdata"
	}
	return f
}

// echo is client input quoted back in an error: cut short, and printable,
// so that a huge or binary parameter does not come back whole.
func echo(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return -1
		}
		return r
	}, strings.ToValidUTF8(s, ""))
	return store.Head(s, maxEcho)
}

// maxEcho bounds the client input an error quotes.
const maxEcho = 128

// required returns a 400 naming the missing parameters, in Boskos' words.
func required(r *http.Request, names ...string) error {
	q := r.URL.Query()
	var missing []string
	for _, n := range names {
		if q.Get(n) == "" {
			missing = append(missing, n)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return fail(http.StatusBadRequest, "%s: missing %s; all of %s must be set in the request",
		r.URL.Path, strings.Join(missing, ", "), strings.Join(names, ", "))
}

func (s *Server) acquire(w http.ResponseWriter, r *http.Request) error {
	if err := required(r, "type", "state", "dest", "owner"); err != nil {
		return err
	}
	q := r.URL.Query()
	typ, state, dest, owner, reqID := q.Get("type"), berth.State(q.Get("state")), berth.State(q.Get("dest")), q.Get("owner"), q.Get("request_id")
	if _, ok := s.engine.PoolPolicy(typ); !ok {
		return fail(http.StatusNotFound, "Acquire failed: %s", typeNotFound(typ))
	}
	if err := janitorWork(r.Context(), "Acquire failed", state, dest); err != nil {
		return err
	}
	var (
		l   *berth.Lease
		res *berth.Resource
	)
	if state == berth.StateFree && dest != berth.StateCleaning {
		// berth's own acquire, to busy or to the client's state: one
		// queue per type for everyone who leases from free, which hands
		// a released resource straight to the first waiter, so that its
		// next poll gets it.
		a, err := s.engine.Acquire(r.Context(), lease.AcquireParams{Type: typ, Owner: owner, RequestID: reqID, Hold: s.hold, LeaseTTL: s.ttl, To: dest})
		if err != nil {
			return acquireError(typ, err)
		}
		if a.Lease == nil {
			return fail(http.StatusNotFound, "Acquire failed: no available resource %s, try again later.", typ)
		}
		l, res = a.Lease, a.Resource
	} else {
		t, err := s.engine.Take(r.Context(), lease.TakeParams{Type: typ, From: state, To: dest, Owner: owner, RequestID: reqID,
			Hold: s.hold, LeaseTTL: s.ttl})
		if err != nil {
			return acquireError(typ, err)
		}
		l, res = t.Leases[0], t.Resources[0]
	}
	writeJSON(w, s.resource(res, l))
	return nil
}

func acquireError(typ string, err error) error {
	var be *berth.Error
	if errors.As(err, &be) {
		switch be.Code {
		case berth.EUnknownType:
			return fail(http.StatusNotFound, "Acquire failed: %s", typeNotFound(typ))
		case berth.EExhausted:
			return fail(http.StatusNotFound, "Acquire failed: no available resource %s, try again later.", typ)
		}
	}
	return err
}

func (s *Server) acquireByState(w http.ResponseWriter, r *http.Request) error {
	if err := required(r, "state", "dest", "owner", "names"); err != nil {
		return err
	}
	q := r.URL.Query()
	state, dest, owner := berth.State(q.Get("state")), berth.State(q.Get("dest")), q.Get("owner")
	if err := janitorWork(r.Context(), "AcquireByState failed", state, dest); err != nil {
		return err
	}
	names := strings.Split(q.Get("names"), ",")
	t, err := s.engine.Take(r.Context(), lease.TakeParams{Names: names, From: state, To: dest, Owner: owner, LeaseTTL: s.ttl})
	var be *berth.Error
	if errors.As(err, &be) && be.Code == berth.EExhausted {
		return fail(http.StatusNotFound, "AcquireByState: no available resource %s", echo(string(state)))
	}
	if err != nil {
		return err
	}
	out := make([]Resource, len(t.Resources))
	for i, res := range t.Resources {
		out[i] = s.resource(res, t.Leases[i])
	}
	writeJSON(w, out)
	return nil
}

// janitorWork refuses a client the leases that are a janitor's: taking a
// resource that is not free (a dirty one, to clean or to skip its
// cleaning) or leasing one to cleaning. Boskos has one endpoint for jobs
// and janitors alike; berth's roles tell them apart by what they take.
// Without authentication (no principal name), anyone may.
func janitorWork(ctx context.Context, op string, state, dest berth.State) error {
	p, ok := berth.PrincipalFrom(ctx)
	if !ok || p.Name == "" || p.Role.Allows(berth.RoleJanitor) || state == berth.StateFree && dest != berth.StateCleaning {
		return nil
	}
	return fail(http.StatusForbidden, "%s: %s has the role %s; taking %s resources to %s is a janitor's work", op, p.Name, p.Role, echo(string(state)), echo(string(dest)))
}

// held finds the lease by which owner holds the resource name: 404 if
// there is no such resource, 401 if someone else (or nobody) holds it.
func (s *Server) held(ctx context.Context, op, name, owner string) (*berth.Resource, error) {
	res, err := s.engine.Resource(ctx, name)
	var be *berth.Error
	if errors.As(err, &be) && be.Code == berth.ENotFound {
		return nil, fail(http.StatusNotFound, "%s: no resource %s", op, echo(name))
	}
	if err != nil {
		return nil, err
	}
	if res.Owner != owner || res.LeaseID == "" {
		return nil, fail(http.StatusUnauthorized, "%s: owner mismatch request by %s, currently owned by %s", op, echo(owner), res.Owner)
	}
	return res, nil
}

// lost answers a call whose lease ended between reading the resource and
// acting on it: it names who holds the resource now.
func (s *Server) lost(ctx context.Context, op, name, owner string, err error) error {
	var be *berth.Error
	if !errors.As(err, &be) || be.Code != berth.ELeaseLost {
		return err
	}
	res, gerr := s.engine.Resource(ctx, name)
	if gerr != nil || res.Owner == owner {
		return fail(http.StatusGone, "%s: %s", op, be.Message)
	}
	return fail(http.StatusUnauthorized, "%s: owner mismatch request by %s, currently owned by %s", op, echo(owner), res.Owner)
}

func (s *Server) release(w http.ResponseWriter, r *http.Request) error {
	if err := required(r, "name", "dest", "owner"); err != nil {
		return err
	}
	q := r.URL.Query()
	name, dest, owner := q.Get("name"), berth.State(q.Get("dest")), q.Get("owner")
	const op = "Release failed"
	res, err := s.held(r.Context(), op, name, owner)
	if err != nil {
		return err
	}
	if _, err := s.engine.ReleaseTo(r.Context(), lease.ReleaseToParams{ID: res.LeaseID, To: dest, Actor: owner}); err != nil {
		return s.lost(r.Context(), op, name, owner, err)
	}
	return nil
}

func (s *Server) update(w http.ResponseWriter, r *http.Request) error {
	if err := required(r, "name", "owner", "state"); err != nil {
		return err
	}
	q := r.URL.Query()
	name, owner, state := q.Get("name"), q.Get("owner"), q.Get("state")
	const op = "Update failed"
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fail(http.StatusRequestEntityTooLarge, "%s: user data is larger than %d bytes", op, maxBody)
		}
		return fail(http.StatusBadRequest, "%s: cannot read the body: %v", op, err)
	}
	if !utf8.Valid(body) {
		// JSON decoding would turn the bad bytes into U+FFFD, silently.
		return fail(http.StatusBadRequest, "%s: user data is not valid UTF-8", op)
	}
	var userData map[string]string
	if len(strings.TrimSpace(string(body))) > 0 {
		if err := json.Unmarshal(body, &userData); err != nil {
			return fail(http.StatusBadRequest, "%s: user data must be a JSON object of strings: %s", op, oneLine(err.Error()))
		}
	}
	res, err := s.held(r.Context(), op, name, owner)
	if err != nil {
		return err
	}
	if string(res.State) != state {
		return fail(http.StatusConflict, "%s: state mismatch - expected %s, current %s", op, echo(state), res.State)
	}
	if _, err := s.engine.Update(r.Context(), res.LeaseID, userData); err != nil {
		return s.lost(r.Context(), op, name, owner, err)
	}
	return nil
}

func (s *Server) reset(w http.ResponseWriter, r *http.Request) error {
	if err := required(r, "type", "state", "expire", "dest"); err != nil {
		return err
	}
	q := r.URL.Query()
	expire, err := time.ParseDuration(q.Get("expire"))
	if err != nil {
		return fail(http.StatusBadRequest, "Reset failed: expire: %s", oneLine(err.Error()))
	}
	out, err := s.engine.Reset(r.Context(), lease.ResetParams{Type: q.Get("type"), State: berth.State(q.Get("state")), Expire: expire,
		Dest: berth.State(q.Get("dest")), Actor: "boskos-reset"})
	if err != nil {
		return err
	}
	writeJSON(w, out)
	return nil
}

func (s *Server) metric(w http.ResponseWriter, r *http.Request) error {
	typ := r.URL.Query().Get("type")
	if typ == "" {
		return fail(http.StatusBadRequest, "type must be set in the request")
	}
	if _, ok := s.engine.PoolPolicy(typ); !ok {
		return fail(http.StatusNotFound, "Metric failed: %s", typeNotFound(typ))
	}
	rs, err := s.engine.Resources(r.Context(), &lease.ResourceListParams{Type: typ})
	if err != nil {
		return err
	}
	m := Metric{Type: typ, Current: map[string]int{}, Owners: map[string]int{}}
	for _, res := range rs {
		m.Current[string(res.State)]++
		m.Owners[res.Owner]++
	}
	writeJSON(w, m)
	return nil
}

// resource is res as Boskos writes it; l is the lease that holds it, if
// known.
func (s *Server) resource(res *berth.Resource, l *berth.Lease) Resource {
	ud := res.UserData
	if ud == nil {
		ud = map[string]string{}
	}
	out := Resource{Type: res.Type, Name: res.Name, State: string(res.State), Owner: res.Owner, LastUpdate: lease.LastUpdate(res, l), UserData: ud}
	if pool, ok := s.engine.PoolPolicy(res.Type); ok && pool.Dynamic != nil && pool.Dynamic.Lifespan > 0 && res.CreatedAt != nil {
		exp := res.CreatedAt.Add(time.Duration(pool.Dynamic.Lifespan))
		out.ExpirationDate = &exp
	}
	return out
}
