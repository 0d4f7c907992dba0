package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/client"
)

// DefaultReadyTimeout is how long wait-ready and run --ready wait.
const DefaultReadyTimeout = 5 * time.Minute

func (e *env) waitReadyCommand() *cobra.Command {
	var (
		timeout time.Duration
		asJSON  bool
	)
	cmd := &cobra.Command{
		Use:   "wait-ready LEASE_ID [--timeout D]",
		Short: "Wait until a leased resource is Connected",
		Long: `Wait until the resource a lease holds is Connected, as its pool's probe
finds it: for a job that creates or resets a cluster and must not race its
network coming up. berth probes it at once rather than after its backoff.

Exits 0 when it is Connected; 75 (infrastructure failure) when it is not
within --timeout or the lease is lost; 2 when its pool has no probe.`,
		Args: argsExactly("LEASE_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if timeout <= 0 {
				return usageErrorf("--timeout must be positive")
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			r, err := waitReady(cmd.Context(), c, args[0], timeout)
			if err != nil {
				return err
			}
			if asJSON {
				return e.printJSON(r)
			}
			fmt.Fprintf(e.stdout, "%s is Connected: %s\n", r.Name, oneLine(r.Health.Message))
			return nil
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", DefaultReadyTimeout, "how long to wait")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the resource as JSON")
	return cmd
}

// waitReady waits up to timeout for lease id's resource to be Connected,
// and turns every way of not getting there into an error of the right
// exit code.
func waitReady(ctx context.Context, c *client.Client, id string, timeout time.Duration) (*berth.Resource, error) {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	r, err := c.WaitReady(wctx, id)
	switch {
	case err == nil:
		return r, nil
	case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
		if r == nil {
			// The deadline cut the last call short: ask once more, so
			// that the message says what the resource is up to.
			nctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			var ready bool
			ready, r, err = c.Ready(nctx, id)
			switch {
			case err != nil:
				return nil, infraErrorf("lease %s: not ready within %s (%s)", id, timeout, brokerMessage(err))
			case ready:
				return r, nil
			}
		}
		return nil, infraErrorf("%s not ready within %s: %s", r.Name, timeout, healthWords(r.Health))
	}
	switch berth.ErrorCodeOf(err) {
	case berth.ELeaseLost, berth.ENotFound:
		return nil, infraErrorf("%s", brokerMessage(err))
	case berth.EInvalid:
		return nil, &exitError{code: ExitUsage, err: errors.New(brokerMessage(err))}
	}
	return nil, err
}

// healthWords says a health condition in one line: "Disconnected:
// ConnectionRefused (dial tcp …: connection refused)".
func healthWords(h berth.Health) string {
	s := string(h.Status)
	if h.Reason != "" {
		s += ": " + h.Reason
	}
	if h.Message != "" {
		s += " (" + oneLine(h.Message) + ")"
	}
	return s
}
