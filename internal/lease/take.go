package lease

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/store"
)

// Leasing by state: what the Boskos-compatible API needs beyond berth's own
// acquire (free to busy) and release. A Boskos client names the state it
// takes a resource from and the one it moves it to; these are the same
// leases, fencing tokens, expiries and events as every other.

// MaxTakeNames bounds a take by name.
const MaxTakeNames = 1000

// TakeParams describe a take by state: one resource of Type in From, or
// every one of Names, each moving to To under a lease of its own.
type TakeParams struct {
	Type  string
	Names []string
	From  berth.State
	To    berth.State
	Owner string
	// RequestID holds a place in the queue of (Type, From) for Hold; see
	// store.LeaseTakeParams.
	RequestID string
	Hold      time.Duration
	// LeaseTTL, if set, replaces the pool's lease TTL (or its janitors'
	// for a take to cleaning).
	LeaseTTL time.Duration
	Actor    string
}

// TakeResult is what was taken, or the request's rank when nothing was.
type TakeResult struct {
	Leases    []*berth.Lease
	Resources []*berth.Resource
	Rank      int
}

// ValidateState checks a state name given by a client.
func ValidateState(field string, s berth.State) error {
	if s == "" {
		return berth.FieldErrorf(field, "is required")
	}
	if !berth.ValidName(string(s)) {
		return berth.FieldErrorf(field, "%q is not a valid state name (letters, digits, '.', '_', '-')", store.Head(string(s), 64))
	}
	return nil
}

// validateDest checks the state a client moves a leased resource to.
// Free, dirty, quarantined and deleting say that no lease holds a
// resource, so no lease may put one there.
func validateDest(field string, to berth.State) error {
	if err := ValidateState(field, to); err != nil {
		return err
	}
	switch to {
	case berth.StateFree, berth.StateDirty, berth.StateQuarantined, berth.StateDeleting:
		return berth.FieldErrorf(field, "%q is a state for resources that nobody holds; a lease moves a resource to busy, cleaning or a state of your own", to)
	}
	return nil
}

// unavailable says whether no client may take resources from state s:
// quarantined and deleting resources leave circulation, whatever a Boskos
// client asks.
func unavailable(s berth.State) bool {
	return s == berth.StateQuarantined || s == berth.StateDeleting
}

// Take leases resources by state. Nothing to take is an EExhausted error
// with the request's rank in TakeResult alongside.
func (e *Engine) Take(ctx context.Context, p TakeParams) (out *TakeResult, err error) {
	defer func() {
		if out != nil {
			for _, l := range out.Leases {
				e.holders.remember(l)
			}
		}
	}()
	if err := ValidateOwner("owner", p.Owner); err != nil {
		return nil, err
	}
	if err := ValidateState("state", p.From); err != nil {
		return nil, err
	}
	if err := validateDest("dest", p.To); err != nil {
		return nil, err
	}
	if p.RequestID != "" && !validRequestID(p.RequestID) {
		return nil, berth.FieldErrorf("request_id", "must be 1 to %d letters, digits, '-', '_', '.' or ':'", maxRequestID)
	}
	ttl := p.LeaseTTL
	var pool Pool
	if len(p.Names) > 0 {
		if len(p.Names) > MaxTakeNames {
			return nil, berth.FieldErrorf("names", "lists more than %d resources", MaxTakeNames)
		}
		// A name listed twice is taken once, as Boskos takes it.
		seen := make(map[string]bool, len(p.Names))
		names := make([]string, 0, len(p.Names))
		for _, n := range p.Names {
			if !berth.ValidName(n) {
				return nil, berth.FieldErrorf("names", "%q is not a valid resource name", store.Head(n, 64))
			}
			if !seen[n] {
				seen[n] = true
				names = append(names, n)
			}
		}
		p.Names = names
		if ttl <= 0 {
			ttl = DefaultLeaseTTL
		}
	} else {
		if p.Type == "" {
			return nil, berth.FieldErrorf("type", "is required")
		}
		var ok bool
		pool, ok = e.pool(p.Type)
		if !ok {
			return nil, &berth.Error{Code: berth.EUnknownType, Field: "type", Message: fmt.Sprintf("no pool of type %q", p.Type)}
		}
		if ttl <= 0 {
			ttl = pool.LeaseTTL
			if p.To == berth.StateCleaning {
				ttl = pool.CleanLeaseTTL
			}
		}
	}
	if unavailable(p.From) {
		return &TakeResult{Rank: 1}, berth.Errorf(berth.EExhausted, "no %s resource is ever leased", p.From)
	}
	now := e.clock.Now()
	sp := &store.LeaseTakeParams{Type: p.Type, Names: p.Names, From: p.From, To: p.To, Owner: p.Owner, LeaseTTL: ttl, Now: now,
		Actor: actorOr(p.Actor, p.Owner)}
	if p.RequestID != "" && len(p.Names) == 0 {
		sp.RequestID, sp.WaitUntil = p.RequestID, now.Add(p.Hold)
	}
	res, err := e.store.LeaseTake(ctx, sp)
	if err != nil {
		return nil, storeError(err)
	}
	if len(res.Leases) == 0 {
		if res.Joined {
			e.onDemandRequest(ctx, pool, p.RequestID)
		}
		return &TakeResult{Rank: res.Rank}, berth.Errorf(berth.EExhausted, "no %s resource to take", p.From)
	}
	e.published()
	for _, r := range res.Resources {
		e.touch(r.Type)
	}
	return &TakeResult{Leases: res.Leases, Resources: res.Resources}, nil
}

