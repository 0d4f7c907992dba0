package sqlite_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/berth-ci/berth/internal/store"
	"github.com/berth-ci/berth/internal/store/sqlite"
)

// BenchmarkFirstSync is a first start with 100,000 resources: every one is
// inserted, with its "added" event.
func BenchmarkFirstSync(b *testing.B) {
	specs := make([]store.ResourceSpec, 100_000)
	for i := range specs {
		specs[i] = store.ResourceSpec{Name: fmt.Sprintf("r-%d", i)}
	}
	ctx := context.Background()
	for b.Loop() {
		s, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "berth.db"), sqlite.Options{})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.PoolSync(ctx, &store.PoolSyncParams{Pools: []store.PoolPolicy{{Type: "t", LeaseTTL: time.Hour, Resources: specs}}}); err != nil {
			b.Fatal(err)
		}
		s.Close()
	}
}
