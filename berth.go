// Package berth holds the domain types shared by every part of the broker:
// resources, leases, pools, events and the states they move through. It has
// no dependencies beyond the standard library so that the public client can
// import it without pulling in the server.
package berth

import (
	"maps"
	"regexp"
	"slices"
	"time"
)

// State is where a resource is in its lifecycle. It is a string so that
// Boskos-style janitors can use state names of their own; the constants are
// the ones berth itself acts on.
type State string

const (
	StateFree        State = "free"        // can be leased
	StateBusy        State = "busy"        // leased to a job
	StateDirty       State = "dirty"       // released or expired, needs cleaning
	StateCleaning    State = "cleaning"    // a janitor holds it
	StateQuarantined State = "quarantined" // out of service, with a reason
	// StateDeleting: a resource of a dynamic pool that its deprovisioner
	// is deleting; it is never leased again and leaves the pool once the
	// deprovisioner succeeds.
	StateDeleting State = "deleting"
)

// KnownStates lists the well-known states in lifecycle order, for tables and
// metrics that want a stable order.
var KnownStates = []State{StateFree, StateBusy, StateDirty, StateCleaning, StateQuarantined, StateDeleting}

// HealthStatus is a resource's reachability, orthogonal to its State.
type HealthStatus string

const (
	HealthUnknown      HealthStatus = "Unknown"
	HealthConnected    HealthStatus = "Connected"
	HealthDisconnected HealthStatus = "Disconnected"
)

// Health is the last known reachability of a resource with the reason for it.
// Every field is always written (times as null until a probe ran), as
// DESIGN.md lists them.
type Health struct {
	Status             HealthStatus `json:"status"`
	Reason             string       `json:"reason"`
	Message            string       `json:"message"`
	LastProbeTime      *time.Time   `json:"lastProbeTime"`
	LastTransitionTime *time.Time   `json:"lastTransitionTime"`
}

// Resource is one leasable thing of a type.
type Resource struct {
	Name  string `json:"name"`
	Type  string `json:"type"`
	State State  `json:"state"`
	// StateReason says why the resource is in its state, where that needs
	// saying (a quarantine, a retirement).
	StateReason string            `json:"stateReason,omitempty"`
	Owner       string            `json:"owner"`
	LeaseID     string            `json:"leaseId,omitempty"`
	UserData    map[string]string `json:"userData"`
	Labels      map[string]string `json:"labels"`
	Health      Health            `json:"health"`
	// StateChangedAt is when State last changed.
	StateChangedAt time.Time `json:"stateChangedAt"`
	// Retiring is set when the resource was removed from the config (or
	// retired by an admin) while leased: it leaves the pool once its lease
	// ends.
	Retiring bool `json:"retiring,omitempty"`
	// Draining is set when an admin drained the resource: it is not
	// leased again until undrained; a lease it has runs out as usual.
	Draining bool `json:"draining,omitempty"`
	// Source is where the resource came from: SourceConfig, SourceAPI
	// (added at runtime) or SourceDynamic (made by a pool's provisioner).
	Source string `json:"source"`
	// CleanAttempts counts the failed cleanings since the resource last
	// went dirty; NextCleanAt, while it is dirty after a failure, is when
	// the next may start (a backoff).
	CleanAttempts int        `json:"cleanAttempts,omitempty"`
	NextCleanAt   *time.Time `json:"nextCleanAt,omitempty"`
	// DeepClean is set on a dirty resource that its holder reported
	// broken in a pool that cleans broken resources instead of
	// quarantining them.
	DeepClean bool `json:"deepClean,omitempty"`
	// CreatedAt is when the resource joined the store; a dynamic pool's
	// lifespan counts from it.
	CreatedAt *time.Time `json:"createdAt,omitempty"`
}

// Where resources come from (Resource.Source).
const (
	SourceConfig  = "config"
	SourceAPI     = "api"
	SourceDynamic = "dynamic"
)

