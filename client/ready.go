package client

import (
	"context"
	"net/http"
	"net/url"
	"time"

	"github.com/berth-ci/berth"
)

// maxReadyPoll is the longest one GET /v1/leases/{id}/ready may be held;
// the server caps it at the same.
const maxReadyPoll = 60 * time.Second

// WaitReady waits until the resource that lease leaseID holds is
// Connected, and returns it. It waits until ctx ends: give ctx a deadline.
// The server asks for the resource to be probed at once, so that a job
// that has just created or reset a cluster does not wait out a backoff.
// A lease that has ended is a *berth.Error with code berth.ELeaseLost; a
// resource whose pool has no probe, one with code berth.EInvalid.
func (c *Client) WaitReady(ctx context.Context, leaseID string) (*berth.Resource, error) {
	for {
		wait := maxReadyPoll
		if dl, ok := ctx.Deadline(); ok {
			// Ask the server to answer a little before the deadline, so
			// that the answer, and with it the resource's health, arrives
			// in time to be returned; close to it, ask for an answer now.
			left := time.Until(dl)
			wait = min(wait, left-min(left/10, time.Second))
			if left < 20*time.Millisecond {
				wait = 0
			}
		}
		q := url.Values{"wait": {wait.Truncate(time.Millisecond).String()}}
		r := &request{method: http.MethodGet, path: "/v1/leases/" + seg(leaseID) + "/ready", query: q,
			prepare: func() (any, time.Duration) { return nil, wait }}
		var out struct {
			Ready    bool            `json:"ready"`
			Lease    *berth.Lease    `json:"lease"`
			Resource *berth.Resource `json:"resource"`
		}
		if err := c.call(ctx, r, &out); err != nil {
			return nil, err
		}
		if out.Ready {
			return out.Resource, nil
		}
		if err := ctx.Err(); err != nil {
			return out.Resource, err
		}
		if wait == 0 {
			// The deadline has come: this was the answer as it is now.
			return out.Resource, context.DeadlineExceeded
		}
	}
}

// Ready says, without waiting, whether the resource that lease leaseID
// holds is Connected, and returns the resource as it is.
func (c *Client) Ready(ctx context.Context, leaseID string) (bool, *berth.Resource, error) {
	r := &request{method: http.MethodGet, path: "/v1/leases/" + seg(leaseID) + "/ready"}
	var out struct {
		Ready    bool            `json:"ready"`
		Resource *berth.Resource `json:"resource"`
	}
	if err := c.call(ctx, r, &out); err != nil {
		return false, nil, err
	}
	return out.Ready, out.Resource, nil
}
