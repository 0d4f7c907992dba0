package client

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/berth-ci/berth"
)

// CleanClaimParams describe a janitor's claim of a dirty resource.
type CleanClaimParams struct {
	Type  string
	Owner string
	// Name, if set, claims that resource only.
	Name string
	// Wait is how long to wait for a resource to become dirty; 0 answers
	// at once.
	Wait time.Duration
	// RequestID makes the claim idempotent (a retry after a lost answer
	// gets the same lease); generated when empty.
	RequestID string
}

// Cleaning is a janitor's claim: the cleaning lease (heartbeat it as any
// lease), the resource to clean (its DeepClean says whether its holder
// reported it broken) and which attempt this is since it went dirty.
type Cleaning struct {
	Lease    *berth.Lease    `json:"lease"`
	Resource *berth.Resource `json:"resource"`
	Attempt  int             `json:"attempt"`
}

type cleanClaimBody struct {
	Type      string         `json:"type"`
	Owner     string         `json:"owner"`
	Name      string         `json:"name,omitempty"`
	Wait      berth.Duration `json:"wait,omitempty"`
	RequestID string         `json:"requestId"`
}

// CleanClaim leases a dirty resource of p.Type for cleaning, as an
// outside janitor does: the resource is cleaning until CleanFinish or
// CleanFail ends the lease, and goes back to dirty if the lease runs out.
// With nothing to clean within p.Wait it returns a *berth.Error with code
// berth.EExhausted.
func (c *Client) CleanClaim(ctx context.Context, p CleanClaimParams) (*Cleaning, error) {
	const what = "POST /v1/cleanings"
	if p.Wait < 0 {
		return nil, fmt.Errorf("%s: %w", what, berth.FieldErrorf("wait", "must not be negative, got %s", p.Wait))
	}
	if p.RequestID == "" {
		p.RequestID = berth.NewID()
	}
	deadline := time.Now().Add(p.Wait)
	r := &request{method: http.MethodPost, path: "/v1/cleanings", prepare: func() (any, time.Duration) {
		wait := max(time.Until(deadline), 0)
		return cleanClaimBody{Type: p.Type, Owner: p.Owner, Name: p.Name, Wait: berth.Duration(wait), RequestID: p.RequestID}, wait
	}}
	for {
		var out Cleaning
		err := c.call(ctx, r, &out)
		// A server answers a long poll after a minute at most: ask again
		// while the wait lasts.
		if berth.ErrorCodeOf(err) == berth.EExhausted && time.Now().Before(deadline) && ctx.Err() == nil {
			continue
		}
		if err != nil {
			return nil, err
		}
		if out.Lease == nil || out.Resource == nil {
			return nil, fmt.Errorf("%s: the answer has no lease", what)
		}
		return &out, nil
	}
}

// CleanEnd says how a cleaning ended.
type CleanEnd struct {
	// Message says what happened (required for a failure: an exit
	// status, say).
	Message string `json:"message,omitempty"`
	// Output is what the janitor printed; the server keeps its tail as
	// the record of this attempt.
	Output string `json:"output,omitempty"`
	// Quarantine, for a failure, says that no cleaning will help: the
	// resource is quarantined at once.
	Quarantine bool `json:"quarantine,omitempty"`
}

// CleanEnded is the ended cleaning lease and where its resource went
// (Resource is nil if it left its pool), with the event of the outcome.
type CleanEnded struct {
	Lease    *berth.Lease    `json:"lease"`
	Resource *berth.Resource `json:"resource"`
	Event    *berth.Event    `json:"event"`
	// AlreadyEnded is set when an earlier call (whose answer was lost)
	// ended it; nothing changed.
	AlreadyEnded bool `json:"alreadyEnded"`
}

// CleanFinish ends cleaning lease leaseID: the resource is clean, and
// free for the next job.
func (c *Client) CleanFinish(ctx context.Context, leaseID string, e CleanEnd) (*CleanEnded, error) {
	e.Quarantine = false
	return c.cleanEnd(ctx, leaseID, "finish", e)
}

// CleanFail ends cleaning lease leaseID as failed: the resource is dirty
// again, to be tried after a backoff, or quarantined once it has failed
// its pool's maxAttempts (or at once, with e.Quarantine).
func (c *Client) CleanFail(ctx context.Context, leaseID string, e CleanEnd) (*CleanEnded, error) {
	return c.cleanEnd(ctx, leaseID, "fail", e)
}

