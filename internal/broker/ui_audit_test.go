package broker_test

import (
	"context"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/brokertest"
)

const (
	hostileSQL       = `SELECT name FROM system.tables WHERE name = '</code><script>alert("sql")</script>'`
	hostileRefusal   = `<img src=x onerror=alert(1)> table "default.secret" is not a system table`
	globexSQL        = "SELECT 'globex-only-marker' FROM system.one"
	deniedEventCount = 55 // more than a page of the audit search
)

// auditFixture is a dev broker with acme/prod and globex/prod paired, a
// request on each, and planted agent events: for acme's request a query
// whose end the log holds before its start (as an agent's late delivery
// would), with hostile SQL, and deniedEventCount refusals a minute
// apart; for globex's a query of its own.
type auditFixture struct {
	b                    *brokertest.Broker
	acmeReq, acmeGrant   string
	globexReq, globexGnt string
	deniedReq            string // the earlier access the refusals belong to
	deniedGrant          string
	base                 time.Time // the first refusal's time, on a whole minute
}

func newAuditFixture(t *testing.T) *auditFixture {
	t.Helper()
	ctx := context.Background()
	b := brokertest.Start(t, nil)
	b.Pair(t, "acme", "prod")
	b.Pair(t, "globex", "prod")
	eng := asUser(t, b, "engineer@vendor.test")
	f := &auditFixture{b: b, acmeGrant: uuid.NewString(), globexGnt: uuid.NewString(), deniedReq: uuid.NewString(), deniedGrant: uuid.NewString()}
	f.base = time.Now().UTC().Add(-2 * time.Hour).Truncate(time.Minute)
	var events []audit.Event
	for _, x := range []struct {
		dep        string
		req, grant *string
		sql        string
	}{{"acme/prod", &f.acmeReq, &f.acmeGrant, hostileSQL}, {"globex/prod", &f.globexReq, &f.globexGnt, globexSQL}} {
		ar, err := eng.CreateRequest(ctx, brokerapi.CreateAccessRequest{Deployment: x.dep, Scopes: []string{"clickhouse:system"}, Duration: "1h", Reason: "look at " + x.dep})
		if err != nil {
			t.Fatal(err)
		}
		*x.req = ar.ID
		d, err := b.Client.GetDeployment(ctx, x.dep)
		if err != nil || d.Agent == nil {
			t.Fatalf("deployment %s: %+v, %v", x.dep, d, err)
		}
		ev := func(typ audit.Type, outcome audit.Outcome, at time.Time, details map[string]any) audit.Event {
			return audit.Event{
				ID: uuid.Must(uuid.NewV7()).String(), Time: at, Type: typ, Outcome: outcome,
				Actor:      audit.Actor{Subject: "engineer@vendor.test", Issuer: "vendor", Role: "engineer"},
				Source:     audit.Source{Kind: audit.SourceAgent, ReceivedAt: time.Now().UTC()},
				Deployment: d.ID, AgentID: d.Agent.ID, RequestID: ar.ID, GrantID: *x.grant, Details: details,
			}
		}
		started := time.Now().UTC()
		// The end is logged before the start: the replay orders by time.
		events = append(events,
			ev(audit.QueryFinished, audit.Success, started.Add(2*time.Second), map[string]any{"query_id": "q-" + x.dep, "result_rows": 3, "bytes": 1234, "duration_ms": 17}),
			ev(audit.QueryAllowed, audit.Success, started, map[string]any{"sql": x.sql, "query_id": "q-" + x.dep}))
		if x.dep == "acme/prod" {
			for i := range deniedEventCount {
				e := ev(audit.QueryDenied, audit.Failure, f.base.Add(time.Duration(i)*time.Minute), map[string]any{"sql": "SELECT * FROM default.secret"})
				e.RequestID, e.GrantID = f.deniedReq, f.deniedGrant // an earlier access
				e.Reason = hostileRefusal
				events = append(events, e)
			}
		}
	}
	if err := b.RecordAudit(ctx, events...); err != nil {
		t.Fatal(err)
	}
	return f
}

