package client

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-ci/berth"
)

const (
	leaseJSON  = `{"lease":{"id":"l1","token":7,"owner":"job-1","resource":"vm-1","type":"vm","status":"active","ttl":"1m"},"resource":{"name":"vm-1","type":"vm","state":"busy"}}`
	queuedJSON = `{"request":{"id":"r1","type":"vm","owner":"job-1","position":3}}`
)

// acquireOrFail acquires a resource of type vm for owner.
func acquireOrFail(t *testing.T, c *Client, owner string) *Acquired {
	t.Helper()
	a, err := c.Acquire(testContext(t), AcquireParams{Type: "vm", Owner: owner})
	if err != nil {
		t.Fatalf("acquire for %s: %v", owner, err)
	}
	return a
}

// isWaiting reports whether request id is queued on the server.
func isWaiting(t *testing.T, c *Client, id string) bool {
	t.Helper()
	_, err := c.Request(testContext(t), id)
	switch berth.ErrorCodeOf(err) {
	case "":
		return true
	case berth.ENotFound:
		return false
	}
	t.Fatalf("get request %s: %v", id, err)
	return false
}

type acquireResult struct {
	a   *Acquired
	err error
}

func acquireAsync(ctx context.Context, c *Client, p AcquireParams) <-chan acquireResult {
	ch := make(chan acquireResult, 1)
	go func() {
		a, err := c.Acquire(ctx, p)
		ch <- acquireResult{a, err}
	}()
	return ch
}

func TestAcquireAndRelease(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	b := newBroker(t, brokerOptions{pools: vmPool("vm-1", "vm-2")})
	c := newClient(t, testOptions(b.srv.URL))

	a, err := c.Acquire(ctx, AcquireParams{Type: "vm", Owner: "job-1", Priority: 5})
	if err != nil {
		t.Fatal(err)
	}
	if a.Lease.Owner != "job-1" || a.Lease.Status != berth.LeaseActive || a.Lease.Token <= 0 || a.Lease.TTL.Std() != time.Minute {
		t.Fatalf("lease = %+v", a.Lease)
	}
	if a.Lease.RequestID == "" {
		t.Fatalf("lease has no request id; the client must always send one")
	}
	if a.Resource.Name != a.Lease.Resource || a.Resource.State != berth.StateBusy || a.Resource.UserData["ip"] == "" {
		t.Fatalf("resource = %+v", a.Resource)
	}

	// The same request id gets the same lease back.
	again, err := c.Acquire(ctx, AcquireParams{Type: "vm", Owner: "job-1", RequestID: a.Lease.RequestID})
	if err != nil {
		t.Fatal(err)
	}
	if again.Lease.ID != a.Lease.ID {
		t.Fatalf("acquire with the same request id got lease %s; want %s", again.Lease.ID, a.Lease.ID)
	}

	rel, err := c.Release(ctx, a.Lease.ID, ReleaseParams{To: berth.ReleaseFree})
	if err != nil {
		t.Fatal(err)
	}
	if rel.Lease.Status != berth.LeaseReleased || rel.Resource.State != berth.StateFree || rel.AlreadyReleased {
		t.Fatalf("release = %+v, lease %+v, resource %+v", rel, rel.Lease, rel.Resource)
	}
	rel, err = c.Release(ctx, a.Lease.ID, ReleaseParams{})
	if err != nil {
		t.Fatal(err)
	}
	if !rel.AlreadyReleased {
		t.Fatalf("second release: AlreadyReleased not set")
	}
	l, err := c.Lease(ctx, a.Lease.ID)
	if err != nil {
		t.Fatal(err)
	}
	if l.Status != berth.LeaseReleased || l.EndedAt == nil {
		t.Fatalf("lease after release = %+v", l)
	}
	_, err = c.Heartbeat(ctx, a.Lease.ID)
	wantCode(t, err, berth.ELeaseLost)
}

