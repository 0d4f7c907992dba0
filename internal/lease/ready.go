package lease

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/store"
)

// ReadyResult says whether the resource a lease holds is Connected.
type ReadyResult struct {
	Ready    bool
	Lease    *berth.Lease
	Resource *berth.Resource
}

// WaitReady waits until the resource that lease id holds is Connected, for
// up to wait (capped at MaxPoll; the caller polls again for longer), and
// answers with the lease and the resource as they are then. It asks for
// the resource to be probed at once, without its backoff (see
// Options.ProbeNow). A lease that has ended is an ELeaseLost error; a
// resource whose pool has no probe is an EInvalid one, since nothing would
// ever make it Connected.
func (e *Engine) WaitReady(ctx context.Context, id string, wait time.Duration) (*ReadyResult, error) {
	if wait < 0 {
		return nil, berth.FieldErrorf("wait", "must not be negative")
	}
	deadline := e.clock.Now().Add(min(wait, e.maxPoll))
	asked := false
	for {
		changed := e.Changed()
		l, err := e.store.LeaseGet(ctx, id)
		if err != nil {
			return nil, e.leaseError(ctx, id, err)
		}
		now := e.clock.Now()
		if l.Status != berth.LeaseActive || !l.ExpiresAt.After(now) {
			return nil, e.leaseError(ctx, id, store.ErrLeaseEnded)
		}
		r, err := e.store.ResourceGet(ctx, l.Resource)
		if errors.Is(err, store.ErrNotFound) {
			return nil, berth.Errorf(berth.ENotFound, "resource %q of lease %q no longer exists", l.Resource, id)
		}
		if err != nil {
			return nil, storeError(err)
		}
		if r.Health.Status == berth.HealthConnected {
			return &ReadyResult{Ready: true, Lease: l, Resource: r}, nil
		}
		if pool, ok := e.pool(r.Type); !ok || pool.Probe == "" {
			return nil, &berth.Error{Code: berth.EInvalid, Message: fmt.Sprintf(
				"resource %q is in pool %q, which has no probe: berth cannot tell when it is ready", r.Name, r.Type)}
		}
		if !asked && e.probeNow != nil {
			e.probeNow(r.Name)
			asked = true
		}
		left := deadline.Sub(now)
		if left <= 0 {
			return &ReadyResult{Lease: l, Resource: r}, nil
		}
		if e.recheck > 0 {
			// Probe results written by the leader on another replica
			// are not announced here.
			left = min(left, e.recheck)
		}
		timer := e.clock.NewTimer(left)
		select {
		case <-changed:
		case <-timer.Chan():
		case <-e.draining:
			timer.Stop()
			return &ReadyResult{Lease: l, Resource: r}, nil
		case <-ctx.Done():
			timer.Stop()
			return nil, ctx.Err()
		}
		timer.Stop()
	}
}