var (
	auditRowType   = regexp.MustCompile(`<tr data-index="\d+" data-type="([^"]+)">`)
	sessionRowType = regexp.MustCompile(`<li data-index="\d+" data-type="([^"]+)"`)
	nextLink       = regexp.MustCompile(`<a href="([^"]+)" rel="next">`)
	auditRowIndex  = regexp.MustCompile(`<tr data-index="(\d+)"`)
	errorCode      = regexp.MustCompile(`id="error" data-code="([^"]+)"`)
)

// auditPage gets a console page and returns its status, body and the
// event types of its search table and replay list.
func auditPage(t *testing.T, br *browser, u string) (int, string, []string, []string) {
	t.Helper()
	res, body := br.do(http.MethodGet, u, nil)
	checkPageHeaders(t, u, res)
	var rows, session []string
	for _, m := range auditRowType.FindAllStringSubmatch(body, -1) {
		rows = append(rows, m[1])
	}
	for _, m := range sessionRowType.FindAllStringSubmatch(body, -1) {
		session = append(session, m[1])
	}
	return res.StatusCode, body, rows, session
}

// refusedWith fails unless the page at u is refused with status and code.
func refusedWith(t *testing.T, br *browser, u string, status int, code string) {
	t.Helper()
	got, body, rows, session := auditPage(t, br, u)
	m := errorCode.FindStringSubmatch(body)
	if got != status || m == nil || m[1] != code || len(rows)+len(session) > 0 {
		t.Errorf("GET %s = %d %v with %d events, want %d %s and none", u, got, m, len(rows)+len(session), status, code)
	}
}