func TestAcquireRetryIsIdempotent(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	var dropped atomic.Bool
	// The first acquire succeeds on the server, but its answer is lost on
	// the way back.
	loseFirstAnswer := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPost && r.URL.Path == "/v1/leases" && dropped.CompareAndSwap(false, true) {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, r)
				if rec.Code != http.StatusOK {
					panic("first acquire failed: " + rec.Body.String())
				}
				http.Error(w, "the gateway lost the answer", http.StatusBadGateway)
				return
			}
			h.ServeHTTP(w, r)
		})
	}
	b := newBroker(t, brokerOptions{pools: vmPool("vm-1", "vm-2"), wrap: loseFirstAnswer})
	c := newClient(t, testOptions(b.srv.URL))
	a, err := c.Acquire(ctx, AcquireParams{Type: "vm", Owner: "job-1"})
	if err != nil {
		t.Fatal(err)
	}
	if !dropped.Load() {
		t.Fatal("the first answer was not dropped")
	}
	busy, err := c.Resources(ctx, ResourceFilter{Type: "vm", State: berth.StateBusy})
	if err != nil {
		t.Fatal(err)
	}
	if len(busy) != 1 || busy[0].LeaseID != a.Lease.ID {
		t.Fatalf("busy resources = %d; want exactly the one of lease %s", len(busy), a.Lease.ID)
	}
}

func TestAcquireExhaustedAtOnce(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	b := newBroker(t, brokerOptions{})
	c := newClient(t, testOptions(b.srv.URL))
	acquireOrFail(t, c, "holder")

	_, err := c.Acquire(ctx, AcquireParams{Type: "vm", Owner: "job-2", RequestID: "req-at-once"})
	be := wantCode(t, err, berth.EExhausted)
	if !strings.Contains(be.Message, `no free resource of type "vm"`) || !strings.Contains(err.Error(), "POST /v1/leases") {
		t.Fatalf("error = %q; want the type and the method and path", err)
	}
	if isWaiting(t, c, "req-at-once") {
		t.Fatal("request still queued after a no-wait acquire failed")
	}
	p, err := c.Pool(ctx, "vm")
	if err != nil {
		t.Fatal(err)
	}
	if p.Waiters != 0 {
		t.Fatalf("pool has %d waiters; want 0", p.Waiters)
	}
}

func TestAcquireWaitsForRelease(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	b := newBroker(t, brokerOptions{}) // a long poll lasts the whole wait
	c := newClient(t, testOptions(b.srv.URL))
	held := acquireOrFail(t, c, "holder")

	res := acquireAsync(ctx, c, AcquireParams{Type: "vm", Owner: "waiter", Wait: 30 * time.Second, RequestID: "waiter-1"})
	waitUntil(t, "the waiter is queued", func() bool { return isWaiting(t, c, "waiter-1") })
	if _, err := c.Release(ctx, held.Lease.ID, ReleaseParams{To: berth.ReleaseFree}); err != nil {
		t.Fatal(err)
	}
	// The waiter is woken inside its long poll: well before the wait (or
	// the server's one-minute poll) ends.
	r := receive(t, "the waiter to get the resource", res)
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.a.Resource.Name != "vm-1" || r.a.Lease.Owner != "waiter" || r.a.Lease.Token <= held.Lease.Token || r.a.Lease.RequestID != "waiter-1" {
		t.Fatalf("waiter got lease %+v on %s", r.a.Lease, r.a.Resource.Name)
	}
}

func TestAcquireWaitRunsOut(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	b := newBroker(t, brokerOptions{})
	c := newClient(t, testOptions(b.srv.URL))
	acquireOrFail(t, c, "holder")

	const wait = 150 * time.Millisecond
	start := time.Now()
	_, err := c.Acquire(ctx, AcquireParams{Type: "vm", Owner: "waiter", Wait: wait, RequestID: "waiter-1"})
	took := time.Since(start)
	be := wantCode(t, err, berth.EExhausted)
	if !strings.Contains(be.Message, "within 150ms") || !strings.Contains(be.Message, "position 1") {
		t.Fatalf("error = %q; want the wait and the last position", err)
	}
	if took < wait || took > 3*time.Second {
		t.Fatalf("gave up after %s; want just after %s", took, wait)
	}
	if isWaiting(t, c, "waiter-1") {
		t.Fatal("request still queued after the wait ran out")
	}
}

