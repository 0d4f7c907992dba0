package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/client"
)

func (e *env) runCommand() *cobra.Command {
	var (
		a    acquireFlags
		opts runOptions
	)
	cmd := &cobra.Command{
		Use:   "run --type T [flags] -- COMMAND [ARG...]",
		Short: "Lease a resource for the length of one command",
		Long: `Lease a resource, run COMMAND with it, and give it back.

The command sees BERTH_RESOURCE_NAME, BERTH_RESOURCE_TYPE, BERTH_LEASE_ID,
BERTH_LEASE_TOKEN, the resource's user data as BERTH_USERDATA (JSON) and as
one BERTH_USERDATA_<KEY> variable per key (upper case, other characters as _).
berth heartbeats the lease while the command runs and releases it when the
command ends, then exits with the command's exit code.

If the lease is lost while the command runs, berth stops the command
(SIGTERM to its process group, SIGKILL after --kill-grace) and exits 75 with
a message that the infrastructure failed, not the test. Heartbeats are at
most 10 s apart, and one more is sent when the command ends: a lease lost
just before then also exits 75, whatever the command's exit code. Not getting a
resource (none free within --wait, broker unreachable) also exits 75.

In a pool with a health probe, a resource that becomes Disconnected while the
command runs is reported by the heartbeats: if it is still Disconnected after
--disconnect-grace, berth stops the command and exits 75 with
"infrastructure failure: RESOURCE disconnected: REASON". A command that fails
while its resource is Disconnected also exits 75. With --ready, the command
starts only once the resource is Connected (see wait-ready).`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageErrorf("run needs a command after -- (see 'berth run --help')")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			p, err := a.params(e)
			if err != nil {
				return err
			}
			if opts.disconnectGrace < 0 {
				return usageErrorf("--disconnect-grace must not be negative")
			}
			if opts.readyTimeout <= 0 {
				return usageErrorf("--ready-timeout must be positive")
			}
			return e.runWithLease(cmd.Context(), c, p, args, opts)
		},
	}
	a.register(cmd)
	f := cmd.Flags()
	f.DurationVar(&opts.killGrace, "kill-grace", 10*time.Second, "how long the command gets to stop after SIGTERM before SIGKILL")
	f.DurationVar(&opts.disconnectGrace, "disconnect-grace", 0, "how long the resource may stay Disconnected before the command is stopped")
	f.BoolVar(&opts.ready, "ready", false, "start the command only once the resource is Connected")
	f.DurationVar(&opts.readyTimeout, "ready-timeout", DefaultReadyTimeout, "with --ready, how long to wait for it")
	return cmd
}

type runOptions struct {
	killGrace, disconnectGrace time.Duration
	ready                      bool
	readyTimeout               time.Duration
}

