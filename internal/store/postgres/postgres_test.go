package postgres_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/berth-ci/berth/internal/store"
	"github.com/berth-ci/berth/internal/store/postgres/pgtest"
	"github.com/berth-ci/berth/internal/store/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return pgtest.Open(t) })
}
