package broker_test

import (
	"context"
	"encoding/json"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/brokertest"
)

// uiStatus is the status endpoint's answer, as the page's script reads it.
type uiStatus struct {
	ID      string   `json:"id"`
	State   string   `json:"state"`
	Version int64    `json:"version"`
	Waiting []string `json:"waiting"`
}

func (br *browser) status(id, query string) (int, uiStatus) {
	br.t.Helper()
	res, body := br.do(http.MethodGet, "/ui/requests/"+id+"/status"+query, nil)
	var s uiStatus
	if res.StatusCode == http.StatusOK {
		if err := json.Unmarshal([]byte(body), &s); err != nil {
			br.t.Fatalf("status of %s: %v: %s", id, err, body)
		}
	}
	return res.StatusCode, s
}

var requestPath = regexp.MustCompile(`/ui/requests/([0-9a-f-]{36})\?done=requested$`)

// requestByForm fills the console's request form and returns the new
// request's ID and page.
func (br *browser) requestByForm(form url.Values) (string, string) {
	br.t.Helper()
	form.Set("csrf", br.csrf())
	res, body, at := br.follow(http.MethodPost, "/ui/request", form)
	m := requestPath.FindStringSubmatch(at)
	if res.StatusCode != http.StatusOK || m == nil {
		br.t.Fatalf("request form = %d at %s, want the new request's page: %s", res.StatusCode, at, body)
	}
	return m[1], body
}

