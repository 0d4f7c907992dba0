package sqlite_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/store"
	"github.com/berth-ci/berth/internal/store/sqlite"
)

func benchStore(b *testing.B, n int) store.Store {
	b.Helper()
	ctx := context.Background()
	s, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "berth.db"), sqlite.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	specs := make([]store.ResourceSpec, n)
	for i := range specs {
		specs[i] = store.ResourceSpec{Name: fmt.Sprintf("r-%d", i)}
	}
	if _, err := s.PoolSync(ctx, &store.PoolSyncParams{Pools: []store.PoolPolicy{{Type: "t", LeaseTTL: time.Hour, Resources: specs}}}); err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkAcquireRelease is one acquire and one release, each its own
// durable transaction, on pools of different sizes: the cost must not grow
// with the pool.
func BenchmarkAcquireRelease(b *testing.B) {
	for _, n := range []int{100, 10_000, 100_000} {
		b.Run(fmt.Sprintf("pool=%d", n), func(b *testing.B) {
			s := benchStore(b, n)
			ctx := context.Background()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				res, err := s.LeaseAcquire(ctx, &store.LeaseAcquireParams{Type: "t", Owner: "bench", RequestID: fmt.Sprint("req-", i), LeaseTTL: time.Hour})
				if err != nil || res.Lease == nil {
					b.Fatalf("acquire: %+v %v", res, err)
				}
				if _, err := s.LeaseRelease(ctx, &store.LeaseReleaseParams{ID: res.Lease.ID, To: berth.StateFree, HandoffTTL: time.Hour}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkAcquireReleaseParallel is the same with 16 concurrent callers,
// where writes share commits.
func BenchmarkAcquireReleaseParallel(b *testing.B) {
	for _, n := range []int{100, 10_000, 100_000} {
		b.Run(fmt.Sprintf("pool=%d", n), func(b *testing.B) {
			s := benchStore(b, n)
			ctx := context.Background()
			var seq atomic.Int64
			b.SetParallelism(8) // 16 goroutines on 2 CPUs
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					res, err := s.LeaseAcquire(ctx, &store.LeaseAcquireParams{Type: "t", Owner: "bench", RequestID: fmt.Sprint("req-", seq.Add(1)), LeaseTTL: time.Hour})
					if err != nil || res.Lease == nil {
						b.Errorf("acquire: %+v %v", res, err)
						return
					}
					if _, err := s.LeaseRelease(ctx, &store.LeaseReleaseParams{ID: res.Lease.ID, To: berth.StateFree, HandoffTTL: time.Hour}); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
