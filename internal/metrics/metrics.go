// Package metrics owns berth's Prometheus metrics: the counters and
// histograms the engine, the API, the janitor, the provisioner and the
// prober feed as things happen, and the gauges read from the store when
// Prometheus scrapes. Everything is registered on a Registerer the caller
// passes in; nothing is global.
//
// Every berth replica exports its own counters, and the same store-wide
// gauges (resources, leases, waiters): alert rules take max() of those
// across replicas and sum() of the counters. Label values are bounded:
// pool types from the config, states, health reasons, route templates.
package metrics

import (
	"errors"
	"runtime"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/buildinfo"
	"github.com/berth-ci/berth/internal/store"
)

// Namespace prefixes every berth metric.
const Namespace = "berth"

// Metrics are the metrics berth feeds as things happen. A nil *Metrics
// records nothing, so packages can take one without a registry in tests.
type Metrics struct {
	requests        *prometheus.CounterVec
	requestDuration *prometheus.HistogramVec
	requestErrors   *prometheus.CounterVec
	inflight        *prometheus.GaugeVec

	granted      *prometheus.CounterVec
	waitDuration *prometheus.HistogramVec
	expirations  *prometheus.CounterVec
	cleanings    *prometheus.CounterVec
	provisioner  *prometheus.CounterVec

	probes        *prometheus.CounterVec
	probeDuration *prometheus.HistogramVec

	storeDuration *prometheus.HistogramVec
	storeErrors   *prometheus.CounterVec

	leader prometheus.Gauge
}

// Buckets of the latency histograms, in seconds. Requests and store calls
// take well under a millisecond on SQLite and a few on PostgreSQL; the
// tail is what an outage looks like.
var (
	requestBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}
	storeBuckets   = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10}
	// A job may wait for a resource for seconds or for an hour.
	waitBuckets  = []float64{.001, .01, .1, .5, 1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600}
	probeBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
)

