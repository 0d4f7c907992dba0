package postgres

import "context"

// OpenUpTo opens url with migrations applied only up to version, as an
// older berth would have left it.
func OpenUpTo(ctx context.Context, url, schema string, version int) (*Store, error) {
	return Open(ctx, url, Options{Schema: schema, upTo: version})
}
