// Package lease is berth's lease engine: the one place that decides how
// resources move between states. It validates requests, applies each pool's
// policy, asks the store to make each transition atomically, and wakes
// waiters the moment a resource is handed to them. It knows nothing of HTTP
// or SQL.
package lease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"
	"unicode"

	"github.com/jonboulle/clockwork"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/store"
)

// Pool is a pool's policy as the engine applies it.
type Pool struct {
	Type     string
	LeaseTTL time.Duration
	// Janitor is "none" (released resources go straight back to free),
	// "command" (berth's own janitor runs the pool's command on each dirty
	// resource) or "external" (they stay dirty until a janitor cleans them
	// through the API).
	Janitor string
	// Clean is how cleanings end (attempts, backoff); CleanLeaseTTL is
	// the TTL of a janitor's lease (default LeaseTTL).
	Clean         CleanPolicy
	CleanLeaseTTL time.Duration
	// OnBroken is what a release as broken does: OnBrokenQuarantine (the
	// default) or OnBrokenClean (a deep cleaning by the janitor).
	OnBroken string
	// Dynamic is set for a pool whose provisioner makes its resources.
	Dynamic *berth.Dynamic
	// Probe names the pool's probe kind, "" when it has none.
	Probe string
	// RequireConnected, in a probed pool, leases only Connected
	// resources; otherwise Unknown ones (not probed yet) are leased too.
	// Disconnected ones never are.
	RequireConnected bool
	// ProbeHash identifies the probe spec (see store.PoolPolicy).
	ProbeHash string
	// InitialState is the state new resources start in (default free): a
	// pool from a Boskos config may say dirty, or a state of its own.
	InitialState berth.State
	// OnDemand is set on a dynamic type of a Boskos config: berth makes
	// its resources itself, as records for an outside builder to make
	// real, when a new request finds none.
	OnDemand  *OnDemand
	Resources []store.ResourceSpec
}

// OnDemand is the sizing of a Boskos dynamic type: a new request that
// finds nothing available makes a resource while the type has fewer than
// MaxCount, and the type keeps at least MinCount.
type OnDemand struct {
	MinCount, MaxCount int
}

const (
	JanitorNone     = "none"
	JanitorCommand  = "command"
	JanitorExternal = "external"
)

// What a release as broken does.
const (
	OnBrokenQuarantine = "quarantine"
	OnBrokenClean      = "clean"
)

// Defaults for Options.
const (
	DefaultGrace        = 30 * time.Second
	DefaultMaxPoll      = 60 * time.Second
	DefaultReapInterval = time.Second
	DefaultLeaseTTL     = 10 * time.Minute
)

// Options configure an Engine.
type Options struct {
	Store  store.Store
	Clock  clockwork.Clock
	Logger *slog.Logger
	// Grace is how long a waiter keeps its place in the queue after its
	// long poll ends without a resource. Default DefaultGrace.
	Grace time.Duration
	// MaxPoll caps how long one acquire call waits before answering with
	// the request's position, so proxies do not cut long polls. Default
	// DefaultMaxPoll.
	MaxPoll time.Duration
	// EventRecheck, if set, makes a waiting event read look again at this
	// interval, not only when this engine writes: with a store that
	// several processes share, the others' events arrive unannounced.
	EventRecheck time.Duration
	// ProbeNow, if set, asks for a resource to be probed at once: someone
	// waits for it to be ready (WaitReady).
	ProbeNow func(name string)
	// Observer, if set, is told what the engine does (for metrics).
	Observer Observer
}

// Engine is the lease engine. It is safe for concurrent use.
type Engine struct {
	store   store.Store
	clock   clockwork.Clock
	log     *slog.Logger
	grace   time.Duration
	maxPoll time.Duration
	recheck time.Duration
	// probeNow: see Options.ProbeNow.
	probeNow func(name string)
	observer Observer
	holders  holders

	// draining is closed when the server shuts down: long polls answer at
	// once with their place in line, so the caller re-polls elsewhere (or
	// after the restart) and keeps that place.
	draining  chan struct{}
	drainOnce sync.Once

	mu      sync.Mutex
	pools   map[string]Pool
	waiters map[string]*waiter
	changed chan struct{} // closed and replaced whenever events are written
	// watches are the loops waiting for something to happen to a pool
	// (Watch); leaseWatches those waiting for the end of a lease
	// (WatchLease).
	watches      []*watch
	leaseWatches map[string][]chan struct{}
}

