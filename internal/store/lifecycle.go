package store

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/berth-ci/berth"
)

// The reasons written on the events of the lifecycle, for both stores.
const (
	ReasonCleaning       = "cleaning"
	ReasonCleaned        = "cleaned"
	ReasonCleanFailed    = "clean-failed"
	ReasonCleanAbandoned = "clean-abandoned"
	ReasonQuarantined    = "quarantined"
	ReasonUnquarantined  = "unquarantined"
	ReasonRevoked        = "revoked"
	ReasonDrained        = "drained"
	ReasonUndrained      = "undrained"
	ReasonAdded          = "added"
	ReasonRemoved        = "removed"
	ReasonRetiring       = "retiring"
	ReasonProvisioned    = "provisioned"
	ReasonDeprovisioning = "deprovisioning"
	ReasonDeprovisioned  = "deprovisioned"
	ReasonDeleteFailed   = "deprovision-failed"
)

// reasonTail bounds how much of a command's output a state reason quotes
// (the event of the attempt keeps more).
const reasonTail = 1024

// FailureReason is the state reason of a resource quarantined after
// attempts failures of what (cleaning, deprovisioning): the last failure's
// message and the tail of its output, bounded.
func FailureReason(what string, attempts int, message, output string) string {
	times := "once"
	if attempts != 1 {
		times = fmt.Sprintf("%d times", attempts)
	}
	var parts []string
	for _, p := range []string{message, Tail(strings.TrimSpace(output), reasonTail)} {
		if p != "" {
			parts = append(parts, p)
		}
	}
	last := strings.Join(parts, ": ")
	if last == "" {
		last = "no output"
	}
	return fmt.Sprintf("%s failed %s; the last time: %s", what, times, last)
}

// Tail is the last n bytes of s, cut at a character boundary, with "…"
// where the start was cut off.
func Tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[len(s)-n:]
	for len(s) > 0 && !utf8.RuneStart(s[0]) {
		s = s[1:]
	}
	return "…" + s
}

// Head is the first n bytes of s, cut at a character boundary, with "…"
// where the rest was cut off.
func Head(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s + "…"
}

// NotLeasedError is the error for an operation on a resource a lease
// holds that only an unleased one allows.
func NotLeasedError(r *berth.Resource, what string) error {
	return berth.Errorf(berth.EConflict, "resource %q is %s (lease %s of %s): %s", r.Name, r.State, r.LeaseID, r.Owner, what)
}

// MaxOutput bounds the output an event keeps of one attempt of a janitor,
// provisioner or deprovisioner: the tail, where the error usually is.
const MaxOutput = 8 << 10

// CleaningMessage is the message of the event of a janitor's claim.
func CleaningMessage(owner string, attempt int, deep bool) string {
	msg := fmt.Sprintf("cleaning attempt %d by %s", attempt, owner)
	if deep {
		msg += " (deep: reported broken)"
	}
	return msg
}

// UnknownPoolError is the error for a pool that is not configured.
func UnknownPoolError(typ string) error {
	return &berth.Error{Code: berth.EUnknownType, Field: "type", Message: fmt.Sprintf("no pool of type %q", typ)}
}

// ExistsError is the error for adding a resource whose name is taken.
func ExistsError(name, typ string) error {
	return &berth.Error{Code: berth.EConflict, Field: "name", Message: fmt.Sprintf("resource %q already exists (in pool %q)", name, typ)}
}

// CleanOutcome is what becomes of a resource whose cleaning lease ends.
type CleanOutcome struct {
	Event *berth.Event
	// Remove: the resource was retired meanwhile and leaves the pool.
	Remove bool
	To     berth.State
	// Reason, Attempts, NextAt and Deep are the resource's new
	// state_reason, clean_attempts, next_clean_at and deep_clean.
	Reason   string
	Attempts int
	NextAt   time.Time
	Deep     bool
}

