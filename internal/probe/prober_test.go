package probe

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Shopify/toxiproxy/v2"
	"github.com/Shopify/toxiproxy/v2/collectors"
	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/faultnet"
	"github.com/berth-ci/berth/internal/lease"
	"github.com/berth-ci/berth/internal/store"
	"github.com/berth-ci/berth/internal/store/sqlite"
)

// The prober tests run a real Prober against real servers and a real
// (SQLite) store on a fake clock. The rig moves the clock to exactly when
// the next probe is due, waits for the probe to start, moves it on by the
// timeout when the probe is expected to hang, and waits for its result:
// every step waits on a signal from the prober, never on time passing.

var t0 = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

const (
	testInterval = 10 * time.Second
	testTimeout  = 2 * time.Second
	testFailures = 3
)

type rig struct {
	t      *testing.T
	clk    *clockwork.FakeClock
	st     store.Store
	p      *Prober
	pool   Pool
	starts chan time.Time
	// results carries the health after each probe.
	results chan berth.Health
	// last is when the last probe started; next when the next is due.
	last, next time.Time
	down       int
	// notify, if set, is the prober's Notify.
	notify atomic.Pointer[func(*store.ResourceHealthResult)]
}

// newRig starts a prober of one pool, "cluster", with the resource "r1"
// and the user data given, on a fake clock without jitter.
func newRig(t *testing.T, spec Spec, userData map[string]string, edit ...func(*Pool)) *rig {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "berth.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	pool := Pool{Type: "cluster", Spec: spec, Interval: testInterval, Timeout: testTimeout, FailureThreshold: testFailures,
		SuccessThreshold: 1, LeaseTTL: time.Minute}
	for _, e := range edit {
		e(&pool)
	}
	pool = pool.WithDefaults()
	if _, err := st.PoolSync(ctx, &store.PoolSyncParams{Now: t0, Actor: "test", Pools: []store.PoolPolicy{{
		Type: "cluster", LeaseTTL: time.Minute, Janitor: "none", Probe: spec.Kind(), RequireConnected: true, ProbeHash: spec.Hash(),
		Resources: []store.ResourceSpec{{Name: "r1", UserData: userData}},
	}}}); err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, clk: clockwork.NewFakeClockAt(t0), st: st, pool: pool,
		starts: make(chan time.Time, 16), results: make(chan berth.Health, 16)}
	r.p, err = New(Options{Store: st, Clock: r.clk, Pools: []Pool{pool}, Rand: func() float64 { return 0 },
		OnStart:  func(string) { r.starts <- r.clk.Now() },
		OnResult: func(_ string, _ Result, h berth.Health) { r.results <- h },
		Notify: func(res *store.ResourceHealthResult) {
			if fn := r.notify.Load(); fn != nil {
				(*fn)(res)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	r.run(t)
	return r
}

// run starts the prober's loop and stops it when the test ends.
func (r *rig) run(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = r.p.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(30 * time.Second): // a deadline for a hung test, not a wait
		t.Fatalf("no %s within 30s", what)
		panic("unreachable")
	}
}

// probe makes the next probe happen and returns the health after it. With
// hang, the probe is expected to get no answer, and the clock is moved on
// by the timeout once it has started.
func (r *rig) probe(hang bool) berth.Health {
	r.t.Helper()
	if !r.next.IsZero() {
		r.clk.Advance(r.next.Sub(r.clk.Now()))
	}
	start := recv(r.t, r.starts, "probe start")
	if !r.next.IsZero() && !start.Equal(r.next) {
		r.t.Fatalf("probe started at %s, want %s", start.Sub(t0), r.next.Sub(t0))
	}
	r.last = start
	if hang {
		r.clk.Advance(r.pool.Timeout)
	}
	h := recv(r.t, r.results, "probe result")
	// The schedule the prober must keep: an interval after the last
	// start, doubling while Disconnected, up to the cap.
	delay := r.pool.Interval
	if h.Status == berth.HealthDisconnected {
		r.down++
		delay = min(r.pool.Interval<<(r.down-1), r.pool.MaxBackoff)
	} else {
		r.down = 0
	}
	r.next = r.last.Add(delay)
	return h
}

// until probes until the health is want, and returns when the clock
// said it became so.
func (r *rig) until(want berth.HealthStatus, hang bool) time.Time {
	r.t.Helper()
	for i := 0; i < 20; i++ {
		if h := r.probe(hang); h.Status == want {
			return r.clk.Now()
		}
	}
	r.t.Fatalf("not %s after 20 probes", want)
	return time.Time{}
}

// detect probes a fault injected now until the resource is Disconnected
// with reason, and checks that this took at most failureThreshold ×
// interval + timeout.
func (r *rig) detect(reason Reason, hang bool) {
	r.t.Helper()
	fault := r.clk.Now()
	at := r.until(berth.HealthDisconnected, hang)
	bound := time.Duration(r.pool.FailureThreshold)*r.pool.Interval + r.pool.Timeout
	if took := at.Sub(fault); took > bound {
		r.t.Fatalf("Disconnected %s after the fault; the bound is %s", took, bound)
	}
	if h := r.health(); h.Reason != string(reason) {
		r.t.Fatalf("Disconnected with reason %q (%s), want %s", h.Reason, h.Message, reason)
	}
}

func (r *rig) health() berth.Health {
	r.t.Helper()
	res, err := r.st.ResourceGet(context.Background(), "r1")
	if err != nil {
		r.t.Fatal(err)
	}
	return res.Health
}

// transitions are the health events of r1 as "From>To/Reason".
func (r *rig) transitions() []string {
	r.t.Helper()
	evs, err := r.st.EventList(context.Background(), &store.EventListParams{Resource: "r1"})
	if err != nil {
		r.t.Fatal(err)
	}
	var out []string
	for _, e := range evs {
		if e.Kind == berth.EventHealth {
			out = append(out, fmt.Sprintf("%s>%s/%s", e.From, e.To, e.Reason))
		}
	}
	return out
}

func (r *rig) wantTransitions(want ...string) {
	r.t.Helper()
	if got := r.transitions(); !slices.Equal(got, want) {
		r.t.Fatalf("transitions:\n got %q\nwant %q", got, want)
	}
}

const (
	up      = "Unknown>Connected/"
	back    = "Disconnected>Connected/"
	refused = "Connected>Disconnected/ConnectionRefused"
)

// A listener that goes away is Disconnected (ConnectionRefused) on the
// failureThreshold-th probe after, and Connected again on the first probe
// after it is back; a probe that fails fewer times in a row than the
// threshold changes nothing.
func TestProberRefusedAndFlapping(t *testing.T) {
	t.Parallel()
	l := faultnet.ListenTest(t)
	r := newRig(t, Spec{TCP: &TCPSpec{Address: "{{.UserData.addr}}"}}, map[string]string{"addr": l.Addr()})
	if h := r.probe(false); h.Status != berth.HealthConnected || h.Message == "" {
		t.Fatalf("first probe: %+v", h)
	}
	noErr(t, l.Down())
	r.detect(ReasonConnectionRefused, false)
	noErr(t, l.Up())
	r.until(berth.HealthConnected, false)
	// A blip shorter than the threshold is not a transition.
	noErr(t, l.Down())
	for range testFailures - 1 {
		if h := r.probe(false); h.Status != berth.HealthConnected {
			t.Fatalf("Disconnected before %d failures: %+v", testFailures, h)
		}
	}
	noErr(t, l.Up())
	r.probe(false)
	noErr(t, l.Down())
	r.detect(ReasonConnectionRefused, false)
	r.wantTransitions(up, refused, back, refused)
}

func noErr(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// An address whose SYNs are dropped gets no answer: each probe runs into
// its timeout, and the resource is Disconnected (Timeout) after
// failureThreshold of them; then it is probed less and less often, up to
// maxBackoff apart (the rig checks each start time).
func TestProberBlackHoleAndBackoff(t *testing.T) {
	t.Parallel()
	r := newRig(t, Spec{TCP: &TCPSpec{Address: blackHole(t)}}, nil, func(p *Pool) { p.MaxBackoff = 45 * time.Second })
	r.detect(ReasonTimeout, true)
	for range 4 { // 10s, 20s, 40s, then the 45s cap
		if h := r.probe(true); h.Status != berth.HealthDisconnected || h.Reason != string(ReasonTimeout) {
			t.Fatalf("while black-holed: %+v", h)
		}
	}
	if got := r.next.Sub(r.last); got != 45*time.Second {
		t.Fatalf("backoff grew to %s, want the 45s cap", got)
	}
	r.wantTransitions("Unknown>Disconnected/Timeout")
}

// switchServer is an HTTP(S) server whose answer and certificate the test
// switches between probes.
type switchServer struct {
	URL    string
	status atomic.Int32
	cert   atomic.Pointer[tls.Certificate]
}

func newSwitchServer(t *testing.T, tlsOn bool) *switchServer {
	t.Helper()
	s := &switchServer{}
	s.status.Store(http.StatusOK)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(int(s.status.Load()))
		fmt.Fprintln(w, http.StatusText(int(s.status.Load())))
	}))
	srv.Config.ErrorLog = discardLog()
	s.URL = "http://" + srv.Listener.Addr().String()
	if tlsOn {
		// Not StartTLS: it installs a certificate of its own, which a
		// client without SNI (an IP address) is always given.
		c := pki().server
		s.cert.Store(&c)
		srv.Listener = tls.NewListener(srv.Listener, &tls.Config{
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return s.cert.Load(), nil }})
		s.URL = "https://" + srv.Listener.Addr().String()
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return s
}

