package cli

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/internal/auth"
	"github.com/berth-ci/berth/internal/server"
	"github.com/berth-ci/berth/internal/store"
)

// tokenCommand manages bearer tokens. It works on the store itself, as
// migrate does, not through a server: the first admin token has to come
// from somewhere, and whoever can reach the store can do anything anyway.
// A running berth sees a new or revoked token within auth.DefaultCacheTTL.
func (e *env) tokenCommand() *cobra.Command {
	var o server.Options
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Create, list and revoke the bearer tokens berth accepts",
		Long: `Create, list and revoke the bearer tokens berth accepts. These commands
work on the store (--data DIR or --store URL, as berth serve has them),
not through a server, so that the first admin token can be made.

Roles, each allowing what the ones before it allow:
  viewer   read pools, resources, leases and events
  client   acquire, heartbeat and release its own leases (a CI job)
  janitor  claim and clean dirty resources; Boskos /reset
  admin    everything: quarantine, drain, add and retire resources, and end
           anyone's lease (recorded as forced)

The store keeps only a token's SHA-256: a token is shown once, when made.
Jobs pass it in $BERTH_TOKEN (the CLI) or as "Authorization: Bearer TOKEN";
Boskos clients as the password of basic auth. A running berth accepts a
new token, and refuses a revoked one, within 2 seconds.`,
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&o.DataDir, "data", "", "directory of the embedded database (berth.db)")
	pf.StringVar(&o.Store, "store", "", "store URL: sqlite:PATH or postgres://USER@HOST/DB")
	open := func(cmd *cobra.Command) (store.Store, error) {
		e.storeFromEnv(&o)
		switch {
		case o.DataDir != "" && o.Store != "":
			return nil, usageErrorf("--data and --store exclude each other")
		case o.DataDir == "" && o.Store == "":
			return nil, usageErrorf("%s needs --data DIR or --store URL (or $BERTH_STORE): tokens live in the store", cmd.CommandPath())
		}
		st, err := server.OpenStore(cmd.Context(), o)
		var se *server.StartupError
		if errors.As(err, &se) {
			return nil, &exitError{code: ExitUsage, err: err}
		}
		return st, err
	}
	actor := func() string {
		if u := e.getenv("USER"); u != "" {
			return u
		}
		return "berth-token"
	}

	var role string
	create := &cobra.Command{
		Use:   "create NAME --role ROLE",
		Short: "Make a token and print it (once)",
		Args:  argsExactly("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if !auth.ValidName(name) {
				return usageErrorf("token name %q must be 1 to 63 letters, digits, '.', '_' or '-', not starting with berth- (berth's own): it names the actor of every event the token causes", name)
			}
			if !berth.ValidRole(berth.Role(role)) {
				return usageErrorf("--role must be viewer, client, janitor or admin, not %q", role)
			}
			st, err := open(cmd)
			if err != nil {
				return err
			}
			defer st.Close()
			tok, hash, err := auth.NewToken()
			if err != nil {
				return err
			}
			if _, err := st.TokenCreate(cmd.Context(), &store.TokenCreateParams{Name: name, Role: berth.Role(role), Hash: hash, Actor: actor()}); err != nil {
				return err
			}
			fmt.Fprintln(e.stdout, tok)
			fmt.Fprintf(e.stderr, "token %s (%s) created; it is shown only now\n", name, role)
			return nil
		},
	}
	create.Flags().StringVar(&role, "role", "", "viewer, client, janitor or admin (required)")

	list := &cobra.Command{
		Use:   "list",
		Short: "List the tokens (names and roles; never the tokens)",
		Args:  argsNone,
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := open(cmd)
			if err != nil {
				return err
			}
			defer st.Close()
			toks, err := st.TokenList(cmd.Context())
			if err != nil {
				return err
			}
			tw := newTable(e.stdout)
			tw.row("NAME", "ROLE", "CREATED", "BY")
			for _, t := range toks {
				tw.row(t.Name, string(t.Role), t.CreatedAt.Format("2006-01-02T15:04:05Z07:00"), t.CreatedBy)
			}
			return tw.flush()
		},
	}

	revoke := &cobra.Command{
		Use:   "revoke NAME",
		Short: "Revoke a token: a running berth refuses it within 2 seconds",
		Args:  argsExactly("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := open(cmd)
			if err != nil {
				return err
			}
			defer st.Close()
			_, err = st.TokenRevoke(cmd.Context(), &store.TokenRevokeParams{Name: args[0], Actor: actor()})
			if errors.Is(err, store.ErrNotFound) {
				return &exitError{code: ExitUsage, err: fmt.Errorf("no token named %q (berth token list shows them)", args[0])}
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "token %s revoked\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(create, list, revoke)
	return cmd
}

// storeFromEnv takes the store URL from $BERTH_STORE when neither --data
// nor --store names one: a password in the URL then stays out of the
// process list (and, on Kubernetes, comes straight from a Secret).
func (e *env) storeFromEnv(o *server.Options) {
	if o.DataDir == "" && o.Store == "" {
		o.Store = e.getenv("BERTH_STORE")
	}
}

// readToken returns the token of --token-file, or of $BERTH_TOKEN.
func (e *env) readToken() (string, error) {
	if e.tokenFile != "" {
		b, err := os.ReadFile(e.tokenFile)
		if err != nil {
			return "", usageErrorf("--token-file: %v", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	return strings.TrimSpace(e.getenv("BERTH_TOKEN")), nil
}
