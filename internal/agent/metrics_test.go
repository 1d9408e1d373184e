package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/approval"
	"github.com/tetherhq/tether/internal/chtest"
	"github.com/tetherhq/tether/internal/dashboards"
	"github.com/tetherhq/tether/internal/grant"
	"github.com/tetherhq/tether/internal/names"
	"github.com/tetherhq/tether/internal/protocol"
	"github.com/tetherhq/tether/internal/source/registry"
)

// scrape GETs url (an agent's /metrics) and parses the families.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s = %s", url, res.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(res.Body)
	if err != nil {
		t.Fatalf("parse %s: %v", url, err)
	}
	return fams
}

// sample is the value of the metric of family name whose labels are
// exactly labels (name=value pairs): a counter's or gauge's value, a
// histogram's count. ok is false when there is none.
func sample(fams map[string]*dto.MetricFamily, name string, labels ...string) (v float64, ok bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	for _, m := range f.GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

// checkLabels fails when any label of the families is not one of the
// bounded labels, or holds a value from leak (a grant ID, a query).
func checkLabels(t *testing.T, fams map[string]*dto.MetricFamily, leak ...string) {
	t.Helper()
	allowed := map[string]bool{"source": true, "outcome": true, "reason": true, "direction": true, "version": true, "le": true, "quantile": true}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if !allowed[l.GetName()] {
					t.Errorf("%s has label %s=%q: want only bounded labels", name, l.GetName(), l.GetValue())
				}
				for _, s := range leak {
					if strings.Contains(l.GetValue(), s) {
						t.Errorf("%s label %s=%q holds %q", name, l.GetName(), l.GetValue(), s)
					}
				}
			}
		}
	}
}

