package probe

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/store"
)

// Defaults for a Pool's timing, documented in docs/probes.md.
const (
	DefaultInterval         = 10 * time.Second
	DefaultTimeout          = 2 * time.Second
	DefaultFailureThreshold = 3
	DefaultSuccessThreshold = 1
	DefaultJitter           = 0.1
	DefaultMaxBackoff       = time.Minute
)

// Pool is a probed pool: what to probe and on what schedule.
type Pool struct {
	Type string
	Spec Spec
	// Interval is the time between the starts of two probes of a
	// resource.
	Interval time.Duration
	// Timeout bounds one probe; ConnectTimeout bounds opening its
	// connection (default: Timeout).
	Timeout, ConnectTimeout time.Duration
	// FailureThreshold consecutive failures make a resource Disconnected;
	// SuccessThreshold consecutive successes make it Connected.
	FailureThreshold, SuccessThreshold int
	// Jitter, a fraction of Interval, spreads the probes: the first probe
	// of each resource comes at a random point in the first Jitter ×
	// Interval, and each later one up to Jitter × Interval early (never
	// late, so that detection stays within FailureThreshold × Interval +
	// Timeout).
	Jitter float64
	// MaxBackoff caps the time between probes of a Disconnected resource,
	// which doubles from Interval with each failed probe.
	MaxBackoff time.Duration
	// LeaseTTL is the lease TTL given to a waiter a resource goes to when
	// it becomes Connected.
	LeaseTTL time.Duration
}

// WithDefaults returns p with every unset field at its default.
func (p Pool) WithDefaults() Pool {
	if p.Interval <= 0 {
		p.Interval = DefaultInterval
	}
	if p.Timeout <= 0 {
		p.Timeout = min(DefaultTimeout, p.Interval)
	}
	if p.ConnectTimeout <= 0 || p.ConnectTimeout > p.Timeout {
		p.ConnectTimeout = p.Timeout
	}
	if p.FailureThreshold <= 0 {
		p.FailureThreshold = DefaultFailureThreshold
	}
	if p.SuccessThreshold <= 0 {
		p.SuccessThreshold = DefaultSuccessThreshold
	}
	if p.Jitter < 0 {
		p.Jitter = 0
	}
	if p.MaxBackoff <= 0 {
		p.MaxBackoff = max(DefaultMaxBackoff, p.Interval)
	}
	p.MaxBackoff = max(p.MaxBackoff, p.Interval)
	return p
}

// Options configure a Prober.
type Options struct {
	Store  store.Store
	Clock  clockwork.Clock
	Logger *slog.Logger
	Pools  []Pool
	// Resolver, if set, resolves the host names probes dial.
	Resolver *net.Resolver
	// Rand returns a number in [0, 1) for jitter; default math/rand/v2.
	Rand func() float64
	// FlushInterval is how long results that change nothing but the probe
	// time may wait to be written together; default 1s. A change of
	// status or reason is written at once.
	FlushInterval time.Duration
	// ResyncInterval is how often the list of resources is read again;
	// default 30s.
	ResyncInterval time.Duration
	// MaxConcurrent caps the probes in flight; default 1024.
	MaxConcurrent int
	// Notify, if set, is called after results were written that changed
	// a resource's health or handed it to a waiter.
	Notify func(*store.ResourceHealthResult)
	// Observer, if set, is told each probe's result (for metrics).
	Observer Observer
	// OnStart and OnResult are for tests: OnStart is called when a probe
	// has started (its timeout is running), OnResult when its result has
	// been applied and, if it changed the resource's health, written.
	// Both are called from the prober's loop and must not block.
	OnStart  func(name string)
	OnResult func(name string, r Result, h berth.Health)
}

// Observer is told each probe's result, for metrics. It is called from
// the prober's loop and must not block.
type Observer interface {
	ProbeDone(typ string, ok bool, reason string, d time.Duration)
}

