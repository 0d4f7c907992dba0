package berth

import (
	"strings"
	"testing"
	"time"
)

func TestNewIDSortsByTime(t *testing.T) {
	base := time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)
	prev := newIDAt(base)
	for _, d := range []time.Duration{time.Millisecond, time.Second, time.Hour, 24 * 365 * time.Hour, 50 * 24 * 365 * time.Hour} {
		next := newIDAt(base.Add(d))
		if next <= prev {
			t.Fatalf("id at +%s (%s) does not sort after the one before it (%s)", d, next, prev)
		}
		prev = next
	}
}

func TestNewIDIsUnguessable(t *testing.T) {
	now := time.Now()
	a, b := newIDAt(now), newIDAt(now)
	if len(a) != 36 || a[:10] != b[:10] || a == b {
		t.Fatalf("two ids made in the same millisecond: %q and %q; want 36 characters, the same 10-character time prefix, different random parts", a, b)
	}
	if strings.ContainsAny(a, "=/+") {
		t.Fatalf("id %q is not URL-safe", a)
	}
}
