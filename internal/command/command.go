// Package command runs the programs berth runs for resources (exec
// probes, janitors, provisioners and deprovisioners) so that none of them
// outlives its turn: each runs in a process group of its own, which is
// killed as a whole when the program exits or its context ends, and its
// output is kept bounded.
package command

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"
)

// outputGrace is how long the output may stay open once the program is
// dead: a process that left the program's process group (setsid) can hold
// it for ever.
const outputGrace = 100 * time.Millisecond

// Spec is one run of a program.
type Spec struct {
	// Argv is the program and its arguments; Env its whole environment.
	Argv, Env []string
	// Stdin, if not nil, is the program's standard input; otherwise it
	// reads from /dev/null.
	Stdin []byte
	// Tail is how many bytes of the output Result.Output keeps: the last
	// ones, where an error usually is.
	Tail int
	// StdoutLimit, if set, keeps the standard output apart, up to this
	// many bytes, in Result.Stdout; Result.Output is then the standard
	// error alone. Otherwise both go to Result.Output together.
	StdoutLimit int
	// DieWithBerth has the program and everything it starts in its
	// process group killed if berth dies first (kill -9, a crash), where
	// the system can (Linux): a janitor or a provisioner must not go on
	// alone while another berth process takes its resource over. The
	// kernel signals only a process whose parent died, so the program runs
	// under a small sh that is that process and kills the group (see
	// supervise); and it holds an OS thread for the run, since the kernel
	// ties the signal to the thread that started the process.
	DieWithBerth bool
}

// Result is how a run ended.
type Result struct {
	// Err is nil when the program exited with status 0. It is an
	// *exec.ExitError for another status, and ctx's error when ctx ended
	// first (the program was killed).
	Err error
	// Started is false when the program could not be started; Err says
	// why.
	Started bool
	// Output is the tail of what the program printed (see Spec.Tail),
	// trimmed, valid UTF-8, with "…" where its start was cut off.
	Output string
	// Stdout is the standard output, with Spec.StdoutLimit; StdoutCut is
	// set when it was longer and the rest was dropped.
	Stdout    []byte
	StdoutCut bool
}

// Run runs s until it exits or ctx ends, and returns once the program has
// exited and everything it left in its process group has been killed
// (with DieWithBerth: is dead). A process that left the group (setsid, a
// daemon) is not berth's to track. It does not use
// exec.CommandContext because the group must be killed as soon as the
// program exits, before waiting for the output to close, not WaitDelay
// later.
func Run(ctx context.Context, s Spec) Result {
	if len(s.Argv) == 0 || s.Argv[0] == "" {
		return Result{Err: errors.New("no program to run")}
	}
	argv := s.Argv
	if s.DieWithBerth && supervisor != "" {
		// A missing program would be the shell's exit 127; say so as
		// exec would.
		if _, err := exec.LookPath(argv[0]); err != nil {
			return Result{Err: err}
		}
		argv = append([]string{supervisor, "-c", superviseScript, "berth"}, argv...)
		// Start and Wait run on this goroutine: locked, the thread that
		// started the program lives until it is dead.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
	}
	r, w, err := os.Pipe()
	if err != nil {
		return Result{Err: err}
	}
	defer func() { _ = r.Close() }()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = s.Env
	if s.Stdin != nil {
		cmd.Stdin = bytes.NewReader(s.Stdin)
	}
	// An *os.File goes to the child as is, with no copying goroutine.
	cmd.Stdout, cmd.Stderr = w, w
	var (
		stdout       *limitBuffer
		outR, outW   *os.File
		stdoutCopied = make(chan struct{})
	)
	if s.StdoutLimit > 0 {
		if outR, outW, err = os.Pipe(); err != nil {
			_ = w.Close()
			return Result{Err: err}
		}
		defer func() { _ = outR.Close() }()
		cmd.Stdout = outW
		stdout = &limitBuffer{max: s.StdoutLimit}
	} else {
		close(stdoutCopied)
	}
	cmd.SysProcAttr = sysProcAttr(s.DieWithBerth && supervisor != "")
	err = cmd.Start()
	_ = w.Close() // the child has its copy; ours would keep the pipe open
	if outW != nil {
		_ = outW.Close()
	}
	if err != nil {
		return Result{Err: err}
	}
	pgid := cmd.Process.Pid // Setpgid with Pgid 0: the group is named after the leader
	killGroup := func() { _ = syscall.Kill(-pgid, syscall.SIGKILL) }

	out := &TailBuffer{Max: s.Tail}
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		_, _ = io.Copy(out, r)
	}()
	if stdout != nil {
		go func() {
			defer close(stdoutCopied)
			_, _ = io.Copy(stdout, outR)
		}()
	}

	stop := context.AfterFunc(ctx, killGroup)
	waitErr := cmd.Wait()
	stop()
	killGroup() // what the program left in its group
	if s.DieWithBerth {
		// A janitor's next command on the same resource must not begin
		// while this one's processes still run: wait for the kernel to
		// finish them off (SIGKILL cannot be caught; this is a moment,
		// bounded in case a process hangs in the kernel).
		waitGroupDead(pgid)
	}
	// The group is dead, so the pipes close at once unless a process that
	// escaped the group holds them; then give up on the rest.
	_ = r.SetReadDeadline(time.Now().Add(outputGrace))
	if outR != nil {
		_ = outR.SetReadDeadline(time.Now().Add(outputGrace))
	}
	<-copied
	<-stdoutCopied

	res := Result{Started: true, Err: waitErr, Output: out.String()}
	if ctx.Err() != nil && waitErr != nil {
		res.Err = ctx.Err()
	}
	if stdout != nil {
		res.Stdout, res.StdoutCut = stdout.buf.Bytes(), stdout.cut
	}
	return res
}