func (c *Client) cleanEnd(ctx context.Context, leaseID, how string, e CleanEnd) (*CleanEnded, error) {
	r := &request{method: http.MethodPost, path: "/v1/cleanings/" + seg(leaseID) + "/" + how, prepare: jsonBody(e)}
	var out CleanEnded
	if err := c.call(ctx, r, &out); err != nil {
		return nil, err
	}
	if out.Lease == nil {
		return nil, fmt.Errorf("%s: the answer has no lease", r)
	}
	return &out, nil
}

// AdminParams describe an admin operation.
type AdminParams struct {
	// Reason is required to quarantine, unquarantine and drain.
	Reason string `json:"reason,omitempty"`
	// Actor names who asks; the server says "admin" when it is empty.
	Actor string `json:"actor,omitempty"`
	// To, for Unquarantine: berth.StateDirty (cleaned first; the default
	// where the pool has a janitor) or berth.StateFree.
	To berth.State `json:"to,omitempty"`
}

// AdminResult is a resource after an admin operation.
type AdminResult struct {
	// Resource is nil when it left its pool (a retirement).
	Resource *berth.Resource `json:"resource"`
	// RevokedLease is the lease a quarantine took away, if any.
	RevokedLease *berth.Lease `json:"revokedLease"`
	// Unchanged is set when the resource already was as asked.
	Unchanged bool `json:"unchanged"`
}

func (c *Client) admin(ctx context.Context, name, op string, p AdminParams) (*AdminResult, error) {
	r := &request{method: http.MethodPost, path: "/v1/resources/" + seg(name) + "/" + op, prepare: jsonBody(p)}
	var out AdminResult
	if err := c.call(ctx, r, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Quarantine takes resource name out of service with p.Reason. A lease it
// has is revoked: its holder's next heartbeat fails with code
// berth.ELeaseLost.
func (c *Client) Quarantine(ctx context.Context, name string, p AdminParams) (*AdminResult, error) {
	return c.admin(ctx, name, "quarantine", p)
}

// Unquarantine returns a quarantined resource to service.
func (c *Client) Unquarantine(ctx context.Context, name string, p AdminParams) (*AdminResult, error) {
	return c.admin(ctx, name, "unquarantine", p)
}

// Drain stops resource name from being leased; a lease it has runs out as
// usual.
func (c *Client) Drain(ctx context.Context, name string, p AdminParams) (*AdminResult, error) {
	return c.admin(ctx, name, "drain", p)
}

// Undrain lets resource name be leased again.
func (c *Client) Undrain(ctx context.Context, name string, p AdminParams) (*AdminResult, error) {
	return c.admin(ctx, name, "undrain", p)
}

// Retire takes a resource added at runtime out of its pool: at once, or
// once its lease ends. The server refuses one the config declares.
func (c *Client) Retire(ctx context.Context, name string, p AdminParams) (*AdminResult, error) {
	return c.admin(ctx, name, "retire", p)
}

// PoolDrained is a pool after its drain or undrain.
type PoolDrained struct {
	Pool      *berth.Pool `json:"pool"`
	Unchanged bool        `json:"unchanged"`
}

// DrainPool stops pool typ from leasing anything (drain true) or lets it
// lease again.
func (c *Client) DrainPool(ctx context.Context, typ string, drain bool, p AdminParams) (*PoolDrained, error) {
	op := "undrain"
	if drain {
		op = "drain"
	}
	r := &request{method: http.MethodPost, path: "/v1/pools/" + seg(typ) + "/" + op, prepare: jsonBody(AdminParams{Reason: p.Reason, Actor: p.Actor})}
	var out PoolDrained
	if err := c.call(ctx, r, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// NewResource is a resource to add at runtime.
type NewResource struct {
	Name     string            `json:"name"`
	Type     string            `json:"type"`
	UserData map[string]string `json:"userData,omitempty"`
	Labels   map[string]string `json:"labels,omitempty"`
	Reason   string            `json:"reason,omitempty"`
	Actor    string            `json:"actor,omitempty"`
}

// AddResource adds a free resource to pool r.Type without a restart.
func (c *Client) AddResource(ctx context.Context, r NewResource) (*berth.Resource, error) {
	req := &request{method: http.MethodPost, path: "/v1/resources", prepare: jsonBody(r)}
	var out AdminResult
	if err := c.call(ctx, req, &out); err != nil {
		return nil, err
	}
	if out.Resource == nil {
		return nil, fmt.Errorf("%s: the answer has no resource", req)
	}
	return out.Resource, nil
}
