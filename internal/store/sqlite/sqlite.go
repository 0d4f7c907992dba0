// Package sqlite is berth's embedded store: one SQLite file in WAL mode, one
// writer connection (SQLite allows one writer; queuing in Go is cheaper than
// SQLITE_BUSY retries) and a small pool of readers.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	_ "modernc.org/sqlite"

	"github.com/berth-ci/berth/internal/store"
	"github.com/berth-ci/berth/internal/store/migrate"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// Sync is SQLite's synchronous setting for the write-ahead log.
type Sync string

const (
	// SyncNormal survives a crash of the berth process: a commit is in the
	// OS's page cache before it is acknowledged. A power loss may lose the
	// last commits.
	SyncNormal Sync = "normal"
	// SyncFull also survives power loss and kernel crashes: every commit is
	// fsynced. It costs one fsync per write transaction.
	SyncFull Sync = "full"
)

// Options configure Open.
type Options struct {
	// Sync defaults to SyncNormal.
	Sync Sync
	// Readers is the size of the read connection pool; default 4.
	Readers int
	// upTo, if set, stops migrations at that version: tests use it to make
	// a database as an older berth left it.
	upTo int
}

// Store is the SQLite implementation of store.Store.
type Store struct {
	w  *sql.DB // the one writer connection, owned by wr
	wr *writer
	r  *sql.DB // readers
	cp *checkpointer
	// path is the database file's absolute path.
	path string
	// schema is the version Open migrated the database to; Ping says
	// when the file is at another (a newer berth migrated it since).
	schema int
}

var _ store.Store = (*Store)(nil)

// Open opens (creating if needed) the database at path and brings its schema
// up to date. It refuses a database whose schema is newer than this binary.
func Open(ctx context.Context, path string, opts Options) (*Store, error) {
	sync := opts.Sync
	if sync == "" {
		sync = SyncNormal
	}
	if sync != SyncNormal && sync != SyncFull {
		return nil, fmt.Errorf("sqlite: synchronous must be %q or %q, not %q", SyncNormal, SyncFull, sync)
	}
	readers := opts.Readers
	if readers <= 0 {
		readers = 4
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	q := url.Values{}
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous("+strings.ToUpper(string(sync))+")")
	q.Add("_pragma", "busy_timeout(10000)")
	dsn := "file:" + abs + "?" + q.Encode()

	w, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", abs, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	if err := w.PingContext(ctx); err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", abs, err)
	}
	conn, err := w.Conn(ctx)
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", abs, err)
	}
	s := &Store{w: w, wr: newWriter(conn), path: abs, schema: SchemaVersion()}
	if opts.upTo > 0 {
		s.schema = opts.upTo
	}
	if err := s.migrate(ctx, opts.upTo); err != nil {
		s.wr.close()
		w.Close()
		return nil, err
	}

	rq := url.Values{}
	rq.Add("_pragma", "busy_timeout(10000)")
	rq.Add("_pragma", "query_only(1)")
	r, err := sql.Open("sqlite", "file:"+abs+"?"+rq.Encode())
	if err != nil {
		s.wr.close()
		w.Close()
		return nil, fmt.Errorf("sqlite: open readers: %w", err)
	}
	r.SetMaxOpenConns(readers)
	r.SetMaxIdleConns(readers)
	s.r = r

	cpdb, err := sql.Open("sqlite", dsn)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("sqlite: open checkpointer: %w", err)
	}
	cpdb.SetMaxOpenConns(1)
	s.cp = startCheckpointer(cpdb, s.wr.kick, s.wr.caught)
	if err := s.tx(ctx, func(tx *wtx) error {
		// The writer's page cache holds the hot indexes of a large pool
		// and a long history: with SQLite's default 2 MiB, acquire slowed
		// as the lease and event tables grew.
		// journal_size_limit: after a burst, a WAL that is reset is cut
		// back to 64 MiB instead of keeping its peak size on disk.
		_, err := tx.w.conn.ExecContext(context.Background(), "PRAGMA wal_autocheckpoint = 0; PRAGMA cache_size = -32768; PRAGMA journal_size_limit = 67108864")
		return err
	}); err != nil {
		s.Close()
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	return s, nil
}

// Close closes both connection pools.
func (s *Store) Close() error {
	var errs []error
	if s.r != nil {
		errs = append(errs, s.r.Close())
	}
	errs = append(errs, s.wr.close(), s.w.Close())
	if s.cp != nil {
		errs = append(errs, s.cp.close())
	}
	return errors.Join(errs...)
}

// checkpointer copies the WAL back into the database file in the
// background, so that the writer does not pause for the bulk of that work.
//
// A checkpoint that runs beside the writer can never finish: frames are
// appended while it copies. And SQLite starts the WAL over from its
// beginning only after a checkpoint has copied every frame, so without more
// the WAL would grow for as long as writes go on (it reached 2 GB in a
// minute of benchmark, and every write got slower as it grew). So after
// each background pass the checkpointer tells the writer (caught), and the
// writer copies the few frames appended since, between two commits; its
// next transaction then starts the WAL over.
type checkpointer struct {
	once   sync.Once
	db     *sql.DB
	kick   <-chan struct{}
	caught chan<- struct{}
	quit   chan struct{}
	done   chan struct{}
}