// waitGroupDead waits, up to groupDeathWait, until no process of group
// pgid is alive.
func waitGroupDead(pgid int) {
	deadline := time.Now().Add(groupDeathWait)
	for pause := time.Millisecond; groupLives(pgid) && time.Now().Before(deadline); pause = min(2*pause, 50*time.Millisecond) {
		time.Sleep(pause)
	}
}

// groupDeathWait bounds waitGroupDead.
const groupDeathWait = 5 * time.Second

// superviseScript runs the program ("$@") in the background and waits
// for it, its exit status becoming the shell's; it is the group's leader,
// and berth's child. When berth dies the kernel sends it SIGTERM (see
// sysProcAttr), on which it kills the whole group. The program's standard
// input is passed on by hand: a background command's would be /dev/null.
const superviseScript = `trap 'kill -KILL 0' TERM; exec 3<&0; "$@" <&3 3<&- & wait $!`

// supervisor is the shell that runs superviseScript; "" where there is
// none (the program then runs as berth's child, and outlives berth).
var supervisor = func() string {
	if !superviseSupported {
		return ""
	}
	sh, err := exec.LookPath("sh")
	if err != nil {
		return ""
	}
	return sh
}()

// Describe says how a run ended in a few words: "exit status 3", "killed
// by signal 9", "could not start: …".
func (r Result) Describe() string {
	var exitErr *exec.ExitError
	switch {
	case r.Err == nil:
		return "exit status 0"
	case !r.Started:
		return "could not start: " + r.Err.Error()
	case errors.As(r.Err, &exitErr):
		return exitErr.String()
	}
	return r.Err.Error()
}

// TailBuffer keeps the last Max bytes written to it.
type TailBuffer struct {
	Max int
	buf []byte
	cut bool
}

func (b *TailBuffer) Write(p []byte) (int, error) {
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.Max; over > 0 {
		b.buf = b.buf[:copy(b.buf, b.buf[over:])]
		b.cut = true
	}
	return len(p), nil
}

// String is the tail, trimmed, valid UTF-8, with "…" where the start was
// cut off.
func (b *TailBuffer) String() string {
	tail := b.buf
	if b.cut {
		for len(tail) > 0 && !utf8.RuneStart(tail[0]) {
			tail = tail[1:]
		}
	}
	// NUL is dropped too: PostgreSQL refuses it in text, and a janitor
	// that printed one must still have its outcome recorded.
	s := strings.TrimSpace(strings.ReplaceAll(strings.ToValidUTF8(string(tail), ""), "\x00", ""))
	if b.cut && s != "" {
		s = "…" + s
	}
	return s
}

// limitBuffer keeps the first max bytes written to it and drops the rest.
type limitBuffer struct {
	max int
	buf bytes.Buffer
	cut bool
}

// Write takes all of p, so that the program is never blocked on a full
// pipe, and keeps what fits.
func (b *limitBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if room := b.max - b.buf.Len(); room < n {
		b.cut = true
		p = p[:max(room, 0)]
	}
	b.buf.Write(p)
	return n, nil
}
