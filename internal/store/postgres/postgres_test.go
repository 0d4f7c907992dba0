package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"go.uber.org/goleak"

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
	url, schema := pgtest.URL(t), pgtest.Schema(t)
	storetest.Upgrade(t, func(t *testing.T) store.Store {
		s, err := postgres.OpenUpTo(context.Background(), url, schema, 1)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}, func(t *testing.T) store.Store {
		s, err := postgres.Open(context.Background(), url, postgres.Options{Schema: schema})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}, postgres.SchemaVersion())
}

// TestNewerSchema: a database that a newer berth migrated further makes a
// running replica unready, and this binary refuses to open it.
func TestNewerSchema(t *testing.T) {
	ctx := context.Background()
	url, schema := pgtest.URL(t), pgtest.Schema(t)
	s, err := postgres.Open(ctx, url, postgres.Options{Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
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
// changed, and leaves alone what is not due.
func TestTidyVacuumsWhereDue(t *testing.T) {
	ctx := context.Background()
	url, schema := pgtest.URL(t), pgtest.Schema(t)
	s, err := postgres.Open(ctx, url, postgres.Options{Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
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
	// dirty changes n rows of resources and has the statistics say so now,
	// not at the server's next flush.
	dirty := func(n int) {
		t.Helper()
		for range n / 10 {
			if _, err := conn.Exec(ctx, "UPDATE "+schema+".resources SET state_reason = state_reason"); err != nil {
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
	// The first Tidy knows no counts yet: it vacuums each table once.
	if err := s.Tidy(ctx); err != nil {
		t.Fatal(err)
	}
	if n := vacuums("resources"); n != 1 {
		t.Fatalf("first tidy vacuumed resources %d times; want once", n)
	}
	dirty(500)
	if err := s.Tidy(ctx); err != nil {
		t.Fatal(err)
	}
	if n := vacuums("resources"); n != 1 {
		t.Fatalf("resources vacuumed again after 500 changes; want only after 1,000")
	}
	dirty(600)
	if err := s.Tidy(ctx); err != nil {
		t.Fatal(err)
	}
	if n := vacuums("resources"); n != 2 {
		t.Fatalf("resources vacuumed %d times after 1,100 changes; want twice in all", n)
	}
	if n := vacuums("leases"); n != 1 {
		t.Fatalf("leases vacuumed %d times, unchanged since the first tidy; want once in all", n)
	}
}
