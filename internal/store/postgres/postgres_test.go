package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"go.uber.org/goleak"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/store"
	"github.com/berth-ci/berth/internal/store/postgres"
	"github.com/berth-ci/berth/internal/store/postgres/pgtest"
	"github.com/berth-ci/berth/internal/store/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return pgtest.Open(t) })
}

func TestUpgradeFromFirstSchema(t *testing.T) {
	ctx := context.Background()
	url, schema := pgtest.URL(t), pgtest.Schema(t)
	old, err := postgres.OpenUpTo(ctx, url, schema, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile("testdata/v1-data.sql")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "SET search_path TO "+schema+";\n"+string(data)); err != nil {
		t.Fatalf("load the version 1 data: %v", err)
	}
	snapshot, err := os.ReadFile("testdata/v1-snapshot.json")
	if err != nil {
		t.Fatal(err)
	}
	storetest.Upgrade(t, snapshot, func(t *testing.T) store.Store {
		s, err := postgres.Open(ctx, url, postgres.Options{Schema: schema})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}, postgres.SchemaVersion())
}

// eventually waits, up to 30 s, until cond holds; it polls, since what it
// waits for happens inside PostgreSQL, which sends no word of it.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// lockWaits counts the sessions named app (running query, if not "")
// that wait for a lock.
func lockWaits(t *testing.T, conn *pgx.Conn, app, query string) int {
	t.Helper()
	var n int
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
		WHERE application_name = $1 AND ($2 = '' OR query = $2) AND wait_event_type = 'Lock'`, app, query).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// openFresh opens a store in a new schema of its own, closed when t ends.
func openFresh(t *testing.T) (s *postgres.Store, url, schema string) {
	t.Helper()
	url, schema = pgtest.URL(t), pgtest.Schema(t)
	s, err := postgres.Open(context.Background(), url, postgres.Options{Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, url, schema
}

// TestNewerSchema: a database that a newer berth migrated further makes a
// running replica unready, and this binary refuses to open it.
func TestNewerSchema(t *testing.T) {
	ctx := context.Background()
	s, url, schema := openFresh(t)
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("ping of a current schema: %v", err)
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "INSERT INTO "+schema+".berth_migrations (version, name, applied_at) VALUES (999, 'future', 0)"); err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(ctx); err == nil || !strings.Contains(err.Error(), "version 999") {
		t.Fatalf("ping of a newer schema: %v; want an error naming version 999", err)
	}
	_, err = postgres.Open(ctx, url, postgres.Options{Schema: schema})
	var tooNew *postgres.SchemaTooNewError
	if !errors.As(err, &tooNew) || tooNew.Have != 999 || tooNew.Know != postgres.SchemaVersion() {
		t.Fatalf("open of a newer schema: %v; want SchemaTooNewError{999, %d}", err, postgres.SchemaVersion())
	}
}

// TestTidyVacuumsWhereDue: Tidy vacuums resources once a thousand rows
// changed, again after the server's statistics were reset, and leases, in
// the background, once a tenth of it changed; nothing that is not due.
func TestTidyVacuumsWhereDue(t *testing.T) {
	ctx := context.Background()
	s, url, schema := openFresh(t)
	var specs []store.ResourceSpec
	for i := range 10 {
		specs = append(specs, store.ResourceSpec{Name: fmt.Sprintf("r-%d", i)})
	}
	if _, err := s.PoolSync(ctx, &store.PoolSyncParams{Pools: []store.PoolPolicy{{Type: "t", LeaseTTL: time.Minute, Janitor: "none", Resources: specs}}, Now: time.Now(), Actor: "test"}); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	vacuums := func(table string) int64 {
		t.Helper()
		var n int64
		if err := conn.QueryRow(ctx, "SELECT vacuum_count FROM pg_stat_user_tables WHERE relid = $1::regclass", schema+"."+table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	// change runs stmt (which changes rows of a table) n times and has
	// the statistics say so now, not at the server's next flush.
	change := func(n int, stmt string) {
		t.Helper()
		for range n {
			if _, err := conn.Exec(ctx, stmt); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := conn.Exec(ctx, "SELECT pg_stat_force_next_flush()"); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, "SELECT 1"); err != nil {
			t.Fatal(err)
		}
	}
	tidy := func() {
		t.Helper()
		if err := s.Tidy(ctx); err != nil {
			t.Fatal(err)
		}
	}
	touchResources := "UPDATE " + schema + ".resources SET state_reason = state_reason" // 10 rows

	// The first Tidy knows no counts yet: it vacuums resources to find
	// out, and starts counting leases' changes.
	tidy()
	if n := vacuums("resources"); n != 1 {
		t.Fatalf("first tidy vacuumed resources %d times; want once", n)
	}
	change(50, touchResources)
	tidy()
	if n := vacuums("resources"); n != 1 {
		t.Fatalf("resources vacuumed again after 500 changes; want only after 1,000")
	}
	change(60, touchResources)
	tidy()
	if n := vacuums("resources"); n != 2 {
		t.Fatalf("resources vacuumed %d times after 1,100 changes; want twice in all", n)
	}
	// A reset sets the counts back; Tidy must not wait for them to pass
	// the old ones.
	if _, err := conn.Exec(ctx, "SELECT pg_stat_reset_single_table_counters($1::regclass)", schema+".resources"); err != nil {
		t.Fatal(err)
	}
	change(5, touchResources)
	tidy()
	if n := vacuums("resources"); n != 1 {
		t.Fatalf("resources vacuumed %d times since the statistics reset; want once", n)
	}

	// resource_probes, which every unchanged probe result updates.
	if _, err := conn.Exec(ctx, "INSERT INTO "+schema+".resource_probes (name, status, reason, probe_time, message) "+
		"SELECT name, 'Connected', '', 0, '' FROM "+schema+".resources"); err != nil {
		t.Fatal(err)
	}
	before := vacuums("resource_probes")
	change(110, "UPDATE "+schema+".resource_probes SET probe_time = probe_time + 1") // 1,100 changes
	tidy()
	if n := vacuums("resource_probes"); n != before+1 {
		t.Fatalf("resource_probes vacuumed %d times after 1,100 changes (%d before); want once more", n, before)
	}

	if n := vacuums("leases"); n != 0 {
		t.Fatalf("leases vacuumed %d times, not due; want none", n)
	}
	if _, err := conn.Exec(ctx, "INSERT INTO "+schema+".leases (id, resource, type, owner, ttl, acquired_at, expires_at, ended_at) "+
		"SELECT 'l-' || g, 'gone-' || g, 't', 'o', 1, 0, 1, 1 FROM generate_series(1, 200) g"); err != nil {
		t.Fatal(err)
	}
	change(50, "UPDATE "+schema+".leases SET end_reason = end_reason") // 10,000 changes
	// Another program holds leases so that its vacuum waits: the long
	// vacuum must not hold back the event feed meanwhile.
	blocker, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer blocker.Close(ctx)
	btx, err := blocker.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := btx.Exec(ctx, "LOCK TABLE "+schema+".leases IN SHARE UPDATE EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	tidy()
	eventually(t, "the vacuum of leases to wait for the lock", func() bool {
		return lockWaits(t, conn, "berth maintenance "+schema, "VACUUM leases") > 0
	})
	newest, err := s.EventList(ctx, &store.EventListParams{Desc: true, Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.LeaseAcquire(ctx, &store.LeaseAcquireParams{Type: "t", Owner: "job", LeaseTTL: time.Minute, Now: time.Now(), Actor: "job"})
	if err != nil || res.Lease == nil {
		t.Fatalf("acquire = %+v, %v", res, err)
	}
	if evs, err := s.EventList(ctx, &store.EventListParams{AfterID: newest[0].ID}); err != nil || len(evs) != 1 {
		t.Fatalf("events while a vacuum runs = %v, %v; want the acquire's", evs, err)
	}
	if err := btx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, "leases to be vacuumed after 10,000 changes", func() bool { return vacuums("leases") == 1 })
}

// TestEventsWaitForRunningTransactions: an event committed while another
// replica's transaction that drew a smaller id still runs is not listed
// (a reader paging by id would skip the smaller one for good) until that
// transaction commits or rolls back.
func TestEventsWaitForRunningTransactions(t *testing.T) {
	ctx := context.Background()
	url, schema := pgtest.URL(t), pgtest.Schema(t)
	// Replicas may be started with names of their own (a URL parameter,
	// PGAPPNAME): berth names its connections itself regardless.
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	s, err := postgres.Open(ctx, url+sep+"application_name=pod-a", postgres.Options{Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.PoolSync(ctx, &store.PoolSyncParams{Pools: []store.PoolPolicy{{Type: "t", LeaseTTL: time.Minute, Janitor: "none",
		Resources: []store.ResourceSpec{{Name: "r-1"}}}}, Now: time.Now(), Actor: "test"}); err != nil {
		t.Fatal(err)
	}
	// other is another replica of the same deployment.
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["search_path"] = schema
	cfg.RuntimeParams["application_name"] = "berth " + schema
	other, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(ctx)
	ids := func(after int64) []int64 {
		t.Helper()
		evs, err := s.EventList(ctx, &store.EventListParams{AfterID: after})
		if err != nil {
			t.Fatal(err)
		}
		var out []int64
		for _, e := range evs {
			out = append(out, e.ID)
		}
		return out
	}
	for _, end := range []string{"COMMIT", "ROLLBACK"} {
		tx, err := other.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var early int64
		if err := tx.QueryRow(ctx, "INSERT INTO events (time, kind, message) VALUES (0, 'test', 'early') RETURNING id").Scan(&early); err != nil {
			t.Fatal(err)
		}
		res, err := s.LeaseAcquire(ctx, &store.LeaseAcquireParams{Type: "t", Owner: "job", LeaseTTL: time.Minute, Now: time.Now(), Actor: "job"})
		if err != nil || res.Lease == nil {
			t.Fatalf("acquire = %+v, %v", res, err)
		}
		if got := ids(early - 1); len(got) != 0 {
			t.Fatalf("%s case: events %v listed while event %d's transaction runs; want none yet", end, got, early)
		}
		if _, err := tx.Exec(ctx, end); err != nil {
			t.Fatal(err)
		}
		got := ids(early - 1)
		want := 2
		if end == "ROLLBACK" {
			want = 1
		}
		if len(got) != want || end == "COMMIT" && got[0] != early {
			t.Fatalf("after %s: events %v; want %d, from %d", end, got, want, early)
		}
		if _, err := s.LeaseRelease(ctx, &store.LeaseReleaseParams{ID: res.Lease.ID, To: "free", Now: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSyncActsOnWhatItLocked: a pool sync that removes a resource waits for
// an acquire or release of it that is under way, and acts on the outcome:
// a resource leased meanwhile retires (it is not deleted under its lease),
// one released meanwhile is deleted (it does not stay, free and retiring,
// for good). Found by the second independent review of issue 3.
func TestSyncActsOnWhatItLocked(t *testing.T) {
	for _, c := range []struct {
		name   string
		before func(t *testing.T, s *postgres.Store)
		writes []string
		check  func(t *testing.T, s *postgres.Store)
	}{{
		name: "acquire",
		writes: []string{
			"UPDATE resources SET state = 'busy', owner = 'job', lease_id = 'L1' WHERE name = 'r-2'",
			"INSERT INTO leases (id, resource, type, owner, ttl, acquired_at, expires_at) VALUES ('L1', 'r-2', 't', 'job', 60000000000, 0, 9000000000000000000)",
		},
		check: func(t *testing.T, s *postgres.Store) {
			r, err := s.ResourceGet(context.Background(), "r-2")
			if err != nil || !r.Retiring || r.LeaseID != "L1" {
				t.Fatalf("r-2 = %+v, %v; want it retiring under lease L1", r, err)
			}
		},
	}, {
		name: "release",
		before: func(t *testing.T, s *postgres.Store) {
			res, err := s.LeaseAcquire(context.Background(), &store.LeaseAcquireParams{Type: "t", Owner: "job", LeaseTTL: time.Minute, Now: time.Now(),
				Actor: "job", Selector: map[string]string{"n": "2"}})
			if err != nil || res.Lease == nil {
				t.Fatalf("acquire r-2 = %+v, %v", res, err)
			}
		},
		writes: []string{
			"UPDATE leases SET ended_at = 1, end_reason = 'released' WHERE resource = 'r-2' AND ended_at IS NULL",
			"UPDATE resources SET state = 'free', owner = '', lease_id = NULL WHERE name = 'r-2'",
		},
		check: func(t *testing.T, s *postgres.Store) {
			if r, err := s.ResourceGet(context.Background(), "r-2"); err == nil {
				t.Fatalf("r-2 = %+v; want it removed, free when the sync went on", r)
			}
		},
	}} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			s, url, schema := openFresh(t)
			specs := []store.ResourceSpec{{Name: "r-1", Labels: map[string]string{"n": "1"}}, {Name: "r-2", Labels: map[string]string{"n": "2"}}}
			if _, err := s.PoolSync(ctx, &store.PoolSyncParams{Pools: []store.PoolPolicy{{Type: "t", LeaseTTL: time.Minute, Janitor: "none", Resources: specs}},
				Now: time.Now(), Actor: "test"}); err != nil {
				t.Fatal(err)
			}
			if c.before != nil {
				c.before(t, s)
			}
			// Another replica's acquire or release of r-2, its writes done
			// and not committed yet.
			cfg, err := pgx.ParseConfig(url)
			if err != nil {
				t.Fatal(err)
			}
			cfg.RuntimeParams["search_path"] = schema
			other, err := pgx.ConnectConfig(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer other.Close(ctx)
			tx, err := other.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range c.writes {
				if _, err := tx.Exec(ctx, w); err != nil {
					t.Fatal(err)
				}
			}
			done := make(chan error, 1)
			go func() {
				_, err := s.PoolSync(ctx, &store.PoolSyncParams{Pools: []store.PoolPolicy{{Type: "t", LeaseTTL: time.Minute, Janitor: "none",
					Resources: specs[:1]}}, Now: time.Now(), Actor: "test"})
				done <- err
			}()
			// The sync waits for r-2's row.
			eventually(t, "the sync to wait for r-2's row", func() bool { return lockWaits(t, other, "berth "+schema, "") > 0 })
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			c.check(t, s)
		})
	}
}

// TestSyncUnderLoad: pool syncs, which lock every resource row, run while
// sixteen callers acquire and release, whose calls group commit batches
// into shared transactions. The two can meet in a deadlock; PostgreSQL
// aborts one side, which runs again: no sync and no call fails (the third
// review saw 4 of 20 syncs fail before the retry).
func TestSyncUnderLoad(t *testing.T) {
	ctx := context.Background()
	s, _, _ := openFresh(t)
	var specs []store.ResourceSpec
	for i := range 50 {
		specs = append(specs, store.ResourceSpec{Name: fmt.Sprintf("r-%02d", i)})
	}
	pools := []store.PoolPolicy{{Type: "t", LeaseTTL: time.Minute, Janitor: "none", Resources: specs}}
	if _, err := s.PoolSync(ctx, &store.PoolSyncParams{Pools: pools, Now: time.Now(), Actor: "test"}); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	errs := make(chan error, 16)
	for c := range 16 {
		go func() {
			errs <- func() error {
				for {
					select {
					case <-stop:
						return nil
					default:
					}
					res, err := s.LeaseAcquire(ctx, &store.LeaseAcquireParams{Type: "t", Owner: fmt.Sprint("job", c), LeaseTTL: time.Minute, Now: time.Now(), Actor: "job"})
					if err != nil {
						return fmt.Errorf("acquire: %w", err)
					}
					if res.Lease == nil {
						continue
					}
					if _, err := s.LeaseRelease(ctx, &store.LeaseReleaseParams{ID: res.Lease.ID, To: berth.StateFree, Now: time.Now(), Actor: "job"}); err != nil {
						return fmt.Errorf("release: %w", err)
					}
				}
			}()
		}()
	}
	var syncErr error
	for range 20 {
		if _, err := s.PoolSync(ctx, &store.PoolSyncParams{Pools: pools, Now: time.Now(), Actor: "test"}); err != nil {
			syncErr = err
			break
		}
	}
	close(stop)
	for range 16 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if syncErr != nil {
		t.Fatalf("sync under load: %v", syncErr)
	}
	if err := s.Check(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestProbeRowOfAnOlderStatusIsIgnored: an unchanged probe result is
// written without locking the resource, from a read made before a change
// of health that commits just after it. The probe row it leaves then
// describes the status before the change, and readers must not take its
// message and time for the resource's.
func TestProbeRowOfAnOlderStatusIsIgnored(t *testing.T) {
	s, url, schema := openFresh(t)
	ctx := context.Background()
	t0 := time.Unix(1700000000, 0)
	pol := store.PoolPolicy{Type: "cluster", LeaseTTL: time.Hour, Janitor: "none", Probe: "tcp", RequireConnected: true, ProbeHash: "h",
		Resources: []store.ResourceSpec{{Name: "c1"}}}
	if _, err := s.PoolSync(ctx, &store.PoolSyncParams{Pools: []store.PoolPolicy{pol}, Now: t0, Actor: "t"}); err != nil {
		t.Fatal(err)
	}
	up := func(st berth.HealthStatus, reason, msg string, now time.Time) error {
		_, err := s.ResourceHealth(ctx, &store.ResourceHealthParams{Now: now, Actor: "prober", Updates: []store.HealthUpdate{
			{Name: "c1", Type: "cluster", Status: st, Reason: reason, Message: msg, LeaseTTL: time.Hour, ProbeHash: "h"}}})
		return err
	}
	if err := up(berth.HealthConnected, "", "first", t0.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := up(berth.HealthConnected, "", "side", t0.Add(2*time.Second)); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// A change of health as recordChanges writes it, held open.
	for _, q := range []string{
		"SET LOCAL search_path = " + pgx.Identifier{schema}.Sanitize(),
		"SELECT 1 FROM resources WHERE name = 'c1' FOR UPDATE",
		"UPDATE resources SET health_status = 'Disconnected', health_reason = 'ConnectionRefused', health_message = 'down' WHERE name = 'c1'",
		"DELETE FROM resource_probes WHERE name = 'c1'",
	} {
		if _, err := tx.Exec(ctx, q); err != nil {
			t.Fatal(q, err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- up(berth.HealthConnected, "", "STALE", t0.Add(3*time.Second)) }()
	watch, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close(ctx)
	eventually(t, "the probe write to wait for the change's lock", func() bool { return lockWaits(t, watch, "berth "+schema, "") > 0 })
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	r, err := s.ResourceGet(ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	if r.Health.Status != berth.HealthDisconnected || r.Health.Message != "down" {
		t.Fatalf("health after the change: %+v; want Disconnected with the change's message, not the older probe's", r.Health)
	}
}
