package cli

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-ci/berth/internal/config"
	"github.com/berth-ci/berth/internal/server"
)

func (e *env) serveCommand() *cobra.Command {
	var (
		o                   server.Options
		configFile          string
		boskosFile          string
		demo                bool
		logFormat, logLevel string
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the broker",
		Long: `Run the broker. State lives in an embedded SQLite database under --data
(berth.db), in WAL mode: every acknowledged change survives a crash of the
process. --sqlite-sync=full also makes it survive a power loss, at the cost
of one fsync per change.

With --demo, berth serves a few demo pools from a throw-away data directory.

With --boskos-config, berth also serves the pools of a Boskos resources file
(alone, or beside --config); the Boskos-compatible endpoints (/acquire,
/release, /update, …) are always served at the root. See docs/boskos.md.`,
		Args: argsNone,
		RunE: func(cmd *cobra.Command, args []string) error {
			log, err := newLogger(e.stderr, logFormat, logLevel)
			if err != nil {
				return err
			}
			o.Logger = log
			if !demo {
				// The demo is throw-away: never the store of the shell's
				// $BERTH_STORE.
				e.storeFromEnv(&o)
			}
			switch {
			case demo && configFile != "":
				return usageErrorf("--demo and --config exclude each other")
			case demo:
				o.Config = config.Demo()
				if ps := o.Config.Validate(); len(ps) > 0 {
					return fmt.Errorf("demo config: %s", ps[0].Message)
				}
				if o.DataDir == "" && o.Store == "" {
					dir, err := os.MkdirTemp("", "berth-demo-")
					if err != nil {
						return fmt.Errorf("demo data directory: %w", err)
					}
					defer os.RemoveAll(dir)
					o.DataDir = dir
				}
			case configFile == "" && boskosFile == "":
				return usageErrorf("serve needs --config FILE or --boskos-config FILE (or --demo for a throw-away instance)")
			case configFile == "":
				o.Config = config.Default()
			default:
				c, err := config.Load(configFile)
				if err != nil {
					return &exitError{code: ExitUsage, err: configError(err)}
				}
				o.Config = c
			}
			if boskosFile != "" {
				b, err := config.LoadBoskos(boskosFile)
				if err != nil {
					return &exitError{code: ExitUsage, err: configError(err)}
				}
				if err := o.Config.Merge(b, boskosFile); err != nil {
					return &exitError{code: ExitUsage, err: mergeError(err)}
				}
			}
			switch {
			case o.DataDir != "" && o.Store != "":
				return usageErrorf("--data and --store exclude each other (--data DIR is --store sqlite:DIR/berth.db)")
			case o.ReapInterval <= 0:
				return usageErrorf("--reap-interval must be positive, not %s", o.ReapInterval)
			case o.Grace <= 0:
				return usageErrorf("--wait-grace must be positive, not %s", o.Grace)
			case o.StoreTimeout <= 0:
				return usageErrorf("--store-timeout must be positive, not %s", o.StoreTimeout)
			case o.BoskosLeaseTTL < time.Second:
				return usageErrorf("--boskos-lease-ttl must be at least 1s, not %s", o.BoskosLeaseTTL)
			case o.BoskosRequestTTL < 3*time.Second:
				// The Boskos client polls every 3 s: a shorter hold would
				// drop every waiter's place between its polls.
				return usageErrorf("--boskos-request-ttl must be at least 3s (the Boskos client polls every 3 s), not %s", o.BoskosRequestTTL)
			}
			if o.DataDir == "" && o.Store == "" {
				o.DataDir = "berth-data"
			}
			if o.SQLiteSync != "normal" && o.SQLiteSync != "full" {
				return usageErrorf("--sqlite-sync must be normal or full, not %q", o.SQLiteSync)
			}
			tuneGC()
			err = server.Run(cmd.Context(), o)
			var se *server.StartupError
			if errors.As(err, &se) {
				return &exitError{code: ExitUsage, err: err}
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&configFile, "config", "", "YAML config file with the pools to serve")
	f.StringVar(&boskosFile, "boskos-config", "", "Boskos resources file whose pools to serve too (see docs/boskos.md)")
	f.DurationVar(&o.BoskosLeaseTTL, "boskos-lease-ttl", 30*time.Minute, "how long a holder through the Boskos API keeps a resource without an /update")
	f.DurationVar(&o.BoskosRequestTTL, "boskos-request-ttl", 30*time.Second, "how long a Boskos client's request_id keeps its place in the queue, and a resource handed to it, without a poll")
	f.BoolVar(&demo, "demo", false, "serve demo pools from a throw-away data directory")
	f.StringVar(&o.DataDir, "data", "", "directory for the embedded database (default ./berth-data)")
	f.StringVar(&o.Listen, "listen", server.DefaultListen, "address to serve HTTP on")
	f.StringVar(&o.Store, "store", "", "store URL instead of --data: sqlite:PATH, or postgres://USER@HOST/DB for several replicas (default $BERTH_STORE, which keeps a password out of the process list)")
	f.StringVar(&o.SQLiteSync, "sqlite-sync", "normal", "normal (survives a crash of berth) or full (also survives power loss)")
	f.DurationVar(&o.ReapInterval, "reap-interval", time.Second, "how often to look for expired leases")
	f.DurationVar(&o.StoreTimeout, "store-timeout", 10*time.Second, "PostgreSQL: longest wait for the database on one call before answering 503")
	f.DurationVar(&o.Grace, "wait-grace", 30*time.Second, "how long a waiter keeps its place after its long poll ends")
	f.StringVar(&o.Auth, "auth", server.AuthAuto, "auto (tokens unless --listen is a loopback address), tokens, or none")
	f.BoolVar(&o.Insecure, "insecure", false, "allow --auth none on an address that is not loopback")
	f.StringVar(&o.TLSCert, "tls-cert", "", "PEM certificate (chain) to serve HTTPS with")
	f.StringVar(&o.TLSKey, "tls-key", "", "PEM private key of --tls-cert")
	f.StringVar(&o.TLSClientCA, "tls-client-ca", "", "PEM CA whose client certificates authenticate: CN names the principal, O its role")
	f.StringVar(&logFormat, "log-format", "text", "log format: text or json")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	return cmd
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, usageErrorf("--log-level must be debug, info, warn or error, not %q", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, usageErrorf("--log-format must be text or json, not %q", format)
}

// configError folds a multi-problem config error into one line for serve;
// check-config prints one line per problem instead.
func configError(err error) error {
	var ve *config.ValidationError
	if errors.As(err, &ve) {
		lines := ve.Lines()
		if len(lines) == 1 {
			return fmt.Errorf("config: %s", lines[0])
		}
		return fmt.Errorf("config: %s (and %d more problems; run berth check-config)", lines[0], len(lines)-1)
	}
	return err
}

// mergeError folds the clashes between a berth config and a Boskos file
// into one line. check-config reads one file at a time and cannot see
// them, so it is not suggested.
func mergeError(err error) error {
	var ve *config.ValidationError
	if errors.As(err, &ve) {
		lines := ve.Lines()
		if len(lines) > 1 {
			return fmt.Errorf("config: %s (and %d more names that both files declare)", lines[0], len(lines)-1)
		}
	}
	return configError(err)
}

func (e *env) checkConfigCommand() *cobra.Command {
	var boskos bool
	cmd := &cobra.Command{
		Use:   "check-config FILE",
		Short: "Validate a config file",
		Long: `Validate a config file. Exit 0 if it is valid; otherwise print one line per problem, naming the field and line, and exit 2.
With --boskos, FILE is a Boskos resources file, checked as Boskos checks it.`,
		Args: argsExactly("FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			load := config.Load
			if boskos {
				load = config.LoadBoskos
			}
			c, err := load(args[0])
			var ve *config.ValidationError
			if errors.As(err, &ve) {
				for _, l := range ve.Lines() {
					fmt.Fprintln(e.stderr, l)
				}
				e.exitCode = ExitUsage
				return nil
			}
			if err != nil {
				return &exitError{code: ExitUsage, err: err}
			}
			n := 0
			for _, p := range c.EnginePools() {
				n += len(p.Resources)
			}
			fmt.Fprintf(e.stdout, "%s: ok (%d pools, %d resources)\n", args[0], len(c.Pools), n)
			return nil
		},
	}
	cmd.Flags().BoolVar(&boskos, "boskos", false, "FILE is a Boskos resources file")
	return cmd
}

// serveGCPercent is the garbage collector's target for berth serve, unless
// GOGC is set. The broker's state lives in its store, so its live heap
// under load is small (about 6 MB with 100,000 resources) and what it
// allocates is per-request garbage: at Go's default of 100 it collected
// some twenty times a second under berth bench. At 400 the heap may grow to
// five times the live data between collections, for about 9% more
// acquire+release cycles per second (see BENCHMARKS.md).
const serveGCPercent = 400

// serveMemoryLimit is the soft limit on the Go heap for berth serve,
// unless GOMEMLIMIT is set. It keeps serveGCPercent from letting a large
// live heap (the config of a big pool while it is loaded) grow fivefold:
// near the limit the collector runs as often as it must (the runtime caps
// that at half the CPU), so it bounds memory without failing anything.
// With 100,000 resources it kept the server's resident size at 110 MiB
// after start-up instead of 129 MiB. SQLite's page caches are outside it.
const serveMemoryLimit = 64 << 20

// tuneGC applies serveGCPercent and serveMemoryLimit unless the operator
// chose GOGC or GOMEMLIMIT. berth bench uses it too.
func tuneGC() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(serveGCPercent)
	}
	if _, set := os.LookupEnv("GOMEMLIMIT"); !set {
		debug.SetMemoryLimit(serveMemoryLimit)
	}
}
