package lease

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/store"
)

// CleanPolicy is how a pool's cleanings end.
type CleanPolicy struct {
	// MaxAttempts failed cleanings in a row quarantine a resource; 0
	// never does.
	MaxAttempts int
	// Backoff is the wait before the second attempt; each further one
	// waits twice as long, up to MaxBackoff, give or take a fifth.
	Backoff, MaxBackoff time.Duration
}

// Defaults of a pool with a janitor.
const (
	DefaultMaxAttempts = 3
	DefaultBackoff     = 10 * time.Second
	DefaultMaxBackoff  = 10 * time.Minute
)

// Delay is the wait after failed attempt n (1 for the first failure): the
// backoff doubled n-1 times, capped at MaxBackoff, then jittered by up to a
// fifth either way, so that resources that failed together do not all come
// back at once. A wait that the jitter takes past the cap is reflected
// back below it, rather than clipped: at the cap, clipping would send half
// of them back at the same moment.
func (c CleanPolicy) Delay(n int) time.Duration {
	base, limit := c.Backoff, c.MaxBackoff
	if base <= 0 {
		base = DefaultBackoff
	}
	if limit <= 0 {
		limit = DefaultMaxBackoff
	}
	d := base
	for i := 1; i < n && d < limit; i++ {
		d *= 2
	}
	d = min(d, limit)
	jittered := time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
	if jittered > limit {
		jittered = 2*limit - jittered
	}
	return jittered
}

// cleanPolicy is the store's view of the policy of pool typ.
func (e *Engine) cleanPolicy(typ string) store.CleanPolicy {
	p := e.policyFor(typ)
	return store.CleanPolicy{MaxAttempts: p.Clean.MaxAttempts, Backoff: p.Clean.Delay, HandoffTTL: p.LeaseTTL, NoJanitor: p.Janitor == JanitorNone}
}

// maxOutput bounds a janitor's output in a request; the store keeps the
// tail of it (store.MaxOutput).
const maxOutput = 1 << 20

// CleanClaimParams describe a janitor's claim of a dirty resource.
type CleanClaimParams struct {
	Type  string
	Owner string
	// Name, if set, claims that resource only.
	Name string
	// RequestID, if set, makes the claim idempotent: a retry returns the
	// lease the first try got.
	RequestID string
	// Wait is how long to wait for a dirty resource (capped at MaxPoll).
	Wait  time.Duration
	Actor string
}

// CleanClaimResult is a cleaning lease on the resource to clean. Attempt
// is the number of this cleaning since the resource went dirty. With
// nothing to clean, Lease is nil and NextAt is when a resource waiting out
// a backoff may be claimed (zero if none is dirty).
type CleanClaimResult struct {
	Lease    *berth.Lease
	Resource *berth.Resource
	Attempt  int
	NextAt   time.Time
}

// CleanClaim leases a dirty resource of a pool with a janitor for
// cleaning: the resource is cleaning until the janitor ends the lease with
// CleanEnd; a janitor that stops heartbeating loses it, and the resource is
// dirty again. With Wait, it waits for a resource to become dirty (or its
// backoff to pass). Finding nothing is not an error: the result has no
// lease (see NothingToClean).
func (e *Engine) CleanClaim(ctx context.Context, p CleanClaimParams) (out *CleanClaimResult, err error) {
	defer func() {
		if out != nil {
			e.holders.remember(out.Lease)
		}
	}()
	pool, err := e.validateClean(&p)
	if err != nil {
		return nil, err
	}
	deadline := e.clock.Now().Add(min(p.Wait, e.maxPoll))
	for {
		watch, unwatch := e.Watch(p.Type) // before the claim, so that nothing is missed
		now := e.clock.Now()
		res, err := e.store.CleanClaim(ctx, &store.CleanClaimParams{Type: p.Type, Name: p.Name, RequestID: p.RequestID, Owner: p.Owner,
			LeaseTTL: pool.CleanLeaseTTL, Now: now, Actor: actorOr(p.Actor, p.Owner)})
		if err != nil {
			unwatch()
			return nil, storeError(err)
		}
		if res.Lease != nil {
			unwatch()
			e.published()
			e.touch(p.Type)
			return &CleanClaimResult{Lease: res.Lease, Resource: res.Resource, Attempt: res.Attempt}, nil
		}
		left := deadline.Sub(now)
		if left <= 0 {
			unwatch()
			return &CleanClaimResult{NextAt: res.NextAt}, nil
		}
		if !res.NextAt.IsZero() {
			left = min(left, max(res.NextAt.Sub(now), 0))
		}
		if e.recheck > 0 {
			left = min(left, e.recheck) // other replicas' releases are not announced here
		}
		timer := e.clock.NewTimer(left)
		var stopped error
		select {
		case <-watch:
		case <-timer.Chan():
		case <-e.draining:
			stopped = berth.Errorf(berth.EUnavailable, "berth is shutting down; claim again")
		case <-ctx.Done():
			stopped = ctx.Err()
		}
		timer.Stop()
		unwatch()
		if stopped != nil {
			return nil, stopped
		}
	}
}

