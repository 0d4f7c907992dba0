package lease

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/store"
)

// holder checks that the caller may heartbeat or end lease id: with
// authentication, only the principal that acquired it, or an admin, whose
// act is forced (and the reason says so). Without authentication (no
// principal name in ctx), or for a lease taken while berth ran without it,
// anyone who knows the lease may, as before.
func (e *Engine) holder(ctx context.Context, id string) (forced string, err error) {
	p, ok := berth.PrincipalFrom(ctx)
	if !ok || p.Name == "" || ctx.Value(anyHolder{}) != nil {
		return "", nil
	}
	// Who holds a lease never changes: one this engine granted is known
	// without a read.
	holder, ok := e.holders.get(id)
	if !ok {
		l, err := e.store.LeaseGet(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			return "", nil // the operation says so, in its own words
		}
		if err != nil {
			return "", storeError(err)
		}
		holder = l.Principal
		e.holders.remember(l)
	}
	switch {
	case holder == "" || holder == p.Name:
		return "", nil
	case p.Role.Allows(berth.RoleAdmin):
		return fmt.Sprintf("forced by admin %s (the lease is %s's)", p.Name, holder), nil
	}
	return "", berth.Errorf(berth.EForbidden, "lease %q is held by %s; only its holder or an admin may heartbeat or end it", id, holder)
}

// holders remembers the principal of leases, which never changes, so that
// the check of a heartbeat or a release needs no read of the lease.
type holders struct {
	mu sync.Mutex
	m  map[string]string
}

// maxHolders bounds the memory: beyond it, the map starts over (and the
// leases it forgot are read again).
const maxHolders = 100000

func (h *holders) remember(l *berth.Lease) {
	if l == nil || l.Principal == "" {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil || len(h.m) >= maxHolders {
		h.m = make(map[string]string)
	}
	h.m[l.ID] = l.Principal
}

func (h *holders) get(id string) (string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	p, ok := h.m[id]
	return p, ok
}

// withForced prefixes reason with why an admin's act on another's lease
// was forced.
func withForced(forced, reason string) string {
	switch {
	case forced == "":
		return reason
	case reason == "":
		return forced
	}
	return forced + ": " + reason
}

// anyHolder marks a context whose operation takes leases from whoever
// holds them by design (a Boskos /reset of holders that went quiet,
// which only a janitor or an admin may call).
type anyHolder struct{}
