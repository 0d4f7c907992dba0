package berth

import "context"

// Role is what an authenticated caller may do. Each role may do what the
// ones before it may, and more.
type Role string

const (
	// RoleViewer reads: pools, resources, leases, events.
	RoleViewer Role = "viewer"
	// RoleClient also leases: acquire, heartbeat and release its own
	// leases (a CI job).
	RoleClient Role = "client"
	// RoleJanitor also cleans: claims dirty resources and ends cleanings,
	// resets Boskos holders that went quiet (a janitor).
	RoleJanitor Role = "janitor"
	// RoleAdmin may do anything: quarantine, drain, add and retire
	// resources, and end any lease, which is recorded as forced.
	RoleAdmin Role = "admin"
)

// Roles lists the roles from least to most.
var Roles = []Role{RoleViewer, RoleClient, RoleJanitor, RoleAdmin}

// ValidRole says whether r is a role.
func ValidRole(r Role) bool {
	for _, x := range Roles {
		if x == r {
			return true
		}
	}
	return false
}

// Allows says whether a caller of role r may do what role need may.
func (r Role) Allows(need Role) bool { return rank(r) >= rank(need) && rank(need) >= 0 }

func rank(r Role) int {
	for i, x := range Roles {
		if x == r {
			return i
		}
	}
	return -1
}

// Principal is who made a request: the name of its token (or its client
// certificate's subject), its role, and the address it came from. It
// travels in the request's context so that the events a request causes
// record who caused them and from where.
type Principal struct {
	// Name is the token's name or the certificate's common name; "" when
	// berth runs without authentication.
	Name string
	Role Role
	// Remote is the client's address (host:port).
	Remote string
}

type principalKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFrom returns the principal ctx carries, if any.
func PrincipalFrom(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}
