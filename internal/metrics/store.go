package metrics

import (
	"context"
	"time"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/store"
)

// Store returns st with every call timed into
// berth_store_operation_duration_seconds and its failures counted in
// berth_store_errors_total. It wraps only the Store interface: the server
// asks the unwrapped store for leadership and handoff listening, which
// are loops, not calls. A nil m returns st itself.
func (m *Metrics) Store(st store.Store) store.Store {
	if m == nil {
		return st
	}
	return &timedStore{st: st, m: m}
}

type timedStore struct {
	st store.Store
	m  *Metrics
}

// timed calls f as store operation op.
func timed[T any](s *timedStore, op string, f func() (T, error)) (T, error) {
	start := time.Now()
	v, err := f()
	s.m.storeCall(op, start, err)
	return v, err
}

var _ store.Store = (*timedStore)(nil)

func (s *timedStore) Close() error       { return s.st.Close() }
func (s *timedStore) SchemaVersion() int { return s.st.SchemaVersion() }

func (s *timedStore) Ping(ctx context.Context) error {
	_, err := timed(s, "Ping", func() (struct{}, error) { return struct{}{}, s.st.Ping(ctx) })
	return err
}

func (s *timedStore) PoolSync(ctx context.Context, p *store.PoolSyncParams) (*store.PoolSyncResult, error) {
	return timed(s, "PoolSync", func() (*store.PoolSyncResult, error) { return s.st.PoolSync(ctx, p) })
}

func (s *timedStore) PoolList(ctx context.Context) ([]*berth.Pool, error) {
	return timed(s, "PoolList", func() ([]*berth.Pool, error) { return s.st.PoolList(ctx) })
}

func (s *timedStore) ResourceGet(ctx context.Context, name string) (*berth.Resource, error) {
	return timed(s, "ResourceGet", func() (*berth.Resource, error) { return s.st.ResourceGet(ctx, name) })
}

func (s *timedStore) ResourceList(ctx context.Context, p *store.ResourceListParams) ([]*berth.Resource, error) {
	return timed(s, "ResourceList", func() ([]*berth.Resource, error) { return s.st.ResourceList(ctx, p) })
}

func (s *timedStore) LeaseAcquire(ctx context.Context, p *store.LeaseAcquireParams) (*store.LeaseAcquireResult, error) {
	return timed(s, "LeaseAcquire", func() (*store.LeaseAcquireResult, error) { return s.st.LeaseAcquire(ctx, p) })
}

func (s *timedStore) LeaseGet(ctx context.Context, id string) (*berth.Lease, error) {
	return timed(s, "LeaseGet", func() (*berth.Lease, error) { return s.st.LeaseGet(ctx, id) })
}

func (s *timedStore) LeaseHeartbeat(ctx context.Context, p *store.LeaseHeartbeatParams) (*store.LeaseHeartbeatResult, error) {
	return timed(s, "LeaseHeartbeat", func() (*store.LeaseHeartbeatResult, error) { return s.st.LeaseHeartbeat(ctx, p) })
}

func (s *timedStore) LeaseRelease(ctx context.Context, p *store.LeaseReleaseParams) (*store.LeaseReleaseResult, error) {
	return timed(s, "LeaseRelease", func() (*store.LeaseReleaseResult, error) { return s.st.LeaseRelease(ctx, p) })
}

func (s *timedStore) LeaseListExpired(ctx context.Context, p *store.LeaseListExpiredParams) ([]*berth.Lease, error) {
	return timed(s, "LeaseListExpired", func() ([]*berth.Lease, error) { return s.st.LeaseListExpired(ctx, p) })
}

func (s *timedStore) LeaseTake(ctx context.Context, p *store.LeaseTakeParams) (*store.LeaseTakeResult, error) {
	return timed(s, "LeaseTake", func() (*store.LeaseTakeResult, error) { return s.st.LeaseTake(ctx, p) })
}

func (s *timedStore) RequestGet(ctx context.Context, p *store.RequestGetParams) (*berth.Request, error) {
	return timed(s, "RequestGet", func() (*berth.Request, error) { return s.st.RequestGet(ctx, p) })
}

func (s *timedStore) RequestCancel(ctx context.Context, id string) error {
	_, err := timed(s, "RequestCancel", func() (struct{}, error) { return struct{}{}, s.st.RequestCancel(ctx, id) })
	return err
}

func (s *timedStore) RequestShorten(ctx context.Context, p *store.RequestShortenParams) error {
	_, err := timed(s, "RequestShorten", func() (struct{}, error) { return struct{}{}, s.st.RequestShorten(ctx, p) })
	return err
}

func (s *timedStore) RequestPrune(ctx context.Context, now time.Time) (int, error) {
	return timed(s, "RequestPrune", func() (int, error) { return s.st.RequestPrune(ctx, now) })
}