// toxic starts a toxiproxy proxy (in process) in front of addr.
func toxic(t *testing.T, addr string) *toxiproxy.Proxy {
	t.Helper()
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	srv.Metrics.ProxyMetrics = collectors.NewProxyMetricCollectors()
	proxy := toxiproxy.NewProxy(srv, "probe", "127.0.0.1:0", addr)
	if err := proxy.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Stop)
	return proxy
}

// addToxic adds a toxic in both directions: a black hole must also keep
// the request from the server, or the server's answer and close (probes
// send "Connection: close") would reach the prober as a reset.
func addToxic(t *testing.T, p *toxiproxy.Proxy, name, typ string, attrs string) {
	t.Helper()
	for _, stream := range []string{"upstream", "downstream"} {
		j := fmt.Sprintf(`{"name":%q,"type":%q,"stream":%q,"attributes":%s}`, name+"-"+stream, typ, stream, attrs)
		if _, err := p.Toxics.AddToxicJson(strings.NewReader(j)); err != nil {
			t.Fatal(err)
		}
	}
}

func removeToxic(t *testing.T, p *toxiproxy.Proxy, name string) {
	t.Helper()
	for _, stream := range []string{"upstream", "downstream"} {
		if err := p.Toxics.RemoveToxic(context.Background(), name+"-"+stream); err != nil {
			t.Fatal(err)
		}
	}
}

