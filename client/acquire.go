package client

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/berth-ci/berth"
)

// AcquireParams describe one acquire.
type AcquireParams struct {
	// Type is the pool to lease from. Required.
	Type string
	// Owner names the holder (a job, a user). Required.
	Owner string
	// Priority orders waiters: higher first, then first come first served.
	Priority int
	// Labels, if set, restrict the resources to those carrying every label
	// with exactly that value.
	Labels map[string]string
	// Wait is the total time to wait for a resource when none is free. 0
	// fails at once with a *berth.Error of code berth.EExhausted.
	Wait time.Duration
	// RequestID keeps the caller's place in the queue across polls and
	// makes retries idempotent: a retried acquire returns the lease the
	// first one got instead of taking a second resource. Generated if
	// empty; always sent.
	RequestID string
	// OnQueued, if set, is called with the request and its queue position
	// each time the server answers that the request waits. It is called on
	// the goroutine that called Acquire and should return quickly.
	OnQueued func(*berth.Request)
}

// Acquired is a lease and the resource it holds.
type Acquired struct {
	Lease    *berth.Lease    `json:"lease"`
	Resource *berth.Resource `json:"resource"`
}

// acquireBody is the body of POST /v1/leases.
type acquireBody struct {
	Type      string            `json:"type"`
	Owner     string            `json:"owner"`
	Priority  int               `json:"priority,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
	Wait      berth.Duration    `json:"wait,omitempty"`
	RequestID string            `json:"requestId"`
}

// leaseAnswer answers an acquire, a heartbeat or a release.
type leaseAnswer struct {
	Lease           *berth.Lease    `json:"lease"`
	Resource        *berth.Resource `json:"resource"`
	AlreadyReleased bool            `json:"alreadyReleased"`
}

// requestAnswer answers an acquire that waits in the queue.
type requestAnswer struct {
	Request *berth.Request `json:"request"`
}

// Acquire leases a resource of p.Type.
//
// If none is free it waits up to p.Wait, long-polling the server with the
// time that is left and the same request id, so the server hands the
// resource over the moment it is released. When the wait is over it
// returns a *berth.Error with code berth.EExhausted that gives the last
// queue position. When it gives up (wait over or ctx ended) it withdraws
// its request from the queue, so that no resource is handed to a caller
// that has gone.
//
// Errors the server answers are *berth.Error, wrapped with the method and
// path of the call.
func (c *Client) Acquire(ctx context.Context, p AcquireParams) (*Acquired, error) {
	a, _, err := c.acquire(ctx, p)
	return a, err
}

// acquire is Acquire that also returns when the attempt that got the lease
// was sent: the lease expires no earlier than that plus its TTL.
func (c *Client) acquire(ctx context.Context, p AcquireParams) (*Acquired, time.Time, error) {
	const what = "POST /v1/leases"
	if p.Wait < 0 {
		return nil, time.Time{}, fmt.Errorf("%s: %w", what, berth.FieldErrorf("wait", "must not be negative, got %s", p.Wait))
	}
	if p.RequestID == "" {
		p.RequestID = berth.NewID()
	}
	deadline := time.Now().Add(p.Wait)
	var sent time.Time
	r := &request{method: http.MethodPost, path: "/v1/leases", prepare: func() (any, time.Duration) {
		sent = time.Now()
		wait := max(deadline.Sub(sent), 0)
		return acquireBody{
			Type: p.Type, Owner: p.Owner, Priority: p.Priority, Labels: p.Labels,
			Wait: berth.Duration(wait), RequestID: p.RequestID,
		}, wait
	}}
	var last *berth.Request
	for {
		resp, err := c.do(ctx, r)
		if err != nil {
			if ctx.Err() != nil || last != nil {
				// The request may be queued (or even served) on the
				// server: take it back.
				_, _ = c.abandon(ctx, p, true)
			}
			return nil, time.Time{}, err
		}
		a, req, err := decodeAcquire(r, resp)
		if err != nil {
			return nil, time.Time{}, err
		}
		if a != nil {
			return a, sent, nil
		}
		last = req
		if p.OnQueued != nil {
			p.OnQueued(req)
		}
		if err := ctx.Err(); err != nil {
			_, _ = c.abandon(ctx, p, true)
			return nil, time.Time{}, fmt.Errorf("%s: %w", what, err)
		}
		if !time.Now().Before(deadline) {
			if a, at := c.abandon(ctx, p, false); a != nil {
				return a, at, nil // handed a resource as we gave up
			}
			return nil, time.Time{}, fmt.Errorf("%s: %w", what, exhausted(p, last))
		}
		// A server holds a poll until it has news or the wait is over; one
		// that answers at once must not be asked again in a tight loop.
		if early := c.minBackoff - time.Since(sent); early > 0 {
			_ = sleep(ctx, min(early, time.Until(deadline))) // an ended ctx is seen by the next do
		}
	}
}

func exhausted(p AcquireParams, last *berth.Request) *berth.Error {
	if p.Wait == 0 {
		return berth.Errorf(berth.EExhausted, "no free resource of type %q (a waiting request would have been at position %d)", p.Type, last.Position)
	}
	return berth.Errorf(berth.EExhausted, "no resource of type %q became free within %s; request %s was at position %d", p.Type, p.Wait, p.RequestID, last.Position)
}

func decodeAcquire(r *request, resp *response) (*Acquired, *berth.Request, error) {
	switch resp.status {
	case http.StatusOK:
		var la leaseAnswer
		if err := decodeAnswer(r, resp, &la); err != nil {
			return nil, nil, err
		}
		if la.Lease == nil || la.Resource == nil {
			return nil, nil, fmt.Errorf("%s: the answer has no lease or no resource", r)
		}
		return &Acquired{Lease: la.Lease, Resource: la.Resource}, nil, nil
	case http.StatusAccepted:
		var ra requestAnswer
		if err := decodeAnswer(r, resp, &ra); err != nil {
			return nil, nil, err
		}
		if ra.Request == nil {
			return nil, nil, fmt.Errorf("%s: the answer has no request", r)
		}
		return nil, ra.Request, nil
	}
	return nil, nil, fmt.Errorf("%s: unexpected status %d", r, resp.status)
}

// abandon withdraws request p.RequestID, best effort, within its own short
// timeout that outlives ctx. If the request turns out to have been served
// already, it claims the lease: it returns it with the time the claim was
// sent, or with release set gives it straight back.
func (c *Client) abandon(ctx context.Context, p AcquireParams, release bool) (*Acquired, time.Time) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.abandonTimeout)
	defer cancel()
	err := c.CancelRequest(ctx, p.RequestID)
	if err == nil || berth.ErrorCodeOf(err) != berth.ENotFound {
		return nil, time.Time{} // withdrawn, or nothing more we can do
	}
	// Not waiting any more: either it was served (a lease carries its id)
	// or it lapsed. Asking again without waiting claims such a lease.
	var sent time.Time
	r := &request{method: http.MethodPost, path: "/v1/leases", prepare: func() (any, time.Duration) {
		sent = time.Now()
		return acquireBody{Type: p.Type, Owner: p.Owner, Priority: p.Priority, Labels: p.Labels, RequestID: p.RequestID}, 0
	}}
	resp, err := c.do(ctx, r)
	if err != nil {
		return nil, time.Time{}
	}
	a, _, err := decodeAcquire(r, resp)
	if err != nil {
		return nil, time.Time{}
	}
	if a == nil {
		_ = c.CancelRequest(ctx, p.RequestID) // queued anew by the ask itself
		return nil, time.Time{}
	}
	if release {
		_, _ = c.Release(ctx, a.Lease.ID, ReleaseParams{To: berth.ReleaseFree, Reason: "acquire abandoned before the lease was taken up"})
		return nil, time.Time{}
	}
	return a, sent
}
