package brokercli

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/tetherhq/tether/internal/broker"
	"github.com/tetherhq/tether/internal/cli"
	"github.com/tetherhq/tether/internal/devbroker"
)

// TestServeDevOnlyInDevBuild: the production command line has no dev
// mode — 'serve --dev' (or --dev-addr) is refused with a pointer to
// bin/broker-dev, before anything starts — while the dev build's hook
// turns --dev into a dev preset that reaches the broker's config checks.
func TestServeDevOnlyInDevBuild(t *testing.T) {
	dev := Options{Dev: func(addr string) broker.DevEnv { return devbroker.New(devbroker.Config{Addr: addr}) }}
	for _, tt := range []struct {
		name string
		opts Options
		args []string
		want string
	}{
		{"production --dev", Options{}, []string{"serve", "--dev", "--data-dir", t.TempDir()}, "--dev is not in this build: the production broker links no dev tailnet or dev identity provider; run bin/broker-dev serve --dev"},
		{"production --dev-addr", Options{}, []string{"serve", "--dev-addr", "10.0.0.1", "--data-dir", t.TempDir()}, "run bin/broker-dev serve --dev"},
		// The dev preset is in force: a public listen address is refused
		// for the dev identity provider's sake (not for want of TLS).
		{"dev build --dev", dev, []string{"serve", "--dev", "--data-dir", t.TempDir(), "--listen", "0.0.0.0:8443"}, "a dev broker's identity provider signs anyone in"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := RunWith(context.Background(), tt.args, io.Discard, io.Discard, tt.opts)
			var ue *cli.UsageError
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("RunWith(%q) = %v, want a usage error containing %q", tt.args, err, tt.want)
			}
		})
	}
	// Run is the production command line.
	if err := Run(context.Background(), []string{"serve", "--dev", "--data-dir", t.TempDir()}, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "bin/broker-dev") {
		t.Errorf("Run(serve --dev) = %v, want a refusal naming bin/broker-dev", err)
	}
}