// An HTTP endpoint behind a fault-injecting proxy: latency below the
// timeout changes nothing; a black hole (the proxy swallows the answer)
// is a Timeout; the proxy gone is ConnectionRefused; each heals.
func TestProberHTTPThroughFaults(t *testing.T) {
	t.Parallel()
	srv := newSwitchServer(t, false)
	proxy := toxic(t, strings.TrimPrefix(srv.URL, "http://"))
	r := newRig(t, Spec{HTTP: &HTTPSpec{URL: "http://" + proxy.Listen + "/healthz"}}, nil)
	if h := r.probe(false); h.Status != berth.HealthConnected {
		t.Fatalf("first probe: %+v", h)
	}
	addToxic(t, proxy, "slow", "latency", `{"latency":20}`)
	for range 5 {
		if h := r.probe(false); h.Status != berth.HealthConnected {
			t.Fatalf("with 20ms of latency: %+v", h)
		}
	}
	removeToxic(t, proxy, "slow")
	addToxic(t, proxy, "hole", "timeout", `{"timeout":0}`)
	r.detect(ReasonTimeout, true)
	removeToxic(t, proxy, "hole")
	r.until(berth.HealthConnected, false)
	proxy.Stop()
	r.detect(ReasonConnectionRefused, false)
	if err := proxy.Start(); err != nil {
		t.Fatal(err)
	}
	r.until(berth.HealthConnected, false)
	r.wantTransitions(up, "Connected>Disconnected/Timeout", back, refused, back)
}

