package janitor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/command"
	"github.com/berth-ci/berth/internal/lease"
	"github.com/berth-ci/berth/internal/store"
)

// Command is a program a dynamic pool runs, with its time limit.
type Command struct {
	Argv    []string
	Timeout time.Duration
}

// DynamicPool is a pool whose resources a provisioner makes and a
// deprovisioner deletes.
type DynamicPool struct {
	Type string
	// MinFree resources are kept free (besides one for each waiting
	// request), up to MaxTotal resources in all.
	MinFree, MaxTotal int
	// Lifespan, if set, is how long a resource lives: past it, it is
	// deleted (and replaced) once no lease holds it.
	Lifespan time.Duration
	// Provision prints the new resource as JSON: {"name": …, "userData":
	// {…}, "labels": {…}}. Deprovision deletes the resource its
	// environment names.
	Provision, Deprovision Command
	// Concurrency bounds the provisionings, and apart from them the
	// deletions, under way at once.
	Concurrency int
	// Backoff spaces failed provisionings and deletions; MaxAttempts
	// failed deletions of one resource quarantine it.
	Backoff lease.CleanPolicy
}

// Default of DynamicPool.Concurrency.
const DefaultProvisionConcurrency = 2

// DefaultProvisionerOwner names the provisioner on its events.
const DefaultProvisionerOwner = "berth-provisioner"

// maxProvisionOutput bounds what a provisioner may print on its standard
// output (the JSON of one resource).
const maxProvisionOutput = 256 << 10

// ProvisionerOptions configure a Provisioner.
type ProvisionerOptions struct {
	Engine *lease.Engine
	Clock  clockwork.Clock
	Logger *slog.Logger
	Pools  []DynamicPool
	// Owner names the provisioner on its events; default
	// DefaultProvisionerOwner.
	Owner string
	// Env is the environment the commands start from.
	Env []string
	// Poll, if set, makes the provisioner look at its pools at this
	// interval too (for a store that several processes share).
	Poll time.Duration
	// Observer, if set, is told how each command ended (for metrics).
	Observer ProvisionerObserver
}

// ProvisionerObserver is told how each provisioner ("create") and
// deprovisioner ("delete") command ended, for metrics.
type ProvisionerObserver interface {
	ProvisionerRan(typ, action string, ok bool)
}

type noProvisionerObserver struct{}

func (noProvisionerObserver) ProvisionerRan(string, string, bool) {}

// Provisioner keeps dynamic pools at their size.
type Provisioner struct {
	opts  ProvisionerOptions
	pools []DynamicPool
	types []string

	mu sync.Mutex
	// making counts provisionings under way, by pool; deleting maps the
	// resources being deleted to their pools.
	making   map[string]int
	deleting map[string]string
	// failures counts a pool's provisionings that failed in a row;
	// retryAt is when it may try again.
	failures map[string]int
	retryAt  map[string]time.Time
	finished chan struct{}
	jobs     sync.WaitGroup
}

