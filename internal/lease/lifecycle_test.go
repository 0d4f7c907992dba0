package lease_test

import (
	"context"
	"testing"
	"time"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/lease"
	"github.com/berth-ci/berth/internal/store"
)

// TestCleanPolicyDelay: the backoff doubles from Backoff, is capped at
// MaxBackoff, and is jittered by at most a fifth either way (never past
// the cap).
func TestCleanPolicyDelay(t *testing.T) {
	p := lease.CleanPolicy{Backoff: 10 * time.Second, MaxBackoff: time.Minute}
	for n, base := range map[int]time.Duration{1: 10 * time.Second, 2: 20 * time.Second, 3: 40 * time.Second, 4: time.Minute, 30: time.Minute} {
		for range 200 {
			d := p.Delay(n)
			lo, hi := time.Duration(float64(base)*0.8), min(time.Duration(float64(base)*1.2), time.Minute)
			if d < lo || d > hi {
				t.Fatalf("Delay(%d) = %s, want within [%s, %s]", n, d, lo, hi)
			}
		}
	}
	if d := (lease.CleanPolicy{}).Delay(1); d < 8*time.Second || d > 12*time.Second {
		t.Fatalf("default first backoff %s, want about %s", d, lease.DefaultBackoff)
	}
	if d := (lease.CleanPolicy{}).Delay(1000); d > lease.DefaultMaxBackoff {
		t.Fatalf("default backoff is not capped: %s", d)
	}
	// At the cap the waits still spread: not half of them on the cap.
	atCap := 0
	for range 1000 {
		if p.Delay(30) == time.Minute {
			atCap++
		}
	}
	if atCap > 10 {
		t.Fatalf("%d of 1000 waits at the cap exactly", atCap)
	}
}

// TestBrokenFollowsPoolPolicy: a release as broken quarantines, unless
// the pool's janitor cleans broken resources deeply; a pool without a
// janitor always quarantines.
func TestBrokenFollowsPoolPolicy(t *testing.T) {
	deep := lease.Pool{Type: "deep", LeaseTTL: ttl, Janitor: lease.JanitorExternal, OnBroken: lease.OnBrokenClean,
		Resources: []store.ResourceSpec{{Name: "d1"}}}
	noJanitor := lease.Pool{Type: "plain", LeaseTTL: ttl, OnBroken: lease.OnBrokenClean, Resources: []store.ResourceSpec{{Name: "p1"}}}
	f := newFixture(t, deep, noJanitor)
	ctx := context.Background()
	for _, c := range []struct {
		typ  string
		want berth.State
		deep bool
	}{{"deep", berth.StateDirty, true}, {"plain", berth.StateQuarantined, false}} {
		l := f.acquire(t, lease.AcquireParams{Type: c.typ}).Lease
		res, err := f.eng.Release(ctx, lease.ReleaseParams{ID: l.ID, To: berth.ReleaseBroken, Reason: "wedged"})
		if err != nil {
			t.Fatal(err)
		}
		if r := res.Resource; r.State != c.want || r.DeepClean != c.deep || r.StateReason != "wedged" {
			t.Errorf("%s: %+v, want %s (deep %v)", c.typ, r, c.want, c.deep)
		}
	}
}

func TestAdminValidation(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	_, err := f.eng.Quarantine(ctx, lease.AdminParams{Name: "vm-1"})
	wantCode(t, err, berth.EInvalid, "reason")
	_, err = f.eng.Unquarantine(ctx, lease.AdminParams{Name: "vm-1", Reason: "x"})
	wantCode(t, err, berth.EConflict, "") // not quarantined
	if _, err := f.eng.Quarantine(ctx, lease.AdminParams{Name: "vm-1", Reason: "x"}); err != nil {
		t.Fatal(err)
	}
	_, err = f.eng.Unquarantine(ctx, lease.AdminParams{Name: "vm-1", Reason: "x", To: berth.StateBusy})
	wantCode(t, err, berth.EInvalid, "to")
	_, err = f.eng.Unquarantine(ctx, lease.AdminParams{Name: "vm-1", Reason: "x", To: berth.StateDirty})
	wantCode(t, err, berth.EInvalid, "to") // no janitor to clean it
	_, err = f.eng.DrainPool(ctx, lease.AdminParams{Type: "nope", Drain: true, Reason: "x"})
	wantCode(t, err, berth.EUnknownType, "type")
	_, err = f.eng.AddResource(ctx, lease.AddParams{Type: "vm", Name: "vm-2", UserData: map[string]string{"": "x"}})
	wantCode(t, err, berth.EInvalid, "userData")
	_, err = f.eng.CleanClaim(ctx, lease.CleanClaimParams{Type: "vm", Owner: "j"})
	wantCode(t, err, berth.EConflict, "")
	_, err = f.eng.CleanEnd(ctx, lease.CleanEndParams{ID: "x", OK: true, Abandon: true})
	wantCode(t, err, berth.EInvalid, "quarantine")
}

// TestWatchesDoNotPile: a watch that is stopped, or that fired, is
// forgotten; a claim that waits and gives up leaves none behind.
func TestWatchesDoNotPile(t *testing.T) {
	f := newFixture(t, lease.Pool{Type: "proj", LeaseTTL: ttl, Janitor: lease.JanitorExternal, Resources: []store.ResourceSpec{{Name: "p1"}}})
	_, stop := f.eng.Watch("proj")
	fired, _ := f.eng.Watch("proj")
	stop()
	f.acquire(t, lease.AcquireParams{Type: "proj"}) // touches proj
	select {
	case <-fired:
	default:
		t.Fatal("a watch did not fire when its pool was touched")
	}
	if n := f.eng.Watches(); n != 0 {
		t.Fatalf("%d watches left", n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := f.eng.CleanClaim(ctx, lease.CleanClaimParams{Type: "proj", Owner: "j", Wait: time.Minute})
		done <- err
	}()
	f.waitQueued(t, 1) // its timer: it waits
	cancel()
	if err := <-done; err == nil {
		t.Fatal("a cancelled claim returned no error")
	}
	if n := f.eng.Watches(); n != 0 {
		t.Fatalf("%d watches left after a claim gave up", n)
	}
}
