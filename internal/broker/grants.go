package broker

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/ghub"
	"github.com/tetherhq/tether/internal/notify"
	"github.com/tetherhq/tether/internal/protocol"
	"github.com/tetherhq/tether/internal/store"
)

// revokeResult is what pushing a revocation to the agent achieved.
type revokeResult struct {
	Pushed bool
	CutOff int
	Killed int
}

// pushRevocation tells the deployment's agent over the tailnet that the
// grant is revoked: it cuts the grant's calls in flight and kills its
// ClickHouse queries. If the agent cannot be reached the broker still
// refuses the grant, and the push is retried until the grant would have
// expired anyway: the push is recorded in the store before it is sent
// and forgotten once the agent took it, so that any broker sharing the
// store, or this one after a restart, pushes it again. Where the store
// cannot take it (a full disk), this broker keeps it in memory.
func (b *Broker) pushRevocation(ctx context.Context, ar store.AccessRequest) revokeResult {
	if ar.Grant == nil {
		return revokeResult{}
	}
	g := *ar.Grant
	recorded := b.store.AddRevocationPush(ctx, store.RevocationPush{GrantID: g.ID, DeploymentID: ar.DeploymentID, Expiry: g.Expiry, CreatedAt: b.now()}) == nil
	res, err := b.sendRevocation(ctx, g, ar.DeploymentID)
	switch {
	case err == nil && recorded:
		b.forgetPush(ctx, g.ID)
	case err != nil:
		b.log.Warn("could not push a revocation to the agent; will retry", "grant", g.ID, "err", err)
		if !recorded {
			b.mu.Lock()
			b.unpushed[g.ID] = pendingRevocation{grant: g, deployment: ar.DeploymentID}
			b.mu.Unlock()
		}
	}
	return res
}

// forgetPush forgets a recorded push the agent took; if the store cannot
// (yet), the push is sent again later, which the agent takes again.
func (b *Broker) forgetPush(ctx context.Context, grantID string) {
	if err := b.store.DeleteRevocationPush(ctx, grantID); err != nil {
		b.log.Warn("could not forget a revocation push the agent took; it will be pushed again", "grant", grantID, "err", err)
	}
}

// maxPushesPerTick bounds the recorded pushes one lifecycle tick
// retries, and pushRetryEvery how often it does.
const (
	maxPushesPerTick = 50
	pushRetryEvery   = 2 * time.Second
)

type pendingRevocation struct {
	grant      store.GrantRecord
	deployment string
}

func (b *Broker) sendRevocation(ctx context.Context, g store.GrantRecord, deploymentID string) (revokeResult, error) {
	body, _ := json.Marshal(protocol.RevokeRequest{GrantID: g.ID, Until: g.Expiry})
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	res, err := b.callDeploymentAgent(ctx, deploymentID, http.MethodPost, protocol.PathRevoke, body, http.Header{"Content-Type": {"application/json"}})
	if err != nil {
		return revokeResult{}, err
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(res.Body, protocol.MaxBody))
	if res.StatusCode != http.StatusOK {
		return revokeResult{}, fmt.Errorf("agent answered %s: %s", res.Status, strings.TrimSpace(string(raw)))
	}
	var rr protocol.RevokeResponse
	json.Unmarshal(raw, &rr)
	return revokeResult{Pushed: true, CutOff: rr.CutOff, Killed: rr.Killed}, nil
}

// runLifecycle times out pending requests, expires grants and retries
// revocations the agent missed, until ctx ends.
func (b *Broker) runLifecycle(ctx context.Context) {
	t := time.NewTicker(b.cfg.LifecycleInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			b.flushRefusals(fctx, true)
			b.backlog.retry(fctx, b)
			cancel()
			return
		case <-t.C:
		}
		b.flushRefusals(ctx, false)
		b.backlog.retry(ctx, b)
		if err := b.lifecycleOnce(ctx); err != nil && ctx.Err() == nil {
			b.log.Error("request lifecycle", "err", err)
		}
	}
}

// lifecycleOnce stores the revocations the store could not take
// ([access.Service.RetryUnrecorded]), sets the store's reserve aside again
// when there is room, times out and expires what is due
// ([access.Service.ExpireDue]) and retries the revocations agents missed.
func (b *Broker) lifecycleOnce(ctx context.Context) error {
	// Revocations the store could not take are stored first, so that a
	// grant revoked on a full disk is recorded revoked, not expired.
	b.access.RetryUnrecorded(ctx)
	b.refillReserve()
	if err := b.access.ExpireDue(ctx); err != nil {
		return err
	}
	now := b.now()
	b.mu.Lock()
	retry := make([]pendingRevocation, 0, len(b.unpushed))
	for id, p := range b.unpushed {
		if !now.Before(p.grant.Expiry) {
			delete(b.unpushed, id) // the agent refuses it by itself now
			continue
		}
		retry = append(retry, p)
	}
	b.mu.Unlock()
	for _, p := range retry {
		if _, err := b.sendRevocation(ctx, p.grant, p.deployment); err == nil {
			b.mu.Lock()
			delete(b.unpushed, p.grant.ID)
			b.mu.Unlock()
		}
	}
	// The pushes recorded in the store, by this broker or another, every
	// pushRetryEvery at most.
	if now.Sub(b.lastPushRetry) < pushRetryEvery {
		return nil
	}
	b.lastPushRetry = now
	pushes, err := b.store.RevocationPushes(ctx, now, maxPushesPerTick)
	if err != nil {
		return err
	}
	for _, p := range pushes {
		if _, err := b.sendRevocation(ctx, store.GrantRecord{ID: p.GrantID, Expiry: p.Expiry}, p.DeploymentID); err == nil {
			b.log.Info("pushed a revocation its agent had missed", "grant", p.GrantID, "deployment", p.DeploymentID)
			b.forgetPush(ctx, p.GrantID)
		}
	}
	return nil
}

