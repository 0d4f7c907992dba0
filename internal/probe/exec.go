package probe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/berth-ci/berth"
)

// Bounds of an exec probe's output: the tail kept for the message, and how
// long the output may stay open once the command is dead (a process that
// left the command's process group can hold it for ever).
const (
	execOutputTail  = 512
	execOutputGrace = 100 * time.Millisecond
)

// execChecker probes by running a command; exit status 0 is reachable.
type execChecker struct {
	command []*field
}

func compileExec(s ExecSpec) (*execChecker, error) {
	var c compiler
	if len(s.Command) == 0 {
		c.errorf("probe.exec.command", "must name a program")
	}
	cmd := make([]*field, 0, len(s.Command))
	for i, a := range s.Command {
		if f := c.field(commandField(i), a, i == 0, nil); f != nil {
			cmd = append(cmd, f)
		} else {
			// An empty argument is allowed, and is passed on as such.
			cmd = append(cmd, &field{name: commandField(i)})
		}
	}
	if err := c.err(); err != nil {
		return nil, err
	}
	return &execChecker{command: cmd}, nil
}

func commandField(i int) string { return fmt.Sprintf("probe.exec.command[%d]", i) }

func (c *execChecker) Check(ctx context.Context, t *Target) Result {
	argv := make([]string, len(c.command))
	for i, f := range c.command {
		a, err := f.render(t)
		if err != nil {
			return probeError(err)
		}
		argv[i] = a
	}
	if argv[0] == "" {
		return probeError(errors.New(c.command[0].name + ": renders to an empty program name"))
	}
	// berth's environment plus the resource's, as ExecSpec documents.
	env := append(os.Environ(), berth.ResourceEnv(t.Name, t.Type, t.UserData)...)
	return runProbeCommand(ctx, argv, env)
}

// runProbeCommand runs argv in a process group of its own, with stdout and
// stderr into one pipe of which the tail is kept. When ctx ends the whole
// group is killed, and so is whatever the command left behind when it
// exits: a probe leaves nothing running. It does not use exec.CommandContext
// because the group must be killed as soon as the command exits, before
// waiting for the output to close, not WaitDelay later.
func runProbeCommand(ctx context.Context, argv, env []string) Result {
	r, w, err := os.Pipe()
	if err != nil {
		return Result{Reason: ReasonError, Message: "output pipe: " + err.Error()}
	}
	defer func() { _ = r.Close() }()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = w, w // an *os.File goes to the child as is, with no copying goroutine
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = cmd.Start()
	_ = w.Close() // the child has its copy; ours would keep the pipe open
	if err != nil {
		return Result{Reason: ReasonExecFailed, Message: "could not start: " + err.Error()}
	}
	pgid := cmd.Process.Pid // Setpgid with Pgid 0: the group is named after the leader
	killGroup := func() { _ = syscall.Kill(-pgid, syscall.SIGKILL) }

	out := &tailBuffer{max: execOutputTail}
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		_, _ = io.Copy(out, r)
	}()

	stop := context.AfterFunc(ctx, killGroup)
	waitErr := cmd.Wait()
	stop()
	killGroup() // what the command left in its group
	// The group is dead, so the pipe closes at once unless a process that
	// escaped the group (setsid) holds it; then give up on the rest.
	_ = r.SetReadDeadline(time.Now().Add(execOutputGrace))
	<-copied

	output := out.String()
	var exitErr *exec.ExitError
	switch {
	case waitErr == nil:
		return Result{OK: true, Message: joinOutput("exit status 0", output)}
	case ctx.Err() != nil && errors.Is(context.Cause(ctx), ErrTimeout):
		return Result{Reason: ReasonTimeout, Message: joinOutput(noAnswer+" (the command was still running and was killed)", output)}
	case ctx.Err() != nil:
		return Result{Reason: ReasonError, Message: joinOutput("probe cancelled: "+context.Cause(ctx).Error(), output)}
	case errors.As(waitErr, &exitErr):
		return Result{Reason: ReasonExecFailed, Message: joinOutput(exitErr.String(), output)}
	default:
		return Result{Reason: ReasonExecFailed, Message: joinOutput(waitErr.Error(), output)}
	}
}

func joinOutput(msg, output string) string {
	if output == "" {
		return msg
	}
	return msg + ": " + output
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	max int
	buf []byte
	cut bool
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.max; over > 0 {
		b.buf = b.buf[:copy(b.buf, b.buf[over:])]
		b.cut = true
	}
	return len(p), nil
}

// String is the tail, trimmed, valid UTF-8, with "…" where the start was
// cut off.
func (b *tailBuffer) String() string {
	tail := b.buf
	if b.cut {
		for len(tail) > 0 && !utf8.RuneStart(tail[0]) {
			tail = tail[1:]
		}
	}
	s := strings.TrimSpace(strings.ToValidUTF8(string(tail), ""))
	if b.cut && s != "" {
		s = "…" + s
	}
	return s
}