// NothingToClean is the error for a claim that found nothing to clean.
func NothingToClean(p CleanClaimParams, next time.Time) error {
	if p.Name != "" {
		if !next.IsZero() {
			return berth.Errorf(berth.EExhausted, "resource %q of type %q waits out its backoff until %s", p.Name, p.Type, next.Format(time.RFC3339Nano))
		}
		return berth.Errorf(berth.EExhausted, "resource %q is not a dirty resource of type %q", p.Name, p.Type)
	}
	if !next.IsZero() {
		return berth.Errorf(berth.EExhausted, "no dirty resource of type %q is ready to clean (the next is due after its backoff, at %s)",
			p.Type, next.Format(time.RFC3339Nano))
	}
	return berth.Errorf(berth.EExhausted, "no dirty resource of type %q to clean", p.Type)
}

func (e *Engine) validateClean(p *CleanClaimParams) (Pool, error) {
	if p.Type == "" {
		return Pool{}, berth.FieldErrorf("type", "is required")
	}
	if err := ValidateOwner("owner", p.Owner); err != nil {
		return Pool{}, err
	}
	if p.Name != "" && !berth.ValidName(p.Name) {
		return Pool{}, berth.FieldErrorf("name", "%q is not a valid resource name", store.Head(p.Name, 64))
	}
	if p.Wait < 0 {
		return Pool{}, berth.FieldErrorf("wait", "must not be negative")
	}
	if p.RequestID != "" && !validRequestID(p.RequestID) {
		return Pool{}, berth.FieldErrorf("requestId", "must be 1 to %d letters, digits, '-', '_', '.' or ':'", maxRequestID)
	}
	pool, ok := e.pool(p.Type)
	if !ok {
		return Pool{}, &berth.Error{Code: berth.EUnknownType, Field: "type", Message: fmt.Sprintf("no pool of type %q", p.Type)}
	}
	if pool.Janitor == JanitorNone {
		return Pool{}, berth.Errorf(berth.EConflict, "pool %q has no janitor: its released resources go straight back to free", p.Type)
	}
	return pool, nil
}

// CleanEndParams describe the end of a cleaning.
type CleanEndParams struct {
	ID string
	// OK: the resource is clean. Otherwise it failed; Quarantine says no
	// cleaning will help; Abandon that the janitor stopped before it knew.
	OK, Quarantine, Abandon bool
	// Message says what happened (an exit status); Output is what the
	// janitor printed.
	Message, Output string
	Actor           string
}

// CleanEndResult is the ended cleaning lease, the resource as it is now
// (nil if it left the pool) and the event of the outcome.
type CleanEndResult struct {
	Lease    *berth.Lease
	Resource *berth.Resource
	Event    *berth.Event
	// AlreadyEnded is set when the janitor had ended the lease before (a
	// retry whose first answer was lost); nothing changed, and Event is
	// nil.
	AlreadyEnded bool
}

