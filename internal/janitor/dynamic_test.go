package janitor_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/janitor"
	"github.com/berth-ci/berth/internal/lease"
)

func kindPool(minFree, maxTotal int, lifespan time.Duration) (lease.Pool, janitor.DynamicPool) {
	d := &berth.Dynamic{MinFree: minFree, MaxTotal: maxTotal, Lifespan: berth.Duration(lifespan)}
	lp := lease.Pool{Type: "kind", LeaseTTL: 24 * time.Hour, Dynamic: d}
	dp := janitor.DynamicPool{Type: "kind", MinFree: minFree, MaxTotal: maxTotal, Lifespan: lifespan,
		Provision:   janitor.Command{Argv: script("provision.sh"), Timeout: time.Minute},
		Deprovision: janitor.Command{Argv: script("deprovision.sh"), Timeout: time.Minute},
		Concurrency: 2, Backoff: lease.CleanPolicy{MaxAttempts: 2, Backoff: 10 * time.Second, MaxBackoff: time.Minute}}
	return lp, dp
}

func (r *rig) runProvisioner(pools ...janitor.DynamicPool) (stop func()) {
	p := janitor.NewProvisioner(janitor.ProvisionerOptions{Engine: r.eng, Clock: r.clock, Pools: pools, Env: r.env()})
	return r.run(p.Run)
}

func (r *rig) pool(typ string) *berth.Pool {
	r.t.Helper()
	p, err := r.eng.Pool(context.Background(), typ)
	if err != nil {
		r.t.Fatal(err)
	}
	return p
}

