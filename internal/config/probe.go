package config

import (
	"errors"
	"fmt"
	"time"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/probe"
)

// Probe is a pool's health probe: one kind (tcp, http, kubernetes, exec)
// and its timing. Zero values take the defaults of probe.Pool.
type Probe struct {
	TCP        *TCPProbe        `yaml:"tcp"`
	HTTP       *HTTPProbe       `yaml:"http"`
	Kubernetes *KubernetesProbe `yaml:"kubernetes"`
	Exec       *ExecProbe       `yaml:"exec"`

	Interval         time.Duration `yaml:"interval"`
	Timeout          time.Duration `yaml:"timeout"`
	ConnectTimeout   time.Duration `yaml:"connectTimeout"`
	FailureThreshold int           `yaml:"failureThreshold"`
	SuccessThreshold int           `yaml:"successThreshold"`
	// Jitter is a fraction of the interval (0 to 1); default 0.1.
	Jitter     *float64      `yaml:"jitter"`
	MaxBackoff time.Duration `yaml:"maxBackoff"`
	// LeaseUnknown lets resources that have not been probed yet (or whose
	// probe cannot be made) be leased. Disconnected ones never are.
	LeaseUnknown bool `yaml:"leaseUnknown"`
}

type TCPProbe struct {
	Address string `yaml:"address"`
}

type HTTPProbe struct {
	URL                string `yaml:"url"`
	ExpectStatus       []int  `yaml:"expectStatus"`
	CAFile             string `yaml:"caFile"`
	BearerToken        string `yaml:"bearerToken"`
	BearerTokenFile    string `yaml:"bearerTokenFile"`
	InsecureSkipVerify bool   `yaml:"insecureSkipVerify"`
}

type KubernetesProbe struct {
	KubeconfigFile     string `yaml:"kubeconfigFile"`
	KubeconfigUserData string `yaml:"kubeconfigUserData"`
	Context            string `yaml:"context"`
}

type ExecProbe struct {
	Command []string `yaml:"command"`
}

// Spec returns the probe kind as the probe package takes it.
func (p *Probe) Spec() probe.Spec {
	var s probe.Spec
	if p.TCP != nil {
		s.TCP = &probe.TCPSpec{Address: p.TCP.Address}
	}
	if h := p.HTTP; h != nil {
		s.HTTP = &probe.HTTPSpec{URL: h.URL, ExpectStatus: h.ExpectStatus, CAFile: h.CAFile, BearerToken: h.BearerToken,
			BearerTokenFile: h.BearerTokenFile, InsecureSkipVerify: h.InsecureSkipVerify}
	}
	if k := p.Kubernetes; k != nil {
		s.Kubernetes = &probe.KubernetesSpec{KubeconfigFile: k.KubeconfigFile, KubeconfigUserData: k.KubeconfigUserData, Context: k.Context}
	}
	if p.Exec != nil {
		s.Exec = &probe.ExecSpec{Command: p.Exec.Command}
	}
	return s
}

const (
	minProbeInterval = 100 * time.Millisecond
	maxProbeInterval = 24 * time.Hour
	maxThreshold     = 100
	// maxTargetProblems bounds the per-resource problems reported for
	// one pool: a million generated resources lacking the same user-data
	// key are one mistake, not a million.
	maxTargetProblems = 5
)

