package broker_test

import (
	"context"
	"fmt"
	"html"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/agent"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/brokertest"
	"github.com/tetherhq/tether/internal/store"
)

// The console's figure: the inbox, the audit search and the session
// replay render server-side in ≤ 50 ms p99 with 10,000 access requests
// and 1,000,000 audit events in the store.

const (
	benchRequests    = 10_000
	benchPendingAcme = 300 // acme's inbox: six pages of 50
	benchPendingGlbx = 200
	benchEvents      = 1_000_000
	// benchAuditBatch is how many events one RecordAll commit holds (and
	// one checkpoint covers) while seeding.
	benchAuditBatch = 10_000
	// benchInFlight is how many accesses the seeded log interleaves, so
	// that one session's events are spread over some 800 indexes as a
	// busy broker's would be.
	benchInFlight = 16
)

// consoleBench is a dev broker holding the figure's store: acme/prod and
// globex/prod paired (and acme/staging and globex/staging without
// agents), 10,000 requests, 1,000,000 audit events, and web sessions of
// acme's approver and the vendor's reviewer.
type consoleBench struct {
	b                     *brokertest.Broker
	approver, reviewer    *benchSession
	session               string // a request ID with ~50 events in the middle of the log
	sessionEvents         int
	seedRequests, seedLog time.Duration
}

// BenchmarkConsolePages measures the console's inbox, audit search and
// session replay over HTTP against a broker with 10,000 requests and
// 1,000,000 audit events, reporting p50 and p99 per page. Target: p99
// ≤ 50 ms. The store is seeded once, before the sub-benchmarks.
func BenchmarkConsolePages(b *testing.B) {
	cb := startConsoleBench(b)
	b.Logf("seeded %d requests in %v, %d audit events in %v; replayed session %s holds %d events",
		benchRequests, cb.seedRequests.Round(time.Millisecond), benchEvents, cb.seedLog.Round(time.Millisecond), cb.session, cb.sessionEvents)
	for _, page := range []struct {
		name string
		as   *benchSession
		path string
		want string // a fragment the page must hold
	}{
		{"inbox", cb.approver, "/ui/inbox", `<tr data-request="`},
		{"inbox-page6", cb.approver, "/ui/inbox?page=6", `<tr data-request="`},
		// query.denied is 2% of the log, acme/prod a quarter of that: the
		// 50 of a page are spread over some 10,000 events.
		{"search", cb.reviewer, "/ui/audit?" + url.Values{"type": {"query.denied"}, "deployment": {"acme/prod"}}.Encode(), `data-type="query.denied"`},
		// The same from the middle of the log, as the page's next link.
		{"search-mid", cb.reviewer, "/ui/audit?" + url.Values{"type": {"query.denied"}, "deployment": {"acme/prod"}, "before": {fmt.Sprint(benchEvents / 2)}}.Encode(), `data-type="query.denied"`},
		{"search-oldest", cb.reviewer, "/ui/audit?" + url.Values{"type": {"query.denied"}, "deployment": {"acme/prod"}, "order": {"oldest"}, "from": {fmt.Sprint(benchEvents / 2)}}.Encode(), `data-type="query.denied"`},
		// A rare type on one deployment: prom.denied is 0.1% of the log.
		{"search-rare", cb.reviewer, "/ui/audit?" + url.Values{"type": {"prom.denied"}, "deployment": {"globex/staging"}}.Encode(), `data-type="prom.denied"`},
		{"replay", cb.reviewer, "/ui/audit/sessions/" + cb.session, `data-type="query.allowed"`},
		// The approver's own trail, through the tenant audit API's filter.
		{"tenant-search", cb.approver, "/ui/tenants/acme/audit?" + url.Values{"type": {"query.denied"}}.Encode(), `data-type="query.denied"`},
	} {
		b.Run(page.name, func(b *testing.B) {
			var lat []time.Duration
			for b.Loop() {
				start := time.Now()
				status, body := page.as.get(b, page.path)
				lat = append(lat, time.Since(start))
				if status != http.StatusOK || !strings.Contains(body, page.want) {
					b.Fatalf("GET %s = %d without %q: %.2000s", page.path, status, page.want, body)
				}
			}
			reportPercentiles(b, lat)
		})
	}
}

