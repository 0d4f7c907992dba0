// Package server assembles a running broker: it opens the store, reconciles
// the config, starts the lease engine's background loops and serves HTTP
// until its context ends.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/berth-ci/berth/internal/api"
	"github.com/berth-ci/berth/internal/auth"
	"github.com/berth-ci/berth/internal/boskos"
	"github.com/berth-ci/berth/internal/config"
	"github.com/berth-ci/berth/internal/janitor"
	"github.com/berth-ci/berth/internal/lease"
	"github.com/berth-ci/berth/internal/metrics"
	"github.com/berth-ci/berth/internal/probe"
	"github.com/berth-ci/berth/internal/store"
	"github.com/berth-ci/berth/internal/store/migrate"
	"github.com/berth-ci/berth/internal/store/postgres"
	"github.com/berth-ci/berth/internal/store/sqlite"
	"github.com/berth-ci/berth/internal/web"
)

// DefaultListen is where berth serves unless told otherwise.
const DefaultListen = "127.0.0.1:7420"

// Options configure Run.
type Options struct {
	// StoreTimeout bounds each call to a PostgreSQL store; default
	// postgres.DefaultOpTimeout.
	StoreTimeout time.Duration
	// Config is the validated configuration to serve.
	Config *config.Config
	// DataDir holds the embedded database (berth.db).
	DataDir string
	// Store overrides DataDir: "sqlite:PATH" (or a bare path).
	Store string
	// SQLiteSync is "normal" (survives a process crash; the default) or
	// "full" (also survives power loss).
	SQLiteSync string
	Listen     string
	Logger     *slog.Logger
	Clock      clockwork.Clock
	// ReapInterval is how often expired leases are looked for; default 1s.
	ReapInterval time.Duration
	// Grace and MaxPoll tune waiting; see lease.Options.
	Grace, MaxPoll time.Duration
	// ShutdownTimeout bounds how long in-flight requests may take to
	// finish after the context ends; default 10s.
	ShutdownTimeout time.Duration
	// OnListening, if set, is called with the bound address once the
	// server accepts connections.
	OnListening func(addr net.Addr)
	// BoskosLeaseTTL is how long a holder through the Boskos API keeps a
	// resource without an update; default boskos.DefaultLeaseTTL.
	BoskosLeaseTTL time.Duration
	// BoskosRequestTTL is how long a Boskos client's request id keeps its
	// place in the queue without a poll; default boskos.DefaultHold.
	BoskosRequestTTL time.Duration
	// Auth is AuthAuto (the default), AuthTokens or AuthNone; Insecure
	// allows AuthNone on an address that is not loopback.
	Auth     string
	Insecure bool
	// TLSCert and TLSKey, if set, serve HTTPS; TLSClientCA also accepts
	// client certificates it signed as credentials.
	TLSCert, TLSKey, TLSClientCA string
}

// StartupError is a problem found before serving: bad config, a data
// directory that cannot be used, a store that will not open. The CLI prints
// it as one line and exits 2 rather than crash-looping with a trace.
type StartupError struct{ Err error }

func (e *StartupError) Error() string { return e.Err.Error() }
func (e *StartupError) Unwrap() error { return e.Err }

func startupf(format string, args ...any) error {
	return &StartupError{Err: fmt.Errorf(format, args...)}
}

// storeTarget is what --data and --store name: a SQLite file or a
// PostgreSQL URL (exactly one is set).
type storeTarget struct {
	sqlitePath, postgresURL string
}

func targetOf(opts Options) (storeTarget, error) {
	path := opts.Store
	switch {
	case path == "":
		if opts.DataDir == "" {
			return storeTarget{}, startupf("no --data directory given")
		}
		return storeTarget{sqlitePath: filepath.Join(opts.DataDir, "berth.db")}, nil
	case strings.HasPrefix(path, "sqlite:"):
		path = strings.TrimPrefix(strings.TrimPrefix(path, "sqlite:"), "//")
	case strings.HasPrefix(path, "postgres://"), strings.HasPrefix(path, "postgresql://"):
		return storeTarget{postgresURL: path}, nil
	case strings.Contains(path, "://"):
		scheme, _, _ := strings.Cut(path, "://")
		return storeTarget{}, startupf("--store: %s stores are not supported (use sqlite:PATH or postgres://…)", scheme)
	case strings.Contains(path, "="):
		// A PostgreSQL key=value connection string ("host=… password=…")
		// must not become the name of a SQLite file, password and all.
		return storeTarget{}, startupf("--store: looks like a key=value connection string; give PostgreSQL as a postgres:// URL, or SQLite as sqlite:PATH")
	}
	if path == "" {
		return storeTarget{}, startupf("--store: sqlite: needs a file path, such as sqlite:/var/lib/berth/berth.db")
	}
	return storeTarget{sqlitePath: path}, nil
}

