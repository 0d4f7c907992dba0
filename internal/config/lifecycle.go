package config

import (
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/janitor"
	"github.com/berth-ci/berth/internal/lease"
)

// Janitor is how a pool's released resources are cleaned: by berth
// running Command on each (and DeepCommand, if set, on one its holder
// reported broken), or by an outside janitor through the API (External).
type Janitor struct {
	Command     []string `yaml:"command"`
	DeepCommand []string `yaml:"deepCommand"`
	External    bool     `yaml:"external"`
	// Timeout kills a cleaning that runs longer (default 15m).
	Timeout time.Duration `yaml:"timeout"`
	// MaxAttempts failed cleanings in a row quarantine a resource
	// (default 3; 0 never does).
	MaxAttempts *int `yaml:"maxAttempts"`
	// Backoff is the wait before the second attempt (default 10s); each
	// further one waits twice as long, up to MaxBackoff (default 10m).
	Backoff    time.Duration `yaml:"backoff"`
	MaxBackoff time.Duration `yaml:"maxBackoff"`
	// Concurrency is how many of the pool's resources berth cleans at
	// once (default 4).
	Concurrency int `yaml:"concurrency"`
	// LeaseTTL is the TTL of a janitor's cleaning lease (default the
	// pool's leaseTTL).
	LeaseTTL time.Duration `yaml:"leaseTTL"`
	// OnBroken is what a release as broken does: "quarantine" (the
	// default) or "clean" (a deep cleaning).
	OnBroken string `yaml:"onBroken"`
}

// Dynamic makes a pool's resources with a provisioner and deletes them
// with a deprovisioner, keeping MinFree of them free, up to MaxTotal.
type Dynamic struct {
	MinFree  int `yaml:"minFree"`
	MaxTotal int `yaml:"maxTotal"`
	// Lifespan, if set, replaces resources older than this once no lease
	// holds them.
	Lifespan    time.Duration `yaml:"lifespan"`
	Provision   *Command      `yaml:"provision"`
	Deprovision *Command      `yaml:"deprovision"`
	// Concurrency bounds the provisionings, and apart from them the
	// deletions, under way at once (default 2).
	Concurrency int `yaml:"concurrency"`
	// Backoff and MaxBackoff space failed provisionings and deletions as
	// a janitor's are spaced; MaxAttempts failed deletions quarantine the
	// resource (default 3; 0 never does).
	Backoff     time.Duration `yaml:"backoff"`
	MaxBackoff  time.Duration `yaml:"maxBackoff"`
	MaxAttempts *int          `yaml:"maxAttempts"`
}

// Command is a program with its time limit.
type Command struct {
	Command []string      `yaml:"command"`
	Timeout time.Duration `yaml:"timeout"`
}

const (
	minCommandTimeout = time.Second
	maxCommandTimeout = 24 * time.Hour
	maxAttemptsLimit  = 100
	minBackoff        = 100 * time.Millisecond
	maxBackoffLimit   = 24 * time.Hour
	maxConcurrency    = 1000
	maxDynamicTotal   = 100_000
	minLifespan       = time.Minute
)

