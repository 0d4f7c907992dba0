package cli

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/client"
)

// adminFlags are shared by the admin commands.
type adminFlags struct {
	reason, actor string
	asJSON        bool
}

func (a *adminFlags) register(cmd *cobra.Command, reasonRequired bool) {
	f := cmd.Flags()
	help := "why (recorded on the event)"
	if reasonRequired {
		help += "; required"
	}
	f.StringVar(&a.reason, "reason", "", help)
	f.StringVar(&a.actor, "actor", "", "who asks, for the audit trail (default $BERTH_OWNER, then user@host)")
	f.BoolVar(&a.asJSON, "json", false, "print the result as JSON")
}

func (a *adminFlags) params(e *env, reasonRequired bool) (client.AdminParams, error) {
	if reasonRequired && strings.TrimSpace(a.reason) == "" {
		return client.AdminParams{}, usageErrorf("--reason is required: say why, for whoever looks at the resource next")
	}
	p := client.AdminParams{Reason: a.reason, Actor: a.actor}
	if p.Actor == "" {
		p.Actor = e.defaultOwner()
	}
	return p, nil
}

// printAdmin reports a resource after an admin operation.
func (e *env) printAdmin(res *client.AdminResult, asJSON bool, done string) error {
	if asJSON {
		return e.printJSON(res)
	}
	r := res.Resource
	switch {
	case r == nil:
		fmt.Fprintln(e.stdout, done+"; it has left its pool")
		return nil
	case res.Unchanged:
		fmt.Fprintf(e.stdout, "%s was already so: it is %s%s\n", r.Name, r.State, drainNote(r))
		return nil
	}
	fmt.Fprintf(e.stdout, "%s; it is now %s%s\n", done, r.State, drainNote(r))
	if l := res.RevokedLease; l != nil {
		fmt.Fprintf(e.stdout, "revoked lease %s of %s\n", l.ID, l.Owner)
	}
	return nil
}

func drainNote(r *berth.Resource) string {
	var notes []string
	if r.Draining {
		notes = append(notes, "draining")
	}
	if r.Retiring {
		notes = append(notes, "retiring")
	}
	if len(notes) == 0 {
		return ""
	}
	return " (" + strings.Join(notes, ", ") + ")"
}

func (e *env) quarantineCommand() *cobra.Command {
	var a adminFlags
	cmd := &cobra.Command{
		Use:   "quarantine RESOURCE --reason REASON",
		Short: "Take a resource out of service, with a reason",
		Long: `Take a resource out of service with a reason. A lease it has is revoked:
its holder's next heartbeat fails (berth run stops its command and exits 75).
Only unquarantine returns it.`,
		Args: argsExactly("RESOURCE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := a.params(e, true)
			if err != nil {
				return err
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			res, err := c.Quarantine(cmd.Context(), args[0], p)
			if err != nil {
				return err
			}
			return e.printAdmin(res, a.asJSON, "quarantined "+args[0])
		},
	}
	a.register(cmd, true)
	return cmd
}

func (e *env) unquarantineCommand() *cobra.Command {
	var (
		a    adminFlags
		free bool
	)
	cmd := &cobra.Command{
		Use:   "unquarantine RESOURCE --reason REASON [--free]",
		Short: "Return a quarantined resource to service",
		Long: `Return a quarantined resource to service. Where its pool has a janitor it is
cleaned first (dirty); --free vouches that it is fit to lease at once.`,
		Args: argsExactly("RESOURCE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := a.params(e, true)
			if err != nil {
				return err
			}
			if free {
				p.To = berth.StateFree
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			res, err := c.Unquarantine(cmd.Context(), args[0], p)
			if err != nil {
				return err
			}
			return e.printAdmin(res, a.asJSON, "unquarantined "+args[0])
		},
	}
	a.register(cmd, true)
	cmd.Flags().BoolVar(&free, "free", false, "skip the janitor: the resource is fit to lease")
	return cmd
}

func (e *env) drainCommand(drain bool) *cobra.Command {
	var (
		a    adminFlags
		pool string
	)
	use, short, long := "drain (RESOURCE | --pool TYPE) --reason REASON", "Stop leasing a resource or a whole pool",
		`Stop leasing a resource, or with --pool every resource of a pool. Leases they
have run out as usual; waiting jobs keep waiting. Undrain to lease again.`
	if !drain {
		use, short, long = "undrain (RESOURCE | --pool TYPE)", "Lease a drained resource or pool again", "Lease a drained resource, or with --pool a drained pool, again."
	}
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Long:  long,
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case pool == "" && len(args) != 1:
				return usageErrorf("%s needs a RESOURCE, or --pool TYPE (see '%s --help')", cmd.Name(), cmd.CommandPath())
			case pool != "" && len(args) > 0:
				return usageErrorf("%s takes a RESOURCE or --pool TYPE, not both (see '%s --help')", cmd.Name(), cmd.CommandPath())
			}
			p, err := a.params(e, drain)
			if err != nil {
				return err
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			if pool != "" {
				res, err := c.DrainPool(cmd.Context(), pool, drain, p)
				if err != nil {
					return err
				}
				if a.asJSON {
					return e.printJSON(res)
				}
				state := "draining: nothing of it is leased"
				if !drain {
					state = "leasing again"
				}
				if res.Unchanged {
					state = "already " + state
				}
				fmt.Fprintf(e.stdout, "pool %s is %s (%d leased, %d waiting)\n", pool, state, res.Pool.States[berth.StateBusy], res.Pool.Waiters)
				return nil
			}
			var res *client.AdminResult
			if drain {
				res, err = c.Drain(cmd.Context(), args[0], p)
			} else {
				res, err = c.Undrain(cmd.Context(), args[0], p)
			}
			if err != nil {
				return err
			}
			return e.printAdmin(res, a.asJSON, cmd.Name()+"ed "+args[0])
		},
	}
	a.register(cmd, drain)
	cmd.Flags().StringVar(&pool, "pool", "", cmd.Name()+" every resource of this pool type")
	return cmd
}

