// Package store is the seam between the lease engine and durable state. The
// engine decides what should happen; a Store makes each decision happen
// atomically and durably. Every implementation passes the conformance suite
// in store/storetest.
package store

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/berth-ci/berth"
)

// ErrNotFound is returned when a named row does not exist. Implementations
// map their driver's "no rows" to it and never turn other failures into it.
var ErrNotFound = errors.New("not found")

// ErrLeaseEnded is returned by lease mutations on a lease that has already
// been released or has expired.
var ErrLeaseEnded = errors.New("lease ended")

// ErrLeaseActive is returned when a lease is to be expired but a heartbeat
// renewed it first.
var ErrLeaseActive = errors.New("lease is still active")

// CleanLeaseError is the error for ending a cleaning lease as if it were
// a job's: a janitor says whether the cleaning worked.
func CleanLeaseError(id string) error {
	return berth.Errorf(berth.EConflict, "lease %q is a janitor's cleaning lease: end it as cleaned or failed, not released", id)
}

// Store is durable state. Every method that changes state does so in one
// transaction and records the matching events in it.
type Store interface {
	// Ping checks that the store answers.
	Ping(ctx context.Context) error
	Close() error
	// SchemaVersion is the version of the schema the store migrated its
	// database to when it opened.
	SchemaVersion() int

	// PoolSync reconciles the stored pools and resources with the config.
	PoolSync(ctx context.Context, p *PoolSyncParams) (*PoolSyncResult, error)
	PoolList(ctx context.Context) ([]*berth.Pool, error)

	ResourceGet(ctx context.Context, name string) (*berth.Resource, error)
	ResourceList(ctx context.Context, p *ResourceListParams) ([]*berth.Resource, error)

	// LeaseAcquire leases a free resource, or queues (or re-queues) a
	// request when there is none and the params ask to wait.
	LeaseAcquire(ctx context.Context, p *LeaseAcquireParams) (*LeaseAcquireResult, error)
	LeaseGet(ctx context.Context, id string) (*berth.Lease, error)
	// LeaseHeartbeat pushes an active lease's expiry to Now + its TTL.
	// It returns the resource too, so the holder learns what happened to it.
	LeaseHeartbeat(ctx context.Context, p *LeaseHeartbeatParams) (*LeaseHeartbeatResult, error)
	// LeaseRelease ends a lease and moves its resource on; a resource that
	// becomes free goes straight to the first eligible waiting request.
	LeaseRelease(ctx context.Context, p *LeaseReleaseParams) (*LeaseReleaseResult, error)
	// LeaseListExpired lists active leases whose expiry is at or before Now.
	LeaseListExpired(ctx context.Context, p *LeaseListExpiredParams) ([]*berth.Lease, error)
	// LeaseTake leases resources by state, as Boskos clients ask: one
	// unleased resource of a type in state From, or every one of a list of
	// names (all or none), each moving to state To under a lease of its
	// own. A request id holds a place in the queue of (type, From) and is
	// served only when there are at least as many candidates as its rank.
	LeaseTake(ctx context.Context, p *LeaseTakeParams) (*LeaseTakeResult, error)

	// RequestGet returns a waiting request with its position at Now.
	RequestGet(ctx context.Context, p *RequestGetParams) (*berth.Request, error)
	// RequestCancel removes a waiting request; ErrNotFound if none waits.
	RequestCancel(ctx context.Context, id string) error
	// RequestShorten brings a waiting request's expiry forward to
	// ExpiresAt (never later): its long poll ended early, so its hold on
	// its place, and on a resource handed to it meanwhile, runs from now.
	RequestShorten(ctx context.Context, p *RequestShortenParams) error
	// RequestPrune deletes waiting requests that expired before Now.
	RequestPrune(ctx context.Context, now time.Time) (int, error)

	// ResourceHealth records probe results. A change of status or reason
	// is written with an event; a result that changes neither only moves
	// the last probe time. A free resource that becomes leasable goes
	// straight to the first eligible waiting request.
	ResourceHealth(ctx context.Context, p *ResourceHealthParams) (*ResourceHealthResult, error)

	EventList(ctx context.Context, p *EventListParams) ([]*berth.Event, error)
	// EventRecord writes an event that goes with no change of state: a
	// provisioner that failed to make a resource, say.
	EventRecord(ctx context.Context, e *berth.Event) error

	// CleanClaim leases a dirty resource of a type to a janitor: the
	// resource moves to cleaning under a lease of kind clean, which is
	// heartbeated like any other and, if it runs out, counts as a failed
	// cleaning.
	CleanClaim(ctx context.Context, p *CleanClaimParams) (*CleanClaimResult, error)
	// CleanEnd ends a cleaning lease with its outcome: cleaned, the
	// resource is free (and goes to the first waiter); failed, it is dirty
	// again with one more failed attempt and a time before which it is not
	// tried again, or quarantined once it has failed MaxAttempts times.
	CleanEnd(ctx context.Context, p *CleanEndParams) (*CleanEndResult, error)

	// ResourceAdd adds a resource to a pool at runtime.
	ResourceAdd(ctx context.Context, p *ResourceAddParams) (*ResourceChangeResult, error)
	// ResourceRetire takes a resource out of its pool at runtime: at once
	// if it is not leased, else when its lease ends (it is retiring).
	ResourceRetire(ctx context.Context, p *ResourceRetireParams) (*ResourceChangeResult, error)
	// ResourceQuarantine takes a resource out of service with a reason,
	// revoking its lease if it has one.
	ResourceQuarantine(ctx context.Context, p *ResourceQuarantineParams) (*ResourceChangeResult, error)
	// ResourceUnquarantine returns a quarantined resource to To (dirty or
	// free).
	ResourceUnquarantine(ctx context.Context, p *ResourceUnquarantineParams) (*ResourceChangeResult, error)
	// ResourceDrain drains (or undrains) one resource: a drained resource
	// is not leased; a lease it has runs out as usual.
	ResourceDrain(ctx context.Context, p *ResourceDrainParams) (*ResourceChangeResult, error)
	// PoolDrain drains (or undrains) a whole pool.
	PoolDrain(ctx context.Context, p *PoolDrainParams) (*PoolDrainResult, error)

	// ResourceDeleteBegin moves a resource of a dynamic pool that no lease
	// holds to deleting, for its deprovisioner; an EConflict error if it
	// is leased (or already deleting, unless Again).
	ResourceDeleteBegin(ctx context.Context, p *ResourceDeleteBeginParams) (*berth.Resource, error)
	// ResourceDeleteEnd records a deprovisioner's outcome: done, the
	// resource is removed; failed, it stays deleting and is tried again
	// after a backoff, or is quarantined after MaxAttempts failures.
	ResourceDeleteEnd(ctx context.Context, p *ResourceDeleteEndParams) (*berth.Resource, error)

	// ResourceSetState moves a resource that no lease holds from state From
	// to To, or removes it when To is "" (a Boskos dynamic type's tended
	// resources: expired ones to toBeDeleted, tombstones away). It
	// returns ErrStateChanged, changing nothing, if the resource is
	// leased or not in From. To is never free: nobody is handed it.
	ResourceSetState(ctx context.Context, p *ResourceSetStateParams) (*berth.Resource, error)

	// TokenCreate stores a bearer token's hash under a name, with an event
	// (kind admin); an EConflict error if the name is taken.
	TokenCreate(ctx context.Context, p *TokenCreateParams) (*berth.Token, error)
	// TokenList lists the tokens by name.
	TokenList(ctx context.Context) ([]*berth.Token, error)
	// TokenByHash returns the token whose SHA-256 is hash; ErrNotFound if
	// there is none (never made, or revoked).
	TokenByHash(ctx context.Context, hash string) (*berth.Token, error)
	// TokenRevoke deletes a token, with an event; ErrNotFound if none has
	// the name.
	TokenRevoke(ctx context.Context, p *TokenRevokeParams) (*berth.Token, error)

	// Check verifies the store's invariants (one active lease per resource
	// at most, leased states backed by an active lease, and so on) and
	// returns an error describing every violation it finds.
	Check(ctx context.Context) error
}

