package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/promtest"
)

// TestAccessWorkflow is the access workflow end to end, every part a real
// process or server: broker (with its dev tailnet and OIDC provider),
// agent, ClickHouse, Prometheus, and the CLI as each person runs it.
func TestAccessWorkflow(t *testing.T) {
	prom := promtest.Start(t)
	g := startGuarded(t, "--prometheus-url", prom.URL)
	as := func(cfg string, args ...string) (string, string, int) {
		t.Helper()
		return runBin(t, []string{"TETHER_CONFIG=" + cfg}, "broker", args...)
	}
	eng := loginConfig(t, g.b, "engineer@vendor.test")
	acme := loginConfig(t, g.b, "approver@acme.test")
	globex := loginConfig(t, g.b, "approver@globex.test")
	lead := loginConfig(t, g.b, "lead@vendor.test")
	reviewer := loginConfig(t, g.b, "reviewer@vendor.test")

	// The engineer asks.
	out, errOut, code := as(eng, "request", "create", "--deployment", "acme/prod", "--scope", "clickhouse:system,prometheus:read",
		"--duration", "30m", "--reason", "merges are slow", "--output", "json")
	if code != 0 {
		t.Fatalf("request create: %s", errOut)
	}
	var ar brokerapi.AccessRequest
	if err := json.Unmarshal([]byte(out), &ar); err != nil || ar.State != brokerapi.StatePending {
		t.Fatalf("request create = %s, %v; want pending", out, err)
	}
	// Before approval there is no access.
	if _, errOut, code := as(eng, "query", "--deployment", "acme/prod", "SELECT 1"); code == 0 || !strings.Contains(errOut, "no active grant") {
		t.Errorf("query before approval: exit %d %q, want refused", code, errOut)
	}
	// globex's approver is refused; so is approving one's own request.
	if _, errOut, code := as(globex, "request", "approve", ar.ID); code == 0 || !strings.Contains(errOut, "may not act on tenant acme") {
		t.Errorf("approve as globex: exit %d %q, want a tenant refusal", code, errOut)
	}
	out, errOut, code = as(lead, "request", "create", "--deployment", "acme/prod", "--scope", "prometheus:read", "--duration", "10m", "--reason", "own", "--output", "json")
	var own brokerapi.AccessRequest
	if code != 0 || json.Unmarshal([]byte(out), &own) != nil {
		t.Fatalf("lead's request: %s", errOut)
	}
	if _, errOut, code := as(lead, "request", "approve", own.ID); code == 0 || !strings.Contains(errOut, "nobody reviews their own request") {
		t.Errorf("self-approval: exit %d %q, want refused", code, errOut)
	}

	// acme approves: the grant is live at once.
	if out, errOut, code := as(acme, "request", "approve", ar.ID, "--comment", "go ahead"); code != 0 || !strings.Contains(out, "active") {
		t.Fatalf("approve as acme: exit %d %q %q", code, out, errOut)
	}
	out, errOut, code = as(eng, "query", "--deployment", "acme/prod", "SELECT name FROM system.databases WHERE name = 'system'", "--output", "json")
	if code != 0 || !strings.Contains(out, `"name":"system"`) {
		t.Errorf("allowed query: exit %d %q %q", code, out, errOut)
	}
	// --timing shows where the call's time went, hop by hop.
	if _, errOut, code := as(eng, "query", "--deployment", "acme/prod", "--timing", "SELECT 1"); code != 0 || !timingHas(errOut, "auth", "lookup", "tailnet", "agent", "grant", "guard", "audit", "upstream", "stream") {
		t.Errorf("query --timing: exit %d %q; want each hop's time", code, errOut)
	} else {
		t.Logf("query --timing: %s", strings.TrimSpace(errOut))
	}
	if _, errOut, code := as(eng, "query", "--deployment", "acme/prod", "SELECT * FROM default.secret"); code == 0 || !strings.Contains(errOut, "default.secret is not a system table") {
		t.Errorf("customer-data query: exit %d %q, want the guard's reason", code, errOut)
	}
	// Prometheus has a series for up once it has scraped itself.
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := http.Get(prom.URL + "/api/v1/query?query=up")
		if err == nil {
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if strings.Contains(string(body), `"__name__":"up"`) {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("Prometheus never scraped itself")
		}
		time.Sleep(100 * time.Millisecond) // polling Prometheus's observable state
	}
	if out, errOut, code := as(eng, "prom", "--deployment", "acme/prod", "up"); code != 0 || !strings.Contains(out, "up{") {
		t.Errorf("prom up: exit %d %q %q", code, out, errOut)
	}

	// A long query, then revocation: it is killed within a second.
	long := exec.Command(filepath.Join(binDir, "broker"), "query", "--deployment", "acme/prod", "SELECT count() FROM system.numbers")
	long.Env = append(long.Environ(), "TETHER_CONFIG="+eng)
	var longErr strings.Builder
	long.Stderr = &longErr
	if err := long.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- long.Wait() }()
	running := func() bool {
		return strings.TrimSpace(g.ch.Exec(t, "SELECT count() FROM system.processes WHERE query_id LIKE 'tether-%' AND query LIKE '%system.numbers%'")) != "0"
	}
	deadline = time.Now().Add(30 * time.Second)
	for !running() {
		if time.Now().After(deadline) {
			t.Fatal("the long query never showed in system.processes")
		}
		time.Sleep(50 * time.Millisecond) // polling ClickHouse's observable state
	}
	start := time.Now()
	if _, errOut, code := as(acme, "request", "revoke", ar.ID, "--reason", "found it"); code != 0 {
		t.Fatalf("revoke: %s", errOut)
	}
	select {
	case err := <-exited:
		if err == nil {
			t.Error("the long query succeeded after revocation")
		}
	case <-time.After(10 * time.Second):
		long.Process.Kill()
		t.Fatal("the long query still ran 10 s after revocation")
	}
	for running() {
		if time.Since(start) > 10*time.Second {
			t.Fatal("ClickHouse still runs the revoked grant's query")
		}
		time.Sleep(20 * time.Millisecond) // polling ClickHouse's observable state
	}
	t.Logf("revocation → query gone from ClickHouse: %v", time.Since(start))
	if _, errOut, code := as(eng, "query", "--deployment", "acme/prod", "SELECT 1"); code == 0 || !strings.Contains(errOut, "no active grant") {
		t.Errorf("query after revocation: exit %d %q, want refused", code, errOut)
	}

	// The reviewer replays the session: every step, in order. The agent
	// delivers its events (the queries) with its heartbeats.
	want := []string{"policy.decided", "request.created", "review.approved", "grant.issued", "query.allowed", "query.finished", "query.denied", "prom.allowed", "query.allowed", "grant.revoked"}
	var types []string
	deadline = time.Now().Add(30 * time.Second)
	for {
		out, errOut, code = as(reviewer, "audit", "show-session", ar.ID, "--output", "json")
		if code != 0 {
			t.Fatalf("show-session: %s", errOut)
		}
		var evs brokerapi.AuditEvents
		if err := json.Unmarshal([]byte(out), &evs); err != nil {
			t.Fatal(err)
		}
		types = types[:0]
		for _, ae := range evs.Events {
			var e struct {
				Type string `json:"type"`
			}
			json.Unmarshal(ae.Event, &e)
			types = append(types, e.Type)
		}
		if subsequence(types, want) || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond) // polling the log for the agent's delivery
	}
	if !subsequence(types, want) {
		t.Errorf("show-session types = %q, want in order %q", types, want)
	}
	dir := t.TempDir()
	if _, errOut, code := as(reviewer, "audit", "export", "--out", filepath.Join(dir, "e.jsonl")); code != 0 {
		t.Fatalf("export: %s", errOut)
	}
	if _, errOut, code := as(reviewer, "audit", "public-key", "--out", filepath.Join(dir, "k")); code != 0 {
		t.Fatalf("public-key: %s", errOut)
	}
	if out, errOut, code := as(reviewer, "audit", "verify", "--log", filepath.Join(dir, "e.jsonl"), "--key", filepath.Join(dir, "k")); code != 0 {
		t.Errorf("verify: exit %d %q %q", code, out, errOut)
	}
}

// subsequence reports whether want appears in got in order.
func subsequence(got, want []string) bool {
	i := 0
	for _, g := range got {
		if i < len(want) && g == want[i] {
			i++
		}
	}
	return i == len(want)
}

// timingHas reports whether the CLI's --timing line names every hop.
func timingHas(stderr string, hops ...string) bool {
	for _, line := range strings.Split(stderr, "\n") {
		if !strings.HasPrefix(line, "timing: ") {
			continue
		}
		for _, h := range hops {
			if !regexp.MustCompile(`\b` + h + ` \d+\.\d\d ms`).MatchString(line) {
				return false
			}
		}
		return true
	}
	return false
}