// resourcesAddCommand is `berth resources add`.
func (e *env) resourcesAddCommand() *cobra.Command {
	var (
		a              adminFlags
		typ            string
		userData, lbls []string
	)
	cmd := &cobra.Command{
		Use:   "add NAME --type TYPE [--user-data KEY=VALUE]... [--label KEY=VALUE]...",
		Short: "Add a resource to a pool without a restart",
		Long: `Add a free resource to a pool without a restart; a waiting job gets it at once.
The config does not know it: it stays across restarts while its pool is
configured, until 'berth resources retire'.`,
		Args: argsExactly("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := a.params(e, false)
			if err != nil {
				return err
			}
			r := client.NewResource{Name: args[0], Type: typ, Reason: p.Reason, Actor: p.Actor}
			if r.UserData, err = keyValues("--user-data", userData); err != nil {
				return err
			}
			if r.Labels, err = keyValues("--label", lbls); err != nil {
				return err
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			got, err := c.AddResource(cmd.Context(), r)
			if err != nil {
				return err
			}
			if a.asJSON {
				return e.printJSON(got)
			}
			fmt.Fprintf(e.stdout, "added %s to pool %s; it is %s\n", got.Name, got.Type, got.State)
			return nil
		},
	}
	a.register(cmd, false)
	f := cmd.Flags()
	f.StringVar(&typ, "type", "", "the pool to add it to (required)")
	f.StringArrayVar(&userData, "user-data", nil, "user data, as key=value (repeatable)")
	f.StringArrayVar(&lbls, "label", nil, "a label, as key=value (repeatable)")
	_ = cmd.MarkFlagRequired("type")
	return cmd
}

// resourcesRetireCommand is `berth resources retire`.
func (e *env) resourcesRetireCommand() *cobra.Command {
	var a adminFlags
	cmd := &cobra.Command{
		Use:   "retire NAME [--reason REASON]",
		Short: "Take a resource added at runtime out of its pool",
		Long: `Take a resource added at runtime (berth resources add) out of its pool: at
once, or when its lease ends. A resource of a dynamic pool goes to its
deprovisioner. One the config declares is refused: remove it from the config.`,
		Args: argsExactly("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := a.params(e, false)
			if err != nil {
				return err
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			res, err := c.Retire(cmd.Context(), args[0], p)
			if err != nil {
				return err
			}
			return e.printAdmin(res, a.asJSON, "retired "+args[0])
		},
	}
	a.register(cmd, false)
	return cmd
}

func keyValues(flag string, kvs []string) (map[string]string, error) {
	var m map[string]string
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, usageErrorf("%s %q: want key=value", flag, kv)
		}
		if m == nil {
			m = map[string]string{}
		}
		m[k] = v
	}
	return m, nil
}

// readOutput reads a janitor's output from a file, or "-" for standard
// input.
func (e *env) readOutput(path string) (string, error) {
	var (
		b   []byte
		err error
	)
	if path == "-" {
		b, err = io.ReadAll(io.LimitReader(e.stdin, 1<<20+1))
	} else {
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return "", usageErrorf("--output-file: %v", err)
	}
	return string(b), nil
}