// watch is one Watch call: ch is closed the next time any of types is
// touched.
type watch struct {
	types map[string]bool
	ch    chan struct{}
}

type waiter struct {
	ch chan struct{} // buffered(1): a wake is never lost, never blocks
	n  int
}

// New returns an Engine with no pools; call SyncPools before serving.
func New(opts Options) *Engine {
	e := &Engine{
		store:    opts.Store,
		clock:    opts.Clock,
		log:      opts.Logger,
		grace:    opts.Grace,
		maxPoll:  opts.MaxPoll,
		recheck:  opts.EventRecheck,
		probeNow: opts.ProbeNow,
		observer: opts.Observer,
		pools:    map[string]Pool{},
		waiters:  map[string]*waiter{},
		changed:  make(chan struct{}),
		draining: make(chan struct{}),
	}
	if e.clock == nil {
		e.clock = clockwork.NewRealClock()
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	if e.observer == nil {
		e.observer = noObserver{}
	}
	if e.grace <= 0 {
		e.grace = DefaultGrace
	}
	if e.maxPoll <= 0 {
		e.maxPoll = DefaultMaxPoll
	}
	return e
}

// Clock returns the engine's clock.
func (e *Engine) Clock() clockwork.Clock { return e.clock }

// SyncPools makes the store's pools and resources match pools, keeping every
// lease, and makes pools the policy the engine applies from now on.
func (e *Engine) SyncPools(ctx context.Context, pools []Pool, actor string) (*store.PoolSyncResult, error) {
	policies := make([]store.PoolPolicy, 0, len(pools))
	m := make(map[string]Pool, len(pools))
	for _, p := range pools {
		if p.LeaseTTL <= 0 {
			p.LeaseTTL = DefaultLeaseTTL
		}
		if p.Janitor == "" {
			p.Janitor = JanitorNone
		}
		if p.CleanLeaseTTL <= 0 {
			p.CleanLeaseTTL = p.LeaseTTL
		}
		if p.OnBroken == "" {
			p.OnBroken = OnBrokenQuarantine
		}
		m[p.Type] = p
		policies = append(policies, store.PoolPolicy{Type: p.Type, LeaseTTL: p.LeaseTTL, Janitor: p.Janitor, Dynamic: p.Dynamic,
			Probe: p.Probe, RequireConnected: p.RequireConnected, ProbeHash: p.ProbeHash, InitialState: p.InitialState, Resources: p.Resources})
	}
	res, err := e.store.PoolSync(ctx, &store.PoolSyncParams{Pools: policies, Now: e.clock.Now(), Actor: actor})
	if err != nil {
		return nil, fmt.Errorf("sync pools: %w", err)
	}
	e.mu.Lock()
	e.pools = m
	e.mu.Unlock()
	for _, h := range res.Handoffs {
		e.handedOff(h)
	}
	e.published()
	for typ := range m {
		e.touch(typ)
	}
	return res, nil
}

func (e *Engine) pool(typ string) (Pool, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	p, ok := e.pools[typ]
	return p, ok
}

// policyFor returns the pool's policy, or the defaults for a lease whose
// pool has left the config.
func (e *Engine) policyFor(typ string) Pool {
	if p, ok := e.pool(typ); ok {
		return p
	}
	return Pool{Type: typ, LeaseTTL: DefaultLeaseTTL, Janitor: JanitorNone}
}

// AcquireParams describe one acquire call.
type AcquireParams struct {
	Type     string
	Owner    string
	Priority int
	Selector berth.Selector
	// Wait is how long the caller is prepared to wait for a resource. The
	// call itself returns after at most the engine's MaxPoll.
	Wait time.Duration
	// RequestID keeps a waiter's place across calls and makes a retried
	// acquire return the lease it already got. Generated when waiting
	// without one.
	RequestID string
	// Hold, with a RequestID and no Wait, queues the request without
	// blocking and keeps its place for Hold: a client that polls, as
	// Boskos clients do, keeps its place with each poll.
	Hold time.Duration
	// LeaseTTL, if set, replaces the pool's lease TTL for this lease.
	LeaseTTL time.Duration
	Actor    string
	// To is the state the leased resource goes to; "" is busy. A Boskos
	// client that leases from free to a state of its own waits in the
	// same queue as every other acquire of the type.
	To berth.State
}

// AcquireResult is a lease, or the caller's place in the queue.
type AcquireResult struct {
	Lease    *berth.Lease
	Resource *berth.Resource
	Request  *berth.Request
}

const (
	maxPriority    = 1000
	maxOwnerLen    = 253
	maxRequestID   = 128
	maxReasonLen   = 4096
	maxSelectorLen = 32
)

// ValidateOwner checks an owner name: printable, 1 to 253 characters.
func ValidateOwner(field, s string) error {
	if s == "" {
		return berth.FieldErrorf(field, "is required")
	}
	if len(s) > maxOwnerLen {
		return berth.FieldErrorf(field, "is longer than %d characters", maxOwnerLen)
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return berth.FieldErrorf(field, "contains a non-printable character")
		}
	}
	return nil
}