// PendingMigrations reports the schema version of the store that opts
// select and the migrations opening it would apply, changing nothing.
func PendingMigrations(ctx context.Context, opts Options) (int, []migrate.Migration, error) {
	tg, err := targetOf(opts)
	if err != nil {
		return 0, nil, err
	}
	if tg.postgresURL != "" {
		return postgres.Pending(ctx, tg.postgresURL)
	}
	return sqlite.Pending(ctx, tg.sqlitePath)
}

// OpenStore opens the store that opts select.
func OpenStore(ctx context.Context, opts Options) (store.Store, error) {
	tg, err := targetOf(opts)
	if err != nil {
		return nil, err
	}
	if tg.postgresURL != "" {
		st, err := postgres.Open(ctx, tg.postgresURL, postgres.Options{OpTimeout: opts.StoreTimeout})
		if err != nil {
			return nil, &StartupError{Err: err}
		}
		return st, nil
	}
	if opts.Store == "" {
		if err := os.MkdirAll(opts.DataDir, 0o750); err != nil {
			return nil, startupf("data directory: %w", err)
		}
	}
	path := tg.sqlitePath
	st, err := sqlite.Open(ctx, path, sqlite.Options{Sync: sqlite.Sync(opts.SQLiteSync)})
	if err != nil {
		return nil, &StartupError{Err: err}
	}
	return st, nil
}