func (s *timedStore) ResourceHealth(ctx context.Context, p *store.ResourceHealthParams) (*store.ResourceHealthResult, error) {
	return timed(s, "ResourceHealth", func() (*store.ResourceHealthResult, error) { return s.st.ResourceHealth(ctx, p) })
}

func (s *timedStore) EventList(ctx context.Context, p *store.EventListParams) ([]*berth.Event, error) {
	return timed(s, "EventList", func() ([]*berth.Event, error) { return s.st.EventList(ctx, p) })
}

func (s *timedStore) EventRecord(ctx context.Context, e *berth.Event) error {
	_, err := timed(s, "EventRecord", func() (struct{}, error) { return struct{}{}, s.st.EventRecord(ctx, e) })
	return err
}

func (s *timedStore) CleanClaim(ctx context.Context, p *store.CleanClaimParams) (*store.CleanClaimResult, error) {
	return timed(s, "CleanClaim", func() (*store.CleanClaimResult, error) { return s.st.CleanClaim(ctx, p) })
}

func (s *timedStore) CleanEnd(ctx context.Context, p *store.CleanEndParams) (*store.CleanEndResult, error) {
	return timed(s, "CleanEnd", func() (*store.CleanEndResult, error) { return s.st.CleanEnd(ctx, p) })
}

func (s *timedStore) ResourceAdd(ctx context.Context, p *store.ResourceAddParams) (*store.ResourceChangeResult, error) {
	return timed(s, "ResourceAdd", func() (*store.ResourceChangeResult, error) { return s.st.ResourceAdd(ctx, p) })
}

func (s *timedStore) ResourceRetire(ctx context.Context, p *store.ResourceRetireParams) (*store.ResourceChangeResult, error) {
	return timed(s, "ResourceRetire", func() (*store.ResourceChangeResult, error) { return s.st.ResourceRetire(ctx, p) })
}

func (s *timedStore) ResourceQuarantine(ctx context.Context, p *store.ResourceQuarantineParams) (*store.ResourceChangeResult, error) {
	return timed(s, "ResourceQuarantine", func() (*store.ResourceChangeResult, error) { return s.st.ResourceQuarantine(ctx, p) })
}

func (s *timedStore) ResourceUnquarantine(ctx context.Context, p *store.ResourceUnquarantineParams) (*store.ResourceChangeResult, error) {
	return timed(s, "ResourceUnquarantine", func() (*store.ResourceChangeResult, error) { return s.st.ResourceUnquarantine(ctx, p) })
}

func (s *timedStore) ResourceDrain(ctx context.Context, p *store.ResourceDrainParams) (*store.ResourceChangeResult, error) {
	return timed(s, "ResourceDrain", func() (*store.ResourceChangeResult, error) { return s.st.ResourceDrain(ctx, p) })
}

func (s *timedStore) PoolDrain(ctx context.Context, p *store.PoolDrainParams) (*store.PoolDrainResult, error) {
	return timed(s, "PoolDrain", func() (*store.PoolDrainResult, error) { return s.st.PoolDrain(ctx, p) })
}

func (s *timedStore) ResourceDeleteBegin(ctx context.Context, p *store.ResourceDeleteBeginParams) (*berth.Resource, error) {
	return timed(s, "ResourceDeleteBegin", func() (*berth.Resource, error) { return s.st.ResourceDeleteBegin(ctx, p) })
}

func (s *timedStore) ResourceDeleteEnd(ctx context.Context, p *store.ResourceDeleteEndParams) (*berth.Resource, error) {
	return timed(s, "ResourceDeleteEnd", func() (*berth.Resource, error) { return s.st.ResourceDeleteEnd(ctx, p) })
}

func (s *timedStore) ResourceSetState(ctx context.Context, p *store.ResourceSetStateParams) (*berth.Resource, error) {
	return timed(s, "ResourceSetState", func() (*berth.Resource, error) { return s.st.ResourceSetState(ctx, p) })
}

func (s *timedStore) Check(ctx context.Context) error {
	_, err := timed(s, "Check", func() (struct{}, error) { return struct{}{}, s.st.Check(ctx) })
	return err
}

func (s *timedStore) TokenCreate(ctx context.Context, p *store.TokenCreateParams) (*berth.Token, error) {
	return timed(s, "TokenCreate", func() (*berth.Token, error) { return s.st.TokenCreate(ctx, p) })
}

func (s *timedStore) TokenList(ctx context.Context) ([]*berth.Token, error) {
	return timed(s, "TokenList", func() ([]*berth.Token, error) { return s.st.TokenList(ctx) })
}

func (s *timedStore) TokenByHash(ctx context.Context, hash string) (*berth.Token, error) {
	return timed(s, "TokenByHash", func() (*berth.Token, error) { return s.st.TokenByHash(ctx, hash) })
}

func (s *timedStore) TokenRevoke(ctx context.Context, p *store.TokenRevokeParams) (*berth.Token, error) {
	return timed(s, "TokenRevoke", func() (*berth.Token, error) { return s.st.TokenRevoke(ctx, p) })
}
