package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-ci/berth/internal/api"
	"github.com/berth-ci/berth/internal/lease"
	"github.com/berth-ci/berth/internal/store"
	"github.com/berth-ci/berth/internal/store/sqlite"
)

// BenchmarkAcquireRelease measures one acquire and one release through the
// HTTP API on loopback, with the embedded store, at 1 and 16 concurrent
// callers, on pools of 100 and 10,000 resources.
func BenchmarkAcquireRelease(b *testing.B) {
	for _, n := range []int{100, 10_000} {
		for _, par := range []int{1, 16} {
			b.Run(fmt.Sprintf("pool=%d/concurrency=%d", n, par), func(b *testing.B) {
				url := benchServer(b, n)
				hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
				defer hc.CloseIdleConnections()
				var seq atomic.Int64
				cycle := func() error {
					body := fmt.Sprintf(`{"type":"t","owner":"bench","requestId":"r-%d"}`, seq.Add(1))
					var got api.LeaseResponse
					if err := post(hc, url+"/v1/leases", body, &got); err != nil {
						return err
					}
					return post(hc, url+"/v1/leases/"+got.Lease.ID+"/release", `{"to":"free"}`, nil)
				}
				if par == 1 {
					for b.Loop() {
						if err := cycle(); err != nil {
							b.Fatal(err)
						}
					}
					return
				}
				b.SetParallelism(max(1, par/runtime.GOMAXPROCS(0)))
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := cycle(); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		}
	}
}

func benchServer(b *testing.B, n int) string {
	b.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "berth.db"), sqlite.Options{})
	if err != nil {
		b.Fatal(err)
	}
	specs := make([]store.ResourceSpec, n)
	for i := range specs {
		specs[i] = store.ResourceSpec{Name: fmt.Sprintf("r-%d", i)}
	}
	eng := lease.New(lease.Options{Store: st})
	if _, err := eng.SyncPools(ctx, []lease.Pool{{Type: "t", LeaseTTL: time.Hour, Resources: specs}}, "bench"); err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(api.New(api.Options{Engine: eng}))
	b.Cleanup(func() {
		srv.Close()
		st.Close()
	})
	return srv.URL
}

func post(hc *http.Client, url, body string, out any) error {
	res, err := hc.Post(url, "application/json", bytes.NewBufferString(body))
	if err != nil {
		return err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return err
	}
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %d %s", url, res.StatusCode, b)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}
