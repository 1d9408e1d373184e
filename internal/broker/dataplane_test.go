package broker_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/names"

	"github.com/google/uuid"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/agent"
	"github.com/tetherhq/tether/internal/broker"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/brokertest"
	"github.com/tetherhq/tether/internal/chtest"
	"github.com/tetherhq/tether/internal/grant"
	"github.com/tetherhq/tether/internal/promtest"
	"github.com/tetherhq/tether/internal/protocol"
	"github.com/tetherhq/tether/internal/store"
)

func TestMain(m *testing.M) {
	code := m.Run()
	chtest.Stop()
	promtest.Stop()
	os.Exit(code)
}

const canary = "canary-5e1f-customer-data"

// dataPlane is a broker with one agent guarding a real ClickHouse and
// Prometheus.
type dataPlane struct {
	b     *brokertest.Broker
	a     *agent.Agent
	ch    *chtest.Server
	prom  *promtest.Server
	depID string
}

func startDataPlane(t testing.TB) *dataPlane {
	t.Helper()
	ch := chtest.Start(t)
	ch.Exec(t, "CREATE TABLE IF NOT EXISTS default.secret (v String) ENGINE = Memory")
	if !strings.Contains(ch.Exec(t, "SELECT v FROM default.secret"), canary) {
		ch.Exec(t, "INSERT INTO default.secret VALUES ('"+canary+"')")
	}
	prom := promtest.Start(t)
	// The tests issue grants by hand (see grant): the broker's lifecycle
	// stays out of the way of their expiry.
	b := brokertest.Start(t, func(c *broker.Config) { c.LifecycleInterval = time.Minute })
	res, err := b.Client.CreateDeployment(context.Background(), brokerapi.CreateDeploymentRequest{Tenant: "acme", Name: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	a, _ := brokertest.RunAgent(t, agent.Config{
		StateDir: t.TempDir(), Join: b.Join(), PairingToken: res.Pairing.Token, Hostname: "dataplane",
		Upstreams: agent.Upstreams{
			ClickHouseURL: ch.URL, ClickHouseUser: "tether", ClickHousePassword: chtest.Password,
			PrometheusURL: prom.URL,
			// Room for the 100 MB (12.5 M rows) streaming benchmark.
			Limits: agent.QueryLimits{MaxResultRows: 20_000_000},
		},
	}, true)
	return &dataPlane{b: b, a: a, ch: ch, prom: prom, depID: res.Deployment.ID}
}

func (d *dataPlane) grant(t testing.TB, mod func(*grant.Grant)) string {
	t.Helper()
	now := time.Now()
	g := grant.Grant{
		ID: uuid.NewString(), RequestID: uuid.NewString(), Deployment: d.depID, Agent: d.a.State().AgentID,
		Subject: "engineer@vendor.test", Scopes: []string{names.ScopeClickHouse, names.ScopePrometheus},
		NotBefore: now.Add(-time.Minute), Expiry: now.Add(10 * time.Minute), IssuedAt: now, PolicyHash: "test",
	}
	if mod != nil {
		mod(&g)
	}
	tok, err := d.b.IssueGrant(g)
	if err != nil {
		t.Fatalf("IssueGrant: %v", err)
	}
	if g.Deployment == d.depID {
		// The broker takes an agent's events only for grants it holds.
		err := d.b.Store().CreateRequest(context.Background(), store.AccessRequest{
			ID: g.RequestID, DeploymentID: d.depID, Tenant: "acme", Name: "prod",
			Requester: store.Person{Subject: g.Subject, Issuer: "https://idp.vendor.test"}, Scopes: g.Scopes,
			Duration: g.Expiry.Sub(g.NotBefore), Reason: "test", State: store.StateActive, Decision: []byte("{}"),
			Grant:     &store.GrantRecord{ID: g.ID, Token: tok, Scopes: g.Scopes, AgentID: g.Agent, NotBefore: g.NotBefore, Expiry: g.Expiry, IssuedAt: g.IssuedAt},
			CreatedAt: now, UpdatedAt: now, Version: 1,
		})
		if err != nil {
			t.Fatalf("store the grant's request: %v", err)
		}
	}
	return tok
}

func (d *dataPlane) sql(t testing.TB, tok, sql string) (int, string) {
	t.Helper()
	body, _ := json.Marshal(protocol.ClickHouseQuery{SQL: sql})
	res, err := d.b.CallAgent(context.Background(), d.depID, http.MethodPost, protocol.PathClickHouseQuery, body, http.Header{protocol.HeaderGrant: {tok}})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	out, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(out)
}

// auditOf returns the events of one grant once the agent delivered them.
func (d *dataPlane) auditOf(t *testing.T, grantID string, want int) []audit.Event {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		evs, err := d.b.Client.AuditSearch(context.Background(), brokerapi.AuditQuery{Grant: grantID})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) >= want || time.Now().After(deadline) {
			var out []audit.Event
			for _, ae := range evs {
				var e audit.Event
				json.Unmarshal(ae.Event, &e)
				out = append(out, e)
			}
			return out
		}
		if _, err := d.a.Deliver(context.Background()); err != nil {
			t.Logf("deliver: %v", err)
		}
		time.Sleep(50 * time.Millisecond) // polling observable state
	}
}