// Update is a heartbeat that also merges user data into the resource's
// (a key set to "" is deleted), as a Boskos holder's update does.
func (e *Engine) Update(ctx context.Context, id string, userData map[string]string) (*HeartbeatResult, error) {
	if userData == nil {
		userData = map[string]string{}
	}
	for k, v := range userData {
		if k == "" || len(k) > 253 {
			return nil, berth.FieldErrorf("userdata", "keys must be 1 to 253 bytes")
		}
		if len(v) > maxUserDataValue {
			return nil, berth.FieldErrorf("userdata."+store.Head(k, 64), "is longer than %d bytes", maxUserDataValue)
		}
		if strings.IndexByte(k, 0) >= 0 || strings.IndexByte(v, 0) >= 0 {
			return nil, berth.FieldErrorf("userdata", "contains a NUL byte")
		}
	}
	if _, err := e.holder(ctx, id); err != nil {
		return nil, err
	}
	res, err := e.store.LeaseHeartbeat(ctx, &store.LeaseHeartbeatParams{ID: id, Now: e.clock.Now(), UserData: userData, UserDataField: "userdata"})
	if err != nil {
		return nil, e.leaseError(ctx, id, err)
	}
	e.published()
	return &HeartbeatResult{Lease: res.Lease, Resource: res.Resource}, nil
}

// ReleaseToParams describe a release to a state the client names.
type ReleaseToParams struct {
	ID     string
	To     berth.State
	Reason string
	Actor  string
	// Reset: the lease is taken from a holder that went quiet, not given
	// back by it.
	Reset bool
}

