package cli

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/client"
)

// janitorCommand groups what an outside janitor does through the API, as
// Boskos janitors do: claim a dirty resource, clean it (heartbeating the
// lease), and finish or fail the cleaning.
func (e *env) janitorCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "janitor",
		Short: "Clean dirty resources from outside berth (claim, finish, fail)",
		Long: `An outside janitor cleans the dirty resources of a pool configured with
janitor: {external: true}: it claims one (berth janitor claim), which leases it
for cleaning; heartbeats the lease while it works (berth heartbeat); and
finishes the cleaning (berth janitor finish: the resource is free) or fails it
(berth janitor fail: it is dirty again after a backoff, or quarantined after the
pool's maxAttempts). A janitor that stops heartbeating loses the lease, and the
resource is dirty again.`,
		Args: argsNone,
	}
	cmd.AddCommand(e.janitorClaimCommand(), e.janitorEndCommand(true), e.janitorEndCommand(false))
	return cmd
}

func (e *env) janitorClaimCommand() *cobra.Command {
	var (
		p      client.CleanClaimParams
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "claim --type TYPE [--owner O] [--wait D] [--json]",
		Short: "Lease a dirty resource for cleaning",
		Long: `Lease a dirty resource of a pool for cleaning and print the lease and the
resource (with --json, as {"lease", "resource", "attempt"}). Nothing to clean
within --wait exits 75.`,
		Args: argsNone,
		RunE: func(cmd *cobra.Command, args []string) error {
			if p.Wait < 0 {
				return usageErrorf("--wait must not be negative")
			}
			if p.Owner == "" {
				p.Owner = e.defaultOwner()
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			got, err := c.CleanClaim(cmd.Context(), p)
			if berth.ErrorCodeOf(err) == berth.EExhausted {
				return &exitError{code: ExitInfra, err: errors.New(brokerMessage(err))}
			}
			if err != nil {
				return err
			}
			if asJSON {
				return e.printJSON(got)
			}
			l, r := got.Lease, got.Resource
			t := newTable(e.stdout)
			t.row("resource", r.Name)
			t.row("type", r.Type)
			t.row("lease", l.ID)
			t.row("token", strconv.FormatInt(l.Token, 10))
			t.row("attempt", strconv.Itoa(got.Attempt))
			t.row("deep", strconv.FormatBool(r.DeepClean))
			if r.DeepClean {
				t.row("reported", r.StateReason)
			}
			t.row("expires", l.ExpiresAt.Local().Format(time.RFC3339)+" (heartbeat within "+l.TTL.String()+")")
			for _, k := range slices.Sorted(maps.Keys(r.UserData)) {
				t.row("userData."+k, r.UserData[k])
			}
			return t.flush()
		},
	}
	f := cmd.Flags()
	f.StringVar(&p.Type, "type", "", "the pool to clean (required)")
	f.StringVar(&p.Owner, "owner", "", "the janitor's name (default $BERTH_OWNER, then user@host)")
	f.StringVar(&p.Name, "name", "", "claim this resource only")
	f.DurationVar(&p.Wait, "wait", 0, "how long to wait for a dirty resource (0: answer at once)")
	f.BoolVar(&asJSON, "json", false, "print the lease, the resource and the attempt as JSON")
	_ = cmd.MarkFlagRequired("type")
	return cmd
}

func (e *env) janitorEndCommand(ok bool) *cobra.Command {
	var (
		end        client.CleanEnd
		outputFile string
		asJSON     bool
	)
	use, short := "finish LEASE_ID [--message M] [--output-file FILE|-]", "End a cleaning that worked: the resource is free"
	if !ok {
		use, short = "fail LEASE_ID --message M [--output-file FILE|-] [--quarantine]", "End a cleaning that failed"
	}
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  argsExactly("LEASE_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !ok && end.Message == "" {
				return usageErrorf("--message is required: say what went wrong")
			}
			if outputFile != "" {
				out, err := e.readOutput(outputFile)
				if err != nil {
					return err
				}
				end.Output = out
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			var res *client.CleanEnded
			if ok {
				res, err = c.CleanFinish(cmd.Context(), args[0], end)
			} else {
				res, err = c.CleanFail(cmd.Context(), args[0], end)
			}
			if err != nil {
				if berth.ErrorCodeOf(err) == berth.ELeaseLost {
					return infraErrorf("%v", err)
				}
				return err
			}
			if asJSON {
				return e.printJSON(res)
			}
			where := "removed from its pool"
			if res.Resource != nil {
				where = string(res.Resource.State)
			}
			switch {
			case res.AlreadyEnded:
				fmt.Fprintf(e.stdout, "cleaning %s had ended already; %s is %s\n", res.Lease.ID, res.Lease.Resource, where)
			case res.Event != nil:
				fmt.Fprintf(e.stdout, "%s is now %s: %s\n", res.Lease.Resource, where, res.Event.Message)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&end.Message, "message", "", "what happened (an exit status, say)")
	f.StringVar(&outputFile, "output-file", "", "the janitor's output to record with the attempt, from a file or - for standard input")
	if !ok {
		f.BoolVar(&end.Quarantine, "quarantine", false, "no cleaning will help: quarantine the resource now")
	}
	f.BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}
