package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/berth-ci/berth/internal/store"
	"github.com/berth-ci/berth/internal/store/sqlite"
	"github.com/berth-ci/berth/internal/store/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func open(t *testing.T) store.Store {
	t.Helper()
	s, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "berth.db"), sqlite.Options{})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return open(t) })
}

func TestRefusesNewerSchema(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "berth.db")
	s, err := sqlite.Open(ctx, path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ExecForTest(ctx, "INSERT INTO berth_migrations (version, name, applied_at) VALUES (999, 'future', 0)"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	_, err = sqlite.Open(ctx, path, sqlite.Options{})
	var tooNew *sqlite.SchemaTooNewError
	if !errors.As(err, &tooNew) || tooNew.Have != 999 || tooNew.Know != sqlite.SchemaVersion() {
		t.Fatalf("open of a newer schema: %v, want SchemaTooNewError{999, %d}", err, sqlite.SchemaVersion())
	}
	if strings.Contains(err.Error(), "\n") {
		t.Fatalf("error is not one line: %q", err)
	}
}

func TestReopenKeepsState(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "berth.db")
	for _, sync := range []sqlite.Sync{sqlite.SyncNormal, sqlite.SyncFull} {
		s, err := sqlite.Open(ctx, path, sqlite.Options{Sync: sync})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.PoolSync(ctx, &store.PoolSyncParams{Pools: []store.PoolPolicy{{Type: "vm", LeaseTTL: time.Minute,
			Resources: []store.ResourceSpec{{Name: "vm-1"}}}}}); err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
	s, err := sqlite.Open(ctx, path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.ResourceGet(ctx, "vm-1"); err != nil {
		t.Fatalf("resource after reopen: %v", err)
	}
}

func TestRejectsBadSync(t *testing.T) {
	_, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "x.db"), sqlite.Options{Sync: "sometimes"})
	if err == nil || !strings.Contains(err.Error(), "sometimes") {
		t.Fatalf("bad sync: %v", err)
	}
}

func TestUpgradeFromFirstSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "berth.db")
	old, err := sqlite.OpenUpTo(context.Background(), path, 1)
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
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(string(data)); err != nil {
		t.Fatalf("load the version 1 data: %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	snapshot, err := os.ReadFile("testdata/v1-snapshot.json")
	if err != nil {
		t.Fatal(err)
	}
	storetest.Upgrade(t, snapshot, func(t *testing.T) store.Store {
		s, err := sqlite.Open(context.Background(), path, sqlite.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}, sqlite.SchemaVersion())
}
