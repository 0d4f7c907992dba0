package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"regexp"
	"slices"
	"strconv"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/boskos"
)

// A Boskos resources file (boskos-api.md, "Resources config"), loaded as
// berth pools: each entry is a pool whose released and expired resources
// go dirty for a Boskos janitor to clean through the API, whose new
// resources start in the entry's state, and whose leases last as long as
// a Boskos holder may stay silent.

// boskosFile is the file as Boskos reads it.
type boskosFile struct {
	Resources []BoskosEntry `yaml:"resources"`
}

// BoskosEntry is one entry of a Boskos resources file.
type BoskosEntry struct {
	Type string `yaml:"type"`
	// State is the state new resources start in (default free).
	State string   `yaml:"state"`
	Names []string `yaml:"names"`
	// MinCount, MaxCount and LifeSpan make the type dynamic (an entry
	// without names): see boskos-api.md.
	MinCount int             `yaml:"min-count"`
	MaxCount int             `yaml:"max-count"`
	LifeSpan *BoskosDuration `yaml:"lifespan"`
	// Needs and Config are for an outside builder of dynamic resources
	// (Boskos' mason); berth checks Needs as Boskos does and keeps
	// neither.
	Needs  map[string]int `yaml:"needs"`
	Config *struct {
		Type    string `yaml:"type"`
		Content string `yaml:"content"`
	} `yaml:"config"`
}

// BoskosDuration is a lifespan: a Go duration string, or an integer of
// nanoseconds, as Boskos takes either.
type BoskosDuration struct{ time.Duration }

// UnmarshalYAML takes "48h" or 172800000000000.
func (d *BoskosDuration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		if ns, err := strconv.ParseInt(n.Value, 10, 64); err == nil {
			d.Duration = time.Duration(ns)
			return nil
		}
		if v, err := time.ParseDuration(n.Value); err == nil {
			d.Duration = v
			return nil
		}
	}
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: must be a duration such as 48h, or an integer of nanoseconds, not %q", n.Line, n.Value)}}
}

// Boskos is the policy of a pool loaded from a Boskos resources file.
type Boskos struct {
	InitialState berth.State
	// MinCount, MaxCount and LifeSpan are a dynamic entry's sizing.
	MinCount, MaxCount int
	LifeSpan           time.Duration
}

// dns1123Subdomain is what Boskos requires of a resource name.
var dns1123Subdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

// LoadBoskos reads and validates a Boskos resources file, returning its
// entries as a config of pools.
func LoadBoskos(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read Boskos config: %w", err)
	}
	c, err := ParseBoskos(b)
	var ve *ValidationError
	if errors.As(err, &ve) {
		ve.File = path
	}
	return c, err
}

// ParseBoskos decodes and validates a Boskos resources document.
func ParseBoskos(b []byte) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return nil, &ValidationError{Problems: []Problem{syntaxProblem(err)}}
	}
	idx := indexNodes(&root)
	var f boskosFile
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var ps []Problem
	bad := map[string]bool{}
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return nil, &ValidationError{Problems: []Problem{syntaxProblem(err)}}
		}
		for _, msg := range te.Errors {
			p := idx.typeProblem(msg)
			bad[p.Path] = true
			ps = append(ps, p)
		}
	}
	c := &Config{}
	for _, p := range validateBoskos(&f, c) {
		if !overlaps(bad, p.Path) {
			p.Line = idx.lineOf(p.Path)
			ps = append(ps, p)
		}
	}
	if len(ps) > 0 {
		return nil, &ValidationError{Problems: ps}
	}
	return c, nil
}

