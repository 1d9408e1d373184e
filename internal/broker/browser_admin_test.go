package broker_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/brokertest"
	"github.com/tetherhq/tether/internal/webtest"
)

// TestBrowserAdmin signs the vendor's admin in to the web console in a
// real browser, through the dev identity provider, and walks the admin's
// pages: every tenant's deployments with their agents' status (acme's
// agent online, globex's unpaired), a deployment's page, and a new
// pairing token shown once with how to pair the agent — without breaking
// the pages' Content-Security-Policy.
func TestBrowserAdmin(t *testing.T) {
	b := brokertest.Start(t, nil)
	b.Pair(t, "acme", "prod")
	if _, err := b.Client.CreateDeployment(t.Context(), brokerapi.CreateDeploymentRequest{Tenant: "globex", Name: "payroll"}); err != nil {
		t.Fatal(err)
	}
	tab := webtest.Browser(t)
	ui := b.APIURL() + "/ui/"

	webtest.Open(t, tab, ui, `a[href*="issuer=vendor"]`)
	webtest.ClickNavigate(t, tab, `a[href*="issuer=vendor"]`)
	webtest.ClickNavigate(t, tab, `button[name=email][value="admin@vendor.test"]`)
	if text := webtest.Text(t, tab, "body"); !strings.Contains(text, "Signed in as admin@vendor.test") {
		t.Fatalf("after signing in the page says %q", text)
	}

	// The navigation leads to the deployments and agents.
	res := webtest.ClickNavigate(t, tab, `nav a[href="/ui/deployments"]`)
	if res.Status != http.StatusOK {
		t.Fatalf("/ui/deployments answered %d", res.Status)
	}
	checkCSP(t, webtest.Header(res, "Content-Security-Policy"))
	if got := webtest.Text(t, tab, `tr[data-deployment="acme/prod"] .agent-status`); got != "online" {
		t.Errorf("acme/prod's agent shows %q, want online", got)
	}
	if got := webtest.Text(t, tab, `tr[data-deployment="globex/payroll"] .agent-status`); got != "unpaired" {
		t.Errorf("globex/payroll's agent shows %q, want unpaired", got)
	}
	if row := webtest.Text(t, tab, `tr[data-deployment="acme/prod"]`); !strings.Contains(row, "ago") || !strings.Contains(row, "customer approval") {
		t.Errorf("acme/prod's row %q lacks when the agent was last seen or its customer-approval stance", row)
	}
	if v := webtest.CSPViolations(t, tab); len(v) != 0 {
		t.Errorf("the deployments page breaks its Content-Security-Policy: %q", v)
	}

	webtest.ClickNavigate(t, tab, `a[href="/ui/deployments/acme/prod"]`)
	if got := webtest.Text(t, tab, "#agent-status"); got != "online" {
		t.Errorf("the deployment page says the agent is %q, want online", got)
	}
	res = webtest.ClickNavigate(t, tab, "#new-pairing-token")
	if res.Status != http.StatusCreated {
		t.Errorf("new pairing token answered %d, want 201", res.Status)
	}
	if tok := webtest.Text(t, tab, "#pairing-token"); len(tok) < 20 {
		t.Errorf("pairing token %q, want a token", tok)
	}
	if hint := webtest.Text(t, tab, "#agent-run"); !strings.Contains(hint, "agent run --join JOIN.json --pairing-token file:TOKEN_FILE") {
		t.Errorf("the token page's hint is %q, want the agent run command", hint)
	}
	if v := webtest.CSPViolations(t, tab); len(v) != 0 {
		t.Errorf("the admin's pages break their Content-Security-Policy: %q", v)
	}
	if n := webtest.Count(t, tab, "script:not([src])"); n != 0 {
		t.Errorf("the token page has %d inline scripts", n)
	}
}