// TestWebConsoleEngineer walks the engineer's request in the console: the
// form lists the deployments and scopes and creates the request through
// the API's code (same policy decision and audit), its page's status
// endpoint wakes when an approver approves through the API, the engineer
// can cancel a pending request and sees the active grant; every form
// needs the CSRF token, and the pages are for the vendor's engineers.
func TestWebConsoleEngineer(t *testing.T) {
	b := brokertest.Start(t, nil)
	b.Pair(t, "acme", "prod")
	b.Pair(t, "globex", "prod")
	ctx := context.Background()
	eng := newBrowser(t, b)
	eng.signIn("engineer@vendor.test")
	approver := newBrowser(t, b)
	approver.signIn("approver@acme.test")

	res, body := eng.do(http.MethodGet, "/ui/request", nil)
	checkPageHeaders(t, "request form", res)
	for _, want := range []string{`<option value="acme/prod">`, `<option value="globex/prod">`, `name="scope" value="clickhouse:system"`, `name="scope" value="prometheus:read"`, `id="reason"`, `id="ticket"`, `href="/ui/request" aria-current="page"`} {
		if res.StatusCode != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("request form (%d) lacks %s", res.StatusCode, want)
		}
	}

	form := url.Values{"deployment": {"acme/prod"}, "scope": {"clickhouse:system", "prometheus:read"}, "duration": {"1h"}, "reason": {`disk <b>full</b> on "prod"`}}
	t.Run("forms need the session's CSRF token", func(t *testing.T) {
		for name, csrf := range map[string][]string{"none": nil, "wrong": {"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}, "another session": {approver.csrf()}} {
			f := url.Values{}
			for k, v := range form {
				f[k] = v
			}
			f["csrf"] = csrf
			res, body := eng.do(http.MethodPost, "/ui/request", f)
			if res.StatusCode != http.StatusForbidden || !strings.Contains(body, "csrf_invalid") {
				t.Errorf("request form with %s CSRF token = %d, want 403 csrf_invalid", name, res.StatusCode)
			}
		}
		if !auditHas(t, b, "auth.failed", "csrf_invalid", "/ui/request") {
			t.Error("the forged request form is not audited as auth.failed csrf_invalid")
		}
		if ars, err := asUser(t, b, "engineer@vendor.test").ListRequests(ctx, brokerapi.RequestQuery{}); err != nil || len(ars) != 0 {
			t.Fatalf("after forged forms there are %d requests (%v), want none", len(ars), err)
		}
	})

	t.Run("engineers of the vendor only", func(t *testing.T) {
		for _, p := range []string{"/ui/request", "/ui/deployments/acme/prod/query"} {
			if res, body := approver.do(http.MethodGet, p, nil); res.StatusCode != http.StatusForbidden || !strings.Contains(body, `data-code="forbidden"`) {
				t.Errorf("approver on %s = %d, want 403 forbidden", p, res.StatusCode)
			}
		}
		f := url.Values{"csrf": {approver.csrf()}}
		for k, v := range form {
			f[k] = v
		}
		if res, _ := approver.do(http.MethodPost, "/ui/request", f); res.StatusCode != http.StatusForbidden {
			t.Errorf("approver posting the request form = %d, want 403", res.StatusCode)
		}
		if !auditHas(t, b, "auth.failed", "forbidden", "/ui/request") {
			t.Error("the approver's refused request form is not audited")
		}
		if res, _ := approver.do(http.MethodGet, "/ui/", nil); res.StatusCode != http.StatusOK {
			t.Fatalf("approver's home = %d", res.StatusCode)
		}
		if _, body := approver.do(http.MethodGet, "/ui/", nil); strings.Contains(body, `href="/ui/request"`) {
			t.Error("the approver's navigation links the engineer's request form")
		}
	})

	id, page := eng.requestByForm(form)
	for _, want := range []string{`id="state" class="state-pending">pending`, "Your request is recorded.", `id="cancel-form"`, `data-status="/ui/requests/` + id + `/status"`, `id="reload"`, "disk &lt;b&gt;full&lt;/b&gt; on &#34;prod&#34;"} {
		if !strings.Contains(page, want) {
			t.Errorf("new request's page lacks %s", want)
		}
	}
	ar, err := b.Client.GetRequest(ctx, id)
	if err != nil || ar.Requester != "engineer@vendor.test" || ar.Deployment != "acme/prod" || ar.Duration != "1h0m0s" || len(ar.Scopes) != 2 || ar.State != brokerapi.StatePending {
		t.Fatalf("the form's request = %+v (%v), want engineer@vendor.test's pending 1h request on acme/prod for both scopes", ar, err)
	}
	created := false
	for _, e := range auditEvents(t, b, 1000) {
		created = created || (e.Type == "request.created" && e.RequestID == id && e.Actor.Subject == "engineer@vendor.test")
	}
	if !created {
		t.Error("no request.created event by the engineer for the form's request")
	}
	// The API refuses what the form refuses, with the same code: one
	// function decides both.
	if res, body := eng.do(http.MethodPost, "/ui/request", url.Values{"csrf": {eng.csrf()}, "deployment": {"acme/prod"}, "scope": {"clickhouse:system"}, "duration": {"13h"}, "reason": {"x"}}); res.StatusCode != http.StatusBadRequest || !strings.Contains(body, `data-code="invalid_duration"`) {
		t.Errorf("a 13h request by form = %d, want 400 invalid_duration: %s", res.StatusCode, body)
	}

	t.Run("status wakes when approved elsewhere", func(t *testing.T) {
		code, s := eng.status(id, "")
		if code != http.StatusOK || s.State != "pending" || len(s.Waiting) == 0 {
			t.Fatalf("status = %d %+v, want pending and what it waits for", code, s)
		}
		type answer struct {
			code int
			s    uiStatus
			took time.Duration
		}
		got := make(chan answer, 1)
		poll := newBrowser(t, b)
		poll.cookies = eng.cookies
		start := time.Now()
		go func() {
			c, s := poll.status(id, "?wait=25s&version="+jsonInt(s.Version))
			got <- answer{c, s, time.Since(start)}
		}()
		if _, err := asUser(t, b, "approver@acme.test").Approve(ctx, id, "go ahead"); err != nil {
			t.Fatal(err)
		}
		a := <-got
		if a.code != http.StatusOK || a.s.State != "active" || a.s.Version == s.Version || a.took > 10*time.Second {
			t.Fatalf("long poll = %d %+v after %s, want active at a new version at once", a.code, a.s, a.took)
		}
		t.Logf("the status long poll answered %s after it began", a.took.Round(time.Millisecond))
		for _, q := range []string{"?wait=x&version=1", "?wait=1s&version=x", "?wait=-1s&version=1"} {
			if code, _ := eng.status(id, q); code != http.StatusBadRequest {
				t.Errorf("status%s = %d, want 400", q, code)
			}
		}
		// Another tenant's approver may not poll it.
		globex := newBrowser(t, b)
		globex.signIn("approver@globex.test")
		if code, _ := globex.status(id, ""); code != http.StatusForbidden {
			t.Errorf("globex's approver polling acme's request = %d, want 403", code)
		}
		_, page := eng.do(http.MethodGet, "/ui/requests/"+id, nil)
		if !strings.Contains(page, `class="state-active">active`) || strings.Contains(page, `id="cancel-form"`) || !strings.Contains(page, `href="/ui/deployments/acme/prod/query" id="query-link"`) {
			t.Errorf("the active request's page should say active, link the query console and offer no cancel: %s", page)
		}
	})

	t.Run("grants", func(t *testing.T) {
		res, body := eng.do(http.MethodGet, "/ui/grants", nil)
		if res.StatusCode != http.StatusOK || !strings.Contains(body, `<tr data-request="`+id+`">`) || !strings.Contains(body, "clickhouse:system, prometheus:read") || !strings.Contains(body, `href="/ui/deployments/acme/prod/query"`) {
			t.Errorf("grants = %d, want the active grant of %s: %s", res.StatusCode, id, body)
		}
		res, body = approver.do(http.MethodGet, "/ui/grants", nil)
		if res.StatusCode != http.StatusOK || strings.Contains(body, id) || !strings.Contains(body, `id="grants-empty"`) {
			t.Errorf("the approver's grants page = %d, want none of the engineer's", res.StatusCode)
		}
	})

	t.Run("cancel", func(t *testing.T) {
		f := url.Values{"deployment": {"globex/prod"}, "scope": {"prometheus:read"}, "duration": {"30m"}, "reason": {"to cancel"}}
		other, _ := eng.requestByForm(f)
		path := "/ui/requests/" + other + "/cancel"
		if res, _ := eng.do(http.MethodPost, path, url.Values{}); res.StatusCode != http.StatusForbidden {
			t.Errorf("cancel without CSRF token = %d, want 403", res.StatusCode)
		}
		if res, _ := approver.do(http.MethodPost, path, url.Values{"csrf": {approver.csrf()}}); res.StatusCode != http.StatusForbidden {
			t.Errorf("acme's approver cancelling globex's request = %d, want 403", res.StatusCode)
		}
		res, body, _ := eng.follow(http.MethodPost, path, url.Values{"csrf": {eng.csrf()}})
		if res.StatusCode != http.StatusOK || !strings.Contains(body, `class="state-cancelled">cancelled`) || !strings.Contains(body, "Your request is cancelled.") {
			t.Errorf("cancel = %d, want the page saying cancelled: %s", res.StatusCode, body)
		}
		// Cancelling what is no longer pending is refused as by the API.
		if res, body := eng.do(http.MethodPost, path, url.Values{"csrf": {eng.csrf()}}); res.StatusCode != http.StatusConflict {
			t.Errorf("cancelling again = %d, want 409: %s", res.StatusCode, html.UnescapeString(body))
		}
	})
}

