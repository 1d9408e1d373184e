package broker_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"database/sql"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/broker"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/brokertest"
	"github.com/tetherhq/tether/internal/devnet"
	"github.com/tetherhq/tether/internal/protocol"
	"github.com/tetherhq/tether/internal/tailnet"
)

// externalTailnet starts a dev tailnet apart from any broker, for brokers
// outside dev mode (and for one restarted on the same data dir, which
// finds the same tailnet). The returned function points a broker's
// config at it.
func externalTailnet(t *testing.T, ctx context.Context) func(*broker.Config) {
	t.Helper()
	dn, err := devnet.Start(ctx, devnet.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dn.Close() })
	return func(c *broker.Config) {
		c.Dev = nil
		c.ControlURL, c.AuthKey = dn.ControlURL, dn.AuthKey
	}
}

// intruder joins the broker's tailnet as another node and returns an HTTP
// client dialling through it and the broker's agent API base URL.
func intruder(t *testing.T, b *brokertest.Broker) (*http.Client, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	j := b.Join()
	n, err := tailnet.New(tailnet.Config{Hostname: "intruder", ControlURL: j.ControlURL, AuthKey: j.AuthKey})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	if _, err := n.Up(ctx); err != nil {
		t.Fatal(err)
	}
	p, err := n.WaitPeer(ctx, j.BrokerName)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{DialContext: n.Dial}, Timeout: 30 * time.Second}
	return hc, "http://" + net.JoinHostPort(p.IP.String(), strconv.Itoa(protocol.BrokerPort))
}

func post(t *testing.T, hc *http.Client, url, bearer string, body any) (int, brokerapi.ErrorEnvelope) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	res, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var e brokerapi.ErrorEnvelope
	raw, _ := io.ReadAll(res.Body)
	json.Unmarshal(raw, &e)
	return res.StatusCode, e
}

// auditEvents returns the broker's audit events, up to limit.
func auditEvents(t *testing.T, b *brokertest.Broker, limit int) []audit.Event {
	t.Helper()
	evs, err := b.Client.AuditSearch(context.Background(), brokerapi.AuditQuery{Limit: limit})
	if err != nil {
		t.Fatal(err)
	}
	out := make([]audit.Event, 0, len(evs))
	for _, ae := range evs {
		var e audit.Event
		if err := json.Unmarshal(ae.Event, &e); err != nil {
			t.Fatalf("audit event %s: %v", ae.Event, err)
		}
		out = append(out, e)
	}
	return out
}

func auditTypes(t *testing.T, b *brokertest.Broker) []string {
	t.Helper()
	var types []string
	for _, e := range auditEvents(t, b, 1000) {
		types = append(types, string(e.Type)+": "+e.Reason)
	}
	return types
}

// TestAgentAPIRefusesOtherNodes: a tailnet peer that is not the paired
// agent's node gets nothing, even knowing the agent's ID: it may ask for
// a challenge (an agent whose node was re-created proves its key from
// its new one), but no session opens without the agent's key, and the
// agent stays where it is. Each refusal is audited.
func TestAgentAPIRefusesOtherNodes(t *testing.T) {
	b := brokertest.Start(t, nil)
	a := b.Pair(t, "acme", "prod")
	hc, base := intruder(t, b)
	before, err := b.Store().GetAgent(context.Background(), a.State().AgentID)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name       string
		path       string
		bearer     string
		body       any
		wantStatus int
		wantCode   string
	}{
		{"challenge for another node's agent", protocol.PathChallenge, "", protocol.ChallengeRequest{AgentID: a.State().AgentID}, http.StatusOK, ""},
		{"challenge for unknown agent", protocol.PathChallenge, "", protocol.ChallengeRequest{AgentID: "0190aaaa-0000-7000-8000-000000000000"}, http.StatusForbidden, "agent_refused"},
		{"session without challenge", protocol.PathSession, "", protocol.SessionRequest{AgentID: a.State().AgentID, Challenge: make([]byte, 32), Signature: make([]byte, 64)}, http.StatusForbidden, "bad_challenge"},
		{"heartbeat without session", protocol.PathHeartbeat, "", protocol.Heartbeat{}, http.StatusUnauthorized, "no_session"},
		{"heartbeat with made-up session", protocol.PathHeartbeat, "tas_made_up", protocol.Heartbeat{}, http.StatusUnauthorized, "no_session"},
		{"pair with unknown token", protocol.PathPair, "", protocol.PairRequest{Token: "tpt_" + strings.Repeat("B", 43), PublicKey: protocol.EncodePublicKey(make([]byte, 32)), Nonce: make([]byte, 32)}, http.StatusUnauthorized, "token_unknown"},
		{"unknown field", protocol.PathChallenge, "", map[string]string{"agent": "x"}, http.StatusBadRequest, "bad_json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, e := post(t, hc, base+tt.path, tt.bearer, tt.body)
			if status != tt.wantStatus || e.Error.Code != tt.wantCode {
				t.Errorf("POST %s = %d %q (%s), want %d %q", tt.path, status, e.Error.Code, e.Error.Message, tt.wantStatus, tt.wantCode)
			}
		})
	}
	// The challenge it got, answered without the agent's key.
	var ch protocol.ChallengeResponse
	raw, _ := json.Marshal(protocol.ChallengeRequest{AgentID: a.State().AgentID})
	res, err := hc.Post(base+protocol.PathChallenge, "application/json", bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	err = json.NewDecoder(res.Body).Decode(&ch)
	res.Body.Close()
	if err != nil || len(ch.Challenge) == 0 {
		t.Fatalf("challenge for the intruder: %v", err)
	}
	forged := ed25519.Sign(ed25519.NewKeyFromSeed(make([]byte, 32)), protocol.SessionTranscript(a.State().AgentID, ch.Challenge))
	if status, e := post(t, hc, base+protocol.PathSession, "", protocol.SessionRequest{AgentID: a.State().AgentID, Challenge: ch.Challenge, Signature: forged}); status != http.StatusForbidden || e.Error.Code != "bad_signature" {
		t.Errorf("session from another node without the agent's key = %d %q, want 403 bad_signature", status, e.Error.Code)
	}
	types := auditTypes(t, b)
	if !slices.Contains(types, "auth.failed: challenge signature does not verify with the paired agent key") || slices.ContainsFunc(types, func(s string) bool { return strings.HasPrefix(s, "agent.moved") }) {
		t.Errorf("audit log lacks the refused session, or moved the agent: %q", types)
	}
	if ag, err := b.Store().GetAgent(context.Background(), a.State().AgentID); err != nil || ag.NodeID != before.NodeID {
		t.Errorf("agent's node after the intrusions = %q (%v), want its own %q", ag.NodeID, err, before.NodeID)
	}
	// The real agent is unaffected.
	if err := a.Heartbeat(context.Background()); err != nil {
		t.Errorf("paired agent heartbeat after the intrusions: %v", err)
	}
}

