package access

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/approval"
	"github.com/tetherhq/tether/internal/names"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/store"
	"github.com/tetherhq/tether/policy"
)

var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// The people of the rules' tests.
var (
	engineer = store.Person{Subject: "eng", Email: "engineer@vendor.test", Issuer: "https://vendor", Roles: []string{"engineer"}}
	lead     = store.Person{Subject: "lead", Email: "lead@vendor.test", Issuer: "https://vendor", Roles: []string{"engineer", "reviewer"}}
	reviewer = store.Person{Subject: "rev", Email: "reviewer@vendor.test", Issuer: "https://vendor", Roles: []string{"reviewer"}}
	admin    = store.Person{Subject: "adm", Email: "admin@vendor.test", Issuer: "https://vendor", Roles: []string{"admin"}}
	acme1    = store.Person{Subject: "a1", Email: "approver@acme.test", Issuer: "https://acme", Tenant: "acme", Roles: []string{"approver"}}
	acme2    = store.Person{Subject: "a2", Email: "second@acme.test", Issuer: "https://acme", Tenant: "acme", Roles: []string{"approver"}}
	globex   = store.Person{Subject: "g1", Email: "approver@globex.test", Issuer: "https://globex", Tenant: "globex", Roles: []string{"approver"}}
	// sameSubject has engineer's subject at another issuer: another person.
	sameSubject = store.Person{Subject: "eng", Issuer: "https://acme", Tenant: "acme", Roles: []string{"approver"}}
)

// pending is a pending request of engineer's on acme/prod needing reviews.
func pending(reviews ...policy.Review) store.AccessRequest {
	dec, _ := json.Marshal(policy.Decision{Allow: true, RequiredReviews: reviews, MaxDurationSeconds: 4 * 3600, Scopes: []string{"clickhouse:system"}, PolicyHash: "hash"})
	return store.AccessRequest{
		ID: "req", DeploymentID: "dep", Tenant: "acme", Name: "prod", Requester: engineer,
		Scopes: []string{"clickhouse:system"}, Duration: 30 * time.Minute, State: store.StatePending,
		Decision: dec, PendingUntil: t0.Add(time.Hour), CreatedAt: t0, Version: 1,
	}
}

func customer(n int) policy.Review {
	return policy.Review{Tenant: "acme", Role: names.ReviewApprover, Count: n}
}
func internal(n int) policy.Review { return policy.Review{Role: names.ReviewInternal, Count: n} }

// code is the lifecycle code of err, "" for none.
func code(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	if err != nil {
		return "not an access error: " + err.Error()
	}
	return ""
}

