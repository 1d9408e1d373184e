package broker_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/brokertest"
	"github.com/tetherhq/tether/internal/protocol"
)

// failureEvents returns the audit events with outcome failure.
func failureEvents(t *testing.T, b *brokertest.Broker) []audit.Event {
	t.Helper()
	var out []audit.Event
	for _, e := range auditEvents(t, b, 10000) {
		if e.Outcome == audit.Failure {
			out = append(out, e)
		}
	}
	return out
}

// TestAgentAPIRefusalsAudited: every refusal the agent API answers a
// tailnet peer writes exactly one event, the first time; repeats from one
// node are aggregated, so a hostile peer cannot flood the log.
func TestAgentAPIRefusalsAudited(t *testing.T) {
	b := brokertest.Start(t, nil)
	a := b.Pair(t, "acme", "prod")
	hc, base := intruder(t, b)
	tests := []struct {
		name       string
		path       string
		bearer     string
		body       any
		wantStatus int
		wantCode   string
	}{
		{"unknown path", "/agent/v1/nope", "", struct{}{}, http.StatusNotFound, "not_found"},
		{"unknown field", protocol.PathChallenge, "", map[string]string{"agent": "x"}, http.StatusBadRequest, "bad_json"},
		{"malformed token", protocol.PathPair, "", protocol.PairRequest{Token: "x"}, http.StatusBadRequest, "token_malformed"},
		{"bad public key", protocol.PathPair, "", protocol.PairRequest{Token: "tpt_" + strings.Repeat("B", 43), PublicKey: "nope", Nonce: make([]byte, 32)}, http.StatusBadRequest, "bad_public_key"},
		{"bad nonce", protocol.PathPair, "", protocol.PairRequest{Token: "tpt_" + strings.Repeat("B", 43), PublicKey: protocol.EncodePublicKey(make([]byte, 32)), Nonce: make([]byte, 3)}, http.StatusBadRequest, "bad_nonce"},
		{"unknown token", protocol.PathPair, "", protocol.PairRequest{Token: "tpt_" + strings.Repeat("B", 43), PublicKey: protocol.EncodePublicKey(make([]byte, 32)), Nonce: make([]byte, 32)}, http.StatusUnauthorized, "token_unknown"},
		{"another node's agent", protocol.PathSession, "", protocol.SessionRequest{AgentID: a.State().AgentID, Challenge: make([]byte, 32), Signature: make([]byte, 64)}, http.StatusForbidden, "bad_challenge"},
		{"revoked or unknown agent", protocol.PathChallenge, "", protocol.ChallengeRequest{AgentID: "0190aaaa-0000-7000-8000-000000000000"}, http.StatusForbidden, "agent_refused"},
		{"no session", protocol.PathHeartbeat, "", protocol.Heartbeat{}, http.StatusUnauthorized, "no_session"},
		{"events without session", protocol.PathEvents, "tas_made_up", protocol.EventsRequest{}, http.StatusUnauthorized, "no_session"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(failureEvents(t, b))
			status, e := post(t, hc, base+tt.path, tt.bearer, tt.body)
			if status != tt.wantStatus || e.Error.Code != tt.wantCode {
				t.Fatalf("POST %s = %d %q (%s), want %d %q", tt.path, status, e.Error.Code, e.Error.Message, tt.wantStatus, tt.wantCode)
			}
			if got := len(failureEvents(t, b)) - before; got != 1 {
				t.Errorf("POST %s (%s) wrote %d failure events, want exactly 1", tt.path, tt.wantCode, got)
			}
		})
	}

	// A flood of the same refusal from one node is aggregated.
	before := len(failureEvents(t, b))
	for range 200 {
		post(t, hc, base+protocol.PathSession, "", protocol.SessionRequest{AgentID: a.State().AgentID, Challenge: make([]byte, 32), Signature: make([]byte, 64)})
		post(t, hc, base+"/agent/v1/nope", "", struct{}{})
		// Challenges it may ask for (an agent on a re-created node does),
		// but it holds one at a time: the table does not fill.
		post(t, hc, base+protocol.PathChallenge, "", protocol.ChallengeRequest{AgentID: a.State().AgentID})
	}
	if n := b.OutstandingChallenges(); n > 2 {
		t.Errorf("after 200 challenge requests from one node, %d challenges are outstanding, want at most 2 (the intruder's one and the agent's)", n)
	}
	if got := len(failureEvents(t, b)) - before; got > 4 {
		t.Errorf("400 refused agent-API calls from one node wrote %d events, want them aggregated (at most 4)", got)
	}
	// The real agent is served all along.
	if err := a.Heartbeat(context.Background()); err != nil {
		t.Errorf("paired agent heartbeat during the flood: %v", err)
	}
}
