package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/berth-ci/berth/internal/store"
)

// Check runs every consistency check, in one snapshot, and reports all
// violations.
func (s *Store) Check(ctx context.Context) error {
	ctx, cancel := s.bound(ctx, opTimeout)
	defer cancel()
	var errs []error
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		for _, c := range store.Invariants {
			rows, err := tx.Query(ctx, c.Query)
			if err != nil {
				return fmt.Errorf("check %q: %w", c.What, err)
			}
			found, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				return fmt.Errorf("check %q: %w", c.What, err)
			}
			for _, v := range found {
				errs = append(errs, fmt.Errorf("%s: %s", c.What, v))
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	return errors.Join(errs...)
}