// A server whose certificate expires is a TLSError; 401 and 403 are
// Unauthorized (one transition: the reason does not change between them);
// a 503 changes the reason, which is recorded too.
func TestProberTLSAndHTTPStatus(t *testing.T) {
	t.Parallel()
	srv := newSwitchServer(t, true)
	ca := writeFile(t, "ca.pem", pki().caPEM)
	r := newRig(t, Spec{HTTP: &HTTPSpec{URL: srv.URL + "/readyz", CAFile: ca}}, nil)
	if h := r.probe(false); h.Status != berth.HealthConnected {
		t.Fatalf("first probe: %+v", h)
	}
	expired := pki().expired
	srv.cert.Store(&expired)
	r.detect(ReasonTLSError, false)
	if h := r.health(); !strings.Contains(h.Message, "expired") {
		t.Fatalf("message %q does not say the certificate expired", h.Message)
	}
	good := pki().server
	srv.cert.Store(&good)
	r.until(berth.HealthConnected, false)
	srv.status.Store(http.StatusUnauthorized)
	r.detect(ReasonUnauthorized, false)
	srv.status.Store(http.StatusForbidden)
	if h := r.probe(false); h.Reason != string(ReasonUnauthorized) || !strings.Contains(h.Message, "403") {
		t.Fatalf("after a 403: %+v", h)
	}
	srv.status.Store(http.StatusServiceUnavailable)
	if h := r.probe(false); h.Reason != string(ReasonHTTPStatus) || !strings.Contains(h.Message, "503") {
		t.Fatalf("after a 503: %+v", h)
	}
	srv.status.Store(http.StatusOK)
	r.until(berth.HealthConnected, false)
	r.wantTransitions(up, "Connected>Disconnected/TLSError", back, "Connected>Disconnected/Unauthorized",
		"Disconnected>Disconnected/HTTPStatus", back)
}

// Recovery takes successThreshold successes in a row; an exec probe's
// failure says how the command failed.
func TestProberExecAndSuccessThreshold(t *testing.T) {
	t.Parallel()
	flag := filepath.Join(t.TempDir(), "down")
	r := newRig(t, Spec{Exec: &ExecSpec{Command: []string{"sh", "-c", `if [ -e "$1" ]; then echo "$BERTH_RESOURCE_NAME is down" >&2; exit 3; fi`, "sh", flag}}},
		nil, func(p *Pool) { p.SuccessThreshold = 2 })
	r.until(berth.HealthConnected, false) // two successes
	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r.detect(ReasonExecFailed, false)
	if h := r.health(); !strings.Contains(h.Message, "exit status 3") || !strings.Contains(h.Message, "r1 is down") {
		t.Fatalf("message %q", h.Message)
	}
	if err := os.Remove(flag); err != nil {
		t.Fatal(err)
	}
	if h := r.probe(false); h.Status != berth.HealthDisconnected {
		t.Fatalf("Connected after one success of two: %+v", h)
	}
	if h := r.probe(false); h.Status != berth.HealthConnected {
		t.Fatalf("not Connected after two successes: %+v", h)
	}
	r.wantTransitions(up, "Connected>Disconnected/ExecFailed", back)
}