// ReleaseTo ends a lease, moving its resource to the state the holder
// names, within berth's rules: to dirty, the pool's cleaning policy
// applies (a pool without a janitor frees it); to quarantined, it is a
// report that the resource is broken; a janitor's cleaning lease ended to
// free or dirty is a cleaning that worked or failed, counted as such.
func (e *Engine) ReleaseTo(ctx context.Context, p ReleaseToParams) (*berth.Resource, error) {
	if err := validateReleaseDest(p.To); err != nil {
		return nil, err
	}
	forced, err := e.holder(ctx, p.ID)
	if err != nil {
		return nil, err
	}
	p.Reason = withForced(forced, p.Reason)
	l, err := e.store.LeaseGet(ctx, p.ID)
	if err != nil {
		return nil, e.leaseError(ctx, p.ID, err)
	}
	if l.Kind == berth.LeaseClean && (p.To == berth.StateFree || p.To == berth.StateDirty || p.To == berth.StateQuarantined) {
		msg := fmt.Sprintf("%s released it to %s", l.Owner, p.To)
		if p.Reset {
			msg = p.Reason
		}
		// A cleaning taken from a janitor that went quiet did not
		// finish: it failed, whatever state the reset names.
		res, err := e.CleanEnd(ctx, CleanEndParams{ID: p.ID, OK: p.To == berth.StateFree && !p.Reset, Quarantine: p.To == berth.StateQuarantined,
			Message: msg, Actor: p.Actor})
		if err != nil {
			return nil, err
		}
		return res.Resource, nil
	}
	var decide func(string) store.Outcome
	switch p.To {
	case berth.StateDirty:
		decide = func(typ string) store.Outcome { return outcome(e.policyFor(typ), berth.ReleaseDirty) }
	case berth.StateFree:
		decide = func(typ string) store.Outcome { return outcome(e.policyFor(typ), berth.ReleaseFree) }
	case berth.StateQuarantined:
		if p.Reason == "" {
			p.Reason = fmt.Sprintf("%s released it to quarantined", l.Owner)
		}
		decide = func(string) store.Outcome { return store.Outcome{To: berth.StateQuarantined} }
	default:
		decide = func(string) store.Outcome { return store.Outcome{To: p.To} }
	}
	res, err := e.store.LeaseRelease(ctx, &store.LeaseReleaseParams{ID: p.ID, AnyKind: true, Decide: func(typ string) store.Outcome {
		o := decide(typ)
		o.HandoffTTL = e.policyFor(typ).LeaseTTL
		return o
	}, Reason: p.Reason, Actor: p.Actor, Now: e.clock.Now()})
	if err != nil {
		return nil, e.leaseError(ctx, p.ID, err)
	}
	e.leaseEnded(res.Lease, res.Resource, res.Handoff)
	return res.Resource, nil
}

// validateReleaseDest checks the state a holder releases a resource to.
func validateReleaseDest(to berth.State) error {
	if err := ValidateState("dest", to); err != nil {
		return err
	}
	switch to {
	case berth.StateBusy, berth.StateCleaning, berth.StateDeleting:
		return berth.FieldErrorf("dest", "%q is a state only berth puts a resource in", to)
	}
	return nil
}

// LastUpdate is when a Boskos client last heard of the resource: the
// last heartbeat (or the acquire) of the lease that holds it, else its
// last change of state.
func LastUpdate(r *berth.Resource, l *berth.Lease) time.Time {
	if l != nil && l.ID == r.LeaseID {
		return l.ExpiresAt.Add(-time.Duration(l.TTL))
	}
	return r.StateChangedAt
}

// ResetParams say which holders a reset takes resources from.
type ResetParams struct {
	Type  string
	State berth.State
	// Expire: holders not heard from for this long lose their resources.
	Expire time.Duration
	// Dest is where the resources go, as a release names it.
	Dest  berth.State
	Actor string
}

// Reset takes every resource of p.Type in p.State from its holder if the
// holder has not been heard from for p.Expire, moving it to p.Dest, and
// returns the names taken with their holders (Boskos' reaper does this;
// berth's own leases expire by themselves).
func (e *Engine) Reset(ctx context.Context, p ResetParams) (map[string]string, error) {
	typ, state, expire, dest, actor := p.Type, p.State, p.Expire, p.Dest, p.Actor
	if err := ValidateState("state", state); err != nil {
		return nil, err
	}
	// Checked before anything matches: a bad dest is bad whether or not
	// a resource is to be reset.
	if err := validateReleaseDest(dest); err != nil {
		return nil, err
	}
	out := map[string]string{}
	if _, ok := e.pool(typ); !ok {
		return out, nil
	}
	ctx = context.WithValue(ctx, anyHolder{}, true)
	rs, err := e.store.ResourceList(ctx, &store.ResourceListParams{Type: typ, State: state})
	if err != nil {
		return nil, storeError(err)
	}
	now := e.clock.Now()
	for _, r := range rs {
		if r.LeaseID == "" {
			continue
		}
		l, err := e.store.LeaseGet(ctx, r.LeaseID)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, storeError(err)
		}
		if now.Sub(LastUpdate(r, l)) < expire {
			continue
		}
		_, err = e.ReleaseTo(ctx, ReleaseToParams{ID: l.ID, To: dest, Actor: actor, Reset: true,
			Reason: fmt.Sprintf("reset: %s sent no update for %s", l.Owner, expire)})
		var be *berth.Error
		if errors.As(err, &be) && be.Code == berth.ELeaseLost {
			continue // ended meanwhile
		}
		if err != nil {
			return nil, err
		}
		out[r.Name] = l.Owner
	}
	return out, nil
}