func validRequestID(s string) bool {
	if len(s) == 0 || len(s) > maxRequestID {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' || r == ':') {
			return false
		}
	}
	return true
}

// ValidateSelector checks label keys and values.
func ValidateSelector(field string, sel berth.Selector) error {
	if len(sel) > maxSelectorLen {
		return berth.FieldErrorf(field, "has more than %d terms", maxSelectorLen)
	}
	for _, k := range sel.Keys() {
		if !berth.ValidLabelKey(k) {
			return berth.FieldErrorf(field+"."+k, "is not a valid label key (letters, digits, '-', '_', '.', an optional prefix/)")
		}
		if len(sel[k]) > 253 {
			return berth.FieldErrorf(field+"."+k, "value is longer than 253 characters")
		}
	}
	return nil
}

func (e *Engine) validateAcquire(p *AcquireParams) (Pool, error) {
	if p.Type == "" {
		return Pool{}, berth.FieldErrorf("type", "is required")
	}
	if err := ValidateOwner("owner", p.Owner); err != nil {
		return Pool{}, err
	}
	if p.Priority < -maxPriority || p.Priority > maxPriority {
		return Pool{}, berth.FieldErrorf("priority", "must be between %d and %d", -maxPriority, maxPriority)
	}
	if p.Wait < 0 {
		return Pool{}, berth.FieldErrorf("wait", "must not be negative")
	}
	if p.Hold < 0 || p.LeaseTTL < 0 {
		return Pool{}, berth.FieldErrorf("hold", "must not be negative")
	}
	if p.RequestID != "" && !validRequestID(p.RequestID) {
		return Pool{}, berth.FieldErrorf("requestId", "must be 1 to %d letters, digits, '-', '_', '.' or ':'", maxRequestID)
	}
	if err := ValidateSelector("labels", p.Selector); err != nil {
		return Pool{}, err
	}
	if p.To != "" {
		if err := validateDest("dest", p.To); err != nil {
			return Pool{}, err
		}
		if p.To == berth.StateCleaning {
			// A cleaning lease is a janitor's: CleanClaim or Take.
			return Pool{}, berth.FieldErrorf("dest", "a resource leased from free cannot go to cleaning")
		}
	}
	pool, ok := e.pool(p.Type)
	if !ok {
		return Pool{}, &berth.Error{Code: berth.EUnknownType, Field: "type", Message: fmt.Sprintf("no pool of type %q", p.Type)}
	}
	return pool, nil
}

