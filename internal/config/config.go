// Package config reads and validates berth's YAML configuration. Load
// returns every problem at once, each naming the field (as a path such as
// pools[1].leaseTTL) and the line it is on, so an operator fixes a config in
// one pass instead of one crash at a time.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/lease"
	"github.com/berth-ci/berth/internal/store"
)

// Config is the whole file.
type Config struct {
	Pools []Pool `yaml:"pools"`
	// dir is the directory of the file it was loaded from: a janitor's
	// or provisioner's program given as a relative path ("./clean.sh")
	// is found there.
	dir string
}

// Pool is one type of resource and its policy.
type Pool struct {
	Type string `yaml:"type"`
	// LeaseTTL is how long a lease lasts without a heartbeat. Default 10m.
	LeaseTTL  time.Duration `yaml:"leaseTTL"`
	Resources []Resource    `yaml:"resources"`
	// Generate adds Count resources named Prefix1 … PrefixN, for large
	// pools of interchangeable resources.
	Generate *Generate `yaml:"generate"`
	// Probe, if set, health-probes every resource of the pool.
	Probe *Probe `yaml:"probe"`
	// Janitor, if set, cleans released resources before they are leased
	// again; without one they go straight back to free.
	Janitor *Janitor `yaml:"janitor"`
	// Dynamic, if set, has a provisioner make the pool's resources.
	Dynamic *Dynamic `yaml:"dynamic"`
	// boskos is set on a pool loaded from a Boskos resources file.
	boskos *Boskos
}

// Resource is one static resource: a plain name, or a mapping with user
// data and labels.
type Resource struct {
	Name     string    `yaml:"name"`
	UserData StringMap `yaml:"userData"`
	Labels   StringMap `yaml:"labels"`
}

// Generate names resources from a prefix and a count.
type Generate struct {
	Prefix string `yaml:"prefix"`
	Count  int    `yaml:"count"`
}

// StringMap is a map of strings that also takes numbers and booleans as
// their text, since `port: 443` is what people write.
type StringMap map[string]string

// UnmarshalYAML takes any scalar as its text. Problems are returned as a
// *yaml.TypeError with the line, so the decoder carries on and reports
// them together with everything else.
func (m *StringMap) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: must be a mapping of strings", n.Line)}}
	}
	out := make(StringMap, len(n.Content)/2)
	var errs []string
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch {
		case k.Kind != yaml.ScalarNode:
			errs = append(errs, fmt.Sprintf("line %d: keys must be strings", k.Line))
		case v.Kind != yaml.ScalarNode:
			errs = append(errs, fmt.Sprintf("line %d: value of %q must be a string, not a list or mapping", v.Line, k.Value))
		case v.Tag == "!!null":
			out[k.Value] = ""
		default:
			out[k.Value] = v.Value
		}
	}
	if len(errs) > 0 {
		return &yaml.TypeError{Errors: errs}
	}
	*m = out
	return nil
}

// UnmarshalYAML accepts a bare name as shorthand for {name: NAME}. It
// implements the obsolete yaml.v3 interface on purpose: that form keeps the
// decoder's strict KnownFields setting, where the yaml.Node form would not.
func (r *Resource) UnmarshalYAML(unmarshal func(any) error) error {
	var name string
	if err := unmarshal(&name); err == nil {
		r.Name = name
		return nil
	}
	type plain Resource
	return unmarshal((*plain)(r))
}

// Default returns an empty config; Load fills per-pool defaults.
func Default() *Config { return &Config{} }