func (r *rig) deleted() []string {
	r.t.Helper()
	b, err := os.ReadFile(filepath.Join(r.dir, "deleted"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		r.t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

func TestProvisionerKeepsMinFree(t *testing.T) {
	lp, dp := kindPool(2, 3, 0)
	r := newRig(t, lp)
	r.runProvisioner(dp)
	r.waitFor("two free resources", func() bool { return r.pool("kind").States[berth.StateFree] == 2 })
	got := r.resource("dyn-1")
	if got.Source != berth.SourceDynamic || got.UserData["id"] != "1" || got.UserData["provision"] == "" {
		t.Fatalf("provisioned: %+v", got)
	}
	evs := r.events("dyn-1", berth.EventProvision)
	if len(evs) != 1 || evs[0].Reason != "provisioned" || !strings.Contains(evs[0].Output, "making dyn-1") {
		t.Fatalf("provision events: %+v", evs)
	}
	// One leased: one more is made, up to maxTotal; then no more.
	r.acquire("kind", "job-1")
	r.waitFor("a third resource", func() bool { return r.pool("kind").Total == 3 })
	r.acquire("kind", "job-2")
	p := r.pool("kind")
	if p.Total != 3 || p.States[berth.StateBusy] != 2 {
		t.Fatalf("pool past maxTotal: %+v", p)
	}
}

// TestProvisionerServesWaiter: with minFree 0, a waiting job is the
// demand; what is made goes straight to it.
func TestProvisionerServesWaiter(t *testing.T) {
	lp, dp := kindPool(0, 2, 0)
	r := newRig(t, lp)
	r.runProvisioner(dp)
	got := make(chan *lease.AcquireResult, 1)
	go func() {
		res, err := r.eng.Acquire(context.Background(), lease.AcquireParams{Type: "kind", Owner: "waiter", Wait: time.Minute})
		if err != nil {
			t.Error(err)
		}
		got <- res
	}()
	select {
	case res := <-got:
		if res == nil || res.Lease == nil || res.Resource.Name != "dyn-1" {
			t.Fatalf("the waiter got %+v", res)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no resource was made for the waiter")
	}
	if p := r.pool("kind"); p.Total != 1 {
		t.Fatalf("made %d for one waiter", p.Total)
	}
}

// TestProvisionerReplacesAfterLifespan: free resources past their
// lifespan are deleted and replaced; a leased one is left until released.
func TestProvisionerReplacesAfterLifespan(t *testing.T) {
	lp, dp := kindPool(2, 4, time.Hour)
	r := newRig(t, lp)
	r.runProvisioner(dp)
	r.waitFor("two free resources", func() bool { return r.pool("kind").States[berth.StateFree] == 2 })
	held := r.acquire("kind", "job")
	r.waitFor("a replacement for the leased one", func() bool { return r.pool("kind").States[berth.StateFree] == 2 })
	r.clock.Advance(time.Hour)
	r.waitFor("the old free ones to be deleted", func() bool { return len(r.deleted()) == 2 })
	dels := r.deleted()
	for _, d := range dels {
		if strings.HasPrefix(d, held.Resource.Name+" ") || !strings.HasSuffix(d, "past its lifespan of 1h0m0s") {
			t.Fatalf("deleted %q (holding %s)", d, held.Resource.Name)
		}
	}
	r.waitFor("two free again", func() bool { return r.pool("kind").States[berth.StateFree] == 2 })
	if r.state(held.Resource.Name) != berth.StateBusy {
		t.Fatalf("the leased resource: %+v", r.resource(held.Resource.Name))
	}
	r.release(held.Lease.ID, berth.ReleaseFree, "")
	// The deprovisioner's log is written before berth records the
	// outcome: wait for the record, not for the log.
	r.waitFor("the released old one to be deleted", func() bool {
		_, err := r.eng.Resource(context.Background(), held.Resource.Name)
		return len(r.deleted()) == 3 && berth.ErrorCodeOf(err) == berth.ENotFound
	})
	evs := r.events(held.Resource.Name, berth.EventProvision)
	if got := reasonsOf(evs); !slices.Equal(got, []string{"provisioned", "deprovisioning", "deprovisioned"}) {
		t.Fatalf("events of %s: %v", held.Resource.Name, got)
	}
	if _, err := r.eng.Resource(context.Background(), held.Resource.Name); berth.ErrorCodeOf(err) != berth.ENotFound {
		t.Fatalf("the deleted resource: %v", err)
	}
}

func TestProvisionerBacksOffOnFailure(t *testing.T) {
	lp, dp := kindPool(1, 2, 0)
	r := newRig(t, lp)
	r.touch("provision-fail")
	r.runProvisioner(dp)
	failed := func(n int) func() bool {
		return func() bool { return len(r.events("", berth.EventProvision)) >= n }
	}
	r.waitFor("a failed provisioning", failed(1))
	ev := r.events("", berth.EventProvision)[0]
	if ev.Reason != "provision-failed" || ev.Type != "kind" || !strings.Contains(ev.Message, "exit status 1; trying again in") ||
		ev.Output != "quota exceeded for kind" {
		t.Fatalf("failure event: %+v", ev)
	}
	// Not again before the backoff (10s, give or take 2s)...
	r.untouch("provision-fail")
	r.touch("provision-garbage")
	r.clock.Advance(7 * time.Second)
	// A pass of the provisioner's loop (a waiter's demand), within the
	// backoff.
	_, _ = r.eng.Acquire(context.Background(), lease.AcquireParams{Type: "kind", Owner: "nobody"})
	if n := len(r.events("", berth.EventProvision)); n != 1 {
		t.Fatalf("%d attempts within the backoff", n)
	}
	// ... but after it.
	r.clock.Advance(5 * time.Second)
	r.waitFor("a second, bad, provisioning", failed(2))
	if ev := r.events("", berth.EventProvision)[1]; !strings.Contains(ev.Message, "printed no resource as JSON") || !strings.Contains(ev.Output, "created it, probably") {
		t.Fatalf("bad output event: %+v", ev)
	}
	r.untouch("provision-garbage")
	r.clock.Advance(24 * time.Second) // 20s after the second failure, give or take 4s
	r.waitFor("a resource", func() bool { return r.pool("kind").Total == 1 })
}

func TestDeprovisionFailureQuarantines(t *testing.T) {
	lp, dp := kindPool(1, 1, time.Hour)
	r := newRig(t, lp)
	r.runProvisioner(dp)
	r.waitFor("a resource", func() bool { return r.pool("kind").Total == 1 })
	r.touch("deprovision-fail")
	r.clock.Advance(time.Hour)
	r.waitFor("a failed deletion", func() bool { return r.resource("dyn-1").CleanAttempts == 1 })
	r.clock.Advance(r.resource("dyn-1").NextCleanAt.Sub(r.clock.Now()))
	r.waitFor("dyn-1 to be quarantined", func() bool { return r.state("dyn-1") == berth.StateQuarantined })
	res := r.resource("dyn-1")
	if !strings.Contains(res.StateReason, "deprovisioning failed 2 times; the last time: exit status 2: cannot delete dyn-1: in use") {
		t.Fatalf("quarantine reason: %q", res.StateReason)
	}
	want := []string{"provisioned", "deprovisioning", "deprovision-failed", "quarantined"}
	if got := reasonsOf(r.events("dyn-1", berth.EventProvision)); !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	// A quarantined resource counts against maxTotal: nothing new is
	// made in its place until an admin acts.
	if p := r.pool("kind"); p.Total != 1 {
		t.Fatalf("pool: %+v", p)
	}
}

// TestRetireDynamicDeprovisions: an admin's retire of a resource of a
// dynamic pool hands it to the deprovisioner once it is not leased.
func TestRetireDynamicDeprovisions(t *testing.T) {
	lp, dp := kindPool(1, 2, 0)
	r := newRig(t, lp)
	r.runProvisioner(dp)
	r.waitFor("a resource", func() bool { return r.pool("kind").States[berth.StateFree] == 1 })
	held := r.acquire("kind", "job")
	r.waitFor("a second", func() bool { return r.pool("kind").States[berth.StateFree] == 1 })
	if _, err := r.eng.RetireResource(context.Background(), lease.AdminParams{Name: held.Resource.Name, Actor: "admin"}); err != nil {
		t.Fatal(err)
	}
	r.release(held.Lease.ID, berth.ReleaseFree, "")
	r.waitFor("the retired resource to be deleted", func() bool { return len(r.deleted()) == 1 })
	if d := r.deleted()[0]; d != held.Resource.Name+" 1 retired" {
		t.Fatalf("deleted %q", d)
	}
	if _, err := r.eng.AddResource(context.Background(), lease.AddParams{Type: "kind", Name: "by-hand"}); berth.ErrorCodeOf(err) != berth.EConflict {
		t.Fatalf("adding by hand to a dynamic pool: %v", err)
	}
}

// TestProvisionerMakesBeforeItDeletes: a free resource past its lifespan
// is deleted only once its replacement is free: the pool is never left
// without a free resource for the length of a provisioning.
func TestProvisionerMakesBeforeItDeletes(t *testing.T) {
	lp, dp := kindPool(1, 2, time.Hour)
	r := newRig(t, lp)
	r.runProvisioner(dp)
	r.waitFor("a resource", func() bool { return r.pool("kind").States[berth.StateFree] == 1 })
	r.clock.Advance(time.Hour)
	r.waitFor("dyn-1 to be deleted", func() bool { return len(r.deleted()) == 1 })
	var made, deleting int64
	for _, e := range r.events("", berth.EventProvision) {
		switch {
		case e.Resource == "dyn-2" && e.Reason == "provisioned":
			made = e.ID
		case e.Resource == "dyn-1" && e.Reason == "deprovisioning":
			deleting = e.ID
		}
	}
	if made == 0 || deleting == 0 || made > deleting {
		t.Fatalf("dyn-2 made at event %d, dyn-1's deletion begun at event %d; want the replacement first", made, deleting)
	}
}

// With room to spare (maxTotal > minFree), replacing resources past their
// lifespan never takes the pool below minFree free: each replacement is
// free before an old one goes.
func TestProvisionerReplacesWithoutDippingBelowMinFree(t *testing.T) {
	lp, dp := kindPool(2, 3, time.Hour)
	r := newRig(t, lp)
	r.runProvisioner(dp)
	r.waitFor("two resources", func() bool { return r.pool("kind").States[berth.StateFree] == 2 })
	r.clock.Advance(time.Hour)
	r.waitFor("both old ones to be deleted and two new ones free", func() bool {
		return len(r.deleted()) == 2 && r.pool("kind").States[berth.StateFree] == 2 && r.pool("kind").Total == 2
	})
	// Replay every event: the count of free resources, once it reached
	// two, never fell below.
	free, low, reached := 0, 0, false
	for _, e := range r.events("", "") {
		if e.To == string(berth.StateFree) && e.From != string(berth.StateFree) {
			free++
		}
		if e.From == string(berth.StateFree) && e.To != string(berth.StateFree) {
			free--
		}
		if free >= 2 && !reached {
			reached, low = true, free
		}
		if reached {
			low = min(low, free)
		}
	}
	if !reached || low < 2 {
		t.Fatalf("free resources fell to %d during the replacement (reached 2: %v); want never below minFree 2", low, reached)
	}
}
