package broker

import (
	"errors"
	"testing"
	"time"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/store"
)

// TestAgentEventRules holds the rules for agent-delivered events at their
// edges, without a server: the grant's window and the broker's clock give
// or take agentEventSkew, the outcome each type may have, and what an
// agent's refusal keeps of the grant it names.
func TestAgentEventRules(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	ag := store.Agent{ID: "0190aaaa-0000-7000-8000-00000000000a", DeploymentID: "dep", PairedAt: now.Add(-time.Hour)}
	ar := &store.AccessRequest{
		ID: "0190aaaa-0000-7000-8000-000000000001", DeploymentID: "dep",
		Requester: store.Person{Subject: "u1", Email: "eng@vendor.test", Issuer: "https://idp"},
		Grant:     &store.GrantRecord{ID: "g1", AgentID: ag.ID, NotBefore: now.Add(-30 * time.Minute), Expiry: now.Add(-10 * time.Minute)},
	}
	d := agentDelivery{
		agent: ag, tenant: "acme", now: now,
		source: audit.Source{Kind: audit.SourceAgent, TailnetNode: "agent.ts.net", ReceivedAt: now},
		request: func(id string) (*store.AccessRequest, error) {
			if id == ar.ID {
				return ar, nil
			}
			return nil, nil
		},
	}
	base := audit.Event{
		Version: 1, ID: "0190aaaa-0000-7000-8000-0000000000e1", Type: audit.QueryAllowed, Outcome: audit.Success,
		Actor: audit.Actor{Subject: "eng@vendor.test", Tenant: "acme", Role: "engineer"}, Deployment: "dep", AgentID: ag.ID,
		GrantID: "g1", RequestID: ar.ID,
	}
	nb, exp := ar.Grant.NotBefore, ar.Grant.Expiry
	for _, tt := range []struct {
		name string
		mod  func(*audit.Event)
		ok   bool
	}{
		{"inside the window", func(e *audit.Event) { e.Time = nb.Add(time.Minute) }, true},
		{"skew before not-before", func(e *audit.Event) { e.Time = nb.Add(-agentEventSkew) }, true},
		{"beyond skew before not-before", func(e *audit.Event) { e.Time = nb.Add(-agentEventSkew - time.Millisecond) }, false},
		{"skew after expiry", func(e *audit.Event) { e.Time = exp.Add(agentEventSkew) }, true},
		{"beyond skew after expiry", func(e *audit.Event) { e.Time = exp.Add(agentEventSkew + time.Millisecond) }, false},
		{"finished may fail", func(e *audit.Event) { e.Time, e.Type, e.Outcome = nb, audit.QueryFinished, audit.Failure }, true},
		{"denied cannot succeed", func(e *audit.Event) { e.Time, e.Type = nb, audit.PromDenied }, false},
		{"issuer of the request", func(e *audit.Event) { e.Time, e.Actor.Issuer = nb, "https://idp" }, true},
		{"subject not the grant's", func(e *audit.Event) { e.Time, e.Actor.Subject = nb, "u1" }, false},
		{"role not engineer", func(e *audit.Event) { e.Time, e.Actor.Role = nb, "admin" }, false},
		{"grant.expired", func(e *audit.Event) { e.Time, e.Type = nb, audit.GrantExpired }, false},
		{"not a UUID", func(e *audit.Event) { e.Time, e.ID = nb, "x" }, false},
		{"refusal in the future", func(e *audit.Event) {
			e.Time, e.Type, e.Outcome, e.GrantID, e.RequestID = now.Add(agentEventSkew+time.Millisecond), audit.AuthFailed, audit.Failure, "", ""
		}, false},
		{"refusal after the grant expired", func(e *audit.Event) { e.Time, e.Type, e.Outcome = now, audit.AuthFailed, audit.Failure }, true},
	} {
		e := base
		tt.mod(&e)
		got, err := d.check(e)
		var re *errRefused
		if err != nil && !errors.As(err, &re) {
			t.Fatalf("%s: check = %v, want a refusal or none", tt.name, err)
		}
		if (err == nil) != tt.ok {
			t.Errorf("%s: check(%s at %s) = %v, want accepted %v", tt.name, e.Type, e.Time, err, tt.ok)
			continue
		}
		if err != nil {
			continue
		}
		if got.Source != d.source {
			t.Errorf("%s: source %+v, want the broker's stamp %+v", tt.name, got.Source, d.source)
		}
		want := audit.Actor{Subject: "eng@vendor.test", Issuer: "https://idp", Role: "engineer"}
		if got.Type == audit.AuthFailed {
			want = audit.Actor{Subject: "agent:" + ag.ID, Tenant: "acme", Role: "agent"}
			if got.GrantID != "g1" || got.Details["claimed_subject"] != "eng@vendor.test" {
				t.Errorf("%s: refusal %+v, want its (issued) grant kept and the claimed subject in details", tt.name, got)
			}
		}
		if got.Actor != want {
			t.Errorf("%s: actor %+v, want %+v", tt.name, got.Actor, want)
		}
	}
}
