package cli

import (
	"fmt"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-ci/berth/client"

	"github.com/berth-ci/berth/internal/bench"
)

func (e *env) benchCommand() *cobra.Command {
	var (
		typ             string
		concurrency     int
		duration        time.Duration
		waiters, rounds int
	)
	cmd := &cobra.Command{
		Use:   "bench --type T [--concurrency N] [--duration D] [--waiters W]",
		Short: "Measure a running broker",
		Long: `Measure a running broker through its HTTP API.

Acquire+release cycles: --concurrency workers each acquire a resource of
--type and release it (as free) as fast as they can for --duration; printed
are cycles per second and the latency of cycles, acquires and releases.

Handoff (with --waiters W > 0): every free resource of --type is taken,
W waiters queue behind them, and --rounds times one lease is released while
the time until a waiter holds the resource is measured.

With several --server URLs (replicas of one store), the workers are spread
over them round-robin, each falling back to the others; in the handoff
measurement the releases go to the first server and the waiters to the
others, so that every handoff crosses replicas.

Run it against a pool nobody else uses: it takes resources of the type.`,
		Args: argsNone,
		RunE: func(cmd *cobra.Command, args []string) error {
			if typ == "" {
				return usageErrorf("--type is required")
			}
			switch {
			case concurrency < 0 || waiters < 0 || rounds < 0:
				return usageErrorf("--concurrency, --waiters and --rounds must not be negative")
			case concurrency > 0 && duration <= 0:
				return usageErrorf("--duration must be positive, not %s", duration)
			case concurrency == 0 && waiters == 0:
				return usageErrorf("nothing to measure: give --concurrency or --waiters")
			}
			// One client per server, each trying the others after its own:
			// workers spread over the replicas given.
			urls := e.servers()
			var cs []*client.Client
			for i := range urls {
				c, err := e.clientFor(append(slices.Clone(urls[i:]), urls[:i]...))
				if err != nil {
					return err
				}
				cs = append(cs, c)
			}
			// The load generator shares the machine with the broker under
			// test; like serve, it need not collect its small heap of
			// request garbage twenty times a second.
			tuneGC()
			ctx := cmd.Context()
			owner := "bench-" + e.defaultOwner()
			if concurrency > 0 && duration > 0 {
				r, err := bench.Cycles(ctx, bench.Options{Clients: cs, Type: typ, Concurrency: concurrency, Duration: duration, Owner: owner})
				if err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "acquire+release  type=%s  concurrency=%d  duration=%s\n", typ, concurrency, duration)
				fmt.Fprintf(e.stdout, "  cycles     %d (%.0f/s), errors %d\n", r.Cycles, r.PerSecond, r.Errors)
				fmt.Fprintf(e.stdout, "  cycle      %s\n", r.Cycle)
				fmt.Fprintf(e.stdout, "  acquire    %s\n", r.Acquire)
				fmt.Fprintf(e.stdout, "  release    %s\n", r.Release)
				if r.FirstErr != nil {
					fmt.Fprintf(e.stdout, "  first error: %s\n", oneLine(r.FirstErr.Error()))
				}
			}
			if waiters > 0 {
				r, err := bench.Handoff(ctx, bench.HandoffOptions{Clients: cs, Type: typ, Waiters: waiters, Rounds: rounds, Owner: owner})
				if err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "handoff  type=%s  waiters=%d  rounds=%d\n", typ, waiters, r.Handoff.N)
				fmt.Fprintf(e.stdout, "  release → waiter holds it: %s\n", r.Handoff)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&typ, "type", "", "pool to measure (required)")
	f.IntVar(&concurrency, "concurrency", 16, "acquire+release workers (0: skip)")
	f.DurationVar(&duration, "duration", 10*time.Second, "how long to run acquire+release cycles")
	f.IntVar(&waiters, "waiters", 0, "measure handoff latency with this many waiters (0: skip)")
	f.IntVar(&rounds, "rounds", 500, "handoffs to measure")
	return cmd
}