// startConsoleBench starts the broker and seeds its store.
func startConsoleBench(b *testing.B) *consoleBench {
	b.Helper()
	ctx := context.Background()
	bk := brokertest.Start(b, nil)
	// The prod deployments' agents run while the template requests are
	// made (a request needs a paired agent), then stop: an agent online
	// witnesses each new checkpoint, and the broker builds each witness's
	// consistency proof from all the log's leaf hashes, which at
	// 1,000,000 events outlasts the agent's 2 s call timeout here, so
	// the agents would retry throughout the measurement (see
	// docs/operations.md, Figures).
	var stopAgents []func()
	for _, ref := range []string{"acme/prod", "globex/prod", "acme/staging", "globex/staging"} {
		t, n, _ := strings.Cut(ref, "/")
		res, err := bk.Client.CreateDeployment(ctx, brokerapi.CreateDeploymentRequest{Tenant: t, Name: n})
		if err != nil {
			b.Fatal(err)
		}
		if n == "prod" {
			_, stop := brokertest.RunAgent(b, agent.Config{StateDir: b.TempDir(), Join: bk.Join(), PairingToken: res.Pairing.Token, Hostname: "agent-" + t}, true)
			stopAgents = append(stopAgents, stop)
		}
	}
	type dep struct{ id, agent, tenant string }
	var deps []dep
	for _, ref := range []string{"acme/prod", "acme/staging", "globex/prod", "globex/staging"} {
		d, err := bk.Client.GetDeployment(ctx, ref)
		if err != nil {
			b.Fatal(err)
		}
		x := dep{id: d.ID, tenant: d.Tenant, agent: uuid.NewString()} // an agent no longer paired
		if d.Agent != nil {
			x.agent = d.Agent.ID
		}
		deps = append(deps, x)
	}
	cb := &consoleBench{b: bk}

	// Requests: one of each tenant made through the API, the rest
	// planted in the store as copies of them, most decided.
	start := time.Now()
	eng := asUser(b, bk, "engineer@vendor.test")
	now := time.Now().UTC()
	rng := rand.New(rand.NewPCG(1, 2))
	decided := []string{store.StateExpired, store.StateDenied, store.StateCancelled, store.StateRevoked}
	for _, x := range []struct {
		dep     string
		pending int
	}{{"acme/prod", benchPendingAcme}, {"globex/prod", benchPendingGlbx}} {
		ar, err := eng.CreateRequest(ctx, brokerapi.CreateAccessRequest{Deployment: x.dep, Scopes: []string{"clickhouse:system", "prometheus:read"}, Duration: "1h", Reason: "bench " + x.dep})
		if err != nil {
			b.Fatal(err)
		}
		tmpl, err := bk.Store().GetRequest(ctx, ar.ID)
		if err != nil {
			b.Fatal(err)
		}
		for i := range benchRequests/2 - 1 {
			r := tmpl
			r.ID = uuid.NewString()
			r.CreatedAt = now.Add(-time.Duration(benchRequests-i) * time.Minute)
			r.UpdatedAt = r.CreatedAt
			r.Reason = fmt.Sprintf("incident %d on %s", i, x.dep)
			if i < benchRequests/2-1-x.pending {
				r.State = decided[rng.IntN(len(decided))]
				r.EndedAt, r.EndedBy, r.EndReason = r.CreatedAt.Add(time.Minute), "approver@acme.test", "bench"
				r.PendingUntil = r.CreatedAt.Add(time.Hour)
			} else {
				r.PendingUntil = now.Add(24 * time.Hour)
			}
			if err := bk.Store().CreateRequest(ctx, r); err != nil {
				b.Fatal(err)
			}
		}
	}
	cb.seedRequests = time.Since(start)
	for _, stop := range stopAgents {
		stop()
	}

	// The audit log: interleaved accesses of about 50 events each,
	// written through the log's batch API (RecordAll and a checkpoint
	// per batch), as agents' deliveries are.
	start = time.Now()
	type access struct {
		dep             dep
		req, grant      string
		left, queries   int
		engineer, phase string
	}
	newAccess := func() *access {
		return &access{dep: deps[rng.IntN(len(deps))], req: uuid.NewString(), grant: uuid.NewString(),
			left: 44 + rng.IntN(12), engineer: fmt.Sprintf("engineer%d@vendor.test", rng.IntN(40))}
	}
	var slots [benchInFlight]*access
	for i := range slots {
		slots[i] = newAccess()
	}
	base := now.Add(-30 * 24 * time.Hour)
	step := 30 * 24 * time.Hour / benchEvents
	var midSession *access
	batch := make([]audit.Event, 0, benchAuditBatch)
	for i := range benchEvents {
		s := rng.IntN(benchInFlight)
		a := slots[s]
		at := base.Add(time.Duration(i) * step)
		e := audit.Event{
			ID: uuid.Must(uuid.NewV7()).String(), Time: at, Outcome: audit.Success,
			Actor:      audit.Actor{Subject: a.engineer, Issuer: "vendor", Role: "engineer"},
			Deployment: a.dep.id, RequestID: a.req, GrantID: a.grant,
		}
		switch {
		case a.phase == "":
			e.Type, e.GrantID, a.phase = audit.RequestCreated, "", "created"
			e.Details = map[string]any{"scopes": []string{"clickhouse:system", "prometheus:read"}, "duration": "1h"}
		case a.phase == "created":
			e.Type, a.phase = audit.GrantIssued, "active"
			e.Actor = audit.Actor{Subject: "approver@" + a.dep.tenant + ".test", Issuer: a.dep.tenant, Tenant: a.dep.tenant, Role: "approver"}
		case a.left == 1:
			e.Type = audit.GrantExpired
			e.Actor = audit.Actor{Subject: "broker"}
		default:
			e.Source, e.AgentID = audit.Source{Kind: audit.SourceAgent, ReceivedAt: at}, a.dep.agent
			qid := fmt.Sprintf("q-%s-%d", a.grant[:8], a.queries)
			switch r := rng.IntN(1000); {
			case r < 20:
				e.Type, e.Outcome, e.Reason = audit.QueryDenied, audit.Failure, "table default.secret is not a system table"
				e.Details = map[string]any{"sql": "SELECT * FROM default.secret LIMIT 10"}
			case r < 21:
				e.Type, e.Outcome, e.Reason = audit.PromDenied, audit.Failure, "series outside the allowed metrics"
				e.Details = map[string]any{"endpoint": "/api/v1/query", "target": "customer_orders_total"}
			case r < 120:
				e.Type = audit.PromAllowed
				e.Details = map[string]any{"endpoint": "/api/v1/query", "params": map[string]any{"query": []any{"rate(ClickHouseProfileEvents_Query[5m])"}}}
			case r < 560:
				e.Type = audit.QueryAllowed
				e.Details = map[string]any{"sql": fmt.Sprintf("SELECT query_id, query_duration_ms, read_rows FROM system.query_log WHERE event_time > now() - INTERVAL %d MINUTE ORDER BY query_duration_ms DESC LIMIT 20", 5+a.queries), "query_id": qid}
			default:
				e.Type = audit.QueryFinished
				e.Details = map[string]any{"query_id": qid, "result_rows": 20, "bytes": 18432, "duration_ms": 12}
			}
			a.queries++
		}
		a.left--
		if a.left == 0 {
			if midSession == nil && i >= benchEvents/2 {
				midSession = a
			}
			slots[s] = newAccess()
		}
		batch = append(batch, e)
		if len(batch) == benchAuditBatch {
			if err := bk.RecordAudit(ctx, batch...); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	if len(batch) > 0 {
		if err := bk.RecordAudit(ctx, batch...); err != nil {
			b.Fatal(err)
		}
	}
	cb.seedLog = time.Since(start)
	cb.session = midSession.req
	recs, err := bk.Store().Records(ctx, audit.Filter{RequestID: cb.session})
	if err != nil {
		b.Fatal(err)
	}
	cb.sessionEvents = len(recs)

	cb.approver = newBenchSession(b, bk, "approver@acme.test")
	cb.reviewer = newBenchSession(b, bk, "reviewer@vendor.test")
	return cb
}

// benchSession is a signed-in web session: the broker's cookies carried
// by hand (they are Secure, and this is http on loopback), no redirect
// followed on its own.
type benchSession struct {
	base    string
	cookies map[string]string
	hc      *http.Client
}

func newBenchSession(tb testing.TB, bk *brokertest.Broker, email string) *benchSession {
	tb.Helper()
	s := &benchSession{base: bk.APIURL(), cookies: map[string]string{},
		hc: &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	body, at := s.follow(tb, http.MethodGet, s.base+"/auth/login?issuer="+brokertest.IssuerOf(email)+"&next=/ui/", nil)
	m := formAction.FindStringSubmatch(body)
	if m == nil {
		tb.Fatalf("identity provider page %s has no form: %.2000s", at, body)
	}
	form := url.Values{"email": {email}}
	for _, h := range hiddenInput.FindAllStringSubmatch(body, -1) {
		form.Set(html.UnescapeString(h[1]), html.UnescapeString(h[2]))
	}
	pageURL, _ := url.Parse(at)
	action, _ := pageURL.Parse(html.UnescapeString(m[1]))
	body, at = s.follow(tb, http.MethodPost, action.String(), form)
	if !strings.HasSuffix(at, "/ui/") || !strings.Contains(body, email) || s.cookies["tether_session"] == "" {
		tb.Fatalf("sign-in as %s ended at %s: %.2000s", email, at, body)
	}
	return s
}

// do sends one request and returns the response with its body read.
func (s *benchSession) do(tb testing.TB, method, u string, form url.Values) (*http.Response, string) {
	tb.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		tb.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if strings.HasPrefix(u, s.base) {
		for k, v := range s.cookies {
			req.AddCookie(&http.Cookie{Name: k, Value: v})
		}
	}
	res, err := s.hc.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		tb.Fatal(err)
	}
	for _, c := range res.Cookies() {
		if c.MaxAge < 0 {
			delete(s.cookies, c.Name)
		} else {
			s.cookies[c.Name] = c.Value
		}
	}
	return res, string(raw)
}

// follow sends a request and follows redirects (as GETs); it returns the
// page they end at and its URL.
func (s *benchSession) follow(tb testing.TB, method, u string, form url.Values) (string, string) {
	tb.Helper()
	for range 10 {
		res, body := s.do(tb, method, u, form)
		loc := res.Header.Get("Location")
		if res.StatusCode < 300 || res.StatusCode >= 400 || loc == "" {
			return body, u
		}
		base, _ := url.Parse(u)
		next, err := base.Parse(loc)
		if err != nil {
			tb.Fatalf("redirect to %q: %v", loc, err)
		}
		method, form, u = http.MethodGet, nil, next.String()
	}
	tb.Fatalf("more than 10 redirects from %s", u)
	return "", ""
}

// get fetches a page of the console.
func (s *benchSession) get(tb testing.TB, path string) (int, string) {
	res, body := s.do(tb, http.MethodGet, s.base+path, nil)
	return res.StatusCode, body
}