// HandoffListener is implemented by a store that several berth processes
// share. A handoff made in one process must wake the long poll of the
// request it served, which may run in another.
type HandoffListener interface {
	// ListenHandoffs calls fn with the request id of each handoff that any
	// process commits, until ctx ends. After it (re)connects, when it may
	// have missed some, it calls fn with "": every waiter should look
	// again. It returns when ctx ends.
	ListenHandoffs(ctx context.Context, fn func(requestID string))
}

// ProbeRequester is implemented by a store that several berth processes
// share. A wait for a resource to be ready (WaitReady) may be served by a
// replica that does not run the probes; it asks the leader, which does,
// to probe the resource at once.
type ProbeRequester interface {
	// RequestProbe asks every process that listens (ListenHandoffs) to
	// probe the resource at once: their fn receives ProbeRequestPrefix
	// followed by the resource's name.
	RequestProbe(ctx context.Context, name string) error
}

// ProbeRequestPrefix marks a probe request among the request ids that
// ListenHandoffs delivers; '/' is never in a request id.
const ProbeRequestPrefix = "probe/"

// LeaseEndedPrefix marks, among what ListenHandoffs delivers, the id of a
// lease that a replica ended other than through its holder (a quarantine
// revoked it): the holder may be berth's janitor on another replica.
const LeaseEndedPrefix = "lease-ended/"

