// Package pgtest gives tests a PostgreSQL to run against: the one named by
// BERTH_TEST_POSTGRES, with a schema of its own per test so that tests run
// in parallel. Without BERTH_TEST_POSTGRES a test is skipped, and says how
// to enable it; under CI=true it fails instead, so that CI can never pass
// without running them.
package pgtest

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/berth-ci/berth/internal/store/postgres"
)

// EnvURL names the environment variable that holds the test database URL.
const EnvURL = "BERTH_TEST_POSTGRES"

// URL returns the test database URL, or skips t (fails it under CI=true).
func URL(t testing.TB) string {
	t.Helper()
	u := os.Getenv(EnvURL)
	if u != "" {
		return u
	}
	const how = EnvURL + " is not set; to run the PostgreSQL tests, set it, e.g. " + EnvURL + "=postgres://postgres@127.0.0.1:5432/test"
	if os.Getenv("CI") == "true" {
		t.Fatal("PostgreSQL tests must run in CI: " + how)
	}
	t.Skip("skipping PostgreSQL test: " + how)
	return ""
}

// Schema creates a schema of its own for t, dropped when t ends, and
// returns its name.
func Schema(t testing.TB) string {
	t.Helper()
	u := URL(t)
	name := "berth_test_" + strings.ToLower(rand.Text()[:12])
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatalf("connect to %s: %v", EnvURL, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+name); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, u)
		if err != nil {
			t.Errorf("drop schema %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA "+name+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", name, err)
		}
	})
	return name
}

// Open returns a store on a fresh schema, closed when t ends.
func Open(t testing.TB) *postgres.Store {
	t.Helper()
	s, err := postgres.Open(context.Background(), URL(t), postgres.Options{Schema: Schema(t), MaxConns: 8})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// StoreURL returns a --store URL for berth serve on t's own schema.
func StoreURL(t testing.TB) string {
	t.Helper()
	u := URL(t)
	sep := "?"
	if strings.Contains(u, "?") {
		sep = "&"
	}
	return fmt.Sprintf("%s%ssearch_path=%s", u, sep, Schema(t))
}