func jsonInt(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// TestWebConsoleQuery runs queries from the console against a real
// ClickHouse and Prometheus behind an agent: only through the engineer's
// live grant, a system-table query comes back as a table with its row
// count, default.secret is refused with the guard's reason and offset
// (and never reaches the page), PromQL comes back as a table, and both
// are audited by the agent as the CLI's are.
func TestWebConsoleQuery(t *testing.T) {
	d := startDataPlane(t)
	b := d.b
	ctx := context.Background()
	eng := newBrowser(t, b)
	eng.signIn("engineer@vendor.test")
	page := "/ui/deployments/acme/prod/query"
	run := func(src, field, text string) (*http.Response, string) {
		t.Helper()
		return eng.do(http.MethodPost, page+"/"+src, url.Values{"csrf": {eng.csrf()}, field: {text}})
	}

	// No grant yet: no form, and a forged form is refused by the data
	// plane's own check.
	if _, body := eng.do(http.MethodGet, page, nil); !strings.Contains(body, `id="no-grant-clickhouse"`) || strings.Contains(body, `id="query-clickhouse"`) {
		t.Errorf("the console without a grant offers a query form: %s", body)
	}
	if res, body := run("clickhouse", "sql", "SELECT 1"); res.StatusCode != http.StatusForbidden || !strings.Contains(body, `data-code="no_grant"`) {
		t.Errorf("a query without a grant = %d, want 403 no_grant: %s", res.StatusCode, body)
	}

	id, _ := eng.requestByForm(url.Values{"deployment": {"acme/prod"}, "scope": {"clickhouse:system", "prometheus:read"}, "duration": {"1h"}, "reason": {"look at merges"}})
	ar, err := asUser(t, b, "approver@acme.test").Approve(ctx, id, "ok")
	if err != nil || ar.State != brokerapi.StateActive {
		t.Fatalf("approve = %s, %v", ar.State, err)
	}

	if res, _ := eng.do(http.MethodPost, page+"/clickhouse", url.Values{"sql": {"SELECT 1"}}); res.StatusCode != http.StatusForbidden {
		t.Errorf("a query without the CSRF token = %d, want 403", res.StatusCode)
	}

	if res, body := run("clickhouse", "sql", "  "); res.StatusCode != http.StatusBadRequest || !strings.Contains(body, `data-code="invalid_query"`) {
		t.Errorf("an empty query = %d, want 400 invalid_query", res.StatusCode)
	}
	if !auditHas(t, b, "api.refused", "invalid_query", page+"/clickhouse") {
		t.Error("the empty query's refusal is not audited as api.refused invalid_query")
	}
	res, body := run("clickhouse", "sql", "SELECT name, engine FROM system.tables WHERE database = 'system' AND name IN ('numbers', 'one', 'tables') ORDER BY name")
	checkPageHeaders(t, "query page", res)
	if res.StatusCode != http.StatusOK || !strings.Contains(body, `id="result-table"`) || !strings.Contains(body, `<span id="row-count">3</span> rows`) ||
		!strings.Contains(body, `<th scope="col">engine</th>`) || !strings.Contains(body, `<td class="text">SystemNumbers</td>`) {
		t.Fatalf("system-table query = %d, want a 3-row table: %s", res.StatusCode, body)
	}

	res, body = run("clickhouse", "sql", "SELECT * FROM default.secret")
	if res.StatusCode != http.StatusOK || !strings.Contains(body, `id="refused"`) || !strings.Contains(body, `<code id="refused-code">query_denied</code>`) ||
		!strings.Contains(body, "table default.secret is not a system table") || !strings.Contains(body, `<strong id="refused-offset">14</strong>`) || strings.Contains(body, canary) {
		t.Fatalf("default.secret = %d, want the guard's refusal with its reason and offset 14: %s", res.StatusCode, body)
	}

	res, body = run("prometheus", "promql", "vector(7)")
	if res.StatusCode != http.StatusOK || !strings.Contains(body, `id="result-table"`) || !strings.Contains(body, `<th scope="col">series</th>`) || !strings.Contains(body, `<span id="row-count">1</span>`) || !strings.Contains(body, `<td class="text">7</td>`) {
		t.Errorf("PromQL vector(7) = %d, want a one-row table of series: %s", res.StatusCode, body)
	}

	// A large answer is cut at the console's bound, and says so.
	res, body = run("clickhouse", "sql", "SELECT number FROM system.numbers LIMIT 5000")
	if res.StatusCode != http.StatusOK || !strings.Contains(body, `<span id="row-count">5000</span>`) || !strings.Contains(body, `id="result-cut"`) || strings.Count(body, "<tr>") != 1001 {
		t.Errorf("5000 rows = %d, want 1000 shown of 5000 and the cut said (%d rows): %.2000s", res.StatusCode, strings.Count(body, "<tr>"), body)
	}

	// The agent audited the console's queries as the CLI's.
	rec, err := b.Store().GetRequest(ctx, id)
	if err != nil || rec.Grant == nil {
		t.Fatalf("request %s: %v", id, err)
	}
	var allowed, denied bool
	for _, e := range d.auditOf(t, rec.Grant.ID, 4) {
		sql, _ := e.Details["sql"].(string)
		allowed = allowed || (e.Type == "query.allowed" && strings.Contains(sql, "system.tables"))
		denied = denied || (e.Type == "query.denied" && sql == "SELECT * FROM default.secret")
	}
	if !allowed || !denied {
		t.Errorf("the agent's audit lacks the console's allowed (%v) or denied (%v) query", allowed, denied)
	}
}

// TestWebConsoleQueryRangeAndFormat runs the console's PromQL range
// queries and SQL with its own FORMAT against a real Prometheus and
// ClickHouse behind an agent. A range query goes through the data plane
// under the engineer's live grant (refused without one, audited by the
// agent as /api/v1/query_range) and its matrix is an escaped table of
// each series' labels and its samples, bounded to 1,000 rows and 1 MiB
// and saying when cut; a range the agent would refuse (end before start,
// step under 1s, over 11,000 points) is answered on the page with what to
// change, not run, and audited. SQL naming its own FORMAT is shown as
// ClickHouse answered it, escaped, with its byte count and no row count;
// a format the guard refuses stays refused with its reason.
func TestWebConsoleQueryRangeAndFormat(t *testing.T) {
	d := startDataPlane(t)
	b := d.b
	ctx := context.Background()
	eng := newBrowser(t, b)
	eng.signIn("engineer@vendor.test")
	page := "/ui/deployments/acme/prod/query"
	run := func(src string, form url.Values) (*http.Response, string) {
		t.Helper()
		form.Set("csrf", eng.csrf())
		return eng.do(http.MethodPost, page+"/"+src, form)
	}
	prom := func(q, start, end, step string) url.Values {
		return url.Values{"promql": {q}, "start": {start}, "end": {end}, "step": {step}}
	}

	// Without a grant the range form is refused by the data plane's
	// own check, as the CLI's call is.
	if res, body := run("prometheus", prom("vector(1)", "1h", "", "")); res.StatusCode != http.StatusForbidden || !strings.Contains(body, `data-code="no_grant"`) {
		t.Errorf("a range query without a grant = %d, want 403 no_grant", res.StatusCode)
	}

	id, _ := eng.requestByForm(url.Values{"deployment": {"acme/prod"}, "scope": {"clickhouse:system", "prometheus:read"}, "duration": {"1h"}, "reason": {"look at the metrics over time"}})
	ar, err := asUser(t, b, "approver@acme.test").Approve(ctx, id, "ok")
	if err != nil || ar.State != brokerapi.StateActive {
		t.Fatalf("approve = %s, %v", ar.State, err)
	}
	if _, body := eng.do(http.MethodGet, page, nil); !strings.Contains(body, `id="start-prometheus"`) || !strings.Contains(body, `<option value="24h">`) || !strings.Contains(body, `id="step-prometheus"`) {
		t.Errorf("the PromQL form offers no range: %s", body)
	}

	samples := regexp.MustCompile(`<tr><td>([^<]*)</td><td class="text">([^<]*)</td></tr>`)
	t.Run("range", func(t *testing.T) {
		// A hostile label value comes back escaped.
		q := `label_replace(vector(7), "who", "<script>x</script>", "", "")`
		res, body := run("prometheus", prom(q, "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z", "1m"))
		checkPageHeaders(t, "range query", res)
		if res.StatusCode != http.StatusOK || !strings.Contains(body, `id="result-matrix"`) || !strings.Contains(body, `<span id="row-count">6</span> samples in <span id="series-count">1</span> series`) ||
			!strings.Contains(body, `{who=&#34;&lt;script&gt;x&lt;/script&gt;&#34;}`) || strings.Contains(body, "<script>x") {
			t.Fatalf("range query = %d, want one escaped series of 6 samples: %s", res.StatusCode, body)
		}
		got := samples.FindAllStringSubmatch(body, -1)
		if len(got) != 6 || got[0][1] != "2026-01-01T00:00:00Z" || got[5][1] != "2026-01-01T00:05:00Z" || got[5][2] != "7" {
			t.Errorf("samples = %q, want 6 from 00:00 to 00:05 of value 7", got)
		}
		// The form comes back as it was sent.
		if !strings.Contains(body, `value="2026-01-01T00:00:00Z"`) || !strings.Contains(body, `name="step" maxlength="64" autocomplete="off" placeholder="1m" value="1m"`) {
			t.Errorf("the range form is not refilled: %s", body)
		}
		// A relative start ends now, at the default step (range / 250).
		res, body = run("prometheus", prom("vector(1)", "6h", "", ""))
		if res.StatusCode != http.StatusOK || !strings.Contains(body, `<span id="series-count">1</span>`) || !strings.Contains(body, "every 1m27s") {
			t.Errorf("6h range = %d, want one series at step 1m27s: %s", res.StatusCode, body)
		}
		if n := len(samples.FindAllString(body, -1)); n < 248 || n > 251 {
			t.Errorf("6h at range / 250 gave %d samples, want about 250", n)
		}
	})

	t.Run("range bounds", func(t *testing.T) {
		// Over 1,000 rows: series headings and samples are cut at 1,000.
		res, body := run("prometheus", prom(`label_replace(vector(1), "s", "a", "", "") or label_replace(vector(2), "s", "b", "", "")`, "2026-01-01T00:00:00Z", "2026-01-01T00:10:00Z", "1s"))
		if res.StatusCode != http.StatusOK || !strings.Contains(body, `<span id="row-count">1202</span>`) || !strings.Contains(body, `id="result-cut"`) ||
			strings.Count(body, `<tr class="series-labels">`)+len(samples.FindAllString(body, -1)) != 1000 {
			t.Errorf("1202 samples = %d, want 1000 rows shown and the cut said: %.3000s", res.StatusCode, body)
		}
		// Over 1 MiB: read up to the cut, and said.
		q := `vector(1)`
		for _, s := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
			q += ` or label_replace(vector(1), "s", "` + s + `", "", "")`
		}
		res, body = run("prometheus", prom(q, "2026-01-01T00:00:00Z", "2026-01-01T03:03:19Z", "1s"))
		if res.StatusCode != http.StatusOK || !strings.Contains(body, `id="result-matrix"`) || !strings.Contains(body, "the answer passed the console&#39;s 1048576 bytes") || !strings.Contains(body, `<span id="byte-count">1048576</span>`) {
			t.Errorf("a 9 × 11,000-point matrix = %d, want it read to the 1 MiB cut and said: %.3000s", res.StatusCode, body)
		}
	})

	t.Run("bad ranges are answered on the page", func(t *testing.T) {
		for _, c := range []struct{ name, start, end, step, want string }{
			{"end before start", "2026-01-01T01:00:00Z", "2026-01-01T00:00:00Z", "1m", "is before start"},
			{"step 0", "1h", "", "0s", "want at least 1s"},
			{"step under 1s", "1h", "", "500ms", "want at least 1s"},
			{"too many points", "24h", "", "1s", "86401 points per series, over Prometheus&#39;s limit of 11000: raise step to at least 8s"},
			{"over 31 days", "800h", "", "1h", "over the agent&#39;s limit"},
			{"start unreadable", "yesterday", "", "", "want a duration before the end"},
			{"end unreadable", "1h", "tomorrow", "", "end &#34;tomorrow&#34;"},
			{"step without start", "", "", "1m", "give its start too"},
		} {
			res, body := run("prometheus", prom("vector(1)", c.start, c.end, c.step))
			if res.StatusCode != http.StatusBadRequest || !strings.Contains(body, `id="query-error" class="refused" data-code="invalid_query"`) || !strings.Contains(body, c.want) ||
				!strings.Contains(body, `id="query-prometheus"`) || strings.Contains(body, `id="result-matrix"`) {
				t.Errorf("%s = %d, want 400 on the console page saying %q: %.3000s", c.name, res.StatusCode, c.want, body)
			}
		}
		if !auditHas(t, b, "api.refused", "invalid_query", page+"/prometheus") {
			t.Error("a bad range is not audited as api.refused invalid_query")
		}
	})

	t.Run("SQL with its own FORMAT", func(t *testing.T) {
		for _, c := range []struct{ sql, want string }{
			{"SELECT 1 AS x, '<b>' AS y FORMAT Pretty", "&lt;b&gt;"},
			{"SELECT 1 AS x, '<b>' AS y FORMAT CSV", "1,&#34;&lt;b&gt;&#34;\n"},
			{"SELECT 1 AS x, '<b>' AS y FORMAT TabSeparated", "1\t&lt;b&gt;\n"},
			{"SELECT 1 AS x, '<b>' AS y FORMAT JSONEachRow", `{&#34;x&#34;:1,&#34;y&#34;:&#34;&lt;b&gt;&#34;}`},
		} {
			res, body := run("clickhouse", url.Values{"sql": {c.sql}})
			raw := regexp.MustCompile(`(?s)<pre class="statement" id="result-raw">(.*?)</pre>`).FindStringSubmatch(body)
			bytesShown := regexp.MustCompile(`<span id="byte-count">(\d+)</span> bytes`).FindStringSubmatch(body)
			if res.StatusCode != http.StatusOK || raw == nil || !strings.Contains(raw[1], c.want) || strings.Contains(body, `id="row-count"`) ||
				strings.Contains(body, `id="result-table"`) || bytesShown == nil || bytesShown[1] != strconv.Itoa(len(html.UnescapeString(raw[1]))) {
				t.Errorf("%s = %d, want the answer verbatim (holding %q), its bytes and no row count: %s", c.sql, res.StatusCode, c.want, body)
			}
		}
		// A statement without FORMAT is still a table.
		if _, body := run("clickhouse", url.Values{"sql": {"SELECT 1 AS x"}}); !strings.Contains(body, `id="result-table"`) || !strings.Contains(body, `<span id="row-count">1</span> rows`) {
			t.Errorf("SELECT 1 is not a one-row table: %s", body)
		}
		// A bounded verbatim answer says it was cut.
		res, body := run("clickhouse", url.Values{"sql": {"SELECT number FROM system.numbers LIMIT 300000 FORMAT TabSeparated"}})
		if res.StatusCode != http.StatusOK || !strings.Contains(body, `id="result-raw"`) || !strings.Contains(body, `<span id="byte-count">1048576</span>`) || !strings.Contains(body, `id="result-cut"`) {
			t.Errorf("a large TabSeparated answer = %d, want 1 MiB shown and the cut said: %.2000s", res.StatusCode, body)
		}
		// A format the guard refuses stays refused, with its reason.
		res, body = run("clickhouse", url.Values{"sql": {"SELECT 1 FORMAT Template"}})
		if res.StatusCode != http.StatusOK || !strings.Contains(body, `<code id="refused-code">query_denied</code>`) || !strings.Contains(body, "Template") || strings.Contains(body, `id="result-raw"`) {
			t.Errorf("FORMAT Template = %d, want the guard's refusal: %s", res.StatusCode, body)
		}
	})

	// The agent audited the console's range queries as the CLI's.
	rec, err := b.Store().GetRequest(ctx, id)
	if err != nil || rec.Grant == nil {
		t.Fatalf("request %s: %v", id, err)
	}
	var ranged bool
	for _, e := range d.auditOf(t, rec.Grant.ID, 10) {
		ranged = ranged || (e.Type == "prom.allowed" && e.Details["endpoint"] == "/api/v1/query_range")
	}
	if !ranged {
		t.Error("the agent's audit lacks the console's range query")
	}
}
