package broker_test

import (
	"context"
	"strings"
	"testing"

	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/webtest"
)

// TestBrowserQueryRange is the console's PromQL range query in a real
// browser: the engineer fills start, end and step, sees the matrix as a
// table of the series' labels and samples with the form refilled, is told
// on the page what to change for a range the agent would refuse, sees
// SQL with its own FORMAT as ClickHouse answered it, and follows the
// request page's session-replay link nowhere (an engineer has none); the
// pages break none of their CSP.
func TestBrowserQueryRange(t *testing.T) {
	d := startDataPlane(t)
	b := d.b
	ar, err := asUser(t, b, "engineer@vendor.test").CreateRequest(context.Background(), brokerapi.CreateAccessRequest{
		Deployment: "acme/prod", Scopes: []string{"clickhouse:system", "prometheus:read"}, Duration: "1h", Reason: "metrics over the night"})
	if err != nil {
		t.Fatal(err)
	}
	if ar, err = asUser(t, b, "approver@acme.test").Approve(context.Background(), ar.ID, "ok"); err != nil || ar.State != brokerapi.StateActive {
		t.Fatalf("approve = %s, %v", ar.State, err)
	}
	tab := webtest.Browser(t)
	ui := b.APIURL() + "/ui/"
	webtest.Open(t, tab, ui, `a[href*="issuer=vendor"]`)
	webtest.ClickNavigate(t, tab, `a[href*="issuer=vendor"]`)
	webtest.ClickNavigate(t, tab, `button[name="email"][value="engineer@vendor.test"]`)

	webtest.Open(t, tab, ui+"requests/"+ar.ID, "#state")
	if n := webtest.Count(t, tab, "#replay-link"); n != 0 {
		t.Errorf("the engineer's request page links a session replay the engineer may not open")
	}

	webtest.Open(t, tab, ui+"deployments/acme/prod/query", "#query-prometheus")
	if n := webtest.Count(t, tab, "#starts-prometheus option"); n != 3 {
		t.Errorf("the start field suggests %d durations, want 1h, 6h and 24h", n)
	}
	webtest.Fill(t, tab, "#text-prometheus", `label_replace(vector(3), "job", "<b>night</b>", "", "")`)
	webtest.Fill(t, tab, "#start-prometheus", "2026-01-01T00:00:00Z")
	webtest.Fill(t, tab, "#end-prometheus", "2026-01-01T00:02:00Z")
	webtest.Fill(t, tab, "#step-prometheus", "30s")
	webtest.ClickNavigate(t, tab, "#run-prometheus")
	if labels := webtest.Text(t, tab, "#result-matrix .series-labels th"); labels != `{job="<b>night</b>"}` {
		t.Errorf("the series reads %q, want its labels as text", labels)
	}
	if n := webtest.Count(t, tab, "#result-matrix tbody tr:not(.series-labels)"); n != 5 {
		t.Errorf("the matrix shows %d samples, want 5 (00:00 to 00:02 every 30s)", n)
	}
	if first := webtest.Text(t, tab, "#result-matrix tbody tr:nth-child(2) td"); first != "2026-01-01T00:00:00Z" {
		t.Errorf("the first sample is at %q, want 2026-01-01T00:00:00Z", first)
	}
	if v := webtest.Attr(t, tab, "#step-prometheus", "value"); v != "30s" {
		t.Errorf("the step field reads %q after the query, want 30s", v)
	}
	checkPageScripts(t, tab, "range query page")

	webtest.Fill(t, tab, "#step-prometheus", "1s")
	webtest.Fill(t, tab, "#end-prometheus", "2026-01-02T00:00:00Z")
	webtest.ClickNavigate(t, tab, "#run-prometheus")
	if msg := webtest.Text(t, tab, "#query-error-reason"); !strings.Contains(msg, "raise step to at least") {
		t.Errorf("a range of too many points says %q, want what to change", msg)
	}

	webtest.Fill(t, tab, "#text-clickhouse", "SELECT 'x<y' AS s FORMAT CSV")
	webtest.ClickNavigate(t, tab, "#run-clickhouse")
	if raw := webtest.Text(t, tab, "#result-raw"); strings.TrimSpace(raw) != `"x<y"` {
		t.Errorf("FORMAT CSV shows %q, want ClickHouse's CSV as text", raw)
	}
	if n := webtest.Count(t, tab, "#row-count"); n != 0 {
		t.Error("FORMAT CSV shows a row count it does not know")
	}
	checkPageScripts(t, tab, "query page")
}
