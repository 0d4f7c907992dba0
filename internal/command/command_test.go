package command

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestTailBuffer(t *testing.T) {
	t.Parallel()
	b := &TailBuffer{Max: 8}
	_, _ = b.Write([]byte("  ab"))
	if got := b.String(); got != "ab" {
		t.Fatalf("%q", got)
	}
	_, _ = b.Write([]byte("cdefgh€ \n"))
	// 8 bytes: "gh€ \n" is 7 bytes; the cut lands in "f"; then
	// trimmed.
	if got := b.String(); got != "…fgh€" {
		t.Fatalf("%q", got)
	}
	b = &TailBuffer{Max: 3}
	_, _ = b.Write([]byte("a€b")) // the cut lands inside €
	if got := b.String(); got != "…b" {
		t.Fatalf("%q", got)
	}
	// A program that prints NUL still has its output kept, less the NUL
	// (PostgreSQL cannot store it).
	b = &TailBuffer{Max: 100}
	_, _ = b.Write([]byte("bin\x00ary\x00"))
	if got := b.String(); got != "binary" {
		t.Fatalf("%q", got)
	}
}

func TestRunStdinStdoutApart(t *testing.T) {
	t.Parallel()
	res := Run(context.Background(), Spec{Argv: []string{"sh", "-c", `cat; echo oops >&2; echo "$GREETING"`}, Env: []string{"GREETING=hi"},
		Stdin: []byte(`{"k":"v"}`), Tail: 100, StdoutLimit: 100, DieWithBerth: true})
	if res.Err != nil || !res.Started || string(res.Stdout) != "{\"k\":\"v\"}hi\n" || res.Output != "oops" || res.StdoutCut {
		t.Fatalf("%+v", res)
	}
}

func TestRunStdoutLimit(t *testing.T) {
	t.Parallel()
	// Far more than a pipe holds: the program must not block on it.
	res := Run(context.Background(), Spec{Argv: []string{"sh", "-c", `head -c 1000000 /dev/zero; echo done >&2`}, Tail: 100, StdoutLimit: 10})
	if res.Err != nil || len(res.Stdout) != 10 || !res.StdoutCut || res.Output != "done" {
		t.Fatalf("err %v, %d bytes, cut %v, output %q", res.Err, len(res.Stdout), res.StdoutCut, res.Output)
	}
}

func TestRunFailures(t *testing.T) {
	t.Parallel()
	res := Run(context.Background(), Spec{Argv: []string{"sh", "-c", "echo no; exit 3"}, Tail: 100})
	var exitErr *exec.ExitError
	if !errors.As(res.Err, &exitErr) || exitErr.ExitCode() != 3 || res.Describe() != "exit status 3" || res.Output != "no" {
		t.Fatalf("%+v (%s)", res, res.Describe())
	}
	res = Run(context.Background(), Spec{Argv: []string{filepath.Join(t.TempDir(), "missing")}})
	if res.Started || !strings.HasPrefix(res.Describe(), "could not start: ") {
		t.Fatalf("%+v", res)
	}
	if res := Run(context.Background(), Spec{}); res.Err == nil {
		t.Fatal("an empty argv ran")
	}
}

// TestRunKillsGroupOnCancel: a program that would run for ever, and its
// child, are killed when ctx ends; Run returns ctx's error.
func TestRunKillsGroupOnCancel(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	started := filepath.Join(dir, "started")
	if err := exec.Command("mkfifo", started).Run(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan Result, 1)
	go func() {
		done <- Run(ctx, Spec{Argv: []string{"sh", "-c", `sleep 1000 & echo $! > "$1"; wait`, "sh", started}, Tail: 100})
	}()
	b, err := os.ReadFile(started) // blocks until the child has started
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	res := <-done
	if !errors.Is(res.Err, context.Canceled) {
		t.Fatalf("%+v", res)
	}
	// Killed: dead within moments (SIGKILL cannot be caught), reaped
	// by whoever its parent is now.
	pid := strings.TrimSpace(string(b))
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := os.ReadFile("/proc/" + pid + "/stat")
		if err != nil || strings.Contains(string(st), ") Z ") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the program's child %s outlived it: %s", pid, st)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestDieWithBerthWaitsForTheGroup: with DieWithBerth, the program runs
// under the supervising shell, gets its standard input and exit status
// through it, and Run returns only once a child it left behind is dead.
func TestDieWithBerthWaitsForTheGroup(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "child")
	res := Run(context.Background(), Spec{Argv: []string{"sh", "-c", `sleep 1000 & echo $! > "$1"; cat; exit 4`, "sh", pidFile},
		Stdin: []byte("in\n"), Tail: 100, DieWithBerth: true})
	var exitErr *exec.ExitError
	if !errors.As(res.Err, &exitErr) || exitErr.ExitCode() != 4 || res.Output != "in" {
		t.Fatalf("%+v", res)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && !strings.Contains(string(st), ") Z ") {
		t.Fatalf("Run returned while the program's child %d lived: %s", pid, st)
	}
	if res := Run(context.Background(), Spec{Argv: []string{filepath.Join(dir, "missing")}, DieWithBerth: true}); res.Started ||
		!strings.HasPrefix(res.Describe(), "could not start: ") {
		t.Fatalf("a missing program under the supervisor: %+v", res)
	}
}
