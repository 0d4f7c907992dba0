package lease

import (
	"context"
	"errors"
	"time"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/store"
)

// Pools lists the configured pools with their counts.
func (e *Engine) Pools(ctx context.Context) ([]*berth.Pool, error) {
	ps, err := e.store.PoolList(ctx)
	if err != nil {
		return nil, storeError(err)
	}
	return ps, nil
}

// Pool returns one pool by type.
func (e *Engine) Pool(ctx context.Context, typ string) (*berth.Pool, error) {
	ps, err := e.Pools(ctx)
	if err != nil {
		return nil, err
	}
	for _, p := range ps {
		if p.Type == typ {
			return p, nil
		}
	}
	return nil, &berth.Error{Code: berth.EUnknownType, Message: "no pool of type " + quote(typ)}
}

func quote(s string) string { return `"` + s + `"` }

// ResourceListParams filter Resources.
type ResourceListParams = store.ResourceListParams

// Resources lists resources, filtered.
func (e *Engine) Resources(ctx context.Context, p *ResourceListParams) ([]*berth.Resource, error) {
	rs, err := e.store.ResourceList(ctx, p)
	if err != nil {
		return nil, storeError(err)
	}
	return rs, nil
}

// Resource returns one resource by name.
func (e *Engine) Resource(ctx context.Context, name string) (*berth.Resource, error) {
	r, err := e.store.ResourceGet(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, berth.Errorf(berth.ENotFound, "no resource %q", name)
	}
	if err != nil {
		return nil, storeError(err)
	}
	return r, nil
}

// Lease returns one lease by id, active or ended.
func (e *Engine) Lease(ctx context.Context, id string) (*berth.Lease, error) {
	l, err := e.store.LeaseGet(ctx, id)
	if err != nil {
		return nil, e.leaseError(ctx, id, err)
	}
	if l.Status == berth.LeaseActive && !e.clock.Now().Before(l.ExpiresAt) {
		// Past its expiry the lease is lost, whether or not the reaper
		// has got to it yet; say so rather than "active".
		l.Status = berth.LeaseExpired
	}
	return l, nil
}

// EventListParams filter Events.
type EventListParams = store.EventListParams

// Events lists events. With wait > 0 and nothing to return yet, it blocks
// until an event is written through this engine (or, with EventRecheck,
// anywhere), wait passes, or ctx ends.
func (e *Engine) Events(ctx context.Context, p *EventListParams, wait time.Duration) ([]*berth.Event, error) {
	var timer, recheck <-chan time.Time
	if wait > 0 {
		t := e.clock.NewTimer(wait)
		defer t.Stop()
		timer = t.Chan()
		if e.recheck > 0 {
			tk := e.clock.NewTicker(e.recheck)
			defer tk.Stop()
			recheck = tk.Chan()
		}
	}
	for {
		changed := e.Changed() // before the read, so no write is missed
		evs, err := e.store.EventList(ctx, p)
		if err != nil {
			return nil, storeError(err)
		}
		if len(evs) > 0 || wait <= 0 {
			return evs, nil
		}
		select {
		case <-changed:
		case <-recheck:
		case <-timer:
			return evs, nil
		case <-e.draining:
			return evs, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Ready checks that the store answers.
func (e *Engine) Ready(ctx context.Context) error {
	return e.store.Ping(ctx)
}

// PoolCount is how many pools the engine serves: those of the config it
// was last given.
func (e *Engine) PoolCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.pools)
}
