package lease

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/store"
)

// Dynamic types of a Boskos config (pools with OnDemand): berth makes
// their resources itself, as records in the type's initial state for an
// outside builder (a Boskos janitor or mason) to make real, as Boskos'
// ranch does. A new request that finds nothing makes one, up to MaxCount;
// the type keeps at least MinCount.

// ActorOnDemand is the actor of the resources berth makes on demand.
const ActorOnDemand = "berth-on-demand"

// onDemandName names a new resource of typ: the type and twelve random hex
// digits, a DNS-1123 label when the type is one.
func onDemandName(typ string) string {
	var b [6]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return typ + "-" + hex.EncodeToString(b[:])
}

// makeOnDemand makes one resource of pool, which has OnDemand, if it has
// fewer than max resources. A failure is logged: the request that asked
// finds nothing either way, and asks again.
func (e *Engine) makeOnDemand(ctx context.Context, pool Pool, max int, why string) bool {
	for range 3 { // a clash of random names is retried
		res, err := e.store.ResourceAdd(ctx, &store.ResourceAddParams{Type: pool.Type, Spec: store.ResourceSpec{Name: onDemandName(pool.Type)},
			Source: berth.SourceDynamic, State: pool.InitialState, MaxTotal: max, Message: why, HandoffTTL: pool.LeaseTTL,
			Actor: ActorOnDemand, Now: e.clock.Now()})
		var be *berth.Error
		switch {
		case errors.Is(err, store.ErrPoolFull):
			return false
		case errors.As(err, &be) && be.Code == berth.EConflict:
			continue
		case err != nil:
			e.log.Warn("could not make a resource on demand", "type", pool.Type, "err", err)
			return false
		}
		for _, h := range res.Handoffs {
			e.handedOff(h)
		}
		e.published()
		e.touch(pool.Type)
		e.probeNew(pool, res.Resource.Name)
		return true
	}
	return false
}

// onDemandRequest is called when request id of pool joined the queue
// finding nothing: a pool that makes resources on demand makes one.
func (e *Engine) onDemandRequest(ctx context.Context, pool Pool, id string) {
	if pool.OnDemand == nil {
		return
	}
	e.makeOnDemand(context.WithoutCancel(ctx), pool, pool.OnDemand.MaxCount, fmt.Sprintf("made on demand for request %s", id))
}

// States of a Boskos dynamic type's resources on their way out: an
// outside cleaner takes a toBeDeleted one, tears down what it was, and
// releases it to tombstone; berth then removes it.
const (
	StateToBeDeleted berth.State = "toBeDeleted"
	StateTombstone   berth.State = "tombstone"
)

// Tend does for every pool that makes resources on demand what Boskos'
// ranch does on each sync: unleased tombstones are removed; unleased
// resources past their lifespan go toBeDeleted, as do unleased ones above
// MaxCount (say, after it was lowered); and the pool is made up to
// MinCount, counting what is on its way out until it is a tombstone.
// berth runs it at start-up and then on the leader every OnDemandInterval.
func (e *Engine) Tend(ctx context.Context) error {
	e.mu.Lock()
	var pools []Pool
	for _, p := range e.pools {
		if p.OnDemand != nil {
			pools = append(pools, p)
		}
	}
	e.mu.Unlock()
	for _, p := range pools {
		if err := e.tend(ctx, p); err != nil {
			return fmt.Errorf("tend %s: %w", p.Type, err)
		}
	}
	return nil
}

// OnDemandInterval is how often the leader tends the pools that make
// resources on demand.
const OnDemandInterval = 10 * time.Second

func (e *Engine) tend(ctx context.Context, pool Pool) error {
	rs, err := e.store.ResourceList(ctx, &store.ResourceListParams{Type: pool.Type})
	if err != nil {
		return err
	}
	now := e.clock.Now()
	var lifespan time.Duration
	if pool.Dynamic != nil {
		lifespan = time.Duration(pool.Dynamic.Lifespan)
	}
	set := func(r *berth.Resource, to berth.State, reason, msg string) error {
		_, err := e.store.ResourceSetState(ctx, &store.ResourceSetStateParams{Name: r.Name, From: r.State, To: to, Reason: reason,
			Message: msg, Actor: ActorOnDemand, Now: now})
		if errors.Is(err, store.ErrStateChanged) || errors.Is(err, store.ErrNotFound) {
			return nil // leased or moved meanwhile: the next pass sees it
		}
		return err
	}
	tombstones, leaving := 0, 0
	var idle []*berth.Resource
	for _, r := range rs {
		switch {
		case r.LeaseID != "":
			// Only what nobody holds is touched.
		case r.State == StateTombstone:
			if err := set(r, "", "removed", "a tombstone: its cleaner is done with it"); err != nil {
				return err
			}
			tombstones++
		case r.State == StateToBeDeleted:
			leaving++
		case lifespan > 0 && r.CreatedAt != nil && now.After(r.CreatedAt.Add(lifespan)):
			if err := set(r, StateToBeDeleted, "expired", fmt.Sprintf("past its lifespan of %s", lifespan)); err != nil {
				return err
			}
			leaving++
		case r.State != berth.StateQuarantined && r.State != berth.StateDeleting:
			idle = append(idle, r)
		}
	}
	active := len(rs) - tombstones
	// Over MaxCount: the idle ones with the last names go first.
	slices.SortFunc(idle, func(a, b *berth.Resource) int { return strings.Compare(b.Name, a.Name) })
	for _, r := range idle[:min(max(active-leaving-pool.OnDemand.MaxCount, 0), len(idle))] {
		if err := set(r, StateToBeDeleted, "over max-count", fmt.Sprintf("the type keeps at most %d", pool.OnDemand.MaxCount)); err != nil {
			return err
		}
	}
	// Up to MinCount, bounded by MinCount itself in the store: replicas
	// that tend at once never make more than it between them.
	for n := active; n < pool.OnDemand.MinCount; n++ {
		if !e.makeOnDemand(ctx, pool, pool.OnDemand.MinCount, fmt.Sprintf("the type keeps at least %d", pool.OnDemand.MinCount)) {
			break
		}
	}
	e.published()
	e.touch(pool.Type)
	return nil
}
