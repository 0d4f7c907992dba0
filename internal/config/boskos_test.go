package config_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/boskos"
	"github.com/berth-ci/berth/internal/config"
	"github.com/berth-ci/berth/internal/lease"
)

func TestParseBoskos(t *testing.T) {
	c, err := config.ParseBoskos([]byte(`
resources:
- type: aws-account
  names: [acct-1, acct.2]
- type: gce-project
  state: dirty
  names: [proj-1]
- type: aws-cluster
  state: dirty
  min-count: 1
  max-count: 2
  lifespan: 48h
  needs: {aws-account: 1}
  config: {type: AWSClusterCreator, content: "..."}
- type: vm
  max-count: 3
  lifespan: 3600000000000
`))
	if err != nil {
		t.Fatal(err)
	}
	ps := c.EnginePools()
	if len(ps) != 4 {
		t.Fatalf("pools: %+v", ps)
	}
	acct, proj, cluster, vm := ps[0], ps[1], ps[2], ps[3]
	if acct.InitialState != berth.StateFree || len(acct.Resources) != 2 || acct.Janitor != lease.JanitorExternal || acct.LeaseTTL != boskos.DefaultLeaseTTL {
		t.Errorf("aws-account: %+v", acct)
	}
	if proj.InitialState != berth.StateDirty || proj.OnDemand != nil {
		t.Errorf("gce-project: %+v", proj)
	}
	if cluster.OnDemand == nil || cluster.OnDemand.MinCount != 1 || cluster.OnDemand.MaxCount != 2 || cluster.Dynamic == nil ||
		time.Duration(cluster.Dynamic.Lifespan) != 48*time.Hour || len(cluster.Resources) != 0 {
		t.Errorf("aws-cluster: %+v (%+v)", cluster, cluster.OnDemand)
	}
	if vm.OnDemand == nil || time.Duration(vm.Dynamic.Lifespan) != time.Hour {
		t.Errorf("vm (lifespan in nanoseconds): %+v", vm)
	}
	if !c.OnDemand() {
		t.Error("OnDemand() is false with dynamic types")
	}
}

// TestParseBoskosProblems: each rule Boskos checks is one line naming the
// field and the line, all reported at once.
func TestParseBoskosProblems(t *testing.T) {
	for _, c := range []struct{ name, doc, want string }{
		{"empty", "resources: []", "resources: at least one entry is required"},
		{"no type", "resources:\n- names: [a]", "line 2: resources[0].type: is required"},
		{"duplicate type", "resources:\n- type: a\n  names: [x]\n- type: a\n  names: [y]", `line 4: resources[1].type: "a" is already the type of resources[0]`},
		{"duplicate name", "resources:\n- type: a\n  names: [x]\n- type: b\n  names: [x]", `line 5: resources[1].names[0]: "x" is a duplicate of resources[0].names[0]`},
		{"bad name", "resources:\n- type: a\n  names: [Bad_Name]", `resources[0].names[0]: "Bad_Name" is not a valid name`},
		{"min-count with names", "resources:\n- type: a\n  names: [x]\n  min-count: 1", "line 4: resources[0].min-count: must be unset when names are given"},
		{"max-count with names", "resources:\n- type: a\n  names: [x]\n  max-count: 1", "line 4: resources[0].max-count: must be unset when names are given"},
		{"dynamic without max", "resources:\n- type: a\n  min-count: 1", "resources[0].max-count: must be > 0"},
		{"min above max", "resources:\n- type: a\n  min-count: 3\n  max-count: 2", "resources[0].min-count: must be <= max-count (2), not 3"},
		{"bad lifespan", "resources:\n- type: a\n  max-count: 2\n  lifespan: soon", `line 4: resources[0].lifespan: must be a duration such as 48h`},
		{"unmet needs", "resources:\n- type: a\n  max-count: 2\n  needs: {b: 1}", `needs resources of type "b", which no entry declares`},
		{"not enough for needs", "resources:\n- type: b\n  names: [x]\n- type: a\n  max-count: 2\n  needs: {b: 1}", `not enough resources of type "b"`},
		{"leased initial state", "resources:\n- type: a\n  state: busy\n  names: [x]", "line 3: resources[0].state: new resources cannot start busy"},
		{"unknown key", "resources:\n- type: a\n  names: [x]\n  max_count: 2", "line 4: resources[0].max_count: unknown field"},
		{"not YAML", "resources: [", "invalid YAML"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := config.ParseBoskos([]byte(c.doc))
			var ve *config.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("err = %v, want a ValidationError", err)
			}
			if got := ve.Error(); !strings.Contains(got, c.want) {
				t.Fatalf("problems:\n%s\nwant a line containing %q", got, c.want)
			}
		})
	}
}

func TestMergeBoskos(t *testing.T) {
	c, err := config.Parse([]byte("pools:\n- type: vm\n  resources: [vm-1]\n"))
	if err != nil {
		t.Fatal(err)
	}
	clash, err := config.ParseBoskos([]byte("resources:\n- type: vm\n  names: [vm-2]\n- type: proj\n  names: [vm-1]\n"))
	if err != nil {
		t.Fatal(err)
	}
	err = c.Merge(clash, "resources.yaml")
	var ve *config.ValidationError
	if !errors.As(err, &ve) || len(ve.Problems) != 2 || !strings.Contains(ve.Error(), `resources.yaml: resources[0].type: "vm" is also a pool of the berth config`) ||
		!strings.Contains(ve.Error(), `resources[1].names[0]: "vm-1" is also a resource of the berth config`) {
		t.Fatalf("merge with clashes: %v", err)
	}
	ok, err := config.ParseBoskos([]byte("resources:\n- type: proj\n  names: [proj-1]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Merge(ok, "resources.yaml"); err != nil || len(c.EnginePools()) != 2 {
		t.Fatalf("merge: %v, %d pools", err, len(c.EnginePools()))
	}
}