// Run serves until ctx ends, then shuts down gracefully: it stops accepting,
// lets in-flight requests finish, and keeps every lease in the store.
func Run(ctx context.Context, opts Options) error {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.Config == nil {
		return startupf("no config")
	}
	if opts.Listen == "" {
		opts.Listen = DefaultListen
	}
	if opts.BoskosLeaseTTL > 0 {
		// The pools of a Boskos file hold their resources that long, a
		// lease taken at once or handed to a waiter alike.
		opts.Config.SetBoskosLeaseTTL(opts.BoskosLeaseTTL)
	}
	authenticate, err := authMode(opts)
	if err != nil {
		return err
	}
	tlsCfg, err := tlsConfig(opts)
	if err != nil {
		return err
	}
	// Take the port first: a port already in use fails before the store is
	// touched.
	ln, err := net.Listen("tcp", opts.Listen)
	if err != nil {
		return startupf("listen on %s: %w", opts.Listen, err)
	}
	defer ln.Close()
	if tlsCfg != nil {
		ln = tls.NewListener(ln, tlsCfg)
	}
	st, err := OpenStore(ctx, opts)
	if err != nil {
		return err
	}
	defer st.Close()

	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	// The engine, the prober and the API call the store through its
	// timings; leadership and handoff listening (loops, not calls) use
	// it as it is.
	timed := m.Store(st)
	lo := lease.Options{Store: timed, Clock: opts.Clock, Logger: log, Grace: opts.Grace, MaxPoll: opts.MaxPoll, Observer: m}
	if _, shared := st.(store.HandoffListener); shared {
		// Other replicas write events too, and do not say so.
		lo.EventRecheck = eventRecheck
	}
	var prober *probe.Prober
	lo.ProbeNow = func(name string) {
		if prober != nil {
			prober.ProbeNow(name)
		}
	}
	if pr, ok := st.(store.ProbeRequester); ok {
		// The prober runs on the leader, which may be another replica:
		// ask it through the store (see ListenHandoffs below).
		lo.ProbeNow = func(name string) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := pr.RequestProbe(ctx, name); err != nil {
				log.Warn("could not ask the leader for a probe", "resource", name, "err", err)
			}
		}
	}
	eng := lease.New(lo)
	if pools := opts.Config.ProbePools(); len(pools) > 0 {
		prober, err = probe.New(probe.Options{Store: timed, Clock: opts.Clock, Logger: log.With("loop", "prober"), Pools: pools,
			Notify: eng.HealthRecorded, Observer: m})
		if err != nil {
			return &StartupError{Err: fmt.Errorf("probes: %w", err)}
		}
	}
	runProber := func(ctx context.Context) {
		if prober != nil {
			_ = prober.Run(ctx) // returns when ctx ends
		}
	}
	_, shared := st.(store.Leadership)
	runLifecycle := lifecycleLoops(opts, eng, m, log, shared)
	synced, err := eng.SyncPools(ctx, opts.Config.EnginePools(), "config")
	if err != nil {
		return &StartupError{Err: err}
	}
	types := make([]string, 0, len(opts.Config.Pools))
	for _, p := range opts.Config.EnginePools() {
		types = append(types, p.Type)
	}
	m.Pools(types)
	log.Info("pools loaded", "pools", len(opts.Config.Pools), "added", len(synced.Added), "removed", len(synced.Removed), "retiring", len(synced.Retiring))
	// Leases that ran out while berth was down are reaped before anyone
	// is served, so nothing stays held by a job that has gone.
	if n, err := eng.ReapOnce(ctx); err != nil {
		return &StartupError{Err: err}
	} else if n > 0 {
		log.Info("reaped leases that expired while berth was down", "leases", n)
	}
	// Dynamic types of a Boskos config keep their min-count.
	if err := eng.Tend(ctx); err != nil {
		return &StartupError{Err: err}
	}

	// This process's name among the replicas of one store.
	host, _ := os.Hostname()
	replica := fmt.Sprintf("%s/%s", host, ln.Addr())
	metrics.RegisterState(reg, metrics.StateSource{Pools: eng.Pools, Ready: eng.Ready, Logger: log})
	var authenticator *auth.Authenticator
	if authenticate {
		authenticator = auth.New(auth.Options{Store: timed, Clock: opts.Clock})
		if toks, err := st.TokenList(ctx); err == nil && len(toks) == 0 && opts.TLSClientCA == "" {
			log.Warn("authentication is on and there are no tokens yet: every request but the probes is refused; make one with berth token create NAME --role admin (with this --data or --store)")
		}
	} else if loopback(opts.Listen) {
		log.Info("serving without authentication on a loopback address", "addr", opts.Listen)
	} else {
		log.Warn("serving without authentication (--insecure): anyone who reaches this address may do anything", "addr", opts.Listen)
	}
	apiOpts := api.Options{Engine: eng, Logger: log, SchemaVersion: st.SchemaVersion(), Replica: replica,
		Boskos:  boskos.New(boskos.Options{Engine: eng, Logger: log.With("api", "boskos"), LeaseTTL: opts.BoskosLeaseTTL, Hold: opts.BoskosRequestTTL}),
		Metrics: m,
		Auth:    authenticator,
		Web:     web.New(eng),
		MetricsHandler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{
			Registry: reg, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
			// A scrape that cannot be answered whole says so with a 500
			// rather than with a partial page.
			ErrorHandling: promhttp.HTTPErrorOnError,
		})}
	lead, _ := st.(store.Leadership)
	if shared {
		apiOpts.Leader = lead.Leader
	}
	srv := &http.Server{
		Handler:           api.New(apiOpts),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		// Requests do not inherit ctx: on shutdown, long polls are ended by
		// the engine with a real answer, not cut off with an empty one.
	}

	loops, stopLoops := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	if shared {
		// Several replicas share the store: the reaper runs in whichever
		// leads, and moves to another when that one dies.
		wg.Go(func() {
			lead.Lead(loops, replica, func(ctx context.Context) {
				log.Info("leading: running the reaper, the prober, the janitor and the provisioner", "replica", replica)
				m.SetLeader(true)
				defer m.SetLeader(false)
				var tasks sync.WaitGroup
				tasks.Go(func() { eng.RunReaper(ctx, opts.ReapInterval) })
				tasks.Go(func() { runProber(ctx) })
				tasks.Go(func() { runLifecycle(ctx) })
				tasks.Go(func() { tidy(ctx, lead, log) })
				tasks.Wait()
				log.Info("no longer leading", "replica", replica)
			})
		})
	} else {
		m.SetLeader(true)
		wg.Go(func() { eng.RunReaper(loops, opts.ReapInterval) })
		wg.Go(func() { runProber(loops) })
		wg.Go(func() { runLifecycle(loops) })
	}
	if hl, ok := st.(store.HandoffListener); ok {
		// Handoffs made by other berth processes on the same store wake
		// the long polls running here.
		wg.Go(func() {
			hl.ListenHandoffs(loops, func(id string) {
				if name, ok := strings.CutPrefix(id, store.ProbeRequestPrefix); ok {
					if prober != nil {
						prober.ProbeNow(name) // dropped unless this replica probes
					}
					return
				}
				if lease, ok := strings.CutPrefix(id, store.LeaseEndedPrefix); ok {
					eng.LeaseEnded(lease) // this replica's janitor may hold it
					return
				}
				eng.Wake(id)
				if id == "" {
					eng.LeaseEnded("") // word may have been missed: each looks
				}
			})
		})
	}
	defer func() {
		stopLoops()
		wg.Wait()
	}()

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	log.Info("listening", "addr", ln.Addr().String(), "url", scheme(tlsCfg)+"://"+ln.Addr().String(), "auth", authenticate)
	if opts.OnListening != nil {
		opts.OnListening(ln.Addr())
	}

	select {
	case err := <-serveErr:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	timeout := opts.ShutdownTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	log.Info("shutting down", "timeout", timeout)
	eng.Drain()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("shutdown: %w", err)
	}
	<-serveErr
	return nil
}

