package boskosclient

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"sigs.k8s.io/boskos/common"
)

// postgresStore returns a --store URL on a schema of t's own in the
// database BERTH_TEST_POSTGRES names, dropped when t ends. Without it the
// test is skipped, and under CI=true it fails: CI must run it.
func postgresStore(t *testing.T) string {
	t.Helper()
	u := os.Getenv("BERTH_TEST_POSTGRES")
	if u == "" {
		const how = "BERTH_TEST_POSTGRES is not set; set it, e.g. BERTH_TEST_POSTGRES=postgres://postgres@127.0.0.1:5432/test"
		if os.Getenv("CI") == "true" {
			t.Fatal("PostgreSQL tests must run in CI: " + how)
		}
		t.Skip("skipping PostgreSQL test: " + how)
	}
	schema := "berth_boskos_" + strings.ToLower(rand.Text()[:12])
	exec := func(sql string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, u)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		_, err = conn.Exec(ctx, sql)
		return err
	}
	if err := exec("CREATE SCHEMA " + schema); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		if err := exec("DROP SCHEMA " + schema + " CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	sep := "?"
	if strings.Contains(u, "?") {
		sep = "&"
	}
	return fmt.Sprintf("%s%ssearch_path=%s", u, sep, schema)
}

// TestOnPostgres drives the Boskos client against two berth replicas on
// one PostgreSQL: a waiter polling one replica is served by a release on
// the other, in order, and a holder's updates and releases reach either.
func TestOnPostgres(t *testing.T) {
	store := postgresStore(t)
	a := serve(t, "--store", store)
	b := serve(t, "--store", store)
	holder := newClient(t, a, "holder")
	if _, err := holder.Acquire("solo", common.Free, common.Busy); err != nil {
		t.Fatal(err)
	}
	type got struct {
		owner string
		err   error
	}
	results := make(chan got, 2)
	wait := func(owner string) {
		c := newClient(t, b, owner)
		go func() {
			_, err := c.AcquireWait(context.Background(), "solo", common.Free, common.Busy)
			results <- got{owner, err}
		}()
	}
	wait("first")
	eventually(t, "the first is queued", func() bool { return waiters(t, a, "solo") == 1 })
	wait("second")
	eventually(t, "both are queued", func() bool { return waiters(t, a, "solo") == 2 })
	if err := holder.UpdateOne("solo-1", common.Busy, common.UserDataFromMap(map[string]string{"k": "v"})); err != nil {
		t.Fatal(err)
	}
	if err := holder.ReleaseOne("solo-1", common.Free); err != nil {
		t.Fatal(err)
	}
	if g := <-results; g.owner != "first" || g.err != nil {
		t.Fatalf("served first: %+v", g)
	}
	if st, owner, ud := resource(t, a, "solo-1"); st != "busy" || owner != "first" || ud["k"] != "v" {
		t.Fatalf("solo-1 on the other replica: %s/%s %v", st, owner, ud)
	}
	// The waiter's client lives on replica b; its holder releases on a.
	code, body := post(t, a, "/release", map[string][]string{"name": {"solo-1"}, "owner": {"first"}, "dest": {"free"}})
	if code != 200 {
		t.Fatalf("release by first on replica a: %d %s", code, body)
	}
	if g := <-results; g.owner != "second" || g.err != nil {
		t.Fatalf("then: %+v", g)
	}
}