// TestAdminAPIAuth: the API refuses missing and wrong tokens with 401,
// audited. (TestAuthorizationTable covers every endpoint and role.)
func TestAdminAPIAuth(t *testing.T) {
	b := brokertest.Start(t, nil)
	for _, tok := range []string{"", "tat_wrong"} {
		req, _ := http.NewRequest(http.MethodGet, b.APIURL()+"/api/v1/deployments", nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET /api/v1/deployments with token %q = %d, want 401", tok, res.StatusCode)
		}
	}
	types := auditTypes(t, b)
	for _, want := range []string{"auth.failed: unauthenticated", "auth.failed: invalid_token"} {
		if !slices.Contains(types, want) {
			t.Errorf("audit log lacks %q: %q", want, types)
		}
	}
	// Metrics need no token and count the audit appends just made.
	mres, err := http.Get(b.APIURL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(mres.Body)
	mres.Body.Close()
	for _, want := range []string{"tether_audit_appends_total 2", "tether_audit_commit_seconds_count", "tether_audit_tree_size 2", "tether_audit_checkpoint_timestamp_seconds"} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	// Health needs no token.
	res, err := http.Get(b.APIURL() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Errorf("GET /healthz = %d, want 200", res.StatusCode)
	}
}

// BenchmarkHeartbeat measures one agent heartbeat round trip over the
// tailnet (agent → broker → store → agent), reporting p50 and p99.
func BenchmarkHeartbeat(b *testing.B) {
	br := brokertest.Start(b, nil)
	a := br.Pair(b, "acme", "prod")
	ctx := context.Background()
	var d []time.Duration
	for b.Loop() {
		start := time.Now()
		if err := a.Heartbeat(ctx); err != nil {
			b.Fatal(err)
		}
		d = append(d, time.Since(start))
	}
	reportPercentiles(b, d)
}

// BenchmarkPing measures a signed broker → agent call over the tailnet
// through the operator API.
func BenchmarkPing(b *testing.B) {
	br := brokertest.Start(b, nil)
	br.Pair(b, "acme", "prod")
	ctx := context.Background()
	var d []time.Duration
	for b.Loop() {
		start := time.Now()
		if _, err := br.Client.Ping(ctx, "acme/prod", 1); err != nil {
			b.Fatal(err)
		}
		d = append(d, time.Since(start))
	}
	reportPercentiles(b, d)
}

func reportPercentiles(b *testing.B, d []time.Duration) {
	if len(d) == 0 {
		return
	}
	slices.Sort(d)
	b.ReportMetric(float64(d[len(d)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(d[len(d)*99/100].Microseconds())/1000, "p99-ms")
}

// TestAgentSessionInStore: an agent's session lives in the store (every
// broker sharing it honours it; a restart ends none). A session bound to
// a node the agent no longer has — its node was re-created — is refused
// (wrong_node, audited), and the agent opens a new one by proving its key
// again instead of giving up.
func TestAgentSessionInStore(t *testing.T) {
	b := brokertest.Start(t, nil)
	a := b.Pair(t, "acme", "prod")
	ctx := context.Background()
	if err := a.Heartbeat(ctx); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", filepath.Join(b.Dir, "tether.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM agent_sessions WHERE agent_id = ?`, a.State().AgentID).Scan(&n); err != nil || n != 1 {
		t.Fatalf("agent sessions in the store = %d (%v), want 1", n, err)
	}
	if _, err := db.Exec(`UPDATE agent_sessions SET node_id = 'a-node-gone' WHERE agent_id = ?`, a.State().AgentID); err != nil {
		t.Fatal(err)
	}
	if err := a.Heartbeat(ctx); err == nil || !strings.Contains(err.Error(), "another tailnet node") {
		t.Fatalf("heartbeat on a session bound to another node = %v, want refused", err)
	}
	if err := a.Heartbeat(ctx); err != nil {
		t.Errorf("heartbeat after the refusal = %v, want a new session opened", err)
	}
}