// Prober probes the resources of its pools and keeps their health in the
// store. Run it on one replica only (the leader).
type Prober struct {
	opts  Options
	clock clockwork.Clock
	log   *slog.Logger
	rand  func() float64

	expedite chan string
	active   atomic.Bool // Run is running

	// Loop state, touched only by Run's goroutine.
	pools   map[string]*poolState
	targets map[string]*target
	queue   queue
	pending map[string]store.HealthUpdate
	// urgent: pending holds a change of health, to be written as soon as
	// the results at hand are applied.
	urgent  bool
	applied []applied // for OnResult
	running int
	results chan result
}

type poolState struct {
	Pool
	checker Checker
	hash    string // Spec.Hash
}

// target is one probed resource.
type target struct {
	Target
	pool *poolState
	next time.Time
	// health is the condition as last written (or read from the store).
	health     berth.Health
	succ, fail int
	// down counts probes since the resource became Disconnected, for the
	// backoff.
	down    int
	running bool
	// rush: ProbeNow came while a probe ran; the next one starts at once.
	rush  bool
	gone  bool
	index int // in queue; -1 when not queued
}

type result struct {
	t       *target
	r       Result
	started time.Time
}

// New returns a Prober; it fails if a pool's probe spec does not compile.
func New(opts Options) (*Prober, error) {
	p := &Prober{
		opts: opts, clock: opts.Clock, log: opts.Logger, rand: opts.Rand,
		expedite: make(chan string, 64),
		targets:  map[string]*target{}, pending: map[string]store.HealthUpdate{},
	}
	if p.clock == nil {
		p.clock = clockwork.NewRealClock()
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if p.rand == nil {
		p.rand = rand.Float64
	}
	if p.opts.FlushInterval <= 0 {
		p.opts.FlushInterval = time.Second
	}
	if p.opts.ResyncInterval <= 0 {
		p.opts.ResyncInterval = 30 * time.Second
	}
	if p.opts.MaxConcurrent <= 0 {
		p.opts.MaxConcurrent = 1024
	}
	p.results = make(chan result, p.opts.MaxConcurrent)
	pools, err := p.compile(opts.Pools)
	if err != nil {
		return nil, err
	}
	p.pools = pools
	return p, nil
}

func (p *Prober) compile(pools []Pool) (map[string]*poolState, error) {
	out := make(map[string]*poolState, len(pools))
	for _, pool := range pools {
		pool = pool.WithDefaults()
		c, err := Compile(pool.Spec, Env{Dial: p.dialer(pool.ConnectTimeout, pool.Timeout), Resolver: p.opts.Resolver})
		if err != nil {
			return nil, fmt.Errorf("pool %s: %w", pool.Type, err)
		}
		out[pool.Type] = &poolState{Pool: pool, checker: c, hash: pool.Spec.Hash()}
	}
	return out, nil
}

// errConnectTimeout is the cause of a dial cut off by the connect timeout.
var errConnectTimeout = errors.New("connect timeout")

// dialer returns a dial function that gives up after d on the prober's
// clock, with an error that wraps ErrTimeout. When d is the whole probe's
// timeout, the probe's own deadline does that already.
func (p *Prober) dialer(d, timeout time.Duration) func(ctx context.Context, network, address string) (net.Conn, error) {
	nd := &net.Dialer{Resolver: p.opts.Resolver}
	return func(ctx context.Context, network, address string) (net.Conn, error) {
		if d >= timeout {
			return nd.DialContext(ctx, network, address)
		}
		dctx, cancel := context.WithCancelCause(ctx)
		defer cancel(nil)
		timer := p.clock.AfterFunc(d, func() { cancel(errConnectTimeout) })
		defer timer.Stop()
		c, err := nd.DialContext(dctx, network, address)
		if err != nil && ctx.Err() == nil && errors.Is(context.Cause(dctx), errConnectTimeout) {
			return nil, &connectTimeoutError{fmt.Sprintf("dial %s %s: no connection within the connect timeout of %s", network, address, d)}
		}
		return c, err
	}
}

// connectTimeoutError is a dial cut off by the connect timeout: it is
// ErrTimeout, in words that say which timeout.
type connectTimeoutError struct{ msg string }

func (e *connectTimeoutError) Error() string        { return e.msg }
func (e *connectTimeoutError) Is(target error) bool { return target == ErrTimeout }

// ProbeNow asks for the resource to be probed at once, without its
// backoff: someone waits for it to come up (berth wait-ready). It does
// nothing unless Run runs.
func (p *Prober) ProbeNow(name string) {
	if !p.active.Load() {
		return
	}
	select {
	case p.expedite <- name:
	default: // the loop is busy with such requests already
	}
}

// Run probes until ctx ends. It returns ctx's error, after every probe it
// started has returned.
func (p *Prober) Run(ctx context.Context) error {
	probes, stop := context.WithCancel(ctx)
	var inflight sync.WaitGroup
	defer func() {
		stop()
		inflight.Wait()
	}()
	p.active.Store(true)
	defer p.active.Store(false)
	// A new term (this replica leads again): start from the store.
	p.targets, p.queue, p.pending, p.running = map[string]*target{}, nil, map[string]store.HealthUpdate{}, 0
	p.urgent, p.applied = false, nil
	for len(p.results) > 0 {
		<-p.results
	}
	p.resync(ctx)
	flush := p.clock.NewTicker(p.opts.FlushInterval)
	defer flush.Stop()
	resync := p.clock.NewTicker(p.opts.ResyncInterval)
	defer resync.Stop()
	for {
		now := p.clock.Now()
		for p.queue.Len() > 0 && !p.queue[0].next.After(now) && p.running < p.opts.MaxConcurrent {
			t := heap.Pop(&p.queue).(*target)
			p.start(probes, &inflight, t, now)
		}
		var due <-chan time.Time
		var timer clockwork.Timer
		if p.queue.Len() > 0 && p.running < p.opts.MaxConcurrent {
			timer = p.clock.NewTimer(p.queue[0].next.Sub(now))
			due = timer.Chan()
		}
		select {
		case <-ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			return ctx.Err()
		case <-due:
		case r := <-p.results:
			p.running--
			p.apply(ctx, r)
			// A change is written at once, but together with the others
			// of a burst (10,000 resources coming up): when no other
			// result is waiting to be applied.
			if p.urgent && (len(p.results) == 0 || len(p.pending) >= maxPending) {
				p.flush(ctx)
				p.urgent = false
			}
			if !p.urgent {
				p.report()
			}
		case <-flush.Chan():
			p.flush(ctx)
		case <-resync.Chan():
			p.resync(ctx)
		case name := <-p.expedite:
			if _, ok := p.targets[name]; !ok {
				// Added since the last resync (at runtime, or by a
				// provisioner): read the pools again, rather than leave it
				// unprobed, and unleased, until the next.
				p.resync(ctx)
			}
			switch t, ok := p.targets[name]; {
			case !ok:
			case t.running:
				t.rush = true // probe again as soon as this one ends
			case t.index >= 0:
				t.down = 0
				t.next = now
				heap.Fix(&p.queue, t.index)
			}
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

// start runs one probe of t in its own goroutine.
func (p *Prober) start(ctx context.Context, inflight *sync.WaitGroup, t *target, now time.Time) {
	t.running = true
	p.running++
	pctx, cancel := context.WithCancelCause(ctx)
	timer := p.clock.AfterFunc(t.pool.Timeout, func() { cancel(ErrTimeout) })
	if p.opts.OnStart != nil {
		p.opts.OnStart(t.Name)
	}
	tg := t.Target
	checker := t.pool.checker
	inflight.Go(func() {
		r := checker.Check(pctx, &tg)
		timer.Stop()
		cancel(nil)
		p.results <- result{t: t, r: r, started: now}
	})
}

// apply runs the health state machine on one result and schedules the
// next probe.
func (p *Prober) apply(ctx context.Context, res result) {
	t, r := res.t, res.r
	t.running = false
	if t.gone || ctx.Err() != nil {
		return
	}
	pool := t.pool
	if p.opts.Observer != nil {
		p.opts.Observer.ProbeDone(pool.Type, r.OK, string(r.Reason), p.clock.Since(res.started))
	}
	was := t.health
	next := was
	next.LastProbeTime = &res.started
	switch {
	case r.OK:
		t.succ, t.fail = t.succ+1, 0
		switch {
		case was.Status == berth.HealthConnected:
			next.Message = r.Message
		case t.succ >= pool.SuccessThreshold:
			next.Status, next.Reason, next.Message = berth.HealthConnected, "", r.Message
		case was.Status == berth.HealthDisconnected:
			// The reason stands until the threshold; the message says
			// what the latest probe found.
			next.Message = fmt.Sprintf("%s (success %d of the %d in a row that make it Connected)", r.Message, t.succ, pool.SuccessThreshold)
		}
	case r.Reason == ReasonProbeError:
		// The probe cannot be made for this resource: no threshold makes
		// it any more or less true.
		t.succ, t.fail = 0, 0
		next.Status, next.Reason, next.Message = berth.HealthUnknown, string(r.Reason), r.Message
	default:
		t.succ, t.fail = 0, t.fail+1
		switch {
		case was.Status == berth.HealthDisconnected || t.fail >= pool.FailureThreshold:
			next.Status, next.Reason, next.Message = berth.HealthDisconnected, string(r.Reason), r.Message
		default: // Connected or Unknown: say what the latest probe found
			next.Message = fmt.Sprintf("%s: %s (failure %d of the %d in a row that make it Disconnected)", r.Reason, r.Message, t.fail, pool.FailureThreshold)
		}
	}
	t.health = next
	changed := next.Status != was.Status || next.Reason != was.Reason
	p.pending[t.Name] = store.HealthUpdate{Name: t.Name, Type: pool.Type, Status: next.Status, Reason: next.Reason,
		Message: next.Message, ProbeTime: res.started, LeaseTTL: pool.LeaseTTL, ProbeHash: pool.hash}
	if changed {
		p.log.Info("resource health changed", "resource", t.Name, "type", pool.Type, "from", was.Status, "to", next.Status,
			"reason", next.Reason, "message", next.Message)
	}
	if changed {
		p.urgent = true
	} else if len(p.pending) >= maxPending {
		p.flush(ctx)
	}
	p.schedule(t, res.started)
	if p.opts.OnResult != nil {
		p.applied = append(p.applied, applied{t.Name, r, t.health})
	}
}

// maxPending is how many results may wait to be written.
const maxPending = 1000

type applied struct {
	name   string
	r      Result
	health berth.Health
}

// report tells OnResult of the results applied, and written if they
// changed anything.
func (p *Prober) report() {
	for _, a := range p.applied {
		p.opts.OnResult(a.name, a.r, a.health)
	}
	p.applied = p.applied[:0]
}

// schedule queues t's next probe: an Interval after the last one started,
// up to Jitter × Interval early, and backing off while it is
// Disconnected.
func (p *Prober) schedule(t *target, started time.Time) {
	pool := t.pool
	delay := pool.Interval
	if t.health.Status == berth.HealthDisconnected {
		t.down++
		delay = pool.MaxBackoff
		if t.down <= 30 {
			delay = min(pool.Interval<<(t.down-1), pool.MaxBackoff)
		}
	} else {
		t.down = 0
	}
	delay -= time.Duration(p.rand() * pool.Jitter * float64(pool.Interval))
	t.next = started.Add(max(delay, 0))
	if t.rush && t.health.Status != berth.HealthConnected {
		t.next, t.down = p.clock.Now(), 0
	}
	t.rush = false
	heap.Push(&p.queue, t)
}

// flush writes the pending results.
func (p *Prober) flush(ctx context.Context) {
	if len(p.pending) == 0 {
		return
	}
	ups := make([]store.HealthUpdate, 0, len(p.pending))
	for _, u := range p.pending {
		ups = append(ups, u)
	}
	slices.SortFunc(ups, func(a, b store.HealthUpdate) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	clear(p.pending)
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	res, err := p.opts.Store.ResourceHealth(wctx, &store.ResourceHealthParams{Updates: ups, Now: p.clock.Now(), Actor: "prober"})
	if err != nil {
		if ctx.Err() == nil {
			p.log.Warn("could not record probe results; will try again", "results", len(ups), "err", err)
		}
		// Each update carries the whole condition, so sending it again
		// later is safe; newer results for the same resource win.
		for _, u := range ups {
			if _, ok := p.pending[u.Name]; !ok {
				p.pending[u.Name] = u
			}
		}
		return
	}
	for _, name := range res.Missing {
		// Gone or moved to another pool: the next resync sorts it out.
		if t, ok := p.targets[name]; ok && t.pool.Type == typeOf(ups, name) {
			p.drop(t)
		}
	}
	if p.opts.Notify != nil && (len(res.Changed) > 0 || len(res.Handoffs) > 0) {
		p.opts.Notify(res)
	}
}

func typeOf(ups []store.HealthUpdate, name string) string {
	for _, u := range ups {
		if u.Name == name {
			return u.Type
		}
	}
	return ""
}

// drop stops probing t.
func (p *Prober) drop(t *target) {
	t.gone = true
	if t.index >= 0 {
		heap.Remove(&p.queue, t.index)
	}
	delete(p.targets, t.Name)
}

// resync reads the resources of every probed pool and brings the targets
// in line: new ones are scheduled within the first Jitter × Interval,
// gone ones dropped, user data and labels refreshed.
func (p *Prober) resync(ctx context.Context) {
	now := p.clock.Now()
	seen := make(map[string]bool, len(p.targets))
	for _, pool := range p.pools {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		rs, err := p.opts.Store.ResourceList(rctx, &store.ResourceListParams{Type: pool.Type})
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				p.log.Warn("could not list resources to probe", "type", pool.Type, "err", err)
			}
			// Keep what we have of this pool until the next resync.
			for name, t := range p.targets {
				if t.pool.Type == pool.Type {
					seen[name] = true
				}
			}
			continue
		}
		for _, r := range rs {
			seen[r.Name] = true
			t, ok := p.targets[r.Name]
			if ok && t.pool.Type != pool.Type {
				p.drop(t)
				ok = false
			}
			if !ok {
				t = &target{pool: pool, health: r.Health, index: -1}
				// A resource whose health is not known yet (new, and not
				// leasable in a pool that requires Connected) is probed
				// within the jitter; one known from an earlier leader
				// keeps its condition until its turn comes, at a random
				// point of the interval, so that a restart does not
				// probe every resource in the same second.
				spread := pool.Jitter * float64(pool.Interval)
				if r.Health.Status != berth.HealthUnknown && r.Health.LastProbeTime != nil {
					spread = float64(pool.Interval)
				}
				t.next = now.Add(time.Duration(p.rand() * spread))
				p.targets[r.Name] = t
				heap.Push(&p.queue, t)
			}
			t.pool = pool
			t.Target = Target{Name: r.Name, Type: r.Type, UserData: r.UserData, Labels: r.Labels}
			if _, waiting := p.pending[r.Name]; !waiting && !t.running {
				// Someone else may have changed it (a pool sync resets
				// the health of an unprobed pool).
				t.health = r.Health
			}
		}
	}
	for name, t := range p.targets {
		if !seen[name] {
			p.drop(t)
		}
	}
}

// queue orders targets by their next probe.
type queue []*target

func (q queue) Len() int           { return len(q) }
func (q queue) Less(i, j int) bool { return q[i].next.Before(q[j].next) }
func (q queue) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].index, q[j].index = i, j
}
func (q *queue) Push(x any) {
	t := x.(*target)
	t.index = len(*q)
	*q = append(*q, t)
}
func (q *queue) Pop() any {
	old := *q
	t := old[len(old)-1]
	old[len(old)-1] = nil
	t.index = -1
	*q = old[:len(old)-1]
	return t
}
