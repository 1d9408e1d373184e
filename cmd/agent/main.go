// Command agent is Tether's agent for a customer's BYOC VPC: it dials out
// to the broker's tailnet and opens no inbound port. See 'agent help'.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"tailscale.com/envknob"

	"github.com/tetherhq/tether/internal/agentcli"
	"github.com/tetherhq/tether/internal/cli"
)

func main() {
	envknob.SetNoLogsNoSupport() // nothing phones home
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := agentcli.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	var exit *cli.ExitError
	if errors.As(err, &exit) {
		os.Exit(exit.Code)
	}
	if err != nil && !errors.Is(err, cli.ErrHelp) {
		fmt.Fprintln(os.Stderr, "agent:", err)
		os.Exit(cli.ExitCode(err))
	}
}