// Acquire leases a free resource of the type. With Wait it queues when none
// is free and blocks until a resource is handed to it, the wait (capped at
// MaxPoll) ends, or ctx is done. A call
// that ends without a resource returns the request and its position; the
// caller keeps that place for the engine's grace period and reclaims it by
// calling again with the same RequestID.
func (e *Engine) Acquire(ctx context.Context, p AcquireParams) (out *AcquireResult, err error) {
	defer func() {
		if out != nil {
			e.holders.remember(out.Lease)
		}
	}()
	pool, err := e.validateAcquire(&p)
	if err != nil {
		return nil, err
	}
	// Only a caller prepared to wait joins the queue. A request id without
	// a wait just makes the call idempotent: a retry gets the same lease.
	queue := p.Wait > 0 || p.Hold > 0 && p.RequestID != ""
	if queue && p.RequestID == "" {
		p.RequestID = berth.NewID()
	}
	poll := min(p.Wait, e.maxPoll)
	now := e.clock.Now()
	deadline := now.Add(poll)
	waitUntil := deadline.Add(e.grace)
	if p.Wait == 0 {
		waitUntil = now.Add(p.Hold)
	}
	leaseTTL := pool.LeaseTTL
	if p.LeaseTTL > 0 {
		leaseTTL = p.LeaseTTL
	}
	var wake chan struct{}
	if poll > 0 {
		// Subscribe before the store call so a handoff between the two is
		// not missed.
		wake = e.subscribe(p.RequestID)
		defer e.unsubscribe(p.RequestID)
	}
	sp := &store.LeaseAcquireParams{
		Type: p.Type, Owner: p.Owner, Priority: p.Priority, Selector: p.Selector, RequestID: p.RequestID,
		Wait: queue, WaitUntil: waitUntil, LeaseTTL: leaseTTL, Now: now, Actor: actorOr(p.Actor, p.Owner), To: p.To,
	}
	res, err := e.store.LeaseAcquire(ctx, sp)
	if err != nil {
		return nil, storeError(err)
	}
	if res.Joined {
		// The request joined the queue with this call: a pool that
		// makes its resources on demand makes one.
		e.onDemandRequest(ctx, pool, p.RequestID)
	}
	// A dynamic pool's provisioner answers demand: a lease taken or a
	// request queued.
	e.touch(p.Type)
	if res.Lease != nil {
		if res.Lease.AcquiredAt.Equal(now) {
			// Granted by this call, not an earlier one retried.
			e.observer.LeaseGranted(p.Type, -1)
		}
		e.published()
		return &AcquireResult{Lease: res.Lease, Resource: res.Resource}, nil
	}
	if res.Request == nil {
		if pool.Probe != "" {
			return nil, berth.Errorf(berth.EExhausted, "no free resource of type %q is Connected", p.Type)
		}
		return nil, berth.Errorf(berth.EExhausted, "no free resource of type %q", p.Type)
	}
	if poll == 0 {
		return &AcquireResult{Request: res.Request}, nil
	}
	timer := e.clock.NewTimer(deadline.Sub(e.clock.Now()))
	defer timer.Stop()
	for {
		select {
		case <-wake:
			// Handed a lease: claim it. The same call is idempotent, so a
			// stray wake just re-reads our place.
			sp.Now = e.clock.Now()
			res, err := e.store.LeaseAcquire(ctx, sp)
			if err != nil {
				return nil, storeError(err)
			}
			if res.Lease != nil {
				return &AcquireResult{Lease: res.Lease, Resource: res.Resource}, nil
			}
		case <-timer.Chan():
			req, err := e.store.RequestGet(ctx, &store.RequestGetParams{ID: p.RequestID, Now: e.clock.Now()})
			if errors.Is(err, store.ErrNotFound) {
				// Either served between the timer and now (claim it), or
				// cancelled (do not queue it again).
				claim := *sp
				claim.Now, claim.Wait, claim.ClaimOnly = e.clock.Now(), false, true
				res, err := e.store.LeaseAcquire(ctx, &claim)
				if err != nil {
					return nil, storeError(err)
				}
				if res.Lease != nil {
					return &AcquireResult{Lease: res.Lease, Resource: res.Resource}, nil
				}
				return nil, berth.Errorf(berth.EExhausted, "request %q no longer waits (it was cancelled)", p.RequestID)
			}
			if err != nil {
				return nil, storeError(err)
			}
			return &AcquireResult{Request: req}, nil
		case <-e.draining:
			e.pollEnded(ctx, p.RequestID)
			req, err := e.store.RequestGet(ctx, &store.RequestGetParams{ID: p.RequestID, Now: e.clock.Now()})
			if err == nil {
				return &AcquireResult{Request: req}, nil
			}
			// Served or cancelled meanwhile: the claim path sorts it out.
			claim := *sp
			claim.Now, claim.Wait, claim.ClaimOnly = e.clock.Now(), false, true
			res, cerr := e.store.LeaseAcquire(ctx, &claim)
			if cerr != nil {
				return nil, storeError(cerr)
			}
			if res.Lease != nil {
				return &AcquireResult{Lease: res.Lease, Resource: res.Resource}, nil
			}
			return nil, berth.Errorf(berth.EUnavailable, "berth is shutting down; acquire again")
		case <-ctx.Done():
			e.pollEnded(ctx, p.RequestID)
			return nil, ctx.Err()
		}
	}
}

