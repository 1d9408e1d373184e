package broker_test

import (
	"context"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/brokertest"
	"github.com/tetherhq/tether/internal/devbroker"
)

// TestStandingPermit: a customer approver signs a permit at their own
// identity provider; requests it covers are granted at once under it,
// others wait for a per-request approval; only the tenant's approvers
// sign and revoke permits; a revoked permit covers nothing.
func TestStandingPermit(t *testing.T) {
	b := brokertest.Start(t, nil)
	b.Pair(t, "acme", "prod")
	ctx := context.Background()
	eng, admin := asUser(t, b, "engineer@vendor.test"), asUser(t, b, "admin@vendor.test")
	acme, globex := asUser(t, b, "approver@acme.test"), asUser(t, b, "approver@globex.test")
	now := time.Now()
	terms := brokerapi.PermitStatementBody{
		Scopes:   []string{"prometheus:read"},
		Windows:  []brokerapi.PermitWindow{{Start: now.Add(-time.Minute), End: now.Add(7 * 24 * time.Hour)}},
		MaxGrant: "1h",
	}

	// Vendor staff and other tenants cannot make one.
	_, err := admin.PermitStatementFor(ctx, "acme/prod", terms)
	wantAPIErr(t, "admin asks for a permit statement", err, http.StatusForbidden, "")
	_, err = globex.PermitStatementFor(ctx, "acme/prod", terms)
	wantAPIErr(t, "globex asks for acme's permit statement", err, http.StatusForbidden, "")

	ps, err := acme.PermitStatementFor(ctx, "acme/prod", terms)
	if err != nil {
		t.Fatal(err)
	}
	// A proof of other terms, or someone else's, is refused.
	other, _ := b.DevIdP().Token("acme", "approver@acme.test", devbroker.ClientID, "not-the-digest")
	_, err = acme.SignPermit(ctx, "acme/prod", brokerapi.SignPermitBody{Permit: ps.Permit, Proof: other})
	wantAPIErr(t, "a permit signed with another nonce", err, http.StatusForbidden, "nonce is not the digest")
	proof, err := b.DevIdP().Token("acme", "approver@acme.test", devbroker.ClientID, ps.Digest)
	if err != nil {
		t.Fatal(err)
	}
	_, err = globex.SignPermit(ctx, "acme/prod", brokerapi.SignPermitBody{Permit: ps.Permit, Proof: proof})
	wantAPIErr(t, "globex sends acme's signed permit", err, http.StatusForbidden, "")
	p, err := acme.SignPermit(ctx, "acme/prod", brokerapi.SignPermitBody{Permit: ps.Permit, Proof: proof})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(p.Signers, []string{"approver@acme.test"}) || p.MaxGrant != "1h0m0s" {
		t.Fatalf("signed permit = %+v", p)
	}
	if list, err := admin.Permits(ctx, "acme/prod"); err != nil || len(list) != 1 {
		t.Fatalf("admin lists permits = %+v, %v; want to read the one", list, err)
	}

	ask := func(scope, dur string) brokerapi.AccessRequest {
		t.Helper()
		ar, err := eng.CreateRequest(ctx, brokerapi.CreateAccessRequest{Deployment: "acme/prod", Scopes: []string{scope}, Duration: dur, Reason: "latency graphs"})
		if err != nil {
			t.Fatal(err)
		}
		return ar
	}
	// Covered: active at once, its grant under the permit.
	if ar := ask("prometheus:read", "30m"); ar.State != brokerapi.StateActive || ar.Grant == nil {
		t.Fatalf("a covered request = %s, want active at once", ar.State)
	}
	// Not covered: another scope, or longer than the permit allows.
	if ar := ask("clickhouse:system", "30m"); ar.State != brokerapi.StatePending {
		t.Errorf("a request for another scope = %s, want pending", ar.State)
	}
	if ar := ask("prometheus:read", "2h"); ar.State != brokerapi.StatePending {
		t.Errorf("a request longer than the permit allows = %s, want pending", ar.State)
	}
	// Only the customer revokes it; then it covers nothing.
	_, err = admin.RevokePermit(ctx, "acme/prod", p.ID)
	wantAPIErr(t, "admin revokes a permit", err, http.StatusForbidden, "")
	if _, err := acme.RevokePermit(ctx, "acme/prod", p.ID); err != nil {
		t.Fatal(err)
	}
	if ar := ask("prometheus:read", "30m"); ar.State != brokerapi.StatePending {
		t.Errorf("a request after the permit was revoked = %s, want pending", ar.State)
	}
	// Signing and revoking are in the audit log.
	rev := asUser(t, b, "reviewer@vendor.test")
	for _, typ := range []audit.Type{audit.PermitSigned, audit.PermitRevoked} {
		evs, err := rev.AuditSearch(ctx, brokerapi.AuditQuery{Type: string(typ)})
		if err != nil || len(evs) != 1 {
			t.Errorf("%s events = %d, %v; want 1", typ, len(evs), err)
		}
	}
}