// terms is the canonical statement a customer signs to approve ar
// through agent-1 as asked, or for duration d when not zero.
func terms(t testing.TB, ar store.AccessRequest, d time.Duration) string {
	t.Helper()
	ar.State = store.StatePending
	st, err := ProposeTerms(ar, "agent-1", d, nil, t0)
	if err != nil {
		t.Fatal(err)
	}
	b, err := st.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestApplyReview(t *testing.T) {
	std := terms(t, pending(), 0)
	approve := func(p store.Person) Review {
		return Review{Reviewer: p, Approve: true, Statement: std, Proof: "proof", Agent: "agent-1"}
	}
	unsigned := func(p store.Person) Review { return Review{Reviewer: p, Approve: true, Agent: "agent-1"} }
	signedAs := func(p store.Person, st string) Review {
		return Review{Reviewer: p, Approve: true, Statement: st, Proof: "proof", Agent: "agent-1"}
	}
	with := func(ar store.AccessRequest, rvs ...store.Review) store.AccessRequest { ar.Reviews = rvs; return ar }
	in := func(ar store.AccessRequest, state string) store.AccessRequest { ar.State = state; return ar }
	approved := func(p store.Person, role string) store.Review {
		x := store.Review{Reviewer: p, Role: role, Approve: true, At: t0}
		if role == names.ReviewApprover {
			x.Statement, x.Proof = std, "proof"
		}
		return x
	}
	shorter := terms(t, pending(), 10*time.Minute)
	other := pending()
	other.ID = "req-2"
	forOther := terms(t, other, 0)
	planned := pending(customer(1))
	planned.NetworkPlan = &store.NetworkPlan{Digest: "sha256:aaa"}
	for _, tt := range []struct {
		name      string
		ar        store.AccessRequest
		rv        Review
		wantCode  string
		wantState string
		wantRole  string
	}{
		{"one customer approval of one", pending(customer(1)), approve(acme1), "", store.StateApproved, names.ReviewApprover},
		{"first of two customer approvals", pending(customer(2)), approve(acme1), "", store.StatePending, names.ReviewApprover},
		{"second of two: exactly enough", with(pending(customer(2)), approved(acme1, names.ReviewApprover)), approve(acme2), "", store.StateApproved, names.ReviewApprover},
		{"a denial ends it", pending(customer(2)), Review{Reviewer: acme1, Comment: "not now"}, "", store.StateDenied, names.ReviewApprover},
		{"self-review", pending(internal(1)), approve(engineer), CodeSelfReview, "", ""},
		{"self-review by a lead who reviews", func() store.AccessRequest { ar := pending(internal(2)); ar.Requester = lead; return ar }(), approve(lead), CodeSelfReview, "", ""},
		{"same subject, other issuer, is someone else", pending(customer(1)), approve(sameSubject), "", store.StateApproved, names.ReviewApprover},
		{"another tenant's approver", pending(customer(1)), approve(globex), CodeNotAReviewer, "", ""},
		{"a vendor reviewer for a customer review", pending(customer(1)), approve(reviewer), CodeNotAReviewer, "", ""},
		{"a customer for an internal review", pending(internal(2)), approve(acme1), CodeNotAReviewer, "", ""},
		{"the engineer role reviews nothing", func() store.AccessRequest { ar := pending(customer(1)); ar.Requester = lead; return ar }(), approve(engineer), CodeNotAReviewer, "", ""},
		{"internal approvals by a reviewer and an admin", with(pending(internal(2)), approved(reviewer, names.ReviewInternal)), approve(admin), "", store.StateApproved, names.ReviewInternal},
		{"duplicate review", with(pending(customer(2)), approved(acme1, names.ReviewApprover)), approve(acme1), CodeAlreadyReviewed, "", ""},
		{"duplicate, as a denial", with(pending(customer(2)), approved(acme1, names.ReviewApprover)), Review{Reviewer: acme1, Comment: "changed my mind"}, CodeAlreadyReviewed, "", ""},
		{"an approval no longer needed", with(pending(customer(1), internal(1)), approved(acme1, names.ReviewApprover)), approve(acme2), CodeReviewNotNeeded, "", ""},
		{"a denial counts even then", with(pending(customer(1), internal(1)), approved(acme1, names.ReviewApprover)), Review{Reviewer: acme2, Comment: "no"}, "", store.StateDenied, names.ReviewApprover},
		{"review after the timeout", in(pending(customer(1)), store.StateTimedOut), approve(acme1), CodeNotPending, "", ""},
		{"approve after cancel", in(pending(customer(1)), store.StateCancelled), approve(acme1), CodeNotPending, "", ""},
		{"approve after a denial", in(pending(customer(1)), store.StateDenied), approve(acme1), CodeNotPending, "", ""},
		{"approve an active request", in(pending(customer(1)), store.StateActive), approve(acme1), CodeNotPending, "", ""},
		{"the plan the reviewer saw", planned, Review{Reviewer: acme1, Approve: true, PlanDigest: "sha256:aaa", Statement: std, Proof: "p", Agent: "agent-1"}, "", store.StateApproved, names.ReviewApprover},
		{"another plan than the reviewer saw", planned, Review{Reviewer: acme1, Approve: true, PlanDigest: "sha256:bbb", Statement: std, Proof: "p", Agent: "agent-1"}, CodePlanDigestMismatch, "", ""},
		{"a plan digest for a request without one", pending(customer(1)), Review{Reviewer: acme1, Approve: true, PlanDigest: "sha256:bbb", Statement: std, Proof: "p", Agent: "agent-1"}, CodePlanDigestMismatch, "", ""},
		{"a customer approval without a signed statement", pending(customer(1)), unsigned(acme1), CodeProofRequired, "", ""},
		{"a statement about another request", pending(customer(1)), signedAs(acme1, forOther), CodeStatementMismatch, "", ""},
		{"a statement naming another agent", pending(customer(1)), Review{Reviewer: acme1, Approve: true, Statement: std, Proof: "p", Agent: "agent-2"}, CodeStatementMismatch, "", ""},
		{"a vendor's internal approval needs no statement", pending(internal(1)), unsigned(reviewer), "", store.StateApproved, names.ReviewInternal},
		{"a narrower second approval does not complete the first's terms", with(pending(customer(2)), approved(acme1, names.ReviewApprover)), signedAs(acme2, shorter), "", store.StatePending, names.ReviewApprover},
		{"an approver whose terms were superseded signs again", with(pending(customer(2)), approved(acme1, names.ReviewApprover), store.Review{Reviewer: acme2, Role: names.ReviewApprover, Approve: true, At: t0, Statement: shorter, Proof: "p"}), signedAs(acme1, shorter), "", store.StateApproved, names.ReviewApprover},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := len(tt.ar.Reviews)
			got, role, err := ApplyReview(tt.ar, tt.rv, t0)
			if code(err) != tt.wantCode {
				t.Fatalf("ApplyReview = %v, want code %q", err, tt.wantCode)
			}
			if len(tt.ar.Reviews) != before {
				t.Fatal("ApplyReview changed the request it was given")
			}
			if err != nil {
				return
			}
			if got.State != tt.wantState || role != tt.wantRole {
				t.Errorf("ApplyReview = state %s counted as %q, want %s as %q", got.State, role, tt.wantState, tt.wantRole)
			}
			want := before + 1
			if strings.Contains(tt.name, "signs again") {
				want = before // their superseded approval is replaced
			}
			if n := len(got.Reviews); n != want || got.Reviews[n-1].Role != role || !SamePerson(got.Reviews[n-1].Reviewer, tt.rv.Reviewer) {
				t.Errorf("reviews = %+v, want the new one counted as %s", got.Reviews, role)
			}
			if got.State == store.StateDenied && (got.EndedBy != DisplayName(tt.rv.Reviewer) || got.EndReason != tt.rv.Comment || !got.EndedAt.Equal(t0)) {
				t.Errorf("denied request ended by %q (%q) at %v, want the reviewer, their comment, now", got.EndedBy, got.EndReason, got.EndedAt)
			}
		})
	}
}