// CleanEnd ends a cleaning lease with its outcome. Cleaned, the resource
// is free and goes to the first waiter; failed, it is dirty again after a
// backoff, or quarantined once it has failed the pool's MaxAttempts.
func (e *Engine) CleanEnd(ctx context.Context, p CleanEndParams) (*CleanEndResult, error) {
	switch {
	case p.OK && (p.Quarantine || p.Abandon):
		return nil, berth.FieldErrorf("quarantine", "a cleaning that worked cannot also quarantine or be abandoned")
	case len(p.Message) > maxReasonLen:
		return nil, berth.FieldErrorf("message", "is longer than %d bytes", maxReasonLen)
	case len(p.Output) > maxOutput:
		return nil, berth.FieldErrorf("output", "is longer than %d bytes (send its tail)", maxOutput)
	}
	if err := CheckText("message", p.Message); err != nil {
		return nil, err
	}
	// Output is what a program printed: kept, less any NUL.
	p.Output = StripNUL(p.Output)
	forced, err := e.holder(ctx, p.ID)
	if err != nil {
		return nil, err
	}
	p.Message = withForced(forced, p.Message)
	res, err := e.store.CleanEnd(ctx, &store.CleanEndParams{ID: p.ID, OK: p.OK, Quarantine: p.Quarantine, Abandon: p.Abandon,
		Message: p.Message, Output: p.Output, Policy: e.cleanPolicy, Actor: p.Actor, Now: e.clock.Now()})
	if errors.Is(err, store.ErrLeaseEnded) && res != nil && res.Lease != nil && res.Lease.Status == berth.LeaseReleased {
		return e.cleanEndedBefore(ctx, p, res.Lease)
	}
	if err != nil {
		return nil, e.leaseError(ctx, p.ID, err)
	}
	e.cleaningEnded(res.Lease.Type, res.Event)
	e.leaseEnded(res.Lease, res.Resource, res.Handoff)
	return &CleanEndResult{Lease: res.Lease, Resource: res.Resource, Event: res.Event}, nil
}

// cleanEndedBefore answers an end of cleaning lease l that its janitor
// had ended already: a retry whose first answer was lost, if it says the
// same (cleaned, or not), else a conflict that says how it ended.
func (e *Engine) cleanEndedBefore(ctx context.Context, p CleanEndParams, l *berth.Lease) (*CleanEndResult, error) {
	evs, err := e.store.EventList(ctx, &store.EventListParams{Resource: l.Resource, Kind: berth.EventJanitor, Desc: true, Limit: 100})
	if err != nil {
		return nil, storeError(err)
	}
	for _, ev := range evs {
		if ev.LeaseID != l.ID || ev.Reason == store.ReasonCleaning {
			continue
		}
		if cleaned := ev.Reason == store.ReasonCleaned; cleaned != p.OK {
			return nil, berth.Errorf(berth.EConflict, "cleaning lease %q was ended already, as %s: %s", l.ID, ev.Reason, ev.Message)
		}
		break
	}
	r, err := e.store.ResourceGet(ctx, l.Resource)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, storeError(err)
	}
	return &CleanEndResult{Lease: l, Resource: r, AlreadyEnded: true}, nil
}

// AdminParams describe an admin operation on one resource or pool.
type AdminParams struct {
	// Name is the resource; Type the pool, for a pool's drain.
	Name, Type string
	Reason     string
	Actor      string
	// Drain false undrains.
	Drain bool
	// To is where an unquarantined resource goes: berth.StateFree, or
	// berth.StateDirty (to be cleaned first; the default where its pool
	// has a janitor).
	To berth.State
}

// ResourceChange is a resource after an admin operation.
type ResourceChange struct {
	// Resource is nil when it left the pool.
	Resource *berth.Resource
	// Revoked is the lease a quarantine took away, if any.
	Revoked *berth.Lease
	// Unchanged is set when the resource already was as asked.
	Unchanged bool
}

// DefaultActor names who did an admin operation when the caller does not
// say.
const DefaultActor = "admin"

func (e *Engine) validateAdmin(p *AdminParams, reasonRequired bool) error {
	if p.Actor == "" {
		p.Actor = DefaultActor
	}
	if err := ValidateOwner("actor", p.Actor); err != nil {
		return err
	}
	if reasonRequired && p.Reason == "" {
		return berth.FieldErrorf("reason", "is required")
	}
	if len(p.Reason) > maxReasonLen {
		return berth.FieldErrorf("reason", "is longer than %d bytes", maxReasonLen)
	}
	return CheckText("reason", p.Reason)
}

// CheckText refuses text a client sends that contains a NUL byte: no
// reason or message needs one, and PostgreSQL cannot store it.
func CheckText(field, s string) error {
	if strings.IndexByte(s, 0) >= 0 {
		return berth.FieldErrorf(field, "contains a NUL byte")
	}
	return nil
}

