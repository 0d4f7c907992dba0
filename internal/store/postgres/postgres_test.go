package postgres_test

import (
	"context"
	"testing"

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