func TestMissingCountsOnlyTheRequiredTenant(t *testing.T) {
	ar := pending(customer(2))
	// A stored review from another tenant (say, counted under an older
	// rule) never fills acme's requirement.
	ar.Reviews = []store.Review{
		{Reviewer: globex, Role: names.ReviewApprover, Approve: true},
		{Reviewer: acme1, Role: names.ReviewApprover, Approve: false},
		{Reviewer: acme2, Role: names.ReviewApprover, Approve: true},
	}
	if got := Missing(ar); len(got) != 1 || got[0].Count != 1 || got[0].Tenant != "acme" {
		t.Errorf("Missing = %+v, want 1 more approval from acme", got)
	}
	if got := Waiting(ar); got != "1 more approval from an approver of tenant acme" {
		t.Errorf("Waiting = %q", got)
	}
}

func TestTerms(t *testing.T) {
	sev := func(verified bool, labels ...string) *policy.Ticket {
		return &policy.Ticket{Ref: "vendor/incidents#1", Verified: verified, State: "open", Labels: labels}
	}
	allow := func(maxDur time.Duration, scopes []string, reviews ...policy.Review) policy.Decision {
		return policy.Decision{Allow: true, RequiredReviews: reviews, MaxDuration: maxDur, Scopes: scopes}
	}
	ch, prom := "clickhouse:system", "prometheus:read"
	for _, tt := range []struct {
		name       string
		breakGlass bool
		ticket     *policy.Ticket
		requested  []string
		dec        policy.Decision
		want       GrantTerms
		wantCode   string
	}{
		{"customer reviews go to the deployment's tenant", false, nil, []string{ch},
			allow(4*time.Hour, []string{ch}, policy.Review{Tenant: "globex", Role: names.ReviewApprover, Count: 1}),
			GrantTerms{Reviews: []policy.Review{customer(1)}, Scopes: []string{ch}, MaxDuration: 4 * time.Hour}, ""},
		{"internal reviews name no tenant", false, nil, []string{ch},
			allow(4*time.Hour, []string{ch}, policy.Review{Tenant: "acme", Role: names.ReviewInternal, Count: 1}),
			GrantTerms{Reviews: []policy.Review{internal(1)}, Scopes: []string{ch}, MaxDuration: 4 * time.Hour}, ""},
		{"no review: approved at once", false, nil, []string{prom}, allow(time.Hour, []string{prom}),
			GrantTerms{Scopes: []string{prom}, MaxDuration: time.Hour}, ""},
		{"an unknown review role", false, nil, []string{ch}, allow(time.Hour, []string{ch}, policy.Review{Role: "anyone", Count: 1}), GrantTerms{}, CodePolicyError},
		{"zero reviews of a kind", false, nil, []string{ch}, allow(time.Hour, []string{ch}, customer(0)), GrantTerms{}, CodePolicyError},
		{"the hard cap", false, nil, []string{ch}, allow(48*time.Hour, []string{ch}, customer(1)),
			GrantTerms{Reviews: []policy.Review{customer(1)}, Scopes: []string{ch}, MaxDuration: MaxGrantDuration}, ""},
		{"scopes narrowed to what the policy allows", false, nil, []string{ch, prom}, allow(time.Hour, []string{prom, "network:peering"}, customer(1)),
			GrantTerms{Reviews: []policy.Review{customer(1)}, Scopes: []string{prom}, MaxDuration: time.Hour}, ""},
		{"no scope left", false, nil, []string{ch}, allow(time.Hour, []string{prom}, customer(1)), GrantTerms{}, CodeNoScope},
		{"break-glass: two internal reviews, at most 1h", true, sev(true, "sev1"), []string{ch}, allow(4*time.Hour, []string{ch}),
			GrantTerms{Reviews: []policy.Review{internal(BreakGlassReviews)}, Scopes: []string{ch}, MaxDuration: MaxBreakGlassDuration}, ""},
		{"break-glass: one internal review is raised to two", true, sev(true, "sev1"), []string{ch}, allow(4*time.Hour, []string{ch}, internal(1)),
			GrantTerms{Reviews: []policy.Review{internal(2)}, Scopes: []string{ch}, MaxDuration: MaxBreakGlassDuration}, ""},
		{"break-glass: three internal reviews stay three", true, sev(true, "sev1"), []string{ch}, allow(30*time.Minute, []string{ch}, internal(3)),
			GrantTerms{Reviews: []policy.Review{internal(3)}, Scopes: []string{ch}, MaxDuration: 30 * time.Minute}, ""},
		{"break-glass without a ticket", true, nil, []string{ch}, allow(time.Hour, []string{ch}), GrantTerms{}, CodeBreakGlassNeedSev1},
		{"break-glass on an unverified sev1 ticket", true, sev(false, "sev1"), []string{ch}, allow(time.Hour, []string{ch}), GrantTerms{}, CodeBreakGlassNeedSev1},
		{"break-glass on a sev3 ticket", true, sev(true, "sev3"), []string{ch}, allow(time.Hour, []string{ch}), GrantTerms{}, CodeBreakGlassNeedSev1},
		{"break-glass with customer reviews", true, sev(true, "sev1"), []string{ch}, allow(time.Hour, []string{ch}, customer(1)), GrantTerms{}, CodePolicyError},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Terms("acme", tt.breakGlass, tt.ticket, tt.requested, tt.dec)
			if code(err) != tt.wantCode {
				t.Fatalf("Terms = %v, want code %q", err, tt.wantCode)
			}
			if err == nil && (!slices.Equal(got.Reviews, tt.want.Reviews) || !slices.Equal(got.Scopes, tt.want.Scopes) || got.MaxDuration != tt.want.MaxDuration) {
				t.Errorf("Terms = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestBreakGlassTicket: a ticket that cannot be verified at all is
// refused with the real cause, not as one "not labelled sev1".
func TestBreakGlassTicket(t *testing.T) {
	if err := BreakGlassTicket("tether/demo#1", ""); err != nil {
		t.Errorf("BreakGlassTicket(verified) = %v, want nil", err)
	}
	err := BreakGlassTicket("acme/ops#1", "no ticket source is configured: no github")
	if code(err) != CodeBreakGlassNeedSev1 || !contains(err.Error(), "no ticket source is configured", "acme/ops#1") || contains(err.Error(), "not labelled") {
		t.Errorf("BreakGlassTicket(unverifiable) = %v, want breakglass_needs_sev1 naming the ticket and the missing source", err)
	}
}

func contains(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

func TestCancel(t *testing.T) {
	in := func(state string) store.AccessRequest { ar := pending(customer(1)); ar.State = state; return ar }
	for _, tt := range []struct {
		name     string
		ar       store.AccessRequest
		by       store.Person
		wantCode string
	}{
		{"the requester, pending", in(store.StatePending), engineer, ""},
		{"someone else", in(store.StatePending), acme1, CodeNotRequester},
		{"same subject at another issuer", in(store.StatePending), sameSubject, CodeNotRequester},
		{"an active request", in(store.StateActive), engineer, CodeNotPending},
		{"a cancelled request", in(store.StateCancelled), engineer, CodeNotPending},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Cancel(tt.ar, tt.by, t0)
			if code(err) != tt.wantCode {
				t.Fatalf("Cancel = %v, want code %q", err, tt.wantCode)
			}
			if err == nil && (got.State != store.StateCancelled || got.EndedBy != DisplayName(engineer) || !got.EndedAt.Equal(t0)) {
				t.Errorf("Cancel = %s by %q at %v", got.State, got.EndedBy, got.EndedAt)
			}
		})
	}
}

func TestRevoke(t *testing.T) {
	in := func(state string) store.AccessRequest { ar := pending(customer(1)); ar.State = state; return ar }
	for _, tt := range []struct {
		name     string
		ar       store.AccessRequest
		by       store.Person
		wantCode string
	}{
		{"the requester", in(store.StateActive), engineer, ""},
		{"the tenant's approver", in(store.StateActive), acme2, ""},
		{"a vendor reviewer", in(store.StateActive), reviewer, ""},
		{"an admin", in(store.StateApproved), admin, ""},
		{"another tenant's approver", in(store.StateActive), globex, CodeNotAllowedToRevoke},
		{"another engineer", in(store.StateActive), store.Person{Subject: "other", Issuer: "https://vendor", Roles: []string{"engineer"}}, CodeNotAllowedToRevoke},
		{"a pending request", in(store.StatePending), acme1, CodeNotActive},
		{"an expired grant", in(store.StateExpired), acme1, CodeNotActive},
		{"twice", in(store.StateRevoked), acme1, CodeNotActive},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Revoke(tt.ar, tt.by, "stop", t0)
			if code(err) != tt.wantCode {
				t.Fatalf("Revoke = %v, want code %q", err, tt.wantCode)
			}
			if err == nil && (got.State != store.StateRevoked || got.EndReason != "stop" || got.EndedBy != DisplayName(tt.by)) {
				t.Errorf("Revoke = %s by %q (%q)", got.State, got.EndedBy, got.EndReason)
			}
		})
	}
}

func TestExpire(t *testing.T) {
	active := func(expiry time.Time) store.AccessRequest {
		ar := pending(customer(1))
		ar.State, ar.Grant = store.StateActive, &store.GrantRecord{ID: "g", NotBefore: t0, Expiry: expiry}
		return ar
	}
	pendingUntil := func(at time.Time) store.AccessRequest { ar := pending(customer(1)); ar.PendingUntil = at; return ar }
	for _, tt := range []struct {
		name      string
		ar        store.AccessRequest
		wantState string
		wantType  audit.Type
	}{
		{"pending past its timeout", pendingUntil(t0.Add(-time.Second)), store.StateTimedOut, audit.RequestTimedOut},
		{"pending at its timeout", pendingUntil(t0), store.StateTimedOut, audit.RequestTimedOut},
		{"pending before its timeout", pendingUntil(t0.Add(time.Second)), "", ""},
		{"a grant at its expiry", active(t0), store.StateExpired, audit.GrantExpired},
		{"a grant before its expiry", active(t0.Add(time.Minute)), "", ""},
		{"approved without a grant, past the timeout", func() store.AccessRequest { ar := pendingUntil(t0); ar.State = store.StateApproved; return ar }(), store.StateExpired, audit.GrantExpired},
		{"denied: over", func() store.AccessRequest {
			ar := pendingUntil(t0.Add(-time.Hour))
			ar.State = store.StateDenied
			return ar
		}(), "", ""},
		{"revoked: not ours", func() store.AccessRequest { ar := active(t0.Add(-time.Hour)); ar.State = store.StateRevoked; return ar }(), "", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, typ, err := Expire(tt.ar, t0)
			if tt.wantState == "" {
				if !errors.Is(err, ErrNotDue) {
					t.Errorf("Expire = %s, %v; want ErrNotDue", got.State, err)
				}
				return
			}
			if err != nil || got.State != tt.wantState || typ != tt.wantType || got.EndedBy != "broker" || !got.EndedAt.Equal(t0) {
				t.Errorf("Expire = %s (%s) by %q, %v; want %s (%s) by the broker", got.State, typ, got.EndedBy, err, tt.wantState, tt.wantType)
			}
		})
	}
}

