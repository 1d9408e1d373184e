package broker

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/grant"
	"github.com/tetherhq/tether/internal/protocol"
	"github.com/tetherhq/tether/internal/store"
	"github.com/tetherhq/tether/internal/tailnet"
)

const (
	challengeTTL  = 30 * time.Second
	sessionTTL    = time.Hour
	maxChallenges = 10000
)

// agentHandler routes the agent API served on the broker's tailnet node.
// Every call must come from a tailnet peer; WhoIs identifies it.
func (b *Broker) agentHandler() http.Handler {
	mux := http.NewServeMux()
	handle := func(path string, h func(http.ResponseWriter, *http.Request, tailnet.Identity) error) {
		mux.HandleFunc("POST "+path, func(w http.ResponseWriter, r *http.Request) {
			r = withCall(r)
			id, err := b.whoIs(r.Context(), r.RemoteAddr)
			if err != nil {
				b.authFailed(r.Context(), r, tailnet.Identity{}, "", "caller is not a tailnet peer")
				b.answer(w, r, audit.Actor{Role: "agent"}, errorf(http.StatusForbidden, "not_a_peer", "the agent API answers tailnet peers only"))
				return
			}
			if err := h(w, r, id); err != nil {
				var ae *apiError
				if !errors.As(err, &ae) {
					b.log.Error("agent API request failed", "path", path, "node", id.Name, "err", err)
				}
				// Refusals go through the same edge as the user API's:
				// each is recorded once (unless the handler recorded it),
				// and repeats from one node are aggregated.
				b.answer(w, r, nodeActor(id), err)
			}
		})
	}
	handle(protocol.PathPair, b.handlePair)
	handle(protocol.PathChallenge, b.handleChallenge)
	handle(protocol.PathSession, b.handleSession)
	handle(protocol.PathProve, b.handleProve)
	handle(protocol.PathHeartbeat, b.handleHeartbeat)
	handle(protocol.PathCheckpoint, b.handleCheckpointForWitness)
	handle(protocol.PathCosign, b.handleCosign)
	handle(protocol.PathEvents, b.handleEvents)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		r = withCall(r)
		b.answer(w, r, audit.Actor{Role: "agent"}, errorf(http.StatusNotFound, "not_found", "no agent API endpoint %s %s", truncate(r.Method, maxAuditMethod), truncate(r.URL.Path, maxAuditPath)))
	})
	return mux
}

// nodeActor names a tailnet caller of the agent API before it proved
// which agent it is.
func nodeActor(id tailnet.Identity) audit.Actor {
	return audit.Actor{Subject: "tailnet:" + truncate(id.Name, 253), Role: "agent"}
}

// authFailed records a refused agent call, as the call's record of its
// refusal (the edge then records nothing more). Repeats from one node are
// aggregated like every other refusal, so that no peer can flood the log.
// Its error is logged, not returned: the call is refused either way.
func (b *Broker) authFailed(ctx context.Context, r *http.Request, id tailnet.Identity, agentID, reason string) {
	ev := audit.Event{
		Type:    audit.AuthFailed,
		Actor:   audit.Actor{Subject: agentSubject(agentID), Role: "agent"},
		AgentID: agentID,
		Source:  audit.Source{TailnetNode: truncate(id.Name, 253), IP: r.RemoteAddr},
		Outcome: audit.Failure,
		Reason:  reason,
		Details: map[string]any{"path": truncate(r.URL.Path, maxAuditPath)},
	}
	noteRecorded(ctx, ev)
	source := "node:" + id.Name
	if id.Name == "" {
		source = "ip:" + hostOf(r.RemoteAddr)
	}
	now := b.now()
	if es := b.refusals.admit(refusalKey{source: source, route: r.Pattern, typ: string(audit.AuthFailed), code: truncate(reason, 128)}, ev, now); len(es) > 0 {
		if err := b.auditLog.RecordAll(context.WithoutCancel(ctx), es...); err != nil {
			b.log.Error("audit write failed", "type", audit.AuthFailed, "err", err)
		}
	}
	b.log.Warn("agent call refused", "node", id.Name, "agent_id", agentID, "reason", reason)
}