// New registers berth's metrics on reg, with the Go runtime's and the
// process's, and berth_build_info.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "requests_total",
			Help: "HTTP requests answered, by API (native or boskos), operation, and HTTP status code.",
		}, []string{"api", "op", "code"}),
		requestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "request_duration_seconds",
			Help:    "Time to answer an HTTP request, by API and operation. An acquire that waits includes its wait; see berth_acquire_wait_seconds.",
			Buckets: requestBuckets,
		}, []string{"api", "op"}),
		requestErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "request_errors_total",
			Help: "HTTP requests answered with an error, by API, operation and berth error code (not_found, exhausted, conflict, unavailable, internal, ...).",
		}, []string{"api", "op", "error"}),
		inflight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "requests_in_flight",
			Help: "HTTP requests being answered now, long polls included, by API.",
		}, []string{"api"}),
		granted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "leases_granted_total",
			Help: "Leases granted by this replica, by pool type and whether the job had to wait in the queue.",
		}, []string{"type", "waited"}),
		waitDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "acquire_wait_seconds",
			Help:    "Time from an acquire joining the queue to a resource being handed to it, by pool type.",
			Buckets: waitBuckets,
		}, []string{"type"}),
		expirations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "lease_expirations_total",
			Help: "Leases that ran out without a heartbeat and were reaped, by pool type and lease kind (use: a job's; clean: a janitor's).",
		}, []string{"type", "kind"}),
		cleanings: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "janitor_cleanings_total",
			Help: "Cleanings that ended, by pool type and outcome (cleaned, clean-failed, clean-abandoned, quarantined).",
		}, []string{"type", "outcome"}),
		provisioner: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "provisioner_runs_total",
			Help: "Provisioner and deprovisioner commands that ended, by pool type, action (create or delete) and outcome (ok or failed).",
		}, []string{"type", "action", "outcome"}),
		probes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "probe_results_total",
			Help: "Health probes that ended, by pool type, result (ok or failed) and reason (ConnectionRefused, Timeout, DNSError, TLSError, ...).",
		}, []string{"type", "result", "reason"}),
		probeDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "probe_duration_seconds",
			Help:    "Time one health probe took, by pool type.",
			Buckets: probeBuckets,
		}, []string{"type"}),
		storeDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "store_operation_duration_seconds",
			Help:    "Time one store call took, by operation.",
			Buckets: storeBuckets,
		}, []string{"op"}),
		storeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "store_errors_total",
			Help: "Store calls that failed for want of the store (not for a missing row or a lease that had ended), by operation.",
		}, []string{"op"}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "leader",
			Help: "1 while this replica leads (runs the reaper, janitor, prober and provisioner), else 0. With SQLite the only replica always leads.",
		}),
	}
	bi := buildinfo.Get()
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "build_info",
		Help:        "Always 1; its labels say which build of berth runs. Compare with the version a rollout meant to deploy.",
		ConstLabels: prometheus.Labels{"version": bi.Version, "revision": bi.Commit, "goversion": runtime.Version()},
	})
	buildInfo.Set(1)
	reg.MustRegister(m.requests, m.requestDuration, m.requestErrors, m.inflight,
		m.granted, m.waitDuration, m.expirations, m.cleanings, m.provisioner,
		m.probes, m.probeDuration, m.storeDuration, m.storeErrors, m.leader, buildInfo,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// Pools gives the counters of each pool type their series at 0, before
// anything happened: an alert rule's increase() over a series that
// appears with its first event would miss that event (Prometheus has
// nothing before it to count from).
func (m *Metrics) Pools(types []string) {
	if m == nil {
		return
	}
	for _, typ := range types {
		for _, w := range []string{"true", "false"} {
			m.granted.WithLabelValues(typ, w)
		}
		for _, k := range []berth.LeaseKind{berth.LeaseUse, berth.LeaseClean} {
			m.expirations.WithLabelValues(typ, string(k))
		}
		for _, o := range []string{store.ReasonCleaned, store.ReasonCleanFailed, store.ReasonCleanAbandoned, store.ReasonQuarantined} {
			m.cleanings.WithLabelValues(typ, o)
		}
		for _, a := range []string{"create", "delete"} {
			for _, o := range []string{"ok", "failed"} {
				m.provisioner.WithLabelValues(typ, a, o)
			}
		}
	}
}

// Request records one answered HTTP request.
func (m *Metrics) Request(api, op string, status int, errCode string, d time.Duration) {
	if m == nil {
		return
	}
	m.requests.WithLabelValues(api, op, strconv.Itoa(status)).Inc()
	m.requestDuration.WithLabelValues(api, op).Observe(d.Seconds())
	if errCode != "" {
		m.requestErrors.WithLabelValues(api, op, errCode).Inc()
	}
}

// InFlight counts a request of api in flight until the returned func is
// called.
func (m *Metrics) InFlight(api string) func() {
	if m == nil {
		return func() {}
	}
	g := m.inflight.WithLabelValues(api)
	g.Inc()
	return g.Dec
}

// LeaseGranted records a lease handed to a job: at once (waited < 0), or
// after it waited in the queue for waited.
func (m *Metrics) LeaseGranted(typ string, waited time.Duration) {
	if m == nil {
		return
	}
	if waited < 0 {
		m.granted.WithLabelValues(typ, "false").Inc()
		return
	}
	m.granted.WithLabelValues(typ, "true").Inc()
	m.waitDuration.WithLabelValues(typ).Observe(waited.Seconds())
}

// LeaseExpired records a lease reaped for want of heartbeats.
func (m *Metrics) LeaseExpired(typ string, kind berth.LeaseKind) {
	if m == nil {
		return
	}
	m.expirations.WithLabelValues(typ, string(kind)).Inc()
}

// CleaningEnded records how a cleaning ended: the reason of its event.
func (m *Metrics) CleaningEnded(typ, outcome string) {
	if m == nil {
		return
	}
	m.cleanings.WithLabelValues(typ, outcome).Inc()
}

// ProvisionerRan records a provisioner (action "create") or deprovisioner
// ("delete") command that ended.
func (m *Metrics) ProvisionerRan(typ, action string, ok bool) {
	if m == nil {
		return
	}
	outcome := "ok"
	if !ok {
		outcome = "failed"
	}
	m.provisioner.WithLabelValues(typ, action, outcome).Inc()
}

// ProbeDone records one health probe's result.
func (m *Metrics) ProbeDone(typ string, ok bool, reason string, d time.Duration) {
	if m == nil {
		return
	}
	result := "ok"
	if !ok {
		result = "failed"
	}
	m.probes.WithLabelValues(typ, result, reason).Inc()
	m.probeDuration.WithLabelValues(typ).Observe(d.Seconds())
}

// SetLeader records whether this replica leads.
func (m *Metrics) SetLeader(leading bool) {
	if m == nil {
		return
	}
	if leading {
		m.leader.Set(1)
	} else {
		m.leader.Set(0)
	}
}

// storeCall records one store call. Answers that are part of the store's
// contract — a missing row, a lease that had ended, a full pool — are not
// failures of the store.
func (m *Metrics) storeCall(op string, start time.Time, err error) {
	m.storeDuration.WithLabelValues(op).Observe(time.Since(start).Seconds())
	if err != nil && !expected(err) {
		m.storeErrors.WithLabelValues(op).Inc()
	}
}

func expected(err error) bool {
	var be *berth.Error
	if errors.As(err, &be) {
		return be.Code != berth.EUnavailable && be.Code != berth.EInternal
	}
	return errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrLeaseEnded) || errors.Is(err, store.ErrLeaseActive) ||
		errors.Is(err, store.ErrPoolFull) || errors.Is(err, store.ErrStateChanged)
}