func grantID(t *testing.T, tok string) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		GID string `json:"gid"`
	}
	json.Unmarshal(b, &c)
	return c.GID
}

// TestDataPlaneClickHouse: allowed SQL reaches ClickHouse and streams back;
// denied SQL never does; both are audited with the grant.
func TestDataPlaneClickHouse(t *testing.T) {
	d := startDataPlane(t)
	tok := d.grant(t, nil)
	status, out := d.sql(t, tok, "SELECT name FROM system.tables WHERE database = 'system' ORDER BY name LIMIT 3")
	if status != http.StatusOK || !strings.HasPrefix(out, "name\n") {
		t.Fatalf("allowed query = %d %q", status, out)
	}
	for _, q := range []string{
		"SELECT v FROM default.secret",
		"SELECT * FROM secret",
		"SELECT query FROM system.query_log",
		"INSERT INTO default.secret VALUES ('x')",
		"KILL QUERY WHERE 1",
	} {
		status, out := d.sql(t, tok, q)
		if status != http.StatusForbidden || !strings.Contains(out, "query_denied") || strings.Contains(out, canary) {
			t.Errorf("%q = %d %q, want 403 query_denied", q, status, out)
		}
	}
	evs := d.auditOf(t, grantID(t, tok), 7)
	count := map[audit.Type]int{}
	for _, e := range evs {
		count[e.Type]++
		if e.Actor.Subject != "engineer@vendor.test" || e.Deployment != d.depID {
			t.Errorf("event %s has actor %q deployment %q", e.Type, e.Actor.Subject, e.Deployment)
		}
		if e.Type == audit.QueryFinished && e.Details["result_rows"] != float64(3) {
			t.Errorf("query.finished result_rows = %v, want 3 (the rows, not the header line)", e.Details["result_rows"])
		}
	}
	if count[audit.QueryAllowed] != 1 || count[audit.QueryFinished] != 1 || count[audit.QueryDenied] != 5 {
		t.Errorf("audit events = %v, want 1 allowed, 1 finished, 5 denied", count)
	}
}

