package cli

import (
	"os"
	"runtime/debug"
	"testing"
)

// TestTuneGC: serve and bench tune the collector, but an operator's GOGC
// or GOMEMLIMIT wins.
func TestTuneGC(t *testing.T) {
	percent := func() int { p := debug.SetGCPercent(100); debug.SetGCPercent(p); return p }
	limit := func() int64 { return debug.SetMemoryLimit(-1) } // -1 reads it
	p0, l0 := percent(), limit()
	t.Cleanup(func() { debug.SetGCPercent(p0); debug.SetMemoryLimit(l0) })

	for _, k := range []string{"GOGC", "GOMEMLIMIT"} {
		t.Setenv(k, "") // restored after the test
		os.Unsetenv(k)
	}
	debug.SetGCPercent(100)
	debug.SetMemoryLimit(1 << 40)
	tuneGC()
	if percent() != serveGCPercent || limit() != serveMemoryLimit {
		t.Fatalf("without GOGC or GOMEMLIMIT: GC percent %d, memory limit %d; want %d and %d", percent(), limit(), serveGCPercent, serveMemoryLimit)
	}

	t.Setenv("GOGC", "150")
	t.Setenv("GOMEMLIMIT", "1GiB")
	debug.SetGCPercent(150)
	debug.SetMemoryLimit(1 << 30)
	tuneGC()
	if percent() != 150 || limit() != 1<<30 {
		t.Fatalf("with GOGC and GOMEMLIMIT set: GC percent %d, memory limit %d; want them left at 150 and 1GiB", percent(), limit())
	}
}