func TestGrantFor(t *testing.T) {
	ar := pending(customer(1))
	d := store.DeploymentStatus{Deployment: store.Deployment{ID: "dep", Tenant: "acme", Name: "prod"}, Agent: &store.Agent{ID: "agent"}}
	now := t0.Add(700 * time.Millisecond)
	g, err := GrantFor(ar, d, "gid", now)
	if err != nil {
		t.Fatal(err)
	}
	if g.Agent != "agent" || g.Subject != "engineer@vendor.test" || !g.NotBefore.Equal(t0) || !g.Expiry.Equal(t0.Add(30*time.Minute)) || g.PolicyHash != "hash" || !slices.Equal(g.Scopes, []string{"clickhouse:system"}) {
		t.Errorf("GrantFor = %+v, want the decided scopes for 30m from the whole second, for the agent", g)
	}
	d.Agent = nil
	if _, err := GrantFor(ar, d, "gid", now); code(err) != CodeAgentUnpaired {
		t.Errorf("GrantFor without an agent = %v, want agent_unpaired", err)
	}
	ar.Network = &store.PeeringSpec{Kind: "peering"}
	if g, err := GrantFor(ar, d, "gid", now); err != nil || g.Agent != "" {
		t.Errorf("GrantFor a network change = %+v, %v; want a grant for no agent", g, err)
	}
}