// pollEnded is called when a long poll ends before its wait: the caller
// keeps its place for the grace period from now, not from when its wait
// would have ended, and so does a resource handed to it meanwhile.
func (e *Engine) pollEnded(ctx context.Context, id string) {
	err := e.store.RequestShorten(context.WithoutCancel(ctx), &store.RequestShortenParams{ID: id, ExpiresAt: e.clock.Now().Add(e.grace)})
	if err != nil {
		e.log.Warn("could not shorten an ended request's hold", "request", id, "err", err)
	}
}

// Drain ends every long poll now and any started later, each answering
// with what it has (a lease, or the request's place in line). The server
// calls it when it begins to shut down, so that shutting down never leaves
// a waiter without an answer.
func (e *Engine) Drain() {
	e.drainOnce.Do(func() { close(e.draining) })
}

func actorOr(actor, owner string) string {
	if actor != "" {
		return actor
	}
	return owner
}

// CancelRequest gives up a waiting request's place.
func (e *Engine) CancelRequest(ctx context.Context, id string) error {
	if p, ok := berth.PrincipalFrom(ctx); ok && p.Name != "" && !p.Role.Allows(berth.RoleAdmin) {
		// With authentication, a request is its maker's to cancel.
		r, err := e.store.RequestGet(ctx, &store.RequestGetParams{ID: id, Now: e.clock.Now()})
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return storeError(err)
		}
		if err == nil && r.Principal != "" && r.Principal != p.Name {
			return berth.Errorf(berth.EForbidden, "request %q is %s's; only it or an admin may cancel it", id, r.Principal)
		}
	}
	if err := e.store.RequestCancel(ctx, id); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return berth.Errorf(berth.ENotFound, "no waiting request %q", id)
		}
		return storeError(err)
	}
	return nil
}

// Request returns a waiting request with its position.
func (e *Engine) Request(ctx context.Context, id string) (*berth.Request, error) {
	r, err := e.store.RequestGet(ctx, &store.RequestGetParams{ID: id, Now: e.clock.Now()})
	if errors.Is(err, store.ErrNotFound) {
		return nil, berth.Errorf(berth.ENotFound, "no waiting request %q", id)
	}
	if err != nil {
		return nil, storeError(err)
	}
	return r, nil
}

// HeartbeatResult is the renewed lease and the resource it holds, so the
// holder learns of anything that happened to the resource.
type HeartbeatResult struct {
	Lease    *berth.Lease
	Resource *berth.Resource
}

// Heartbeat extends a lease by its TTL. A lease past its expiry cannot be
// renewed: it is lost even if the reaper has not ended it yet.
func (e *Engine) Heartbeat(ctx context.Context, id string) (*HeartbeatResult, error) {
	if _, err := e.holder(ctx, id); err != nil {
		return nil, err
	}
	res, err := e.store.LeaseHeartbeat(ctx, &store.LeaseHeartbeatParams{ID: id, Now: e.clock.Now()})
	if err != nil {
		return nil, e.leaseError(ctx, id, err)
	}
	return &HeartbeatResult{Lease: res.Lease, Resource: res.Resource}, nil
}

// leaseError turns a store error about lease id into a caller-facing one.
func (e *Engine) leaseError(ctx context.Context, id string, err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return &berth.Error{Code: berth.ENotFound, Message: fmt.Sprintf("no lease %q", id)}
	case errors.Is(err, store.ErrLeaseEnded):
		msg := fmt.Sprintf("lease %q has ended", id)
		if l, gerr := e.store.LeaseGet(ctx, id); gerr == nil {
			switch {
			case l.Status == berth.LeaseActive:
				msg = fmt.Sprintf("lease %q expired at %s without a heartbeat", id, l.ExpiresAt.Format(time.RFC3339Nano))
			case l.Status == berth.LeaseRevoked:
				msg = fmt.Sprintf("lease %q was revoked at %s: an admin quarantined %s", id, l.EndedAt.Format(time.RFC3339Nano), l.Resource)
				if r, err := e.store.ResourceGet(ctx, l.Resource); err == nil && r.State == berth.StateQuarantined {
					msg += ": " + r.StateReason
				}
			default:
				msg = fmt.Sprintf("lease %q was %s at %s", id, l.Status, l.EndedAt.Format(time.RFC3339Nano))
			}
		}
		return &berth.Error{Code: berth.ELeaseLost, Message: msg}
	}
	return storeError(err)
}

