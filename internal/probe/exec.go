package probe

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/command"
)

// execOutputTail is how much of an exec probe's output its message keeps.
const execOutputTail = 512

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

// runProbeCommand runs argv (see command.Run: in a process group of its
// own, killed as a whole when it exits or ctx ends; a probe leaves nothing
// running) and turns how it ended into a probe result, with the tail of
// its output.
func runProbeCommand(ctx context.Context, argv, env []string) Result {
	res := command.Run(ctx, command.Spec{Argv: argv, Env: env, Tail: execOutputTail})
	var exitErr *exec.ExitError
	switch {
	case !res.Started:
		return Result{Reason: ReasonExecFailed, Message: res.Describe()}
	case res.Err == nil:
		return Result{OK: true, Message: joinOutput("exit status 0", res.Output)}
	case ctx.Err() != nil && errors.Is(context.Cause(ctx), ErrTimeout):
		return Result{Reason: ReasonTimeout, Message: joinOutput(noAnswer+" (the command was still running and was killed)", res.Output)}
	case ctx.Err() != nil:
		return Result{Reason: ReasonError, Message: joinOutput("probe cancelled: "+context.Cause(ctx).Error(), res.Output)}
	case errors.As(res.Err, &exitErr):
		return Result{Reason: ReasonExecFailed, Message: joinOutput(exitErr.String(), res.Output)}
	default:
		return Result{Reason: ReasonExecFailed, Message: joinOutput(res.Err.Error(), res.Output)}
	}
}

func joinOutput(msg, output string) string {
	if output == "" {
		return msg
	}
	return msg + ": " + output
}
