package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/brokerapi"
)

// TestDoneWhen walks the tour: create a deployment, pair an agent
// with the printed token, see it online, have the token refused on reuse,
// reach the agent over the tailnet, and restart the agent without a token.
func TestDoneWhen(t *testing.T) {
	b := startBroker(t)

	if fi, err := os.Stat(b.cliJSON); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("cli.json: %v, mode %v, want 0600", err, fi.Mode().Perm())
	}
	res := b.createDeployment(t, "acme", "prod")
	if !strings.HasPrefix(res.Pairing.Token, "tpt_") || res.Deployment.AgentStatus != brokerapi.StatusUnpaired {
		t.Fatalf("create = %+v", res)
	}
	// The table output prints the token too.
	out, _, code := b.cli(t, "deployment", "create", "--tenant", "acme", "--name", "staging")
	if code != 0 || !strings.Contains(out, "tpt_") {
		t.Fatalf("deployment create (table) = %d %q, want the token printed", code, out)
	}

	stateDir := filepath.Join(t.TempDir(), "agent")
	agent := b.startAgent(t, stateDir, "--pairing-token", res.Pairing.Token)
	agent.waitLine(t, `msg="agent online"`, 90*time.Second)

	out, errOut, code := b.cli(t, "deployment", "list", "--output", "json")
	if code != 0 {
		t.Fatalf("deployment list: exit %d: %s", code, errOut)
	}
	var list brokerapi.ListDeploymentsResponse
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatal(err)
	}
	var prod *brokerapi.Deployment
	for i, d := range list.Deployments {
		if d.Tenant == "acme" && d.Name == "prod" {
			prod = &list.Deployments[i]
		}
	}
	if prod == nil || prod.AgentStatus != brokerapi.StatusOnline || prod.Agent == nil || prod.Agent.LastSeen == nil || !strings.HasPrefix(prod.Agent.TailnetIP, "100.") {
		t.Fatalf("deployment list: acme/prod = %+v, want agent online with a tailnet IP", prod)
	}

	// The token is single use.
	p2 := b.startAgent(t, filepath.Join(t.TempDir(), "agent2"), "--pairing-token", res.Pairing.Token, "--hostname", "second")
	if err := p2.wait(t, 90*time.Second); err == nil {
		t.Fatal("second agent with a reused token exited 0, want refusal")
	}
	if !strings.Contains(p2.output(), "already used") {
		t.Errorf("reused token error = %q, want it to say the token was already used", p2.output())
	}

	// The broker reaches the agent over the tailnet with signed calls.
	out, errOut, code = b.cli(t, "deployment", "ping", "acme/prod", "--count", "3", "--output", "json")
	if code != 0 {
		t.Fatalf("deployment ping: exit %d: %s", code, errOut)
	}
	var ping brokerapi.PingResponse
	if err := json.Unmarshal([]byte(out), &ping); err != nil || len(ping.RTTs) != 3 || ping.AgentID != prod.Agent.ID {
		t.Fatalf("ping = %+v (%v), want 3 RTTs from agent %s", ping, err, prod.Agent.ID)
	}

	// Restart with the same state dir: no token needed, same agent.
	agent.stop()
	agent = b.startAgent(t, stateDir)
	agent.waitLine(t, `msg="agent online"`, 90*time.Second)
	if d := b.show(t, "acme/prod"); d.Agent == nil || d.Agent.ID != prod.Agent.ID {
		t.Fatalf("after restart agent = %+v, want the same agent %s", d.Agent, prod.Agent.ID)
	}

	// Stopped, the agent goes offline after three missed beats.
	agent.stop()
	if out := agent.stdout.String() + b.stdout.String(); out != "" {
		t.Errorf("broker/agent wrote to stdout (logs belong on stderr, via slog): %q", out)
	}
	b.waitStatus(t, "acme/prod", brokerapi.StatusOffline, 30*time.Second)
}

