package agent

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/tetherhq/tether/internal/brokerapi"

	"github.com/tetherhq/tether/internal/protocol"
	"github.com/tetherhq/tether/internal/source"
	"github.com/tetherhq/tether/internal/source/clickhouse"
	"github.com/tetherhq/tether/internal/source/prometheus"
)

// The agent's tests call the two sources' handlers by name, as the mux
// serves them.

func (a *Agent) handleClickHouse(w http.ResponseWriter, r *http.Request) {
	a.serveSource(clickhouse.Source)(w, r)
}

func (a *Agent) handlePrometheus(w http.ResponseWriter, r *http.Request) {
	a.serveSource(prometheus.Source)(w, r)
}

// TestUpstreamsValidate: each configured source's URL is a base URL,
// ClickHouse has its read-only user, and Sources names only registered
// sources.
func TestUpstreamsValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		up   Upstreams
		want string // substring of the error; "" for none
	}{
		{"none", Upstreams{}, ""},
		{"both", Upstreams{ClickHouseURL: "http://127.0.0.1:8123", ClickHouseUser: "tether", PrometheusURL: "http://127.0.0.1:9090/"}, ""},
		{"clickhouse path", Upstreams{ClickHouseURL: "http://127.0.0.1:8123/x", ClickHouseUser: "tether"}, `ClickHouse URL "http://127.0.0.1:8123/x": want the server's base URL`},
		{"prometheus query", Upstreams{PrometheusURL: "http://127.0.0.1:9090/?a=b"}, `Prometheus URL "http://127.0.0.1:9090/?a=b"`},
		{"prometheus scheme", Upstreams{PrometheusURL: "file:///etc/passwd"}, "Prometheus URL"},
		{"clickhouse no user", Upstreams{ClickHouseURL: "http://127.0.0.1:8123"}, "ClickHouse user is not set"},
		{"by source name", Upstreams{Sources: map[string]source.Upstream{"prometheus": {URL: "http://127.0.0.1:9090"}}}, ""},
		{"by source name, bad URL", Upstreams{Sources: map[string]source.Upstream{"prometheus": {URL: "ftp://x"}}}, "Prometheus URL"},
		{"unknown source", Upstreams{Sources: map[string]source.Upstream{"postgres": {URL: "http://127.0.0.1:5432"}}}, `upstream "postgres": no such data source; want one of clickhouse, prometheus`},
	} {
		err := tc.up.Validate()
		if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: Validate() = %v, want %q", tc.name, err, tc.want)
		}
	}
}

// TestUnconfiguredSource: a source without an upstream answers 501 with
// its own code, before looking at the grant.
func TestUnconfiguredSource(t *testing.T) {
	la := newLimitsAgent(t, Upstreams{}, 0)
	for _, tc := range []struct{ method, path, code, msg string }{
		{"POST", protocol.PathClickHouseQuery, "no_clickhouse", "this agent has no ClickHouse configured (--clickhouse-url)"},
		{"GET", protocol.PathPrometheus + "api/v1/query?query=up", "no_prometheus", "this agent has no Prometheus configured (--prometheus-url)"},
	} {
		req, _ := http.NewRequest(tc.method, la.url+tc.path, strings.NewReader(`{"sql":"SELECT 1"}`))
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var e brokerapi.ErrorEnvelope
		json.NewDecoder(res.Body).Decode(&e)
		res.Body.Close()
		if res.StatusCode != http.StatusNotImplemented || e.Error.Code != tc.code || e.Error.Message != tc.msg {
			t.Errorf("%s %s = %d %+v, want 501 %s %q", tc.method, tc.path, res.StatusCode, e.Error, tc.code, tc.msg)
		}
	}
}
