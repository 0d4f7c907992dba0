package store

// Invariant is a consistency rule of the stored state, as a query that
// returns one row (a description) per violation. The queries are plain SQL
// that both SQLite and PostgreSQL run; each store's Check runs all of them.
type Invariant struct {
	What, Query string
}

// Invariants are the rules every store's Check verifies.
var Invariants = []Invariant{
	{"resource with more than one active lease",
		"SELECT resource || ' (' || count(*) || ' leases)' FROM leases WHERE ended_at IS NULL GROUP BY resource HAVING count(*) > 1"},
	{"resource pointing at a lease that is not its active lease",
		`SELECT r.name FROM resources r LEFT JOIN leases l ON l.id = r.lease_id AND l.ended_at IS NULL AND l.resource = r.name
		 WHERE r.lease_id IS NOT NULL AND l.token IS NULL`},
	{"active lease whose resource does not point back at it",
		`SELECT l.id || ' on ' || l.resource FROM leases l LEFT JOIN resources r ON r.name = l.resource AND r.lease_id = l.id
		 WHERE l.ended_at IS NULL AND r.name IS NULL`},
	{"leased state without a lease",
		"SELECT name || ' is ' || state FROM resources WHERE state IN ('busy', 'cleaning') AND lease_id IS NULL"},
	{"unleased state with a lease or an owner",
		"SELECT name || ' is ' || state FROM resources WHERE state IN ('free', 'dirty', 'quarantined', 'deleting') AND (lease_id IS NOT NULL OR owner != '')"},
	// A janitor's lease holds a resource that is cleaning, a job's one
	// that is busy.
	{"lease of the wrong kind for the state it holds",
		`SELECT r.name || ' is ' || r.state || ' under a lease for ' || l.kind FROM resources r JOIN leases l ON l.id = r.lease_id
		 WHERE (r.state = 'cleaning') <> (l.kind = 'clean')`},
	{"a backoff or a deep cleaning outside cleaning and deleting",
		"SELECT name || ' is ' || state FROM resources WHERE state NOT IN ('dirty', 'cleaning', 'deleting') AND (next_clean_at <> 0 OR deep_clean)"},
	{"owner differs from the lease's",
		`SELECT r.name FROM resources r JOIN leases l ON l.id = r.lease_id WHERE r.owner != l.owner`},
	{"quarantined without a reason",
		"SELECT name FROM resources WHERE state = 'quarantined' AND state_reason = ''"},
	// A request may get a new lease once its last one ran out unreaped,
	// but never two whose lifetimes overlap.
	{"request holding two leases at once",
		`SELECT a.request_id || ': ' || a.id || ' and ' || b.id FROM leases a JOIN leases b
		 ON a.request_id = b.request_id AND a.token < b.token
		 WHERE a.ended_at IS NULL AND b.ended_at IS NULL AND b.acquired_at < a.expires_at`},
	// Acquire filters on health_ok alone, so it must agree with the
	// health and the pool's policy at every commit.
	{"health_ok disagrees with the health and the pool's probe policy",
		`SELECT name || ' (' || health_status || ')' FROM resources WHERE health_ok <> (health_status = 'Connected'
		 OR (health_status = 'Unknown' AND NOT coalesce((SELECT require_connected FROM pools p WHERE p.type = resources.type), false)))`},
}
