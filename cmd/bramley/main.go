// Command bramley is the bramley MDM server, its admin client, a device
// simulator and a load generator, in one binary.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bramley:", err)
		os.Exit(1)
	}
}

// run is bramley with its inputs and outputs passed in, so tests can run
// every subcommand in-process.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	root := &cobra.Command{
		Use:           "bramley",
		Short:         "bramley is an Apple device management (MDM) server",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(
		serveCommand(getenv, stdout, stderr),
		versionCommand(stdout),
		enrollCommand(getenv, stdout),
		userCommand(getenv, stdout),
		pushCommand(getenv, stdout),
		adeCommand(getenv, stdout),
		vppCommand(getenv, stdout),
		caCommand(getenv, stdout),
		simCommand(getenv, stdout),
		demoCommand(stdout, stderr),
		benchCommand(getenv, stdout, stderr),
	)
	return root.ExecuteContext(ctx)
}
