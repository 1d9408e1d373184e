package broker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/store"
	"github.com/tetherhq/tether/internal/store/sqlitestore"
)

// agentRevokedReason is what a revoked agent is told, and the audit log
// records, when it calls: it was cut off by 'broker deployment
// revoke-agent' or replaced by a later pairing (the store does not tell
// the two apart; agent.revoked and agent.paired do).
const agentRevokedReason = "agent was revoked ('broker deployment revoke-agent') or replaced by a later pairing of its deployment: pair a new agent with a new pairing token and an empty state dir"

// errAgentRevoked is why a data-plane call in flight was cut off: its
// agent was revoked.
var errAgentRevoked = errors.New("the agent was revoked")

// handleRevokeAgent cuts a deployment's agent off at once, on the word of
// a vendor admin or an approver of the deployment's own tenant: the agent
// is marked revoked in the store (its challenges, sessions and heartbeats
// are refused from then on, on every broker sharing the store), its
// sessions with this broker end, the broker's calls to it in flight are
// cut off and no further call is made to it. A new agent pairs with a new
// pairing token.
func (b *Broker) handleRevokeAgent(w http.ResponseWriter, r *http.Request) error {
	d, err := b.lookup(r)
	if err != nil {
		return err
	}
	var body brokerapi.RevokeAgentRequest
	if err := decodeJSON(w, r, brokerapi.MaxBody, &body); err != nil {
		return err
	}
	res, err := b.revokeAgent(r, d, body.Reason)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

// revokeAgent revokes d's agent for reason, audited; the API and the web
// console both call it.
func (b *Broker) revokeAgent(r *http.Request, d store.DeploymentStatus, reason string) (brokerapi.RevokeAgentResponse, error) {
	ctx := r.Context()
	reason = strings.TrimSpace(reason)
	if reason == "" || len(reason) > maxCommentLen {
		return brokerapi.RevokeAgentResponse{}, errorf(http.StatusBadRequest, "reason_required", "revoking an agent needs a reason (--reason), at most %d characters", maxCommentLen)
	}
	if d.Agent == nil {
		return brokerapi.RevokeAgentResponse{}, errorf(http.StatusConflict, "agent_unpaired", "deployment %s/%s has no paired agent to revoke", d.Tenant, d.Name)
	}
	a := *d.Agent
	now := b.now()
	err := b.store.RevokeAgent(ctx, a.ID, now)
	if err != nil && !errors.Is(err, store.ErrConflict) && !errors.Is(err, store.ErrNotFound) {
		// On a full disk the store's reserve makes room for it.
		if retry, why := b.storeFailed(err); retry {
			err = b.store.RevokeAgent(ctx, a.ID, now)
		} else if sqlitestore.IsFull(err) {
			return brokerapi.RevokeAgentResponse{}, errorf(http.StatusInsufficientStorage, "store_full", "the agent of %s/%s is NOT revoked: %s; revoke its grants meanwhile ('broker request revoke'), which works on a full disk", d.Tenant, d.Name, why)
		}
	}
	switch {
	case errors.Is(err, store.ErrConflict), errors.Is(err, store.ErrNotFound):
		// Another broker or a pairing came first.
		return brokerapi.RevokeAgentResponse{}, errorf(http.StatusConflict, "agent_unpaired", "the agent %s of %s/%s is no longer its current agent: 'broker deployment show %s/%s'", a.ID, d.Tenant, d.Name, d.Tenant, d.Name)
	case err != nil:
		return brokerapi.RevokeAgentResponse{}, fmt.Errorf("revoke agent: %w", err)
	}
	sessions, calls := b.endAgentSessions(a.ID)
	b.changed() // drop data-plane lookups that still hold the agent
	b.log.Warn("agent revoked", "deployment", d.Tenant+"/"+d.Name, "agent_id", a.ID, "by", actorOf(r).Subject, "sessions_ended", sessions, "calls_cut_off", calls)
	ev := audit.Event{
		Type: audit.AgentRevoked, Actor: actorOf(r), Deployment: d.ID, AgentID: a.ID,
		Source: audit.Source{IP: r.RemoteAddr}, Outcome: audit.Success, Reason: reason,
		Details: map[string]any{"node_id": a.NodeID, "node": a.NodeName, "sessions_ended": sessions, "calls_cut_off": calls},
	}
	if err := audit.Stamp(&ev, now); err != nil {
		return brokerapi.RevokeAgentResponse{}, err
	}
	if err := b.record(ctx, ev); err != nil {
		// As for a grant's revocation, the agent stays revoked (fail
		// closed) and the event is written once the log takes writes.
		if !b.backlog.add(ev) {
			b.log.Error("audit backlog full: an agent revocation's event is lost", "agent_id", a.ID)
		}
		return brokerapi.RevokeAgentResponse{}, errorf(http.StatusInternalServerError, "audit_unavailable", "the agent of %s/%s is revoked, but the audit log could not be written: the broker records the revocation as soon as it can; tell the broker's operator", d.Tenant, d.Name)
	}
	d.Agent = nil
	return brokerapi.RevokeAgentResponse{
		Deployment: b.view(d), AgentID: a.ID, RevokedAt: now.UTC(), SessionsEnded: sessions, CallsCutOff: calls,
	}, nil
}

// endAgentSessions ends, at once, what a revoked agent has open with this
// broker: its agent-API sessions (its next heartbeat, delivery or
// cosignature is refused; a new session needs a challenge, which a
// revoked agent is refused) and the data-plane calls to it in flight. It
// returns how many of each it ended.
func (b *Broker) endAgentSessions(agentID string) (sessions, calls int) {
	// A session that cannot be deleted is refused anyway: every call
	// checks the agent is not revoked.
	n, err := b.store.DeleteAgentSessions(context.Background(), agentID)
	if err != nil {
		b.log.Warn("could not end a revoked agent's sessions (each is refused anyway)", "agent_id", agentID, "err", err)
	}
	return n, b.agentCall.cancel(agentID, errAgentRevoked)
}

// agentCalls tracks the broker's data-plane calls in flight per agent, so
// that revoking an agent cuts them off. The zero value is ready to use.
type agentCalls struct {
	mu    sync.Mutex
	seq   uint64
	calls map[string]map[uint64]context.CancelCauseFunc // agent ID → calls
}

// trackAgentCall returns a context for one call to an agent, cancelled
// with [errAgentRevoked] if the agent is revoked, and the function that
// ends its tracking.
func (b *Broker) trackAgentCall(ctx context.Context, agentID string) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	t := &b.agentCall
	t.mu.Lock()
	if t.calls == nil {
		t.calls = map[string]map[uint64]context.CancelCauseFunc{}
	}
	if t.calls[agentID] == nil {
		t.calls[agentID] = map[uint64]context.CancelCauseFunc{}
	}
	t.seq++
	n := t.seq
	t.calls[agentID][n] = cancel
	t.mu.Unlock()
	return ctx, func() {
		cancel(nil)
		t.mu.Lock()
		delete(t.calls[agentID], n)
		if len(t.calls[agentID]) == 0 {
			delete(t.calls, agentID)
		}
		t.mu.Unlock()
	}
}

// cancel cuts off every tracked call to agentID with cause and returns
// how many there were.
func (t *agentCalls) cancel(agentID string, cause error) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, c := range t.calls[agentID] {
		c(cause)
		n++
	}
	return n
}
