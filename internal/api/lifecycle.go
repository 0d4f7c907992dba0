package api

import (
	"context"
	"net/http"
	"time"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/lease"
)

// The lifecycle routes (issue 5): outside janitors' cleanings, and the
// admin operations on resources and pools.
func (s *Server) lifecycleRoutes() {
	s.route("/v1/cleanings", methods{"POST": s.cleanClaim})
	s.route("/v1/cleanings/{id}/finish", methods{"POST": s.cleanFinish})
	s.route("/v1/cleanings/{id}/fail", methods{"POST": s.cleanFail})
	s.route("/v1/resources/{name}/quarantine", methods{"POST": s.adminResource(s.engine.Quarantine, false)})
	s.route("/v1/resources/{name}/unquarantine", methods{"POST": s.adminResource(s.engine.Unquarantine, true)})
	s.route("/v1/resources/{name}/drain", methods{"POST": s.adminResource(drain(s.engine.DrainResource, true), false)})
	s.route("/v1/resources/{name}/undrain", methods{"POST": s.adminResource(drain(s.engine.DrainResource, false), false)})
	s.route("/v1/resources/{name}/retire", methods{"POST": s.adminResource(s.engine.RetireResource, false)})
	s.route("/v1/pools/{type}/drain", methods{"POST": s.drainPool(true)})
	s.route("/v1/pools/{type}/undrain", methods{"POST": s.drainPool(false)})
}

// CleanClaimRequest is the body of POST /v1/cleanings.
type CleanClaimRequest struct {
	Type  string `json:"type"`
	Owner string `json:"owner"`
	// Name, if set, claims that resource only.
	Name      string `json:"name,omitempty"`
	Wait      string `json:"wait,omitempty"`
	RequestID string `json:"requestId,omitempty"`
}

// CleaningResponse answers a claim: the cleaning lease, the resource to
// clean, and which attempt this is.
type CleaningResponse struct {
	Lease    *berth.Lease    `json:"lease"`
	Resource *berth.Resource `json:"resource"`
	Attempt  int             `json:"attempt"`
}

func (s *Server) cleanClaim(w http.ResponseWriter, r *http.Request) error {
	var req CleanClaimRequest
	if err := decodeJSON(w, r, &req, false, s.bodyTO); err != nil {
		return err
	}
	wait, err := parseWait(req.Wait)
	if err != nil {
		return err
	}
	p := lease.CleanClaimParams{Type: req.Type, Owner: req.Owner, Name: req.Name, RequestID: req.RequestID, Wait: wait}
	res, err := s.engine.CleanClaim(r.Context(), p)
	if err != nil {
		return err
	}
	if res.Lease == nil {
		return lease.NothingToClean(p, res.NextAt)
	}
	writeJSON(w, http.StatusOK, CleaningResponse{Lease: res.Lease, Resource: res.Resource, Attempt: res.Attempt})
	return nil
}

// parseWait reads a "wait" field: a Go duration string.
func parseWait(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, berth.FieldErrorf("wait", "must be a duration such as \"30s\" or \"10m\", not %q", s)
	}
	return d, nil
}

// CleanEndRequest is the body of POST /v1/cleanings/{id}/finish and
// /fail: what happened, and what the janitor printed (its tail is kept).
type CleanEndRequest struct {
	Message string `json:"message,omitempty"`
	Output  string `json:"output,omitempty"`
	// Quarantine, on /fail, says no cleaning will help: the resource is
	// quarantined at once.
	Quarantine bool `json:"quarantine,omitempty"`
}

// CleanEndResponse answers the end of a cleaning.
type CleanEndResponse struct {
	Lease    *berth.Lease    `json:"lease"`
	Resource *berth.Resource `json:"resource"`
	Event    *berth.Event    `json:"event,omitempty"`
	// AlreadyEnded is set on a retry of an end that had happened.
	AlreadyEnded bool `json:"alreadyEnded,omitempty"`
}

func (s *Server) cleanFinish(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Message string `json:"message,omitempty"`
		Output  string `json:"output,omitempty"`
	}
	if err := decodeJSON(w, r, &req, true, s.bodyTO); err != nil {
		return err
	}
	return s.cleanEnd(w, r, lease.CleanEndParams{ID: r.PathValue("id"), OK: true, Message: req.Message, Output: req.Output})
}

