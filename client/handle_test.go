package client

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/lease"
	"github.com/berth-ci/berth/internal/store"
)

// heartbeats watches and breaks the heartbeats reaching a broker.
type heartbeats struct {
	// passed gets a signal for each heartbeat the broker has served,
	// before its answer is sent back; buffered(1), never blocks.
	passed   chan struct{}
	failNext atomic.Int64 // that many heartbeats are answered 503
	failAll  atomic.Bool  // every heartbeat is answered 503
}

func newHeartbeats() *heartbeats { return &heartbeats{passed: make(chan struct{}, 1)} }

func (hb *heartbeats) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, "/heartbeat") {
			h.ServeHTTP(w, r)
			return
		}
		if hb.failAll.Load() || hb.failNext.Add(-1) >= 0 {
			errorAnswer(http.StatusServiceUnavailable, berth.EUnavailable)(w, r)
			return
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		select {
		case hb.passed <- struct{}{}:
		default:
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	})
}

// awaitFresh returns once the broker has served a heartbeat that the
// client sent after awaitFresh was called. (The first signal after the
// drain may be of a heartbeat already under way; the client sends the next
// one only after the answer to that, which follows its signal.)
func (hb *heartbeats) awaitFresh(t *testing.T) {
	t.Helper()
	for drained := false; !drained; {
		select {
		case <-hb.passed:
		default:
			drained = true
		}
	}
	receive(t, "a heartbeat", hb.passed)
	receive(t, "a fresh heartbeat", hb.passed)
}

func holdOrFail(t *testing.T, c *Client, o HoldOptions) *Handle {
	t.Helper()
	h, err := c.Hold(testContext(t), AcquireParams{Type: "vm", Owner: "job-1"}, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close(context.Background()) })
	return h
}

func assertNotLost(t *testing.T, h *Handle) {
	t.Helper()
	select {
	case err := <-h.Lost():
		t.Fatalf("lease reported lost: %v", err)
	default:
	}
}

func TestHoldHeartbeatsExtendExpiry(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	fc := clockwork.NewFakeClock()
	hb := newHeartbeats()
	b := newBroker(t, brokerOptions{clock: fc, wrap: hb.wrap})
	c := newClient(t, testOptions(b.srv.URL))
	h := holdOrFail(t, c, HoldOptions{HeartbeatInterval: 5 * time.Millisecond})
	initial := h.Lease().ExpiresAt
	if !initial.Equal(fc.Now().Add(time.Minute)) {
		t.Fatalf("lease expires at %s; want now + TTL (%s)", initial, fc.Now().Add(time.Minute))
	}

	fc.Advance(40 * time.Second)
	hb.awaitFresh(t)
	l, err := c.Lease(ctx, h.Lease().ID)
	if err != nil {
		t.Fatal(err)
	}
	if want := initial.Add(40 * time.Second); !l.ExpiresAt.Equal(want) {
		t.Fatalf("server says the lease expires at %s; want %s, pushed by a heartbeat", l.ExpiresAt, want)
	}
	// The handle has seen that answer once the next heartbeat is out.
	receive(t, "one more heartbeat", hb.passed)
	if got := h.Lease().ExpiresAt; !got.Equal(l.ExpiresAt) {
		t.Fatalf("handle says the lease expires at %s; want %s", got, l.ExpiresAt)
	}
	if h.Resource().Name != "vm-1" || h.Resource().State != berth.StateBusy {
		t.Fatalf("handle's resource = %+v", h.Resource())
	}
	// Past the original expiry the lease is still held.
	fc.Advance(40 * time.Second)
	if n, err := b.eng.ReapOnce(ctx); err != nil || n != 0 {
		t.Fatalf("reaper ended %d leases (%v); want none", n, err)
	}
	assertNotLost(t, h)
}

func TestHoldLostWhenReaped(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	fc := clockwork.NewFakeClock()
	b := newBroker(t, brokerOptions{clock: fc})
	c := newClient(t, testOptions(b.srv.URL))
	h := holdOrFail(t, c, HoldOptions{HeartbeatInterval: 5 * time.Millisecond})

	fc.Advance(2 * time.Minute)
	if n, err := b.eng.ReapOnce(ctx); err != nil || n != 1 {
		t.Fatalf("reaper ended %d leases (%v); want 1", n, err)
	}
	err := receive(t, "the loss", h.Lost())
	wantCode(t, err, berth.ELeaseLost)
	if !closes(h.Lost()) {
		t.Fatal("Lost was not closed after its one error")
	}
	if err := h.Close(ctx); err != nil {
		t.Fatalf("Close after a loss: %v; want nil", err)
	}
	r, err := c.Resource(ctx, "vm-1")
	if err != nil {
		t.Fatal(err)
	}
	if r.State != berth.StateFree {
		t.Fatalf("reaped resource is %s; want free", r.State)
	}
}

// closes reports whether ch is closed, with nothing more to receive,
// within a deadline.
func closes(ch <-chan error) bool {
	timer := time.NewTimer(5 * time.Second)
	defer timer.Stop()
	select {
	case _, open := <-ch:
		return !open
	case <-timer.C:
		return false
	}
}