// Leadership is implemented by a store that several berth processes
// share, so that background loops (the reaper, and later janitors, probes
// and dynamic pools) run in exactly one of them at a time.
type Leadership interface {
	// Lead runs fn while this process leads, under the name id, and tries
	// to lead again whenever it does not, until ctx ends. fn's context
	// ends when leadership is lost (the store can no longer vouch for it)
	// or ctx ends; Lead returns after fn has returned.
	Lead(ctx context.Context, id string, fn func(ctx context.Context))
	// Leader names the process that leads now, "" if none does.
	Leader(ctx context.Context) (string, error)
	// Tidy does the store's housekeeping where it is due; the leader
	// calls it every second.
	Tidy(ctx context.Context) error
}

type RequestShortenParams struct {
	ID        string
	ExpiresAt time.Time
}

type RequestGetParams struct {
	ID  string
	Now time.Time
}

// PoolPolicy is what the store needs to know of a pool to act on it.
type PoolPolicy struct {
	Type     string
	LeaseTTL time.Duration
	// Janitor is "none", "command" or "external".
	Janitor string
	// Dynamic is set for a pool whose provisioner makes its resources:
	// a sync never removes those it made while the pool is configured.
	Dynamic *berth.Dynamic
	// Probe names the pool's probe kind ("tcp", "http", …), "" for an
	// unprobed pool, whose resources' health is reset to Unknown.
	Probe string
	// RequireConnected: only Connected resources are leased, not Unknown
	// ones. Disconnected resources are never leased.
	RequireConnected bool
	// ProbeHash identifies the probe spec (what is probed, and where).
	// When it changes, the pool's resources are Unknown until probed
	// again; so is a resource that moves into the pool or whose user data
	// or labels change. Probe results made with another spec are dropped.
	ProbeHash string
	// InitialState is the state a resource new to the pool starts in:
	// free unless set (a Boskos config may say dirty, to be cleaned
	// first, or a state of its own janitors').
	InitialState berth.State
	Resources    []ResourceSpec
}

// ResourceSpec is a resource as the config declares it.
type ResourceSpec struct {
	Name     string
	UserData map[string]string
	Labels   map[string]string
}

type PoolSyncParams struct {
	Pools []PoolPolicy
	Now   time.Time
	Actor string
}

type PoolSyncResult struct {
	Added    []string
	Removed  []string
	Retiring []string // removed from config but leased: they leave when released
	// Handoffs are waiting requests that new resources went to.
	Handoffs []Handoff
}

type ResourceListParams struct {
	Type   string
	State  berth.State
	Health berth.HealthStatus
	Limit  int // 0 means no limit
	// AfterType and AfterName, when AfterName is set, list only the
	// resources after that one in the (type, name) order of the list: the
	// next page.
	AfterType, AfterName string
}

type LeaseAcquireParams struct {
	// To is the state the leased resource goes to; "" is busy. A Boskos
	// client names a state of its own.
	To       berth.State
	Type     string
	Owner    string
	Priority int
	Selector berth.Selector
	// RequestID makes acquire idempotent and keeps a waiter's place across
	// polls. Required when Wait is true.
	RequestID string
	// Wait queues the request when nothing is free instead of failing.
	Wait bool
	// ClaimOnly only returns a live lease already granted to RequestID
	// (a handoff, or an earlier acquire); it takes nothing and queues
	// nothing.
	ClaimOnly bool
	// WaitUntil is how long a queued request keeps its place without
	// another poll.
	WaitUntil time.Time
	LeaseTTL  time.Duration
	Now       time.Time
	Actor     string
}

