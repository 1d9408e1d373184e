// Package brokertest starts a dev broker and paired agents inside a test
// process — real tsnet nodes over the broker's in-process dev tailnet — for
// tests and benchmarks that need to reach into either side. End-to-end
// tests of the binaries live in package e2e.
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

// Broker is a running dev broker and a client of its API.
type Broker struct {
	*broker.Broker
	Dir    string
	Client *brokerapi.Client
}

// Start starts a dev broker in t.TempDir(); modify adjusts its config.
// It stops when the test ends.
func Start(t testing.TB, modify func(*broker.Config)) *Broker {
	t.Helper()
	dir := t.TempDir()
	cfg := broker.Config{
		Dev:               true,
		DataDir:           dir,
		Listen:            "127.0.0.1:0",
		HeartbeatInterval: time.Second,
		Logger:            Logger(t, slog.LevelWarn),
	}
	if modify != nil {
		modify(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b, err := broker.New(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatalf("broker.New: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("broker.Run: %v", err)
		}
	})
	// Run writes cli.json once it serves; the API answering is the
	// readiness signal.
	var cli config.CLI
	deadline := time.Now().Add(30 * time.Second)
	for config.Load(filepath.Join(dir, "cli.json"), &cli) != nil {
		if time.Now().After(deadline) {
			t.Fatal("broker wrote no cli.json within 30s")
		}
		time.Sleep(10 * time.Millisecond) // polling for a file another goroutine writes
	}
	c, err := brokerapi.NewClient(cli)
	if err != nil {
		t.Fatal(err)
	}
	return &Broker{Broker: b, Dir: dir, Client: c}
}

// Pair creates tenant/name, pairs a new agent with it, runs the agent until
// the test ends and returns it once it is online.
func (b *Broker) Pair(t testing.TB, tenant, name string) *agent.Agent {
	t.Helper()
	ctx := context.Background()
	res, err := b.Client.CreateDeployment(ctx, brokerapi.CreateDeploymentRequest{Tenant: tenant, Name: name})
	if err != nil {
		t.Fatalf("create deployment: %v", err)
	}
	a, err := agent.New(agent.Config{
		StateDir:     t.TempDir(),
		Join:         b.Join(),
		PairingToken: res.Pairing.Token,
		Hostname:     "agent-" + name,
		Logger:       Logger(t, slog.LevelWarn),
	})
	if err != nil {
		t.Fatalf("agent.New: %v", err)
	}
	actx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(actx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	select {
	case <-a.Ready():
	case err := <-done:
		t.Fatalf("agent.Run: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("agent not online within 60s")
	}
	return a
}
