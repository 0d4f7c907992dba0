package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/user"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/client"
)

// acquireFlags are shared by acquire and run.
type acquireFlags struct {
	typ, owner, requestID string
	wait                  time.Duration
	priority              int
	labels                []string
}

func (a *acquireFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&a.typ, "type", "", "type of resource to lease (required)")
	f.StringVar(&a.owner, "owner", "", "who holds the lease (default $BERTH_OWNER, then user@host)")
	f.DurationVar(&a.wait, "wait", 0, "how long to wait for a free resource (0: fail at once)")
	f.IntVar(&a.priority, "priority", 0, "higher priorities are served first (-1000 to 1000)")
	f.StringArrayVar(&a.labels, "label", nil, "only resources with this label, as key=value (repeatable)")
	f.StringVar(&a.requestID, "request-id", "", "idempotency key; keeps a waiter's place across calls")
	_ = cmd.MarkFlagRequired("type")
}

func (e *env) defaultOwner() string {
	if o := e.getenv("BERTH_OWNER"); o != "" {
		return o
	}
	name := "unknown"
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		return name
	}
	return name + "@" + host
}

func (a *acquireFlags) params(e *env) (client.AcquireParams, error) {
	p := client.AcquireParams{Type: a.typ, Owner: a.owner, Priority: a.priority, Wait: a.wait, RequestID: a.requestID}
	if p.Owner == "" {
		p.Owner = e.defaultOwner()
	}
	if a.wait < 0 {
		return p, usageErrorf("--wait must not be negative")
	}
	for _, l := range a.labels {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return p, usageErrorf("--label %q: want key=value", l)
		}
		if p.Labels == nil {
			p.Labels = map[string]string{}
		}
		p.Labels[k] = v
	}
	return p, nil
}

// acquireError says why no lease was had; not getting a resource is an
// infrastructure failure (exit 75), a bad request is a usage error.
func acquireError(err error, p client.AcquireParams) error {
	switch berth.ErrorCodeOf(err) {
	case berth.EExhausted:
		// In a probed pool the broker says "free … is Connected": keep
		// that, so that the job's log says why free resources were not
		// given.
		what := "free"
		if strings.Contains(brokerMessage(err), "is Connected") {
			what = "free and Connected"
		}
		if p.Wait > 0 {
			return infraErrorf("no %s resource became %s within %s", p.Type, what, p.Wait)
		}
		return infraErrorf("no %s resource is %s (use --wait to wait for one)", p.Type, what)
	case berth.EInvalid, berth.EUnknownType:
		return &exitError{code: ExitUsage, err: err}
	case berth.EInternal:
		var be *berth.Error
		if !errors.As(err, &be) {
			return infraErrorf("cannot reach the broker: %v", err)
		}
	case berth.EUnavailable:
		return infraErrorf("%v", err)
	}
	return err
}

// acquireJSON is the DESIGN.md shape of `acquire --json`.
type acquireJSON struct {
	Lease    *berth.Lease    `json:"lease"`
	Resource *berth.Resource `json:"resource"`
}