// DecideClean applies pool policy pol to the end of cleaning lease l of
// resource r, as p reports it.
func DecideClean(p *CleanEndParams, pol CleanPolicy, r *berth.Resource, l *berth.Lease, t time.Time) CleanOutcome {
	actor := p.Actor
	if actor == "" {
		actor = l.Owner
	}
	attempt := r.CleanAttempts + 1
	ev := &berth.Event{Time: t, Resource: r.Name, Type: r.Type, Kind: berth.EventJanitor, From: string(berth.StateCleaning),
		Actor: actor, LeaseID: l.ID, Token: l.Token, Output: Tail(p.Output, MaxOutput)}
	of := ""
	if pol.MaxAttempts > 0 {
		of = fmt.Sprintf(" of %d", pol.MaxAttempts)
	}
	msg := p.Message
	if msg == "" {
		msg = "no reason given"
	}
	var o CleanOutcome
	switch {
	case p.OK:
		o.To, ev.Reason = berth.StateFree, ReasonCleaned
		ev.Message = fmt.Sprintf("cleaning attempt %d succeeded", attempt)
		if p.Message != "" {
			ev.Message += ": " + p.Message
		}
	case p.Abandon:
		o.To, o.Attempts, ev.Reason = berth.StateDirty, r.CleanAttempts, ReasonCleanAbandoned
		o.Reason, o.Deep = r.StateReason, r.DeepClean
		ev.Message = fmt.Sprintf("cleaning attempt %d abandoned: %s; it does not count", attempt, msg)
	case p.Quarantine:
		o.To, o.Attempts, ev.Reason = berth.StateQuarantined, attempt, ReasonQuarantined
		o.Reason = "the janitor gave up on it: " + FailureReason("cleaning", attempt, p.Message, p.Output)
		ev.Message = fmt.Sprintf("cleaning attempt %d%s failed and the janitor gave up: %s", attempt, of, msg)
	case pol.MaxAttempts > 0 && attempt >= pol.MaxAttempts:
		o.To, o.Attempts, ev.Reason = berth.StateQuarantined, attempt, ReasonQuarantined
		o.Reason = FailureReason("cleaning", attempt, p.Message, p.Output)
		ev.Message = fmt.Sprintf("cleaning attempt %d%s failed: %s; quarantined", attempt, of, msg)
	default:
		var wait time.Duration
		if pol.Backoff != nil {
			wait = pol.Backoff(attempt)
		}
		o.To, o.Attempts, o.NextAt, ev.Reason = berth.StateDirty, attempt, t.Add(wait), ReasonCleanFailed
		o.Reason, o.Deep = r.StateReason, r.DeepClean
		ev.Message = fmt.Sprintf("cleaning attempt %d%s failed: %s; next attempt in %s", attempt, of, msg, wait.Round(time.Millisecond))
	}
	if o.To == berth.StateDirty && pol.NoJanitor {
		// Nothing would clean it: as a pool without a janitor does.
		o.To, o.Attempts, o.NextAt, o.Reason, o.Deep = berth.StateFree, 0, time.Time{}, "", false
		ev.Message += "; the pool has no janitor now, so it is free"
	}
	ev.To = string(o.To)
	if r.Retiring && r.Source != berth.SourceDynamic {
		o.Remove, ev.To = true, ""
		ev.Message += "; resource removed from the pool (retired)"
	}
	o.Event = ev
	return o
}

// AddedEvent is the event of a resource added at runtime.
func AddedEvent(p *ResourceAddParams, t time.Time) *berth.Event {
	ev := &berth.Event{Time: t, Resource: p.Spec.Name, Type: p.Type, Kind: berth.EventAdmin, To: string(p.Initial()),
		Reason: ReasonAdded, Actor: p.Actor, Message: p.Message, Output: Tail(p.Output, MaxOutput)}
	if p.Source == berth.SourceDynamic {
		ev.Kind, ev.Reason = berth.EventProvision, ReasonProvisioned
	}
	return ev
}

