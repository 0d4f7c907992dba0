package metrics_test

import (
	"context"
	"errors"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/metrics"
	"github.com/berth-ci/berth/internal/store"
)

// down is a store whose Ping fails as an unreachable database does, and
// whose ResourceGet finds nothing, as the contract allows.
type down struct{ store.Store }

func (down) Ping(context.Context) error { return errors.New("connection refused") }
func (down) ResourceGet(context.Context, string) (*berth.Resource, error) {
	return nil, store.ErrNotFound
}

// fed returns a registry with every berth metric registered and each
// vector given a series, as a busy broker's would have.
func fed(t *testing.T) *prometheus.Registry {
	t.Helper()
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	m.Request("native", "acquire", 500, "internal", time.Millisecond)
	m.LeaseGranted("vm", time.Second)
	m.LeaseGranted("vm", -1)
	m.LeaseExpired("vm", berth.LeaseUse)
	m.CleaningEnded("vm", "cleaned")
	m.ProvisionerRan("vm", "create", true)
	m.ProbeDone("vm", false, "Timeout", time.Millisecond)
	m.SetLeader(true)
	_ = m.InFlight("native")
	st := m.Store(down{})
	_ = st.Ping(context.Background())
	_, _ = st.ResourceGet(context.Background(), "x")
	metrics.RegisterState(reg, metrics.StateSource{Pools: func(context.Context) ([]*berth.Pool, error) {
		return []*berth.Pool{{Type: "vm", Probe: "tcp", States: map[berth.State]int{berth.StateBusy: 2}, Health: map[berth.HealthStatus]int{}}}, nil
	}})
	return reg
}

// TestAlertRulesNameRealMetrics: a rule about a metric berth does not
// export never fires, and promtool's tests, fed made-up series, cannot
// tell.
func TestAlertRulesNameRealMetrics(t *testing.T) {
	rules, err := os.ReadFile("../../deploy/prometheus/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	fams, err := fed(t).Gather()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, f := range fams {
		have[f.GetName()] = true
	}
	names := regexp.MustCompile(`\b(berth_[a-z_]+|process_start_time_seconds)\b`).FindAllString(string(rules), -1)
	if len(names) < 10 {
		t.Fatalf("only %d metric names found in alerts.yaml", len(names))
	}
	for _, name := range names {
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_count"), "_sum")
		if !have[base] {
			t.Errorf("alerts.yaml names %s, which berth does not export", name)
		}
	}
}

func TestStoreErrorsCountOnlyFailures(t *testing.T) {
	reg := fed(t)
	if got := testutil.ToFloat64(mustCollector(t, reg, "berth_store_errors_total", "Ping")); got != 1 {
		t.Errorf("berth_store_errors_total{op=Ping} = %v, want 1", got)
	}
	if n, err := testutil.GatherAndCount(reg, "berth_store_errors_total"); err != nil || n != 1 {
		t.Errorf("berth_store_errors_total has %d series (%v); a row not found is no store failure", n, err)
	}
	if n, err := testutil.GatherAndCount(reg, "berth_store_operation_duration_seconds"); err != nil || n != 2 {
		t.Errorf("berth_store_operation_duration_seconds has %d series (%v), want Ping and ResourceGet", n, err)
	}
}

func TestBuildInfoAndStateGauges(t *testing.T) {
	reg := fed(t)
	if n, err := testutil.GatherAndCount(reg, "berth_build_info"); err != nil || n != 1 {
		t.Errorf("berth_build_info has %d series (%v), want 1", n, err)
	}
	// The well-known states are there at 0 so that rules have a series.
	want := `
# HELP berth_resources Resources by pool type and state (free, busy, dirty, cleaning, quarantined, deleting, or a Boskos state).
# TYPE berth_resources gauge
berth_resources{state="busy",type="vm"} 2
berth_resources{state="cleaning",type="vm"} 0
berth_resources{state="dirty",type="vm"} 0
berth_resources{state="free",type="vm"} 0
berth_resources{state="quarantined",type="vm"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "berth_resources"); err != nil {
		t.Error(err)
	}
}

// mustCollector returns the one series of name with label value lv, as a
// Collector testutil.ToFloat64 can read.
func mustCollector(t *testing.T, g prometheus.Gatherer, name, lv string) prometheus.Collector {
	t.Helper()
	fams, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.Metric {
			for _, l := range m.Label {
				if l.GetValue() == lv {
					c := prometheus.NewCounter(prometheus.CounterOpts{Name: "copy"})
					c.Add(m.GetCounter().GetValue())
					return c
				}
			}
		}
	}
	t.Fatalf("no %s{%s}", name, lv)
	return nil
}