// TestGrantForSignedTerms: a grant customers approved has the window and
// scopes they signed and carries the proofs of exactly those terms.
func TestGrantForSignedTerms(t *testing.T) {
	std, shorter := terms(t, pending(), 0), terms(t, pending(), 10*time.Minute)
	ar := pending(customer(2))
	ar.Reviews = []store.Review{
		{Reviewer: acme1, Role: names.ReviewApprover, Approve: true, Statement: std, Proof: "old terms"},
		{Reviewer: acme2, Role: names.ReviewApprover, Approve: true, Statement: shorter, Proof: "p2"},
		{Reviewer: globex, Role: names.ReviewApprover, Approve: true, Statement: shorter, Proof: "p3"},
		{Reviewer: reviewer, Role: names.ReviewInternal, Approve: true},
	}
	d := store.DeploymentStatus{Deployment: store.Deployment{ID: "dep", Tenant: "acme", Name: "prod"}, Agent: &store.Agent{ID: "agent-1"}}
	g, err := GrantFor(ar, d, "gid", t0.Add(3*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if !g.NotBefore.Equal(t0) || !g.Expiry.Equal(t0.Add(10*time.Minute)) || !slices.Equal(g.Proofs, []string{"p2"}) ||
		g.EngineerIssuer != engineer.Issuer || g.EngineerSubject != engineer.Subject {
		t.Fatalf("GrantFor = %+v, want the latest signed window, its proofs from acme only, and the engineer's identity", g)
	}
	d.Agent.ID = "agent-2"
	if _, err := GrantFor(ar, d, "gid", t0.Add(3*time.Minute)); code(err) != CodeStatementMismatch {
		t.Errorf("GrantFor after the agent changed = %v, want %s", err, CodeStatementMismatch)
	}
	d.Agent.ID = "agent-1"
	if _, err := GrantFor(ar, d, "gid", t0.Add(10*time.Minute)); code(err) != CodeWindowOver {
		t.Errorf("GrantFor after the signed window = %v, want %s", err, CodeWindowOver)
	}
}

// TestCoveringPermit: a permit stands in for customer approvals only
// when it is live, for the deployment, covers the scopes and the whole
// window, allows the duration, names the engineer's group if any, and has
// enough signers other than the engineer.
func TestCoveringPermit(t *testing.T) {
	mk := func(id string, edit func(*approval.Permit)) store.Permit {
		p := approval.Permit{ID: id, Deployment: "dep", Scopes: []string{"prometheus:read"}, MaxGrant: time.Hour,
			Windows: []approval.Window{{Start: t0.Add(-time.Hour), End: t0.Add(24 * time.Hour)}}}
		if edit != nil {
			edit(&p)
		}
		b, err := p.Canonical()
		if err != nil {
			t.Fatal(err)
		}
		return store.Permit{ID: id, Canonical: string(b), Proofs: []string{"p"}, Signers: []store.Person{acme1}}
	}
	d := store.DeploymentStatus{Deployment: store.Deployment{ID: "dep", Tenant: "acme", Name: "prod"}}
	scopes := []string{"prometheus:read"}
	for _, tt := range []struct {
		name   string
		permit store.Permit
		dur    time.Duration
		need   int
		groups []string
		want   bool
	}{
		{"covers", mk("p", nil), 30 * time.Minute, 1, nil, true},
		{"too long", mk("p", nil), 2 * time.Hour, 1, nil, false},
		{"another deployment", mk("p", func(p *approval.Permit) { p.Deployment = "other" }), 30 * time.Minute, 1, nil, false},
		{"another scope", mk("p", func(p *approval.Permit) { p.Scopes = []string{"clickhouse:system"} }), 30 * time.Minute, 1, nil, false},
		{"past its window's end", mk("p", func(p *approval.Permit) { p.Windows[0].End = t0.Add(10 * time.Minute) }), 30 * time.Minute, 1, nil, false},
		{"fewer signers than needed", mk("p", nil), 30 * time.Minute, 2, nil, false},
		{"not the engineer's group", mk("p", func(p *approval.Permit) { p.EngineerGroup = "sre" }), 30 * time.Minute, 1, []string{"engineers"}, false},
		{"the engineer's group", mk("p", func(p *approval.Permit) { p.EngineerGroup = "sre" }), 30 * time.Minute, 1, []string{"sre"}, true},
		{"revoked", func() store.Permit { p := mk("p", nil); p.RevokedAt = t0; return p }(), 30 * time.Minute, 1, nil, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d.Settings.Permits = []store.Permit{tt.permit}
			if _, got := CoveringPermit(d, engineer, tt.groups, scopes, tt.dur, tt.need, t0); got != tt.want {
				t.Errorf("CoveringPermit = %v, want %v", got, tt.want)
			}
		})
	}
	// The engineer's own signature does not count.
	p := mk("p", nil)
	p.Signers = []store.Person{engineer}
	d.Settings.Permits = []store.Permit{p}
	if _, ok := CoveringPermit(d, engineer, nil, scopes, 30*time.Minute, 1, t0); ok {
		t.Error("a permit signed by the engineer alone covers their request")
	}
}

// TestAgentApprovalsRaiseTheCount: the broker asks for as many customer
// approvals as the deployment's agent requires, even when the policy
// asked for fewer or none.
func TestAgentApprovalsRaiseTheCount(t *testing.T) {
	d := store.DeploymentStatus{Deployment: store.Deployment{ID: "dep", Tenant: "acme"}, Agent: &store.Agent{}}
	d.Agent.Last.Approval = &store.AgentApproval{Issuer: "https://acme", Required: 2}
	if got := agentApprovals(d, Create{}, []policy.Review{customer(1)}); len(got) != 1 || got[0].Count != 2 {
		t.Errorf("agentApprovals(1 asked) = %+v, want 2", got)
	}
	if got := agentApprovals(d, Create{}, []policy.Review{internal(1)}); len(got) != 2 || got[1].Role != names.ReviewApprover || got[1].Count != 2 || got[1].Tenant != "acme" {
		t.Errorf("agentApprovals(none asked) = %+v, want 2 of acme added", got)
	}
	if got := agentApprovals(d, Create{BreakGlass: true}, []policy.Review{internal(2)}); len(got) != 1 {
		t.Errorf("agentApprovals(break-glass) = %+v, want the policy's reviews", got)
	}
	d.Agent.Last.Approval = nil
	if got := agentApprovals(d, Create{}, []policy.Review{customer(1)}); got[0].Count != 1 {
		t.Errorf("agentApprovals(no authority) = %+v, want the policy's count", got)
	}
}
