package probe

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/store"
	"github.com/berth-ci/berth/internal/store/postgres/pgtest"
	"github.com/berth-ci/berth/internal/store/sqlite"
)

// BenchmarkProber10k probes 10,000 resources over TCP at a 10 s interval
// (real listeners: 100 of them, on 127.0.0.1 to 127.0.0.100, 100
// resources each), with results written to a real SQLite store, and
// reports the CPU the test process used per second of wall time (the
// prober and the store; the listeners run in a child process, since
// accepting connections is the probed resources' work, not berth's) and
// the oldest lastProbeTime seen. It runs for a fixed time,
// not b.N iterations:
//
//	go test -run '^$' -bench Prober10k -benchtime 1x ./internal/probe/
//
// BERTH_PROBE_BENCH_RESOURCES and BERTH_PROBE_BENCH_SECONDS (default 60,
// after a warm-up of one interval) change the size and the length;
// BERTH_PROBE_BENCH_STORE=postgres uses a PostgreSQL store (a fresh schema
// of BERTH_TEST_POSTGRES) instead of SQLite. It also reports how long the
// 10,000 new resources took to be all Connected.
func BenchmarkProber10k(b *testing.B) {
	n := envInt(b, "BERTH_PROBE_BENCH_RESOURCES", 10_000)
	seconds := envInt(b, "BERTH_PROBE_BENCH_SECONDS", 60)
	const interval = 10 * time.Second
	ctx := context.Background()

	addrs := startListeners(b)
	var (
		st     store.Store
		dbPath string
	)
	if os.Getenv("BERTH_PROBE_BENCH_STORE") == "postgres" {
		st = pgtest.Open(b) // a fresh schema of BERTH_TEST_POSTGRES
	} else {
		dbPath = filepath.Join(b.TempDir(), "berth.db")
		sq, err := sqlite.Open(ctx, dbPath, sqlite.Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { sq.Close() })
		st = sq
	}
	spec := Spec{TCP: &TCPSpec{Address: "{{.UserData.addr}}"}}
	specs := make([]store.ResourceSpec, n)
	for i := range specs {
		specs[i] = store.ResourceSpec{Name: "r" + strconv.Itoa(i+1), UserData: map[string]string{"addr": addrs[i%len(addrs)]}}
	}
	if _, err := st.PoolSync(ctx, &store.PoolSyncParams{Now: time.Now(), Actor: "bench", Pools: []store.PoolPolicy{{
		Type: "tcp", LeaseTTL: time.Minute, Janitor: "none", Probe: "tcp", RequireConnected: true, ProbeHash: spec.Hash(), Resources: specs}}}); err != nil {
		b.Fatal(err)
	}
	// Warnings (a failed write) go to stderr: a benchmark that hides them
	// measures nothing.
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	p, err := New(Options{Store: st, Logger: logger, Pools: []Pool{{Type: "tcp", Spec: spec,
		Interval: interval, Jitter: DefaultJitter, LeaseTTL: time.Minute}}})
	if err != nil {
		b.Fatal(err)
	}
	started := time.Now()
	pctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = p.Run(pctx)
	}()
	tidied := make(chan struct{})
	go func() {
		// PostgreSQL: the housekeeping the leader does beside the
		// prober (a vacuum of the probe table as it fills with dead rows).
		defer close(tidied)
		lead, ok := st.(store.Leadership)
		if !ok {
			return
		}
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-pctx.Done():
				return
			case <-tick.C:
				if err := lead.Tidy(pctx); err != nil && pctx.Err() == nil {
					logger.Warn("tidy failed", "err", err)
				}
			}
		}
	}()
	defer func() {
		stop()
		<-done
		<-tidied
	}()

	var db *sql.DB
	if dbPath != "" {
		if db, err = sql.Open("sqlite", "file:"+dbPath+"?mode=ro"); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { db.Close() })
	}
	// oldest is the age of the least recently probed resource: with
	// SQLite read with one query on a connection of its own (reading every
	// resource through the store would cost more than the probing
	// measured); with PostgreSQL, whose work is in another process, read
	// through the store.
	oldest := func() time.Duration {
		if dbPath == "" {
			rs, err := st.ResourceList(ctx, &store.ResourceListParams{Type: "tcp"})
			if err != nil {
				b.Fatal(err)
			}
			now, worst := time.Now(), time.Duration(0)
			for _, r := range rs {
				if r.Health.LastProbeTime == nil {
					return time.Duration(1<<63 - 1)
				}
				worst = max(worst, now.Sub(*r.Health.LastProbeTime))
			}
			return worst
		}
		var never int
		var least sql.NullInt64
		if err := db.QueryRow("SELECT count(*) - count(health_probe_time), min(health_probe_time) FROM resources").Scan(&never, &least); err != nil {
			b.Fatal(err)
		}
		if never > 0 || !least.Valid {
			return time.Duration(1<<63 - 1)
		}
		return time.Since(time.Unix(0, least.Int64))
	}
	// How long until every resource is Connected: nothing of a pool that
	// requires it can be leased before.
	for {
		ps, err := st.PoolList(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if len(ps) == 1 && ps[0].Health[berth.HealthConnected] == n {
			break
		}
		if time.Since(started) > 2*time.Minute {
			b.Fatalf("not every resource Connected after 2 minutes: %v", ps[0].Health)
		}
		time.Sleep(50 * time.Millisecond) // a measurement's sampling, not a wait for a result
	}
	allConnected := time.Since(started)
	warm := time.NewTimer(interval + 2*time.Second)
	<-warm.C
	b.ResetTimer()
	cpu0, wall0 := cpuTime(b), time.Now()
	var worst time.Duration
	tick := time.NewTicker(interval / 2)
	defer tick.Stop()
	for end := time.After(time.Duration(seconds) * time.Second); ; {
		select {
		case <-tick.C:
			worst = max(worst, oldest())
			continue
		case <-end:
		}
		break
	}
	cpu, wall := cpuTime(b)-cpu0, time.Since(wall0)
	b.StopTimer()
	worst = max(worst, oldest())
	b.ReportMetric(100*cpu.Seconds()/wall.Seconds(), "%cpu")
	b.ReportMetric(worst.Seconds(), "s-oldest-probe")
	b.ReportMetric(float64(n)/interval.Seconds(), "probes/s")
	b.ReportMetric(allConnected.Seconds(), "s-all-connected")
	if worst > 2*interval {
		b.Errorf("a resource went %s without a probe; the bound is two intervals (%s)", worst, 2*interval)
	}
}

