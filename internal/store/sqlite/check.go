package sqlite

import (
	"context"
	"errors"
	"fmt"

	"github.com/berth-ci/berth/internal/store"
)

// Check runs every consistency check and reports all violations.
func (s *Store) Check(ctx context.Context) error {
	var errs []error
	for _, c := range store.Invariants {
		rows, err := s.r.QueryContext(ctx, c.Query)
		if err != nil {
			return fmt.Errorf("sqlite: check %q: %w", c.What, err)
		}
		for rows.Next() {
			var v string
			if err := rows.Scan(&v); err != nil {
				rows.Close()
				return fmt.Errorf("sqlite: check %q: %w", c.What, err)
			}
			errs = append(errs, fmt.Errorf("%s: %s", c.What, v))
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("sqlite: check %q: %w", c.What, err)
		}
	}
	return errors.Join(errs...)
}