// StripNUL drops NUL bytes from what a program printed, so that its
// outcome is recorded whatever it printed.
func StripNUL(s string) string { return strings.ReplaceAll(s, "\x00", "") }

func (e *Engine) resourceError(name string, err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return &berth.Error{Code: berth.ENotFound, Message: fmt.Sprintf("no resource %q", name)}
	}
	return storeError(err)
}

// adminDone finishes an admin operation: it wakes the waiters that were
// handed resources, and whoever follows events or the pool.
func (e *Engine) adminDone(res *store.ResourceChangeResult, typ string) *ResourceChange {
	for _, h := range res.Handoffs {
		e.handedOff(h)
	}
	if !res.Unchanged {
		e.published()
		if res.Resource != nil {
			typ = res.Resource.Type
		}
		e.touch(typ)
	}
	return &ResourceChange{Resource: res.Resource, Revoked: res.Revoked, Unchanged: res.Unchanged}
}

// Quarantine takes a resource out of service with a reason. A lease it
// has is revoked: its holder's next heartbeat learns that it is lost.
func (e *Engine) Quarantine(ctx context.Context, p AdminParams) (*ResourceChange, error) {
	if err := e.validateAdmin(&p, true); err != nil {
		return nil, err
	}
	res, err := e.store.ResourceQuarantine(ctx, &store.ResourceQuarantineParams{Name: p.Name, Reason: p.Reason, Actor: p.Actor, Now: e.clock.Now()})
	if err != nil {
		return nil, e.resourceError(p.Name, err)
	}
	if res.Revoked != nil {
		e.LeaseEnded(res.Revoked.ID)
	}
	return e.adminDone(res, ""), nil
}

// Unquarantine returns a quarantined resource to service: to be cleaned
// first, where its pool has a janitor, unless p.To says free.
func (e *Engine) Unquarantine(ctx context.Context, p AdminParams) (*ResourceChange, error) {
	if err := e.validateAdmin(&p, true); err != nil {
		return nil, err
	}
	r, err := e.Resource(ctx, p.Name)
	if err != nil {
		return nil, err
	}
	pool := e.policyFor(r.Type)
	switch p.To {
	case "":
		p.To = berth.StateDirty
		if pool.Janitor == JanitorNone {
			p.To = berth.StateFree
		}
	case berth.StateFree:
	case berth.StateDirty:
		if pool.Janitor == JanitorNone {
			return nil, berth.FieldErrorf("to", "pool %q has no janitor to clean it: unquarantine it to free", r.Type)
		}
	default:
		return nil, berth.FieldErrorf("to", "must be %q or %q, not %q", berth.StateFree, berth.StateDirty, p.To)
	}
	res, err := e.store.ResourceUnquarantine(ctx, &store.ResourceUnquarantineParams{Name: p.Name, To: p.To, Reason: p.Reason,
		HandoffTTL: pool.LeaseTTL, Actor: p.Actor, Now: e.clock.Now()})
	if err != nil {
		return nil, e.resourceError(p.Name, err)
	}
	return e.adminDone(res, r.Type), nil
}

// DrainResource drains a resource (it is not leased again; a lease it has
// runs out as usual) or, with p.Drain false, undrains it.
func (e *Engine) DrainResource(ctx context.Context, p AdminParams) (*ResourceChange, error) {
	if err := e.validateAdmin(&p, p.Drain); err != nil {
		return nil, err
	}
	r, err := e.Resource(ctx, p.Name)
	if err != nil {
		return nil, err
	}
	res, err := e.store.ResourceDrain(ctx, &store.ResourceDrainParams{Name: p.Name, Drain: p.Drain, Reason: p.Reason,
		HandoffTTL: e.policyFor(r.Type).LeaseTTL, Actor: p.Actor, Now: e.clock.Now()})
	if err != nil {
		return nil, e.resourceError(p.Name, err)
	}
	return e.adminDone(res, r.Type), nil
}

// PoolDrainResult says whether a pool's drain changed anything.
type PoolDrainResult struct {
	Pool      *berth.Pool
	Unchanged bool
}