// startCheckpointer runs checkpoints on db when kicked, and tells caught
// after each.
func startCheckpointer(db *sql.DB, kick <-chan struct{}, caught chan<- struct{}) *checkpointer {
	c := &checkpointer{db: db, kick: kick, caught: caught, quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for {
			select {
			case <-c.quit:
				return
			case <-c.kick:
				// PASSIVE never blocks the writer or readers. A failure
				// only means the WAL grows until the next attempt.
				if _, err := c.db.Exec("PRAGMA wal_checkpoint(PASSIVE)"); err != nil {
					continue
				}
				select {
				case c.caught <- struct{}{}:
				default: // the writer has not taken the last one yet
				}
			}
		}
	}()
	return c
}

func (c *checkpointer) close() error {
	var err error
	c.once.Do(func() {
		close(c.quit)
		<-c.done
		// A last full checkpoint leaves a small WAL for the next start.
		_, cerr := c.db.Exec("PRAGMA wal_checkpoint(TRUNCATE)")
		err = errors.Join(cerr, c.db.Close())
	})
	return err
}

// Ping checks that the database answers a query.
func (s *Store) Ping(ctx context.Context) error {
	var have int
	if err := s.r.QueryRowContext(ctx, "SELECT coalesce(max(version), 0) FROM berth_migrations").Scan(&have); err != nil {
		return fmt.Errorf("sqlite: ping: %w", err)
	}
	if have != s.schema {
		return fmt.Errorf("sqlite: the database schema is at version %d, this berth uses %d", have, s.schema)
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

func (s *Store) migrate(ctx context.Context, upTo int) error {
	ms, err := migrations()
	if err != nil {
		return fmt.Errorf("sqlite: read migrations: %w", err)
	}
	var have int
	err = s.tx(ctx, func(tx *wtx) error {
		// The writer's connection never sees a cancellable context: an
		// interrupted statement would roll back a transaction others share.
		bg := context.Background()
		if _, err := tx.w.conn.ExecContext(bg, `CREATE TABLE IF NOT EXISTS berth_migrations (
			version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)`); err != nil {
			return fmt.Errorf("create migration table: %w", err)
		}
		return tx.w.conn.QueryRowContext(bg, "SELECT coalesce(max(version), 0) FROM berth_migrations").Scan(&have)
	})
	if err != nil {
		return fmt.Errorf("sqlite: read schema version: %w", err)
	}
	if know := migrate.Latest(ms); have > know {
		return &SchemaTooNewError{Have: have, Know: know}
	}
	for _, m := range ms {
		if m.Version <= have || upTo > 0 && m.Version > upTo {
			continue
		}
		err := s.tx(ctx, func(tx *wtx) error {
			// A migration holds several statements: run it unprepared.
			if _, err := tx.w.conn.ExecContext(context.Background(), m.SQL); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, "INSERT INTO berth_migrations (version, name, applied_at) VALUES (?, ?, ?)",
				m.Version, m.Name, time.Now().UnixNano())
			return err
		})
		if err != nil {
			return fmt.Errorf("sqlite: migration %03d_%s: %w", m.Version, m.Name, err)
		}
	}
	return nil
}

// tx runs fn in a write transaction (BEGIN IMMEDIATE, so the write lock is
// taken up front and never upgraded mid-transaction), possibly committed
// together with other writes; see writer.
func (s *Store) tx(ctx context.Context, fn func(tx *wtx) error) error {
	return s.wr.do(ctx, fn)
}

func nanos(t time.Time) int64 { return t.UnixNano() }

func fromNanos(n int64) time.Time { return time.Unix(0, n).UTC() }

func nullTime(n sql.NullInt64) *time.Time {
	if !n.Valid {
		return nil
	}
	t := fromNanos(n.Int64)
	return &t
}

func now(t time.Time) time.Time {
	if t.IsZero() {
		return time.Now()
	}
	return t
}

// Pending reports the schema version of the database at path and the
// migrations Open would apply to it, changing nothing (a missing file is
// version 0 and is not created).
func Pending(ctx context.Context, path string) (have int, pending []migrate.Migration, err error) {
	ms, err := migrations()
	if err != nil {
		return 0, nil, fmt.Errorf("sqlite: read migrations: %w", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return 0, nil, fmt.Errorf("sqlite: %w", err)
	}
	if _, err := os.Stat(abs); errors.Is(err, fs.ErrNotExist) {
		pending, err := migrate.Pending(ms, 0)
		return 0, pending, err
	}
	db, err := sql.Open("sqlite", "file:"+abs+"?mode=ro")
	if err != nil {
		return 0, nil, fmt.Errorf("sqlite: open %s: %w", abs, err)
	}
	defer db.Close()
	var tables int
	if err := db.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'berth_migrations'").Scan(&tables); err != nil {
		return 0, nil, fmt.Errorf("sqlite: read %s: %w", abs, err)
	}
	if tables > 0 {
		if err := db.QueryRowContext(ctx, "SELECT coalesce(max(version), 0) FROM berth_migrations").Scan(&have); err != nil {
			return 0, nil, fmt.Errorf("sqlite: read schema version of %s: %w", abs, err)
		}
	}
	pending, err = migrate.Pending(ms, have)
	return have, pending, err
}