type LeaseAcquireResult struct {
	// Either Lease and Resource are set, or Request is.
	Lease    *berth.Lease
	Resource *berth.Resource
	Request  *berth.Request
	// Joined says the request joined the queue with this call (it was
	// new, or had expired).
	Joined bool
}

type LeaseHeartbeatParams struct {
	ID  string
	Now time.Time
	// UserData, if set, is merged into the resource's user data with the
	// heartbeat: a key with the value "" is deleted. UserDataField names
	// it in the error of a merge that would be too large.
	UserData      map[string]string
	UserDataField string
}

type LeaseHeartbeatResult struct {
	Lease    *berth.Lease
	Resource *berth.Resource
}

type LeaseReleaseParams struct {
	ID string
	// To is the state the resource goes to, unless Decide is set. To
	// dirty, the resource starts its cleaning afresh; with Deep, it is
	// to be cleaned deeply (its holder reported it broken).
	To   berth.State
	Deep bool
	// Decide, if set, chooses To, Deep and HandoffTTL from the lease's
	// type once the lease is read inside the transaction, sparing a read
	// before it.
	Decide func(leaseType string) Outcome
	// Expired ends the lease as expired rather than released, and only if
	// it is still past its expiry at Now (a heartbeat may have raced).
	Expired bool
	// AnyKind ends a janitor's cleaning lease too, moving its resource to
	// To: a Boskos janitor releasing it to a state of its own.
	AnyKind bool
	Reason  string
	Actor   string
	Now     time.Time
	// HandoffTTL is the lease TTL given to a waiter the resource goes to.
	HandoffTTL time.Duration
}

type LeaseReleaseResult struct {
	Lease    *berth.Lease
	Resource *berth.Resource
	// Handoff is set when the resource went straight to a waiter.
	Handoff *Handoff
}

// Outcome is what becomes of a resource whose lease ends, as its pool's
// policy decides.
type Outcome struct {
	To         berth.State
	Deep       bool
	HandoffTTL time.Duration
}

// Handoff records that a waiting request was given a lease.
type Handoff struct {
	RequestID string
	LeaseID   string
	Type      string
	// Waited is how long the request had waited in the queue.
	Waited time.Duration
}

type LeaseTakeParams struct {
	// Type, with no Names, takes one resource of the type.
	Type string
	// Names takes every one of these resources, or none.
	Names []string
	// From is the state taken resources are in; To the one they move to.
	// A resource moving to cleaning is held under a lease of kind clean.
	From, To berth.State
	Owner    string
	// RequestID, with Type, holds a place in the queue of (Type, From)
	// until WaitUntil, extended by each call with the same id; a request
	// is served only when at least its rank (1 + the unexpired requests
	// ahead of it) resources are there to take. Without one, a call ranks
	// behind the whole queue. A retry by a request that was served gets
	// the same lease.
	RequestID string
	WaitUntil time.Time
	LeaseTTL  time.Duration
	Now       time.Time
	Actor     string
}

type LeaseTakeResult struct {
	// Leases and Resources, in the same order, are what was taken; empty
	// when nothing was.
	Leases    []*berth.Lease
	Resources []*berth.Resource
	// Rank is the request's rank when nothing was taken; Joined says the
	// request joined the queue with this call (it was new, or had
	// expired).
	Rank   int
	Joined bool
}

type LeaseListExpiredParams struct {
	Now   time.Time
	Limit int
}

// HealthUpdate is one probe result for one resource.
type HealthUpdate struct {
	Name string
	// Type is the pool the resource was probed as: if it has moved to
	// another pool since, the result is dropped.
	Type string
	// Status, Reason and Message are the new condition; the store sets
	// the transition time to Now when Status changes.
	Status  berth.HealthStatus
	Reason  string
	Message string
	// ProbeTime is when the probe was made; zero means Now.
	ProbeTime time.Time
	// LeaseTTL is the lease TTL given to a waiter the resource goes to.
	LeaseTTL time.Duration
	// ProbeHash is the PoolPolicy.ProbeHash of the spec the probe was
	// made with: a result for a pool whose stored spec differs (a
	// replica with another config leads) is dropped as Missing.
	ProbeHash string
}

type ResourceHealthParams struct {
	Updates []HealthUpdate
	Now     time.Time
	Actor   string
}

