package broker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/broker"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/brokertest"
	"github.com/tetherhq/tether/internal/devbroker"
)

// putJSON sends body to the broker as token holder and returns the status
// and the error code of the answer.
func putJSON(t *testing.T, base, path, token, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	var e brokerapi.ErrorEnvelope
	json.Unmarshal(raw, &e)
	return res.StatusCode, e.Error.Code
}

// eventsOfType returns the events of type typ, oldest first, decoded.
func eventsOfType(t *testing.T, c *brokerapi.Client, typ audit.Type) []audit.Event {
	t.Helper()
	evs, err := c.AuditSearch(context.Background(), brokerapi.AuditQuery{Type: string(typ), Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var out []audit.Event
	for _, e := range evs {
		var ev audit.Event
		if err := json.Unmarshal(e.Event, &ev); err != nil {
			t.Fatal(err)
		}
		out = append(out, ev)
	}
	return out
}

// TestCustomerSettingsOwnership: freeze and maintenance windows are the
// customer's. An approver of acme declares a freeze and the policy then
// asks two approvals for access in it; a vendor admin — what a
// compromised vendor side holds — can read the freeze but lift it neither
// through the customer's route nor through the vendor's settings route; an
// approver of globex cannot touch acme's; every change and every refusal
// is in the audit log.
func TestCustomerSettingsOwnership(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b := brokertest.Start(t, func(c *broker.Config) { c.LifecycleInterval = 20 * time.Millisecond })
	b.Pair(t, "acme", "prod")
	if _, err := b.Client.CreateDeployment(ctx, brokerapi.CreateDeploymentRequest{Tenant: "globex", Name: "prod"}); err != nil {
		t.Fatal(err)
	}
	admin, acme, globex, eng := asUser(t, b, "admin@vendor.test"), asUser(t, b, "approver@acme.test"), asUser(t, b, "approver@globex.test"), asUser(t, b, "engineer@vendor.test")
	tokenOf := func(email string) string {
		t.Helper()
		tok, err := b.DevIdP().Token(brokertest.IssuerOf(email), email, devbroker.ClientID, "")
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	ask := brokerapi.CreateAccessRequest{Deployment: "acme/prod", Scopes: []string{"clickhouse:system"}, Duration: "30m", Reason: "customer settings"}
	approvalsNeeded := func(what string) int {
		t.Helper()
		ar, err := eng.CreateRequest(ctx, ask)
		if err != nil {
			t.Fatalf("%s: create request: %v", what, err)
		}
		for _, r := range ar.Decision.RequiredReviews {
			if r.Tenant == "acme" && r.Role == "approver" {
				return r.Count
			}
		}
		t.Fatalf("%s: decision %+v asks no approver of acme", what, ar.Decision)
		return 0
	}
	if n := approvalsNeeded("before the freeze"); n != 1 {
		t.Fatalf("before the freeze the policy asks %d approvals of acme, want 1", n)
	}

	// The customer declares a freeze.
	cs, err := acme.CustomerSettings(ctx, "acme/prod")
	if err != nil {
		t.Fatal(err)
	}
	v0 := cs.Version
	now := time.Now().UTC().Truncate(time.Second)
	freeze := brokerapi.Window{Start: now.Add(-time.Minute), End: now.Add(time.Hour), Reason: "quarter end"}
	cs.FreezeWindows = []brokerapi.Window{freeze}
	cs, err = acme.SetCustomerSettings(ctx, "acme/prod", cs)
	if err != nil {
		t.Fatalf("acme's approver sets a freeze: %v", err)
	}
	if cs.Version == v0 || len(cs.FreezeWindows) != 1 {
		t.Fatalf("after the freeze: %+v (version was %s), want the window and a new version", cs, v0)
	}
	if n := approvalsNeeded("in the freeze"); n != 2 {
		t.Errorf("in acme's freeze the policy asks %d approvals of acme, want 2", n)
	}

	// Vendor staff read it.
	d, err := admin.GetDeployment(ctx, "acme/prod")
	if err != nil || len(d.Settings.FreezeWindows) != 1 || d.Settings.FreezeWindows[0].Reason != "quarter end" {
		t.Errorf("admin's view of acme/prod: %+v, %v; want the customer's freeze", d.Settings, err)
	}
	if got, err := eng.CustomerSettings(ctx, "acme/prod"); err != nil || got.Version != cs.Version {
		t.Errorf("engineer reads the customer settings: %+v, %v; want version %s", got, err, cs.Version)
	}

	// A vendor admin cannot lift it: not on the customer's route ...
	lift := cs
	lift.FreezeWindows = nil
	_, err = admin.SetCustomerSettings(ctx, "acme/prod", lift)
	wantAPIErr(t, "admin lifts the freeze on the customer's route", err, 403, "customer's to set")
	// ... nor on the vendor's, by clearing it or by changing it ...
	adminTok := tokenOf("admin@vendor.test")
	for _, body := range []string{
		`{"freeze_windows":[]}`,
		`{"labels":{"env":"prod"},"freeze_windows":[{"start":"` + now.Add(-time.Hour).Format(time.RFC3339) + `","end":"` + now.Add(-time.Minute).Format(time.RFC3339) + `"}]}`,
		`{"maintenance_windows":[{"start":"2030-01-01T00:00:00Z","end":"2030-01-02T00:00:00Z"}]}`,
	} {
		if status, code := putJSON(t, b.APIURL(), "/api/v1/deployments/acme/prod/settings", adminTok, body); status != 403 || code != "customer_owned" {
			t.Errorf("admin PUT settings %s = %d %s, want 403 customer_owned", body, status, code)
		}
	}
	_, err = admin.SetDeploymentSettings(ctx, "acme/prod", brokerapi.DeploymentSettings{FreezeWindows: []brokerapi.Window{{Start: now, End: now.Add(time.Minute)}}})
	wantAPIErr(t, "admin replaces the freeze on the vendor's route", err, 403, "are the customer's to set")
	// ... while vendor settings still change there, keeping the freeze:
	// a body without windows, and one with the stored windows (an older
	// CLI's read-modify-write).
	if _, err := admin.SetDeploymentSettings(ctx, "acme/prod", brokerapi.DeploymentSettings{Labels: map[string]string{"env": "prod"}}); err != nil {
		t.Fatalf("admin sets labels: %v", err)
	}
	d, err = admin.GetDeployment(ctx, "acme/prod")
	if err != nil {
		t.Fatal(err)
	}
	s := d.Settings
	s.Labels["tier"] = "gold"
	if _, err := admin.SetDeploymentSettings(ctx, "acme/prod", s); err != nil {
		t.Fatalf("admin sets labels, sending the stored windows back: %v", err)
	}
	if after, err := acme.CustomerSettings(ctx, "acme/prod"); err != nil || after.Version != cs.Version {
		t.Errorf("after the admin's changes the customer settings are %+v, %v; want them unchanged (version %s)", after, err, cs.Version)
	}
	if n := approvalsNeeded("after the admin's attempts"); n != 2 {
		t.Errorf("after the admin's attempts the policy asks %d approvals of acme, want 2 (the freeze stands)", n)
	}

	// Another tenant's approver cannot touch acme's, nor read them.
	_, err = globex.SetCustomerSettings(ctx, "acme/prod", lift)
	wantAPIErr(t, "globex's approver lifts acme's freeze", err, 403, "may not act on tenant acme")
	_, err = globex.CustomerSettings(ctx, "acme/prod")
	wantAPIErr(t, "globex's approver reads acme's settings", err, 403, "may not act on tenant acme")

	// A write based on an old read changes nothing.
	stale := lift
	stale.Version = v0
	_, err = acme.SetCustomerSettings(ctx, "acme/prod", stale)
	wantAPIErr(t, "a write from a stale read", err, 409, "changed since you read them")

	// The audit log: the customer's change with before and after, and
	// each refusal with who tried.
	var changed *audit.Event
	for _, e := range eventsOfType(t, admin, audit.DeploymentSettingsChanged) {
		if e.Details["owner"] == "customer" {
			changed = &e
		}
	}
	if changed == nil {
		t.Fatal("no deployment.settings_changed event of the customer's change")
	}
	if changed.Actor.Subject != "approver@acme.test" || changed.Actor.Tenant != "acme" || changed.Deployment != d.ID {
		t.Errorf("settings_changed actor %+v on %s, want approver@acme.test of acme on %s", changed.Actor, changed.Deployment, d.ID)
	}
	before, _ := json.Marshal(changed.Details["before"])
	after, _ := json.Marshal(changed.Details["after"])
	if !strings.Contains(string(before), `"freeze_windows":[]`) || !strings.Contains(string(after), "quarter end") {
		t.Errorf("settings_changed details before=%s after=%s, want no freeze before and the quarter-end freeze after", before, after)
	}
	refused := map[string]bool{}
	for _, e := range eventsOfType(t, admin, audit.AuthFailed) {
		path, _ := e.Details["path"].(string)
		refused[fmt.Sprintf("%s %s %s", e.Actor.Subject, e.Reason, path)] = true
	}
	for _, want := range []string{
		"admin@vendor.test forbidden /api/v1/deployments/acme/prod/customer-settings",
		"admin@vendor.test customer_owned /api/v1/deployments/acme/prod/settings",
		"approver@globex.test wrong_tenant /api/v1/deployments/acme/prod/customer-settings",
	} {
		if !refused[want] {
			t.Errorf("no auth.failed event %q; have %v", want, refused)
		}
	}
}

// TestCustomerSettingsConcurrentEdits: approvers adding windows at the
// same time each keep their window — a read-modify-write loses none.
func TestCustomerSettingsConcurrentEdits(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := brokertest.Start(t, nil)
	if _, err := b.Client.CreateDeployment(ctx, brokerapi.CreateDeploymentRequest{Tenant: "acme", Name: "prod"}); err != nil {
		t.Fatal(err)
	}
	acme := asUser(t, b, "approver@acme.test")
	start := time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)
	const writers = 4 // each loses at most writers-1 times: within the client's 5 attempts
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for i := range writers {
		wg.Go(func() {
			_, err := acme.UpdateCustomerSettings(ctx, "acme/prod", func(s *brokerapi.CustomerSettings) error {
				w := brokerapi.Window{Start: start.Add(time.Duration(i) * 24 * time.Hour), End: start.Add(time.Duration(i)*24*time.Hour + time.Hour), Reason: fmt.Sprint("writer ", i)}
				s.MaintenanceWindows = append(s.MaintenanceWindows, w)
				return nil
			})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent update: %v", err)
		}
	}
	cs, err := acme.CustomerSettings(ctx, "acme/prod")
	if err != nil {
		t.Fatal(err)
	}
	if len(cs.MaintenanceWindows) != writers {
		t.Errorf("after %d concurrent additions the deployment has %d maintenance windows: %+v", writers, len(cs.MaintenanceWindows), cs.MaintenanceWindows)
	}
}
