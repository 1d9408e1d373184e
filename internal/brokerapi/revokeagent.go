package brokerapi

import (
	"context"
	"net/http"
	"time"
)

// RevokeAgentRequest is the body of POST
// /api/v1/deployments/{tenant}/{name}/revoke-agent.
type RevokeAgentRequest struct {
	Reason string `json:"reason"`
}

// RevokeAgentResponse says which agent was cut off, and what it had open.
type RevokeAgentResponse struct {
	Deployment Deployment `json:"deployment"` // as it is now: no agent paired
	AgentID    string     `json:"agent_id"`
	RevokedAt  time.Time  `json:"revoked_at"`
	// SessionsEnded counts the agent's sessions with this broker ended
	// at once; CallsCutOff the data-plane calls to it cut off mid-way.
	SessionsEnded int `json:"sessions_ended"`
	CallsCutOff   int `json:"calls_cut_off"`
}

// RevokeAgent cuts the deployment's agent off at once: its sessions end,
// its heartbeats and every further call are refused, and the broker calls
// it no more. A new agent pairs with a new pairing token.
func (c *Client) RevokeAgent(ctx context.Context, ref, reason string) (RevokeAgentResponse, error) {
	var out RevokeAgentResponse
	err := c.do(ctx, http.MethodPost, refPath(ref)+"/revoke-agent", RevokeAgentRequest{Reason: reason}, &out)
	return out, err
}
