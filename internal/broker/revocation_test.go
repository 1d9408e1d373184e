package broker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/agent"
	"github.com/tetherhq/tether/internal/broker"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/brokercli"
	"github.com/tetherhq/tether/internal/brokertest"
	"github.com/tetherhq/tether/internal/chtest"
	"github.com/tetherhq/tether/internal/config"
	"github.com/tetherhq/tether/internal/devbroker"
	"github.com/tetherhq/tether/internal/protocol"
	"github.com/tetherhq/tether/internal/store"
)

// TestRevocationSurvivesAgentRestart: a revoked grant, still inside its
// window, stays refused after the agent restarts on the same state dir.
// The agent used to keep revocations in memory only.
func TestRevocationSurvivesAgentRestart(t *testing.T) {
	ch := chtest.Start(t)
	b := brokertest.Start(t, nil)
	res, err := b.Client.CreateDeployment(context.Background(), brokerapi.CreateDeploymentRequest{Tenant: "acme", Name: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := agent.Config{
		StateDir: t.TempDir(), Join: b.Join(), PairingToken: res.Pairing.Token, Hostname: "restarted",
		Upstreams: agent.Upstreams{ClickHouseURL: ch.URL, ClickHouseUser: "tether", ClickHousePassword: chtest.Password},
	}
	a, stop := brokertest.RunAgent(t, cfg, true)
	d := &dataPlane{b: b, a: a, ch: ch, depID: res.Deployment.ID}
	revoked, kept := d.grant(t, nil), d.grant(t, nil)
	rv, err := b.CallAgent(context.Background(), d.depID, http.MethodPost, protocol.PathRevoke, []byte(`{"grant_id":"`+grantID(t, revoked)+`","until":"`+time.Now().Add(10*time.Minute).UTC().Format(time.RFC3339)+`"}`), nil)
	if err != nil || rv.StatusCode != http.StatusOK {
		t.Fatalf("revoke: %v %v", rv, err)
	}
	rv.Body.Close()
	if status, out := d.sql(t, revoked, "SELECT 1 FROM system.one"); status != http.StatusForbidden || !strings.Contains(out, "grant_refused") {
		t.Fatalf("revoked grant before the restart = %d %s, want 403 grant_refused", status, out)
	}

	stop()
	cfg.PairingToken = ""
	d.a, _ = brokertest.RunAgent(t, cfg, true)
	// The broker's kept-alive connection to the agent's previous process
	// fails once; a ping opens a new one.
	for i := 0; ; i++ {
		_, err := b.Client.Ping(context.Background(), "acme/prod", 1)
		if err == nil {
			break
		}
		if i == 10 {
			t.Fatalf("ping the restarted agent: %v", err)
		}
	}
	if status, out := d.sql(t, revoked, "SELECT 1 FROM system.one"); status != http.StatusForbidden || !strings.Contains(out, "grant_refused") || !strings.Contains(out, "revoked") {
		t.Errorf("revoked grant after the agent restarted = %d %s, want 403 grant_refused naming the revocation", status, out)
	}
	if status, out := d.sql(t, kept, "SELECT 1 FROM system.one"); status != http.StatusOK {
		t.Errorf("unrevoked grant after the restart = %d %s, want 200", status, out)
	}
}

// TestRevokedQueryMessage: a query stopped by its grant's revocation
// before ClickHouse answered tells the engineer that, and nothing of the
// agent's upstream: no URL, no address, none of the limits the agent
// forces. (It used to print `ClickHouse did not answer: Post
// "http://127.0.0.1:…/?…max_execution_time=60…": grant revoked`.)
func TestRevokedQueryMessage(t *testing.T) {
	d := startDataPlane(t)
	ctx := context.Background()
	eng, acme := asUser(t, d.b, "engineer@vendor.test"), asUser(t, d.b, "approver@acme.test")
	ar, err := eng.CreateRequest(ctx, brokerapi.CreateAccessRequest{Deployment: "acme/prod", Scopes: []string{"clickhouse:system"}, Duration: "30m", Reason: "revocation message"})
	if err != nil {
		t.Fatal(err)
	}
	if ar, err = acme.Approve(ctx, ar.ID, "ok"); err != nil || ar.Grant == nil {
		t.Fatalf("approve: %+v %v", ar, err)
	}
	// The engineer's CLI, with their own login.
	tok, err := d.b.DevIdP().Token(brokertest.IssuerOf("engineer@vendor.test"), "engineer@vendor.test", devbroker.ClientID, "")
	if err != nil {
		t.Fatal(err)
	}
	cliCfg := filepath.Join(t.TempDir(), "cli.json")
	if err := config.Write(cliCfg, config.CLI{APIURL: d.b.APIURL(), Token: tok}, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	var stdout, stderr bytes.Buffer
	go func() {
		// count() over an endless table: ClickHouse sends nothing before
		// it is stopped.
		done <- brokercli.Run(ctx, []string{"query", "--config", cliCfg, "--deployment", "acme/prod", "SELECT count() FROM system.numbers"}, &stdout, &stderr)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for strings.TrimSpace(d.ch.Exec(t, "SELECT count() FROM system.processes WHERE query_id LIKE 'tether-"+ar.Grant.ID+"-%'")) == "0" {
		if time.Now().After(deadline) {
			t.Fatal("the query never showed in system.processes")
		}
		time.Sleep(20 * time.Millisecond) // polling ClickHouse's observable state
	}
	if _, err := acme.Revoke(ctx, ar.ID, "enough"); err != nil {
		t.Fatal(err)
	}
	var qerr error
	select {
	case qerr = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the query still ran 20 s after the revocation")
	}
	if qerr == nil {
		t.Fatalf("the query succeeded after its grant was revoked: %q", stdout.String())
	}
	msg := qerr.Error()
	t.Logf("the engineer reads: %s", msg)
	if !strings.Contains(msg, "stopped: the grant was revoked") {
		t.Errorf("message %q does not say the grant was revoked", msg)
	}
	for _, leak := range []string{"http://", "127.0.0.1", "max_execution_time", "max_result", "default_format", "ClickHouse did not answer", "Post "} {
		if strings.Contains(msg, leak) {
			t.Errorf("message %q holds %q", msg, leak)
		}
	}
}

// TestRevokeAgent: an approver of the deployment's tenant (or a vendor
// admin) cuts its agent off: the agent is offline at once, its own calls
// are refused from then on (it stops, saying so), the broker calls it no
// more, and the revocation is audited with who and why. Another tenant's
// approver cannot.
func TestRevokeAgent(t *testing.T) {
	b := brokertest.Start(t, nil)
	ctx := context.Background()
	res, err := b.Client.CreateDeployment(ctx, brokerapi.CreateDeploymentRequest{Tenant: "acme", Name: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(agent.Config{StateDir: t.TempDir(), Join: b.Join(), PairingToken: res.Pairing.Token, Hostname: "to-revoke", Logger: brokertest.Logger(t, slog.LevelWarn)})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	exited := make(chan error, 1)
	go func() { exited <- a.Run(runCtx) }()
	select {
	case <-a.Ready():
	case err := <-exited:
		t.Fatalf("agent.Run: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("agent not online within 60s")
	}
	agentID := a.State().AgentID
	acme, globex := asUser(t, b, "approver@acme.test"), asUser(t, b, "approver@globex.test")

	// Another tenant's approver is refused, and the agent stays.
	_, err = globex.RevokeAgent(ctx, "acme/prod", "not mine")
	wantAPIErr(t, "revoke-agent by globex", err, http.StatusForbidden, "may not act on tenant acme")
	// A reason is required.
	_, err = acme.RevokeAgent(ctx, "acme/prod", " ")
	wantAPIErr(t, "revoke-agent without a reason", err, http.StatusBadRequest, "reason")
	if dep, err := b.Client.GetDeployment(ctx, "acme/prod"); err != nil || dep.AgentStatus != brokerapi.StatusOnline {
		t.Fatalf("after refused revocations: %+v %v, want the agent online", dep, err)
	}

	start := time.Now()
	rr, err := acme.RevokeAgent(ctx, "acme/prod", "host decommissioned")
	if err != nil {
		t.Fatalf("revoke-agent by acme: %v", err)
	}
	if rr.AgentID != agentID || rr.SessionsEnded != 1 || rr.Deployment.AgentStatus == brokerapi.StatusOnline {
		t.Errorf("revoke-agent = %+v, want agent %s, one session ended, not online", rr, agentID)
	}
	// Offline at once, for everyone.
	if dep, err := b.Client.GetDeployment(ctx, "acme/prod"); err != nil || dep.AgentStatus == brokerapi.StatusOnline || dep.Agent != nil {
		t.Errorf("deployment after revoke-agent = %+v %v, want no agent online", dep, err)
	}
	// The broker calls it no more.
	if _, err := b.CallAgent(ctx, res.Deployment.ID, http.MethodGet, protocol.PathAgentPing, nil, nil); err == nil {
		t.Error("the broker still calls the revoked agent")
	}
	_, err = b.Client.Ping(ctx, "acme/prod", 1)
	wantAPIErr(t, "ping after revoke-agent", err, http.StatusConflict, "no paired agent")
	// Its next heartbeat is refused and it stops, within a heartbeat or
	// two (the dev broker's interval is 1 s).
	select {
	case err := <-exited:
		if err == nil || !strings.Contains(err.Error(), "refused this agent") {
			t.Errorf("agent.Run = %v, want a refusal by the broker", err)
		}
		t.Logf("revoke-agent → agent stopped: %v", time.Since(start))
	case <-time.After(10 * time.Second):
		t.Fatal("the revoked agent still runs 10 s later")
	}
	// A second revocation finds nothing to revoke.
	_, err = acme.RevokeAgent(ctx, "acme/prod", "again")
	wantAPIErr(t, "revoke-agent again", err, http.StatusConflict, "no paired agent")

	// Audited: who, why, which agent; and the refused calls after it.
	evs, err := b.Client.AuditSearch(ctx, brokerapi.AuditQuery{Type: string(audit.AgentRevoked)})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 {
		t.Fatalf("%d agent.revoked events, want 1", len(evs))
	}
	var e audit.Event
	if err := json.Unmarshal(evs[0].Event, &e); err != nil {
		t.Fatal(err)
	}
	if e.Actor.Subject != "approver@acme.test" || e.Actor.Tenant != "acme" || e.Reason != "host decommissioned" || e.AgentID != agentID || e.Deployment != res.Deployment.ID {
		t.Errorf("agent.revoked = %+v, want acme's approver, the reason, the agent and the deployment", e)
	}
	refused, err := b.Client.AuditSearch(ctx, brokerapi.AuditQuery{Type: string(audit.AuthFailed)})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, ae := range refused {
		var fe audit.Event
		if json.Unmarshal(ae.Event, &fe) == nil && fe.AgentID == agentID {
			n++
		}
	}
	if n == 0 {
		t.Error("no refused call of the revoked agent was audited")
	}
}

// TestRecordedRevocationPushReachesAgent: a revocation push recorded in
// the store — by this broker before a restart, or by another broker
// sharing the store that died before its agent took it — is pushed by
// the lifecycle loop: the agent refuses the grant from then on, and the
// record is forgotten. Pushes used to live in one broker's memory only.
func TestRecordedRevocationPushReachesAgent(t *testing.T) {
	ch := chtest.Start(t)
	b := brokertest.Start(t, func(c *broker.Config) { c.LifecycleInterval = 50 * time.Millisecond })
	res, err := b.Client.CreateDeployment(context.Background(), brokerapi.CreateDeploymentRequest{Tenant: "acme", Name: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	a, _ := brokertest.RunAgent(t, agent.Config{
		StateDir: t.TempDir(), Join: b.Join(), PairingToken: res.Pairing.Token, Hostname: "pushed",
		Upstreams: agent.Upstreams{ClickHouseURL: ch.URL, ClickHouseUser: "tether", ClickHousePassword: chtest.Password},
	}, true)
	d := &dataPlane{b: b, a: a, ch: ch, depID: res.Deployment.ID}
	g := d.grant(t, nil)
	if status, out := d.sql(t, g, "SELECT 1 FROM system.one"); status != http.StatusOK {
		t.Fatalf("grant before the push = %d %s, want 200", status, out)
	}
	// The grant is live in no request: only the agent can refuse it, and
	// only if the recorded push reaches it.
	id := grantID(t, g)
	if err := b.Store().AddRevocationPush(context.Background(), store.RevocationPush{GrantID: id, DeploymentID: d.depID, Expiry: time.Now().Add(time.Hour), CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		pushes, err := b.Store().RevocationPushes(context.Background(), time.Now(), 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(pushes) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the recorded push of grant %s is still pending after 10 s", id)
		}
		time.Sleep(50 * time.Millisecond) // polling the store, which the lifecycle loop changes
	}
	if status, out := d.sql(t, g, "SELECT 1 FROM system.one"); status != http.StatusForbidden || !strings.Contains(out, "revoked") {
		t.Errorf("grant after the recorded push = %d %s, want 403 naming the revocation", status, out)
	}
}
