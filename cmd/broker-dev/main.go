// Command broker-dev is the broker's dev build: every command of
// cmd/broker plus 'serve --dev', which runs a private tailnet and an
// identity provider with dev users in-process (package devbroker). It is
// for 'make run' and the tests; never deploy it: its identity provider
// signs anyone in as anyone. See 'broker-dev help'.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"tailscale.com/envknob"

	"github.com/tetherhq/tether/internal/broker"
	"github.com/tetherhq/tether/internal/brokercli"
	"github.com/tetherhq/tether/internal/cli"
	"github.com/tetherhq/tether/internal/devbroker"
)

func main() {
	envknob.SetNoLogsNoSupport() // nothing phones home
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := brokercli.RunWith(ctx, os.Args[1:], os.Stdout, os.Stderr, brokercli.Options{
		Dev: func(addr string) broker.DevEnv { return devbroker.New(devbroker.Config{Addr: addr}) },
	})
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