// validateProbe checks a pool's probe, fills its defaults, and renders
// its templates for every resource of the pool.
func validateProbe(pp string, pool *Pool, add func(path, format string, args ...any)) {
	p := pool.Probe
	path := pp + ".probe"
	if _, err := probe.Compile(p.Spec(), probe.Env{}); err != nil {
		addProbeErrors(pp, err, add)
	}
	switch {
	case p.Interval == 0:
		p.Interval = probe.DefaultInterval
	case p.Interval < minProbeInterval || p.Interval > maxProbeInterval:
		add(path+".interval", "must be between %s and %s, not %s", minProbeInterval, maxProbeInterval, p.Interval)
	}
	switch {
	case p.Timeout == 0:
		p.Timeout = min(probe.DefaultTimeout, p.Interval)
	case p.Timeout < 0 || p.Timeout > p.Interval:
		add(path+".timeout", "must be more than 0s and at most the interval (%s), not %s", p.Interval, p.Timeout)
	}
	switch {
	case p.ConnectTimeout == 0:
		p.ConnectTimeout = p.Timeout
	case p.ConnectTimeout < 0 || p.ConnectTimeout > p.Timeout:
		add(path+".connectTimeout", "must be more than 0s and at most the timeout (%s), not %s", p.Timeout, p.ConnectTimeout)
	}
	for _, th := range []struct {
		name string
		v    *int
		def  int
	}{{"failureThreshold", &p.FailureThreshold, probe.DefaultFailureThreshold}, {"successThreshold", &p.SuccessThreshold, probe.DefaultSuccessThreshold}} {
		switch {
		case *th.v == 0:
			*th.v = th.def
		case *th.v < 1 || *th.v > maxThreshold:
			add(path+"."+th.name, "must be between 1 and %d, not %d", maxThreshold, *th.v)
		}
	}
	switch {
	case p.Jitter == nil:
		j := probe.DefaultJitter
		p.Jitter = &j
	case *p.Jitter < 0 || *p.Jitter > 1:
		add(path+".jitter", "must be a fraction of the interval between 0 and 1, not %g", *p.Jitter)
	}
	switch {
	case p.MaxBackoff == 0:
		p.MaxBackoff = max(probe.DefaultMaxBackoff, p.Interval)
	case p.MaxBackoff < p.Interval || p.MaxBackoff > maxProbeInterval:
		add(path+".maxBackoff", "must be between the interval (%s) and %s, not %s", p.Interval, maxProbeInterval, p.MaxBackoff)
	}
	spec := p.Spec()
	n := 0
	for _, name := range pool.names() {
		t := &probe.Target{Name: name.name, Type: pool.Type, UserData: name.userData, Labels: name.labels}
		err := spec.ValidateTarget(t)
		if err == nil {
			continue
		}
		n++
		if n > maxTargetProblems {
			continue
		}
		for _, e := range flatten(err) {
			add(pp+"."+name.path, "cannot be probed: %s", e.Error())
		}
	}
	if n > maxTargetProblems {
		add(path, "%d more resources cannot be probed for the same reasons", n-maxTargetProblems)
	}
}

// addProbeErrors turns Compile's errors, which name the field under the
// pool, into problems.
func addProbeErrors(pp string, err error, add func(path, format string, args ...any)) {
	for _, e := range flatten(err) {
		var be *berth.Error
		if errors.As(e, &be) && be.Field != "" {
			add(pp+"."+be.Field, "%s", be.Message)
			continue
		}
		add(pp+".probe", "%s", e.Error())
	}
}

// flatten undoes errors.Join.
func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

type declared struct {
	path             string
	name             string
	userData, labels map[string]string
}

// names lists the pool's resources with the config path of each.
func (p *Pool) names() []declared {
	var out []declared
	for j, r := range p.Resources {
		out = append(out, declared{path: fmt.Sprintf("resources[%d]", j), name: r.Name, userData: r.UserData, labels: r.Labels})
	}
	if g := p.Generate; g != nil && g.Count >= 1 && g.Count <= maxGenerated {
		for n := 1; n <= g.Count; n++ {
			out = append(out, declared{path: "generate", name: fmt.Sprintf("%s%d", g.Prefix, n)})
		}
	}
	return out
}

// ProbePools returns the probed pools of a validated config, for the
// prober.
func (c *Config) ProbePools() []probe.Pool {
	var out []probe.Pool
	for _, p := range c.Pools {
		if p.Probe == nil {
			continue
		}
		pr := p.Probe
		jitter := probe.DefaultJitter
		if pr.Jitter != nil {
			jitter = *pr.Jitter
		}
		out = append(out, probe.Pool{Type: p.Type, Spec: pr.Spec(), Interval: pr.Interval, Timeout: pr.Timeout,
			ConnectTimeout: pr.ConnectTimeout, FailureThreshold: pr.FailureThreshold, SuccessThreshold: pr.SuccessThreshold,
			Jitter: jitter, MaxBackoff: pr.MaxBackoff, LeaseTTL: p.LeaseTTL})
	}
	return out
}
