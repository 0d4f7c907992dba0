package client

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/berth-ci/berth"
)

// HoldOptions tune Hold.
type HoldOptions struct {
	// HeartbeatInterval is the time between heartbeats. Default: the
	// lease's TTL / 3, so that two heartbeats in a row can fail without
	// losing the lease, but at most MaxDefaultHeartbeat, so that a lease
	// taken away (released by an operator, say) is noticed within seconds
	// even on a pool with a long TTL.
	HeartbeatInterval time.Duration
}

// MaxDefaultHeartbeat caps the default HoldOptions.HeartbeatInterval.
const MaxDefaultHeartbeat = 10 * time.Second

// Handle is a held lease kept alive by heartbeats in the background. Its
// methods are safe for concurrent use. Always end it with Release or Close,
// which stop the heartbeats.
type Handle struct {
	c        *Client
	id       string
	interval time.Duration

	mu       sync.Mutex
	lease    *berth.Lease
	resource *berth.Resource
	lostErr  error
	released bool

	lost chan error // buffered(1): the heartbeat goroutine never blocks on it
	// health is signalled (buffered(1), never blocking) when a heartbeat
	// finds the resource's health status changed.
	health   chan struct{}
	cancel   context.CancelFunc
	done     chan struct{} // closed when the heartbeat goroutine has returned
	stopOnce sync.Once
}

// Hold acquires a resource as Acquire does and keeps the lease alive in the
// background until Release or Close, or until the lease is lost (reported
// on Lost).
//
// ctx bounds the acquire only: the heartbeats go on after ctx ends (they
// keep its values), because a job being cancelled still needs its lease
// until it has released it. Stop them with Release or Close.
func (c *Client) Hold(ctx context.Context, p AcquireParams, o HoldOptions) (*Handle, error) {
	if o.HeartbeatInterval < 0 {
		return nil, berth.FieldErrorf("HeartbeatInterval", "must not be negative, got %s", o.HeartbeatInterval)
	}
	a, sent, err := c.acquire(ctx, p)
	if err != nil {
		return nil, err
	}
	ttl := leaseTTL(a.Lease)
	interval := o.HeartbeatInterval
	if interval == 0 {
		interval = min(max(ttl/3, time.Millisecond), MaxDefaultHeartbeat)
	}
	hctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	h := &Handle{
		c: c, id: a.Lease.ID, interval: interval,
		lease: a.Lease, resource: a.Resource,
		lost: make(chan error, 1), health: make(chan struct{}, 1), cancel: cancel, done: make(chan struct{}),
	}
	go h.heartbeat(hctx, sent.Add(ttl))
	return h, nil
}

// leaseTTL is how far a heartbeat pushes the lease's expiry.
func leaseTTL(l *berth.Lease) time.Duration {
	if ttl := l.TTL.Std(); ttl > 0 {
		return ttl
	}
	return max(l.ExpiresAt.Sub(l.AcquiredAt), 0)
}

// Lease returns the lease as last seen: its expiry is updated by every
// heartbeat, and after Release it is the ended lease.
func (h *Handle) Lease() *berth.Lease {
	h.mu.Lock()
	defer h.mu.Unlock()
	l := *h.lease
	return &l
}

// Resource returns the leased resource as the last heartbeat (or the
// acquire, or the release) returned it, with its current health.
func (h *Handle) Resource() *berth.Resource {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := *h.resource
	return &r
}

// HealthChanged receives when a heartbeat has found that the health status
// of the leased resource changed (Connected, Disconnected, Unknown); read
// the new health from Resource. A probed resource that becomes
// Disconnected stays leased: whether to go on is the holder's call (berth
// run stops its command after a grace). Signals do not queue: one receive
// may stand for several changes.
func (h *Handle) HealthChanged() <-chan struct{} { return h.health }

// Lost receives one error, and is then closed, when the lease is lost:
// when a heartbeat is answered with code berth.ELeaseLost or
// berth.ENotFound (the error is then the server's, a *berth.Error with that
// code), or when heartbeats keep failing until the lease's expiry has
// passed by this host's clock (a *berth.Error with code berth.ELeaseLost
// that tells the last failure). Heartbeat failures before the expiry are
// retried, not reported. The heartbeats stop after a loss. If the lease is
// released first, Lost receives nothing and is never closed.
func (h *Handle) Lost() <-chan error { return h.lost }