// Demo is the config of `berth serve --demo`: a few pools to look at and
// lease from. gce-project has a janitor (a shell command that takes two
// seconds), so a released project shows dirty, then cleaning, then free;
// kind-cluster is dynamic, its resources made and deleted by shell
// commands that stand in for real provisioners.
func Demo() *Config {
	return &Config{Pools: []Pool{
		{Type: "gce-project", LeaseTTL: 10 * time.Minute, Resources: []Resource{{Name: "proj-1"}, {Name: "proj-2"}, {Name: "proj-3"}},
			Janitor: &Janitor{Command: []string{"sh", "-c", `echo "cleaning $BERTH_RESOURCE_NAME (attempt $BERTH_CLEAN_ATTEMPT)"; sleep 2; echo done`}}},
		{Type: "kind-cluster", LeaseTTL: 30 * time.Minute, Dynamic: &Dynamic{MinFree: 1, MaxTotal: 3, Lifespan: time.Hour,
			Provision: &Command{Command: []string{"sh", "-c", `id=$(echo "$BERTH_PROVISION_ID" | tail -c 7 | tr A-Z a-z); ` +
				`echo "making kind-$id" >&2; printf '{"name": "kind-%s", "userData": {"kubeconfig": "/tmp/kind-%s.yaml"}}\n' "$id" "$id"`}},
			Deprovision: &Command{Command: []string{"sh", "-c", `echo "deleting $BERTH_RESOURCE_NAME"`}}}},
		{Type: "gke-cluster", LeaseTTL: 15 * time.Minute, Resources: []Resource{
			{Name: "cluster-a", UserData: StringMap{"endpoint": "https://10.0.0.1"}, Labels: StringMap{"region": "us-east1"}},
			{Name: "cluster-b", UserData: StringMap{"endpoint": "https://10.0.0.2"}, Labels: StringMap{"region": "europe-west1"}},
		}},
		{Type: "pixel-7", LeaseTTL: 5 * time.Minute, Generate: &Generate{Prefix: "pixel-7-", Count: 4}},
	}}
}

// Problem is one thing wrong with a config.
type Problem struct {
	Path    string // pools[1].leaseTTL
	Line    int    // 0 when unknown
	Message string
}

// ValidationError lists every problem found in a config file.
type ValidationError struct {
	File     string
	Problems []Problem
}

func (e *ValidationError) Error() string {
	return strings.Join(e.Lines(), "\n")
}

// Lines returns one line per problem: FILE:LINE: PATH: MESSAGE.
func (e *ValidationError) Lines() []string {
	out := make([]string, 0, len(e.Problems))
	for _, p := range e.Problems {
		var b strings.Builder
		if e.File != "" {
			b.WriteString(e.File)
			if p.Line > 0 {
				b.WriteString(":" + strconv.Itoa(p.Line))
			}
			b.WriteString(": ")
		} else if p.Line > 0 {
			b.WriteString("line " + strconv.Itoa(p.Line) + ": ")
		}
		if p.Path != "" {
			b.WriteString(p.Path + ": ")
		}
		b.WriteString(p.Message)
		// One line each, whatever the file held: a value quoted into a
		// message may carry a line break or a control character.
		out = append(out, strings.Map(func(r rune) rune {
			if r < ' ' || r == 0x7f {
				return ' '
			}
			return r
		}, b.String()))
	}
	return out
}

// Load reads, decodes and validates the file at path.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	c, err := parse(b, filepath.Dir(path))
	var ve *ValidationError
	if errors.As(err, &ve) {
		ve.File = path
	}
	return c, err
}

// Parse decodes and validates a config document.
func Parse(b []byte) (*Config, error) { return parse(b, "") }