// ProbeNow skips the backoff: someone waits for the resource.
func TestProberProbeNow(t *testing.T) {
	t.Parallel()
	l := faultnet.ListenTest(t)
	noErr(t, l.Down())
	r := newRig(t, Spec{TCP: &TCPSpec{Address: l.Addr()}}, nil)
	r.detect(ReasonConnectionRefused, false)
	r.probe(false)
	r.probe(false) // the next is due 40s after this one
	noErr(t, l.Up())
	r.p.ProbeNow("r1")
	start := recv(t, r.starts, "probe start")
	if !start.Equal(r.clk.Now()) {
		t.Fatalf("ProbeNow started a probe at %s, want now (%s)", start.Sub(t0), r.clk.Now().Sub(t0))
	}
	if h := recv(t, r.results, "probe result"); h.Status != berth.HealthConnected {
		t.Fatalf("after ProbeNow: %+v", h)
	}
}

// TestProberProbeNowNewResource: a resource added after the prober read
// the pool is probed at once when asked, not at the next resync.
func TestProberProbeNowNewResource(t *testing.T) {
	t.Parallel()
	l := faultnet.ListenTest(t)
	r := newRig(t, Spec{TCP: &TCPSpec{Address: l.Addr()}}, nil)
	r.probe(false) // r1
	if _, err := r.st.ResourceAdd(context.Background(), &store.ResourceAddParams{Type: "cluster", Spec: store.ResourceSpec{Name: "r2"},
		Source: berth.SourceAPI, HandoffTTL: time.Minute, Actor: "test", Now: r.clk.Now()}); err != nil {
		t.Fatal(err)
	}
	r.p.ProbeNow("r2")
	if start := recv(t, r.starts, "probe start"); !start.Equal(r.clk.Now()) {
		t.Fatalf("the new resource was probed at %s, want now (%s)", start.Sub(t0), r.clk.Now().Sub(t0))
	}
	recv(t, r.results, "probe result")
	got, err := r.st.ResourceGet(context.Background(), "r2")
	if err != nil || got.Health.Status != berth.HealthConnected {
		t.Fatalf("r2: %+v, %v", got, err)
	}
}

// A job waiting for a resource of a probed pool gets it the moment a
// probe finds it Connected; a resource that becomes Disconnected while
// leased stays leased, and the holder's next heartbeat says so.
func TestProberHandsToWaiter(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l := faultnet.ListenTest(t)
	noErr(t, l.Down())
	r := newRig(t, Spec{TCP: &TCPSpec{Address: l.Addr()}}, nil)
	eng := lease.New(lease.Options{Store: r.st, Clock: r.clk})
	if _, err := eng.SyncPools(ctx, []lease.Pool{{Type: "cluster", LeaseTTL: time.Minute, Probe: "tcp", RequireConnected: true,
		ProbeHash: r.pool.Spec.Hash(), Resources: []store.ResourceSpec{{Name: "r1"}}}}, "test"); err != nil {
		t.Fatal(err)
	}
	notify := eng.HealthRecorded
	r.notify.Store(&notify)
	if _, err := eng.Acquire(ctx, lease.AcquireParams{Type: "cluster", Owner: "job"}); berth.ErrorCodeOf(err) != berth.EExhausted {
		t.Fatalf("acquire of an Unknown resource in a probed pool: %v, want exhausted", err)
	}
	r.detect(ReasonConnectionRefused, false)

	// Queue the request first, then wait in the engine as its client
	// would: whichever comes first, the handoff or the long poll, the
	// long poll ends holding the lease.
	if res, err := r.st.LeaseAcquire(ctx, &store.LeaseAcquireParams{Type: "cluster", Owner: "job", RequestID: "w", Wait: true,
		WaitUntil: r.clk.Now().Add(time.Hour), LeaseTTL: time.Minute, Now: r.clk.Now()}); err != nil || res.Request == nil {
		t.Fatalf("queue: %+v, %v", res, err)
	}
	type answer struct {
		res *lease.AcquireResult
		err error
	}
	got := make(chan answer, 1)
	go func() {
		res, err := eng.Acquire(ctx, lease.AcquireParams{Type: "cluster", Owner: "job", Wait: time.Hour, RequestID: "w"})
		got <- answer{res, err}
	}()
	noErr(t, l.Up())
	r.until(berth.HealthConnected, false)
	a := recv(t, got, "the waiter's lease")
	if a.err != nil || a.res.Lease == nil || a.res.Lease.Resource != "r1" {
		t.Fatalf("waiter got %+v, %v", a.res, a.err)
	}
	noErr(t, l.Down())
	r.detect(ReasonConnectionRefused, false)
	hb, err := eng.Heartbeat(ctx, a.res.Lease.ID)
	if err != nil {
		t.Fatalf("heartbeat on a Disconnected resource: %v", err)
	}
	if hb.Resource.Health.Status != berth.HealthDisconnected || hb.Resource.Health.Reason != string(ReasonConnectionRefused) {
		t.Fatalf("the heartbeat says %+v", hb.Resource.Health)
	}
}