func TestAcquireOnQueuedReportsPosition(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	// Polls of 10ms: the server reports the position often.
	b := newBroker(t, brokerOptions{maxPoll: 10 * time.Millisecond})
	c := newClient(t, testOptions(b.srv.URL))
	held := acquireOrFail(t, c, "holder")

	queued := func() (chan int, func(*berth.Request)) {
		ch := make(chan int, 1)
		return ch, func(r *berth.Request) {
			select {
			case ch <- r.Position:
			default:
			}
		}
	}
	pos1, onQueued1 := queued()
	res1 := acquireAsync(ctx, c, AcquireParams{Type: "vm", Owner: "first", Wait: 30 * time.Second, OnQueued: onQueued1})
	if p := receive(t, "the first waiter's position", pos1); p != 1 {
		t.Fatalf("first waiter at position %d; want 1", p)
	}
	pos2, onQueued2 := queued()
	res2 := acquireAsync(ctx, c, AcquireParams{Type: "vm", Owner: "second", Wait: 30 * time.Second, OnQueued: onQueued2})
	if p := receive(t, "the second waiter's position", pos2); p != 2 {
		t.Fatalf("second waiter at position %d; want 2", p)
	}

	// First come, first served.
	if _, err := c.Release(ctx, held.Lease.ID, ReleaseParams{To: berth.ReleaseFree}); err != nil {
		t.Fatal(err)
	}
	r1 := receive(t, "the first waiter to get the resource", res1)
	if r1.err != nil || r1.a.Lease.Owner != "first" {
		t.Fatalf("first waiter: %+v, %v", r1.a, r1.err)
	}
	// Answers already on their way may still say 2; then it moves up.
	for p := 2; p != 1; {
		if p = receive(t, "the second waiter's new position", pos2); p != 1 && p != 2 {
			t.Fatalf("second waiter at position %d; want 1 once the first is served", p)
		}
	}
	if _, err := c.Release(ctx, r1.a.Lease.ID, ReleaseParams{To: berth.ReleaseFree}); err != nil {
		t.Fatal(err)
	}
	r2 := receive(t, "the second waiter to get the resource", res2)
	if r2.err != nil || r2.a.Lease.Owner != "second" {
		t.Fatalf("second waiter: %+v, %v", r2.a, r2.err)
	}
}

func TestAcquireCancelWithdrawsRequest(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		maxPoll time.Duration
		// cancelFromOnQueued cancels between polls; otherwise the test
		// cancels during one.
		cancelFromOnQueued bool
	}{
		{"between polls", 10 * time.Millisecond, true},
		{"during a poll", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := newBroker(t, brokerOptions{maxPoll: tc.maxPoll})
			c := newClient(t, testOptions(b.srv.URL))
			held := acquireOrFail(t, c, "holder")

			ctx, cancel := context.WithCancel(testContext(t))
			defer cancel()
			p := AcquireParams{Type: "vm", Owner: "waiter", Wait: 30 * time.Second, RequestID: "waiter-1"}
			if tc.cancelFromOnQueued {
				p.OnQueued = func(*berth.Request) { cancel() }
			}
			res := acquireAsync(ctx, c, p)
			if !tc.cancelFromOnQueued {
				waitUntil(t, "the waiter is queued", func() bool { return isWaiting(t, c, "waiter-1") })
				cancel()
			}
			r := receive(t, "Acquire to return", res)
			if !errors.Is(r.err, context.Canceled) {
				t.Fatalf("Acquire: %+v, %v; want context.Canceled", r.a, r.err)
			}
			if isWaiting(t, c, "waiter-1") {
				t.Fatal("request still queued after its caller gave up")
			}
			// So the released resource goes back to the pool, not to the
			// waiter that left.
			rel, err := c.Release(testContext(t), held.Lease.ID, ReleaseParams{To: berth.ReleaseFree})
			if err != nil {
				t.Fatal(err)
			}
			if rel.Resource.State != berth.StateFree {
				t.Fatalf("released resource is %s (owner %q); want free", rel.Resource.State, rel.Resource.Owner)
			}
		})
	}
}

// acquireBodyOf decodes the body of a recorded "POST /v1/leases {...}".
func acquireBodyOf(t *testing.T, rec string) acquireBody {
	t.Helper()
	raw, ok := strings.CutPrefix(rec, "POST /v1/leases ")
	if !ok {
		t.Fatalf("request %q is not an acquire", rec)
	}
	var b acquireBody
	if err := json.Unmarshal([]byte(raw), &b); err != nil {
		t.Fatalf("acquire body %q: %v", raw, err)
	}
	return b
}

