package server_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"go.uber.org/goleak"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/client"
	"github.com/berth-ci/berth/internal/config"
	"github.com/berth-ci/berth/internal/server"
	"github.com/berth-ci/berth/internal/store/postgres/pgtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// instance is one run of server.Run in this process.
type instance struct {
	URL  string
	stop func() error
}

// start runs server.Run with opts until stop, and returns once it
// listens.
func start(t *testing.T, opts server.Options) *instance {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan net.Addr, 1)
	opts.Listen = "127.0.0.1:0"
	opts.OnListening = func(a net.Addr) { addr <- a }
	done := make(chan error, 1)
	go func() { done <- server.Run(ctx, opts) }()
	select {
	case a := <-addr:
		stopped := false
		in := &instance{URL: "http://" + a.String()}
		in.stop = func() error {
			if stopped {
				return nil
			}
			stopped = true
			cancel()
			return <-done
		}
		t.Cleanup(func() { _ = in.stop() })
		return in
	case err := <-done:
		cancel()
		t.Fatalf("server.Run: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("server not listening after 30s")
	}
	return nil
}

// TestOutageReapsAndCleans is issue 5's outage: berth stops with leases
// outstanding, their TTL passes while it is down (a fake clock), and at
// the restart every such resource is reaped, cleaned by the pool's
// janitor and free again, with events that explain each step. Once on
// the embedded store, once on PostgreSQL.
func TestOutageReapsAndCleans(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			outage(t, backend)
		})
	}
}

func outage(t *testing.T, backend string) {
	dir := t.TempDir()
	t.Setenv("OUTAGE_DIR", dir)
	janitor, err := filepath.Abs("testdata/clean.sh")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse([]byte(fmt.Sprintf(`pools:
  - type: vm
    leaseTTL: 1m
    resources: [vm-1, vm-2, vm-3, vm-4]
    janitor: {command: [%q], leaseTTL: 10m}
`, janitor)))
	if err != nil {
		t.Fatal(err)
	}
	clock := clockwork.NewFakeClockAt(time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC))
	opts := server.Options{Config: cfg, Clock: clock, DataDir: filepath.Join(dir, "data")}
	if backend == "postgres" {
		opts.DataDir = ""
		opts.Store = pgtest.URL(t) + "?search_path=" + pgtest.Schema(t)
		if strings.Contains(pgtest.URL(t), "?") {
			opts.Store = strings.Replace(opts.Store, "?search_path", "&search_path", 1)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	first := start(t, opts)
	c, err := client.New(client.Options{Servers: []string{first.URL}})
	if err != nil {
		t.Fatal(err)
	}
	var held []*client.Acquired
	for i := 1; i <= 3; i++ {
		a, err := c.Acquire(ctx, client.AcquireParams{Type: "vm", Owner: fmt.Sprintf("job-%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, a)
	}
	if err := first.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}

	// Down for two minutes: twice the leases' TTL.
	clock.Advance(2 * time.Minute)
	second := start(t, opts)
	c, err = client.New(client.Options{Servers: []string{second.URL}})
	if err != nil {
		t.Fatal(err)
	}
	// Wait for the janitor, woken by each event rather than by a poll.
	var after int64
	for {
		rs, err := c.Resources(ctx, client.ResourceFilter{Type: "vm", State: berth.StateFree})
		if err != nil {
			t.Fatal(err)
		}
		if len(rs) == 4 {
			break
		}
		evs, err := c.Events(ctx, client.EventFilter{After: after, Wait: time.Minute})
		if err != nil {
			t.Fatalf("waiting for the resources to be cleaned: %v", err)
		}
		if len(evs) > 0 {
			after = evs[len(evs)-1].ID
		}
	}
	for _, h := range held {
		l, err := c.Lease(ctx, h.Lease.ID)
		if err != nil || l.Status != berth.LeaseExpired {
			t.Fatalf("lease %s after the outage: %+v, %v", h.Lease.ID, l, err)
		}
		evs, err := c.Events(ctx, client.EventFilter{Resource: h.Resource.Name})
		if err != nil {
			t.Fatal(err)
		}
		var steps []string
		for _, e := range evs {
			steps = append(steps, fmt.Sprintf("%s %s→%s by %s", e.Reason, e.From, e.To, e.Actor))
		}
		want := []string{
			"added →free by config",
			"acquired free→busy by " + h.Lease.Owner,
			"expired busy→dirty by reaper",
			"cleaning dirty→cleaning by berth-janitor",
			"cleaned cleaning→free by berth-janitor",
		}
		if !slices.Equal(steps, want) {
			t.Fatalf("events of %s:\n%s\nwant\n%s", h.Resource.Name, strings.Join(steps, "\n"), strings.Join(want, "\n"))
		}
		if msg := evs[2].Message; msg != "no heartbeat from "+h.Lease.Owner+" for 1m0s" {
			t.Errorf("why %s was reaped: %q", h.Resource.Name, msg)
		}
		if out := evs[4].Output; out != "wiped "+h.Resource.Name {
			t.Errorf("janitor output on %s: %q", h.Resource.Name, out)
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "cleaned"))
	if err != nil {
		t.Fatal(err)
	}
	cleaned := strings.Fields(string(b))
	sort.Strings(cleaned)
	if want := []string{held[0].Resource.Name, held[1].Resource.Name, held[2].Resource.Name}; !slices.Equal(cleaned, sortedCopy(want)) {
		t.Fatalf("the janitor cleaned %v, want %v (each once)", cleaned, want)
	}
	if err := second.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	st, err := server.OpenStore(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Check(context.Background()); err != nil {
		t.Fatalf("store consistency after the outage: %v", err)
	}
}

func sortedCopy(s []string) []string {
	out := slices.Clone(s)
	sort.Strings(out)
	return out
}