func (s *Server) cleanFail(w http.ResponseWriter, r *http.Request) error {
	var req CleanEndRequest
	if err := decodeJSON(w, r, &req, false, s.bodyTO); err != nil {
		return err
	}
	if req.Message == "" {
		return berth.FieldErrorf("message", "is required: say what went wrong")
	}
	return s.cleanEnd(w, r, lease.CleanEndParams{ID: r.PathValue("id"), Message: req.Message, Output: req.Output, Quarantine: req.Quarantine})
}

func (s *Server) cleanEnd(w http.ResponseWriter, r *http.Request, p lease.CleanEndParams) error {
	res, err := s.engine.CleanEnd(r.Context(), p)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, CleanEndResponse{Lease: res.Lease, Resource: res.Resource, Event: res.Event, AlreadyEnded: res.AlreadyEnded})
	return nil
}

// AdminRequest is the body of the admin operations on a resource or a
// pool. Actor names who asks (default "admin"), until tokens name them.
type AdminRequest struct {
	Reason string `json:"reason,omitempty"`
	Actor  string `json:"actor,omitempty"`
	// To, on unquarantine: "dirty" (cleaned first; the default where the
	// pool has a janitor) or "free".
	To berth.State `json:"to,omitempty"`
}

// AdminResponse answers an admin operation on a resource.
type AdminResponse struct {
	// Resource is null when the resource left its pool (a retirement).
	Resource *berth.Resource `json:"resource"`
	// RevokedLease is the lease a quarantine took away.
	RevokedLease *berth.Lease `json:"revokedLease,omitempty"`
	// Unchanged is set when the resource already was as asked.
	Unchanged bool `json:"unchanged,omitempty"`
}

func drain(fn func(ctx context.Context, p lease.AdminParams) (*lease.ResourceChange, error), on bool) func(ctx context.Context, p lease.AdminParams) (*lease.ResourceChange, error) {
	return func(ctx context.Context, p lease.AdminParams) (*lease.ResourceChange, error) {
		p.Drain = on
		return fn(ctx, p)
	}
}

// adminBody is the body of the admin operations other than unquarantine,
// which alone takes "to".
type adminBody struct {
	Reason string `json:"reason,omitempty"`
	Actor  string `json:"actor,omitempty"`
}

func (s *Server) adminResource(fn func(ctx context.Context, p lease.AdminParams) (*lease.ResourceChange, error), takesTo bool) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		var req AdminRequest
		if takesTo {
			if err := decodeJSON(w, r, &req, true, s.bodyTO); err != nil {
				return err
			}
		} else {
			var b adminBody
			if err := decodeJSON(w, r, &b, true, s.bodyTO); err != nil {
				return err
			}
			req.Reason, req.Actor = b.Reason, b.Actor
		}
		res, err := fn(r.Context(), lease.AdminParams{Name: r.PathValue("name"), Reason: req.Reason, Actor: req.Actor, To: req.To})
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, AdminResponse{Resource: res.Resource, RevokedLease: res.Revoked, Unchanged: res.Unchanged})
		return nil
	}
}

// PoolDrainResponse answers a pool's drain or undrain.
type PoolDrainResponse struct {
	Pool      *berth.Pool `json:"pool"`
	Unchanged bool        `json:"unchanged,omitempty"`
}

func (s *Server) drainPool(on bool) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		var req adminBody
		if err := decodeJSON(w, r, &req, true, s.bodyTO); err != nil {
			return err
		}
		res, err := s.engine.DrainPool(r.Context(), lease.AdminParams{Type: r.PathValue("type"), Drain: on, Reason: req.Reason, Actor: req.Actor})
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, PoolDrainResponse{Pool: res.Pool, Unchanged: res.Unchanged})
		return nil
	}
}

// AddResourceRequest is the body of POST /v1/resources.
type AddResourceRequest struct {
	Name     string            `json:"name"`
	Type     string            `json:"type"`
	UserData map[string]string `json:"userData,omitempty"`
	Labels   map[string]string `json:"labels,omitempty"`
	Reason   string            `json:"reason,omitempty"`
	Actor    string            `json:"actor,omitempty"`
}

func (s *Server) addResource(w http.ResponseWriter, r *http.Request) error {
	var req AddResourceRequest
	if err := decodeJSON(w, r, &req, false, s.bodyTO); err != nil {
		return err
	}
	res, err := s.engine.AddResource(r.Context(), lease.AddParams{Type: req.Type, Name: req.Name, UserData: req.UserData, Labels: req.Labels,
		Reason: req.Reason, Actor: req.Actor})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, AdminResponse{Resource: res.Resource})
	return nil
}