// NewProvisioner returns a provisioner for opts.Pools.
func NewProvisioner(opts ProvisionerOptions) *Provisioner {
	if opts.Clock == nil {
		opts.Clock = clockwork.NewRealClock()
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Owner == "" {
		opts.Owner = DefaultProvisionerOwner
	}
	if opts.Observer == nil {
		opts.Observer = noProvisionerObserver{}
	}
	p := &Provisioner{opts: opts, making: map[string]int{}, deleting: map[string]string{}, failures: map[string]int{},
		retryAt: map[string]time.Time{}, finished: make(chan struct{}, 1)}
	for _, d := range opts.Pools {
		if d.Concurrency <= 0 {
			d.Concurrency = DefaultProvisionConcurrency
		}
		if d.Provision.Timeout <= 0 {
			d.Provision.Timeout = DefaultTimeout
		}
		if d.Deprovision.Timeout <= 0 {
			d.Deprovision.Timeout = DefaultTimeout
		}
		p.pools = append(p.pools, d)
		p.types = append(p.types, d.Type)
	}
	return p
}

// Run keeps the pools at their size until ctx ends, then waits for the
// commands under way (they are killed; a deletion is tried again by the
// next leader).
func (p *Provisioner) Run(ctx context.Context) {
	defer p.jobs.Wait()
	loop(ctx, p.opts.Clock, p.opts.Engine, p.types, p.opts.Poll, p.finished, p.RunOnce)
}

// RunOnce looks at each pool once: it starts deleting what is past its
// lifespan or retired (and not leased), tries again deletions whose
// backoff has passed, and starts making what the pool lacks. It returns
// the earliest time something more will be due (zero if nothing is).
func (p *Provisioner) RunOnce(ctx context.Context) time.Time {
	var next time.Time
	for _, d := range p.pools {
		n, err := p.pass(ctx, d)
		if err != nil {
			if ctx.Err() == nil {
				p.opts.Logger.Warn("dynamic pool pass failed", "type", d.Type, "err", err)
			}
			continue
		}
		next = earliest(next, n)
	}
	return next
}

func (p *Provisioner) pass(ctx context.Context, d DynamicPool) (time.Time, error) {
	// What is under way, read before the store: a job that ends between
	// the two reads is then counted twice (in flight, and in the store),
	// which errs on the side of making too little, never too much.
	p.mu.Lock()
	making, retryAt := p.making[d.Type], p.retryAt[d.Type]
	inFlight := make(map[string]bool, len(p.deleting))
	for name := range p.deleting {
		inFlight[name] = true
	}
	p.mu.Unlock()
	rs, err := p.opts.Engine.Resources(ctx, &lease.ResourceListParams{Type: d.Type})
	if err != nil {
		return time.Time{}, err
	}
	pool, err := p.opts.Engine.Pool(ctx, d.Type)
	if err != nil {
		return time.Time{}, err
	}
	now := p.opts.Clock.Now()
	var (
		next                 time.Time
		ready, coming, total int
		// old are free resources past their lifespan: leased no more,
		// but deleted only once what replaces them is free, or when the
		// pool has no room to make their replacements first.
		old []*berth.Resource
	)
	lifespan := fmt.Sprintf("past its lifespan of %s", d.Lifespan)
	deleting := 0 // deletions under way or due: room that is coming
	for _, r := range rs {
		total++
		if inFlight[r.Name] || r.State == berth.StateDeleting {
			deleting++
		}
		if r.Source != berth.SourceDynamic || inFlight[r.Name] {
			continue // not the provisioner's to delete (added by hand, or by a config of old), or being deleted
		}
		expires := time.Time{}
		if d.Lifespan > 0 && r.CreatedAt != nil {
			expires = r.CreatedAt.Add(d.Lifespan)
		}
		expired := !expires.IsZero() && !now.Before(expires)
		unleased := r.LeaseID == ""
		switch {
		case r.State == berth.StateDeleting:
			if r.NextCleanAt != nil && r.NextCleanAt.After(now) {
				next = earliest(next, *r.NextCleanAt)
			} else {
				p.startDelete(ctx, d, r, "trying the deletion again", true)
			}
		case unleased && r.Retiring && (r.State == berth.StateFree || r.State == berth.StateDirty || r.State == berth.StateQuarantined):
			p.startDelete(ctx, d, r, "retired", false)
		case unleased && expired && r.State == berth.StateDirty:
			p.startDelete(ctx, d, r, lifespan, false) // no use cleaning it
		case r.Retiring:
		case r.State == berth.StateFree && !r.Draining && r.Health.Status != berth.HealthDisconnected:
			ready++
			if expired {
				old = append(old, r)
			} else if !expires.IsZero() {
				next = earliest(next, expires)
			}
		case r.State == berth.StateDirty || r.State == berth.StateCleaning:
			coming++
		}
	}
	demand := d.MinFree + pool.Waiters
	if pool.Draining {
		demand = 0 // nothing would be leased: make nothing, keep nothing old
	}
	// Enough free for MinFree and for every waiter, counting what is
	// being cleaned or made and not what is too old, within MaxTotal.
	need := demand - (ready - len(old) + coming + making)
	room := d.MaxTotal - total - making
	start := max(min(need, room, d.Concurrency-making), 0)
	if start > 0 && now.Before(retryAt) {
		next, start = earliest(next, retryAt), 0
	}
	for range start {
		p.startProvision(ctx, d)
	}
	// The old ones go while the pool has more free than it needs: a
	// replacement is made first, and the old one goes once it is free.
	// Only a pool with no room to make one, and no room coming (nothing
	// being made or deleted), deletes an old one first, one at a time.
	spare := max(ready-demand, 0)
	if need > 0 && room <= 0 && making == 0 && deleting == 0 {
		spare = max(spare, 1)
	}
	for _, r := range old {
		if spare <= 0 {
			break
		}
		p.startDelete(ctx, d, r, lifespan, false)
		spare--
	}
	return next, nil
}

func (p *Provisioner) startProvision(ctx context.Context, d DynamicPool) {
	p.mu.Lock()
	p.making[d.Type]++
	p.mu.Unlock()
	p.jobs.Go(func() {
		defer func() {
			p.mu.Lock()
			p.making[d.Type]--
			p.mu.Unlock()
			signal(p.finished)
		}()
		p.provision(ctx, d)
	})
}

// provisioned is what a provisioner prints.
type provisioned struct {
	Name     string            `json:"name"`
	UserData map[string]string `json:"userData"`
	Labels   map[string]string `json:"labels"`
}

// provision runs the pool's provisioner once and adds what it made.
func (p *Provisioner) provision(ctx context.Context, d DynamicPool) {
	id := berth.NewID()
	env := append(append([]string{}, p.opts.Env...), "BERTH_RESOURCE_TYPE="+d.Type, "BERTH_PROVISION_ID="+id)
	res, cause := p.run(ctx, d.Provision, env, nil)
	log := p.opts.Logger.With("type", d.Type, "provision", id)
	var (
		out provisioned
		msg string
	)
	switch {
	case errors.Is(cause, errTimeout):
		msg = fmt.Sprintf("timed out after %s (the command was killed)", d.Provision.Timeout)
	case res.Err != nil:
		msg = res.Describe()
	case res.StdoutCut:
		msg = fmt.Sprintf("printed more than %d bytes; want one resource as JSON", maxProvisionOutput)
	default:
		dec := json.NewDecoder(bytes.NewReader(res.Stdout))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&out); err != nil {
			msg = "printed no resource as JSON {\"name\": …, \"userData\": {…}}: " + err.Error()
		} else if dec.More() {
			msg = "printed more than one JSON value; want one resource"
		}
	}
	if msg != "" && ctx.Err() != nil {
		log.Warn("provisioning stopped: berth shut down or no longer leads; what it made, if anything, is not known", "output", res.Output)
		return
	}
	if msg == "" {
		// Made: added even if berth is stopping (the store says what is
		// made; dropping it would leak it), within a bound of its own.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		spec := store.ResourceSpec{Name: out.Name, UserData: out.UserData, Labels: out.Labels}
		added, err := p.opts.Engine.Provisioned(actx, d.Type, spec, "made by the provisioner ("+id+")", res.Output, p.opts.Owner)
		if err == nil {
			p.mu.Lock()
			p.failures[d.Type], p.retryAt[d.Type] = 0, time.Time{}
			p.mu.Unlock()
			log.Info("provisioned", "resource", added.Resource.Name)
			p.opts.Observer.ProvisionerRan(d.Type, "create", true)
			return
		}
		msg = "made " + shortQuote(out.Name) + ", which berth could not add: " + err.Error()
	}
	p.opts.Observer.ProvisionerRan(d.Type, "create", false)
	p.mu.Lock()
	p.failures[d.Type]++
	wait := d.Backoff.Delay(p.failures[d.Type])
	p.retryAt[d.Type] = p.opts.Clock.Now().Add(wait)
	p.mu.Unlock()
	log.Warn("provisioning failed", "err", msg, "retry_in", wait)
	output := res.Output
	if len(res.Stdout) > 0 {
		output = strings.TrimSpace(string(res.Stdout) + "\n" + output)
	}
	name := out.Name
	if !berth.ValidName(name) {
		name = "" // not a resource: the event is the pool's
	}
	err := p.opts.Engine.RecordEvent(ctx, &berth.Event{Resource: name, Type: d.Type, Kind: berth.EventProvision, Reason: "provision-failed",
		Actor:   p.opts.Owner,
		Message: store.Head(fmt.Sprintf("%s; trying again in %s", msg, wait.Round(time.Millisecond)), maxMessage),
		Output:  store.Tail(output, store.MaxOutput)})
	if err != nil {
		log.Error("could not record a failed provisioning", "err", err)
	}
}

