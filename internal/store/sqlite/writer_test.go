package sqlite

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// batch runs fns as one group commit, as the writer does when they arrive
// together, and returns each one's answer.
func batch(t *testing.T, s *Store, fns ...func(*wtx) error) []error {
	t.Helper()
	ops := make([]*op, len(fns))
	for i, fn := range fns {
		ops[i] = &op{ctx: context.Background(), fn: fn, err: make(chan error, 1)}
	}
	// Nothing else writes meanwhile, so running the batch on another
	// goroutine than the writer's loop is safe; the channels order it.
	done := make(chan struct{})
	go func() {
		s.wr.run(ops)
		close(done)
	}()
	<-done
	out := make([]error, len(ops))
	for i, o := range ops {
		out[i] = <-o.err
	}
	return out
}

func openTest(t *testing.T) *Store {
	t.Helper()
	s, err := Open(context.Background(), filepath.Join(t.TempDir(), "w.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.tx(context.Background(), func(tx *wtx) error {
		_, err := tx.w.conn.ExecContext(context.Background(), "CREATE TABLE t (k TEXT PRIMARY KEY, v BLOB)")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return s
}

func insert(k string) func(*wtx) error {
	return func(tx *wtx) error {
		_, err := tx.exec("INSERT INTO t (k, v) VALUES (?, ?)", k, []byte("x"))
		return err
	}
}

func keys(t *testing.T, s *Store) string {
	t.Helper()
	r, err := s.r.Query("SELECT k FROM t ORDER BY k")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var ks []string
	for r.Next() {
		var k string
		r.Scan(&k)
		ks = append(ks, k)
	}
	return strings.Join(ks, ",")
}

// TestBatchIsolatesFailures: in a group commit, a write that fails (or
// panics) is undone alone; the others commit and say so.
func TestBatchIsolatesFailures(t *testing.T) {
	s := openTest(t)
	errs := batch(t, s,
		insert("a"),
		func(tx *wtx) error {
			if err := insert("b")(tx); err != nil {
				return err
			}
			return errors.New("refused after writing")
		},
		func(tx *wtx) error { panic("bug") },
		insert("a"), // duplicate key: fails alone
		insert("c"),
	)
	if errs[0] != nil || errs[4] != nil {
		t.Fatalf("healthy writes failed: %v", errs)
	}
	if errs[1] == nil || errs[2] == nil || !strings.Contains(errs[2].Error(), "panic") || errs[3] == nil {
		t.Fatalf("failing writes reported %v", errs)
	}
	if got := keys(t, s); got != "a,c" {
		t.Fatalf("committed %q, want a,c", got)
	}
}

// TestBatchLostTransaction: when one write's failure makes SQLite roll back
// the whole transaction (here: the database is full), no write of the batch
// is committed and none is reported as committed.
func TestBatchLostTransaction(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	var pages int
	if err := s.tx(ctx, func(tx *wtx) error {
		if err := tx.w.conn.QueryRowContext(ctx, "PRAGMA page_count").Scan(&pages); err != nil {
			return err
		}
		_, err := tx.w.conn.ExecContext(ctx, "PRAGMA max_page_count = "+strconv.Itoa(pages+2))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	big := func(tx *wtx) error {
		_, err := tx.exec("INSERT INTO t (k, v) VALUES ('big', zeroblob(1000000))")
		return err
	}
	errs := batch(t, s, insert("a"), big, insert("c"), insert("d"))
	for i, err := range errs {
		if err == nil {
			t.Errorf("write %d reported committed", i)
		}
	}
	if got := keys(t, s); got != "" {
		t.Fatalf("committed %q after the transaction was lost, want nothing", got)
	}
	// The writer goes on working.
	if errs := batch(t, s, insert("e")); errs[0] != nil {
		t.Fatalf("next write: %v", errs[0])
	}
}

// TestPanicWithOpenRows: a write that panics while it has a result set
// open must not wedge the writer or block Close.
func TestPanicWithOpenRows(t *testing.T) {
	s := openTest(t)
	errs := batch(t, s, insert("a"), func(tx *wtx) error {
		rows, err := tx.QueryContext(context.Background(), "SELECT k FROM t")
		if err != nil {
			return err
		}
		rows.Next()
		panic("bug while reading")
	}, insert("b"))
	if errs[0] != nil || errs[1] == nil || errs[2] != nil {
		t.Fatalf("errs = %v", errs)
	}
	if errs := batch(t, s, insert("c")); errs[0] != nil {
		t.Fatalf("the writer is wedged: %v", errs[0])
	}
	if got := keys(t, s); got != "a,b,c" {
		t.Fatalf("committed %q", got)
	}
	done := make(chan error, 1)
	go func() { done <- s.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close hung")
	}
}

// TestWALStartsOver: under writes that never pause, the WAL must still be
// started over from its beginning now and then. A checkpoint that runs
// beside the writer never catches up on its own, and the WAL grew without
// bound (2 GB in a minute of benchmark) until the writer finished each
// checkpoint's tail itself.
func TestWALStartsOver(t *testing.T) {
	s := openTest(t)
	s.wr.checkpointEvery = 10
	ctx := context.Background()
	write := func(i int) {
		t.Helper()
		err := s.tx(ctx, func(tx *wtx) error {
			_, err := tx.exec("INSERT OR REPLACE INTO t (k, v) VALUES (?, randomblob(4096))", strconv.Itoa(i%50))
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	write(0)
	first := walCheckpointSeq(t, s)
	// Started over every few dozen commits here, the WAL must have
	// started over twice well within 2,000; never started over, as it was,
	// its header keeps its first checkpoint sequence number throughout.
	const most = 2000
	for i := 1; i < most; i++ {
		write(i)
		if walCheckpointSeq(t, s) >= first+2 {
			t.Logf("WAL started over twice within %d commits", i)
			return
		}
	}
	t.Fatalf("the WAL did not start over twice in %d commits of continuous writes (checkpoint sequence %d, first %d)", most, walCheckpointSeq(t, s), first)
}

// walCheckpointSeq reads the checkpoint sequence number from the WAL's
// header, which SQLite increments each time it starts the WAL over.
func walCheckpointSeq(t *testing.T, s *Store) uint32 {
	t.Helper()
	f, err := os.Open(s.path + "-wal")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var hdr [16]byte
	if _, err := f.ReadAt(hdr[:], 0); err != nil {
		t.Fatal(err)
	}
	return binary.BigEndian.Uint32(hdr[12:16])
}