// parse is Parse for a document from a file in dir ("" for none).
func parse(b []byte, dir string) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return nil, &ValidationError{Problems: []Problem{syntaxProblem(err)}}
	}
	// A second document (after "---") would be silently ignored by the
	// decoder: refuse it, since the pools in it would never be served.
	docs := yaml.NewDecoder(bytes.NewReader(b))
	var first yaml.Node
	if err := docs.Decode(&first); err == nil {
		var second yaml.Node
		if err := docs.Decode(&second); err == nil {
			return nil, &ValidationError{Problems: []Problem{{Line: second.Line, Message: "a second YAML document; a berth config is one document"}}}
		}
	}
	idx := indexNodes(&root)
	c := Default()
	c.dir = dir
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return nil, &ValidationError{Problems: []Problem{syntaxProblem(err)}}
		}
		// The decoder filled in what it could; validate that too so that
		// one run reports every problem, but skip fields already reported.
		ps := make([]Problem, 0, len(te.Errors))
		bad := map[string]bool{}
		for _, msg := range te.Errors {
			p := idx.typeProblem(msg)
			bad[p.Path] = true
			ps = append(ps, p)
		}
		for _, p := range c.Validate() {
			if !overlaps(bad, p.Path) {
				p.Line = idx.lineOf(p.Path)
				ps = append(ps, p)
			}
		}
		return nil, &ValidationError{Problems: ps}
	}
	if ps := c.Validate(); len(ps) > 0 {
		for i := range ps {
			ps[i].Line = idx.lineOf(ps[i].Path)
		}
		return nil, &ValidationError{Problems: ps}
	}
	return c, nil
}

var lineRe = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

func syntaxProblem(err error) Problem {
	msg := err.Error()
	if m := lineRe.FindStringSubmatch(msg); m != nil {
		n, _ := strconv.Atoi(m[1])
		return Problem{Line: n, Message: "invalid YAML: " + m[2]}
	}
	return Problem{Message: "invalid YAML: " + strings.TrimPrefix(msg, "yaml: ")}
}

const (
	minLeaseTTL   = time.Second
	maxLeaseTTL   = 7 * 24 * time.Hour
	maxGenerated  = 1_000_000
	maxValueBytes = 64 << 10
)

// Validate checks every rule and fills defaults; it returns all problems.
func (c *Config) Validate() []Problem {
	var ps []Problem
	add := func(path, format string, args ...any) {
		ps = append(ps, Problem{Path: path, Message: fmt.Sprintf(format, args...)})
	}
	if len(c.Pools) == 0 {
		add("pools", "at least one pool is required")
	}
	types := map[string]string{}
	names := map[string]string{}
	for i := range c.Pools {
		p := &c.Pools[i]
		pp := fmt.Sprintf("pools[%d]", i)
		claimType(types, pp, p.Type, add)
		switch {
		case p.LeaseTTL == 0:
			p.LeaseTTL = lease.DefaultLeaseTTL
		case p.LeaseTTL < minLeaseTTL || p.LeaseTTL > maxLeaseTTL:
			add(pp+".leaseTTL", "must be between %s and %s, not %s", minLeaseTTL, maxLeaseTTL, p.LeaseTTL)
		}
		claim := func(path, name string) {
			switch {
			case name == "":
				add(path, "a resource name is required")
			case !berth.ValidName(name):
				add(path, "%q is not a valid resource name (letters, digits, '.', '_', '-'; at most 253)", name)
			case names[name] != "":
				add(path, "resource %q is already declared at %s", name, names[name])
			default:
				names[name] = path
			}
		}
		for j, r := range p.Resources {
			rp := fmt.Sprintf("%s.resources[%d]", pp, j)
			if r.Name == "" {
				add(rp+".name", "is required")
			} else {
				claim(rp+".name", r.Name)
			}
			// The bounds a holder's /update keeps within (store.MergeUserData).
			if len(r.UserData) > store.MaxUserDataKeys {
				add(rp+".userData", "has %d keys, more than %d", len(r.UserData), store.MaxUserDataKeys)
			} else if n := store.UserDataBytes(r.UserData); n > store.MaxUserDataBytes {
				add(rp+".userData", "is %d bytes in all, more than %d", n, store.MaxUserDataBytes)
			}
			for _, k := range slices.Sorted(maps.Keys(r.UserData)) {
				if k == "" || len(k) > 253 {
					add(rp+".userData", "keys must be 1 to 253 characters")
				}
				if len(r.UserData[k]) > maxValueBytes {
					add(rp+".userData."+k, "is longer than %d bytes", maxValueBytes)
				}
				if strings.IndexByte(k, 0) >= 0 || strings.IndexByte(r.UserData[k], 0) >= 0 {
					add(rp+".userData", "contains a NUL byte")
				}
			}
			for _, k := range slices.Sorted(maps.Keys(r.Labels)) {
				if !berth.ValidLabelKey(k) {
					add(rp+".labels", "%q is not a valid label key", k)
				}
				if len(r.Labels[k]) > 63 {
					add(rp+".labels."+k, "is longer than 63 characters")
				}
				if strings.IndexByte(r.Labels[k], 0) >= 0 {
					add(rp+".labels."+k, "contains a NUL byte")
				}
			}
		}
		if g := p.Generate; g != nil {
			gp := pp + ".generate"
			if g.Count < 1 || g.Count > maxGenerated {
				add(gp+".count", "must be between 1 and %d, not %d", maxGenerated, g.Count)
			} else if g.Prefix == "" || !berth.ValidName(g.Prefix+"1") {
				add(gp+".prefix", "%q does not make valid resource names", g.Prefix)
			} else {
				for n := 1; n <= g.Count; n++ {
					claim(gp, g.Prefix+strconv.Itoa(n))
				}
			}
		}
		if p.Probe != nil {
			validateProbe(pp, p, add)
		}
		validateLifecycle(pp, c.dir, p, add)
	}
	return ps
}