// maxBacklog bounds the events waiting in an [auditBacklog].
const maxBacklog = 10000

// auditBacklog holds the events of changes that stand although their
// audit write failed (a revocation is never undone for want of its
// event); the lifecycle loop writes them once the log takes writes again.
// Events are stamped before their first try, so each keeps its ID and
// time.
type auditBacklog struct {
	mu     sync.Mutex
	events []audit.Event
}

// add keeps e for the next try; it reports false when the backlog is full.
func (q *auditBacklog) add(e audit.Event) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.events) >= maxBacklog {
		return false
	}
	q.events = append(q.events, e)
	return true
}

// retry writes the waiting events in one commit.
func (q *auditBacklog) retry(ctx context.Context, b *Broker) {
	q.mu.Lock()
	es := slices.Clone(q.events)
	q.mu.Unlock()
	if len(es) == 0 {
		return
	}
	if err := b.auditLog.RecordAll(ctx, es...); err != nil {
		b.log.Error("audit write failed; events kept for the next try", "events", len(es), "err", err)
		return
	}
	q.mu.Lock()
	q.events = q.events[len(es):]
	q.mu.Unlock()
}

// notifyRequest sends a customer webhook about a request, if any is
// configured for its tenant.
func (b *Broker) notifyRequest(ar store.AccessRequest, typ, actor, summary string) {
	if b.notifier == nil {
		return
	}
	b.notifier.Notify(notify.Message{
		ID: uuid.NewString(), Type: typ, Time: b.now().UTC(), Tenant: ar.Tenant,
		Deployment: ar.Tenant + "/" + ar.Name, RequestID: ar.ID, Actor: actor, Summary: summary,
		URL:     b.pageURL + "/ui/requests/" + url.PathEscape(ar.ID),
		Details: map[string]any{"scopes": ar.Scopes, "duration": ar.Duration.String(), "ticket": ar.Ticket, "break_glass": ar.BreakGlass, "state": ar.State},
	})
}

// commentTicket comments on the request's ticket when the broker is
// configured to; it never blocks or fails the action it reports.
func (b *Broker) commentTicket(ar store.AccessRequest, body string) {
	if b.github == nil || ar.Ticket == "" {
		return
	}
	ref, err := ghub.ParseTicketRef(ar.Ticket)
	if err != nil {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := b.github.Comment(ctx, ref, body); err != nil {
			b.log.Warn("could not comment on the ticket", "ticket", ar.Ticket, "request", ar.ID, "err", err)
		}
	}()
}

// liveGrant finds the caller's active grant on a deployment covering
// scope. A grant the caller names (Tether-Grant header) must be one of
// theirs and live; otherwise the newest live one is used.
func (b *Broker) liveGrant(ctx context.Context, r *http.Request, deploymentID, scope string) (store.GrantRecord, error) {
	p := principalFrom(ctx)
	named := r.Header.Get(protocol.HeaderGrant)
	var ars []store.AccessRequest
	if rid := grantRequestID(named); rid != "" {
		// A named grant leads straight to its request; the token is then
		// compared whole below.
		ar, err := b.store.GetRequest(ctx, rid)
		if err == nil && ar.DeploymentID == deploymentID && ar.Requester.Subject == p.Subject && ar.State == store.StateActive {
			ars = append(ars, ar)
		}
	} else if named == "" {
		var err error
		ars, err = b.store.ListRequests(ctx, store.RequestFilter{DeploymentID: deploymentID, Requester: p.Subject, States: []string{store.StateActive}})
		if err != nil {
			return store.GrantRecord{}, fmt.Errorf("list requests: %w", err)
		}
	}
	now := b.now()
	for _, ar := range ars {
		g := ar.Grant
		if g == nil || ar.Requester.Issuer != p.Issuer || !slices.Contains(g.Scopes, scope) || !now.Before(g.Expiry) || now.Before(g.NotBefore) {
			continue
		}
		if b.access.Unrecorded(g.ID) {
			continue // revoked, although the store could not record it yet
		}
		if named != "" && named != g.Token {
			continue
		}
		return *g, nil
	}
	if named != "" {
		return store.GrantRecord{}, errorf(http.StatusForbidden, "grant_refused", "the grant in %s is not a live grant of yours for this deployment", protocol.HeaderGrant)
	}
	return store.GrantRecord{}, errorf(http.StatusForbidden, "no_grant", "you have no active grant covering %s on this deployment: ask with 'broker request create --deployment TENANT/NAME --scope %s …'", scope, scope)
}

// grantRequestID reads the request ID (rid claim) of a compact grant
// without verifying it: it only picks the stored request to compare the
// whole token with.
func grantRequestID(tok string) string {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 || len(parts[1]) > 4096 {
		return ""
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	var c struct {
		RID string `json:"rid"`
	}
	if json.Unmarshal(payload, &c) != nil {
		return ""
	}
	if _, err := uuid.Parse(c.RID); err != nil {
		return ""
	}
	return c.RID
}