type ResourceHealthResult struct {
	// Changed are the events written: one per resource whose status or
	// reason changed.
	Changed []*berth.Event
	// Missing names resources that no longer exist or have moved to
	// another pool.
	Missing  []string
	Handoffs []Handoff
}

type EventListParams struct {
	Resource string
	Type     string
	Kind     berth.EventKind
	Actor    string
	Since    time.Time // events at or after this time
	AfterID  int64     // events with a larger id
	Limit    int
	// Desc returns the newest first (before Limit applies).
	Desc bool
}

type CleanClaimParams struct {
	Type string
	// Name, if set, claims that resource only.
	Name string
	// RequestID, if set, makes the claim idempotent: a retry returns the
	// live cleaning lease the first try got.
	RequestID string
	Owner     string
	LeaseTTL  time.Duration
	Now       time.Time
	Actor     string
}

type CleanClaimResult struct {
	// Lease and Resource are set when a resource was claimed; Attempt is
	// then the number of this cleaning (1 for the first since the
	// resource went dirty).
	Lease    *berth.Lease
	Resource *berth.Resource
	Attempt  int
	// NextAt, when nothing could be claimed, is the earliest time a dirty
	// resource of the type waiting out a backoff may be tried; zero when
	// none waits.
	NextAt time.Time
}

// CleanPolicy is what a pool says about a cleaning that ends.
type CleanPolicy struct {
	// MaxAttempts failed cleanings quarantine the resource; 0 never does.
	MaxAttempts int
	// Backoff is how long the resource waits before the attempt after
	// failed attempt n (1 for the first failure).
	Backoff func(n int) time.Duration
	// HandoffTTL is the lease TTL given to a waiter a cleaned resource
	// goes to.
	HandoffTTL time.Duration
	// NoJanitor: the pool has no janitor (any more: the config changed
	// while the resource was being cleaned). A resource that would be
	// dirty again is free instead, since nothing would clean it.
	NoJanitor bool
}

type CleanEndParams struct {
	ID string
	// OK: the resource is clean. Otherwise the cleaning failed; with
	// Quarantine, the janitor says no cleaning will help.
	OK         bool
	Quarantine bool
	// Expired ends the lease as expired (its janitor stopped
	// heartbeating), and only if it is past its expiry at Now.
	Expired bool
	// Abandon: the janitor stopped before it knew (berth shut down, or
	// lost the lead): the resource is dirty again at once, and the
	// attempt does not count.
	Abandon bool
	// Message says what happened; Output is what the janitor printed.
	Message string
	Output  string
	// Policy gives the policy of the pool the resource is in.
	Policy func(typ string) CleanPolicy
	Actor  string
	Now    time.Time
}

type CleanEndResult struct {
	Lease    *berth.Lease
	Resource *berth.Resource // nil when the resource left the pool
	Handoff  *Handoff
	// Event is the event of the outcome.
	Event *berth.Event
}

type ResourceAddParams struct {
	Type string
	Spec ResourceSpec
	// Source is berth.SourceAPI or berth.SourceDynamic.
	Source string
	// State is the state the resource starts in: free unless set (a
	// Boskos dynamic type's resources start in its initial state).
	State berth.State
	// MaxTotal, if set, adds the resource only while the pool has fewer
	// resources than that; else the add fails with ErrPoolFull.
	MaxTotal   int
	Message    string
	Output     string
	HandoffTTL time.Duration
	Actor      string
	Now        time.Time
}

// ErrPoolFull is returned by ResourceAdd when the pool already has
// MaxTotal resources.
var ErrPoolFull = errors.New("the pool has as many resources as it may")

// Initial is the state p's resource starts in.
func (p *ResourceAddParams) Initial() berth.State {
	if p.State == "" {
		return berth.StateFree
	}
	return p.State
}

// ResourceChangeResult is a resource after an admin operation.
type ResourceChangeResult struct {
	// Resource is nil when the resource left the pool.
	Resource *berth.Resource
	// Revoked is the lease a quarantine ended, if any.
	Revoked  *berth.Lease
	Handoffs []Handoff
	// Unchanged is set when the resource already was as asked.
	Unchanged bool
}

type ResourceRetireParams struct {
	Name   string
	Reason string
	Actor  string
	Now    time.Time
}

type ResourceQuarantineParams struct {
	Name   string
	Reason string
	Actor  string
	Now    time.Time
}

type ResourceUnquarantineParams struct {
	Name string
	// To is berth.StateDirty (to be cleaned first) or berth.StateFree.
	To         berth.State
	Reason     string
	HandoffTTL time.Duration
	Actor      string
	Now        time.Time
}

