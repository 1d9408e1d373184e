package broker_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/names"

	"github.com/google/uuid"
	_ "modernc.org/sqlite"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/agent"
	"github.com/tetherhq/tether/internal/broker"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/brokercli"
	"github.com/tetherhq/tether/internal/brokertest"
	"github.com/tetherhq/tether/internal/config"
	"github.com/tetherhq/tether/internal/grant"
	"github.com/tetherhq/tether/internal/protocol"
)

// TestWitnessRefusesTruncatedLog: someone with the broker's database
// deletes the newest audit events together with their checkpoints and
// cosignatures, and the broker restarts on it (its own start-up cannot
// tell: the store is consistent with what remains). The agent, which
// cosigned a larger checkpoint, refuses every data-plane call from then
// on, across its own restart, and says why in its heartbeats, which
// 'deployment show' and 'deployment list' print. Whether the log stays
// short or grows again past what the agent cosigned (a fork), the agent
// refuses.
func TestWitnessRefusesTruncatedLog(t *testing.T) {
	for _, tt := range []struct {
		name   string
		regrow int // events the broker records after the truncation, before the agent is back
		want   string
	}{
		{"truncated", 0, "cosigned before"},
		{"truncated and regrown", 20, "is not consistent with checkpoint"},
	} {
		t.Run(tt.name, func(t *testing.T) { testWitnessRefuses(t, tt.regrow, tt.want) })
	}
}