// AdminEvent is the event of an admin operation that moves r to state to
// (or leaves it in its state).
func AdminEvent(r *berth.Resource, to berth.State, reason, actor, message string, t time.Time) *berth.Event {
	return &berth.Event{Time: t, Resource: r.Name, Type: r.Type, Kind: berth.EventAdmin, From: string(r.State), To: string(to),
		Reason: reason, Actor: actor, Message: message}
}

// DrainEvent is the event of a resource drained or undrained: its state
// does not change.
func DrainEvent(r *berth.Resource, reason, actor, message string, t time.Time) *berth.Event {
	return &berth.Event{Time: t, Resource: r.Name, Type: r.Type, Kind: berth.EventAdmin, Reason: reason, Actor: actor, Message: message}
}

// RevokedEvent is the event of a lease that a quarantine ends.
func RevokedEvent(r *berth.Resource, l *berth.Lease, actor, reason string, t time.Time) *berth.Event {
	return &berth.Event{Time: t, Resource: r.Name, Type: r.Type, Kind: berth.EventLease, From: string(r.State),
		To: string(berth.StateQuarantined), Reason: ReasonRevoked, Actor: actor, LeaseID: l.ID, Token: l.Token,
		Message: fmt.Sprintf("lease of %s revoked: quarantined by %s: %s", l.Owner, actor, reason)}
}

// PoolDrainEvent is the event of a pool drained or undrained.
func PoolDrainEvent(p *PoolDrainParams, t time.Time) *berth.Event {
	reason := ReasonUndrained
	if p.Drain {
		reason = ReasonDrained
	}
	return &berth.Event{Time: t, Type: p.Type, Kind: berth.EventAdmin, Reason: reason, Actor: p.Actor, Message: p.Reason}
}

// RetireDecision decides a runtime retirement of r: the event to write
// (nil when nothing changes) and whether the row goes at once.
func RetireDecision(p *ResourceRetireParams, r *berth.Resource, t time.Time) (*berth.Event, bool, error) {
	if r.Source == berth.SourceConfig {
		return nil, false, berth.Errorf(berth.EConflict, "resource %q is declared in the config: remove it there (berth adds "+
			"what the config declares at every start); to take it out of service now, quarantine or drain it", r.Name)
	}
	if r.Retiring || r.State == berth.StateDeleting {
		return nil, false, nil
	}
	ev := &berth.Event{Time: t, Resource: r.Name, Type: r.Type, Kind: berth.EventAdmin, From: string(r.State), To: string(r.State),
		Reason: ReasonRetiring, Actor: p.Actor}
	by := "retired by " + p.Actor
	if p.Reason != "" {
		by += ": " + p.Reason
	}
	switch {
	case r.Source == berth.SourceDynamic:
		ev.Message = by + "; its pool's deprovisioner deletes it once no lease holds it"
		return ev, false, nil
	case r.LeaseID != "":
		ev.Message = by + "; leaves the pool when its lease ends"
		return ev, false, nil
	}
	ev.To, ev.Reason, ev.Message = "", ReasonRemoved, by
	return ev, true, nil
}

// DeleteBeginDecision decides whether r may be handed to its pool's
// deprovisioner: the event to write, nil for a retry of a resource
// already deleting.
func DeleteBeginDecision(p *ResourceDeleteBeginParams, r *berth.Resource, t time.Time) (*berth.Event, error) {
	switch {
	case r.Source != berth.SourceDynamic:
		return nil, berth.Errorf(berth.EConflict, "resource %q was not made by a provisioner", r.Name)
	case r.LeaseID != "":
		return nil, NotLeasedError(r, "it can be deleted only once no lease holds it")
	case r.State == berth.StateDeleting && !p.Again:
		return nil, berth.Errorf(berth.EConflict, "resource %q is already being deleted", r.Name)
	case r.State == berth.StateDeleting && r.NextCleanAt != nil && r.NextCleanAt.After(t):
		return nil, berth.Errorf(berth.EConflict, "resource %q is not to be tried again before %s", r.Name, r.NextCleanAt.Format(time.RFC3339Nano))
	case r.State == berth.StateDeleting:
		return nil, nil
	}
	return &berth.Event{Time: t, Resource: r.Name, Type: r.Type, Kind: berth.EventProvision, From: string(r.State),
		To: string(berth.StateDeleting), Reason: ReasonDeprovisioning, Actor: p.Actor, Message: p.Reason}, nil
}