type ResourceDrainParams struct {
	Name string
	// Drain false undrains.
	Drain      bool
	Reason     string
	HandoffTTL time.Duration
	Actor      string
	Now        time.Time
}

type PoolDrainParams struct {
	Type       string
	Drain      bool
	Reason     string
	HandoffTTL time.Duration
	Actor      string
	Now        time.Time
}

type PoolDrainResult struct {
	Handoffs  []Handoff
	Unchanged bool
}

type ResourceSetStateParams struct {
	Name     string
	From, To berth.State
	// Reason and Message are the event's; Message is also the resource's
	// state reason.
	Reason, Message string
	Actor           string
	Now             time.Time
}

// ErrStateChanged is returned by ResourceSetState when the resource is
// not unleased in the state the caller saw.
var ErrStateChanged = errors.New("the resource is leased or in another state")

type ResourceDeleteBeginParams struct {
	Name   string
	Reason string
	// Again takes a resource already deleting whose backoff has passed
	// (a deprovisioner that failed, or that a leader running it lost).
	Again bool
	Actor string
	Now   time.Time
}

type ResourceDeleteEndParams struct {
	Name    string
	OK      bool
	Message string
	Output  string
	// MaxAttempts failed deletions quarantine the resource (0: never);
	// Backoff is the wait after failed attempt n.
	MaxAttempts int
	Backoff     func(n int) time.Duration
	Actor       string
	Now         time.Time
}

// Audited makes e say who caused it: the principal of the request whose
// write records it, if it has one — its name replaces the actor the
// engine named (a job's owner, an admin's claimed name), which a client
// could choose freely — and its address.
func Audited(e *berth.Event, p berth.Principal) {
	if p.Name != "" {
		e.Actor = p.Name
	}
	if p.Remote != "" {
		e.Remote = p.Remote
	}
}

// UnclaimedReason is the reason given when a lease handed to a waiter
// runs out before the waiter came for it.
func UnclaimedReason(l *berth.Lease) string {
	return fmt.Sprintf("handed to request %s of %s, which did not come for it within %s: never used, so free again", l.RequestID, l.Owner, l.ExpiresAt.Sub(l.AcquiredAt).Round(time.Millisecond))
}

// Bounds of a resource's user data after a holder's update merged into
// it: as many keys as the config allows, and a total that keeps one
// resource's row (and every answer that carries it) reasonable.
const (
	MaxUserDataKeys  = 256
	MaxUserDataBytes = 1 << 20
)

// MergeUserData returns have with update merged in: a key whose new value
// is "" is deleted, as Boskos merges a holder's user data. It refuses,
// with an EInvalid error naming field, a merge that grows the user data
// past MaxUserDataKeys or MaxUserDataBytes: repeated updates must not grow
// a resource without bound. One that does not grow it (a bare heartbeat,
// a deletion) passes, whatever size the config gave the resource.
func MergeUserData(field string, have, update map[string]string) (map[string]string, error) {
	out := make(map[string]string, len(have)+len(update))
	maps.Copy(out, have)
	for k, v := range update {
		if v == "" {
			delete(out, k)
		} else {
			out[k] = v
		}
	}
	if len(out) > MaxUserDataKeys && len(out) > len(have) {
		return nil, berth.FieldErrorf(field, "would have %d keys with this update, more than %d (send \"\" for a key to delete it)", len(out), MaxUserDataKeys)
	}
	if n := UserDataBytes(out); n > MaxUserDataBytes && n > UserDataBytes(have) {
		return nil, berth.FieldErrorf(field, "would be %d bytes with this update, more than %d", n, MaxUserDataBytes)
	}
	return out, nil
}

// UserDataBytes is the size of user data: its keys and values.
func UserDataBytes(m map[string]string) int {
	n := 0
	for k, v := range m {
		n += len(k) + len(v)
	}
	return n
}

type TokenCreateParams struct {
	Name string
	Role berth.Role
	// Hash is the hex SHA-256 of the token.
	Hash  string
	Actor string
	Now   time.Time
}

type TokenRevokeParams struct {
	Name  string
	Actor string
	Now   time.Time
}

// Reasons of the events of token changes (kind admin).
const (
	ReasonTokenCreated = "token-created"
	ReasonTokenRevoked = "token-revoked"
)