// A Kubernetes API server (a fake one, as far as /readyz goes) behind a
// fault-injecting proxy, with its kubeconfig in the resource's user data:
// a failed readiness check is HTTPStatus, a black hole is a Timeout.
func TestProberKubernetes(t *testing.T) {
	t.Parallel()
	api := newFakeAPIServer(t, pki().server)
	proxy := toxic(t, strings.TrimPrefix(api.URL, "https://"))
	r := newRig(t, Spec{Kubernetes: &KubernetesSpec{KubeconfigUserData: "kubeconfig", Context: "token"}},
		map[string]string{"kubeconfig": kubeconfig("https://" + proxy.Listen)})
	if h := r.probe(false); h.Status != berth.HealthConnected {
		t.Fatalf("first probe: %+v", h)
	}
	api.etcdDown.Store(true)
	r.detect(ReasonHTTPStatus, false)
	if h := r.health(); !strings.Contains(h.Message, "etcd failed") {
		t.Fatalf("message %q does not say what failed", h.Message)
	}
	api.etcdDown.Store(false)
	r.until(berth.HealthConnected, false)
	addToxic(t, proxy, "hole", "timeout", `{"timeout":0}`)
	r.detect(ReasonTimeout, true)
	removeToxic(t, proxy, "hole")
	r.until(berth.HealthConnected, false)
	r.wantTransitions(up, "Connected>Disconnected/HTTPStatus", back, "Connected>Disconnected/Timeout", back)
}

// The prober's dialer gives up after the connect timeout on its clock,
// with an error that is ErrTimeout and says which timeout ran out.
func TestProberConnectTimeout(t *testing.T) {
	t.Parallel()
	clk := clockwork.NewFakeClockAt(t0)
	p, err := New(Options{Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	dial := p.dialer(time.Second, 2*time.Second)
	addr := blackHole(t)
	got := make(chan error, 1)
	go func() {
		c, err := dial(context.Background(), "tcp", addr)
		if c != nil {
			c.Close()
		}
		got <- err
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := clk.BlockUntilContext(ctx, 1); err != nil { // the connect timeout's timer
		t.Fatal(err)
	}
	clk.Advance(time.Second)
	err = recv(t, got, "the dial's end")
	if !errors.Is(err, ErrTimeout) || err.Error() != "dial tcp "+addr+": no connection within the connect timeout of 1s" {
		t.Fatalf("dial into a black hole: %v; want the connect timeout", err)
	}
	if reason, msg := classify(context.Background(), err, ""); reason != ReasonTimeout || strings.Contains(msg, "probe timed out") {
		t.Fatalf("classified as %s: %q; want Timeout, in the dial's words", reason, msg)
	}
}