func agentSubject(id string) string {
	if id == "" {
		return ""
	}
	return "agent:" + id
}

func (b *Broker) handlePair(w http.ResponseWriter, r *http.Request, id tailnet.Identity) error {
	var req protocol.PairRequest
	if err := decodeJSON(w, r, protocol.MaxBody, &req); err != nil {
		return err
	}
	fail := func(deployment, reason string, apiErr *apiError) error {
		if err := b.record(r.Context(), audit.Event{
			Type: audit.AgentPairFailed, Deployment: deployment,
			Source: audit.Source{TailnetNode: id.Name, IP: r.RemoteAddr}, Outcome: audit.Failure, Reason: reason,
		}); err != nil {
			return err
		}
		b.log.Warn("pairing refused", "node", id.Name, "reason", reason)
		return apiErr
	}
	hash, err := protocol.HashPairingToken(req.Token)
	if err != nil {
		return fail("", "malformed token", errorf(http.StatusBadRequest, "token_malformed", "%v", err))
	}
	pub, err := protocol.ParsePublicKey(req.PublicKey)
	if err != nil {
		return errorf(http.StatusBadRequest, "bad_public_key", "%v", err)
	}
	if len(req.Nonce) != 32 {
		return errorf(http.StatusBadRequest, "bad_nonce", "nonce must be 32 bytes")
	}
	now := b.now()
	a := store.Agent{
		ID: uuid.NewString(), PublicKey: pub, NodeID: string(id.NodeID), NodeName: id.Name, PairedAt: now,
	}
	d, err := b.store.RedeemPairingToken(r.Context(), hash, now, a)
	switch {
	case errors.Is(err, store.ErrTokenUnknown):
		return fail("", "unknown token", errorf(http.StatusUnauthorized, "token_unknown", "pairing token is not known to this broker: check you copied it whole and are pairing with the broker that issued it"))
	case errors.Is(err, store.ErrTokenExpired):
		return fail("", "expired token", errorf(http.StatusUnauthorized, "token_expired", "pairing token has expired (tokens are valid for %v): issue a new one with 'broker deployment pairing-token TENANT/NAME'", b.cfg.PairingTTL))
	case errors.Is(err, store.ErrTokenUsed):
		return fail("", "reused token", errorf(http.StatusUnauthorized, "token_used", "pairing token was already used: each token pairs one agent once; issue a new one with 'broker deployment pairing-token TENANT/NAME'"))
	case err != nil:
		return fmt.Errorf("redeem pairing token: %w", err)
	}
	if err := b.record(r.Context(), audit.Event{
		Type: audit.AgentPaired, Actor: audit.Actor{Subject: agentSubject(a.ID), Tenant: d.Tenant, Role: "agent"},
		Deployment: d.ID, AgentID: a.ID,
		Source:  audit.Source{TailnetNode: id.Name, IP: r.RemoteAddr},
		Outcome: audit.Success,
		Details: map[string]any{"agent_key": req.PublicKey, "node_id": a.NodeID, "version": req.Version},
	}); err != nil {
		return err
	}
	res := protocol.PairResponse{AgentID: a.ID, DeploymentID: d.ID, Tenant: d.Tenant, Name: d.Name, BrokerNodeID: string(b.self.NodeID)}
	res.Signature = ed25519.Sign(b.key, protocol.PairTranscript(res, req.PublicKey, req.Nonce))
	b.log.Info("agent paired", "deployment", d.Tenant+"/"+d.Name, "agent_id", a.ID, "node", id.Name)
	writeJSON(w, http.StatusOK, res)
	return nil
}

