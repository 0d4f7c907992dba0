package postgres

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/berth-ci/berth/internal/store"
)

var _ store.Leadership = (*Store)(nil)

// leaderKey is the advisory lock whose holder leads, per schema. As SQL.
const leaderKey = "hashtextextended('berth-leader:' || current_schema(), 0)"

// appPrefix marks the leader's connection in pg_stat_activity, which is
// how Leader finds who holds the lock: the database's own word, never a
// row that a dead leader could leave behind.
const appPrefix = "berth leader "

// LeaderInterval is how often a replica that does not lead tries to, and
// how often the leader checks that its connection (and so its lock) is
// still there. A killed leader's connection closes and PostgreSQL releases
// its lock at once, so another replica leads within one interval.
const LeaderInterval = 2 * time.Second

// Lead implements store.Leadership with a session advisory lock held on a
// connection of its own.
func (s *Store) Lead(ctx context.Context, id string, fn func(ctx context.Context)) {
	for ctx.Err() == nil {
		s.leadOnce(ctx, id, fn)
		select {
		case <-ctx.Done():
		case <-time.After(LeaderInterval):
		}
	}
}

// leadOnce connects, waits until it holds the lock, runs fn until the
// connection fails or ctx ends, and returns.
func (s *Store) leadOnce(ctx context.Context, id string, fn func(ctx context.Context)) {
	cfg := s.pool.Config().ConnConfig.Copy()
	cfg.RuntimeParams["application_name"] = truncate(appPrefix+id, 63)
	// The lock lives as long as the server keeps this session. A leader
	// pings every LeaderInterval; if its pings stop arriving (the process
	// hangs, or the network drops them silently, which TCP would notice
	// only after hours), the server ends the session after
	// 3 x LeaderInterval and frees the lock for another replica.
	cfg.RuntimeParams["idle_session_timeout"] = fmt.Sprint((3 * LeaderInterval).Milliseconds())
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for {
		var got bool
		tctx, cancel := context.WithTimeout(ctx, LeaderInterval)
		err := conn.QueryRow(tctx, "SELECT pg_try_advisory_lock("+leaderKey+")").Scan(&got)
		cancel()
		if err != nil {
			return
		}
		if got {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(LeaderInterval):
		}
	}
	// The lock is ours, but the leader before may not know yet that it
	// lost it: it finds out at its next ping, at most LeaderInterval and a
	// ping's timeout from now. Wait that long, so that two replicas never
	// run the leader's loops at once (janitors and probes will rely on
	// it), then check the session is still there.
	select {
	case <-ctx.Done():
		return
	case <-time.After(2 * LeaderInterval):
	}
	if err := pingWithin(ctx, conn); err != nil {
		return
	}
	lctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { fn(lctx) })
	defer wg.Wait()
	defer cancel()
	for {
		select {
		case <-ctx.Done():
			uctx, c := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			_, _ = conn.Exec(uctx, "SELECT pg_advisory_unlock("+leaderKey+")")
			c()
			return
		case <-time.After(LeaderInterval):
		}
		// The lock lives as long as this connection: if it cannot answer,
		// stop leading; another replica may be about to.
		if err := pingWithin(ctx, conn); err != nil {
			return
		}
	}
}

