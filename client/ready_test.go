package client

import (
	"testing"
	"time"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/lease"
	"github.com/berth-ci/berth/internal/store"
)

// probedPool is vmPool with a probe whose Unknown resources may be leased,
// so that a test can hold one and then set its health.
func probedPool(names ...string) []lease.Pool {
	ps := vmPool(names...)
	ps[0].Probe = "tcp"
	return ps
}

// setHealth records a probe result as the prober would.
func (b *broker) setHealth(t *testing.T, name string, status berth.HealthStatus, reason string) {
	t.Helper()
	res, err := b.st.ResourceHealth(t.Context(), &store.ResourceHealthParams{Now: time.Now(), Actor: "prober",
		Updates: []store.HealthUpdate{{Name: name, Type: "vm", Status: status, Reason: reason, Message: "probe said so"}}})
	if err != nil {
		t.Fatal(err)
	}
	b.eng.HealthRecorded(res)
}

// A held lease's handle reports its resource going Disconnected and
// coming back, from its heartbeats; the lease stays held.
func TestHoldHealthChanged(t *testing.T) {
	t.Parallel()
	b := newBroker(t, brokerOptions{pools: probedPool("vm-1")})
	c := newClient(t, testOptions(b.srv.URL))
	ctx := testContext(t)
	h, err := c.Hold(ctx, AcquireParams{Type: "vm", Owner: "job"}, HoldOptions{HeartbeatInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close(ctx)
	b.setHealth(t, "vm-1", berth.HealthDisconnected, "ConnectionRefused")
	for h.Resource().Health.Status != berth.HealthDisconnected {
		select {
		case <-h.HealthChanged():
		case err := <-h.Lost():
			t.Fatalf("lease lost: %v", err)
		case <-ctx.Done():
			t.Fatal("no word of the resource going Disconnected")
		}
	}
	if got := h.Resource().Health; got.Reason != "ConnectionRefused" || got.Message != "probe said so" {
		t.Fatalf("health = %+v", got)
	}
	b.setHealth(t, "vm-1", berth.HealthConnected, "")
	for h.Resource().Health.Status != berth.HealthConnected {
		select {
		case <-h.HealthChanged():
		case <-ctx.Done():
			t.Fatal("no word of the resource coming back")
		}
	}
}

// WaitReady returns the resource the moment it is Connected; it fails
// with EInvalid in a pool without a probe and with ELeaseLost once the
// lease has ended.
func TestWaitReady(t *testing.T) {
	t.Parallel()
	b := newBroker(t, brokerOptions{pools: append(probedPool("vm-1"), lease.Pool{Type: "plain", LeaseTTL: time.Minute,
		Resources: []store.ResourceSpec{{Name: "p-1"}}})})
	c := newClient(t, testOptions(b.srv.URL))
	ctx := testContext(t)
	a, err := c.Acquire(ctx, AcquireParams{Type: "vm", Owner: "job"})
	if err != nil {
		t.Fatal(err)
	}
	if ready, r, err := c.Ready(ctx, a.Lease.ID); err != nil || ready || r.Health.Status != berth.HealthUnknown {
		t.Fatalf("Ready before any probe: %v, %+v, %v", ready, r, err)
	}
	type answer struct {
		r   *berth.Resource
		err error
	}
	got := make(chan answer, 1)
	go func() {
		r, err := c.WaitReady(ctx, a.Lease.ID)
		got <- answer{r, err}
	}()
	b.setHealth(t, "vm-1", berth.HealthConnected, "")
	res := <-got
	if res.err != nil || res.r.Name != "vm-1" || res.r.Health.Status != berth.HealthConnected {
		t.Fatalf("WaitReady: %+v, %v", res.r, res.err)
	}
	p, err := c.Acquire(ctx, AcquireParams{Type: "plain", Owner: "job"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.WaitReady(ctx, p.Lease.ID)
	wantCode(t, err, berth.EInvalid)
	if _, err := c.Release(ctx, a.Lease.ID, ReleaseParams{}); err != nil {
		t.Fatal(err)
	}
	_, err = c.WaitReady(ctx, a.Lease.ID)
	wantCode(t, err, berth.ELeaseLost)
}
