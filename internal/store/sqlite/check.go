package sqlite

import (
	"context"
	"errors"
	"fmt"
)

// checks are queries that must return no rows; each row is a violation.
var checks = []struct{ what, query string }{
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
	{"free resource with a lease or an owner",
		"SELECT name FROM resources WHERE state = 'free' AND (lease_id IS NOT NULL OR owner != '')"},
	{"owner differs from the lease's",
		`SELECT r.name FROM resources r JOIN leases l ON l.id = r.lease_id WHERE r.owner != l.owner`},
	{"quarantined without a reason",
		"SELECT name FROM resources WHERE state = 'quarantined' AND state_reason = ''"},
}

// Check runs every consistency check and reports all violations.
func (s *Store) Check(ctx context.Context) error {
	var errs []error
	for _, c := range checks {
		rows, err := s.r.QueryContext(ctx, c.query)
		if err != nil {
			return fmt.Errorf("sqlite: check %q: %w", c.what, err)
		}
		for rows.Next() {
			var v string
			if err := rows.Scan(&v); err != nil {
				rows.Close()
				return fmt.Errorf("sqlite: check %q: %w", c.what, err)
			}
			errs = append(errs, fmt.Errorf("%s: %s", c.what, v))
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("sqlite: check %q: %w", c.what, err)
		}
	}
	return errors.Join(errs...)
}
