// Command berth is the lease broker and its command line.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/berth-ci/berth/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