// validateLifecycle validates a pool's janitor and dynamic sizing and fills
// their defaults.
func validateLifecycle(pp, dir string, p *Pool, add func(path, format string, args ...any)) {
	if j := p.Janitor; j != nil {
		jp := pp + ".janitor"
		switch {
		case j.External && (len(j.Command) > 0 || len(j.DeepCommand) > 0):
			add(jp, "is either external or a command, not both")
		case !j.External && len(j.Command) == 0:
			add(jp, "needs a command, or external: true for a janitor that cleans through the API")
		}
		if len(j.Command) > 0 {
			checkProgram(jp+".command", dir, j.Command, add)
		}
		if len(j.DeepCommand) > 0 {
			checkProgram(jp+".deepCommand", dir, j.DeepCommand, add)
		}
		if j.External {
			if j.Timeout != 0 {
				add(jp+".timeout", "applies to a janitor command; an external janitor keeps its lease with heartbeats")
			}
			if j.Concurrency != 0 {
				add(jp+".concurrency", "applies to a janitor command, not an external janitor")
			}
		} else {
			j.Timeout = checkDuration(jp+".timeout", j.Timeout, janitor.DefaultTimeout, minCommandTimeout, maxCommandTimeout, add)
			switch {
			case j.Concurrency == 0:
				j.Concurrency = janitor.DefaultConcurrency
			case j.Concurrency < 1 || j.Concurrency > maxConcurrency:
				add(jp+".concurrency", "must be between 1 and %d, not %d", maxConcurrency, j.Concurrency)
			}
		}
		j.MaxAttempts = checkAttempts(jp+".maxAttempts", j.MaxAttempts, add)
		j.Backoff, j.MaxBackoff = checkBackoff(jp, j.Backoff, j.MaxBackoff, add)
		j.LeaseTTL = checkDuration(jp+".leaseTTL", j.LeaseTTL, p.LeaseTTL, minLeaseTTL, maxLeaseTTL, add)
		switch j.OnBroken {
		case "":
			j.OnBroken = lease.OnBrokenQuarantine
		case lease.OnBrokenQuarantine, lease.OnBrokenClean:
		default:
			add(jp+".onBroken", "must be %q or %q, not %q", lease.OnBrokenQuarantine, lease.OnBrokenClean, j.OnBroken)
		}
	}
	d := p.Dynamic
	if d == nil {
		return
	}
	dp := pp + ".dynamic"
	if len(p.Resources) > 0 || p.Generate != nil {
		add(dp, "a dynamic pool's resources are made by its provisioner: it declares no resources and no generate")
	}
	switch {
	case d.MaxTotal < 1 || d.MaxTotal > maxDynamicTotal:
		add(dp+".maxTotal", "must be between 1 and %d, not %d", maxDynamicTotal, d.MaxTotal)
	case d.MinFree < 0 || d.MinFree > d.MaxTotal:
		add(dp+".minFree", "must be between 0 and maxTotal (%d), not %d", d.MaxTotal, d.MinFree)
	}
	if d.Lifespan != 0 && (d.Lifespan < minLifespan || d.Lifespan > 365*24*time.Hour) {
		add(dp+".lifespan", "must be 0 (for ever) or between %s and 8760h, not %s", minLifespan, d.Lifespan)
	}
	for _, c := range []struct {
		name string
		cmd  *Command
	}{{"provision", d.Provision}, {"deprovision", d.Deprovision}} {
		cp := dp + "." + c.name
		if c.cmd == nil || len(c.cmd.Command) == 0 {
			add(cp+".command", "is required: a dynamic pool makes its resources with a provisioner and deletes them with a deprovisioner")
			continue
		}
		checkProgram(cp+".command", dir, c.cmd.Command, add)
		c.cmd.Timeout = checkDuration(cp+".timeout", c.cmd.Timeout, janitor.DefaultTimeout, minCommandTimeout, maxCommandTimeout, add)
	}
	switch {
	case d.Concurrency == 0:
		d.Concurrency = janitor.DefaultProvisionConcurrency
	case d.Concurrency < 1 || d.Concurrency > maxConcurrency:
		add(dp+".concurrency", "must be between 1 and %d, not %d", maxConcurrency, d.Concurrency)
	}
	d.MaxAttempts = checkAttempts(dp+".maxAttempts", d.MaxAttempts, add)
	d.Backoff, d.MaxBackoff = checkBackoff(dp, d.Backoff, d.MaxBackoff, add)
}

// checkProgram checks that argv names a program that can be run from
// here: a janitor that cannot start would fail every cleaning, and
// quarantine a whole pool, when the config could have been refused. A
// relative path with a slash ("./clean.sh") is the config file's
// neighbour: it is made absolute from dir (when the config came from a
// file), so that berth finds it whatever its working directory.
func checkProgram(path, dir string, argv []string, add func(path, format string, args ...any)) {
	if argv[0] == "" {
		add(path+"[0]", "must name a program")
		return
	}
	if dir != "" && strings.Contains(argv[0], "/") && !filepath.IsAbs(argv[0]) {
		if abs, err := filepath.Abs(filepath.Join(dir, argv[0])); err == nil {
			argv[0] = abs
		}
	}
	if _, err := exec.LookPath(argv[0]); err != nil {
		add(path+"[0]", "%q cannot be run: %v", argv[0], unwrapExec(err))
	}
}