// TestWebConsoleAudit walks the reviewer's audit pages and an approver's
// view of their tenant's trail: the search filters by type, deployment
// and time and pages through more than a page of events; a session
// replay lists an access's events in the order they happened with its
// SQL, rows, bytes and duration; hostile reasons and SQL are escaped;
// acme's approver sees no globex event, and naming globex's deployment,
// request or trail is refused 403; the verification page shows the
// latest checkpoint and each deployment's witness; the exports download
// as attachments; every page carries the strict headers.
func TestWebConsoleAudit(t *testing.T) {
	f := newAuditFixture(t)
	reviewer := newBrowser(t, f.b)
	reviewer.signIn("reviewer@vendor.test")

	// The search pages through the refusals, 50 then 5.
	status, body, rows, _ := auditPage(t, reviewer, "/ui/audit?type=query.denied")
	if status != http.StatusOK || len(rows) != 50 || slices.ContainsFunc(rows, func(s string) bool { return s != "query.denied" }) {
		t.Fatalf("reviewer's search by type = %d with %d rows %v, want 200 with 50 query.denied", status, len(rows), rows)
	}
	if !strings.Contains(body, `href="/ui/audit" aria-current="page"`) {
		t.Errorf("the search page's navigation does not mark Audit current")
	}
	if strings.Contains(body, "<img src=x") || !strings.Contains(body, "&lt;img src=x onerror=alert(1)&gt;") {
		t.Errorf("the refusal reason is not escaped on the search page")
	}
	m := nextLink.FindStringSubmatch(body)
	if m == nil {
		t.Fatal("the first page of 55 events has no link to the next")
	}
	next := strings.ReplaceAll(m[1], "&amp;", "&")
	_, body, rows, _ = auditPage(t, reviewer, next)
	if len(rows) != deniedEventCount-50 || nextLink.MatchString(body) || !strings.Contains(body, `rel="first"`) {
		t.Errorf("the second page %s has %d rows (next link %v), want %d and no next", next, len(rows), nextLink.MatchString(body), deniedEventCount-50)
	}

	// Newest first by default, oldest first when asked; each order's two
	// pages hold every refusal once, in its order.
	for _, order := range []string{"", "oldest"} {
		u := "/ui/audit?type=query.denied"
		if order != "" {
			u += "&order=" + order
		}
		var got []int
		for u != "" {
			_, body, _, _ := auditPage(t, reviewer, u)
			for _, m := range auditRowIndex.FindAllStringSubmatch(body, -1) {
				n, _ := strconv.Atoi(m[1])
				got = append(got, n)
			}
			u = ""
			if m := nextLink.FindStringSubmatch(body); m != nil {
				u = strings.ReplaceAll(m[1], "&amp;", "&")
			}
		}
		want := slices.Clone(got)
		slices.Sort(want)
		if order == "" {
			slices.Reverse(want)
		}
		if len(got) != deniedEventCount || !slices.Equal(got, want) || len(slices.Compact(slices.Clone(want))) != deniedEventCount {
			t.Errorf("search order %q pages through indexes %v, want %d distinct in that order", order, got, deniedEventCount)
		}
	}
	refusedWith(t, reviewer, "/ui/audit?order=sideways", http.StatusBadRequest, "invalid_order")
	if !auditHas(t, f.b, "api.refused", "invalid_order", "/ui/audit") {
		t.Error("the bad order's refusal is not audited as api.refused invalid_order")
	}

	// Time (as a datetime-local input sends it), deployment and request filters.
	since := f.base.Add(50 * time.Minute).Format("2006-01-02T15:04")
	until := f.base.Add(52 * time.Minute).Format("2006-01-02T15:04")
	for _, tc := range []struct {
		query string
		want  []string
	}{
		{"type=query.denied&since=" + since + "&until=" + until, []string{"query.denied", "query.denied"}},
		{"deployment=globex/prod&type=query.allowed", []string{"query.allowed"}},
		{"request=" + f.acmeReq + "&type=query.finished", []string{"query.finished"}},
		{"grant=" + f.globexGnt, []string{"query.allowed", "query.finished"}}, // newest first
		{"grant=" + f.globexGnt + "&order=oldest", []string{"query.finished", "query.allowed"}},
		{"actor=nobody@vendor.test", nil},
	} {
		status, body, rows, _ := auditPage(t, reviewer, "/ui/audit?"+tc.query)
		if status != http.StatusOK || !slices.Equal(rows, tc.want) {
			t.Errorf("search %s = %d %v, want 200 %v", tc.query, status, rows, tc.want)
		}
		if strings.Contains(tc.query, "globex") && strings.Contains(body, f.acmeReq) {
			t.Errorf("search %s shows acme's request", tc.query)
		}
	}
	refusedWith(t, reviewer, "/ui/audit?type=no.such", http.StatusBadRequest, "invalid_type")
	refusedWith(t, reviewer, "/ui/audit?since=yesterday", http.StatusBadRequest, "invalid_since")

	// The replay, by request and by grant: in time order, with the SQL
	// (escaped) and what the query returned.
	for _, id := range []string{f.acmeReq, f.acmeGrant} {
		status, body, _, session := auditPage(t, reviewer, "/ui/audit/sessions/"+id)
		qa, qf := slices.Index(session, "query.allowed"), slices.Index(session, "query.finished")
		if status != http.StatusOK || !slices.Contains(session[:2], "request.created") || qa < 2 || qf != qa+1 || slices.Contains(session, "query.denied") {
			t.Errorf("replay of %s = %d %v, want the request's events first and query.allowed right before query.finished", id, status, session)
		}
		if strings.Contains(body, `<script>alert("sql")`) || !strings.Contains(body, `&lt;/code&gt;&lt;script&gt;alert(&#34;sql&#34;)&lt;/script&gt;`) {
			t.Errorf("replay of %s does not show the SQL escaped", id)
		}
		for _, want := range []string{`<dd class="rows">3</dd>`, `<dd class="bytes">1234</dd>`, `<dd class="duration">17 ms</dd>`} {
			if !strings.Contains(body, want) {
				t.Errorf("replay of %s lacks %s", id, want)
			}
		}
		if strings.Contains(body, "globex-only-marker") || strings.Contains(body, f.globexReq) {
			t.Errorf("replay of acme's %s shows globex's session", id)
		}
	}
	refusedWith(t, reviewer, "/ui/audit/sessions/not-an-id", http.StatusBadRequest, "invalid_id")
	refusedWith(t, reviewer, "/ui/audit/sessions/"+uuid.NewString(), http.StatusNotFound, "session_not_found")

	// The verification state and the vendor export.
	status, body, _, _ = auditPage(t, reviewer, "/ui/audit/verify")
	for _, want := range []string{`id="checkpoint-size"`, `<tr data-deployment="acme/prod">`, `<tr data-deployment="globex/prod">`, `href="/ui/audit/export"`} {
		if status != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("verification page = %d, lacks %s", status, want)
		}
	}
	res, body := reviewer.do(http.MethodGet, "/ui/audit/export", nil)
	if res.StatusCode != http.StatusOK || !strings.HasPrefix(res.Header.Get("Content-Disposition"), "attachment;") || !strings.HasPrefix(body, "{") {
		t.Errorf("vendor export = %d %q, want 200 attachment", res.StatusCode, res.Header.Get("Content-Disposition"))
	}

	// acme's approver: acme's trail only, through the tenant audit API's filter.
	acme := newBrowser(t, f.b)
	acme.signIn("approver@acme.test")
	trail := "/ui/tenants/acme/audit"
	status, body, rows, _ = auditPage(t, acme, trail+"?type=query.denied")
	if status != http.StatusOK || len(rows) != 50 || !nextLink.MatchString(body) {
		t.Errorf("acme's trail by type = %d with %d rows, want 200 with 50 and a next page", status, len(rows))
	}
	if !strings.Contains(body, `href="/ui/tenants/acme/audit" aria-current="page"`) {
		t.Errorf("acme's approver's navigation does not lead to acme's trail")
	}
	for _, q := range []string{"", "?grant=" + f.acmeGrant, "?type=query.allowed"} {
		status, body, rows, _ := auditPage(t, acme, trail+q)
		if status != http.StatusOK || len(rows) == 0 || strings.Contains(body, f.globexReq) || strings.Contains(body, f.globexGnt) || strings.Contains(body, "globex/prod") {
			t.Errorf("acme's trail%s = %d with %d rows, or shows a globex event", q, status, len(rows))
		}
	}
	status, body, _, session := auditPage(t, acme, trail+"/sessions/"+f.acmeReq)
	if status != http.StatusOK || !slices.Contains(session, "query.allowed") || !strings.Contains(body, "system.tables") {
		t.Errorf("acme's replay of its request = %d %v, want its query", status, session)
	}
	for _, u := range []string{
		trail + "?deployment=globex/prod",
		trail + "?deployment=globex/nope",
		trail + "?request=" + f.globexReq,
		trail + "/sessions/" + f.globexReq,
		trail + "/sessions/" + f.globexGnt,
		"/ui/tenants/globex/audit",
		"/ui/tenants/globex/audit/sessions/" + f.globexReq,
		"/ui/tenants/globex/audit/export",
	} {
		refusedWith(t, acme, u, http.StatusForbidden, "wrong_tenant")
	}
	for _, u := range []string{"/ui/audit", "/ui/audit/sessions/" + f.acmeReq, "/ui/audit/verify", "/ui/audit/export"} {
		refusedWith(t, acme, u, http.StatusForbidden, "forbidden")
	}

	// acme's export, once its agent has cosigned a checkpoint.
	for deadline := time.Now().Add(60 * time.Second); ; {
		res, body := acme.do(http.MethodGet, trail+"/export", nil)
		if res.StatusCode == http.StatusOK {
			if !strings.HasPrefix(res.Header.Get("Content-Disposition"), "attachment;") || strings.Contains(body, "globex-only-marker") {
				t.Errorf("acme's export: %q, or it holds globex's query", res.Header.Get("Content-Disposition"))
			}
			break
		}
		if res.Header.Get("Content-Disposition") != "" {
			t.Errorf("a refused export (%d) is marked as a download", res.StatusCode)
		}
		if time.Now().After(deadline) {
			t.Fatalf("acme's export = %d after 60s: %s", res.StatusCode, body)
		}
		time.Sleep(200 * time.Millisecond) // polling for the agent's next cosignature
	}
}