// Release stops the heartbeats and ends the lease. After a loss it still
// asks the server and returns its answer, usually a berth.ELeaseLost
// error. Like Client.Release it may be called again (AlreadyReleased is
// then set).
func (h *Handle) Release(ctx context.Context, p ReleaseParams) (*Released, error) {
	h.stop()
	rel, err := h.c.Release(ctx, h.id, p)
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.released = true
	h.lease = rel.Lease
	if rel.Resource != nil {
		h.resource = rel.Resource
	}
	return rel, nil
}

// Close releases the lease to berth.ReleaseDirty (the pool's cleaning
// policy decides what happens to the resource) unless it has been released
// already. It is idempotent: once the lease is released, Close returns nil.
// After a loss that was reported on Lost, Close only stops what is left
// and returns nil: the loss has been reported once already. If a release
// fails (the server cannot be reached, ctx ends), Close returns the error
// and may be called again.
func (h *Handle) Close(ctx context.Context) error {
	h.stop()
	h.mu.Lock()
	done := h.released || h.lostErr != nil
	h.mu.Unlock()
	if done {
		return nil
	}
	_, err := h.Release(ctx, ReleaseParams{To: berth.ReleaseDirty})
	return err
}

// stop ends the heartbeat goroutine and waits for it.
func (h *Handle) stop() {
	h.stopOnce.Do(func() {
		h.cancel()
		<-h.done
	})
}

// heartbeat renews the lease every interval until ctx ends or the lease is
// lost. expiry is the earliest the lease can expire by this host's clock:
// when the last successful renewal was sent, plus the TTL.
func (h *Handle) heartbeat(ctx context.Context, expiry time.Time) {
	defer close(h.done)
	timer := time.NewTimer(h.interval)
	defer timer.Stop()
	var (
		failures int
		lastErr  error
	)
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		sent := time.Now()
		if !sent.Before(expiry) {
			h.lose(h.expiredError(expiry, lastErr))
			return
		}
		hbctx, cancel := context.WithDeadline(ctx, expiry)
		res, err := h.c.Heartbeat(hbctx, h.id)
		cutShort := hbctx.Err() != nil // by the expiry, or by stop
		cancel()
		if ctx.Err() != nil {
			return // stopped by Release or Close
		}
		if err == nil {
			failures, lastErr = 0, nil
			if ttl := leaseTTL(res.Lease); ttl > 0 {
				expiry = sent.Add(ttl)
			}
			h.mu.Lock()
			h.lease = res.Lease
			changed := false
			if res.Resource != nil {
				changed = res.Resource.Health.Status != h.resource.Health.Status
				h.resource = res.Resource
			}
			h.mu.Unlock()
			if changed {
				select {
				case h.health <- struct{}{}:
				default:
				}
			}
			timer.Reset(h.interval)
			continue
		}
		switch berth.ErrorCodeOf(err) {
		case berth.ELeaseLost, berth.ENotFound:
			h.lose(err)
			return
		}
		failures++
		if !cutShort || lastErr == nil {
			// A call cut short by the expiry says less than the failure
			// before it.
			lastErr = err
		}
		// Try again soon, but never later than the expiry, when the loop
		// reports the loss.
		delay := max(h.c.backoff(failures), h.c.minBackoff)
		delay = max(min(delay, h.interval, time.Until(expiry)), 0)
		timer.Reset(delay)
	}
}

func (h *Handle) expiredError(expiry time.Time, lastErr error) error {
	msg := fmt.Sprintf("lease %s: no heartbeat succeeded before its expiry at %s", h.id, expiry.Format(time.RFC3339Nano))
	if lastErr != nil {
		msg += "; last error: " + lastErr.Error()
	}
	return &berth.Error{Code: berth.ELeaseLost, Message: msg}
}

func (h *Handle) lose(err error) {
	h.mu.Lock()
	h.lostErr = err
	h.mu.Unlock()
	h.lost <- err
	close(h.lost)
}