func (e *env) printJSON(v any) error {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (e *env) acquireCommand() *cobra.Command {
	var (
		a       acquireFlags
		asJSON  bool
		verbose bool
	)
	cmd := &cobra.Command{
		Use:   "acquire --type T",
		Short: "Lease a resource and print the lease",
		Long: `Lease a resource of a type. Without --wait it fails at once when none is
free; with --wait it waits in line (first come, first served within a
priority) and gets a resource the moment one is released.

The lease must be kept alive with 'berth heartbeat' more often than the
pool's lease TTL, and given back with 'berth release'. 'berth run' does all
of that for one command.`,
		Args: argsNone,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			p, err := a.params(e)
			if err != nil {
				return err
			}
			if verbose {
				p.OnQueued = func(r *berth.Request) {
					fmt.Fprintf(e.stderr, "waiting for a %s: position %d in line\n", p.Type, r.Position)
				}
			}
			got, err := c.Acquire(cmd.Context(), p)
			if err != nil {
				return acquireError(err, p)
			}
			if asJSON {
				return e.printJSON(acquireJSON{Lease: got.Lease, Resource: got.Resource})
			}
			l, r := got.Lease, got.Resource
			tw := newTable(e.stdout)
			tw.row("resource", r.Name)
			tw.row("type", r.Type)
			tw.row("lease", l.ID)
			tw.row("token", fmt.Sprint(l.Token))
			tw.row("owner", l.Owner)
			tw.row("expires", l.ExpiresAt.Local().Format(time.RFC3339)+" (heartbeat within "+l.TTL.String()+")")
			for _, k := range slices.Sorted(maps.Keys(r.UserData)) {
				tw.row("userData."+k, r.UserData[k])
			}
			return tw.flush()
		},
	}
	a.register(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the lease and resource as JSON")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "report the place in line while waiting")
	return cmd
}

func (e *env) heartbeatCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "heartbeat LEASE_ID",
		Short: "Keep a lease alive for another TTL",
		Args:  argsExactly("LEASE_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			res, err := c.Heartbeat(cmd.Context(), args[0])
			if err != nil {
				if berth.ErrorCodeOf(err) == berth.ELeaseLost {
					return infraErrorf("%v", err)
				}
				return err
			}
			if asJSON {
				return e.printJSON(acquireJSON{Lease: res.Lease, Resource: res.Resource})
			}
			fmt.Fprintf(e.stdout, "lease %s on %s renewed until %s\n", res.Lease.ID, res.Lease.Resource, res.Lease.ExpiresAt.Local().Format(time.RFC3339))
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the lease and resource as JSON")
	return cmd
}

func (e *env) releaseCommand() *cobra.Command {
	var (
		dirty, free bool
		broken      string
		asJSON      bool
	)
	cmd := &cobra.Command{
		Use:   "release LEASE_ID [--dirty|--free|--broken REASON]",
		Short: "Give a leased resource back",
		Long: `Give a leased resource back. By default (--dirty) it is cleaned as its pool
says before anyone else gets it (a pool without a janitor takes it straight
back as free); --free vouches that it is clean; --broken reports it broken,
with the reason given: it is quarantined, or cleaned deeply where its pool's
janitor says onBroken: clean. The reason and who reported it are kept.`,
		Args: argsExactly("LEASE_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			p := client.ReleaseParams{To: berth.ReleaseDirty}
			switch {
			case free:
				p.To = berth.ReleaseFree
			case cmd.Flags().Changed("broken"):
				if strings.TrimSpace(broken) == "" {
					return usageErrorf("--broken needs a reason")
				}
				p.To, p.Reason = berth.ReleaseBroken, broken
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			res, err := c.Release(cmd.Context(), args[0], p)
			if err != nil {
				return err
			}
			if asJSON {
				return e.printJSON(res)
			}
			where := "removed from its pool"
			if res.Resource != nil {
				where = string(res.Resource.State)
			}
			if res.AlreadyReleased {
				fmt.Fprintf(e.stdout, "lease %s was already released; %s is %s\n", res.Lease.ID, res.Lease.Resource, where)
				return nil
			}
			fmt.Fprintf(e.stdout, "released %s (lease %s); it is now %s\n", res.Lease.Resource, res.Lease.ID, where)
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&dirty, "dirty", false, "the resource needs cleaning (the default)")
	f.BoolVar(&free, "free", false, "the resource is clean: skip its pool's janitor")
	f.StringVar(&broken, "broken", "", "the resource is broken: quarantine it (or have it cleaned deeply, as its pool says), with this reason")
	f.BoolVar(&asJSON, "json", false, "print the result as JSON")
	cmd.MarkFlagsMutuallyExclusive("dirty", "free", "broken")
	return cmd
}