// storeError passes caller-facing errors and cancellations through and
// reports anything else as the store being unavailable, never as "not
// found": a failing database must look like an outage, not like an answer.
func storeError(err error) error {
	var be *berth.Error
	if errors.As(err, &be) {
		return be
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return &StoreError{Err: err}
}

// StoreError is a failure of the store, not of the caller.
type StoreError struct{ Err error }

func (e *StoreError) Error() string { return "store unavailable: " + e.Err.Error() }
func (e *StoreError) Unwrap() error { return e.Err }

// ReleaseParams describe giving a lease back.
type ReleaseParams struct {
	ID     string
	To     berth.ReleaseTarget
	Reason string
	Actor  string
}

// ReleaseResult is the ended lease and where its resource went.
type ReleaseResult struct {
	Lease    *berth.Lease
	Resource *berth.Resource
	// AlreadyReleased is set when the lease had been released before (a
	// retried release); nothing changed.
	AlreadyReleased bool
}

// outcome applies the pool's policy to what the holder said: a resource
// released dirty is cleaned if the pool has a janitor, else free at once;
// one reported broken is quarantined, or cleaned deeply where the pool
// says so (and has a janitor).
func outcome(pool Pool, to berth.ReleaseTarget) store.Outcome {
	o := store.Outcome{HandoffTTL: pool.LeaseTTL}
	switch {
	case to == berth.ReleaseFree:
		o.To = berth.StateFree
	case to == berth.ReleaseBroken && pool.OnBroken == OnBrokenClean && pool.Janitor != JanitorNone:
		o.To, o.Deep = berth.StateDirty, true
	case to == berth.ReleaseBroken:
		o.To = berth.StateQuarantined
	case pool.Janitor == JanitorNone:
		o.To = berth.StateFree
	default:
		o.To = berth.StateDirty
	}
	return o
}

// Release ends a lease. Released to dirty, the resource follows its pool's
// cleaning policy; a resource that ends up free goes straight to the first
// waiter. Releasing a lease twice succeeds and changes nothing.
func (e *Engine) Release(ctx context.Context, p ReleaseParams) (*ReleaseResult, error) {
	switch p.To {
	case "":
		p.To = berth.ReleaseDirty
	case berth.ReleaseDirty, berth.ReleaseFree:
	case berth.ReleaseBroken:
		if p.Reason == "" {
			return nil, berth.FieldErrorf("reason", "is required when releasing as broken")
		}
	default:
		return nil, berth.FieldErrorf("to", "must be %q, %q or %q", berth.ReleaseDirty, berth.ReleaseFree, berth.ReleaseBroken)
	}
	if len(p.Reason) > maxReasonLen {
		return nil, berth.FieldErrorf("reason", "is longer than %d bytes", maxReasonLen)
	}
	if err := CheckText("reason", p.Reason); err != nil {
		return nil, err
	}
	forced, err := e.holder(ctx, p.ID)
	if err != nil {
		return nil, err
	}
	res, err := e.store.LeaseRelease(ctx, &store.LeaseReleaseParams{
		ID: p.ID, Reason: withForced(forced, p.Reason), Actor: p.Actor, Now: e.clock.Now(),
		Decide: func(typ string) store.Outcome { return outcome(e.policyFor(typ), p.To) },
	})
	if errors.Is(err, store.ErrLeaseEnded) && res != nil && res.Lease != nil && res.Lease.Status == berth.LeaseReleased {
		r, rerr := e.store.ResourceGet(ctx, res.Lease.Resource)
		if rerr != nil && !errors.Is(rerr, store.ErrNotFound) {
			return nil, storeError(rerr)
		}
		return &ReleaseResult{Lease: res.Lease, Resource: r, AlreadyReleased: true}, nil
	}
	if err != nil {
		return nil, e.leaseError(ctx, p.ID, err)
	}
	e.leaseEnded(res.Lease, res.Resource, res.Handoff)
	return &ReleaseResult{Lease: res.Lease, Resource: res.Resource}, nil
}

// leaseEnded tells everyone concerned that lease l ended and its resource
// r moved on (nil if it left its pool), to the waiter of h if set.
func (e *Engine) leaseEnded(l *berth.Lease, r *berth.Resource, h *store.Handoff) {
	if h != nil {
		e.handedOff(*h)
	}
	e.published()
	e.touchResource(l.Type, r)
}

// ReapOnce ends every lease past its expiry, moves its resource on as the
// pool's policy says, and drops waiting requests past their grace. It
// returns how many leases it ended.
func (e *Engine) ReapOnce(ctx context.Context) (int, error) {
	now := e.clock.Now()
	n := 0
	for {
		leases, err := e.store.LeaseListExpired(ctx, &store.LeaseListExpiredParams{Now: now, Limit: 500})
		if err != nil {
			return n, fmt.Errorf("reap: %w", err)
		}
		for _, l := range leases {
			res, err := e.reap(ctx, l, now)
			if errors.Is(err, store.ErrLeaseActive) || errors.Is(err, store.ErrLeaseEnded) {
				continue // renewed or released since it was listed
			}
			if err != nil {
				return n, fmt.Errorf("reap lease %s: %w", l.ID, err)
			}
			n++
			to := "removed (no longer in the config)"
			if res.Resource != nil {
				to = string(res.Resource.State)
			}
			e.log.Info("lease expired", "lease", l.ID, "kind", l.Kind, "resource", l.Resource, "owner", l.Owner, "to", to)
			e.observer.LeaseExpired(l.Type, l.Kind)
			if res.Handoff != nil {
				e.handedOff(*res.Handoff)
			}
			e.touchResource(l.Type, res.Resource)
		}
		if len(leases) < 500 {
			break
		}
	}
	if _, err := e.store.RequestPrune(ctx, now); err != nil {
		return n, fmt.Errorf("reap: %w", err)
	}
	if n > 0 {
		e.published()
	}
	return n, nil
}

// reap ends expired lease l: a job's as a release to dirty, a janitor's
// as a failed cleaning.
func (e *Engine) reap(ctx context.Context, l *berth.Lease, now time.Time) (*store.LeaseReleaseResult, error) {
	if l.Kind == berth.LeaseClean {
		res, err := e.store.CleanEnd(ctx, &store.CleanEndParams{ID: l.ID, Expired: true, Actor: "reaper", Now: now, Policy: e.cleanPolicy,
			Message: fmt.Sprintf("the janitor %s sent no heartbeat for %s", l.Owner, l.TTL)})
		if err != nil {
			return nil, err
		}
		e.cleaningEnded(l.Type, res.Event)
		return &store.LeaseReleaseResult{Lease: res.Lease, Resource: res.Resource, Handoff: res.Handoff}, nil
	}
	pool := e.policyFor(l.Type)
	return e.store.LeaseRelease(ctx, &store.LeaseReleaseParams{
		ID: l.ID, Decide: func(typ string) store.Outcome { return outcome(e.policyFor(typ), berth.ReleaseDirty) }, Expired: true, Actor: "reaper",
		Reason: fmt.Sprintf("no heartbeat from %s for %s", l.Owner, l.TTL), Now: now, HandoffTTL: pool.LeaseTTL,
	})
}

// RunReaper calls ReapOnce every interval until ctx is done.
func (e *Engine) RunReaper(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = DefaultReapInterval
	}
	t := e.clock.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
			if _, err := e.ReapOnce(ctx); err != nil && ctx.Err() == nil {
				e.log.Error("reaper pass failed", "err", err)
			}
		}
	}
}