// cpuTime is the CPU time (user and system) this process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func envInt(b *testing.B, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		b.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}

// startListeners runs TestScaleListeners in a child process and returns
// the addresses it listens on.
func startListeners(b *testing.B) []string {
	cmd := exec.Command(os.Args[0], "-test.run=^TestScaleListeners$")
	cmd.Env = append(os.Environ(), "BERTH_PROBE_BENCH_LISTEN=1")
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		in.Close() // the child's signal to stop
		_ = cmd.Wait()
	})
	var addrs []string
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		if line == "ready" {
			return addrs
		}
		if a, ok := strings.CutPrefix(line, "listening "); ok {
			addrs = append(addrs, a)
		}
	}
	b.Fatalf("the listener process ended before it was ready: %v", sc.Err())
	return nil
}

// TestScaleListeners is BenchmarkProber10k's child process: 100 listeners
// on 127.0.0.1 to 127.0.0.100 that accept and close every connection,
// until stdin closes. Without BERTH_PROBE_BENCH_LISTEN it does nothing.
func TestScaleListeners(t *testing.T) {
	if os.Getenv("BERTH_PROBE_BENCH_LISTEN") != "1" {
		t.Skip("the child process of BenchmarkProber10k")
	}
	var wg sync.WaitGroup
	var lns []net.Listener
	for i := range 100 {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.%d:0", i+1))
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		wg.Go(func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		})
		fmt.Println("listening", ln.Addr())
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	for _, ln := range lns {
		ln.Close()
	}
	wg.Wait()
}
