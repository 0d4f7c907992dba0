package metrics

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/berth-ci/berth"
)

// StateSource is what the scrape-time gauges read: the store's pool
// counts, and whether the replica is ready to serve.
type StateSource struct {
	// Pools returns every pool with its counts, as GET /v1/pools does.
	Pools func(ctx context.Context) ([]*berth.Pool, error)
	// Ready returns nil while the replica can serve (its store answers).
	Ready func(ctx context.Context) error
	// Timeout bounds the reads of one scrape; default 5s, under
	// Prometheus' default scrape timeout of 10s.
	Timeout time.Duration
	Logger  *slog.Logger
}

// RegisterState registers the gauges computed at scrape time from src:
// resources by type and state and by type and health, leasable and leased
// resources, waiters, and berth_ready. Every replica of a shared store
// reports the same store-wide counts.
func RegisterState(reg prometheus.Registerer, src StateSource) {
	if src.Timeout <= 0 {
		src.Timeout = 5 * time.Second
	}
	if src.Logger == nil {
		src.Logger = slog.New(slog.DiscardHandler)
	}
	reg.MustRegister(&stateCollector{src: src})
}

var (
	descResources = prometheus.NewDesc(Namespace+"_resources",
		"Resources by pool type and state (free, busy, dirty, cleaning, quarantined, deleting, or a Boskos state).", []string{"type", "state"}, nil)
	descHealth = prometheus.NewDesc(Namespace+"_resources_health",
		"Resources by pool type and health (Connected, Disconnected, Unknown). Resources of unprobed pools are Unknown.", []string{"type", "health"}, nil)
	descLeasable = prometheus.NewDesc(Namespace+"_resources_leasable",
		"Free resources an acquire may be given now: free, healthy enough for the pool, not drained or retiring.", []string{"type"}, nil)
	descLeased = prometheus.NewDesc(Namespace+"_leases_held",
		"Resources held under a lease now, by a job or by a janitor that cleans them.", []string{"type"}, nil)
	descWaiters = prometheus.NewDesc(Namespace+"_waiters",
		"Acquires waiting in the queue for a resource of the type.", []string{"type"}, nil)
	descProbed = prometheus.NewDesc(Namespace+"_pool_probed",
		"1 for a pool whose resources are health-probed, else 0.", []string{"type"}, nil)
	descDraining = prometheus.NewDesc(Namespace+"_pool_draining",
		"1 while an admin has drained the whole pool, else 0.", []string{"type"}, nil)
	descReady = prometheus.NewDesc(Namespace+"_ready",
		"1 while this replica's store answers and it can serve, else 0 (as /readyz).", nil, nil)
	descStateUp = prometheus.NewDesc(Namespace+"_state_scrape_ok",
		"1 if the pool counts of this scrape could be read from the store, else 0 (and the pool gauges are missing).", nil, nil)
)

type stateCollector struct{ src StateSource }

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descResources, descHealth, descLeasable, descLeased, descWaiters, descProbed, descDraining, descReady, descStateUp} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.src.Timeout)
	defer cancel()
	ready := 1.0
	if c.src.Ready != nil {
		if err := c.src.Ready(ctx); err != nil {
			ready = 0
		}
	}
	ch <- prometheus.MustNewConstMetric(descReady, prometheus.GaugeValue, ready)
	pools, err := c.src.Pools(ctx)
	if err != nil {
		// A scrape that cannot read the store still answers, with the
		// process metrics and berth_state_scrape_ok 0: the alert on it
		// says more than a failed scrape would.
		c.src.Logger.Warn("metrics: cannot read the pool counts", "err", err)
		ch <- prometheus.MustNewConstMetric(descStateUp, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(descStateUp, prometheus.GaugeValue, 1)
	for _, p := range pools {
		// The well-known states are always there, at 0 when empty, so
		// that a rule about a state has a series to look at.
		for _, s := range []berth.State{berth.StateFree, berth.StateBusy, berth.StateDirty, berth.StateCleaning, berth.StateQuarantined} {
			if _, ok := p.States[s]; !ok {
				ch <- prometheus.MustNewConstMetric(descResources, prometheus.GaugeValue, 0, p.Type, string(s))
			}
		}
		for s, n := range p.States {
			ch <- prometheus.MustNewConstMetric(descResources, prometheus.GaugeValue, float64(n), p.Type, string(s))
		}
		for _, h := range []berth.HealthStatus{berth.HealthConnected, berth.HealthDisconnected, berth.HealthUnknown} {
			ch <- prometheus.MustNewConstMetric(descHealth, prometheus.GaugeValue, float64(p.Health[h]), p.Type, string(h))
		}
		ch <- prometheus.MustNewConstMetric(descLeasable, prometheus.GaugeValue, float64(p.Leasable), p.Type)
		ch <- prometheus.MustNewConstMetric(descLeased, prometheus.GaugeValue, float64(p.Leased), p.Type)
		ch <- prometheus.MustNewConstMetric(descWaiters, prometheus.GaugeValue, float64(p.Waiters), p.Type)
		ch <- prometheus.MustNewConstMetric(descProbed, prometheus.GaugeValue, flag(p.Probe != ""), p.Type)
		ch <- prometheus.MustNewConstMetric(descDraining, prometheus.GaugeValue, flag(p.Draining), p.Type)
	}
}

func flag(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
