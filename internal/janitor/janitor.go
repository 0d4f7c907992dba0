package janitor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/command"
	"github.com/berth-ci/berth/internal/lease"
	"github.com/berth-ci/berth/internal/store"
)

// Pool is a pool that berth's own janitor cleans.
type Pool struct {
	Type string
	// Command cleans a dirty resource; DeepCommand, if set, one that its
	// holder reported broken (else Command runs, with BERTH_CLEAN_DEEP
	// set).
	Command, DeepCommand []string
	// Timeout kills a cleaning that runs longer; it counts as failed.
	Timeout time.Duration
	// Concurrency is how many of the pool's resources are cleaned at
	// once.
	Concurrency int
}

// Defaults of Pool.
const (
	DefaultTimeout     = 15 * time.Minute
	DefaultConcurrency = 4
)

// DefaultOwner names berth's own janitor on its leases and events.
const DefaultOwner = "berth-janitor"

// Options configure a Janitor.
type Options struct {
	Engine *lease.Engine
	Clock  clockwork.Clock
	Logger *slog.Logger
	Pools  []Pool
	// Owner names the janitor on its leases and events; default
	// DefaultOwner.
	Owner string
	// Env is the environment the commands start from (berth's own,
	// usually); the resource's is added to it.
	Env []string
	// Poll, if set, makes the janitor look for dirty resources at this
	// interval too, for a store that several processes share: a
	// resource another replica leaves dirty is not announced here.
	Poll time.Duration
}

// Janitor runs the pools' janitor commands on their dirty resources.
type Janitor struct {
	opts  Options
	pools []Pool
	types []string

	mu      sync.Mutex
	running map[string]int // cleanings under way, by pool
	// active is closed when the cleaning of the resource it is keyed by
	// has ended, command and all: a cleaning of the same resource that
	// begins before (it was revoked, unquarantined and dirty again) waits
	// for it, so that two commands never clean one resource at once.
	active map[string]chan struct{}
	// finished is told when a cleaning ends: a slot is free.
	finished chan struct{}
	jobs     sync.WaitGroup
}

// New returns a janitor for opts.Pools.
func New(opts Options) *Janitor {
	if opts.Clock == nil {
		opts.Clock = clockwork.NewRealClock()
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Owner == "" {
		opts.Owner = DefaultOwner
	}
	j := &Janitor{opts: opts, running: map[string]int{}, active: map[string]chan struct{}{}, finished: make(chan struct{}, 1)}
	for _, p := range opts.Pools {
		if p.Timeout <= 0 {
			p.Timeout = DefaultTimeout
		}
		if p.Concurrency <= 0 {
			p.Concurrency = DefaultConcurrency
		}
		j.pools = append(j.pools, p)
		j.types = append(j.types, p.Type)
	}
	return j
}

// Run cleans until ctx ends, then waits for the cleanings under way: they
// are killed, and their resources are dirty again at once (an abandoned
// attempt does not count against them).
func (j *Janitor) Run(ctx context.Context) {
	defer j.jobs.Wait()
	loop(ctx, j.opts.Clock, j.opts.Engine, j.types, j.opts.Poll, j.finished, j.RunOnce)
}

// RunOnce claims, in each pool, as many dirty resources as the pool has
// free slots, and starts cleaning each. It returns the earliest time a
// resource waiting out a backoff may be claimed (zero if none).
func (j *Janitor) RunOnce(ctx context.Context) time.Time {
	// berth's janitor holds its cleaning leases as a principal of its own:
	// with authentication on, no token but an admin's may heartbeat or
	// end them.
	ctx = berth.WithPrincipal(ctx, berth.Principal{Name: j.opts.Owner, Role: berth.RoleJanitor})
	var next time.Time
	for _, p := range j.pools {
		for j.slots(p) > 0 && ctx.Err() == nil {
			c, err := j.opts.Engine.CleanClaim(ctx, lease.CleanClaimParams{Type: p.Type, Owner: j.opts.Owner})
			if err != nil {
				if ctx.Err() == nil {
					j.opts.Logger.Warn("janitor could not claim a dirty resource", "type", p.Type, "err", err)
				}
				break
			}
			if c.Lease == nil {
				next = earliest(next, c.NextAt)
				break
			}
			j.start(ctx, p, c)
		}
	}
	return next
}

func (j *Janitor) slots(p Pool) int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return p.Concurrency - j.running[p.Type]
}

func (j *Janitor) start(ctx context.Context, p Pool, c *lease.CleanClaimResult) {
	name := c.Resource.Name
	done := make(chan struct{})
	j.mu.Lock()
	j.running[p.Type]++
	before := j.active[name]
	j.active[name] = done
	j.mu.Unlock()
	j.jobs.Go(func() {
		defer func() {
			j.mu.Lock()
			j.running[p.Type]--
			if j.active[name] == done {
				delete(j.active, name)
			}
			j.mu.Unlock()
			close(done)
			signal(j.finished)
		}()
		if before != nil {
			<-before // its command is being killed: a moment
		}
		j.clean(ctx, p, c)
	})
}

// Why a cleaning's command was stopped.
var (
	errTimeout   = errors.New("timed out")
	errLeaseLost = errors.New("the cleaning lease was lost")
)

