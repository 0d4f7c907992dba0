package lease

import (
	"time"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/store"
)

// Observer is told what the engine did, for metrics. Its methods are
// called on the engine's paths and must not block.
type Observer interface {
	// LeaseGranted: a lease of a pool of type typ went to a job, at once
	// (waited < 0) or after it had waited in the queue for waited.
	LeaseGranted(typ string, waited time.Duration)
	// LeaseExpired: a lease ran out without a heartbeat and was reaped.
	LeaseExpired(typ string, kind berth.LeaseKind)
	// CleaningEnded: a cleaning ended with outcome, the reason of its
	// event (cleaned, clean-failed, clean-abandoned, quarantined).
	CleaningEnded(typ, outcome string)
}

type noObserver struct{}

func (noObserver) LeaseGranted(string, time.Duration)   {}
func (noObserver) LeaseExpired(string, berth.LeaseKind) {}
func (noObserver) CleaningEnded(string, string)         {}

// handedOff wakes the long poll of the request h served, and counts the
// lease it was given.
func (e *Engine) handedOff(h store.Handoff) {
	e.observer.LeaseGranted(h.Type, max(h.Waited, 0))
	e.wake(h.RequestID)
}

// cleaningEnded counts a cleaning that ended as its event says.
func (e *Engine) cleaningEnded(typ string, ev *berth.Event) {
	if ev != nil {
		e.observer.CleaningEnded(typ, ev.Reason)
	}
}