// maxMessage bounds the message of a provisioning's event.
const maxMessage = 1024

// shortQuote quotes s, cut to its first 64 bytes: a provisioner's output
// is not to be trusted to be short.
func shortQuote(s string) string {
	return strconv.Quote(store.Head(s, 64))
}

func (p *Provisioner) startDelete(ctx context.Context, d DynamicPool, r *berth.Resource, reason string, again bool) {
	p.mu.Lock()
	running := 0
	for _, typ := range p.deleting {
		if typ == d.Type {
			running++
		}
	}
	if _, ok := p.deleting[r.Name]; ok || running >= d.Concurrency {
		p.mu.Unlock()
		return
	}
	p.deleting[r.Name] = d.Type
	p.mu.Unlock()
	p.jobs.Go(func() {
		defer func() {
			p.mu.Lock()
			delete(p.deleting, r.Name)
			p.mu.Unlock()
			signal(p.finished)
		}()
		p.delete(ctx, d, r.Name, reason, again)
	})
}

// delete hands resource name to the deprovisioner and records how it
// ended.
func (p *Provisioner) delete(ctx context.Context, d DynamicPool, name, reason string, again bool) {
	log := p.opts.Logger.With("type", d.Type, "resource", name)
	r, err := p.opts.Engine.DeleteBegin(ctx, name, reason, again, p.opts.Owner)
	if err != nil {
		// Leased or changed meanwhile: the next pass sees it as it is.
		if berth.ErrorCodeOf(err) != berth.EConflict && ctx.Err() == nil {
			log.Warn("could not begin a deletion", "err", err)
		}
		return
	}
	env := append(append([]string{}, p.opts.Env...), berth.ResourceEnv(r.Name, r.Type, r.UserData)...)
	env = append(env, "BERTH_DELETE_REASON="+reason)
	res, cause := p.run(ctx, d.Deprovision, env, userDataJSON(r))
	if ctx.Err() != nil {
		// Left deleting: the next leader tries again.
		log.Warn("deletion stopped: berth shut down or no longer leads; it will be tried again")
		return
	}
	msg := ""
	switch {
	case errors.Is(cause, errTimeout):
		msg = fmt.Sprintf("timed out after %s (the command was killed)", d.Deprovision.Timeout)
	case res.Err != nil:
		msg = res.Describe()
	}
	p.opts.Observer.ProvisionerRan(d.Type, "delete", msg == "")
	output := strings.TrimSpace(string(res.Stdout) + "\n" + res.Output)
	after, err := p.opts.Engine.DeleteEnd(ctx, name, msg == "", msg, output, d.Backoff, p.opts.Owner)
	switch {
	case err != nil:
		log.Error("could not record a deletion's outcome", "err", err)
	case after == nil:
		log.Info("deprovisioned", "reason", reason)
	default:
		log.Warn("deprovisioning failed", "err", msg, "state", after.State)
	}
}

// run runs c with env and stdin, killed after c.Timeout; cause says why
// it was stopped, if it was.
func (p *Provisioner) run(ctx context.Context, c Command, env []string, stdin []byte) (command.Result, error) {
	run, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	timer := p.opts.Clock.AfterFunc(c.Timeout, func() { stop(errTimeout) })
	res := command.Run(run, command.Spec{Argv: c.Argv, Env: env, Stdin: stdin, Tail: store.MaxOutput, StdoutLimit: maxProvisionOutput, DieWithBerth: true})
	timer.Stop()
	return res, context.Cause(run)
}
