package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/brokerapi"
)

// slowSQL streams one row per block: the answer takes many seconds.
const slowSQL = "SELECT number FROM system.numbers LIMIT 5000000 SETTINGS max_block_size = 1"

// accessRequest runs the workflow as guarded.access does and returns the
// engineer's CLI config, the approver's, and the request's ID.
func (g *guarded) accessRequest(t *testing.T, scope string) (eng, approver, id string) {
	t.Helper()
	eng = loginConfig(t, g.b, "engineer@vendor.test")
	approver = loginConfig(t, g.b, "approver@acme.test")
	out, errOut, code := runBin(t, []string{"TETHER_CONFIG=" + eng}, "broker", "request", "create", "--deployment", "acme/prod",
		"--scope", scope, "--duration", "30m", "--reason", "e2e", "--output", "json")
	if code != 0 {
		t.Fatalf("request create: %s", errOut)
	}
	var ar brokerapi.AccessRequest
	if err := json.Unmarshal([]byte(out), &ar); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := runBin(t, []string{"TETHER_CONFIG=" + approver}, "broker", "request", "approve", ar.ID); code != 0 {
		t.Fatalf("request approve: %s", errOut)
	}
	return eng, approver, ar.ID
}

// streamingQuery starts 'broker query -o csv slowSQL' as the engineer and
// returns once ClickHouse runs the query.
func (g *guarded) streamingQuery(t *testing.T, eng string) *proc {
	t.Helper()
	q := startCmd(t, "broker query", exec.Command(filepath.Join(binDir, "broker"), "query", "--deployment", "acme/prod", "--output", "csv", slowSQL),
		[]string{"TETHER_CONFIG=" + eng})
	deadline := time.Now().Add(30 * time.Second)
	for strings.TrimSpace(g.ch.Exec(t, "SELECT count() FROM system.processes WHERE query_id LIKE 'tether-%'")) != "1" {
		if time.Now().After(deadline) {
			t.Fatal("the query never showed in ClickHouse's system.processes")
		}
		time.Sleep(20 * time.Millisecond) // polling system.processes
	}
	for !strings.Contains(q.stdout.String(), "\n1\n") { // rows have reached the engineer
		if time.Now().After(deadline) {
			t.Fatalf("no rows reached the engineer: %q", q.stdout.String())
		}
		time.Sleep(20 * time.Millisecond) // polling the CLI's output
	}
	return q
}

// wantIncomplete checks the CLI failed with "the result is incomplete:"
// and reason, printed no torn row and no row count as success.
func wantIncomplete(t *testing.T, q *proc, reason string) {
	t.Helper()
	err := q.wait(t, 60*time.Second)
	out := q.stdout.String()
	if err == nil || !strings.Contains(q.output(), "the result is incomplete: ") || !strings.Contains(q.output(), reason) {
		t.Errorf("broker query of a cut result: %v, stderr %q; want a non-zero exit and \"the result is incomplete: …%s…\"", err, q.output(), reason)
	}
	if strings.Contains(q.output(), " rows in ") {
		t.Errorf("broker query reported a cut result as rows in a time: %q", q.output())
	}
	if !strings.HasSuffix(out, "\n") {
		t.Errorf("broker query printed a torn last row: …%q", out[max(len(out)-40, 0):])
	}
}

// auditHas waits until the broker's audit log holds an event whose JSON
// line contains every one of subs.
func (g *guarded) auditHas(t *testing.T, subs ...string) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "e.jsonl")
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, errOut, code := g.b.cli(t, "audit", "export", "--out", file); code != 0 {
			t.Fatalf("audit export: %s", errOut)
		}
		raw, _ := os.ReadFile(file)
	lines:
		for _, line := range strings.Split(string(raw), "\n") {
			for _, s := range subs {
				if !strings.Contains(line, s) {
					continue lines
				}
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no audit event with %q in 30 s", subs)
		}
		time.Sleep(200 * time.Millisecond) // polling the log the agent delivers to
	}
}

// TestResultCutShort: a result cut short mid-stream by a revocation, or
// by the broker's or the agent's death (SIGKILL), through the real broker, agent and
// ClickHouse processes: 'broker query' exits non-zero with "the result is
// incomplete: <reason>", prints no torn row and no row count, and the
// audit log records query.finished with outcome failure and the reason.
func TestResultCutShort(t *testing.T) {
	g := startGuarded(t)
	parent := t

	t.Run("revoked", func(t *testing.T) {
		eng, approver, id := g.accessRequest(t, "clickhouse:system")
		q := g.streamingQuery(t, eng)
		if _, errOut, code := runBin(t, []string{"TETHER_CONFIG=" + approver}, "broker", "request", "revoke", id, "--reason", "e2e cut"); code != 0 {
			t.Fatalf("request revoke: %s", errOut)
		}
		wantIncomplete(t, q, "revoked")
		g.auditHas(t, `"type":"query.finished"`, `"outcome":"failure"`, "revoked")
	})

	t.Run("broker killed", func(t *testing.T) {
		eng, _, id := g.accessRequest(t, "clickhouse:system")
		q := g.streamingQuery(t, eng)
		g.b.cmd.Process.Kill()
		g.b.wait(t, 10*time.Second)
		wantIncomplete(t, q, "broke off")
		// The restarted broker gets the agent's record of the cut: the
		// agent could not write the rest, and spooled query.finished
		// with outcome failure until a broker took it.
		os.Remove(g.b.cliJSON) // the restarted broker writes it anew, with its new address
		// Started on the parent test, so that it outlives this subtest.
		p := start(parent, "broker-dev", nil, "serve", "--dev", "--data-dir", g.b.dir, "--listen", "127.0.0.1:0", "--heartbeat-interval", "500ms")
		p.waitLine(t, `msg="broker ready"`, 90*time.Second)
		g.b = &devBroker{proc: p, dir: g.b.dir, cliJSON: g.b.cliJSON, join: g.b.join}
		g.b.waitStatus(t, "acme/prod", "online", 60*time.Second)
		g.auditHas(t, `"type":"query.finished"`, `"outcome":"failure"`, id, `"agent_id"`)
	})

	t.Run("agent killed", func(t *testing.T) {
		eng, _, _ := g.accessRequest(t, "clickhouse:system")
		q := g.streamingQuery(t, eng)
		g.agent.cmd.Process.Kill()
		wantIncomplete(t, q, "broke off")
		g.auditHas(t, `"type":"query.finished"`, `"outcome":"failure"`, `"recorded_by":"broker"`)
	})
}
