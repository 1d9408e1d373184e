package e2e

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
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

	"github.com/google/uuid"

	"github.com/tetherhq/tether/internal/agentapi"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/chtest"
	"github.com/tetherhq/tether/internal/config"
	"github.com/tetherhq/tether/internal/grant"
)

// guarded is a dev broker and an agent process guarding a real ClickHouse.
type guarded struct {
	b     *devBroker
	agent *proc
	res   brokerapi.CreateDeploymentResponse
	cli   config.CLI
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
	return &guarded{b: b, agent: a, res: res, cli: cli}
}

// mint signs a grant with the broker's key from its data dir, as the
// access workflow will.
func (g *guarded) mint(t testing.TB) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(g.b.dir, "broker.key"))
	if err != nil {
		t.Fatal(err)
	}
	seed, err := hex.DecodeString(strings.TrimSpace(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tok, err := grant.Issue(grant.Grant{
		ID: uuid.NewString(), RequestID: uuid.NewString(), Deployment: g.res.Deployment.ID,
		Agent: g.agentID(t), Subject: "engineer@vendor.test", Scopes: []string{grant.ScopeClickHouse},
		NotBefore: now.Add(-time.Minute), Expiry: now.Add(30 * time.Minute), IssuedAt: now,
	}, ed25519.NewKeyFromSeed(seed))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (g *guarded) agentID(t testing.TB) string {
	d := g.b.show(t, "acme/prod")
	if d.Agent == nil {
		t.Fatal("no agent")
	}
	return d.Agent.ID
}

func (g *guarded) query(t testing.TB, tok, sql, format string) *http.Response {
	t.Helper()
	body, _ := json.Marshal(agentapi.ClickHouseQuery{SQL: sql, Format: format})
	req, _ := http.NewRequest(http.MethodPost, g.cli.APIURL+"/api/v1/deployments/acme/prod/clickhouse/query", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+g.cli.Token)
	req.Header.Set(agentapi.HeaderGrant, tok)
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
	tok := g.mint(t)
	res := g.query(t, tok, "SELECT name FROM system.databases WHERE name = 'system'", "")
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
	res = g.query(t, "", "SELECT 1", "")
	res.Body.Close()
	if res.StatusCode != http.StatusBadRequest {
		t.Errorf("no grant = %d, want 400", res.StatusCode)
	}
}

// BenchmarkAgentStream100MB streams 100 MB of system.numbers (RowBinary)
// from ClickHouse through the agent process and the broker process, and
// reports MB/s and the agent process's peak RSS.
func BenchmarkAgentStream100MB(b *testing.B) {
	g := startGuarded(b, "--max-result-rows", "20000000")
	tok := g.mint(b)
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