// validateBoskos checks f as Boskos does (and what berth needs besides)
// and fills c with its pools.
func validateBoskos(f *boskosFile, c *Config) []Problem {
	var ps []Problem
	add := func(path, format string, args ...any) {
		ps = append(ps, Problem{Path: path, Message: fmt.Sprintf(format, args...)})
	}
	if len(f.Resources) == 0 {
		add("resources", "at least one entry is required (the Boskos config is empty)")
	}
	types := map[string]string{}
	names := map[string]string{}
	count := map[string]int{}
	needs := map[string]int{}
	for i, e := range f.Resources {
		ep := fmt.Sprintf("resources[%d]", i)
		claimType(types, ep, e.Type, add)
		state := berth.State(e.State)
		switch {
		case e.State == "":
			state = berth.StateFree
		case !berth.ValidName(e.State):
			add(ep+".state", "%q is not a valid state name", e.State)
		case state == berth.StateBusy || state == berth.StateCleaning || state == berth.StateDeleting || state == berth.StateQuarantined:
			add(ep+".state", "new resources cannot start %s: that state needs a lease or a reason", state)
		}
		pol := &Boskos{InitialState: state}
		pool := Pool{Type: e.Type, LeaseTTL: boskos.DefaultLeaseTTL, Janitor: &Janitor{External: true}, boskos: pol}
		if len(e.Names) == 0 {
			// Dynamic: berth makes up to max-count resources, as demand
			// asks, for an outside builder to make real.
			switch {
			case e.MaxCount <= 0:
				add(ep+".max-count", "must be > 0 for an entry without names (a dynamic type)")
			case e.MaxCount > maxDynamicTotal:
				add(ep+".max-count", "must be at most %d", maxDynamicTotal)
			case e.MinCount < 0:
				add(ep+".min-count", "must not be negative")
			case e.MinCount > e.MaxCount:
				add(ep+".min-count", "must be <= max-count (%d), not %d", e.MaxCount, e.MinCount)
			}
			pol.MinCount, pol.MaxCount = e.MinCount, e.MaxCount
			if e.LifeSpan != nil {
				if e.LifeSpan.Duration < minLifespan {
					add(ep+".lifespan", "must be at least %s, not %s", minLifespan, e.LifeSpan.Duration)
				}
				pol.LifeSpan = e.LifeSpan.Duration
			}
			count[e.Type] += e.MaxCount
			for k, v := range e.Needs {
				needs[k] += v * e.MaxCount
			}
		} else {
			if e.MinCount != 0 {
				add(ep+".min-count", "must be unset when names are given")
			}
			if e.MaxCount != 0 {
				add(ep+".max-count", "must be unset when names are given")
			}
			if e.LifeSpan != nil {
				add(ep+".lifespan", "must be unset when names are given")
			}
			count[e.Type] += len(e.Names)
		}
		for j, n := range e.Names {
			np := fmt.Sprintf("%s.names[%d]", ep, j)
			switch {
			case len(n) > 253 || !dns1123Subdomain.MatchString(n):
				add(np, "%q is not a valid name (a DNS-1123 subdomain: lower-case letters, digits, '-' and '.')", n)
			case names[n] != "":
				add(np, "%q is a duplicate of %s", n, names[n])
			default:
				names[n] = np
				pool.Resources = append(pool.Resources, Resource{Name: n})
			}
		}
		c.Pools = append(c.Pools, pool)
	}
	for _, typ := range slices.Sorted(maps.Keys(needs)) {
		have, ok := count[typ]
		switch {
		case !ok:
			add("resources", "an entry needs resources of type %q, which no entry declares", typ)
		case needs[typ] > have:
			add("resources", "not enough resources of type %q for the dynamic types that need them (%d needed, %d declared)", typ, needs[typ], have)
		}
	}
	// Fill the janitor's defaults (attempts, backoff) as for any pool.
	for i := range c.Pools {
		validateLifecycle(fmt.Sprintf("resources[%d]", i), "", &c.Pools[i], add)
	}
	return ps
}

// SetBoskosLeaseTTL sets how long a holder through the Boskos API keeps
// a resource of a pool of the Boskos config without an /update: serve's
// --boskos-lease-ttl, for leases taken at once and those handed to a
// waiter alike (a handed-over lease takes its pool's TTL).
func (c *Config) SetBoskosLeaseTTL(d time.Duration) {
	for i := range c.Pools {
		if c.Pools[i].boskos != nil {
			c.Pools[i].LeaseTTL = d
		}
	}
}

// Merge adds the pools of a Boskos config to c: a type or a resource name
// the two declare both is a problem.
func (c *Config) Merge(b *Config, boskosFile string) error {
	types := map[string]bool{}
	names := map[string]bool{}
	for _, p := range c.Pools {
		types[p.Type] = true
		for _, d := range p.names() {
			names[d.name] = true
		}
	}
	var ps []Problem
	for i, p := range b.Pools {
		if types[p.Type] {
			ps = append(ps, Problem{Path: fmt.Sprintf("resources[%d].type", i), Message: fmt.Sprintf("%q is also a pool of the berth config", p.Type)})
		}
		for j, r := range p.Resources {
			if names[r.Name] {
				ps = append(ps, Problem{Path: fmt.Sprintf("resources[%d].names[%d]", i, j), Message: fmt.Sprintf("%q is also a resource of the berth config", r.Name)})
			}
		}
	}
	if len(ps) > 0 {
		return &ValidationError{File: boskosFile, Problems: ps}
	}
	c.Pools = append(c.Pools, b.Pools...)
	return nil
}

// OnDemand says whether any pool is a dynamic type of a Boskos config,
// whose resources berth makes on demand and tends.
func (c *Config) OnDemand() bool {
	for _, p := range c.Pools {
		if p.boskos != nil && p.boskos.MaxCount > 0 {
			return true
		}
	}
	return false
}
