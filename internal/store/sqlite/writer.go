package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"github.com/berth-ci/berth"
	"runtime"
	"sync"
)

// maxBatch bounds how many writes share one commit.
const maxBatch = 128

// checkpointEvery is how many commits pass between checkpoints, unless a
// test sets writer.checkpointEvery. The writer
// never checkpoints itself (that would stall every caller behind it for
// the checkpoint's writes and fsync); a checkpointer on its own connection
// copies the WAL back into the database while writes go on.
const checkpointEvery = 200

// errClosed is returned for writes after Close.
var errClosed = errors.New("sqlite: store is closed")

// writer owns the one write connection and commits in groups: every write
// waiting when a commit starts joins it, so that under load one commit (one
// WAL append, the shared pages written once) serves many callers. Should a
// write fail, the group runs again with each write in a savepoint of its
// own, so that only the failed one is undone. A caller is answered only after the commit that
// holds its write has succeeded, so the group changes how often berth
// commits, never what it acknowledges. Alone, a write commits at once.
type writer struct {
	conn *sql.Conn
	// commits counts commits since the last checkpoint kick; kick is
	// told every checkpointEvery commits (a checkpointer listens, once
	// the store is open). caught says the
	// checkpointer has copied what the WAL held when it was kicked; the
	// writer then copies the rest itself (see checkpointer).
	commits         int
	checkpointEvery int
	kick            chan struct{}
	caught          chan struct{}
	ops             chan *op
	quit            chan struct{}
	done            chan struct{}
	once            sync.Once
	stmts           map[string]*sql.Stmt
}

type op struct {
	ctx context.Context
	fn  func(tx *wtx) error
	err chan error
}

func newWriter(conn *sql.Conn) *writer {
	w := &writer{conn: conn, ops: make(chan *op), quit: make(chan struct{}), done: make(chan struct{}), stmts: map[string]*sql.Stmt{},
		kick: make(chan struct{}, 1), caught: make(chan struct{}, 1), checkpointEvery: checkpointEvery}
	go w.loop()
	return w
}

func (w *writer) close() error {
	var err error
	w.once.Do(func() {
		close(w.quit)
		<-w.done
		var errs []error
		for _, st := range w.stmts {
			errs = append(errs, st.Close())
		}
		errs = append(errs, w.conn.Close())
		err = errors.Join(errs...)
	})
	return err
}

// do runs fn in a write transaction and returns once it is committed (or
// failed). A write whose ctx ends before it starts is not run; once started
// it runs to its end, so that the answer says what really happened.
func (w *writer) do(ctx context.Context, fn func(tx *wtx) error) error {
	o := &op{ctx: ctx, fn: fn, err: make(chan error, 1)}
	select {
	case w.ops <- o:
	case <-ctx.Done():
		return ctx.Err()
	case <-w.quit:
		return errClosed
	}
	return <-o.err
}

func (w *writer) loop() {
	defer close(w.done)
	for {
		var batch []*op
		select {
		case o := <-w.ops:
			batch = append(batch, o)
		case <-w.quit:
			return
		}
		// Let the handlers that are ready to run queue their writes first,
		// so that they share this commit instead of waiting for the next:
		// on two cores the writer otherwise often committed a batch of one
		// while the other writers were a moment behind.
		runtime.Gosched()
	drain:
		for len(batch) < maxBatch {
			select {
			case o := <-w.ops:
				batch = append(batch, o)
			default:
				break drain
			}
		}
		w.run(batch)
		select {
		case <-w.caught:
			w.finishCheckpoint()
		default:
		}
	}
}

// finishCheckpoint copies into the database the WAL frames appended while
// the checkpointer ran, so that the next transaction starts the WAL over.
// No write runs meanwhile, so it completes unless a reader still reads an
// older snapshot; then the next round will. It costs the writer a short
// pause (the tail's page writes and one fsync) every checkpointEvery
// commits.
func (w *writer) finishCheckpoint() {
	// A failure leaves the WAL to the next round, as in checkpointer.
	_, _ = w.conn.ExecContext(context.Background(), "PRAGMA wal_checkpoint(PASSIVE)")
}

func (w *writer) run(batch []*op) {
	live := batch[:0]
	for _, o := range batch {
		if err := o.ctx.Err(); err != nil {
			o.err <- err
			continue
		}
		live = append(live, o)
	}
	if len(live) == 0 {
		return
	}
	// Fast path: every write straight into one transaction. Should one
	// fail, its partial writes cannot be told apart from the others', so
	// the transaction is rolled back and the whole batch runs again with a
	// savepoint around each write. Failures are rare on the hot path
	// (an acquire that finds nothing free is not a failure).
	errs, retry := w.attempt(live, false)
	if retry {
		errs, _ = w.attempt(live, true)
	}
	for i, o := range live {
		o.err <- errs[i]
	}
}

