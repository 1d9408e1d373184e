// Command broker is Tether's control-plane server and the CLI that talks
// to it. See 'broker help'.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"tailscale.com/envknob"

	"github.com/tetherhq/tether/internal/brokercli"
	"github.com/tetherhq/tether/internal/cli"
)

func main() {
	envknob.SetNoLogsNoSupport() // nothing phones home
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := brokercli.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	var exit *cli.ExitError
	if errors.As(err, &exit) {
		os.Exit(exit.Code)
	}
	if err != nil && !errors.Is(err, cli.ErrHelp) {
		fmt.Fprintln(os.Stderr, "broker:", err)
		os.Exit(cli.ExitCode(err))
	}
}