// unwrapExec drops exec's repetition of the program's name.
func unwrapExec(err error) error {
	if ee, ok := err.(*exec.Error); ok {
		return ee.Err
	}
	return err
}

func checkDuration(path string, d, def, lo, hi time.Duration, add func(path, format string, args ...any)) time.Duration {
	switch {
	case d == 0:
		return def
	case d < lo || d > hi:
		add(path, "must be between %s and %s, not %s", lo, hi, d)
	}
	return d
}

func checkAttempts(path string, n *int, add func(path, format string, args ...any)) *int {
	switch {
	case n == nil:
		d := lease.DefaultMaxAttempts
		return &d
	case *n < 0 || *n > maxAttemptsLimit:
		add(path, "must be between 0 (never quarantine) and %d, not %d", maxAttemptsLimit, *n)
	}
	return n
}

func checkBackoff(pp string, b, m time.Duration, add func(path, format string, args ...any)) (time.Duration, time.Duration) {
	b = checkDuration(pp+".backoff", b, lease.DefaultBackoff, minBackoff, maxBackoffLimit, add)
	switch {
	case m == 0:
		m = max(lease.DefaultMaxBackoff, b)
	case m < b || m > maxBackoffLimit:
		add(pp+".maxBackoff", "must be between the backoff (%s) and %s, not %s", b, maxBackoffLimit, m)
	}
	return b, m
}

// lifecyclePolicy fills an engine pool's janitor and dynamic policy.
func (p *Pool) lifecyclePolicy(lp *lease.Pool) {
	lp.Janitor = lease.JanitorNone
	if j := p.Janitor; j != nil {
		lp.Janitor = lease.JanitorCommand
		if j.External {
			lp.Janitor = lease.JanitorExternal
		}
		lp.Clean = lease.CleanPolicy{MaxAttempts: *j.MaxAttempts, Backoff: j.Backoff, MaxBackoff: j.MaxBackoff}
		lp.CleanLeaseTTL, lp.OnBroken = j.LeaseTTL, j.OnBroken
	}
	if d := p.Dynamic; d != nil {
		lp.Dynamic = &berth.Dynamic{MinFree: d.MinFree, MaxTotal: d.MaxTotal, Lifespan: berth.Duration(d.Lifespan)}
	}
}

// JanitorPools returns the pools of a validated config that berth's own
// janitor cleans.
func (c *Config) JanitorPools() []janitor.Pool {
	var out []janitor.Pool
	for _, p := range c.Pools {
		if j := p.Janitor; j != nil && !j.External {
			out = append(out, janitor.Pool{Type: p.Type, Command: j.Command, DeepCommand: j.DeepCommand, Timeout: j.Timeout, Concurrency: j.Concurrency})
		}
	}
	return out
}

// DynamicPools returns the dynamic pools of a validated config.
func (c *Config) DynamicPools() []janitor.DynamicPool {
	var out []janitor.DynamicPool
	for _, p := range c.Pools {
		d := p.Dynamic
		if d == nil {
			continue
		}
		out = append(out, janitor.DynamicPool{Type: p.Type, MinFree: d.MinFree, MaxTotal: d.MaxTotal, Lifespan: d.Lifespan,
			Provision:   janitor.Command{Argv: d.Provision.Command, Timeout: d.Provision.Timeout},
			Deprovision: janitor.Command{Argv: d.Deprovision.Command, Timeout: d.Deprovision.Timeout},
			Concurrency: d.Concurrency,
			Backoff:     lease.CleanPolicy{MaxAttempts: *d.MaxAttempts, Backoff: d.Backoff, MaxBackoff: d.MaxBackoff}})
	}
	return out
}