// DrainPool drains a whole pool (nothing of it is leased; leases run out
// as usual; waiters keep waiting) or, with p.Drain false, undrains it.
func (e *Engine) DrainPool(ctx context.Context, p AdminParams) (*PoolDrainResult, error) {
	if err := e.validateAdmin(&p, p.Drain); err != nil {
		return nil, err
	}
	pool, ok := e.pool(p.Type)
	if !ok {
		return nil, store.UnknownPoolError(p.Type)
	}
	res, err := e.store.PoolDrain(ctx, &store.PoolDrainParams{Type: p.Type, Drain: p.Drain, Reason: p.Reason, HandoffTTL: pool.LeaseTTL,
		Actor: p.Actor, Now: e.clock.Now()})
	if err != nil {
		return nil, storeError(err)
	}
	for _, h := range res.Handoffs {
		e.handedOff(h)
	}
	if !res.Unchanged {
		e.published()
		e.touch(p.Type)
	}
	got, err := e.Pool(ctx, p.Type)
	if err != nil {
		return nil, err
	}
	return &PoolDrainResult{Pool: got, Unchanged: res.Unchanged}, nil
}

// AddParams describe a resource added at runtime.
type AddParams struct {
	Type     string
	Name     string
	UserData map[string]string
	Labels   map[string]string
	Reason   string
	Actor    string
}

// AddResource adds a free resource to a pool without a restart; it goes
// to the first waiter it suits. The config does not know it: a start-up
// leaves it alone while its pool is configured.
func (e *Engine) AddResource(ctx context.Context, p AddParams) (*ResourceChange, error) {
	ap := AdminParams{Reason: p.Reason, Actor: p.Actor}
	if err := e.validateAdmin(&ap, false); err != nil {
		return nil, err
	}
	if err := ValidateResource(p.Name, p.UserData, p.Labels); err != nil {
		return nil, err
	}
	pool, ok := e.pool(p.Type)
	switch {
	case p.Type == "":
		return nil, berth.FieldErrorf("type", "is required")
	case !ok:
		return nil, store.UnknownPoolError(p.Type)
	case pool.Dynamic != nil:
		return nil, berth.Errorf(berth.EConflict, "pool %q is dynamic: its provisioner makes its resources", p.Type)
	}
	res, err := e.store.ResourceAdd(ctx, &store.ResourceAddParams{Type: p.Type, Spec: store.ResourceSpec{Name: p.Name, UserData: p.UserData, Labels: p.Labels},
		Source: berth.SourceAPI, Message: p.Reason, HandoffTTL: pool.LeaseTTL, Actor: ap.Actor, Now: e.clock.Now()})
	if err != nil {
		return nil, storeError(err)
	}
	e.probeNew(pool, p.Name)
	return e.adminDone(res, p.Type), nil
}

// Bounds of a resource's user data and labels, as the config has them.
const (
	maxUserDataValue = 64 << 10
	maxLabelValue    = 63
	maxMapKeys       = 256
)

// ValidateResource checks a resource's name, user data and labels as the
// config does.
func ValidateResource(name string, userData, labels map[string]string) error {
	if name == "" {
		return berth.FieldErrorf("name", "is required")
	}
	if !berth.ValidName(name) {
		return berth.FieldErrorf("name", "%q is not a valid resource name (letters, digits, '.', '_', '-'; at most 253)", store.Head(name, 64))
	}
	if len(userData) > maxMapKeys {
		return berth.FieldErrorf("userData", "has more than %d keys", maxMapKeys)
	}
	if n := store.UserDataBytes(userData); n > store.MaxUserDataBytes {
		return berth.FieldErrorf("userData", "is %d bytes in all, more than %d", n, store.MaxUserDataBytes)
	}
	for k, v := range userData {
		if k == "" || len(k) > 253 {
			return berth.FieldErrorf("userData", "keys must be 1 to 253 characters")
		}
		if len(v) > maxUserDataValue {
			return berth.FieldErrorf("userData."+k, "is longer than %d bytes", maxUserDataValue)
		}
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return berth.FieldErrorf("userData", "is not valid UTF-8")
		}
		if strings.IndexByte(k, 0) >= 0 || strings.IndexByte(v, 0) >= 0 {
			return berth.FieldErrorf("userData", "contains a NUL byte")
		}
	}
	if len(labels) > maxMapKeys {
		return berth.FieldErrorf("labels", "has more than %d keys", maxMapKeys)
	}
	for k, v := range labels {
		if !berth.ValidLabelKey(k) {
			return berth.FieldErrorf("labels", "%q is not a valid label key", store.Head(k, 64))
		}
		if len(v) > maxLabelValue {
			return berth.FieldErrorf("labels."+k, "is longer than %d characters", maxLabelValue)
		}
		if strings.IndexByte(v, 0) >= 0 {
			return berth.FieldErrorf("labels."+k, "contains a NUL byte")
		}
	}
	return nil
}