func (e *env) runWithLease(ctx context.Context, c *client.Client, p client.AcquireParams, argv []string, opts runOptions) error {
	killGrace := opts.killGrace
	h, err := c.Hold(ctx, p, client.HoldOptions{})
	if err != nil {
		return acquireError(err, p)
	}
	r := h.Resource()
	release := func(to berth.ReleaseTarget) {
		// The lease must go back even when berth itself is being stopped.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if _, err := h.Release(rctx, client.ReleaseParams{To: to}); err != nil && berth.ErrorCodeOf(err) != berth.ELeaseLost {
			fmt.Fprintf(e.stderr, "berth: warning: release of %s failed: %v (the lease will expire)\n", r.Name, oneLine(err.Error()))
		}
	}

	if opts.ready {
		if _, err := waitReady(ctx, c, h.Lease().ID, opts.readyTimeout); err != nil {
			release(berth.ReleaseDirty)
			return err
		}
	}

	child := exec.Command(argv[0], argv[1:]...)
	child.Env = append(os.Environ(), leaseEnv(h.Lease(), r)...)
	child.Stdin, child.Stdout, child.Stderr = e.stdin, e.stdout, e.stderr
	// Its own process group, so that stopping it stops what it started —
	// unless it runs on a terminal, where a background group would be
	// stopped the moment it reads input (and ^C reaches the group anyway).
	if !isTerminal(e.stdin) {
		child.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	}
	if err := child.Start(); err != nil {
		release(berth.ReleaseFree) // never used
		return &exitError{code: 127, err: fmt.Errorf("cannot start %s: %w", argv[0], err)}
	}
	done := make(chan error, 1)
	go func() { done <- child.Wait() }()

	signalChild := func(sig syscall.Signal) {
		if child.SysProcAttr != nil && child.SysProcAttr.Setpgid {
			_ = syscall.Kill(-child.Process.Pid, sig)
		} else {
			_ = child.Process.Signal(sig)
		}
	}
	stop := func() error {
		signalChild(syscall.SIGTERM)
		t := time.NewTimer(killGrace)
		defer t.Stop()
		select {
		case err := <-done:
			return err
		case <-t.C:
			signalChild(syscall.SIGKILL)
			return <-done
		}
	}

	// grace runs while the resource is Disconnected: when it fires, the
	// command is stopped.
	var grace <-chan time.Time
	var graceTimer *time.Timer
	defer func() {
		if graceTimer != nil {
			graceTimer.Stop()
		}
	}()
	for {
		select {
		case err := <-done:
			// Was the lease still ours when the command ended? A loss since
			// the last heartbeat (an operator released it, say) makes the
			// command's result meaningless, whatever its exit code.
			now, lost := e.leaseLost(ctx, c, h)
			if lost != nil {
				return infraErrorf("lease on %s (%s) lost while the command ran: %s", r.Name, r.Type, brokerMessage(lost))
			}
			release(berth.ReleaseDirty)
			e.exitCode = exitCodeOf(err)
			if e.exitCode != 0 && now != nil && now.Health.Status == berth.HealthDisconnected {
				// The test failed while its resource was unreachable:
				// that is the infrastructure's failure, not the test's.
				return infraErrorf("%s disconnected: %s", r.Name, disconnectWords(now.Health))
			}
			return nil
		case lost := <-h.Lost():
			_ = stop()
			return infraErrorf("lease on %s (%s) lost while the command ran: %s", r.Name, r.Type, brokerMessage(lost))
		case <-h.HealthChanged():
			switch now := h.Resource().Health; {
			case now.Status == berth.HealthDisconnected && grace == nil:
				fmt.Fprintf(e.stderr, "berth: %s is Disconnected: %s; the command is stopped unless it comes back within %s\n",
					r.Name, disconnectWords(now), opts.disconnectGrace)
				graceTimer = time.NewTimer(opts.disconnectGrace)
				grace = graceTimer.C
			case now.Status != berth.HealthDisconnected && grace != nil:
				fmt.Fprintf(e.stderr, "berth: %s is %s again\n", r.Name, now.Status)
				graceTimer.Stop()
				grace = nil
			}
		case <-grace:
			health := h.Resource().Health
			_ = stop()
			release(berth.ReleaseDirty)
			return infraErrorf("%s disconnected: %s", r.Name, disconnectWords(health))
		case <-ctx.Done():
			err := stop()
			release(berth.ReleaseDirty)
			e.exitCode = exitCodeOf(err)
			return nil
		}
	}
}

// disconnectWords is the reason and message of a Disconnected resource:
// "ConnectionRefused (dial tcp …: connection refused)".
func disconnectWords(h berth.Health) string {
	s := h.Reason
	if s == "" {
		s = "unknown reason"
	}
	if h.Message != "" {
		s += " (" + oneLine(h.Message) + ")"
	}
	return s
}

// leaseLost returns why h's lease is lost, or nil if it is still held or
// the broker cannot say (unreachable: the release that follows will warn).
// It asks with one last heartbeat rather than reading the lease, since only
// a renewal proves the lease was not taken away in the meantime; that
// heartbeat's resource (nil if there was none) tells its health now.
func (e *env) leaseLost(ctx context.Context, c *client.Client, h *client.Handle) (*berth.Resource, error) {
	select {
	case lost := <-h.Lost():
		if lost != nil {
			return nil, lost
		}
	default:
	}
	hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	res, err := c.Heartbeat(hctx, h.Lease().ID)
	switch berth.ErrorCodeOf(err) {
	case berth.ELeaseLost, berth.ENotFound:
		return nil, err
	}
	if err != nil {
		return nil, nil
	}
	return res.Resource, nil
}

// exitCodeOf maps a child's end to a shell-style exit code.
func exitCodeOf(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	return ExitError
}

func leaseEnv(l *berth.Lease, r *berth.Resource) []string {
	return append([]string{"BERTH_LEASE_ID=" + l.ID, fmt.Sprintf("BERTH_LEASE_TOKEN=%d", l.Token)},
		berth.ResourceEnv(r.Name, r.Type, r.UserData)...)
}

// brokerMessage is the broker's own words for err when it has them, without
// the client's method-and-path wrapping, which means nothing to a CI log.
func brokerMessage(err error) string {
	var be *berth.Error
	if errors.As(err, &be) {
		return oneLine(be.Message)
	}
	return oneLine(fmt.Sprint(err))
}

// isTerminal reports whether r is a terminal (not merely a character
// device: /dev/null, CI's usual stdin, is one too).
func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
