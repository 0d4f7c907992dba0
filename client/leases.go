package client

import (
	"context"
	"fmt"
	"net/http"

	"github.com/berth-ci/berth"
)

// HeartbeatResult is the renewed lease and the resource it holds, so that
// the holder learns what happened to the resource meanwhile (its health,
// say).
type HeartbeatResult struct {
	Lease    *berth.Lease    `json:"lease"`
	Resource *berth.Resource `json:"resource"`
}

// Heartbeat extends lease leaseID by its TTL. A lease that has ended, or is
// past its expiry, cannot be renewed: the server answers code
// berth.ELeaseLost (berth.ENotFound if it never existed).
func (c *Client) Heartbeat(ctx context.Context, leaseID string) (*HeartbeatResult, error) {
	r := &request{method: http.MethodPost, path: "/v1/leases/" + seg(leaseID) + "/heartbeat"}
	var la leaseAnswer
	if err := c.call(ctx, r, &la); err != nil {
		return nil, err
	}
	if la.Lease == nil {
		return nil, fmt.Errorf("%s: the answer has no lease", r)
	}
	return &HeartbeatResult{Lease: la.Lease, Resource: la.Resource}, nil
}

// ReleaseParams say what the holder gives back.
type ReleaseParams struct {
	// To is where the resource should go: berth.ReleaseDirty (the default:
	// the pool's cleaning policy decides), berth.ReleaseFree (it is clean)
	// or berth.ReleaseBroken (quarantine it; Reason is then required).
	To     berth.ReleaseTarget
	Reason string
}

// Released is the ended lease and where its resource went.
type Released struct {
	Lease    *berth.Lease    `json:"lease"`
	Resource *berth.Resource `json:"resource"`
	// AlreadyReleased is set when the lease had been released before (by
	// an earlier call whose answer was lost, say); nothing changed.
	AlreadyReleased bool `json:"alreadyReleased"`
}

type releaseBody struct {
	To     berth.ReleaseTarget `json:"to,omitempty"`
	Reason string              `json:"reason,omitempty"`
}

// Release ends lease leaseID. Releasing a released lease succeeds with
// AlreadyReleased set, so a retried release is harmless; releasing an
// expired one fails with code berth.ELeaseLost.
func (c *Client) Release(ctx context.Context, leaseID string, p ReleaseParams) (*Released, error) {
	r := &request{method: http.MethodPost, path: "/v1/leases/" + seg(leaseID) + "/release",
		prepare: jsonBody(releaseBody(p))}
	var la leaseAnswer
	if err := c.call(ctx, r, &la); err != nil {
		return nil, err
	}
	if la.Lease == nil {
		return nil, fmt.Errorf("%s: the answer has no lease", r)
	}
	return &Released{Lease: la.Lease, Resource: la.Resource, AlreadyReleased: la.AlreadyReleased}, nil
}

// Lease returns lease id, active or ended.
func (c *Client) Lease(ctx context.Context, id string) (*berth.Lease, error) {
	r := &request{method: http.MethodGet, path: "/v1/leases/" + seg(id)}
	var out struct {
		Lease *berth.Lease `json:"lease"`
	}
	if err := c.call(ctx, r, &out); err != nil {
		return nil, err
	}
	if out.Lease == nil {
		return nil, fmt.Errorf("%s: the answer has no lease", r)
	}
	return out.Lease, nil
}

// Request returns waiting request id with its queue position. A request
// that has been served, withdrawn or has lapsed is not found.
func (c *Client) Request(ctx context.Context, id string) (*berth.Request, error) {
	r := &request{method: http.MethodGet, path: "/v1/requests/" + seg(id)}
	var out requestAnswer
	if err := c.call(ctx, r, &out); err != nil {
		return nil, err
	}
	if out.Request == nil {
		return nil, fmt.Errorf("%s: the answer has no request", r)
	}
	return out.Request, nil
}

// CancelRequest withdraws waiting request id from its queue. It fails with
// code berth.ENotFound if the request is not waiting (any more).
func (c *Client) CancelRequest(ctx context.Context, id string) error {
	return c.call(ctx, &request{method: http.MethodDelete, path: "/v1/requests/" + seg(id)}, nil)
}