// pairedAgent returns the agent with the given ID if it may ask for a
// challenge or a session: it exists and is not revoked. It may ask from
// any tailnet node: a session opens only for the agent's key, and an
// agent whose node was re-created (a restarted control server, a new
// pod) proves its key from its new one ([Broker.handleSession]).
// Anything else is refused and audited.
func (b *Broker) pairedAgent(r *http.Request, id tailnet.Identity, agentID string) (store.Agent, error) {
	refuse := func(reason string) (store.Agent, error) {
		b.authFailed(r.Context(), r, id, agentID, reason)
		return store.Agent{}, errorf(http.StatusForbidden, "agent_refused", "%s", reason)
	}
	if _, err := uuid.Parse(agentID); err != nil {
		return refuse("agent ID is not a UUID")
	}
	a, err := b.store.GetAgent(r.Context(), agentID)
	if errors.Is(err, store.ErrNotFound) {
		return refuse("unknown agent: pair it again with a new pairing token")
	}
	if err != nil {
		return a, fmt.Errorf("get agent: %w", err)
	}
	if !a.RevokedAt.IsZero() {
		return refuse(agentRevokedReason)
	}
	return a, nil
}

func (b *Broker) handleChallenge(w http.ResponseWriter, r *http.Request, id tailnet.Identity) error {
	var req protocol.ChallengeRequest
	if err := decodeJSON(w, r, protocol.MaxBody, &req); err != nil {
		return err
	}
	a, err := b.pairedAgent(r, id, req.AgentID)
	if err != nil {
		return err
	}
	c := make([]byte, 32)
	rand.Read(c)
	now := b.now()
	// In the store (its hash only), so that the agent may answer at any
	// broker sharing it. A node holds one per agent at a time, so that a
	// peer asking for challenges of agents it is not cannot fill the
	// table.
	stored, err := b.store.PutAgentChallenge(r.Context(), store.AgentChallenge{
		Hash: sha256.Sum256(c), AgentID: a.ID, NodeID: string(id.NodeID), Expires: now.Add(challengeTTL),
	}, maxChallenges, now)
	if err != nil {
		return fmt.Errorf("give a challenge: %w", err)
	}
	if !stored {
		return errorf(http.StatusServiceUnavailable, "busy", "too many outstanding challenges; retry shortly")
	}
	writeJSON(w, http.StatusOK, protocol.ChallengeResponse{
		Challenge: c,
		ExpiresAt: now.Add(challengeTTL).UTC(),
		Signature: ed25519.Sign(b.key, protocol.ChallengeTranscript(a.ID, c)),
	})
	return nil
}

func (b *Broker) handleSession(w http.ResponseWriter, r *http.Request, id tailnet.Identity) error {
	var req protocol.SessionRequest
	if err := decodeJSON(w, r, protocol.MaxBody, &req); err != nil {
		return err
	}
	a, err := b.pairedAgent(r, id, req.AgentID)
	if err != nil {
		return err
	}
	now := b.now()
	// Taken from the store, single use whatever happens next: of two
	// brokers answering one challenge at once, only one gets it.
	c, err := b.store.TakeAgentChallenge(r.Context(), sha256.Sum256(req.Challenge), now)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("take challenge: %w", err)
	}
	if err != nil || c.AgentID != a.ID {
		b.authFailed(r.Context(), r, id, a.ID, "unknown, expired or reused challenge")
		return errorf(http.StatusForbidden, "bad_challenge", "challenge unknown, expired or already used: ask for a new one")
	}
	if c.NodeID != string(id.NodeID) {
		b.authFailed(r.Context(), r, id, a.ID, "challenge answered from a tailnet node other than the one that asked for it")
		return errorf(http.StatusForbidden, "bad_challenge", "answer the challenge from the tailnet node that asked for it")
	}
	if !ed25519.Verify(ed25519.PublicKey(a.PublicKey), protocol.SessionTranscript(a.ID, req.Challenge), req.Signature) {
		b.authFailed(r.Context(), r, id, a.ID, "challenge signature does not verify with the paired agent key")
		return errorf(http.StatusForbidden, "bad_signature", "challenge signature does not verify with the key this agent paired with")
	}
	if a.NodeID != string(id.NodeID) {
		if err := b.moveAgent(r, id, a); err != nil {
			return err
		}
		a.NodeID, a.NodeName = string(id.NodeID), id.Name
	}
	var tok [32]byte
	rand.Read(tok[:])
	token := "tas_" + base64.RawURLEncoding.EncodeToString(tok[:])
	h := sha256.Sum256([]byte(token))
	// In the store, so that every broker sharing it honours the session,
	// a restart ends none, and revoking the agent ends it everywhere; one
	// live session per agent.
	if err := b.store.PutAgentSession(r.Context(), store.AgentSession{TokenHash: h, AgentID: a.ID, NodeID: a.NodeID, Expires: now.Add(sessionTTL)}, now); err != nil {
		return fmt.Errorf("open session: %w", err)
	}
	writeJSON(w, http.StatusOK, protocol.SessionResponse{
		Token: token, ExpiresAt: now.Add(sessionTTL).UTC(), HeartbeatInterval: protocol.Duration(b.cfg.HeartbeatInterval),
	})
	return nil
}

