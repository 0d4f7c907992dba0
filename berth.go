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
)

// KnownStates lists the well-known states in lifecycle order, for tables and
// metrics that want a stable order.
var KnownStates = []State{StateFree, StateBusy, StateDirty, StateCleaning, StateQuarantined}

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
	// Retiring is set when the resource was removed from the config while
	// leased: it leaves the pool once its lease ends.
	Retiring bool `json:"retiring,omitempty"`
}

// LeaseStatus tells whether a lease still holds its resource.
type LeaseStatus string

const (
	LeaseActive   LeaseStatus = "active"
	LeaseReleased LeaseStatus = "released"
	LeaseExpired  LeaseStatus = "expired"
)

// Lease is one holder's claim on one resource.
type Lease struct {
	ID string `json:"id"`
	// Token is the fencing token: strictly increasing across all leases, so
	// a resource can tell a stale holder from the current one.
	Token      int64       `json:"token"`
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
}

// Pool is a type's resources with its policy and the current counts.
type Pool struct {
	Type     string   `json:"type"`
	LeaseTTL Duration `json:"leaseTTL"`
	// Janitor names the cleaning policy: "none" or "external".
	Janitor string `json:"janitor"`
	// Probe names the pool's probe kind ("tcp", "http", "kubernetes",
	// "exec"), empty when its resources are not probed.
	Probe  string               `json:"probe,omitempty"`
	Total  int                  `json:"total"`
	States map[State]int        `json:"states"`
	Health map[HealthStatus]int `json:"health"`
	// Leasable counts the free resources an acquire may be given now:
	// free, not retiring, and healthy enough for the pool.
	Leasable int `json:"leasable"`
	Waiters  int `json:"waiters"`
}

// EventKind groups events for filtering.
type EventKind string

const (
	EventState  EventKind = "state"
	EventLease  EventKind = "lease"
	EventHealth EventKind = "health"
	EventAdmin  EventKind = "admin"
	EventConfig EventKind = "config"
)

// Event is an immutable record of one transition.
type Event struct {
	ID       int64     `json:"id"`
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
}

// ReleaseTarget is what the holder says about a resource it gives back.
type ReleaseTarget string

const (
	// ReleaseDirty asks for the pool's cleaning policy (the default).
	ReleaseDirty ReleaseTarget = "dirty"
	// ReleaseFree vouches that the resource is clean: it skips the janitor.
	ReleaseFree ReleaseTarget = "free"
	// ReleaseBroken takes the resource out of service with a reason.
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