// DeleteOutcome is what becomes of a resource whose deprovisioner ended.
type DeleteOutcome struct {
	Event    *berth.Event
	Remove   bool
	To       berth.State
	Reason   string
	Attempts int
	NextAt   time.Time
}

// DecideDelete applies p, a deprovisioner's outcome, to r.
func DecideDelete(p *ResourceDeleteEndParams, r *berth.Resource, t time.Time) (DeleteOutcome, error) {
	if r.State != berth.StateDeleting {
		return DeleteOutcome{}, berth.Errorf(berth.EConflict, "resource %q is not being deleted (it is %s)", r.Name, r.State)
	}
	ev := &berth.Event{Time: t, Resource: r.Name, Type: r.Type, Kind: berth.EventProvision, From: string(berth.StateDeleting),
		Actor: p.Actor, Output: Tail(p.Output, MaxOutput)}
	attempt := r.CleanAttempts + 1
	msg := p.Message
	if msg == "" {
		msg = "no reason given"
	}
	var o DeleteOutcome
	switch {
	case p.OK:
		o.Remove, ev.Reason, ev.Message = true, ReasonDeprovisioned, "deleted by the deprovisioner"
		if p.Message != "" {
			ev.Message += ": " + p.Message
		}
	case p.MaxAttempts > 0 && attempt >= p.MaxAttempts:
		o.To, o.Attempts, ev.Reason = berth.StateQuarantined, attempt, ReasonQuarantined
		o.Reason = FailureReason("deprovisioning", attempt, p.Message, p.Output)
		ev.Message = fmt.Sprintf("deprovisioning attempt %d of %d failed: %s; quarantined", attempt, p.MaxAttempts, msg)
	default:
		var wait time.Duration
		if p.Backoff != nil {
			wait = p.Backoff(attempt)
		}
		o.To, o.Attempts, o.NextAt, o.Reason, ev.Reason = berth.StateDeleting, attempt, t.Add(wait), r.StateReason, ReasonDeleteFailed
		ev.Message = fmt.Sprintf("deprovisioning attempt %d failed: %s; next attempt in %s", attempt, msg, wait.Round(time.Millisecond))
	}
	ev.To = string(o.To)
	o.Event = ev
	return o, nil
}

// ReleaseReason is the state reason a released resource keeps: the
// holder's reason when it reported the resource broken (quarantined, or
// dirty to be cleaned deeply), else none.
func ReleaseReason(out Outcome, reason string) string {
	if out.To == berth.StateQuarantined || out.To == berth.StateDirty && out.Deep {
		return reason
	}
	return ""
}

// CleanEndRefused is the error of a CleanEnd that did not end lease l
// (read back): it is not a cleaning lease, a heartbeat renewed it before
// it could expire, or it has ended already.
func CleanEndRefused(l *berth.Lease, expired bool) error {
	switch {
	case l.Kind != berth.LeaseClean:
		return berth.Errorf(berth.EConflict, "lease %q is not a cleaning lease: release it", l.ID)
	case l.Status == berth.LeaseActive && expired:
		return ErrLeaseActive
	}
	return ErrLeaseEnded
}

// WhyRetiring says, for a message, why retiring resource r leaves its
// pool: the config no longer has it, or an admin retired it.
func WhyRetiring(r *berth.Resource) string {
	if r.Source == berth.SourceConfig {
		return "no longer in the config"
	}
	return "retired"
}