// LeaseStatus tells whether a lease still holds its resource.
type LeaseStatus string

const (
	LeaseActive   LeaseStatus = "active"
	LeaseReleased LeaseStatus = "released"
	LeaseExpired  LeaseStatus = "expired"
	// LeaseRevoked: an admin took the resource away (a quarantine).
	LeaseRevoked LeaseStatus = "revoked"
)

// LeaseKind says what a lease is for.
type LeaseKind string

const (
	// LeaseUse: a job uses the resource (it is busy).
	LeaseUse LeaseKind = "use"
	// LeaseClean: a janitor cleans the resource (it is cleaning).
	LeaseClean LeaseKind = "clean"
)

// Lease is one holder's claim on one resource.
type Lease struct {
	ID string `json:"id"`
	// Token is the fencing token: strictly increasing across all leases, so
	// a resource can tell a stale holder from the current one.
	Token      int64       `json:"token"`
	Kind       LeaseKind   `json:"kind"`
	Owner      string      `json:"owner"`
	Resource   string      `json:"resource"`
	Type       string      `json:"type"`
	Status     LeaseStatus `json:"status"`
	AcquiredAt time.Time   `json:"acquiredAt"`
	ExpiresAt  time.Time   `json:"expiresAt"`
	// TTL is how far each heartbeat pushes ExpiresAt.
	TTL       Duration   `json:"ttl"`
	EndedAt   *time.Time `json:"endedAt,omitempty"`
	RequestID string     `json:"requestId,omitempty"`
	// Principal is the token (or client certificate) that acquired the
	// lease; only it, or an admin, may heartbeat or end it. Empty when
	// berth ran without authentication.
	Principal string `json:"principal,omitempty"`
}

// Request is a waiting acquire. Requests of a type are served in order of
// priority (higher first) and then of arrival.
type Request struct {
	ID        string    `json:"id"`
	Type      string    `json:"type"`
	Owner     string    `json:"owner"`
	Priority  int       `json:"priority"`
	Selector  Selector  `json:"labels,omitempty"`
	CreatedAt time.Time `json:"createdAt"`
	// ExpiresAt is when the request gives up its place unless the client
	// polls again.
	ExpiresAt time.Time `json:"expiresAt"`
	// Position is 1 for the request that is served next.
	Position int `json:"position"`
	// Principal is the token that made the request; only it, or an
	// admin, may cancel it. Empty without authentication.
	Principal string `json:"principal,omitempty"`
}

// Pool is a type's resources with its policy and the current counts.
type Pool struct {
	Type     string   `json:"type"`
	LeaseTTL Duration `json:"leaseTTL"`
	// Janitor names the cleaning policy: "none" (released resources go
	// straight back to free), "command" (berth runs the pool's janitor
	// command) or "external" (a janitor cleans them through the API).
	Janitor string `json:"janitor"`
	// Draining is set when an admin drained the whole pool: nothing of it
	// is leased until it is undrained. DrainingResources counts the
	// resources drained one by one.
	Draining          bool `json:"draining"`
	DrainingResources int  `json:"drainingResources"`
	// Dynamic is set for a pool whose provisioner makes and deletes its
	// resources.
	Dynamic *Dynamic `json:"dynamic,omitempty"`
	// Probe names the pool's probe kind ("tcp", "http", "kubernetes",
	// "exec"), empty when its resources are not probed.
	Probe  string               `json:"probe,omitempty"`
	Total  int                  `json:"total"`
	States map[State]int        `json:"states"`
	Health map[HealthStatus]int `json:"health"`
	// Leasable counts the free resources an acquire may be given now:
	// free, not retiring, and healthy enough for the pool.
	Leasable int `json:"leasable"`
	// Leased counts the resources held under a lease now: a job's, or a
	// janitor's while it cleans.
	Leased  int `json:"leased"`
	Waiters int `json:"waiters"`
}