// claimType checks the type of the pool (or Boskos entry) at path and
// records it in types, which maps each type to where it was declared.
func claimType(types map[string]string, path, typ string, add func(path, format string, args ...any)) {
	switch {
	case typ == "":
		add(path+".type", "is required")
	case !berth.ValidName(typ):
		add(path+".type", "%q is not a valid type name (letters, digits, '.', '_', '-'; at most 253)", typ)
	case types[typ] != "":
		add(path+".type", "%q is already the type of %s", typ, types[typ])
	default:
		types[typ] = path
	}
}

// EnginePools converts a validated config into the engine's policies.
func (c *Config) EnginePools() []lease.Pool {
	out := make([]lease.Pool, 0, len(c.Pools))
	for _, p := range c.Pools {
		lp := lease.Pool{Type: p.Type, LeaseTTL: p.LeaseTTL}
		p.lifecyclePolicy(&lp)
		if b := p.boskos; b != nil {
			lp.InitialState = b.InitialState
			if b.MaxCount > 0 {
				lp.Dynamic = &berth.Dynamic{MaxTotal: b.MaxCount, Lifespan: berth.Duration(b.LifeSpan)}
				lp.OnDemand = &lease.OnDemand{MinCount: b.MinCount, MaxCount: b.MaxCount}
			}
		}
		if p.Probe != nil {
			spec := p.Probe.Spec()
			lp.Probe, lp.RequireConnected, lp.ProbeHash = spec.Kind(), !p.Probe.LeaseUnknown, spec.Hash()
		}
		for _, r := range p.Resources {
			lp.Resources = append(lp.Resources, store.ResourceSpec{Name: r.Name, UserData: r.UserData, Labels: r.Labels})
		}
		if g := p.Generate; g != nil {
			for n := 1; n <= g.Count; n++ {
				lp.Resources = append(lp.Resources, store.ResourceSpec{Name: g.Prefix + strconv.Itoa(n)})
			}
		}
		out = append(out, lp)
	}
	return out
}

// overlaps reports whether path is, contains or lies inside a path that
// already has a problem: a field that failed to decode also looks empty or
// wrong to Validate, and saying so twice helps nobody.
func overlaps(bad map[string]bool, path string) bool {
	for b := range bad {
		if b == "" {
			continue
		}
		if path == b || strings.HasPrefix(path, b+".") || strings.HasPrefix(path, b+"[") ||
			strings.HasPrefix(b, path+".") || strings.HasPrefix(b, path+"[") {
			return true
		}
	}
	return false
}
