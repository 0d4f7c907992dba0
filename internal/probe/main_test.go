package probe

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if any test leaves a goroutine behind: a probe
// must leave nothing running once Check has returned.
//
// toxiproxy (the in-process proxy of the black-hole tests) sometimes
// leaves one goroutine of its own behind when a toxic is removed while
// data flows: its no-op stage can be caught sending to the removed toxic
// (toxics/noop.go), a send with no way out. It is the proxy's, not a
// probe's; internal/e2e ignores it for the same reason.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/Shopify/toxiproxy/v2/toxics.(*NoopToxic).Pipe"))
}