func (e *Engine) subscribe(id string) chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	w, ok := e.waiters[id]
	if !ok {
		w = &waiter{ch: make(chan struct{}, 1)}
		e.waiters[id] = w
	}
	w.n++
	return w.ch
}

func (e *Engine) unsubscribe(id string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if w, ok := e.waiters[id]; ok {
		w.n--
		if w.n == 0 {
			delete(e.waiters, id)
		}
	}
}

// Wake tells the long poll of request id, if one runs in this process,
// that it has been handed a lease: the store reports handoffs made by
// other processes (store.HandoffListener). With id "", every long poll
// here looks again.
func (e *Engine) Wake(id string) {
	if id != "" {
		e.wake(id)
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, w := range e.waiters {
		select {
		case w.ch <- struct{}{}:
		default:
		}
	}
}

// wake tells the long poll of request id, if one runs here, that it has
// been handed a lease.
func (e *Engine) wake(id string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if w, ok := e.waiters[id]; ok {
		select {
		case w.ch <- struct{}{}:
		default:
		}
	}
}

// published wakes everyone waiting for new events.
func (e *Engine) published() {
	e.mu.Lock()
	defer e.mu.Unlock()
	close(e.changed)
	e.changed = make(chan struct{})
}

// HealthRecorded is called after probe results were written: it wakes the
// long polls of the requests that resources were handed to, and everyone
// following events or waiting for a resource to be ready.
func (e *Engine) HealthRecorded(res *store.ResourceHealthResult) {
	for _, h := range res.Handoffs {
		e.handedOff(h)
	}
	e.published()
}

// Watch returns a channel that is closed the next time something
// happens through this engine to a pool of one of types: a lease taken
// or ended, a request queued, a resource that changed state. The loops
// of janitors and dynamic pools wait on it; with a store that several
// processes share, they also look again now and then, since what
// happens elsewhere is not announced here. The caller calls stop when it
// no longer waits (a watch that fired needs none, but it does no harm).
func (e *Engine) Watch(types ...string) (ch <-chan struct{}, stop func()) {
	w := &watch{types: make(map[string]bool, len(types)), ch: make(chan struct{})}
	for _, t := range types {
		w.types[t] = true
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.watches = append(e.watches, w)
	return w.ch, func() { e.unwatch(w) }
}

// unwatch forgets watch w, if it has not fired.
func (e *Engine) unwatch(w *watch) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if i := slices.Index(e.watches, w); i >= 0 {
		e.watches = slices.Delete(e.watches, i, i+1)
	}
}

// Watches counts the watches waiting, for tests: a loop that waits
// leaves one, not one per wait.
func (e *Engine) Watches() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.watches)
}

