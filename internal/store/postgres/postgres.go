// Package postgres is berth's PostgreSQL store, for several berth replicas
// sharing one database. Every mutation is one transaction at READ
// COMMITTED; rows that concurrent replicas could contend for are taken
// with FOR UPDATE SKIP LOCKED, so that no replica waits on a row another
// holds, and the schema itself refuses a second active lease on a resource.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/berth-ci/berth/internal/store"
	"github.com/berth-ci/berth/internal/store/migrate"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// Options configure Open.
type Options struct {
	// Schema, if set, holds berth's tables instead of the connection's
	// default (public); it is created if missing. Tests use one each.
	Schema string
	// MaxConns bounds the connection pool; default pgxpool's, the larger
	// of 4 and the number of CPUs.
	MaxConns int32
	// OpTimeout bounds every store call (PoolSync aside); default
	// DefaultOpTimeout. A database that stops answering (a black-holed
	// connection, which TCP alone notices only after many minutes) must
	// turn into an error the API answers with 503, not a request that
	// hangs.
	OpTimeout time.Duration
	// upTo, if set, stops migrations at that version: tests use it to make
	// a database as an older berth left it.
	upTo int
}

// idleInTransaction is how long PostgreSQL lets a berth connection sit in
// an open transaction without a statement before it ends the session.
const idleInTransaction = 10 * time.Second

// DefaultOpTimeout is Options.OpTimeout's default.
const DefaultOpTimeout = 10 * time.Second

// Store is the PostgreSQL implementation of store.Store.
type Store struct {
	pool      *pgxpool.Pool
	schema    string
	opTimeout time.Duration

	leaseTypes typeCache

	tidyMu sync.Mutex
	// vacuumedAt is each table's count of changes when this process last
	// vacuumed it (see Tidy).
	vacuumedAt      map[string]int64
	leasesVacuumErr error
	leasesVacuuming atomic.Bool

	// group takes the units of group commit to its workers (group.go).
	group chan *unit

	// background runs work that outlives the call that started it (the
	// vacuum of leases, the group commit workers); Close ends it.
	background       sync.WaitGroup
	backgroundCtx    context.Context
	backgroundCancel context.CancelFunc
}

var _ store.Store = (*Store)(nil)

// Open connects to the database at url (a postgres:// URL or a key=value
// connection string) and brings its schema up to date. It refuses a
// database whose schema is newer than this binary.
func Open(ctx context.Context, url string, opts Options) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// pgx's message can quote the whole URL, password included.
		return nil, errors.New("postgres: the store URL is not a valid PostgreSQL connection string")
	}
	if opts.Schema != "" {
		if !validSchema(opts.Schema) {
			return nil, fmt.Errorf("postgres: schema %q: want lower-case letters, digits and '_'", opts.Schema)
		}
		cfg.ConnConfig.RuntimeParams["search_path"] = opts.Schema
	}
	// berth names its connections itself, whatever the URL or PGAPPNAME
	// say: the replicas of one deployment must share the name, and only
	// they (see eventHorizon), so it is made of the schema.
	name := "berth"
	if sp := cfg.ConnConfig.RuntimeParams["search_path"]; sp != "" {
		name += " " + sp
	}
	cfg.ConnConfig.RuntimeParams["application_name"] = truncate(name, 63)
	// A transaction left open by a replica that froze or was cut off
	// mid-way holds its locks, and the event feed, until the server ends
	// it: berth's own transactions never wait between statements for
	// more than a moment. Set after connecting rather than as a start-up
	// parameter, which connection poolers such as PgBouncer refuse.
	cfg.AfterConnect = func(ctx context.Context, conn *pgx.Conn) error {
		_, err := conn.Exec(ctx, fmt.Sprintf("SET idle_in_transaction_session_timeout = %d", idleInTransaction.Milliseconds()))
		return err
	}
	if opts.MaxConns > 0 {
		cfg.MaxConns = opts.MaxConns
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	s := &Store{pool: pool, schema: opts.Schema, opTimeout: opts.OpTimeout}
	s.backgroundCtx, s.backgroundCancel = context.WithCancel(context.Background())
	s.group = make(chan *unit)
	for range groupWorkers {
		s.background.Go(s.groupWorker)
	}
	if s.opTimeout <= 0 {
		s.opTimeout = DefaultOpTimeout
	}
	var one int
	if err := pool.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		s.Close()
		return nil, fmt.Errorf("postgres: %w", err)
	}
	if opts.Schema != "" {
		if _, err := pool.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+opts.Schema); err != nil && !isUniqueViolation(err) {
			s.Close()
			return nil, fmt.Errorf("postgres: create schema %s: %w", opts.Schema, err)
		}
	}
	if err := s.migrate(ctx, opts.upTo); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func validSchema(s string) bool {
	for i, r := range s {
		if !(r >= 'a' && r <= 'z' || r == '_' || i > 0 && r >= '0' && r <= '9') {
			return false
		}
	}
	return s != "" && len(s) <= 63
}

// Close closes the connection pool.
func (s *Store) Close() error {
	s.backgroundCancel()
	s.background.Wait()
	s.pool.Close()
	return nil
}

