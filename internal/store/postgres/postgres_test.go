package postgres_test

import (
	"context"
	"errors"
	"strings"
	"testing"

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