// TestGrantAttacks: every malformed or unfit grant is refused before any
// guard or upstream, and audited.
func TestGrantAttacks(t *testing.T) {
	d := startDataPlane(t)
	_, otherKey, _ := ed25519.GenerateKey(rand.Reader)
	forged := func() string {
		now := time.Now()
		tok, err := grant.Issue(grant.Grant{ID: uuid.NewString(), RequestID: "r", Deployment: d.depID, Agent: d.a.State().AgentID,
			Subject: "mallory", Scopes: []string{names.ScopeClickHouse}, NotBefore: now.Add(-time.Minute), Expiry: now.Add(time.Hour), IssuedAt: now}, otherKey)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	unsigned := func(alg string) string {
		h := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"` + alg + `"}`))
		now := time.Now().Unix()
		p := base64.RawURLEncoding.EncodeToString([]byte(`{"gid":"g","dep":"` + d.depID + `","agt":"` + d.a.State().AgentID + `","sub":"mallory","scp":["clickhouse:system"],"nbf":` + itoa(now-60) + `,"exp":` + itoa(now+3600) + `}`))
		return h + "." + p + "."
	}
	revoked := d.grant(t, nil)
	res, err := d.b.CallAgent(context.Background(), d.depID, http.MethodPost, protocol.PathRevoke, []byte(`{"grant_id":"`+grantID(t, revoked)+`"}`), nil)
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("revoke: %v %v", res, err)
	}
	res.Body.Close()
	tests := []struct{ name, tok string }{
		{"none", ""},
		{"expired", d.grant(t, func(g *grant.Grant) { g.NotBefore, g.Expiry = time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour) })},
		{"not yet valid", d.grant(t, func(g *grant.Grant) { g.NotBefore, g.Expiry = time.Now().Add(time.Hour), time.Now().Add(2*time.Hour) })},
		{"other deployment", d.grant(t, func(g *grant.Grant) { g.Deployment = uuid.NewString() })},
		{"other agent", d.grant(t, func(g *grant.Grant) { g.Agent = uuid.NewString() })},
		{"wrong scope", d.grant(t, func(g *grant.Grant) { g.Scopes = []string{names.ScopePrometheus} })},
		{"revoked", revoked},
		{"forged signature", forged()},
		{"alg none", unsigned("none")},
		{"alg HS256", unsigned("HS256")},
	}
	for _, tt := range tests {
		status, out := d.sql(t, tt.tok, "SELECT 1 FROM system.one")
		if status != http.StatusForbidden || !strings.Contains(out, "grant_refused") {
			t.Errorf("%s: %d %q, want 403 grant_refused", tt.name, status, out)
		}
	}
	// Refusals are audited (as auth.failed, spooled by the agent).
	if _, err := d.a.Deliver(context.Background()); err != nil {
		t.Fatal(err)
	}
	evs, err := d.b.Client.AuditSearch(context.Background(), brokerapi.AuditQuery{Type: string(audit.AuthFailed)})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, ae := range evs {
		if bytes.Contains(ae.Event, []byte("grant refused")) {
			n++
		}
	}
	if n != len(tests) {
		t.Errorf("%d grant refusals audited, want %d", n, len(tests))
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// BenchmarkStreamClickHouse streams a 100 MB system.numbers result
// (RowBinary) from ClickHouse through the agent, over the tailnet, to the
// broker, and reports MB/s and the whole test process's peak RSS (broker,
// agent and test together: an upper bound for the agent's).
func BenchmarkStreamClickHouse(b *testing.B) {
	d := startDataPlane(b)
	tok := d.grant(b, nil)
	body, _ := json.Marshal(protocol.ClickHouseQuery{SQL: "SELECT number FROM system.numbers LIMIT 12500000", Format: "RowBinary"})
	b.SetBytes(100_000_000)
	for b.Loop() {
		res, err := d.b.CallAgent(context.Background(), d.depID, http.MethodPost, protocol.PathClickHouseQuery, body, http.Header{protocol.HeaderGrant: {tok}})
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if err != nil || res.StatusCode != http.StatusOK || n != 100_000_000 {
			b.Fatalf("streamed %d bytes, status %d, %v", n, res.StatusCode, err)
		}
	}
	b.ReportMetric(peakRSSMB(b), "peak-RSS-MB")
}

func peakRSSMB(b *testing.B) float64 {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			return float64(kb) / 1024
		}
	}
	return 0
}

func (d *dataPlane) promCall(t *testing.T, tok, method, target string) (int, string) {
	t.Helper()
	res, err := d.b.CallAgent(context.Background(), d.depID, method, "/v1/prometheus"+target, nil, http.Header{protocol.HeaderGrant: {tok}})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	out, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(out)
}

// TestDataPlanePrometheus: allowed calls return Prometheus's data; denied
// ones never reach it.
func TestDataPlanePrometheus(t *testing.T) {
	d := startDataPlane(t)
	d.prom.WaitForSamples(t)
	tok := d.grant(t, nil)
	status, out := d.promCall(t, tok, http.MethodGet, "/api/v1/query?query=up")
	if status != http.StatusOK || !strings.Contains(out, `"job":"prometheus"`) {
		t.Fatalf("query up = %d %s", status, out)
	}
	now := time.Now().Unix()
	status, out = d.promCall(t, tok, http.MethodGet, "/api/v1/query_range?query=up&start="+itoa(now-300)+"&end="+itoa(now)+"&step=15")
	if status != http.StatusOK || !strings.Contains(out, `"resultType":"matrix"`) {
		t.Fatalf("query_range = %d %s", status, out)
	}
	denied := []struct{ method, target string }{
		{http.MethodPost, "/api/v1/admin/tsdb/delete_series?match[]=up"},
		{http.MethodPost, "/-/quit"},
		{http.MethodGet, "/api/v1/status/config"},
		{http.MethodGet, "/api/v1/status/flags"},
		{http.MethodGet, "/federate?match[]=up"},
		{http.MethodGet, "/api/v1/query?query=up{"},
		{http.MethodGet, "/api/v1/%61dmin/tsdb/snapshot"},
		{http.MethodGet, "/API/v1/query?query=up"},
	}
	for _, c := range denied {
		status, out := d.promCall(t, tok, c.method, c.target)
		if status != http.StatusForbidden || !strings.Contains(out, "prom_denied") {
			t.Errorf("%s %s = %d %s, want 403 prom_denied", c.method, c.target, status, out)
		}
	}
	// None of them reached Prometheus: its own request counters say so.
	res, err := http.Get(d.prom.URL + "/api/v1/query?query=" + urlQuery(`sum(prometheus_http_requests_total{handler=~"/api/v1/status/config|/api/v1/status/flags|/federate|/api/v1/admin/.*|/-/quit"})`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if strings.Contains(string(b), `"value"`) && !strings.Contains(string(b), `,"0"]`) {
		t.Errorf("Prometheus counted requests to denied handlers: %s", b)
	}
	// A grant for SQL only does not open Prometheus.
	sqlOnly := d.grant(t, func(g *grant.Grant) { g.Scopes = []string{names.ScopeClickHouse} })
	if status, _ := d.promCall(t, sqlOnly, http.MethodGet, "/api/v1/query?query=up"); status != http.StatusForbidden {
		t.Errorf("SQL-only grant on Prometheus = %d, want 403", status)
	}
}

func urlQuery(s string) string {
	return (&url.URL{RawQuery: url.Values{"q": {s}}.Encode()}).Query().Encode()[2:]
}

// TestRevokeCutsOffStream: revoking a grant stops its query in flight.
func TestRevokeCutsOffStream(t *testing.T) {
	d := startDataPlane(t)
	tok := d.grant(t, nil)
	body, _ := json.Marshal(protocol.ClickHouseQuery{SQL: "SELECT number FROM system.numbers LIMIT 9000000", Format: "TabSeparated"})
	res, err := d.b.CallAgent(context.Background(), d.depID, http.MethodPost, protocol.PathClickHouseQuery, body, http.Header{protocol.HeaderGrant: {tok}})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	first := make([]byte, 4096)
	if _, err := io.ReadFull(res.Body, first); err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("stream start: %d %v", res.StatusCode, err)
	}
	rv, err := d.b.CallAgent(context.Background(), d.depID, http.MethodPost, protocol.PathRevoke, []byte(`{"grant_id":"`+grantID(t, tok)+`"}`), nil)
	if err != nil {
		t.Fatal(err)
	}
	var rr protocol.RevokeResponse
	json.NewDecoder(rv.Body).Decode(&rr)
	rv.Body.Close()
	if rr.CutOff != 1 {
		t.Errorf("revoke cut off %d calls, want 1", rr.CutOff)
	}
	n, _ := io.Copy(io.Discard, res.Body)
	if total := n + 4096; total >= 60_000_000 {
		t.Errorf("read %d bytes after revocation: the stream was not cut off", total)
	}
	evs := d.auditOf(t, grantID(t, tok), 2)
	cut := false
	for _, e := range evs {
		if e.Type == audit.QueryFinished && e.Outcome == audit.Failure && strings.Contains(e.Reason, "cut off") {
			cut = true
		}
	}
	if !cut {
		t.Errorf("no query.finished failure saying the query was cut off: %+v", evs)
	}
	if status, _ := d.sql(t, tok, "SELECT 1 FROM system.one"); status != http.StatusForbidden {
		t.Errorf("revoked grant afterwards = %d, want 403", status)
	}
}

// TestExpiryEndsQueryAtAgent: the agent enforces a grant's expiry by
// itself, with no word from the broker: a query in flight is cut off at
// expiry and ClickHouse stops running it.
func TestExpiryEndsQueryAtAgent(t *testing.T) {
	d := startDataPlane(t)
	tok := d.grant(t, func(g *grant.Grant) { g.Expiry = time.Now().Add(2 * time.Second) })
	body, _ := json.Marshal(protocol.ClickHouseQuery{SQL: "SELECT count() FROM system.numbers"})
	start := time.Now()
	res, err := d.b.CallAgent(context.Background(), d.depID, http.MethodPost, protocol.PathClickHouseQuery, body, http.Header{protocol.HeaderGrant: {tok}})
	if err == nil {
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
	}
	if took := time.Since(start); took > 20*time.Second {
		t.Fatalf("the query ran %v past a 2 s grant", took)
	}
	running := func() bool {
		return strings.TrimSpace(d.ch.Exec(t, "SELECT count() FROM system.processes WHERE query_id LIKE 'tether-"+grantID(t, tok)+"-%'")) != "0"
	}
	deadline := time.Now().Add(10 * time.Second)
	for running() {
		if time.Now().After(deadline) {
			t.Fatal("ClickHouse still runs the expired grant's query")
		}
		time.Sleep(20 * time.Millisecond) // polling ClickHouse's observable state
	}
	evs := d.auditOf(t, grantID(t, tok), 2)
	expired := false
	for _, e := range evs {
		if e.Type == audit.QueryFinished && e.Outcome == audit.Failure && strings.Contains(e.Reason, "expired") {
			expired = true
		}
	}
	if !expired {
		t.Errorf("no query.finished failure saying the grant expired: %+v", evs)
	}
}