// Ping checks that the database answers and that its schema is the one
// this binary knows: another replica, newer, may have migrated it further.
func (s *Store) Ping(ctx context.Context) error {
	ctx, cancel := s.bound(ctx, opTimeout)
	defer cancel()
	var have int
	if err := s.pool.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM berth_migrations").Scan(&have); err != nil {
		return fmt.Errorf("postgres: ping: %w", err)
	}
	if know := SchemaVersion(); have != know {
		return fmt.Errorf("postgres: the database schema is at version %d, this berth uses %d", have, know)
	}
	return nil
}

func migrations() ([]migrate.Migration, error) {
	return migrate.Load(migrationFS, "migrations")
}

// SchemaVersion is the newest schema this binary knows.
func SchemaVersion() int {
	ms, err := migrations()
	if err != nil {
		return 0
	}
	return migrate.Latest(ms)
}

// SchemaVersion is the schema the store's database is at: once Open has
// migrated it, the newest this binary knows.
func (s *Store) SchemaVersion() int { return SchemaVersion() }

// SchemaTooNewError says the database was written by a newer berth.
type SchemaTooNewError = migrate.SchemaTooNewError

// migrateLock is the advisory lock replicas take to migrate one at a time;
// the schema name is mixed in so that tests on separate schemas do not
// wait for each other.
const migrateLock = "SELECT pg_advisory_xact_lock(hashtextextended('berth-migrate:' || current_schema(), 0))"

func (s *Store) migrate(ctx context.Context, upTo int) error {
	ctx, cancel := s.bound(ctx, syncTimeout)
	defer cancel()
	ms, err := migrations()
	if err != nil {
		return fmt.Errorf("postgres: read migrations: %w", err)
	}
	know := migrate.Latest(ms)
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, migrateLock); err != nil {
			return fmt.Errorf("lock for migration: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS berth_migrations (
			version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)`); err != nil {
			return fmt.Errorf("create migration table: %w", err)
		}
		var have int
		if err := tx.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM berth_migrations").Scan(&have); err != nil {
			return fmt.Errorf("read schema version: %w", err)
		}
		if have > know {
			return &SchemaTooNewError{Have: have, Know: know}
		}
		for _, m := range ms {
			if m.Version <= have || upTo > 0 && m.Version > upTo {
				continue
			}
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return fmt.Errorf("migration %03d_%s: %w", m.Version, m.Name, err)
			}
			if _, err := tx.Exec(ctx, "INSERT INTO berth_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
				m.Version, m.Name, time.Now().UnixNano()); err != nil {
				return fmt.Errorf("migration %03d_%s: %w", m.Version, m.Name, err)
			}
		}
		return nil
	})
	var tooNew *SchemaTooNewError
	if errors.As(err, &tooNew) {
		return tooNew
	}
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	return nil
}

// syncTimeout bounds PoolSync and migrations, which may write a whole
// config's resources; every other call is bounded by Options.OpTimeout.
const syncTimeout = 5 * time.Minute

// opTimeout marks a call bounded by Options.OpTimeout.
const opTimeout = -1

// bound returns ctx limited to d, or to the store's OpTimeout for
// opTimeout.
func (s *Store) bound(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d == opTimeout {
		d = s.opTimeout
	}
	return context.WithTimeout(ctx, d)
}

// tx runs fn in one READ COMMITTED transaction. A transaction that
// PostgreSQL aborted to break a deadlock changed nothing: it runs again,
// up to five times in all. (Group commit's batches take row locks for
// several callers in one transaction, so a pool sync, which locks every
// resource row, can meet one in a cycle; found by the third review.)
func (s *Store) tx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	for attempt := 1; ; attempt++ {
		err := pgx.BeginFunc(ctx, s.pool, fn)
		if attempt < 5 && isDeadlock(err) {
			continue
		}
		return err
	}
}

func isDeadlock(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "40P01"
}

func isUniqueViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

func nanos(t time.Time) int64 { return t.UnixNano() }

func fromNanos(n int64) time.Time { return time.Unix(0, n).UTC() }

func nullTime(n *int64) *time.Time {
	if n == nil {
		return nil
	}
	t := fromNanos(*n)
	return &t
}

func now(t time.Time) time.Time {
	if t.IsZero() {
		return time.Now()
	}
	return t
}

func nullString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// Pending reports the schema version of the database at url and the
// migrations Open would apply to it, changing nothing.
func Pending(ctx context.Context, url string) (have int, pending []migrate.Migration, err error) {
	ms, err := migrations()
	if err != nil {
		return 0, nil, fmt.Errorf("postgres: read migrations: %w", err)
	}
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return 0, nil, errors.New("postgres: the store URL is not a valid PostgreSQL connection string")
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 5 * time.Second
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return 0, nil, fmt.Errorf("postgres: %w", err)
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT to_regclass('berth_migrations') IS NOT NULL").Scan(&exists); err != nil {
		return 0, nil, fmt.Errorf("postgres: %w", err)
	}
	if exists {
		if err := conn.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM berth_migrations").Scan(&have); err != nil {
			return 0, nil, fmt.Errorf("postgres: read schema version: %w", err)
		}
	}
	pending, err = migrate.Pending(ms, have)
	return have, pending, err
}