// clean runs the pool's command on the claimed resource, heartbeating the
// cleaning lease meanwhile, and ends the lease with the outcome.
func (j *Janitor) clean(ctx context.Context, p Pool, c *lease.CleanClaimResult) {
	l, r := c.Lease, c.Resource
	log := j.opts.Logger.With("resource", r.Name, "type", r.Type, "lease", l.ID, "attempt", c.Attempt)
	run, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	// The heartbeat's ticker and the timeout's timer exist before the
	// command starts: a test's clock that moves on once the command runs
	// moves them too.
	every := max(time.Duration(l.TTL)/3, minHeartbeat)
	ticker := j.opts.Clock.NewTicker(every)
	// Watched from before the look below: a quarantine that revokes the
	// lease at any moment from now on stops the command at once.
	ended, unwatch := j.opts.Engine.WatchLease(l.ID)
	if cur, err := j.opts.Engine.Lease(ctx, l.ID); err != nil || cur.Status != berth.LeaseActive {
		ticker.Stop()
		unwatch()
		log.Warn("cleaning not started: its lease ended first (revoked by a quarantine, or expired)", "err", err)
		return
	}
	timeout := j.opts.Clock.AfterFunc(p.Timeout, func() { stop(errTimeout) })
	beats := make(chan struct{})
	go func() {
		defer close(beats)
		j.heartbeat(run, l, ticker, ended, unwatch, stop)
	}()
	argv := p.Command
	if r.DeepClean && len(p.DeepCommand) > 0 {
		argv = p.DeepCommand
	}
	log.Info("cleaning", "deep", r.DeepClean)
	res := command.Run(run, command.Spec{Argv: argv, Env: j.env(c), Stdin: userDataJSON(r), Tail: store.MaxOutput, DieWithBerth: true})
	timeout.Stop()
	cause := context.Cause(run)
	stop(nil)
	<-beats

	end := lease.CleanEndParams{ID: l.ID, Output: res.Output, Actor: j.opts.Owner}
	switch {
	case res.Err == nil:
		end.OK = true
	case errors.Is(cause, errLeaseLost):
		log.Warn("cleaning stopped: its lease was lost (revoked by a quarantine, or expired)")
		return
	case errors.Is(cause, errTimeout):
		end.Message = fmt.Sprintf("timed out after %s (the command was killed)", p.Timeout)
	case ctx.Err() != nil:
		end.Abandon, end.Message = true, "berth stopped cleaning (it shut down, or no longer leads)"
	default:
		end.Message = res.Describe()
	}
	// Reported even as berth stops, bounded: a store that does not answer
	// leaves the lease to expire, which counts as a failure.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	done, err := j.opts.Engine.CleanEnd(rctx, end)
	switch {
	case berth.ErrorCodeOf(err) == berth.ELeaseLost:
		log.Warn("cleaning finished after its lease was lost", "outcome", end.Message)
	case err != nil:
		log.Error("could not record the end of a cleaning; its lease will expire", "err", err)
	default:
		log.Info("cleaning ended", "outcome", done.Event.Reason, "to", done.Event.To, "message", done.Event.Message)
	}
}

// minHeartbeat bounds how often a cleaning lease is heartbeated.
const minHeartbeat = 100 * time.Millisecond

// heartbeat keeps cleaning lease l alive, at each tick of t, until ctx
// ends; if the lease is lost, it stops the cleaning (stop with
// errLeaseLost). Word that the lease may have ended (a quarantine revoked
// it) makes it look at once, not at its next tick.
func (j *Janitor) heartbeat(ctx context.Context, l *berth.Lease, t clockwork.Ticker, ended <-chan struct{}, unwatch func(), stop context.CancelCauseFunc) {
	defer t.Stop()
	defer func() { unwatch() }()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
		case <-ended:
		}
		// Watch for the next round before this look, so that an end
		// between the two is not missed.
		unwatch()
		ended, unwatch = j.opts.Engine.WatchLease(l.ID)
		_, err := j.opts.Engine.Heartbeat(ctx, l.ID)
		switch code := berth.ErrorCodeOf(err); {
		case err == nil, ctx.Err() != nil:
		case code == berth.ELeaseLost || code == berth.ENotFound:
			stop(errLeaseLost)
			return
		default:
			// The store may be back before the lease runs out.
			j.opts.Logger.Warn("janitor heartbeat failed", "lease", l.ID, "err", err)
		}
	}
}

// env is the command's environment: berth's, the resource's (as for
// every command berth runs for a resource), and the cleaning's.
func (j *Janitor) env(c *lease.CleanClaimResult) []string {
	r := c.Resource
	env := append(append([]string{}, j.opts.Env...), berth.ResourceEnv(r.Name, r.Type, r.UserData)...)
	env = append(env, "BERTH_LEASE_ID="+c.Lease.ID, "BERTH_LEASE_TOKEN="+strconv.FormatInt(c.Lease.Token, 10),
		"BERTH_CLEAN_ATTEMPT="+strconv.Itoa(c.Attempt), "BERTH_CLEAN_DEEP="+strconv.FormatBool(r.DeepClean))
	if r.DeepClean {
		env = append(env, "BERTH_CLEAN_REASON="+r.StateReason)
	}
	return env
}

// userDataJSON is the resource's user data as the command reads it on
// its standard input.
func userDataJSON(r *berth.Resource) []byte {
	ud := r.UserData
	if ud == nil {
		ud = map[string]string{}
	}
	b, _ := json.Marshal(ud) // a map of strings always marshals
	return append(b, '\n')
}
