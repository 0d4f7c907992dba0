package boskosclient

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"sigs.k8s.io/boskos/common"
)

// boskosPoll is how often the Boskos client's AcquireWait polls.
const boskosPoll = 3 * time.Second

// BenchmarkHandoff measures, on one pool of one resource (solo), the time
// from a release to the waiting job holding the resource: a waiter using
// the Boskos client (AcquireWait: a poll every 3 s with its request id)
// against one using berth's own API (one long poll). Each iteration: a
// holder takes the resource, the waiter starts and is queued, the holder
// releases it (for the Boskos client, at moments spread evenly over its
// poll interval), and the clock runs until the waiter has it. It reports
// the mean in ms/handoff.
//
//	go test -run '^$' -bench Handoff -benchtime 20x ./...
func BenchmarkHandoff(b *testing.B) {
	s := serve(b)
	holder := newClient(b, s, "holder")
	b.Run("boskos-client", func(b *testing.B) {
		waiter := newClient(b, s, "waiter")
		var total time.Duration
		for i := range b.N {
			if _, err := holder.Acquire("solo", common.Free, common.Busy); err != nil {
				b.Fatal(err)
			}
			got := make(chan time.Time, 1)
			go func() {
				if _, err := waiter.AcquireWait(context.Background(), "solo", common.Free, common.Busy); err != nil {
					b.Error(err)
				}
				got <- time.Now()
			}()
			eventually(b, "the waiter is queued", func() bool { return waiters(b, s, "solo") == 1 })
			// A job releases at any moment of the waiter's 3 s between
			// polls: the releases are spread evenly over it (a model of
			// when releases come, not a wait for anything).
			time.Sleep(time.Duration(i) * boskosPoll / time.Duration(b.N))
			start := time.Now()
			if err := holder.ReleaseOne("solo-1", common.Free); err != nil {
				b.Fatal(err)
			}
			total += (<-got).Sub(start)
			if err := waiter.ReleaseOne("solo-1", common.Free); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "ms/handoff")
	})
	b.Run("native-long-poll", func(b *testing.B) {
		var total time.Duration
		for range b.N {
			held, err := nativeAcquire(s.URL, "holder", 0)
			if err != nil {
				b.Fatal(err)
			}
			type result struct {
				id string
				at time.Time
			}
			got := make(chan result, 1)
			go func() {
				id, err := nativeAcquire(s.URL, "waiter", time.Minute)
				if err != nil {
					b.Error(err)
				}
				got <- result{id, time.Now()}
			}()
			eventually(b, "the waiter is queued", func() bool { return waiters(b, s, "solo") == 1 })
			start := time.Now()
			if err := nativeRelease(s.URL, held); err != nil {
				b.Fatal(err)
			}
			r := <-got
			total += r.at.Sub(start)
			if err := nativeRelease(s.URL, r.id); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "ms/handoff")
	})
}

// nativeAcquire is berth's own acquire, with a long poll of up to wait.
func nativeAcquire(url, owner string, wait time.Duration) (string, error) {
	req := map[string]string{"type": "solo", "owner": owner}
	if wait > 0 {
		req["wait"] = wait.String()
	}
	body, err := json.Marshal(req)
	if err != nil {
		return "", err
	}
	resp, err := http.Post(url+"/v1/leases", "application/json", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var out struct{ Lease struct{ ID string } }
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return "", err
	}
	if out.Lease.ID == "" {
		return "", fmt.Errorf("acquire: status %d, no lease", resp.StatusCode)
	}
	return out.Lease.ID, nil
}

func nativeRelease(url, id string) error {
	resp, err := http.Post(url+"/v1/leases/"+id+"/release", "application/json", bytes.NewReader([]byte(`{"to": "free"}`)))
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("release: status %d", resp.StatusCode)
	}
	return nil
}