// moveAgent records that agent a, having just proved its key from the
// calling node, is now there: its node was re-created (a restarted
// control server hands node IDs out again; a new pod has a new node).
// The event is durable before the broker reaches the agent anywhere new.
func (b *Broker) moveAgent(r *http.Request, id tailnet.Identity, a store.Agent) error {
	ctx := r.Context()
	if err := b.record(ctx, audit.Event{
		Type: audit.AgentMoved, Actor: audit.Actor{Subject: agentSubject(a.ID), Role: "agent"},
		Deployment: a.DeploymentID, AgentID: a.ID,
		Source:  audit.Source{TailnetNode: truncate(id.Name, 253), IP: r.RemoteAddr},
		Outcome: audit.Success,
		Details: map[string]any{"from_node_id": a.NodeID, "from_node": a.NodeName, "node_id": string(id.NodeID), "node": truncate(id.Name, 253)},
	}); err != nil {
		return err
	}
	if err := b.store.MoveAgent(ctx, a.ID, string(id.NodeID), id.Name); err != nil {
		return fmt.Errorf("move agent %s: %w", a.ID, err)
	}
	b.log.Warn("agent proved its key from another tailnet node; reaching it there from now on", "agent_id", a.ID,
		"from_node_id", a.NodeID, "node_id", id.NodeID, "node", id.Name)
	return nil
}

// session authenticates a call by its session token and calling node.
func (b *Broker) session(r *http.Request, id tailnet.Identity) (session, error) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		b.authFailed(r.Context(), r, id, "", "missing session token")
		return session{}, errorf(http.StatusUnauthorized, "no_session", "missing session token: open a session first")
	}
	h := sha256.Sum256([]byte(tok))
	stored, err := b.store.GetAgentSession(r.Context(), h, b.now())
	if errors.Is(err, store.ErrNotFound) {
		// Not audited: sessions expire in normal operation; the agent
		// opens a new session.
		return session{}, errorf(http.StatusUnauthorized, "no_session", "session unknown or expired: open a new one")
	}
	if err != nil {
		return session{}, fmt.Errorf("session: %w", err)
	}
	s := session{agentID: stored.AgentID, nodeID: stored.NodeID, expires: stored.Expires}
	if s.nodeID != string(id.NodeID) {
		b.authFailed(r.Context(), r, id, s.agentID, "session token presented from another tailnet node")
		return session{}, errorf(http.StatusForbidden, "wrong_node", "session token presented from another tailnet node")
	}
	return s, nil
}