// Dynamic is the sizing policy of a dynamic pool.
type Dynamic struct {
	MinFree  int      `json:"minFree"`
	MaxTotal int      `json:"maxTotal"`
	Lifespan Duration `json:"lifespan,omitempty"`
}

// EventKind groups events for filtering.
type EventKind string

const (
	EventState  EventKind = "state"
	EventLease  EventKind = "lease"
	EventHealth EventKind = "health"
	EventAdmin  EventKind = "admin"
	EventConfig EventKind = "config"
	// EventJanitor: a cleaning attempt and its outcome, with the
	// janitor's output.
	EventJanitor EventKind = "janitor"
	// EventProvision: a dynamic pool made or deleted a resource, or
	// failed to.
	EventProvision EventKind = "provision"
)

// EventKinds lists every kind of event, for filters that must refuse
// the others.
var EventKinds = []EventKind{EventState, EventLease, EventHealth, EventAdmin, EventConfig, EventJanitor, EventProvision}

// Event is an immutable record of one transition.
type Event struct {
	ID       int64     `json:"id,omitempty"` // 0 only on an event returned with the write that made it, before it has an id
	Time     time.Time `json:"time"`
	Resource string    `json:"resource"`
	Type     string    `json:"type"`
	Kind     EventKind `json:"kind"`
	From     string    `json:"from,omitempty"`
	To       string    `json:"to,omitempty"`
	Reason   string    `json:"reason,omitempty"`
	Actor    string    `json:"actor,omitempty"`
	LeaseID  string    `json:"leaseId,omitempty"`
	Token    int64     `json:"token,omitempty"`
	Message  string    `json:"message,omitempty"`
	// Output is what a janitor, provisioner or deprovisioner printed (the
	// tail, bounded), on the event of its attempt.
	Output string `json:"output,omitempty"`
	// Remote is the address of the client whose request made the change;
	// empty for berth's own loops (reaper, janitor, prober, config).
	Remote string `json:"remote,omitempty"`
}

// ReleaseTarget is what the holder says about a resource it gives back.
type ReleaseTarget string

const (
	// ReleaseDirty asks for the pool's cleaning policy (the default).
	ReleaseDirty ReleaseTarget = "dirty"
	// ReleaseFree vouches that the resource is clean: it skips the janitor.
	ReleaseFree ReleaseTarget = "free"
	// ReleaseBroken reports the resource broken, with a reason: it is
	// quarantined, or cleaned deeply, as its pool says.
	ReleaseBroken ReleaseTarget = "broken"
)

// Selector picks resources by label equality: every key must be present
// with exactly that value.
type Selector map[string]string

// Matches reports whether labels satisfy every term of s.
func (s Selector) Matches(labels map[string]string) bool {
	for k, v := range s {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// Keys returns the selector's keys in sorted order, for stable SQL.
func (s Selector) Keys() []string {
	return slices.Sorted(maps.Keys(s))
}

var (
	namePattern  = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]{0,251}[A-Za-z0-9])?$`)
	labelPattern = regexp.MustCompile(`^([A-Za-z0-9][A-Za-z0-9.-]{0,252}/)?[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$`)
)

// ValidName reports whether s may name a resource or a type:
// 1 to 253 characters of letters, digits, '.', '_' and '-', starting and
// ending with a letter or digit. Names appear in URLs, file names and
// environment variables, so the set is kept small.
func ValidName(s string) bool { return namePattern.MatchString(s) }

// ValidLabelKey reports whether s is a label key in the Kubernetes style:
// an optional DNS prefix and a slash, then a name of at most 63 characters.
func ValidLabelKey(s string) bool { return labelPattern.MatchString(s) }

// Token is a bearer token as berth keeps it: its name and role, never the
// token itself (the store holds only its SHA-256).
type Token struct {
	Name      string    `json:"name"`
	Role      Role      `json:"role"`
	CreatedAt time.Time `json:"createdAt"`
	// CreatedBy is who made it (the operator's name, or the admin token
	// that created it).
	CreatedBy string `json:"createdBy,omitempty"`
}
