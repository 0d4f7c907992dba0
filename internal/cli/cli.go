// Package cli implements the berth command line. Run is the whole program
// with its inputs and outputs injected, so tests call it in-process exactly
// as a shell would.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/berth-ci/berth"
	"github.com/berth-ci/berth/client"
)

// Exit codes.
const (
	ExitOK    = 0
	ExitError = 1
	// ExitUsage: bad flags, arguments or config; nothing was done.
	ExitUsage = 2
	// ExitInfra (EX_TEMPFAIL): the infrastructure failed the job — no
	// resource in time, the lease lost, the broker unreachable — not the
	// job's own command.
	ExitInfra = 75
)

// DefaultServer is used when neither --server nor $BERTH_SERVER is set.
const DefaultServer = "http://127.0.0.1:7420"

// exitError carries an exit code with the one line to print.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usageErrorf(format string, args ...any) error {
	return &exitError{code: ExitUsage, err: fmt.Errorf(format, args...)}
}

func infraErrorf(format string, args ...any) error {
	return &exitError{code: ExitInfra, err: fmt.Errorf("infrastructure failure: "+format, args...)}
}

// env is what commands read from and write to.
type env struct {
	ctx            context.Context
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	server         string
	tokenFile      string
	// exitCode lets `run` exit with its command's code.
	exitCode int
	// tune, if set, adjusts client options (tests shorten retries).
	tune func(*client.Options)
}

// Run runs the berth command line with args (without the program name) and
// returns the process exit code.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return run(ctx, args, stdin, stdout, stderr, os.Getenv)
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	return runEnv(&env{ctx: ctx, stdin: stdin, stdout: stdout, stderr: stderr, getenv: getenv}, args)
}

func runEnv(e *env, args []string) int {
	e.exitCode = -1
	ctx, stdin, stdout, stderr := e.ctx, e.stdin, e.stdout, e.stderr
	root := e.rootCommand()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		if e.exitCode >= 0 {
			return e.exitCode
		}
		return ExitOK
	}
	code := ExitError
	var ee *exitError
	var be *berth.Error
	switch {
	case errors.As(err, &ee):
		code = ee.code
	case isUsageError(err):
		code = ExitUsage
	case errors.As(err, &be) && be.Code == berth.EInvalid:
		code = ExitUsage
	}
	fmt.Fprintln(stderr, "berth: "+oneLine(err.Error()))
	return code
}

// isUsageError recognises cobra's own complaints about flags and arguments.
func isUsageError(err error) bool {
	msg := err.Error()
	for _, p := range []string{"unknown flag", "unknown shorthand flag", "unknown command", "flag needs an argument",
		"invalid argument", "accepts ", "requires at least", "required flag", "if any flags in the group", "bad flag syntax"} {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
}

func (e *env) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "berth",
		Short: "berth leases shared test infrastructure to CI jobs",
		Long: `berth is a lease broker for shared test infrastructure: cloud projects,
clusters, VMs and devices that only one CI job may use at a time.

Run a throw-away broker with demo pools:   berth serve --demo
Lease a resource for the length of a job:  berth run --type gce-project -- ./test.sh`,
		SilenceUsage:      true,
		SilenceErrors:     true,
		CompletionOptions: cobra.CompletionOptions{DisableDefaultCmd: true},
	}
	root.PersistentFlags().StringVar(&e.server, "server", "", "broker URL(s), comma-separated (default $BERTH_SERVER, then "+DefaultServer+")")
	root.PersistentFlags().StringVar(&e.tokenFile, "token-file", "", "file holding the bearer token to send (default: $BERTH_TOKEN)")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageErrorf("%v (see '%s --help')", err, c.CommandPath())
	})
	root.AddCommand(
		e.serveCommand(),
		e.migrateCommand(),
		e.checkConfigCommand(),
		e.acquireCommand(),
		e.heartbeatCommand(),
		e.releaseCommand(),
		e.runCommand(),
		e.waitReadyCommand(),
		e.poolsCommand(),
		e.resourcesCommand(),
		e.eventsCommand(),
		e.quarantineCommand(),
		e.unquarantineCommand(),
		e.drainCommand(true),
		e.drainCommand(false),
		e.janitorCommand(),
		e.versionCommand(),
		e.tokenCommand(),
		e.benchCommand(),
	)
	return root
}

// client builds an API client for --server, $BERTH_SERVER or the default.
func (e *env) client() (*client.Client, error) {
	return e.clientFor(e.servers())
}

// servers are the broker URLs from --server, $BERTH_SERVER or the default.
func (e *env) servers() []string {
	s := e.server
	if s == "" {
		s = e.getenv("BERTH_SERVER")
	}
	if s == "" {
		s = DefaultServer
	}
	var urls []string
	for _, u := range strings.Split(s, ",") {
		if u = strings.TrimSpace(u); u != "" {
			urls = append(urls, u)
		}
	}
	return urls
}

func (e *env) clientFor(urls []string) (*client.Client, error) {
	token, err := e.readToken()
	if err != nil {
		return nil, err
	}
	o := client.Options{Servers: urls, UserAgent: "berth-cli", Token: token}
	if e.tune != nil {
		e.tune(&o)
	}
	c, err := client.New(o)
	if err != nil {
		return nil, usageErrorf("--server: %v", err)
	}
	return c, nil
}

// argsExactly is cobra.ExactArgs with a message that names what is missing.
func argsExactly(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != len(names) {
			return usageErrorf("%s needs %s (see '%s --help')", cmd.Name(), strings.Join(names, " "), cmd.CommandPath())
		}
		return nil
	}
}

// argsNone rejects positional arguments.
func argsNone(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageErrorf("%s takes no arguments, got %q (see '%s --help')", cmd.Name(), args[0], cmd.CommandPath())
	}
	return nil
}
