package sqlite

import "context"

// ExecForTest runs a statement on the writer, for tests that must put the
// database in a state the API cannot reach.
func (s *Store) ExecForTest(ctx context.Context, q string) error {
	return s.tx(ctx, func(tx *wtx) error {
		_, err := tx.w.conn.ExecContext(context.Background(), q)
		return err
	})
}

// OpenUpTo opens path with migrations applied only up to version, as an
// older berth would have left it.
func OpenUpTo(ctx context.Context, path string, version int) (*Store, error) {
	return Open(ctx, path, Options{upTo: version})
}