func (b *Broker) handleHeartbeat(w http.ResponseWriter, r *http.Request, id tailnet.Identity) error {
	received := b.now() // t1 of the agent's clock estimate (clockskew.go)
	s, err := b.session(r, id)
	if err != nil {
		return err
	}
	var hb protocol.Heartbeat
	if err := decodeJSON(w, r, protocol.MaxBody, &hb); err != nil {
		return err
	}
	if len(hb.Upstreams) > 32 || len(hb.Version) > 64 || len(hb.TailnetIP) > 64 || len(hb.WitnessRefusal) > protocol.MaxWitnessRefusal {
		return errorf(http.StatusBadRequest, "bad_heartbeat", "heartbeat fields too large")
	}
	approval, err := agentApproval(hb.Approval)
	if err != nil {
		return err
	}
	clock, err := clockOfHeartbeat(hb, received)
	if err != nil {
		return err
	}
	// A replaced agent's session ends at its next heartbeat.
	a, err := b.store.GetAgent(r.Context(), s.agentID)
	if err != nil {
		return fmt.Errorf("get agent: %w", err)
	}
	if !a.RevokedAt.IsZero() {
		if _, err := b.store.DeleteAgentSessions(r.Context(), a.ID); err != nil {
			b.log.Warn("could not end a revoked agent's sessions (each is refused anyway)", "agent_id", a.ID, "err", err)
		}
		b.authFailed(r.Context(), r, id, a.ID, agentRevokedReason)
		return errorf(http.StatusForbidden, "agent_refused", "%s", agentRevokedReason)
	}
	// The address shown is the one the tailnet gave the calling node (its
	// connection's source, identified by WhoIs), never the one the agent
	// reports about itself; the broker dials agents by node ID in any case.
	// Group-committed with the other agents' heartbeats arriving
	// meanwhile: answered once durable, one transaction for them all.
	err = b.heartbeats.Add(r.Context(), store.AgentHeartbeat{AgentID: s.agentID, Heartbeat: store.Heartbeat{
		At: b.now(), Version: hb.Version, Uptime: time.Duration(hb.UptimeMS) * time.Millisecond,
		TailnetIP: hostOf(r.RemoteAddr), Upstreams: hb.Upstreams, WitnessRefusal: hb.WitnessRefusal,
		Approval: approval, Clock: clock,
	}})
	if err != nil {
		return fmt.Errorf("record heartbeat: %w", err)
	}
	b.noteClock(a, clock)
	if !reflect.DeepEqual(approval, a.Last.Approval) {
		b.log.Info("the agent reports the customer approval it enforces", "agent_id", a.ID, "deployment", a.DeploymentID,
			"customer_approval", brokerapi.DescribeApproval(approvalView(approval)))
	}
	if hb.WitnessRefusal != "" && a.Last.WitnessRefusal == "" {
		b.witnessRefuses(r.Context(), a, hb.WitnessRefusal)
	}
	writeJSON(w, http.StatusOK, protocol.HeartbeatResponse{
		HeartbeatInterval: protocol.Duration(b.cfg.HeartbeatInterval),
		CheckpointSize:    b.auditLog.LatestSize(),
		ReceivedAt:        received,
		AnsweredAt:        b.now(),
	})
	return nil
}

// agentApproval checks the approval authority an agent's heartbeat
// reports and returns it as stored.
func agentApproval(p *protocol.ApprovalAuthority) (*store.AgentApproval, error) {
	if p == nil {
		return nil, nil
	}
	for _, f := range []string{p.Issuer, p.Audience, p.Group} {
		if len(f) > protocol.MaxApprovalField {
			return nil, errorf(http.StatusBadRequest, "bad_heartbeat", "heartbeat approval fields too large")
		}
	}
	if p.BreakGlass != protocol.BreakGlassDeny && p.BreakGlass != protocol.BreakGlassAllow {
		return nil, errorf(http.StatusBadRequest, "bad_heartbeat", "heartbeat approval break_glass %q: want %s or %s", truncate(p.BreakGlass, 32), protocol.BreakGlassDeny, protocol.BreakGlassAllow)
	}
	if p.Required < 0 || p.Required > grant.MaxProofs || (p.Issuer != "") != (p.Required > 0) {
		return nil, errorf(http.StatusBadRequest, "bad_heartbeat", "heartbeat approval: %d approvals required, want 1 to %d with an issuer, none without", p.Required, grant.MaxProofs)
	}
	return &store.AgentApproval{Issuer: p.Issuer, Audience: p.Audience, Group: p.Group, Required: p.Required,
		BreakGlassAllowed: p.BreakGlass == protocol.BreakGlassAllow}, nil
}
