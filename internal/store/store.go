// Package store is the seam between the lease engine and durable state. The
// engine decides what should happen; a Store makes each decision happen
// atomically and durably. Every implementation passes the conformance suite
// in store/storetest.
package store

import (
	"context"
	"errors"
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
	// Janitor is "none" or "external".
	Janitor string
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
	Resources []ResourceSpec
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
}

type LeaseHeartbeatParams struct {
	ID  string
	Now time.Time
}

type LeaseHeartbeatResult struct {
	Lease    *berth.Lease
	Resource *berth.Resource
}

type LeaseReleaseParams struct {
	ID string
	// To is the state the resource goes to, unless Decide is set.
	To berth.State
	// Decide, if set, chooses To and HandoffTTL from the lease's type once
	// the lease is read inside the transaction, sparing a read before it.
	Decide func(leaseType string) (to berth.State, handoffTTL time.Duration)
	// Expired ends the lease as expired rather than released, and only if
	// it is still past its expiry at Now (a heartbeat may have raced).
	Expired bool
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

// Handoff records that a waiting request was given a lease.
type Handoff struct {
	RequestID string
	LeaseID   string
	Type      string
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
	Since    time.Time // events at or after this time
	AfterID  int64     // events with a larger id
	Limit    int
	// Desc returns the newest first (before Limit applies).
	Desc bool
}
