package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/store"
)

// The authentication and audit cases (issue 7): tokens stored by hash,
// leases that remember the principal that took them, and events that
// record who caused them and from where.
var authCases = []struct {
	name string
	fn   func(t *testing.T, s store.Store)
}{
	{"Tokens", testTokens},
	{"AuditedEvents", testAuditedEvents},
}

func testTokens(t *testing.T, s store.Store) {
	ctx := context.Background()
	tok, err := s.TokenCreate(ctx, &store.TokenCreateParams{Name: "ci", Role: berth.RoleClient, Hash: "h-ci", Actor: "ops", Now: t0})
	if err != nil || tok.Name != "ci" || tok.Role != berth.RoleClient || !tok.CreatedAt.Equal(t0) || tok.CreatedBy != "ops" {
		t.Fatalf("TokenCreate: %+v, %v", tok, err)
	}
	_, err = s.TokenCreate(ctx, &store.TokenCreateParams{Name: "ci", Role: berth.RoleAdmin, Hash: "h-other", Actor: "ops", Now: t0})
	if berth.ErrorCodeOf(err) != berth.EConflict {
		t.Fatalf("a second token named ci: %v, want a conflict", err)
	}
	if _, err := s.TokenCreate(ctx, &store.TokenCreateParams{Name: "admin", Role: berth.RoleAdmin, Hash: "h-admin", Now: t0}); err != nil {
		t.Fatal(err)
	}
	got, err := s.TokenByHash(ctx, "h-ci")
	if err != nil || got.Name != "ci" || got.Role != berth.RoleClient {
		t.Fatalf("TokenByHash: %+v, %v", got, err)
	}
	if _, err := s.TokenByHash(ctx, "h-nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown hash: %v, want ErrNotFound", err)
	}
	list, err := s.TokenList(ctx)
	if err != nil || len(list) != 2 || list[0].Name != "admin" || list[1].Name != "ci" {
		t.Fatalf("TokenList: %+v, %v", list, err)
	}
	if _, err := s.TokenRevoke(ctx, &store.TokenRevokeParams{Name: "ci", Actor: "ops", Now: at(time.Second)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.TokenByHash(ctx, "h-ci"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("revoked token: %v, want ErrNotFound", err)
	}
	if _, err := s.TokenRevoke(ctx, &store.TokenRevokeParams{Name: "ci", Now: at(time.Second)}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("revoke twice: %v, want ErrNotFound", err)
	}
	// The name is free again, for a new token.
	if _, err := s.TokenCreate(ctx, &store.TokenCreateParams{Name: "ci", Role: berth.RoleViewer, Hash: "h-ci-2", Now: at(2 * time.Second)}); err != nil {
		t.Fatalf("re-create after revoke: %v", err)
	}
	evs, err := s.EventList(ctx, &store.EventListParams{Kind: berth.EventAdmin, Actor: "ops"})
	if err != nil || len(evs) != 2 || evs[0].Reason != store.ReasonTokenCreated || evs[1].Reason != store.ReasonTokenRevoked {
		t.Fatalf("token events by ops: %+v, %v", evs, err)
	}
}

func testAuditedEvents(t *testing.T, s store.Store) {
	sync(t, s, t0, pool("p", names(1, "r")...))
	as := func(name, remote string) context.Context {
		return berth.WithPrincipal(context.Background(), berth.Principal{Name: name, Role: berth.RoleClient, Remote: remote})
	}
	// A lease taken by token "job-token" for owner "job-1".
	res, err := s.LeaseAcquire(as("job-token", "10.0.0.7:5000"), &store.LeaseAcquireParams{Type: "p", Owner: "job-1", LeaseTTL: ttl, Now: at(time.Second), Actor: "job-1"})
	if err != nil || res.Lease == nil || res.Lease.Principal != "job-token" {
		t.Fatalf("acquire: %+v, %v; want a lease held by job-token", res, err)
	}
	if l, err := s.LeaseGet(context.Background(), res.Lease.ID); err != nil || l.Principal != "job-token" {
		t.Fatalf("stored lease: %+v, %v", l, err)
	}
	// A waiter of another token; the release hands it over.
	if _, err := s.LeaseAcquire(as("other-token", "10.0.0.8:6000"), &store.LeaseAcquireParams{Type: "p", Owner: "job-2", RequestID: "q", Wait: true,
		WaitUntil: at(time.Minute), LeaseTTL: ttl, Now: at(2 * time.Second), Actor: "job-2"}); err != nil {
		t.Fatal(err)
	}
	rel, err := s.LeaseRelease(as("job-token", "10.0.0.7:5001"), &store.LeaseReleaseParams{ID: res.Lease.ID, To: berth.StateFree, HandoffTTL: ttl,
		Now: at(3 * time.Second), Actor: "job-1"})
	if err != nil || rel.Handoff == nil {
		t.Fatalf("release: %+v, %v", rel, err)
	}
	if l, err := s.LeaseGet(context.Background(), rel.Handoff.LeaseID); err != nil || l.Principal != "other-token" {
		t.Fatalf("handed-over lease: %+v, %v; want it held by the waiter's token", l, err)
	}
	evs, err := s.EventList(context.Background(), &store.EventListParams{Resource: "r1", Kind: berth.EventLease})
	if err != nil || len(evs) != 3 {
		t.Fatalf("events: %+v, %v", evs, err)
	}
	for i, want := range []struct{ actor, remote string }{{"job-token", "10.0.0.7:5000"}, {"job-token", "10.0.0.7:5001"}, {"job-token", "10.0.0.7:5001"}} {
		if evs[i].Actor != want.actor || evs[i].Remote != want.remote {
			t.Errorf("event %d (%s): actor %q from %q, want %q from %q", i, evs[i].Reason, evs[i].Actor, evs[i].Remote, want.actor, want.remote)
		}
	}
	if byActor, err := s.EventList(context.Background(), &store.EventListParams{Actor: "job-token"}); err != nil || len(byActor) != 3 {
		t.Fatalf("events of job-token: %d, %v", len(byActor), err)
	}
	// Without a principal (berth's own loops, or no authentication): the
	// actor the engine names, no address.
	if _, err := s.LeaseRelease(context.Background(), &store.LeaseReleaseParams{ID: rel.Handoff.LeaseID, To: berth.StateFree, Expired: true,
		Now: at(time.Hour), Actor: "reaper"}); err != nil {
		t.Fatal(err)
	}
	last, err := s.EventList(context.Background(), &store.EventListParams{Resource: "r1", Desc: true, Limit: 1})
	if err != nil || last[0].Actor != "reaper" || last[0].Remote != "" {
		t.Fatalf("the reaper's event: %+v, %v", last, err)
	}
}