// Leader implements store.Leadership: the id of the replica whose
// connection holds the leader lock now, or "" if none does.
func (s *Store) Leader(ctx context.Context) (string, error) {
	rows, err := s.pool.Query(ctx, `WITH k AS (SELECT `+leaderKey+` AS key)
		SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid, k
		WHERE l.locktype = 'advisory' AND l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
		AND l.classid = ((k.key >> 32) & 4294967295)::oid AND l.objid = (k.key & 4294967295)::oid AND l.objsubid = 1`)
	if err != nil {
		return "", err
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(names) == 0 {
		return "", err
	}
	return strings.TrimPrefix(names[0], appPrefix), nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// Tidy vacuums and analyzes the small tables that every acquire and
// release rewrites. Autovacuum does that where it runs (migration 003
// tunes it), but it can be off: on the machine these figures come from it
// is, and without vacuum the free-resource index fills with dead entries
// at the very place every acquire starts reading. The leader calls it
// periodically; it is cheap for tables of this size.
func (s *Store) Tidy(ctx context.Context) error {
	ctx, cancel := s.bound(ctx, syncTimeout)
	defer cancel()
	// Changes are counted from the cumulative update and delete counts, not
	// from n_dead_tup: pruning on access lowers n_dead_tup as it frees heap
	// space, but leaves the dead index entries that slow acquires down.
	rows, err := s.pool.Query(ctx, `SELECT relname, n_live_tup, n_tup_upd + n_tup_del, n_mod_since_analyze FROM pg_stat_user_tables
		WHERE relid IN ('resources'::regclass, 'requests'::regclass, 'leases'::regclass, 'resource_probes'::regclass)`)
	if err != nil {
		return fmt.Errorf("postgres: tidy: read table statistics: %w", err)
	}
	type stat struct{ live, changes, sinceAnalyze int64 }
	stats := map[string]stat{}
	for rows.Next() {
		var (
			table string
			st    stat
		)
		if err := rows.Scan(&table, &st.live, &st.changes, &st.sinceAnalyze); err != nil {
			rows.Close()
			return fmt.Errorf("postgres: tidy: read table statistics: %w", err)
		}
		stats[table] = st
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("postgres: tidy: read table statistics: %w", err)
	}
	s.tidyMu.Lock()
	defer s.tidyMu.Unlock()
	if s.vacuumedAt == nil {
		s.vacuumedAt = map[string]int64{}
	}
	// due says whether table needs a vacuum, and marks it done when it is
	// not known how much changed: a process that has not vacuumed it yet,
	// or whose count went back (the server's statistics were reset, as
	// after a crash). Small tables are vacuumed then, to find out; leases,
	// the big one, starts counting from here.
	due := func(table string) bool {
		st, ok := stats[table]
		if !ok {
			return false
		}
		last, known := s.vacuumedAt[table]
		if !known || st.changes < last {
			if table == "leases" {
				s.vacuumedAt[table] = st.changes
				return false
			}
			return true
		}
		return st.changes-last >= vacuumThreshold(table, st.live)
	}
	// One table at a time, resources first: it is the one acquires read.
	var work []string
	for _, table := range []string{"resources", "requests", "resource_probes"} {
		if due(table) {
			work = append(work, "VACUUM "+table)
		}
	}
	if st := stats["resources"]; st.sinceAnalyze >= max(st.live, analyzeAfter) {
		work = append(work, "ANALYZE resources")
	}
	if len(work) > 0 {
		conn, err := s.maintenanceConn(ctx)
		if err != nil {
			return fmt.Errorf("postgres: tidy: %w", err)
		}
		defer conn.Close(context.WithoutCancel(ctx))
		for _, stmt := range work {
			if _, err := conn.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("postgres: %s: %w", strings.ToLower(stmt), err)
			}
			if table, ok := strings.CutPrefix(stmt, "VACUUM "); ok {
				s.vacuumedAt[table] = stats[table].changes
			}
		}
	}
	if err := s.leasesVacuumErr; err != nil {
		s.leasesVacuumErr = nil
		return fmt.Errorf("postgres: vacuum leases: %w", err)
	}
	// leases can take long to vacuum: in the background, one at a time,
	// so that resources is vacuumed meanwhile on time.
	if due("leases") && s.leasesVacuuming.CompareAndSwap(false, true) {
		changes := stats["leases"].changes
		s.background.Go(func() {
			defer s.leasesVacuuming.Store(false)
			err := func() error {
				conn, err := s.maintenanceConn(s.backgroundCtx)
				if err != nil {
					return err
				}
				defer conn.Close(context.Background())
				_, err = conn.Exec(s.backgroundCtx, "VACUUM leases")
				return err
			}()
			s.tidyMu.Lock()
			defer s.tidyMu.Unlock()
			if err != nil {
				if s.backgroundCtx.Err() == nil {
					s.leasesVacuumErr = err
				}
				return
			}
			s.vacuumedAt["leases"] = changes
		})
	}
	return nil
}

// maintenancePrefix names the connections that vacuum and analyze. A
// vacuum runs in a transaction as long as it takes; named apart from the
// deployment's connections, it does not hold back the event feed (see
// eventHorizon), which only waits for transactions that can write events.
const maintenancePrefix = "berth maintenance "

// maintenanceConn opens a connection of its own for maintenance.
func (s *Store) maintenanceConn(ctx context.Context) (*pgx.Conn, error) {
	cfg := s.pool.Config().ConnConfig.Copy()
	cfg.RuntimeParams["application_name"] = truncate(maintenancePrefix+cfg.RuntimeParams["search_path"], 63)
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect for maintenance: %w", err)
	}
	return conn, nil
}

// Tidy's thresholds. Every acquire leaves a dead entry at the head of the
// free-resources index (the resource that was free longest is no longer
// free), and the next acquire steps over all of them: measured, 100 index
// pages per acquire after 13,000 cycles, and throughput fell by a quarter
// within 80 s. Vacuuming resources after every thousand changes keeps
// that head a few pages long. leases grows with every lease; its dead rows
// are the ended leases' old versions, and vacuuming it costs a pass over
// all its indexes, so it waits for a tenth of the table.
const (
	vacuumAfter       = 1000
	vacuumLeasesAfter = 10000
	analyzeAfter      = 2000
)

func vacuumThreshold(table string, live int64) int64 {
	switch table {
	case "leases":
		return max(vacuumLeasesAfter, live/10)
	case "resource_probes":
		// Every probe of every resource updates it, and nothing reads it
		// in a hot path: once a tenth of it has changed.
		return max(vacuumAfter, live/10)
	}
	return vacuumAfter
}

// pingWithin pings conn, giving it LeaderInterval to answer.
func pingWithin(ctx context.Context, conn *pgx.Conn) error {
	pctx, cancel := context.WithTimeout(ctx, LeaderInterval)
	defer cancel()
	return conn.Ping(pctx)
}