// attempt runs ops in one transaction and commits what succeeded. Without
// savepoints, the first failure rolls everything back and asks for a retry
// (with savepoints when there are several ops; a lone op's error is its
// answer). It returns each op's answer.
func (w *writer) attempt(ops []*op, savepoints bool) (errs []error, retry bool) {
	errs = make([]error, len(ops))
	all := func(err error) []error {
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	tx := &wtx{w: w}
	if _, err := tx.exec("BEGIN IMMEDIATE"); err != nil {
		return all(fmt.Errorf("sqlite: begin: %w", err)), false
	}
	ok := 0
	for i, o := range ops {
		tx.principal, _ = berth.PrincipalFrom(o.ctx)
		if !savepoints {
			if errs[i] = call(o.fn, tx); errs[i] != nil {
				_, _ = tx.exec("ROLLBACK")
				if len(ops) == 1 {
					return errs, false
				}
				return nil, true
			}
			ok++
			continue
		}
		mark := len(tx.events)
		var lost error
		errs[i], lost = w.inSavepoint(tx, o.fn)
		if lost != nil {
			// SQLite rolled the whole transaction back (disk full, I/O
			// error): the writes before this one are gone too, and the
			// ones after must not run outside a transaction.
			aborted := fmt.Errorf("sqlite: write not committed: the transaction it shared was rolled back: %w", lost)
			for j := range ops {
				if j != i {
					errs[j] = aborted
				}
			}
			_, _ = tx.exec("ROLLBACK")
			return errs, false
		}
		if errs[i] != nil {
			tx.events = tx.events[:mark] // undone with its savepoint
			continue
		}
		ok++
	}
	if ok == 0 {
		_, _ = tx.exec("ROLLBACK")
		return errs, false
	}
	if err := tx.flushEvents(); err != nil {
		_, _ = tx.exec("ROLLBACK")
		return all(err), false
	}
	if _, err := tx.exec("COMMIT"); err != nil {
		_, _ = tx.exec("ROLLBACK")
		cerr := fmt.Errorf("sqlite: commit: %w", err)
		for i := range errs {
			if errs[i] == nil {
				errs[i] = cerr
			}
		}
		return errs, false
	}
	w.commits++
	if w.commits >= w.checkpointEvery {
		w.commits = 0
		select {
		case w.kick <- struct{}{}:
		default: // one is pending already
		}
	}
	return errs, false
}

// inSavepoint runs fn so that its failure undoes only its own writes. lost
// is set when the failure took the whole transaction with it (the
// savepoint is gone), which the caller must treat as every write of the
// batch failing.
func (w *writer) inSavepoint(tx *wtx, fn func(*wtx) error) (err, lost error) {
	if _, err := tx.exec("SAVEPOINT op"); err != nil {
		return fmt.Errorf("sqlite: savepoint: %w", err), err
	}
	if err := call(fn, tx); err != nil {
		if _, rerr := tx.exec("ROLLBACK TO op"); rerr != nil {
			return err, errors.Join(err, rerr)
		}
		if _, rerr := tx.exec("RELEASE op"); rerr != nil {
			return err, errors.Join(err, rerr)
		}
		return err, nil
	}
	if _, err := tx.exec("RELEASE op"); err != nil {
		return fmt.Errorf("sqlite: release savepoint: %w", err), err
	}
	return nil, nil
}

// call runs fn, turning a panic into an error so that one bad write cannot
// take the writer, and every caller waiting on it, down.
func call(fn func(*wtx) error, tx *wtx) (err error) {
	defer func() {
		tx.closeOpen()
		if v := recover(); v != nil {
			err = fmt.Errorf("sqlite: panic in write: %v", v)
		}
	}()
	return fn(tx)
}

// wtx is the writer's connection inside a transaction. Statements are
// prepared once and reused; they run without a cancellable context, since
// a write, once started, must finish so its outcome is known (and database/sql
// would start a goroutine per query to watch one).
type wtx struct {
	w *writer
	// open are the result sets handed out during the current write; they
	// are closed after it, so that a write that panics mid-loop cannot
	// leave a statement running (which would block the commit and every
	// checkpoint).
	open []*sql.Rows
	// events wait here and are written with one statement per chunk just
	// before the commit: an event is an append that nothing in the same
	// transaction reads back.
	events []any
	// principal made the write now running (from its context): its
	// events record it.
	principal berth.Principal
}

// eventCols is the number of parameters one event takes.
const eventCols = 13

// eventChunk is how many events one INSERT writes.
const eventChunk = 64

// addEvent queues one event's parameters for flushEvents.
func (t *wtx) addEvent(args ...any) {
	t.events = append(t.events, args...)
}

// flushEvents writes the queued events.
func (t *wtx) flushEvents() error {
	for len(t.events) > 0 {
		n := min(len(t.events)/eventCols, eventChunk)
		q := insertEvents(n)
		if _, err := t.exec(q, t.events[:n*eventCols]...); err != nil {
			return fmt.Errorf("write events: %w", err)
		}
		t.events = t.events[n*eventCols:]
	}
	return nil
}

func (t *wtx) stmt(q string) (*sql.Stmt, error) {
	if st, ok := t.w.stmts[q]; ok {
		return st, nil
	}
	st, err := t.w.conn.PrepareContext(context.Background(), q)
	if err != nil {
		return nil, err
	}
	t.w.stmts[q] = st
	return st, nil
}

func (t *wtx) exec(q string, args ...any) (sql.Result, error) {
	st, err := t.stmt(q)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(context.Background(), args...)
}

// ExecContext, QueryContext and QueryRowContext mirror *sql.Tx so that the
// store's code reads the same; ctx is not used (see wtx).
func (t *wtx) ExecContext(_ context.Context, q string, args ...any) (sql.Result, error) {
	return t.exec(q, args...)
}

func (t *wtx) QueryContext(_ context.Context, q string, args ...any) (*sql.Rows, error) {
	st, err := t.stmt(q)
	if err != nil {
		return nil, err
	}
	rows, err := st.QueryContext(context.Background(), args...)
	if err == nil {
		t.open = append(t.open, rows)
	}
	return rows, err
}

// closeOpen closes what the last write left open.
func (t *wtx) closeOpen() {
	for _, r := range t.open {
		_ = r.Close()
	}
	t.open = t.open[:0]
}

func (t *wtx) QueryRowContext(_ context.Context, q string, args ...any) *sql.Row {
	st, err := t.stmt(q)
	if err != nil {
		// sql.Row cannot carry an error of ours; run the query unprepared
		// so that Scan reports the same error.
		return t.w.conn.QueryRowContext(context.Background(), q, args...)
	}
	return st.QueryRowContext(context.Background(), args...)
}
