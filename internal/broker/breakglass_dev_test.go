package broker_test

import (
	"context"
	"strings"
	"testing"

	"github.com/tetherhq/tether/internal/broker"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/brokertest"
	"github.com/tetherhq/tether/internal/devbroker"
)

// noTickets is a dev preset without its ticket fixture: a broker with no
// ticket source at all.
type noTickets struct{ broker.DevEnv }

// TestBreakGlassDevTickets: a dev broker without GitHub verifies the
// tickets of its fixture, so the tour can show break-glass; a ticket it
// cannot verify is refused for that reason, not as one "not labelled
// sev1"; and a broker with no ticket source says so.
func TestBreakGlassDevTickets(t *testing.T) {
	ctx := context.Background()
	bg := func(ticket string) brokerapi.CreateAccessRequest {
		return brokerapi.CreateAccessRequest{Deployment: "acme/prod", Scopes: []string{"clickhouse:system"}, Duration: "45m", Reason: "outage", Ticket: ticket, BreakGlass: true}
	}
	t.Run("fixture", func(t *testing.T) {
		b := brokertest.Start(t, nil)
		b.Pair(t, "acme", "prod")
		eng, rev, adm := asUser(t, b, "engineer@vendor.test"), asUser(t, b, "reviewer@vendor.test"), asUser(t, b, "admin@vendor.test")
		ar, err := eng.CreateRequest(ctx, bg("tether/demo#1"))
		if err != nil {
			t.Fatalf("break-glass citing the fixture's sev1 ticket: %v", err)
		}
		if len(ar.Waiting) != 1 || !strings.Contains(ar.Waiting[0], "2 more approvals from vendor reviewers or admins") {
			t.Fatalf("break-glass request waits for %q, want two internal reviews", ar.Waiting)
		}
		if _, err := rev.Approve(ctx, ar.ID, "seen the pager"); err != nil {
			t.Fatal(err)
		}
		if ar, err = adm.Approve(ctx, ar.ID, ""); err != nil || ar.State != brokerapi.StateActive {
			t.Fatalf("second internal approval = %s, %v; want active", ar.State, err)
		}
		_, err = eng.CreateRequest(ctx, bg("tether/demo#2"))
		wantAPIErr(t, "break-glass on the fixture's sev3 ticket", err, 403, "is not: label it sev1")
		_, err = eng.CreateRequest(ctx, bg("acme/ops#7"))
		wantAPIErr(t, "break-glass on a ticket outside the fixture", err, 403, "cannot be verified: this dev broker has no GitHub and knows only the tickets of its fixture: tether/demo#1 (sev1)")
		if ae := apiErr(t, err); ae.Code != "breakglass_needs_sev1" || strings.Contains(ae.Message, "is not: label it") {
			t.Errorf("refusal = %s: %s, want breakglass_needs_sev1 naming the cause", ae.Code, ae.Message)
		}
		// Without break-glass a dev broker still takes any ticket.
		if _, err := eng.CreateRequest(ctx, brokerapi.CreateAccessRequest{Deployment: "acme/prod", Scopes: []string{"clickhouse:system"}, Duration: "30m", Reason: "r", Ticket: "acme/ops#7"}); err != nil {
			t.Errorf("a plain request citing a ticket outside the fixture: %v", err)
		}
	})
	t.Run("no source", func(t *testing.T) {
		env := devbroker.New(devbroker.Config{})
		b := brokertest.Start(t, func(c *broker.Config) { c.Dev = noTickets{env} })
		b.Dev = env // for asUser
		b.Pair(t, "acme", "prod")
		_, err := asUser(t, b, "engineer@vendor.test").CreateRequest(ctx, bg("tether/demo#1"))
		wantAPIErr(t, "break-glass with no ticket source", err, 403, `cannot be verified: no ticket source is configured: this broker has no "github" configuration`)
	})
}