func TestAcquireLongPollSendsRemainingWaitAndSameID(t *testing.T) {
	t.Parallel()
	s := newScripted(t,
		errorAnswer(http.StatusServiceUnavailable, berth.EUnavailable),
		jsonAnswer(http.StatusAccepted, queuedJSON),
		jsonAnswer(http.StatusAccepted, queuedJSON),
		jsonAnswer(http.StatusOK, leaseJSON))
	c := newClient(t, testOptions(s.srv.URL))
	var positions []int
	a, err := c.Acquire(testContext(t), AcquireParams{Type: "vm", Owner: "job-1", Wait: time.Hour,
		OnQueued: func(r *berth.Request) { positions = append(positions, r.Position) }})
	if err != nil {
		t.Fatal(err)
	}
	if a.Lease.ID != "l1" || a.Resource.Name != "vm-1" {
		t.Fatalf("acquired %+v", a)
	}
	if len(positions) != 2 || positions[0] != 3 {
		t.Fatalf("OnQueued saw positions %v; want [3 3]", positions)
	}
	reqs := s.requests()
	if len(reqs) != 4 {
		t.Fatalf("server saw %q; want 4 acquires", reqs)
	}
	var id string
	prev := time.Hour + time.Second
	for i, rec := range reqs {
		body := acquireBodyOf(t, rec)
		if i == 0 {
			id = body.RequestID
		}
		if body.RequestID == "" || body.RequestID != id {
			t.Fatalf("acquire %d has request id %q; want %q on every attempt", i, body.RequestID, id)
		}
		if w := body.Wait.Std(); w <= 0 || w > time.Hour || w >= prev {
			t.Fatalf("acquire %d asked to wait %s after %s; want the remaining wait, shrinking", i, w, prev)
		}
		prev = body.Wait.Std()
	}
}

func TestAcquireClaimsLeaseServedAsItGaveUp(t *testing.T) {
	t.Parallel()
	// The request is served just as the caller gives up: the withdrawal
	// finds nothing to withdraw and the client claims the lease.
	answers := []answer{
		jsonAnswer(http.StatusAccepted, queuedJSON),
		errorAnswer(http.StatusNotFound, berth.ENotFound),
		jsonAnswer(http.StatusOK, leaseJSON),
		jsonAnswer(http.StatusOK, `{"lease":{"id":"l1","status":"released"},"resource":{"name":"vm-1","state":"free"}}`),
	}

	t.Run("wait over: the lease is returned", func(t *testing.T) {
		t.Parallel()
		s := newScripted(t, answers...)
		c := newClient(t, testOptions(s.srv.URL))
		a, err := c.Acquire(testContext(t), AcquireParams{Type: "vm", Owner: "job-1", RequestID: "r1"})
		if err != nil {
			t.Fatal(err)
		}
		if a.Lease.ID != "l1" {
			t.Fatalf("lease = %+v", a.Lease)
		}
		reqs := s.requests()
		if len(reqs) != 3 || reqs[1] != "DELETE /v1/requests/r1" || acquireBodyOf(t, reqs[2]).RequestID != "r1" {
			t.Fatalf("server saw %q", reqs)
		}
	})

	t.Run("cancelled: the lease is given back", func(t *testing.T) {
		t.Parallel()
		s := newScripted(t, answers...)
		c := newClient(t, testOptions(s.srv.URL))
		ctx, cancel := context.WithCancel(testContext(t))
		defer cancel()
		_, err := c.Acquire(ctx, AcquireParams{Type: "vm", Owner: "job-1", RequestID: "r1", Wait: time.Hour,
			OnQueued: func(*berth.Request) { cancel() }})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Acquire: %v; want context.Canceled", err)
		}
		reqs := s.requests()
		if len(reqs) != 4 || reqs[1] != "DELETE /v1/requests/r1" || !strings.HasPrefix(reqs[3], `POST /v1/leases/l1/release {"to":"free"`) {
			t.Fatalf("server saw %q", reqs)
		}
	})
}

func TestAcquireNegativeWait(t *testing.T) {
	t.Parallel()
	c := newClient(t, testOptions(closedURL(t)))
	_, err := c.Acquire(testContext(t), AcquireParams{Type: "vm", Owner: "o", Wait: -time.Second})
	if be := wantCode(t, err, berth.EInvalid); be.Field != "wait" {
		t.Fatalf("error = %v; want field wait", err)
	}
}
