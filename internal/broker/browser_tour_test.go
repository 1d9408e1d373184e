package broker_test

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/brokertest"
	"github.com/tetherhq/tether/internal/weblogin"
	"github.com/tetherhq/tether/internal/webtest"
)

// screenshotsEnv names the environment variable holding a directory where
// TestBrowserTour saves a named screenshot of each step of the tour, at a
// laptop's viewport (docs/screenshots holds the README's).
const screenshotsEnv = "TETHER_SCREENSHOTS"

// TestBrowserTour is the whole three-role tour of the web console in one
// real browser, each person in a browser context of their own (their own
// cookies), against a broker with an agent guarding a real ClickHouse:
//
//  1. the engineer asks for access with the form;
//  2. acme's approver approves from the inbox, signing at acme's identity
//     provider in the browser;
//  3. globex's approver does not see the request in their inbox and is
//     refused its page (wrong_tenant);
//  4. the engineer's page turns active without a reload; the engineer's
//     console runs a system-table query and shows the table, and refuses
//     default.secret with the guard's reason;
//  5. the approver revokes the grant while the engineer's console runs a
//     long query in another tab, and that query is shown stopped by the
//     revocation;
//  6. the vendor's reviewer replays the session: the queries' SQL, the
//     refusal, the revocation.
//
// Plus a forged approval POST from the engineer's session, refused with
// and without a CSRF token, and no CSP violation in any tab after each
// step.
func TestBrowserTour(t *testing.T) {
	start := time.Now()
	d := startDataPlane(t)
	b := d.b
	ctx := context.Background()
	base := b.APIURL()
	ui := base + "/ui/"
	t.Logf("broker, agent, ClickHouse and Prometheus up in %s", time.Since(start).Round(time.Millisecond))

	shots := os.Getenv(screenshotsEnv)
	if shots != "" {
		if err := os.MkdirAll(shots, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	shot := func(tab context.Context, name string) {
		t.Helper()
		if shots != "" {
			webtest.Screenshot(t, tab, filepath.Join(shots, name+".png"))
		}
	}

	browserStart := time.Now()
	engineer := webtest.Browser(t)
	acme := webtest.Person(t, engineer)
	globex := webtest.Person(t, engineer)
	reviewer := webtest.Person(t, engineer)
	tabs := map[string]context.Context{"engineer": engineer, "acme's approver": acme, "globex's approver": globex, "reviewer": reviewer}
	t.Logf("browser with four people up in %s", time.Since(browserStart).Round(time.Millisecond))

	signIn := func(tab context.Context, issuer, email string) {
		t.Helper()
		webtest.Open(t, tab, ui, `a[href*="issuer=`+issuer+`"]`)
		webtest.ClickNavigate(t, tab, `a[href*="issuer=`+issuer+`"]`)
		webtest.ClickNavigate(t, tab, `button[name="email"][value="`+email+`"]`)
		if text := webtest.Text(t, tab, "header"); !strings.Contains(text, "Signed in as "+email) {
			t.Fatalf("after signing in as %s the header says %q", email, text)
		}
	}
	// noViolations checks, at the end of each step, every tab's page for
	// inline script and for anything its CSP refused.
	noViolations := func(step string) {
		t.Helper()
		for who, tab := range tabs {
			if n := webtest.Count(t, tab, "script:not([src])"); n != 0 {
				t.Errorf("%s: %s's page has %d inline <script> elements", step, who, n)
			}
			if v := webtest.CSPViolations(t, tab); len(v) != 0 {
				t.Errorf("%s: %s's page at %s breaks its Content-Security-Policy: %q", step, who, webtest.Location(t, tab), v)
			}
		}
	}
	signIn(engineer, "vendor", "engineer@vendor.test")
	signIn(acme, "acme", "approver@acme.test")
	signIn(globex, "globex", "approver@globex.test")
	signIn(reviewer, "vendor", "reviewer@vendor.test")
	// Four cookie jars: each person's session is their own.
	sessions := map[string]bool{}
	for who, tab := range tabs {
		s := webtest.Cookie(t, tab, weblogin.SessionCookie)
		if s == "" || sessions[s] {
			t.Fatalf("%s's browser context holds session %q, want one of its own", who, s)
		}
		sessions[s] = true
	}

	// 1. The engineer asks for access with the form.
	const reason = "merges are slow on prod (INC-4711)"
	webtest.Open(t, engineer, ui+"request", "#request-form")
	webtest.Fill(t, engineer, "#deployment", "acme/prod")
	webtest.Click(t, engineer, `input[name="scope"][value="clickhouse:system"]`)
	webtest.Fill(t, engineer, "#duration", "30m")
	webtest.Fill(t, engineer, "#reason", reason)
	webtest.ClickNavigate(t, engineer, "#submit-request")
	m := regexp.MustCompile(`/ui/requests/([0-9a-f-]{36})\?done=requested$`).FindStringSubmatch(webtest.Location(t, engineer))
	if m == nil {
		t.Fatalf("after the form the engineer is at %s, want the new request's page", webtest.Location(t, engineer))
	}
	id := m[1]
	page := "/ui/requests/" + id
	if s := webtest.Text(t, engineer, "#state"); s != "pending" {
		t.Fatalf("the new request reads %q, want pending", s)
	}
	// A mark on this page's window: a reload would lose it.
	webtest.Eval[bool](t, engineer, `(window.__noReload = true)`)
	noViolations("1. request")

	// CSRF: the engineer's session posts an approval to the approver's
	// form path, as a forged cross-site form (no token) would and with the
	// engineer's own token; both are refused and the request stays pending.
	t.Run("forged approval", func(t *testing.T) {
		session := webtest.Cookie(t, engineer, weblogin.SessionCookie)
		token := webtest.Attr(t, engineer, `form[action="/auth/logout"] input[name="csrf"]`, "value")
		if len(token) < 16 {
			t.Fatalf("the engineer's page carries CSRF token %q", token)
		}
		for _, c := range []struct {
			name string
			form url.Values
			code string
		}{
			{"without a token", url.Values{"duration": {"30m"}, "scope": {"clickhouse:system"}}, "csrf_invalid"},
			{"with a forged token", url.Values{"csrf": {token + "x"}, "duration": {"30m"}, "scope": {"clickhouse:system"}}, "csrf_invalid"},
			{"with the engineer's own token", url.Values{"csrf": {token}, "duration": {"30m"}, "scope": {"clickhouse:system"}}, "forbidden"},
		} {
			status, body := postForm(t, base+page+"/approve", session, c.form)
			if status != http.StatusForbidden || !strings.Contains(body, `data-code="`+c.code+`"`) {
				t.Errorf("approve %s from the engineer's session = %d, want 403 %s: %.300s", c.name, status, c.code, body)
			}
		}
		if ar, err := asUser(t, b, "engineer@vendor.test").GetRequest(ctx, id); err != nil || ar.State != brokerapi.StatePending {
			t.Fatalf("after the forged approvals the request is %v (%v), want pending", ar.State, err)
		}
	})

	// 2. acme's approver approves from the inbox, signing in the browser.
	webtest.Open(t, acme, ui+"inbox", `#inbox tr[data-request="`+id+`"]`)
	if row := webtest.Text(t, acme, `#inbox tr[data-request="`+id+`"]`); !strings.Contains(row, "engineer@vendor.test") || !strings.Contains(row, "INC-4711") {
		t.Errorf("acme's inbox row reads %q, want the engineer and the reason", row)
	}
	shot(acme, "inbox")

	// 3. globex's approver sees nothing of it: not in their inbox while
	// it waits in acme's, and its page refused (before and after the
	// approval).
	globexRefused := func(when string) {
		t.Helper()
		webtest.Open(t, globex, base+page, "#main")
		if n := webtest.Count(t, globex, `#error[data-code="wrong_tenant"]`); n != 1 {
			t.Errorf("globex's approver opening acme's request %s: want #error[data-code=wrong_tenant], the page reads %q", when, webtest.Text(t, globex, "#main"))
		}
		if text := webtest.Text(t, globex, "#main"); strings.Contains(text, reason) || strings.Contains(text, "engineer@vendor.test") {
			t.Errorf("the refusal %s shows the request: %q", when, text)
		}
	}
	webtest.Open(t, globex, ui+"inbox", "#main")
	if n := webtest.Count(t, globex, `[data-request="`+id+`"]`); n != 0 || strings.Contains(webtest.Text(t, globex, "#main"), "engineer@vendor.test") {
		t.Errorf("globex's inbox shows acme's pending request: %q", webtest.Text(t, globex, "#main"))
	}
	globexRefused("while pending")
	webtest.ClickNavigate(t, acme, `#inbox tr[data-request="`+id+`"] a[href="`+page+`"]`)
	webtest.Fill(t, acme, "#approve-comment", "ok for INC-4711")
	if label := webtest.Text(t, acme, "#approve"); label != "Review and sign" {
		t.Errorf("the approve button reads %q, want Review and sign", label)
	}
	webtest.ClickNavigate(t, acme, "#approve")
	webtest.WaitVisible(t, acme, "a#sign")
	if st := webtest.Text(t, acme, "#statement"); !strings.Contains(st, "engineer@vendor.test") || !strings.Contains(st, "acme/prod") || len(webtest.Text(t, acme, "#digest")) < 32 {
		t.Errorf("the sign page's statement reads %q, want the engineer, the deployment and a digest", st)
	}
	shot(acme, "sign")
	webtest.ClickNavigate(t, acme, "a#sign")
	if loc := webtest.Location(t, acme); !strings.Contains(loc, "/dev/idp/acme/authorize") {
		t.Fatalf("the sign link led to %s, want acme's identity provider", loc)
	}
	webtest.ClickNavigate(t, acme, `button[name="email"][value="approver@acme.test"]`)
	if loc := webtest.Location(t, acme); !strings.HasSuffix(loc, page+"?done=approved") {
		t.Fatalf("after signing acme's approver is at %s, want the request's page", loc)
	}
	if s, n := webtest.Text(t, acme, "#state"), webtest.Text(t, acme, "#notice"); s != "active" || !strings.Contains(n, "Your approval is recorded.") {
		t.Errorf("after signing the page reads state %q, notice %q", s, n)
	}
	noViolations("2. approve")
	globexRefused("once approved")
	noViolations("3. isolation")

	// 4. The engineer's page turned active in place; the console queries.
	webtest.WaitVisible(t, engineer, "#state.state-active")
	if !webtest.Eval[bool](t, engineer, `window.__noReload === true`) {
		t.Error("the engineer's page reloaded to show the new state; want it updated in place")
	}
	shot(engineer, "request-active")
	webtest.Open(t, engineer, ui+"grants", "#grants")
	webtest.ClickNavigate(t, engineer, `tr[data-request="`+id+`"] a.query-link`)
	const tablesSQL = "SELECT name, engine FROM system.tables WHERE database = 'system' AND name IN ('numbers', 'one', 'tables') ORDER BY name"
	webtest.Fill(t, engineer, "#text-clickhouse", tablesSQL)
	webtest.ClickNavigate(t, engineer, "#run-clickhouse")
	if n, rows := webtest.Count(t, engineer, "#result-table tbody tr"), webtest.Text(t, engineer, "#row-count"); n != 3 || rows != "3" {
		t.Errorf("the query shows %d table rows and says %q rows, want 3", n, rows)
	}
	if cell := webtest.Text(t, engineer, "#result-table tbody tr:first-child td"); cell != "numbers" {
		t.Errorf("first cell %q, want numbers", cell)
	}
	shot(engineer, "query-table")
	const secretSQL = "SELECT * FROM default.secret"
	webtest.Fill(t, engineer, "#text-clickhouse", secretSQL)
	webtest.ClickNavigate(t, engineer, "#run-clickhouse")
	webtest.WaitVisible(t, engineer, "#refused")
	if r := webtest.Text(t, engineer, "#refused-reason"); !strings.Contains(r, "default.secret is not a system table") {
		t.Errorf("default.secret: the console says %q, want the guard's reason", r)
	}
	if off := webtest.Text(t, engineer, "#refused-offset"); off != "14" {
		t.Errorf("default.secret: the console marks offset %q, want 14 (where the table is named)", off)
	}
	if strings.Contains(webtest.Text(t, engineer, "body"), canary) || webtest.Count(t, engineer, "#result-table") != 0 {
		t.Error("default.secret: the console shows a result")
	}
	shot(engineer, "query-refused")
	noViolations("4. console")

	// 5. A long query in the engineer's second tab; the approver revokes.
	gid := grantOf(t, b, id)
	running := webtest.Tab(t, engineer)
	tabs["engineer's second tab"] = running
	webtest.Open(t, running, base+queryPathOf("acme", "prod"), "#text-clickhouse")
	// count() over an endless table: ClickHouse answers nothing until
	// it is stopped (or its 60 s limit).
	const longSQL = "SELECT count() FROM system.numbers"
	webtest.Fill(t, running, "#text-clickhouse", longSQL)
	webtest.Click(t, running, "#run-clickhouse")
	deadline := time.Now().Add(15 * time.Second)
	for strings.TrimSpace(d.ch.Exec(t, "SELECT count() FROM system.processes WHERE query_id LIKE 'tether-"+gid+"-%'")) == "0" {
		if time.Now().After(deadline) {
			t.Fatal("the console's long query never showed in ClickHouse's system.processes")
		}
		time.Sleep(20 * time.Millisecond) // polling ClickHouse's observable state
	}
	const revokeReason = "INC-4711 closed"
	webtest.Open(t, acme, base+page, "#revoke-form")
	webtest.Fill(t, acme, "#revoke-reason", revokeReason)
	revoked := time.Now()
	webtest.ClickNavigate(t, acme, "#revoke")
	if s := webtest.Text(t, acme, "#state"); s != "revoked" {
		t.Errorf("after revoking acme's approver's page reads %q, want revoked", s)
	}
	webtest.WaitVisible(t, running, "#result")
	t.Logf("the console showed the query's end %s after the revocation", time.Since(revoked).Round(time.Millisecond))
	result := webtest.Text(t, running, "#result")
	t.Logf("the engineer's console reads: %s", result)
	if !strings.Contains(result, "stopped: the grant was revoked") {
		t.Errorf("the long query's result reads %q, want it stopped by the revocation", result)
	}
	if webtest.Count(t, running, "#result-table") != 0 {
		t.Errorf("the revoked query shows a result table: %q", result)
	}
	if webtest.Count(t, running, "#refused") != 0 {
		if code := webtest.Text(t, running, "#refused-code"); code != "grant_revoked" {
			t.Errorf("the revoked query is refused with %q, want grant_revoked", code)
		}
	}
	if n := strings.TrimSpace(d.ch.Exec(t, "SELECT count() FROM system.processes WHERE query_id LIKE 'tether-"+gid+"-%'")); n != "0" {
		t.Errorf("ClickHouse still runs %s of the revoked grant's queries", n)
	}
	// The engineer's request page follows, and the console has no grant.
	webtest.Open(t, running, base+queryPathOf("acme", "prod"), "#no-grant-clickhouse")
	noViolations("5. revoke")

	// 6. The reviewer replays the session.
	d.auditOf(t, gid, 7) // the agent's events reach the broker's log
	webtest.Open(t, reviewer, ui+"audit/sessions/"+id, "#session")
	events := webtest.Eval[[]replayEvent](t, reviewer, `Array.from(document.querySelectorAll("#session li")).map(li => ({
		type: li.dataset.type,
		outcome: li.querySelector(".outcome")?.textContent ?? "",
		statement: li.querySelector("pre.statement")?.textContent ?? "",
		reason: li.querySelector(".reason")?.textContent ?? "",
	}))`)
	has := func(typ, outcome, statement, reason string) bool {
		return slices.ContainsFunc(events, func(e replayEvent) bool {
			return e.Type == typ && (outcome == "" || e.Outcome == outcome) && (statement == "" || e.Statement == statement) && strings.Contains(e.Reason, reason)
		})
	}
	for _, w := range []struct{ what, typ, outcome, statement, reason string }{
		{"the request", "request.created", "", "", ""},
		{"globex's refused view", "auth.failed", "failure", "", "wrong_tenant"},
		{"the system-table query", "query.allowed", "", tablesSQL, ""},
		{"the refusal of default.secret", "query.denied", "", secretSQL, "not a system table"},
		{"the long query", "query.allowed", "", longSQL, ""},
		{"the long query stopped", "query.finished", "failure", "", "revoked"},
		{"the revocation", "grant.revoked", "", "", revokeReason},
	} {
		if !has(w.typ, w.outcome, w.statement, w.reason) {
			t.Errorf("the replay lacks %s (%s %s %q %q): %+v", w.what, w.typ, w.outcome, w.statement, w.reason, events)
		}
	}
	webtest.Eval[bool](t, reviewer, `(document.querySelector('#session li[data-type="query.allowed"]').scrollIntoView(), true)`)
	shot(reviewer, "audit-replay")
	noViolations("6. replay")
	t.Logf("the whole tour in %s", time.Since(start).Round(time.Millisecond))
}

// replayEvent is one event of a session replay page as the browser shows it.
type replayEvent struct {
	Type, Outcome, Statement, Reason string
}

// queryPathOf is the console's query page of a deployment.
func queryPathOf(tenant, name string) string {
	return "/ui/deployments/" + tenant + "/" + name + "/query"
}

// grantOf returns the ID of request id's grant.
func grantOf(t *testing.T, b *brokertest.Broker, id string) string {
	t.Helper()
	ar, err := b.Store().GetRequest(context.Background(), id)
	if err != nil || ar.Grant == nil {
		t.Fatalf("request %s: %+v, %v; want its grant", id, ar, err)
	}
	return ar.Grant.ID
}

// postForm posts form to u with only the session cookie, as a forged
// cross-site form would, and returns the status and body.
func postForm(t *testing.T, u, session string, form url.Values) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "http://attacker.example")
	req.AddCookie(&http.Cookie{Name: weblogin.SessionCookie, Value: session})
	res, err := noRedirects.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, string(raw)
}