// RetireResource takes a resource added at runtime out of its pool: at
// once if no lease holds it, else when its lease ends. A resource of a
// dynamic pool goes to its deprovisioner. One the config declares is
// refused: the config would add it again at the next start.
func (e *Engine) RetireResource(ctx context.Context, p AdminParams) (*ResourceChange, error) {
	if err := e.validateAdmin(&p, false); err != nil {
		return nil, err
	}
	res, err := e.store.ResourceRetire(ctx, &store.ResourceRetireParams{Name: p.Name, Reason: p.Reason, Actor: p.Actor, Now: e.clock.Now()})
	if err != nil {
		return nil, e.resourceError(p.Name, err)
	}
	typ := ""
	if res.Resource != nil {
		typ = res.Resource.Type
	}
	return e.adminDone(res, typ), nil
}

// Provisioned adds a resource that pool typ's provisioner made.
func (e *Engine) Provisioned(ctx context.Context, typ string, spec store.ResourceSpec, message, output, actor string) (*ResourceChange, error) {
	if err := ValidateResource(spec.Name, spec.UserData, spec.Labels); err != nil {
		return nil, err
	}
	pool := e.policyFor(typ)
	message, output = StripNUL(message), StripNUL(output)
	res, err := e.store.ResourceAdd(ctx, &store.ResourceAddParams{Type: typ, Spec: spec, Source: berth.SourceDynamic, Message: message, Output: output,
		HandoffTTL: pool.LeaseTTL, Actor: actor, Now: e.clock.Now()})
	if err != nil {
		return nil, storeError(err)
	}
	e.probeNew(pool, spec.Name)
	return e.adminDone(res, typ), nil
}

// probeNew asks for a new resource of a probed pool to be probed at once:
// until it is, it is Unknown, which such a pool may not lease.
func (e *Engine) probeNew(pool Pool, name string) {
	if pool.Probe != "" && e.probeNow != nil {
		e.probeNow(name)
	}
}

// DeleteBegin hands an unleased resource of a dynamic pool to its
// deprovisioner: it is deleting, and never leased again. again takes one
// already deleting whose backoff has passed.
func (e *Engine) DeleteBegin(ctx context.Context, name, reason string, again bool, actor string) (*berth.Resource, error) {
	r, err := e.store.ResourceDeleteBegin(ctx, &store.ResourceDeleteBeginParams{Name: name, Reason: reason, Again: again, Actor: actor, Now: e.clock.Now()})
	if err != nil {
		return nil, e.resourceError(name, err)
	}
	e.published()
	return r, nil
}

// DeleteEnd records the deprovisioner's outcome for a resource: deleted,
// it leaves the pool; failed, it is tried again after a backoff, or
// quarantined after policy's MaxAttempts failures.
func (e *Engine) DeleteEnd(ctx context.Context, name string, ok bool, message, output string, policy CleanPolicy, actor string) (*berth.Resource, error) {
	r, err := e.store.ResourceDeleteEnd(ctx, &store.ResourceDeleteEndParams{Name: name, OK: ok, Message: StripNUL(message), Output: StripNUL(output),
		MaxAttempts: policy.MaxAttempts, Backoff: policy.Delay, Actor: actor, Now: e.clock.Now()})
	if err != nil {
		return nil, e.resourceError(name, err)
	}
	e.published()
	return r, nil
}

// RecordEvent writes an event that goes with no change of state (a
// provisioner that failed), stamped with the engine's time.
func (e *Engine) RecordEvent(ctx context.Context, ev *berth.Event) error {
	ev.Time = e.clock.Now()
	ev.Message, ev.Output = StripNUL(ev.Message), StripNUL(ev.Output)
	if err := e.store.EventRecord(ctx, ev); err != nil {
		return storeError(err)
	}
	e.published()
	return nil
}

// PoolPolicy returns the policy of pool typ as the engine applies it.
func (e *Engine) PoolPolicy(typ string) (Pool, bool) { return e.pool(typ) }
