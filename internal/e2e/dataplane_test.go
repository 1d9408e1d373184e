package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/chtest"
	"github.com/tetherhq/tether/internal/config"
	"github.com/tetherhq/tether/internal/protocol"
)

// guarded is a dev broker and an agent process guarding a real ClickHouse.
type guarded struct {
	b     *devBroker
	agent *proc
	res   brokerapi.CreateDeploymentResponse
	cli   config.CLI
	ch    *chtest.Server
}

func startGuarded(t testing.TB, extra ...string) *guarded {
	t.Helper()
	ch := chtest.Start(t)
	b := startBroker(t)
	res := b.createDeployment(t, "acme", "prod")
	pw := filepath.Join(t.TempDir(), "ch-password")
	os.WriteFile(pw, []byte(chtest.Password+"\n"), 0o600)
	args := append([]string{"--pairing-token", res.Pairing.Token,
		"--clickhouse-url", ch.URL, "--clickhouse-user", "tether", "--clickhouse-password-file", pw}, extra...)
	a := b.startAgent(t, filepath.Join(t.TempDir(), "agent"), args...)
	a.waitLine(t, `msg="agent online"`, 90*time.Second)
	var cli config.CLI
	if err := config.Load(b.cliJSON, &cli); err != nil {
		t.Fatal(err)
	}
	return &guarded{b: b, agent: a, res: res, cli: cli, ch: ch}
}

// access runs the workflow through the CLI: the engineer asks, acme's
// approver approves; it returns the engineer's CLI config, whose login
// the broker matches to the grant.
func (g *guarded) access(t testing.TB, scope string) string {
	t.Helper()
	eng := loginConfig(t, g.b, "engineer@vendor.test")
	approver := loginConfig(t, g.b, "approver@acme.test")
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
	return eng
}

// loginConfig logs a dev user in with the CLI into a new CLI config.
func loginConfig(t testing.TB, b *devBroker, email string) string {
	t.Helper()
	var dev config.CLI
	if err := config.Load(b.cliJSON, &dev); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "cli.json")
	if _, errOut, code := runBin(t, []string{"TETHER_CONFIG=" + path}, "broker", "login", "--api-url", dev.APIURL, "--dev-user", email); code != 0 {
		t.Fatalf("login %s: %s", email, errOut)
	}
	return path
}

func (g *guarded) query(t testing.TB, cfgPath, sql, format string) *http.Response {
	t.Helper()
	var cli config.CLI
	if err := config.Load(cfgPath, &cli); err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(protocol.ClickHouseQuery{SQL: sql, Format: format})
	req, _ := http.NewRequest(http.MethodPost, cli.APIURL+"/api/v1/deployments/acme/prod/clickhouse/query", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+cli.Login.IDToken)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestGuardedQueryThroughBroker: engineer → broker API → tailnet → agent →
// guard → ClickHouse, as separate processes.
func TestGuardedQueryThroughBroker(t *testing.T) {
	g := startGuarded(t)
	// Before any grant the broker refuses.
	res := g.query(t, loginConfig(t, g.b, "engineer@vendor.test"), "SELECT 1", "")
	res.Body.Close()
	if res.StatusCode != http.StatusForbidden {
		t.Errorf("query without a grant = %d, want 403", res.StatusCode)
	}
	tok := g.access(t, "clickhouse:system")
	res = g.query(t, tok, "SELECT name FROM system.databases WHERE name = 'system'", "")
	out, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || string(out) != "name\nsystem\n" {
		t.Fatalf("allowed query = %d %q", res.StatusCode, out)
	}
	res = g.query(t, tok, "SELECT * FROM default.secret", "")
	out, _ = io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusForbidden || !strings.Contains(string(out), "not a system table") {
		t.Fatalf("denied query = %d %q", res.StatusCode, out)
	}
}

// BenchmarkAgentStream100MB streams 100 MB of system.numbers (RowBinary)
// from ClickHouse through the agent process and the broker process, and
// reports MB/s and the agent process's peak RSS.
func BenchmarkAgentStream100MB(b *testing.B) {
	g := startGuarded(b, "--max-result-rows", "20000000")
	tok := g.access(b, "clickhouse:system")
	b.SetBytes(100_000_000)
	for b.Loop() {
		res := g.query(b, tok, "SELECT number FROM system.numbers LIMIT 12500000", "RowBinary")
		n, err := io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if err != nil || res.StatusCode != http.StatusOK || n != 100_000_000 {
			b.Fatalf("streamed %d bytes, status %d, %v", n, res.StatusCode, err)
		}
	}
	b.ReportMetric(vmHWM(b, g.agent.cmd.Process.Pid), "agent-peak-RSS-MB")
}

func vmHWM(b *testing.B, pid int) float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			return float64(kb) / 1024
		}
	}
	return 0
}
