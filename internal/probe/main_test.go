package probe

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if any test leaves a goroutine behind: a probe
// must leave nothing running once Check has returned.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
