package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/store"
	"github.com/berth-ci/berth/internal/store/postgres"
	"github.com/berth-ci/berth/internal/store/postgres/pgtest"
)

// TestClaimRacesReaper: a waiter comes for the resource handed to it just
// as the reaper ends that lease, unclaimed, and hands the resource to the
// next waiter. The claim read the lease as live before the reaper wrote;
// it must not then hand the waiter a lease that has ended (the resource
// is another's). Found by the second review of issue 6. The claim is held
// between its read and its write by an advisory lock the test holds, so
// that the reaper runs in that window every time.
func TestClaimRacesReaper(t *testing.T) {
	ctx := context.Background()
	schema := pgtest.Schema(t)
	s, err := postgres.Open(ctx, pgtest.URL(t), postgres.Options{Schema: schema, MaxConns: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	ttl := time.Minute
	if _, err := s.PoolSync(ctx, &store.PoolSyncParams{Pools: []store.PoolPolicy{{Type: "p", LeaseTTL: ttl, Janitor: "external",
		Resources: []store.ResourceSpec{{Name: "r1"}}}}, Now: t0, Actor: "test"}); err != nil {
		t.Fatal(err)
	}
	acquire := func(owner, id string, now, until time.Time) *store.LeaseAcquireResult {
		t.Helper()
		res, err := s.LeaseAcquire(ctx, &store.LeaseAcquireParams{Type: "p", Owner: owner, RequestID: id, Wait: id != "", WaitUntil: until,
			LeaseTTL: ttl, Now: now, Actor: owner})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	held := acquire("holder", "", t0, t0)
	acquire("job-late", "late", at(time.Second), at(20*time.Second))
	acquire("job-next", "next", at(2*time.Second), at(time.Hour))
	rel, err := s.LeaseRelease(ctx, &store.LeaseReleaseParams{ID: held.Lease.ID, To: berth.StateFree, Now: at(5 * time.Second), HandoffTTL: ttl, Actor: "test"})
	if err != nil || rel.Handoff == nil || rel.Handoff.RequestID != "late" {
		t.Fatalf("release: %+v, %v", rel, err)
	}

	// The claim's UPDATE waits for the test's advisory lock.
	conn, err := pgx.Connect(ctx, pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	const gate = 914206
	for _, q := range []string{
		`CREATE FUNCTION ` + schema + `.gate() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
			IF current_query() LIKE '%claimed = true WHERE token%' THEN
				PERFORM pg_advisory_lock(914206); PERFORM pg_advisory_unlock(914206);
			END IF; RETURN NULL; END $$`,
		`CREATE TRIGGER gate BEFORE UPDATE ON ` + schema + `.leases FOR EACH STATEMENT EXECUTE FUNCTION ` + schema + `.gate()`,
		`SELECT pg_advisory_lock(914206)`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	type claimed struct {
		res *store.LeaseAcquireResult
		err error
	}
	done := make(chan claimed, 1)
	go func() {
		// A moment before the handed-over lease runs out, at 20s.
		res, err := s.LeaseAcquire(ctx, &store.LeaseAcquireParams{Type: "p", Owner: "job-late", RequestID: "late", Wait: true,
			WaitUntil: at(50 * time.Second), LeaseTTL: ttl, Now: at(20*time.Second - time.Millisecond), Actor: "job-late"})
		done <- claimed{res, err}
	}()
	// Wait until the claim is held at the gate.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var waiting bool
		if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND objid = $1 AND NOT granted)`, gate).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the claim never reached the gate")
		}
		time.Sleep(5 * time.Millisecond)
	}
	reaped, err := s.LeaseRelease(ctx, &store.LeaseReleaseParams{ID: rel.Handoff.LeaseID, Expired: true, Actor: "reaper",
		Decide: func(string) store.Outcome { return store.Outcome{To: berth.StateDirty, HandoffTTL: ttl} },
		Reason: "no heartbeat", Now: at(20 * time.Second), HandoffTTL: ttl})
	if err != nil || reaped.Handoff == nil || reaped.Handoff.RequestID != "next" {
		t.Fatalf("reaper: %+v, %v; want r1 handed to next", reaped, err)
	}
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_unlock(914206)`); err != nil {
		t.Fatal(err)
	}
	c := <-done
	if c.err != nil {
		t.Fatal(c.err)
	}
	if c.res.Lease != nil {
		t.Fatalf("job-late was given lease %s of %s, which the reaper had ended and %s holds", c.res.Lease.ID, c.res.Resource.Name, reaped.Resource.Owner)
	}
	if c.res.Request == nil || c.res.Request.Position != 1 {
		t.Fatalf("job-late after the race: %+v; want it waiting again, first", c.res)
	}
	if err := s.Check(ctx); err != nil {
		t.Fatal(err)
	}
}