func TestHoldLostWhenHeartbeatsFailUntilExpiry(t *testing.T) {
	t.Parallel()
	hb := newHeartbeats()
	const ttl = 300 * time.Millisecond
	b := newBroker(t, brokerOptions{wrap: hb.wrap, pools: []lease.Pool{{Type: "vm", LeaseTTL: ttl, Resources: []store.ResourceSpec{{Name: "vm-1"}}}}})
	c := newClient(t, testOptions(b.srv.URL))
	h := holdOrFail(t, c, HoldOptions{HeartbeatInterval: 10 * time.Millisecond})
	hb.awaitFresh(t)

	hb.failAll.Store(true)
	failing := time.Now()
	err := receive(t, "the loss", h.Lost())
	be := wantCode(t, err, berth.ELeaseLost)
	if !strings.Contains(be.Message, "no heartbeat succeeded before its expiry") || !strings.Contains(be.Message, "scripted unavailable") {
		t.Fatalf("loss = %q; want the expiry and the last error", err)
	}
	if took := time.Since(failing); took > ttl+time.Second {
		t.Fatalf("loss reported %s after heartbeats began to fail; want about the TTL (%s)", took, ttl)
	}
	if err := h.Close(testContext(t)); err != nil {
		t.Fatalf("Close after a loss: %v; want nil", err)
	}
}

func TestHoldRetriesTransientFailures(t *testing.T) {
	t.Parallel()
	hb := newHeartbeats()
	b := newBroker(t, brokerOptions{wrap: hb.wrap})
	opts := testOptions(b.srv.URL)
	opts.MaxAttempts = 2 // so that whole heartbeat calls fail, not only attempts
	c := newClient(t, opts)
	h := holdOrFail(t, c, HoldOptions{HeartbeatInterval: 5 * time.Millisecond})
	hb.awaitFresh(t)

	hb.failNext.Store(5)
	hb.awaitFresh(t)
	if n := hb.failNext.Load(); n >= 0 {
		t.Fatalf("%d failures left to answer; want all used", n)
	}
	assertNotLost(t, h)
	if err := h.Close(testContext(t)); err != nil {
		t.Fatal(err)
	}
}

func TestHoldCloseReleases(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	hb := newHeartbeats()
	pools := []lease.Pool{{Type: "vm", LeaseTTL: time.Minute, Janitor: lease.JanitorExternal, Resources: []store.ResourceSpec{{Name: "vm-1"}}}}
	b := newBroker(t, brokerOptions{wrap: hb.wrap, pools: pools})
	c := newClient(t, testOptions(b.srv.URL))
	h := holdOrFail(t, c, HoldOptions{HeartbeatInterval: 5 * time.Millisecond})
	hb.awaitFresh(t)

	if err := h.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// Released to dirty: the external janitor's pool keeps it dirty.
	r, err := c.Resource(ctx, "vm-1")
	if err != nil {
		t.Fatal(err)
	}
	if r.State != berth.StateDirty || r.LeaseID != "" {
		t.Fatalf("resource after Close = %s (lease %q); want dirty", r.State, r.LeaseID)
	}
	if l := h.Lease(); l.Status != berth.LeaseReleased {
		t.Fatalf("handle's lease after Close is %s; want released", l.Status)
	}
	if err := h.Close(ctx); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	rel, err := h.Release(ctx, ReleaseParams{})
	if err != nil || !rel.AlreadyReleased {
		t.Fatalf("Release after Close: %+v, %v; want AlreadyReleased", rel, err)
	}
	assertNotLost(t, h)
}

func TestHoldReleaseBroken(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	b := newBroker(t, brokerOptions{})
	c := newClient(t, testOptions(b.srv.URL))
	h := holdOrFail(t, c, HoldOptions{})
	// TTL 1m: TTL/3 would be 20s, capped at MaxDefaultHeartbeat.
	if h.interval != MaxDefaultHeartbeat {
		t.Fatalf("default heartbeat interval = %s; want TTL/3 capped at %s", h.interval, MaxDefaultHeartbeat)
	}
	rel, err := h.Release(ctx, ReleaseParams{To: berth.ReleaseBroken, Reason: "disk full"})
	if err != nil {
		t.Fatal(err)
	}
	if rel.Resource.State != berth.StateQuarantined || !strings.Contains(rel.Resource.StateReason, "disk full") {
		t.Fatalf("resource = %s (%q); want quarantined with the reason", rel.Resource.State, rel.Resource.StateReason)
	}
	if err := h.Close(ctx); err != nil {
		t.Fatalf("Close after Release: %v", err)
	}
}

func TestHoldOutlivesItsContext(t *testing.T) {
	t.Parallel()
	hb := newHeartbeats()
	b := newBroker(t, brokerOptions{wrap: hb.wrap})
	c := newClient(t, testOptions(b.srv.URL))
	ctx, cancel := context.WithCancel(testContext(t))
	h, err := c.Hold(ctx, AcquireParams{Type: "vm", Owner: "job-1"}, HoldOptions{HeartbeatInterval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	hb.awaitFresh(t)
	assertNotLost(t, h)
	if err := h.Close(testContext(t)); err != nil {
		t.Fatal(err)
	}
}

func TestHoldAcquireFails(t *testing.T) {
	t.Parallel()
	b := newBroker(t, brokerOptions{})
	c := newClient(t, testOptions(b.srv.URL))
	h, err := c.Hold(testContext(t), AcquireParams{Type: "gpu", Owner: "job-1"}, HoldOptions{})
	if h != nil {
		t.Fatal("Hold returned a handle with an error")
	}
	wantCode(t, err, berth.EUnknownType)
	_, err = c.Hold(testContext(t), AcquireParams{Type: "vm", Owner: "job-1"}, HoldOptions{HeartbeatInterval: -1})
	wantCode(t, err, berth.EInvalid)
}
