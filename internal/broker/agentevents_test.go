package broker_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/names"

	"github.com/google/uuid"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/agent"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/brokertest"
	"github.com/tetherhq/tether/internal/grant"
	"github.com/tetherhq/tether/internal/protocol"
	"github.com/tetherhq/tether/internal/store"
)

// storedGrant is a grant the broker issued and holds, as its request.
type storedGrant struct {
	id, requestID, subject string
	notBefore, expiry      time.Time
}

// issueStored signs a grant for the deployment's agent and stores it as
// an active request's grant, as the access workflow does on approval.
func issueStored(t *testing.T, b *brokertest.Broker, depID, tenant, name, agentID, subject string, notBefore, expiry time.Time) storedGrant {
	t.Helper()
	state := store.StateActive
	if !expiry.After(time.Now()) {
		state = store.StateExpired // as the lifecycle leaves it
	}
	t.Helper()
	now := time.Now()
	g := grant.Grant{
		ID: uuid.NewString(), RequestID: uuid.NewString(), Deployment: depID, Agent: agentID, Subject: subject,
		Scopes: []string{names.ScopeClickHouse}, NotBefore: notBefore, Expiry: expiry, IssuedAt: now,
	}
	tok, err := b.IssueGrant(g)
	if err != nil {
		t.Fatal(err)
	}
	err = b.Store().CreateRequest(context.Background(), store.AccessRequest{
		ID: g.RequestID, DeploymentID: depID, Tenant: tenant, Name: name,
		Requester: store.Person{Subject: subject, Issuer: "https://idp.vendor.test"}, Scopes: g.Scopes,
		Duration: expiry.Sub(notBefore), Reason: "test", State: state, Decision: []byte("{}"),
		Grant:     &store.GrantRecord{ID: g.ID, Token: tok, Scopes: g.Scopes, AgentID: agentID, NotBefore: notBefore, Expiry: expiry, IssuedAt: now},
		CreatedAt: now, UpdatedAt: now, Version: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	return storedGrant{id: g.ID, requestID: g.RequestID, subject: subject, notBefore: notBefore, expiry: expiry}
}

// allEvents is the whole audit log, decoded.
func allEvents(t *testing.T, c *brokerapi.Client) []audit.Event {
	t.Helper()
	aes, err := c.AuditSearch(context.Background(), brokerapi.AuditQuery{Limit: 100000})
	if err != nil {
		t.Fatal(err)
	}
	out := make([]audit.Event, 0, len(aes))
	for _, ae := range aes {
		var e audit.Event
		if err := json.Unmarshal(ae.Event, &e); err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

// deliveryRefusals are the broker's records of refused deliveries from
// an agent.
func deliveryRefusals(evs []audit.Event, agentID string) []audit.Event {
	var out []audit.Event
	for _, e := range evs {
		if e.Type == audit.AuthFailed && e.Source.Kind == "" && e.Actor.Subject == "agent:"+agentID && e.Details["path"] == protocol.PathEvents {
			out = append(out, e)
		}
	}
	return out
}

// TestAgentCannotForgeAuditEvents: a hostile agent's spool holds the
// forgeries of the security review — a backdated query.allowed of
// customer data in another deployment's session, review.approved,
// grant.revoked, breakglass.used, another engineer as actor, times outside
// the grant's window or in the future, unknown grants — beside events a
// real agent records. The broker stores the real ones, stamped as the
// agent's with its receipt time; it refuses every forgery, which leaves
// nothing in the log but one refusal naming the agent; and the agent's
// spool moves on. Repeated refused deliveries add one aggregate, not one
// event each, while another agent's events are still taken.
func TestAgentCannotForgeAuditEvents(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	b := brokertest.Start(t, nil)
	resA, err := b.Client.CreateDeployment(ctx, brokerapi.CreateDeploymentRequest{Tenant: "acme", Name: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	cfgA := agent.Config{StateDir: t.TempDir(), Join: b.Join(), PairingToken: resA.Pairing.Token, Hostname: "hostile"}
	a, stopA := brokertest.RunAgent(t, cfgA, true)
	victim := b.Pair(t, "globex", "prod")
	agentID, depA := a.State().AgentID, resA.Deployment.ID
	depB := victim.State().DeploymentID

	now := time.Now()
	own := issueStored(t, b, depA, "acme", "prod", agentID, "engineer@vendor.test", now.Add(-time.Minute), now.Add(time.Hour))
	later := issueStored(t, b, depA, "acme", "prod", agentID, "engineer@vendor.test", now.Add(5*time.Minute), now.Add(time.Hour))
	over := issueStored(t, b, depA, "acme", "prod", agentID, "engineer@vendor.test", now.Add(-10*time.Minute), now.Add(-70*time.Second))
	theirs := issueStored(t, b, depB, "globex", "prod", victim.State().AgentID, "oncall@vendor.test", now.Add(-time.Minute), now.Add(time.Hour))

	engineer := audit.Actor{Subject: "engineer@vendor.test", Tenant: "acme", Role: "engineer"}
	ev := func(typ audit.Type, g storedGrant, actor audit.Actor, at time.Time, mod func(*audit.Event)) audit.Event {
		e := audit.Event{
			Version: audit.SchemaVersion, ID: uuid.Must(uuid.NewV7()).String(), Time: at.UTC(), Type: typ, Actor: actor,
			Deployment: depA, AgentID: agentID, GrantID: g.id, RequestID: g.requestID, Outcome: audit.Success,
			Details: map[string]any{"sql": "SELECT v FROM default.secret"},
		}
		if mod != nil {
			mod(&e)
		}
		return e
	}
	approver := audit.Actor{Subject: "approver@globex.test", Tenant: "globex", Role: "approver"}
	forged := map[string]audit.Event{
		"backdated query.allowed in another deployment's session": ev(audit.QueryAllowed, theirs, audit.Actor{Subject: theirs.subject, Role: "engineer"}, now.Add(-30*time.Second), nil),
		"query.allowed naming the other agent and deployment": ev(audit.QueryAllowed, theirs, audit.Actor{Subject: theirs.subject, Role: "engineer"}, now.Add(-30*time.Second), func(e *audit.Event) {
			e.Deployment, e.AgentID = depB, victim.State().AgentID
		}),
		"review.approved":                    ev(audit.ReviewApproved, own, approver, now, nil),
		"grant.revoked":                      ev(audit.GrantRevoked, own, audit.Actor{Subject: "broker", Role: "broker"}, now, nil),
		"breakglass.used":                    ev(audit.BreakglassUsed, own, engineer, now, nil),
		"actor not the grant's engineer":     ev(audit.QueryAllowed, own, audit.Actor{Subject: "mallory@vendor.test", Role: "engineer"}, now, nil),
		"actor another issuer's engineer":    ev(audit.QueryAllowed, own, audit.Actor{Subject: "engineer@vendor.test", Issuer: "https://evil.test", Role: "engineer"}, now, nil),
		"before the grant's window":          ev(audit.QueryAllowed, later, engineer, now, nil),
		"after the grant's window":           ev(audit.QueryAllowed, over, engineer, now, nil),
		"in the future":                      ev(audit.QueryAllowed, own, engineer, now.Add(5*time.Minute), nil),
		"before the agent was paired":        ev(audit.AuthFailed, storedGrant{}, audit.Actor{}, now.Add(-24*time.Hour), func(e *audit.Event) { e.Outcome = audit.Failure }),
		"unknown grant":                      ev(audit.QueryAllowed, storedGrant{id: uuid.NewString(), requestID: uuid.NewString()}, engineer, now, nil),
		"grant of another request":           ev(audit.QueryAllowed, storedGrant{id: own.id, requestID: theirs.requestID}, engineer, now, nil),
		"no grant":                           ev(audit.QueryFinished, storedGrant{}, engineer, now, nil),
		"query.allowed with outcome failure": ev(audit.QueryAllowed, own, engineer, now, func(e *audit.Event) { e.Outcome = audit.Failure }),
	}
	real := []audit.Event{
		ev(audit.QueryAllowed, own, engineer, now.Add(-10*time.Second), func(e *audit.Event) {
			e.Details = map[string]any{"sql": "SELECT 1 FROM system.one"}
			e.Source = audit.Source{IP: "100.64.0.1:443"}
		}),
		ev(audit.QueryFinished, over, engineer, now.Add(-20*time.Second), func(e *audit.Event) {
			e.Outcome, e.Reason = audit.Failure, "cut off: grant expired"
		}),
		// A refusal of a call with a grant of another deployment, as the
		// agent records it: stored as the agent's own word.
		ev(audit.AuthFailed, theirs, audit.Actor{Subject: theirs.subject}, now, func(e *audit.Event) {
			e.Outcome, e.Reason, e.Details = audit.Failure, "grant refused: grant is for another deployment", nil
		}),
		ev(audit.AuthFailed, storedGrant{}, audit.Actor{}, now, func(e *audit.Event) {
			e.Outcome, e.Reason, e.Details = audit.Failure, "agent refused a call: caller is not a tailnet peer", nil
		}),
	}

	// The hostile agent's spool, delivered in one go when it comes back.
	stopA()
	var spool []byte
	for _, e := range real {
		b, _ := e.Marshal()
		spool = append(append(spool, b...), '\n')
	}
	for _, e := range forged {
		b, _ := e.Marshal()
		spool = append(append(spool, b...), '\n')
	}
	if err := os.WriteFile(filepath.Join(cfgA.StateDir, "spool.jsonl"), spool, 0o600); err != nil {
		t.Fatal(err)
	}
	before := len(allEvents(t, b.Client))
	cfgA.PairingToken = ""
	a, _ = brokertest.RunAgent(t, cfgA, true) // online once its first delivery is answered
	if n, err := a.Deliver(ctx); err != nil || n != 0 {
		t.Errorf("Deliver after the refused delivery = %d, %v; want 0, nil (the spool moved on)", n, err)
	}

	evs := allEvents(t, b.Client)
	byID := map[string]audit.Event{}
	for _, e := range evs {
		byID[e.ID] = e
		if e.GrantID == theirs.id || e.RequestID == theirs.requestID {
			t.Errorf("the log has event %s (%s) in the other deployment's session", e.ID, e.Type)
		}
		switch e.Type {
		case audit.ReviewApproved, audit.GrantRevoked, audit.BreakglassUsed:
			t.Errorf("the log has a %s: %+v", e.Type, e)
		}
	}
	for name, e := range forged {
		if _, ok := byID[e.ID]; ok {
			t.Errorf("%s: forged event %s was stored", name, e.ID)
		}
	}
	for _, want := range real {
		got, ok := byID[want.ID]
		if !ok {
			t.Errorf("the agent's %s event %s was not stored", want.Type, want.ID)
			continue
		}
		if got.Source.Kind != audit.SourceAgent || got.Source.ReceivedAt.Before(now) || !strings.HasPrefix(got.Source.TailnetNode, "hostile") {
			t.Errorf("%s stored with source %+v, want kind agent, the broker's receipt time and the agent's node", got.Type, got.Source)
		}
		if !got.Time.Equal(want.Time) {
			t.Errorf("%s stored with time %s, want the agent's %s", got.Type, got.Time, want.Time)
		}
		switch got.Type {
		case audit.QueryAllowed, audit.QueryFinished:
			if wantActor := (audit.Actor{Subject: "engineer@vendor.test", Issuer: "https://idp.vendor.test", Role: "engineer"}); got.Actor != wantActor {
				t.Errorf("%s stored with actor %+v, want the grant's engineer %+v", got.Type, got.Actor, wantActor)
			}
		case audit.AuthFailed:
			if got.Actor.Subject != "agent:"+agentID || got.Actor.Role != "agent" || got.GrantID != "" || got.RequestID != "" {
				t.Errorf("agent refusal stored as %+v, want the agent as actor and no grant", got)
			}
			if want.GrantID != "" && (got.Details["claimed_grant_id"] != want.GrantID || got.Details["claimed_subject"] != theirs.subject) {
				t.Errorf("agent refusal details %v, want the claimed grant and subject", got.Details)
			}
		}
	}
	refusals := deliveryRefusals(evs, agentID)
	if len(refusals) != 1 {
		t.Fatalf("%d refusals of the agent's delivery, want 1: %+v", len(refusals), refusals)
	}
	r := refusals[0]
	if r.Details["refused"] != float64(len(forged)) || r.Deployment != depA || r.AgentID != agentID {
		t.Errorf("refusal = %+v, want %d refused events, naming the agent and its deployment", r, len(forged))
	}
	if named, _ := r.Details["refusals"].([]any); len(named) != 10 {
		t.Errorf("refusal names %d events, want the first 10", len(named))
	}
	if grew, want := len(evs)-before, len(real)+len(refusals); grew != want {
		t.Errorf("the log grew by %d events, want %d (the real ones and one refusal)", grew, want)
	}

	// A flood of refused deliveries: the first is on record already; the
	// rest of the window makes one aggregate.
	const flood = 20
	for i := range flood {
		if err := a.RecordEvent(ctx, ev(audit.BreakglassUsed, own, engineer, time.Now(), nil)); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Deliver(ctx); err != nil {
			t.Fatalf("delivery %d: %v", i, err)
		}
	}
	// Another agent's events are still taken.
	if err := victim.RecordEvent(ctx, audit.Event{Type: audit.AuthFailed, Outcome: audit.Failure, Reason: "agent refused a call: during the flood"}); err != nil {
		t.Fatal(err)
	}
	if _, err := victim.Deliver(ctx); err != nil {
		t.Fatal(err)
	}
	after := allEvents(t, b.Client)
	if !slices.ContainsFunc(after, func(e audit.Event) bool { return e.Reason == "agent refused a call: during the flood" }) {
		t.Error("the other agent's event was not stored during the flood")
	}
	// Every refused delivery is accounted for — one event for the first
	// of each window, one aggregate with a count for its repeats — and
	// the log grew by a few events, not one per delivery.
	accounted := func(rs []audit.Event) int {
		n := 0
		for _, r := range rs {
			if c, ok := r.Details["count"].(float64); ok {
				n += int(c)
			} else {
				n++
			}
		}
		return n
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := deliveryRefusals(allEvents(t, b.Client), agentID)
		if accounted(got) == flood+1 {
			if len(got) > 3 {
				t.Errorf("%d refusal events for %d refused deliveries, want at most 3", len(got), flood+1)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("refusal events account for %d of %d refused deliveries after 30s: %+v", accounted(got), flood+1, got)
		}
		time.Sleep(100 * time.Millisecond) // polling the log for the aggregate, written when the window ends
	}
}
