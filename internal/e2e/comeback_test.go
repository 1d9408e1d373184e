package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestAgentsComeBackAfterBrokerKill kills a dev broker with SIGKILL while
// agents (separate processes) are online, leaves it down for 20 s (long
// enough for the agents' retries to back off), restarts it on the same
// data directory, and expects every agent online again within 10 s of
// the broker being ready, without re-pairing: the restarted dev tailnet
// hands the broker's and the agents' nodes new IDs, and each side proves
// itself by its key (the broker audits agent.moved). Before that, one
// agent's tailnet node is re-created, and it comes back by its key too.
func TestAgentsComeBackAfterBrokerKill(t *testing.T) {
	back := comeBack(t, 6, 20*time.Second, 10*time.Second, true)
	t.Logf("all 6 agents online %v after the restarted broker was ready", back.Round(time.Millisecond))
}

// BenchmarkAgentsComeBack50 is the figure: a dev broker with 50
// agents (separate processes) killed with SIGKILL and restarted; it
// reports how long after the restarted broker was ready every agent had
// a heartbeat taken (target: 30 s).
func BenchmarkAgentsComeBack50(b *testing.B) {
	for range b.N {
		back := comeBack(b, 50, 5*time.Second, 30*time.Second, false)
		b.ReportMetric(back.Seconds(), "s-all-online")
	}
}

// comeBack runs the scenario with n agents and an outage of the given
// length, fails unless every agent is back within bound, and returns how
// long that took. With recreate, one agent's node is re-created first.
func comeBack(t testing.TB, agents int, outage, bound time.Duration, recreate bool) time.Duration {
	b := startBroker(t)
	var refs, dirs []string
	var procs []*proc
	for i := range agents {
		ref := fmt.Sprintf("acme/d%d", i)
		res := b.createDeployment(t, "acme", fmt.Sprintf("d%d", i))
		dir := t.TempDir()
		procs = append(procs, b.startAgent(t, dir, "--pairing-token", res.Pairing.Token))
		refs, dirs = append(refs, ref), append(dirs, dir)
	}
	for _, ref := range refs {
		b.waitStatus(t, ref, "online", 120*time.Second)
	}
	if recreate {
		recreateNode(t, b, refs[0], dirs[0], procs[0])
	}

	if err := b.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	b.wait(t, 10*time.Second)
	time.Sleep(outage) // the outage under test
	os.Remove(b.cliJSON)
	p := start(t, "broker-dev", nil, "serve", "--dev", "--data-dir", b.dir, "--listen", "127.0.0.1:0", "--heartbeat-interval", "500ms")
	p.waitLine(t, `msg="broker ready"`, 90*time.Second)
	ready := time.Now()
	b2 := &devBroker{proc: p, dir: b.dir, cliJSON: b.cliJSON, join: b.join}
	// Online now: a heartbeat the restarted broker took.
	for _, ref := range refs {
		for {
			d := b2.show(t, ref)
			if d.AgentStatus == "online" && d.Agent != nil && d.Agent.LastSeen != nil && d.Agent.LastSeen.After(ready) {
				break
			}
			if time.Since(ready) > bound {
				t.Fatalf("deployment %s: agent %s, last seen %v, %v after the restarted broker was ready at %v; want a heartbeat since", ref, d.AgentStatus, d.Agent.LastSeen, bound, ready)
			}
			time.Sleep(100 * time.Millisecond) // polling an observable state
		}
	}
	backIn := time.Since(ready)
	if recreate {
		out, errOut, code := b2.cli(t, "audit", "search", "--type", "agent.moved", "--output", "json")
		if code != 0 {
			t.Fatalf("audit search: %s", errOut)
		}
		if !strings.Contains(out, `"from_node_id"`) {
			t.Errorf("no agent.moved event after an agent's node was re-created:\n%s", out)
		}
	}
	return backIn
}

// recreateNode re-creates the tailnet node of the agent of ref (its tsnet
// state removed) and waits for it online on another node, by its key.
func recreateNode(t testing.TB, b *devBroker, ref, dir string, p *proc) {
	began := time.Now()
	// An agent whose tailnet node is re-created (its tsnet state lost, as
	// a pod rescheduled without its volume's tsnet directory would be)
	// comes back on a new node by its key, without a pairing token.
	was := b.show(t, ref).Agent.NodeID
	p.stop()
	if err := os.RemoveAll(filepath.Join(dir, "tsnet")); err != nil {
		t.Fatal(err)
	}
	b.startAgent(t, dir)
	for {
		d := b.show(t, ref)
		if d.AgentStatus == "online" && d.Agent.NodeID != was {
			break
		}
		if time.Since(began) > 60*time.Second {
			t.Fatalf("agent of %s on a re-created node: %s on node %s, want online on a node other than %s", ref, d.AgentStatus, d.Agent.NodeID, was)
		}
		time.Sleep(100 * time.Millisecond) // polling an observable state
	}
}
