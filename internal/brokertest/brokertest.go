// Package brokertest starts a dev broker (with the dev preset of package
// devbroker) and paired agents inside a test process — real tsnet nodes
// over the broker's in-process dev tailnet — for tests and benchmarks that
// need to reach into either side. Only tests import it (internal/guardrails
// checks that no binary links it). End-to-end tests of the binaries live
// in package e2e.
package brokertest

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/agent"
	"github.com/tetherhq/tether/internal/broker"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/config"
	"github.com/tetherhq/tether/internal/devbroker"
	"github.com/tetherhq/tether/internal/devidp"
)

// Logger returns a logger that writes to t.Log at level.
func Logger(t testing.TB, level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: level}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// Broker is a running broker and a client of its API.
type Broker struct {
	*broker.Broker
	Dir    string
	Client *brokerapi.Client // as admin: the dev bootstrap token, or admin@vendor.test's ID token
	// IdP is the identity provider a broker outside dev mode trusts, when
	// Start started one.
	IdP *IdP
	// Dev is the dev preset of a dev broker; nil outside dev mode.
	Dev *devbroker.Env
	// Stop stops the broker now (it also stops when the test ends).
	Stop func()
}

// Start starts a dev broker in t.TempDir(); modify adjusts its config (for
// a broker on an external tailnet: Dev nil, ControlURL, AuthKey). A
// broker outside dev mode with no identity configured trusts a new [IdP].
// It stops when the test ends.
func Start(t testing.TB, modify func(*broker.Config)) *Broker {
	t.Helper()
	cfg := broker.Config{
		Dev:               devbroker.New(devbroker.Config{}),
		DataDir:           t.TempDir(),
		Listen:            "127.0.0.1:0",
		HeartbeatInterval: time.Second,
		Logger:            Logger(t, slog.LevelWarn),
	}
	if modify != nil {
		modify(&cfg)
	}
	var idp *IdP
	dev, _ := cfg.Dev.(*devbroker.Env)
	if cfg.Dev == nil && len(cfg.Identity.Issuers) == 0 {
		idp = NewIdP(t)
		cfg.Identity = idp.Config
	}
	ctx, cancel := context.WithCancel(context.Background())
	b, err := broker.New(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatalf("broker.New: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	// The API listener is bound before Run: requests queue until it
	// serves. Only the client's credentials differ between modes.
	var cli config.CLI
	if cfg.Dev != nil {
		// Run writes cli.json, with the bootstrap token, once it serves.
		deadline := time.Now().Add(30 * time.Second)
		for config.Load(filepath.Join(cfg.DataDir, "cli.json"), &cli) != nil {
			if time.Now().After(deadline) {
				t.Fatal("broker wrote no cli.json within 30s")
			}
			time.Sleep(10 * time.Millisecond) // polling for a file another goroutine writes
		}
	} else if idp != nil {
		cli = config.CLI{APIURL: b.APIURL(), Token: idp.Token(t, "admin@vendor.test")}
	}
	c, err := brokerapi.NewClient(cli)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-done; err != nil {
				t.Errorf("broker.Run: %v", err)
			}
		}
	}
	t.Cleanup(stop)
	return &Broker{Broker: b, Dir: cfg.DataDir, Client: c, IdP: idp, Dev: dev, Stop: stop}
}

// DevIdP is a dev broker's embedded identity provider, to mint its dev
// users' ID tokens; nil outside dev mode.
func (b *Broker) DevIdP() *devidp.IdP {
	if b.Dev == nil {
		return nil
	}
	return b.Dev.IdP()
}

// Pair creates tenant/name, pairs a new agent with it, runs the agent until
// the test ends and returns it once it is online.
func (b *Broker) Pair(t testing.TB, tenant, name string) *agent.Agent {
	t.Helper()
	res, err := b.Client.CreateDeployment(context.Background(), brokerapi.CreateDeploymentRequest{Tenant: tenant, Name: name})
	if err != nil {
		t.Fatalf("create deployment: %v", err)
	}
	a, _ := RunAgent(t, agent.Config{
		StateDir:     t.TempDir(),
		Join:         b.Join(),
		PairingToken: res.Pairing.Token,
		Hostname:     "agent-" + name,
	}, true)
	return a
}

// RunAgent runs an agent until the test ends or stop is called. With
// wait, it returns once the agent is online.
func RunAgent(t testing.TB, cfg agent.Config, wait bool) (a *agent.Agent, stop func()) {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = Logger(t, slog.LevelWarn)
	}
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatalf("agent.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once bool
	stop = func() {
		if !once {
			once = true
			cancel()
			<-done
		}
	}
	t.Cleanup(stop)
	if wait {
		select {
		case <-a.Ready():
		case err := <-done:
			t.Fatalf("agent.Run: %v", err)
		case <-time.After(60 * time.Second):
			t.Fatal("agent not online within 60s")
		}
	}
	return a, stop
}