// lifecycleLoops returns what runs berth's own janitor and the provisioner
// of dynamic pools until ctx ends. With a shared store they also look
// every lifecyclePoll: what other replicas do is not announced here.
func lifecycleLoops(opts Options, eng *lease.Engine, m *metrics.Metrics, log *slog.Logger, shared bool) func(ctx context.Context) {
	var poll time.Duration
	if shared {
		poll = lifecyclePoll
	}
	jp, dp := opts.Config.JanitorPools(), opts.Config.DynamicPools()
	j := janitor.New(janitor.Options{Engine: eng, Clock: opts.Clock, Logger: log.With("loop", "janitor"), Pools: jp, Env: os.Environ(), Poll: poll})
	p := janitor.NewProvisioner(janitor.ProvisionerOptions{Engine: eng, Clock: opts.Clock, Logger: log.With("loop", "provisioner"), Pools: dp,
		Env: os.Environ(), Poll: poll, Observer: m})
	return func(ctx context.Context) {
		var wg sync.WaitGroup
		if len(jp) > 0 {
			wg.Go(func() { j.Run(ctx) })
		}
		if opts.Config.OnDemand() {
			wg.Go(func() { tendOnDemand(ctx, eng, opts.Clock, log.With("loop", "on-demand")) })
		}
		if len(dp) > 0 {
			wg.Go(func() { p.Run(ctx) })
		}
		wg.Wait()
	}
}

// tendOnDemand tends the pools that make resources on demand (Boskos
// dynamic types) every lease.OnDemandInterval until ctx ends.
func tendOnDemand(ctx context.Context, eng *lease.Engine, clock clockwork.Clock, log *slog.Logger) {
	if clock == nil {
		clock = clockwork.NewRealClock()
	}
	t := clock.NewTicker(lease.OnDemandInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
			if err := eng.Tend(ctx); err != nil && ctx.Err() == nil {
				log.Warn("tending the dynamic Boskos types failed", "err", err)
			}
		}
	}
}

// lifecyclePoll is how often the janitor and the provisioner look on
// their own when replicas share the store.
const lifecyclePoll = time.Second

// eventRecheck is how often a follower of the events of a shared store
// looks again, for the events other replicas write.
const eventRecheck = 500 * time.Millisecond

// tidyInterval is how often the leader asks a shared store to tidy; the
// store decides what is due (PostgreSQL: a vacuum after a thousand
// acquires, for one).
const tidyInterval = time.Second

// tidy runs the store's housekeeping every tidyInterval until ctx ends.
func tidy(ctx context.Context, st store.Leadership, log *slog.Logger) {
	t := time.NewTicker(tidyInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := st.Tidy(ctx); err != nil && ctx.Err() == nil {
				log.Warn("store housekeeping failed", "err", err)
			}
		}
	}
}