// TestPairingTokenErrors checks that wrong, malformed and expired tokens are
// refused with an error naming which.
func TestPairingTokenErrors(t *testing.T) {
	b := startBroker(t, "--pairing-ttl", "2s")
	res := b.createDeployment(t, "acme", "prod")

	tests := []struct {
		name, token, want string
	}{
		{"unknown", "tpt_" + strings.Repeat("A", 43), "not known to this broker"},
		{"malformed", "not-a-token", "malformed pairing token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := b.startAgent(t, filepath.Join(t.TempDir(), "a"), "--pairing-token", tt.token)
			if err := p.wait(t, 90*time.Second); err == nil {
				t.Fatal("agent exited 0, want refusal")
			}
			if !strings.Contains(p.output(), tt.want) {
				t.Errorf("agent error = %q, want it to contain %q", p.output(), tt.want)
			}
		})
	}
	t.Run("expired", func(t *testing.T) {
		// Let the 2 s lifetime pass; this is the behaviour under test.
		time.Sleep(time.Until(res.Pairing.ExpiresAt) + 100*time.Millisecond)
		dir := filepath.Join(t.TempDir(), "a")
		p := b.startAgent(t, dir, "--pairing-token", res.Pairing.Token)
		if err := p.wait(t, 90*time.Second); err == nil {
			t.Fatal("agent exited 0, want refusal")
		}
		if !strings.Contains(p.output(), "expired") {
			t.Errorf("agent error = %q, want it to say the token expired", p.output())
		}
		if _, err := os.Stat(filepath.Join(dir, "state.json")); err == nil {
			t.Error("a refused pairing left state.json behind")
		}
	})
	if d := b.show(t, "acme/prod"); d.AgentStatus != brokerapi.StatusUnpaired {
		t.Errorf("after refused pairings agent status = %q, want unpaired", d.AgentStatus)
	}
	// Every refusal that reached the broker is audited (the malformed
	// token is refused by the agent before it dials).
	out, errOut, code := b.cli(t, "audit", "search", "--type", "agent.pair_failed", "--output", "json")
	if code != 0 {
		t.Fatalf("audit search: %s", errOut)
	}
	if n := strings.Count(out, `"index"`); n != 2 {
		t.Errorf("audit log has %d agent.pair_failed events, want 2:\n%s", n, out)
	}
}

// TestRepair: a new pairing token replaces the agent; the old one is
// refused and stops.
func TestRepair(t *testing.T) {
	b := startBroker(t)
	res := b.createDeployment(t, "acme", "prod")
	old := b.startAgent(t, filepath.Join(t.TempDir(), "old"), "--pairing-token", res.Pairing.Token)
	old.waitLine(t, `msg="agent online"`, 90*time.Second)
	first := b.show(t, "acme/prod").Agent.ID

	out, errOut, code := b.cli(t, "deployment", "pairing-token", "acme/prod", "--output", "json")
	if code != 0 {
		t.Fatalf("pairing-token: exit %d: %s", code, errOut)
	}
	var tok brokerapi.PairingToken
	if err := json.Unmarshal([]byte(out), &tok); err != nil {
		t.Fatal(err)
	}
	repl := b.startAgent(t, filepath.Join(t.TempDir(), "new"), "--pairing-token", tok.Token, "--hostname", "replacement")
	repl.waitLine(t, `msg="agent online"`, 90*time.Second)
	if d := b.show(t, "acme/prod"); d.Agent == nil || d.Agent.ID == first {
		t.Fatalf("after re-pairing agent = %+v, want a new agent", d.Agent)
	}
	// The replaced agent is refused at its next heartbeat and stops.
	if err := old.wait(t, 30*time.Second); err == nil {
		t.Fatal("replaced agent exited 0, want an error")
	}
	if !strings.Contains(old.output(), "replaced by a later pairing") {
		t.Errorf("replaced agent output = %q, want it to say it was replaced", old.output())
	}
}
