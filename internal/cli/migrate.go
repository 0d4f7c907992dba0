package cli

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/berth-ci/berth/internal/server"
)

func (e *env) migrateCommand() *cobra.Command {
	var (
		o      server.Options
		dryRun bool
	)
	cmd := &cobra.Command{
		Use:   "migrate (--data DIR | --store URL) [--dry-run]",
		Short: "Bring the store's schema up to date, or say what that would do",
		Long: `Apply the schema migrations this berth knows to the store, as berth serve
does when it starts, and print each one. With --dry-run, only print the
store's schema version and the migrations that would be applied; nothing
is changed (a missing SQLite file is not created).

A store whose schema is newer than this berth knows is refused (exit 2):
run a berth at least as new as the one that migrated it.`,
		Args: argsNone,
		RunE: func(cmd *cobra.Command, args []string) error {
			e.storeFromEnv(&o)
			switch {
			case o.DataDir != "" && o.Store != "":
				return usageErrorf("--data and --store exclude each other")
			case o.DataDir == "" && o.Store == "":
				return usageErrorf("migrate needs --data DIR or --store URL (or $BERTH_STORE)")
			}
			ctx := cmd.Context()
			have, pending, err := server.PendingMigrations(ctx, o)
			if err != nil {
				return &exitError{code: ExitUsage, err: err}
			}
			if len(pending) == 0 {
				fmt.Fprintf(e.stdout, "schema version %d: up to date\n", have)
				return nil
			}
			verb := "applied"
			if dryRun {
				verb = "would apply"
			}
			fmt.Fprintf(e.stdout, "schema version %d; this berth knows %d\n", have, pending[len(pending)-1].Version)
			if !dryRun {
				st, err := server.OpenStore(ctx, o)
				var se *server.StartupError
				if errors.As(err, &se) {
					return &exitError{code: ExitUsage, err: err}
				}
				if err != nil {
					return err
				}
				if err := st.Close(); err != nil {
					return err
				}
			}
			for _, m := range pending {
				fmt.Fprintf(e.stdout, "%s %03d_%s\n", verb, m.Version, m.Name)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.DataDir, "data", "", "directory of the embedded database (berth.db)")
	f.StringVar(&o.Store, "store", "", "store URL: sqlite:PATH or postgres://USER@HOST/DB")
	f.BoolVar(&dryRun, "dry-run", false, "print what would be applied; change nothing")
	return cmd
}
