package client_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/client"
	"github.com/berth-ci/berth/internal/api"
	"github.com/berth-ci/berth/internal/lease"
	"github.com/berth-ci/berth/internal/store"
	"github.com/berth-ci/berth/internal/store/sqlite"
)

// startBroker runs a throw-away berth server in-process with one pool,
// "vm", of one resource, and returns its URL. maxPoll (if not 0) caps how
// long the server holds a waiting acquire before it reports the position.
func startBroker(maxPoll time.Duration) (url string, stop func()) {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "berth-example-")
	if err != nil {
		panic(err)
	}
	st, err := sqlite.Open(ctx, filepath.Join(dir, "berth.db"), sqlite.Options{})
	if err != nil {
		panic(err)
	}
	eng := lease.New(lease.Options{Store: st, MaxPoll: maxPoll})
	pools := []lease.Pool{{Type: "vm", LeaseTTL: time.Minute, Resources: []store.ResourceSpec{
		{Name: "vm-1", UserData: map[string]string{"ip": "10.0.0.1"}},
	}}}
	if _, err := eng.SyncPools(ctx, pools, "example"); err != nil {
		panic(err)
	}
	srv := httptest.NewServer(api.New(api.Options{Engine: eng}))
	return srv.URL, func() {
		srv.Close()
		st.Close()
		os.RemoveAll(dir)
	}
}

// Hold a resource while a job uses it: the lease is kept alive in the
// background and released by Close.
func Example() {
	server, stop := startBroker(0)
	defer stop()
	ctx := context.Background()

	c, err := client.New(client.Options{Servers: []string{server}})
	if err != nil {
		panic(err)
	}
	defer c.CloseIdleConnections()

	h, err := c.Hold(ctx, client.AcquireParams{Type: "vm", Owner: "job-1234", Wait: time.Minute}, client.HoldOptions{})
	if err != nil {
		panic(err)
	}
	fmt.Println("holding", h.Resource().Name, "at", h.Resource().UserData["ip"])

	// Run the job here; stop it if the lease is lost.
	select {
	case err := <-h.Lost():
		fmt.Println("lost the resource, not a test failure:", err)
	default:
	}

	if err := h.Close(ctx); err != nil {
		panic(err)
	}
	fmt.Println("lease", h.Lease().Status)
	// Output:
	// holding vm-1 at 10.0.0.1
	// lease released
}

func ExampleNew() {
	_, err := client.New(client.Options{Servers: []string{"localhost:7420"}})
	fmt.Println(err)
	// Output:
	// Servers[0]: "localhost:7420" has scheme "localhost", not http or https; want a URL such as "http://127.0.0.1:7420"
}

func ExampleClient_Acquire() {
	server, stop := startBroker(0)
	defer stop()
	ctx := context.Background()
	c, err := client.New(client.Options{Servers: []string{server}})
	if err != nil {
		panic(err)
	}
	defer c.CloseIdleConnections()

	a, err := c.Acquire(ctx, client.AcquireParams{Type: "vm", Owner: "job-1"})
	if err != nil {
		panic(err)
	}
	fmt.Println(a.Lease.Owner, "leased", a.Resource.Name)
	// Keep the lease alive with c.Heartbeat more often than its TTL.
	fmt.Println("heartbeat at least every", a.Lease.TTL)

	rel, err := c.Release(ctx, a.Lease.ID, client.ReleaseParams{To: berth.ReleaseFree})
	if err != nil {
		panic(err)
	}
	fmt.Println(rel.Resource.Name, "is", rel.Resource.State)
	// Output:
	// job-1 leased vm-1
	// heartbeat at least every 1m0s
	// vm-1 is free
}

// Without Wait, an acquire fails at once when nothing is free.
func ExampleClient_Acquire_exhausted() {
	server, stop := startBroker(0)
	defer stop()
	ctx := context.Background()
	c, err := client.New(client.Options{Servers: []string{server}})
	if err != nil {
		panic(err)
	}
	defer c.CloseIdleConnections()

	if _, err := c.Acquire(ctx, client.AcquireParams{Type: "vm", Owner: "job-1"}); err != nil {
		panic(err)
	}
	_, err = c.Acquire(ctx, client.AcquireParams{Type: "vm", Owner: "job-2"})
	switch berth.ErrorCodeOf(err) {
	case berth.EExhausted:
		fmt.Println("nothing free; try again later")
	case "":
		fmt.Println("leased")
	default:
		fmt.Println("error:", err)
	}
	// Output:
	// nothing free; try again later
}

// With Wait, an acquire queues and is handed the resource the moment it is
// released.
func ExampleClient_Acquire_wait() {
	server, stop := startBroker(50 * time.Millisecond) // report the position often
	defer stop()
	ctx := context.Background()
	c, err := client.New(client.Options{Servers: []string{server}})
	if err != nil {
		panic(err)
	}
	defer c.CloseIdleConnections()

	first, err := c.Acquire(ctx, client.AcquireParams{Type: "vm", Owner: "job-1"})
	if err != nil {
		panic(err)
	}
	var once sync.Once
	second, err := c.Acquire(ctx, client.AcquireParams{
		Type: "vm", Owner: "job-2", Wait: time.Minute,
		OnQueued: func(r *berth.Request) {
			once.Do(func() {
				fmt.Println("job-2 waits at position", r.Position)
				// job-1 finishes meanwhile.
				if _, err := c.Release(ctx, first.Lease.ID, client.ReleaseParams{To: berth.ReleaseFree}); err != nil {
					panic(err)
				}
			})
		},
	})
	if err != nil {
		panic(err)
	}
	fmt.Println(second.Lease.Owner, "leased", second.Resource.Name)
	// Output:
	// job-2 waits at position 1
	// job-2 leased vm-1
}

func ExampleClient_Pools() {
	server, stop := startBroker(0)
	defer stop()
	c, err := client.New(client.Options{Servers: []string{server}})
	if err != nil {
		panic(err)
	}
	defer c.CloseIdleConnections()

	pools, err := c.Pools(context.Background())
	if err != nil {
		panic(err)
	}
	for _, p := range pools {
		fmt.Printf("%s: %d of %d free, lease TTL %s\n", p.Type, p.States[berth.StateFree], p.Total, p.LeaseTTL)
	}
	// Output:
	// vm: 1 of 1 free, lease TTL 1m0s
}