// TestAgentMetrics drives calls through the agent's data-plane handlers
// — answered, refused by the guard, by the grant's verification (bad,
// expired), by the call limit, by the witness, for a source not
// configured — and scrapes /metrics from the loopback health handler:
// each counter and histogram moved under the right labels, and no label
// holds a grant ID or a query.
func TestAgentMetrics(t *testing.T) {
	prom := newHeldProm(t)
	la := newLimitsAgent(t, Upstreams{PrometheusURL: prom.URL}, 1)
	la.a.cfg.Version = "v9.9.9-test"
	health := httptest.NewServer(la.a.healthHandler())
	t.Cleanup(health.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	tok := la.grant(t, "grant-metrics-1")
	if a := la.do(ctx, t, call{tok: tok, prom: "up"}); a.status != http.StatusOK {
		t.Fatalf("allowed call = %d %s", a.status, a.body)
	}
	if status, code, _ := promGet(t, la, tok, "/api/v1/admin/tsdb/snapshot"); status != http.StatusForbidden || code != "prom_denied" {
		t.Fatalf("admin call = %d %s, want 403 prom_denied", status, code)
	}
	if a := la.do(ctx, t, call{tok: "not-a-grant", prom: "up"}); a.status != http.StatusForbidden {
		t.Fatalf("call without a grant = %d %s", a.status, a.body)
	}
	now := time.Now()
	expired, err := grant.Issue(grant.Grant{
		ID: "grant-metrics-old", RequestID: "req-old", Deployment: la.a.state.DeploymentID, Agent: la.a.state.AgentID,
		Subject: "eng@vendor.example", Scopes: []string{names.ScopePrometheus},
		NotBefore: now.Add(-2 * time.Hour), Expiry: now.Add(-time.Hour), IssuedAt: now.Add(-2 * time.Hour),
	}, la.key)
	if err != nil {
		t.Fatal(err)
	}
	if a := la.do(ctx, t, call{tok: expired, prom: "up"}); a.status != http.StatusForbidden {
		t.Fatalf("expired grant = %d %s", a.status, a.body)
	}

	// The call limit (1 here): one call held upstream, the next refused.
	held := make(chan answer, 1)
	go func() { held <- la.do(ctx, t, call{tok: tok, prom: "held"}) }()
	select {
	case <-prom.entered:
	case <-ctx.Done():
		t.Fatal("the held call did not reach Prometheus")
	}
	inFlight, _ := sample(scrape(t, health.URL+"/metrics"), "tether_agent_calls_in_flight")
	if a := la.do(ctx, t, call{tok: tok, prom: "up"}); a.status != http.StatusTooManyRequests {
		t.Fatalf("call over the limit = %d %s", a.status, a.body)
	}
	close(prom.release)
	if a := <-held; a.status != http.StatusOK {
		t.Fatalf("held call = %d %s", a.status, a.body)
	}

	// The witness refusing.
	la.a.witness.mu.Lock()
	la.a.witness.refused, la.a.witness.loaded = "log rewritten: test", true
	la.a.witness.mu.Unlock()
	if a := la.do(ctx, t, call{tok: tok, prom: "up"}); a.status != http.StatusForbidden {
		t.Fatalf("call while the witness refuses = %d %s", a.status, a.body)
	}
	refusing := scrape(t, health.URL+"/metrics")
	la.a.witness.mu.Lock()
	la.a.witness.refused = ""
	la.a.witness.mu.Unlock()

	// ClickHouse is not configured here.
	if a := la.do(ctx, t, call{tok: tok, sql: "SELECT 1"}); a.status != http.StatusNotImplemented {
		t.Fatalf("SQL to an agent without ClickHouse = %d %s", a.status, a.body)
	}

	fams := scrape(t, health.URL+"/metrics")
	if v, _ := sample(refusing, "tether_agent_witness_refusing"); v != 1 {
		t.Errorf("tether_agent_witness_refusing while it refuses = %v, want 1", v)
	}
	if v, _ := sample(fams, "tether_agent_witness_refusing"); v != 0 {
		t.Errorf("tether_agent_witness_refusing = %v, want 0", v)
	}
	if inFlight != 1 {
		t.Errorf("tether_agent_calls_in_flight with one call held = %v, want 1", inFlight)
	}
	counts := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"tether_agent_calls_total", []string{"source", "prometheus", "outcome", "ok"}, 2},
		{"tether_agent_calls_total", []string{"source", "prometheus", "outcome", "refused"}, 5},
		{"tether_agent_calls_total", []string{"source", "prometheus", "outcome", "failed"}, 0},
		{"tether_agent_calls_total", []string{"source", "clickhouse", "outcome", "refused"}, 1},
		{"tether_agent_refusals_total", []string{"source", "prometheus", "reason", "prom_denied"}, 1},
		{"tether_agent_refusals_total", []string{"source", "prometheus", "reason", "grant_malformed"}, 1},
		{"tether_agent_refusals_total", []string{"source", "prometheus", "reason", "grant_expired"}, 1},
		{"tether_agent_refusals_total", []string{"source", "prometheus", "reason", "too_many_calls"}, 1},
		{"tether_agent_refusals_total", []string{"source", "prometheus", "reason", "witness_refusing"}, 1},
		{"tether_agent_refusals_total", []string{"source", "clickhouse", "reason", "source_not_configured"}, 1},
		{"tether_agent_call_duration_seconds", []string{"source", "prometheus"}, 7},
		{"tether_agent_upstream_ttfb_seconds", []string{"source", "prometheus"}, 2},
		{"tether_agent_calls_in_flight", nil, 0},
		{"tether_agent_build_info", []string{"version", "v9.9.9-test"}, 1},
		{"tether_agent_tailnet_up", nil, 0},
		{"tether_agent_heartbeat_last_success_timestamp_seconds", nil, 0},
	}
	for _, c := range counts {
		if got, ok := sample(fams, c.name, c.labels...); !ok || got != c.want {
			t.Errorf("%s%v = %v (present: %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	if v, _ := sample(fams, "tether_agent_bytes_total", "source", "prometheus", "direction", "out"); v < 100 {
		t.Errorf("tether_agent_bytes_total{prometheus,out} = %v, want the answers' bytes", v)
	}
	// Every refusal and allowed call above was spooled, none delivered.
	events := len(la.events(t))
	if v, _ := sample(fams, "tether_agent_spool_events"); int(v) != events || events == 0 {
		t.Errorf("tether_agent_spool_events = %v, want the %d events spooled", v, events)
	}
	if v, ok := sample(fams, "tether_agent_spool_oldest_age_seconds"); !ok || v < 0 || v > 60 {
		t.Errorf("tether_agent_spool_oldest_age_seconds = %v (present: %v), want the age of the first event, under a minute", v, ok)
	}
	if v, _ := sample(fams, "tether_agent_spool_bytes"); v <= 0 {
		t.Errorf("tether_agent_spool_bytes = %v, want the spool's size", v)
	}
	checkLabels(t, fams, "grant-", "held", "snapshot", "eng@")
}

// TestAgentMetricsRows: a ClickHouse query's result rows and upstream
// time are counted under source clickhouse, and a query the guard
// refuses under reason query_denied — its SQL in no label.
func TestAgentMetricsRows(t *testing.T) {
	ch := chtest.Start(t)
	la := newLimitsAgent(t, Upstreams{ClickHouseURL: ch.URL, ClickHouseUser: "tether", ClickHousePassword: chtest.Password}, 0)
	health := httptest.NewServer(la.a.healthHandler())
	t.Cleanup(health.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tok := la.grant(t, "grant-rows")
	const allowed, denied = "SELECT number FROM system.numbers LIMIT 7", "SELECT * FROM default.secrets"
	if a := la.do(ctx, t, call{tok: tok, sql: allowed}); a.status != http.StatusOK {
		t.Fatalf("query = %d %s", a.status, a.body)
	}
	if a := la.do(ctx, t, call{tok: tok, sql: denied}); a.status != http.StatusForbidden {
		t.Fatalf("query of a customer table = %d %s", a.status, a.body)
	}
	la.a.finishing.wg.Wait() // query.finished, with the rows, is written after the answer
	fams := scrape(t, health.URL+"/metrics")
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"tether_agent_rows_total", []string{"source", "clickhouse"}, 7},
		{"tether_agent_calls_total", []string{"source", "clickhouse", "outcome", "ok"}, 1},
		{"tether_agent_refusals_total", []string{"source", "clickhouse", "reason", "query_denied"}, 1},
	} {
		if got, ok := sample(fams, c.name, c.labels...); !ok || got != c.want {
			t.Errorf("%s%v = %v (present: %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	// The query, and the guard's read of the server's catalog before it.
	if v, _ := sample(fams, "tether_agent_upstream_ttfb_seconds", "source", "clickhouse"); v < 1 {
		t.Errorf("tether_agent_upstream_ttfb_seconds{clickhouse} count = %v, want the query's request at least", v)
	}
	body := func(sql string) float64 {
		b, _ := json.Marshal(protocol.ClickHouseQuery{SQL: sql})
		return float64(len(b))
	}
	if v, _ := sample(fams, "tether_agent_bytes_total", "source", "clickhouse", "direction", "in"); v != body(allowed)+body(denied) {
		t.Errorf("tether_agent_bytes_total{clickhouse,in} = %v, want the two calls' bodies, %v bytes", v, body(allowed)+body(denied))
	}
	if v, _ := sample(fams, "tether_agent_bytes_total", "source", "clickhouse", "direction", "out"); v < 8 {
		t.Errorf("tether_agent_bytes_total{clickhouse,out} = %v, want the answers' bytes", v)
	}
	checkLabels(t, fams, "grant-", "secrets", "SELECT")
}

// TestMetricsNotOnTailnet: the tailnet API serves no /metrics — not to
// the broker node with a valid signature (404), not to anyone else
// (403) — while the loopback health handler does; and the broker calls
// the agent refused are counted by reason, under source none.
func TestMetricsNotOnTailnet(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	now := time.Now()
	rig := newBrokerRig(t, ctx, func() time.Time { return now })
	for _, c := range []struct {
		name string
		c    brokerCall
		want int
	}{
		{"broker node, signed", brokerCall{from: rig.brokerNode, key: rig.brokerKey, at: now, nonce: freshNonce(), path: "/metrics"}, http.StatusNotFound},
		{"broker node, unsigned", brokerCall{from: rig.brokerNode, unsigned: true, path: "/metrics"}, http.StatusForbidden},
		{"other node", brokerCall{from: rig.other, key: rig.brokerKey, at: now, nonce: freshNonce(), path: "/metrics"}, http.StatusForbidden},
		{"stale", brokerCall{from: rig.brokerNode, key: rig.brokerKey, at: now.Add(-2 * time.Minute), nonce: freshNonce(), path: "/metrics"}, http.StatusForbidden},
		{"other key", brokerCall{from: rig.brokerNode, key: rig.otherKey, at: now, nonce: freshNonce(), path: "/metrics"}, http.StatusForbidden},
	} {
		if got, msg := rig.do(t, c.c); got != c.want {
			t.Errorf("%s: GET /metrics on the tailnet = %d (%s), want %d", c.name, got, msg, c.want)
		}
	}
	// The tailnet API's answer to the broker is no exposition.
	hc := &http.Client{Transport: &http.Transport{DialContext: rig.brokerNode.Dial}, Timeout: 30 * time.Second}
	if res, err := hc.Get(rig.base + "/metrics"); err == nil {
		var buf bytes.Buffer
		buf.ReadFrom(res.Body)
		res.Body.Close()
		if strings.Contains(buf.String(), "tether_agent_") {
			t.Errorf("the tailnet API answered GET /metrics with metrics: %.200s", buf.String())
		}
	}

	health := httptest.NewServer(rig.a.healthHandler())
	t.Cleanup(health.Close)
	fams := scrape(t, health.URL+"/metrics")
	for _, c := range []struct {
		reason string
		want   float64
	}{
		{reasonMalformedCall, 2}, // the two unsigned calls
		{reasonNotBroker, 1},
		{reasonClockSkew, 1},
		{reasonBadSignature, 1},
	} {
		if got, _ := sample(fams, "tether_agent_refusals_total", "source", "none", "reason", c.reason); got != c.want {
			t.Errorf("tether_agent_refusals_total{source=none,reason=%s} = %v, want %v", c.reason, got, c.want)
		}
	}
	if v, _ := sample(fams, "tether_agent_broker_nodes_proven"); v != 1 {
		t.Errorf("tether_agent_broker_nodes_proven = %v, want 1", v)
	}
	checkLabels(t, fams)
}

// TestRefusalReasons: every way verifyGrant refuses maps to its own
// bounded reason, however the error is wrapped.
func TestRefusalReasons(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("verify grant g-1: something: %w", err) }
	tests := []struct {
		err  error
		want string
	}{
		{wrap(grant.ErrExpired), reasonGrantExpired},
		{wrap(grant.ErrRevoked), reasonGrantRevoked},
		{wrap(grant.ErrNotYetValid), reasonGrantNotYetValid},
		{wrap(grant.ErrScope), reasonGrantScope},
		{wrap(grant.ErrSignature), reasonGrantSignature},
		{wrap(grant.ErrAlgorithm), reasonGrantSignature},
		{wrap(grant.ErrWrongAgent), reasonGrantOtherAgent},
		{wrap(grant.ErrWrongDeployment), reasonGrantOtherAgent},
		{wrap(grant.ErrMalformed), reasonGrantMalformed},
		{wrap(ErrWitnessRefuses), reasonWitnessRefusing},
		{wrap(approval.ErrNotApproved), reasonNotApproved},
		{wrap(approval.ErrBreakGlassRefused), reasonBreakGlassRefused},
		{errors.New("SELECT secret FROM default.t"), reasonGrantRefused},
	}
	for _, tt := range tests {
		if got := grantRefusalReason(tt.err); got != tt.want {
			t.Errorf("grantRefusalReason(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
	if got := callRefusalReason(refusedCall(reasonReplayedCall, errors.New("replayed call"))); got != reasonReplayedCall {
		t.Errorf("callRefusalReason(replayed) = %q", got)
	}
	if got := callRefusalReason(errors.New("anything")); got != reasonInternal {
		t.Errorf("callRefusalReason(untagged) = %q, want %q", got, reasonInternal)
	}
	if err := refusedCall(reasonClockSkew, errors.New("clock skew: …")); err.Error() != "clock skew: …" {
		t.Errorf("a tagged refusal's message = %q, want the refusal's own", err)
	}
	names := registry.Names()
	if slices.Contains(names, sourceNone) {
		t.Errorf("a source is named %q, the label of calls of no source", sourceNone)
	}
}

// TestSpoolGauges: the spool's depth counted at start from the file a
// previous run left, and the age of its oldest event read from the head
// of the file.
func TestSpoolGauges(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "spool.jsonl")
	at := time.Date(2026, 5, 1, 12, 0, 0, 123456789, time.UTC)
	s, err := openSpool(path, func() time.Time { return at })
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := s.Record(context.Background(), audit.Event{Type: audit.AuthFailed, Outcome: audit.Failure, Reason: fmt.Sprint("r", i),
			Actor: audit.Actor{Subject: "agent:x", Role: "agent"}}); err != nil {
			t.Fatal(err)
		}
		at = at.Add(time.Minute)
	}
	// The first event delivered, the second is the oldest.
	if evs, err := s.pending(1, 1<<20); err != nil || len(evs) != 1 {
		t.Fatalf("pending = %d events, %v", len(evs), err)
	}
	if err := s.ack(1); err != nil {
		t.Fatal(err)
	}
	_, head := s.undelivered(spoolHead)
	got, ok := oldestSpooled(head)
	if want := time.Date(2026, 5, 1, 12, 1, 0, 123456789, time.UTC); !ok || !got.Equal(want) {
		t.Errorf("oldestSpooled = %v, %v; want %v", got, ok, want)
	}
	s.close()
	var m agentMetrics
	m.countSpool(path)
	if got := m.spooled.Load(); got != 3 {
		t.Errorf("countSpool after a restart = %d, want 3 (the delivered one is delivered again)", got)
	}
	if _, ok := oldestSpooled(nil); ok {
		t.Error("oldestSpooled of an empty spool: ok")
	}
	// The time is read from the event's own JSON, as audit.Event marshals.
	b, _ := json.Marshal(audit.Event{Time: at})
	if !bytes.Contains(b[:min(len(b), spoolHead)], []byte(`"time":"`)) {
		t.Errorf("an event's JSON does not carry its time in its first %d bytes: %s", spoolHead, b)
	}
}

// TestDashboardMetricsRegistered: every agent metric the agent's
// dashboard (deploy/grafana/agent.json) and the tether-agent alerts
// (deploy/prometheus/alerts.yml) name is registered on the agent's
// registry — also those with no series until their first observation,
// which a scrape of an idle agent cannot show (internal/dashboards
// scrapes a running agent for the others).
func TestDashboardMetricsRegistered(t *testing.T) {
	a := &Agent{cfg: Config{StateDir: t.TempDir()}, now: time.Now}
	ch := make(chan *prometheus.Desc, 64)
	go func() { a.metrics().reg.Describe(ch); close(ch) }()
	fqName := regexp.MustCompile(`fqName: "([^"]+)"`)
	registered := map[string]bool{}
	for d := range ch {
		if m := fqName.FindStringSubmatch(d.String()); m != nil {
			registered[m[1]] = true
		}
	}
	var exprs []string
	d, err := dashboards.LoadDashboard(filepath.Join("..", "..", "deploy", "grafana", "agent.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range d.AllPanels() {
		for _, q := range p.Targets {
			exprs = append(exprs, q.Expr)
		}
	}
	g, err := dashboards.LoadRules(filepath.Join("..", "..", "deploy", "prometheus", "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, grp := range g.Groups {
		for _, r := range grp.Rules {
			if grp.Name == "tether-agent" {
				exprs = append(exprs, r.Expr)
			}
		}
	}
	seen := 0
	for _, e := range exprs {
		names, err := dashboards.MetricNames(e)
		if err != nil {
			t.Fatalf("%q: %v", e, err)
		}
		for _, n := range names {
			seen++
			if _, ok := dashboards.Family(n, func(s string) bool { return registered[s] }); !ok {
				t.Errorf("the agent registers no %s (in %q)", n, e)
			}
		}
	}
	if seen < 20 || !registered["tether_agent_refusals_total"] {
		t.Errorf("%d metric references checked, registered %v", seen, registered)
	}
}
