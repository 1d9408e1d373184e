package broker_test

import (
	"strings"
	"testing"

	"github.com/tetherhq/tether/internal/webtest"
)

// TestBrowserReviewer signs the vendor's reviewer in to the web console in
// a real browser, through the dev identity provider, and walks the audit
// pages as a person would: the Audit link, a search by event type from
// the filter form, a session replay from the search's request link that
// shows the query's SQL (escaped: the hostile SQL stays text), the
// verification page; the pages break none of their Content-Security-Policy.
func TestBrowserReviewer(t *testing.T) {
	f := newAuditFixture(t)
	tab := webtest.Browser(t)
	ui := f.b.APIURL() + "/ui/"

	webtest.Open(t, tab, ui, `a[href*="issuer=vendor"]`)
	webtest.ClickNavigate(t, tab, `a[href*="issuer=vendor"]`)
	webtest.ClickNavigate(t, tab, `button[name="email"][value="reviewer@vendor.test"]`)
	if text := webtest.Text(t, tab, "header"); !strings.Contains(text, "Signed in as reviewer@vendor.test") {
		t.Fatalf("after signing in the header says %q", text)
	}

	res := webtest.ClickNavigate(t, tab, `nav a[href="/ui/audit"]`)
	checkCSP(t, webtest.Header(res, "Content-Security-Policy"))
	webtest.Fill(t, tab, "#f-type", "query.allowed")
	webtest.ClickNavigate(t, tab, "#search")
	if loc := webtest.Location(t, tab); !strings.Contains(loc, "type=query.allowed") {
		t.Fatalf("the search form led to %s, want a search by type", loc)
	}
	if n, m := webtest.Count(t, tab, "#audit-events tbody tr"), webtest.Count(t, tab, `#audit-events tbody tr[data-type="query.allowed"]`); n != 2 || m != n {
		t.Fatalf("the search by type shows %d rows, %d of them query.allowed; want 2 (acme's and globex's queries), all query.allowed", n, m)
	}

	// acme's query's request link opens its session replay.
	webtest.ClickNavigate(t, tab, `#audit-events a.session[href$="/sessions/`+f.acmeReq+`"]`)
	webtest.WaitVisible(t, tab, "#session")
	sql := webtest.Text(t, tab, `#session li[data-type="query.allowed"] pre.statement`)
	if sql != hostileSQL {
		t.Errorf("the replay shows the query as %q, want %q", sql, hostileSQL)
	}
	if n := webtest.Count(t, tab, "script"); n != 0 {
		t.Errorf("the replay page holds %d <script> elements (the SQL's markup must stay text)", n)
	}
	if got := webtest.Text(t, tab, `#session li[data-type="query.finished"] dd.rows`); got != "3" {
		t.Errorf("the replay shows %q rows for the query, want 3", got)
	}
	if v := webtest.CSPViolations(t, tab); len(v) != 0 {
		t.Errorf("the replay breaks its Content-Security-Policy: %q", v)
	}

	webtest.Open(t, tab, f.b.APIURL()+"/ui/audit/verify", "#checkpoint-size")
	if n := webtest.Count(t, tab, "#witnesses tbody tr"); n != 2 {
		t.Errorf("the verification page lists %d witnesses, want 2", n)
	}
	if v := webtest.CSPViolations(t, tab); len(v) != 0 {
		t.Errorf("the verification page breaks its Content-Security-Policy: %q", v)
	}
}