func testWitnessRefuses(t *testing.T, regrow int, want string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	onTailnet := externalTailnet(t, ctx)
	dir := t.TempDir()
	external := func(c *broker.Config) {
		c.DataDir = dir
		onTailnet(c)
		c.HeartbeatInterval = 200 * time.Millisecond
	}
	b1 := brokertest.Start(t, external)
	res, err := b1.Client.CreateDeployment(ctx, brokerapi.CreateDeploymentRequest{Tenant: "acme", Name: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	// The ClickHouse URL leads nowhere: a refused call never gets there.
	cfg := agent.Config{
		StateDir: t.TempDir(), Join: b1.Join(), PairingToken: res.Pairing.Token, Hostname: "witness-agent",
		Upstreams: agent.Upstreams{ClickHouseURL: "http://127.0.0.1:9", ClickHouseUser: "tether"},
	}
	a1, stopA1 := brokertest.RunAgent(t, cfg, true)
	agentID := a1.State().AgentID

	// Enough events for a checkpoint the agent cosigns.
	for i := range 10 {
		if _, err := b1.Client.CreateDeployment(ctx, brokerapi.CreateDeploymentRequest{Tenant: "acme", Name: "d" + string(rune('a'+i))}); err != nil {
			t.Fatal(err)
		}
	}
	cosigned := waitCosigned(t, cfg.StateDir, 12)
	if r := a1.WitnessRefusal(); r != "" {
		t.Fatalf("witness refuses an honest broker: %s", r)
	}
	stopA1()
	b1.Stop()

	// The attack: the newest events go, with every checkpoint and
	// cosignature that covered them.
	keep := cosigned - 5
	db, err := sql.Open("sqlite", filepath.Join(dir, "tether.db"))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`DELETE FROM audit_events WHERE idx >= ?`,
		`DELETE FROM audit_checkpoints WHERE size > ?`,
		`DELETE FROM audit_cosignatures WHERE size > ?`,
	} {
		if _, err := db.Exec(q, keep); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()

	b2 := brokertest.Start(t, external)
	for i := range regrow {
		if _, err := b2.Client.CreateDeployment(ctx, brokerapi.CreateDeploymentRequest{Tenant: "acme", Name: "e" + strconv.Itoa(i)}); err != nil {
			t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(30 * time.Second); regrow > 0; {
		// The regrown log is signed past what the agent cosigned.
		if cp, err := b2.Client.AuditCheckpoint(ctx); err == nil && cp.Size > cosigned {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no checkpoint beyond %d after 30s", cosigned)
		}
		time.Sleep(50 * time.Millisecond) // polling observable state
	}
	cfg.PairingToken = ""
	a2, _ := brokertest.RunAgent(t, cfg, true)

	// The agent refuses, and the broker shows why.
	var d brokerapi.Deployment
	deadline := time.Now().Add(30 * time.Second)
	for {
		if d, err = b2.Client.GetDeployment(ctx, "acme/prod"); err != nil {
			t.Fatal(err)
		}
		if d.Agent != nil && d.Agent.WitnessRefusal != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("deployment shows no witness refusal after 30s: %+v", d.Agent)
		}
		time.Sleep(50 * time.Millisecond) // polling observable state
	}
	if !strings.HasPrefix(d.Agent.WitnessRefusal, "log rewritten: ") || !strings.Contains(d.Agent.WitnessRefusal, want) {
		t.Errorf("witness refusal = %q, want it to start with %q and say %q", d.Agent.WitnessRefusal, "log rewritten: ", want)
	}

	tok, err := b2.IssueGrant(grant.Grant{
		ID: uuid.NewString(), RequestID: uuid.NewString(), Deployment: res.Deployment.ID, Agent: agentID,
		Subject: "engineer@vendor.test", Scopes: []string{names.ScopeClickHouse},
		NotBefore: time.Now().Add(-time.Minute), Expiry: time.Now().Add(10 * time.Minute), IssuedAt: time.Now(), PolicyHash: "test",
	})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(protocol.ClickHouseQuery{SQL: "SELECT 1"})
	resp, err := b2.CallAgent(ctx, res.Deployment.ID, http.MethodPost, protocol.PathClickHouseQuery, body, http.Header{protocol.HeaderGrant: {tok}})
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(out), "audit log was rewritten") {
		t.Errorf("data-plane call to a refusing witness = %d %s, want 403 saying the audit log was rewritten", resp.StatusCode, out)
	}

	// The refusal is in the broker's log, and in the CLI's views.
	// (The heartbeat is stored just before its event is written.)
	for deadline := time.Now().Add(10 * time.Second); ; {
		evs, err := b2.Client.AuditSearch(ctx, brokerapi.AuditQuery{Type: string(audit.VerifyFailed)})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) > 0 {
			if !strings.Contains(string(evs[0].Event), "witness refuses") {
				t.Errorf("audit.verify_failed event = %s, want it to say the witness refuses", evs[0].Event)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no audit.verify_failed event 10s after the deployment showed the refusal")
		}
		time.Sleep(20 * time.Millisecond) // polling observable state
	}
	cliCfg := filepath.Join(t.TempDir(), "cli.json")
	if err := config.Write(cliCfg, config.CLI{APIURL: b2.APIURL(), Token: b2.IdP.Token(t, "admin@vendor.test")}, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"deployment", "show", "acme/prod"}, {"deployment", "list"}} {
		var stdout, stderr bytes.Buffer
		if err := brokercli.Run(ctx, append(args, "--config", cliCfg), &stdout, &stderr); err != nil {
			t.Fatalf("broker %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
		}
		if !strings.Contains(stdout.String(), "witness refuses: log rewritten") {
			t.Errorf("broker %s printed\n%s\nwant it to say \"witness refuses: log rewritten\"", strings.Join(args, " "), stdout.String())
		}
	}

	// The refusal survives an agent restart (it is in the state dir).
	if r := a2.WitnessRefusal(); r == "" {
		t.Fatal("the running agent does not refuse")
	}
	a3, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if r := a3.WitnessRefusal(); !strings.HasPrefix(r, "log rewritten: ") {
		t.Errorf("after a restart the agent's witness refusal = %q, want it kept", r)
	}
}

// waitCosigned waits until the agent in stateDir has cosigned a
// checkpoint of at least min events, and returns its size.
func waitCosigned(t *testing.T, stateDir string, min uint64) uint64 {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var w struct {
			Size uint64 `json:"size"`
		}
		b, err := os.ReadFile(filepath.Join(stateDir, "witness.json"))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		if err == nil {
			if err := json.Unmarshal(b, &w); err != nil {
				t.Fatal(err)
			}
			if w.Size >= min {
				return w.Size
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent cosigned %d events after 30s, want at least %d", w.Size, min)
		}
		time.Sleep(50 * time.Millisecond) // polling a file the agent writes
	}
}
