package broker_test

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/webtest"
)

// TestBrowserEngineer is the engineer's part of the console in a real
// browser: sign in through the dev identity provider, ask for access with
// the form, watch the request's page turn active without a reload when
// acme's approver approves through the API (the page's own script
// long-polls its status), then query ClickHouse's system tables through
// the grant and see the table; the pages break none of their CSP and
// hold no inline script.
func TestBrowserEngineer(t *testing.T) {
	d := startDataPlane(t)
	b := d.b
	tab := webtest.Browser(t)
	ui := b.APIURL() + "/ui/"

	webtest.Open(t, tab, ui, `a[href*="issuer=vendor"]`)
	webtest.ClickNavigate(t, tab, `a[href*="issuer=vendor"]`)
	webtest.ClickNavigate(t, tab, `button[name="email"][value="engineer@vendor.test"]`)
	if text := webtest.Text(t, tab, "body"); !strings.Contains(text, "Signed in as engineer@vendor.test") {
		t.Fatalf("after signing in the page says %q", text)
	}

	webtest.Open(t, tab, ui+"request", "#request-form")
	webtest.Fill(t, tab, "#deployment", "acme/prod")
	webtest.Click(t, tab, `input[name="scope"][value="clickhouse:system"]`)
	webtest.Fill(t, tab, "#duration", "30m")
	webtest.Fill(t, tab, "#reason", "merges are slow on prod")
	webtest.ClickNavigate(t, tab, "#submit-request")
	m := regexp.MustCompile(`/ui/requests/([0-9a-f-]{36})\?done=requested$`).FindStringSubmatch(webtest.Location(t, tab))
	if m == nil {
		t.Fatalf("after the form the browser is at %s, want the new request's page", webtest.Location(t, tab))
	}
	id := m[1]
	if s := webtest.Text(t, tab, "#state"); s != "pending" {
		t.Fatalf("the new request's state reads %q, want pending", s)
	}
	if w := webtest.Text(t, tab, "#waiting"); !strings.Contains(w, "approver of tenant acme") {
		t.Errorf("#waiting reads %q, want what the request waits for", w)
	}
	// A mark on this page's window: a reload would lose it.
	webtest.Eval[bool](t, tab, `(window.__noReload = true)`)

	approved := time.Now()
	ar, err := asUser(t, b, "approver@acme.test").Approve(context.Background(), id, "ok")
	if err != nil || ar.State != brokerapi.StateActive {
		t.Fatalf("approve through the API = %s, %v", ar.State, err)
	}
	webtest.WaitVisible(t, tab, "#state.state-active")
	t.Logf("the page showed active %s after the approval", time.Since(approved).Round(time.Millisecond))
	if !webtest.Eval[bool](t, tab, `window.__noReload === true`) {
		t.Error("the page reloaded to show the new state; want it updated in place")
	}
	if s, w := webtest.Text(t, tab, "#state"), webtest.Text(t, tab, "#waiting"); s != "active" || w != "" {
		t.Errorf("after the approval #state reads %q and #waiting %q, want active and nothing", s, w)
	}
	webtest.WaitVisible(t, tab, "#changed")
	checkPageScripts(t, tab, "request page")

	webtest.Open(t, tab, ui+"grants", "#grants")
	webtest.ClickNavigate(t, tab, `tr[data-request="`+id+`"] a.query-link`)
	webtest.Fill(t, tab, "#text-clickhouse", "SELECT name FROM system.tables WHERE database = 'system' AND name IN ('numbers', 'one', 'tables') ORDER BY name")
	webtest.ClickNavigate(t, tab, "#run-clickhouse")
	if n, rows := webtest.Count(t, tab, "#result-table tbody tr"), webtest.Text(t, tab, "#row-count"); n != 3 || rows != "3" {
		t.Errorf("the query shows %d table rows and says %q rows, want 3", n, rows)
	}
	if cell := webtest.Text(t, tab, "#result-table tbody tr:first-child td"); cell != "numbers" {
		t.Errorf("first cell %q, want numbers", cell)
	}
	webtest.Fill(t, tab, "#text-clickhouse", "SELECT * FROM default.secret")
	webtest.ClickNavigate(t, tab, "#run-clickhouse")
	if reason := webtest.Text(t, tab, "#refused-reason"); !strings.Contains(reason, "default.secret is not a system table") || strings.Contains(webtest.Text(t, tab, "body"), canary) {
		t.Errorf("default.secret: the page says %q, want the guard's reason", reason)
	}
	checkPageScripts(t, tab, "query page")
}

// checkPageScripts fails if the page in tab has inline script or broke
// its CSP.
func checkPageScripts(t *testing.T, tab context.Context, what string) {
	t.Helper()
	if n := webtest.Count(t, tab, "script:not([src])"); n != 0 {
		t.Errorf("%s has %d inline <script> elements", what, n)
	}
	if v := webtest.CSPViolations(t, tab); len(v) != 0 {
		t.Errorf("%s breaks its Content-Security-Policy: %q", what, v)
	}
}