// WatchLease returns a channel that is closed when lease id may have
// ended other than through its holder: revoked by a quarantine here, or,
// as another replica reports (LeaseEnded), there. berth's janitor stops
// its command at once rather than at its next heartbeat. The caller calls
// stop when it no longer waits.
func (e *Engine) WatchLease(id string) (ch <-chan struct{}, stop func()) {
	c := make(chan struct{})
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.leaseWatches == nil {
		e.leaseWatches = map[string][]chan struct{}{}
	}
	e.leaseWatches[id] = append(e.leaseWatches[id], c)
	return c, func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		cs := e.leaseWatches[id]
		if i := slices.Index(cs, c); i >= 0 {
			cs = slices.Delete(cs, i, i+1)
		}
		if len(cs) == 0 {
			delete(e.leaseWatches, id)
		} else {
			e.leaseWatches[id] = cs
		}
	}
}

// LeaseEnded tells the watchers of lease id (WatchLease) that it may have
// ended; with id "", all of them (a replica that may have missed word of
// some: each looks for itself).
func (e *Engine) LeaseEnded(id string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for lid, cs := range e.leaseWatches {
		if id != "" && lid != id {
			continue
		}
		for _, c := range cs {
			close(c)
		}
		delete(e.leaseWatches, lid)
	}
}

// touch tells the watches of typ that something happened to it.
func (e *Engine) touch(typ string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	kept := e.watches[:0]
	for _, w := range e.watches {
		if w.types[typ] {
			close(w.ch)
			continue
		}
		kept = append(kept, w)
	}
	clear(e.watches[len(kept):])
	e.watches = kept
}

// touchResource touches the pool of a lease's type and the one its
// resource is in now, if another.
func (e *Engine) touchResource(leaseType string, r *berth.Resource) {
	e.touch(leaseType)
	if r != nil && r.Type != leaseType {
		e.touch(r.Type)
	}
}

// Changed returns a channel that is closed the next time events are
// written through this engine.
func (e *Engine) Changed() <-chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.changed
}
