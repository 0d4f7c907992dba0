package lease

import (
	"context"
	"errors"
	"fmt"

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
	l, err := e.store.LeaseGet(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return "", nil // the operation says so, in its own words
	}
	if err != nil {
		return "", storeError(err)
	}
	switch {
	case l.Principal == "" || l.Principal == p.Name:
		return "", nil
	case p.Role.Allows(berth.RoleAdmin):
		return fmt.Sprintf("forced by admin %s (the lease is %s's)", p.Name, l.Principal), nil
	}
	return "", berth.Errorf(berth.EForbidden, "lease %q is held by %s; only its holder or an admin may heartbeat or end it", id, l.Principal)
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
