package promguard_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"github.com/tetherhq/tether/internal/promguard"
)

// call is one request as an agent would receive it.
type call struct {
	method string
	target string   // the request target, parsed as a server does (url.ParseRequestURI)
	u      *url.URL // used instead of target, for URLs no request line yields
	ct     string
	body   string
	// For a denied call, a substring of the reason. For an allowed one,
	// when set, the rebuilt parameters, encoded.
	want string
	// newSyntax marks PromQL that older Prometheus servers reject.
	newSyntax bool
}

func (c call) String() string {
	if c.u != nil {
		return fmt.Sprintf("%s %#v %q %q", c.method, *c.u, c.ct, printable(c.body))
	}
	return fmt.Sprintf("%s %s %q %q", c.method, printable(c.target), c.ct, printable(c.body))
}

func printable(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}

func (c call) check(t testing.TB) (promguard.Request, promguard.Verdict) {
	t.Helper()
	u := c.u
	if u == nil {
		var err error
		u, err = url.ParseRequestURI(c.target)
		if err != nil {
			t.Fatalf("%v: the test's target does not parse: %v", c, err)
		}
	}
	return promguard.Check(c.method, u, c.ct, []byte(c.body))
}

// q encodes parameters in the order given.
func q(kv ...string) string {
	var b strings.Builder
	for i := 0; i < len(kv); i += 2 {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(url.QueryEscape(kv[i]) + "=" + url.QueryEscape(kv[i+1]))
	}
	return b.String()
}

func get(path string, kv ...string) call {
	if len(kv) == 0 {
		return call{method: http.MethodGet, target: path}
	}
	return call{method: http.MethodGet, target: path + "?" + q(kv...)}
}

func post(path string, kv ...string) call {
	return call{method: http.MethodPost, target: path, ct: "application/x-www-form-urlencoded", body: q(kv...)}
}

func (c call) wants(s string) call { c.want = s; return c }

func (c call) modern() call { c.newSyntax = true; return c }

const (
	typical = `sum(rate(http_requests_total{job="api"}[5m])) by (code)`
	t0      = "1700000000"
	t1h     = "1700003600"
	t31d    = "1702678400" // t0 + 31 days
)

// nested3 is the review's attack: three levels of month-long subqueries,
// each within the per-subquery bound, 4.2 s of Prometheus CPU for one
// series.
const nested3 = "max_over_time(max_over_time(max_over_time(rate(up[5m])[31d:5m])[31d:5m])[31d:5m])"

func bigQuery(n int) string {
	return "up" + strings.Repeat("+up", (n-2)/3)
}

var allowed = []call{
	get("/api/v1/query", "query", "up").wants("query=up&timeout=2m"),
	get("/api/v1/query", "query", typical),
	get("/api/v1/query", "query", "up", "time", t0).wants("query=up&time=1700000000&timeout=2m"),
	get("/api/v1/query", "query", "up", "time", "2023-11-14T22:13:20Z").wants("query=up&time=1700000000&timeout=2m"),
	get("/api/v1/query", "query", "up", "time", "2023-11-14T22:13:20.1239+01:00").wants("query=up&time=1699996400.123&timeout=2m"),
	get("/api/v1/query", "query", "up", "time", "1700000000.5").wants("query=up&time=1700000000.500&timeout=2m"),
	get("/api/v1/query", "query", "up", "time", "1.7e9").wants("query=up&time=1700000000&timeout=2m"),
	get("/api/v1/query", "query", "up", "timeout", "30s").wants("query=up&timeout=30s"),
	get("/api/v1/query", "query", "up", "timeout", "120").wants("query=up&timeout=2m"),
	get("/api/v1/query", "query", "up", "timeout", "1.5").wants("query=up&timeout=1s500ms"),
	get("/api/v1/query", "query", "up", "stats", "all"),
	get("/api/v1/query", "query", "up", "limit", "100").wants("limit=100&query=up&timeout=2m"),
	get("/api/v1/query", "query", "up", "limit", "007").wants("limit=7&query=up&timeout=2m"),
	get("/api/v1/query", "query", "sum(\n  rate(up[5m])\n)\n"),
	get("/api/v1/query", "query", `up{job="データ"}`),
	get("/api/v1/query", "query", `{"my.metric", job="a"}`).modern(),
	get("/api/v1/query", "query", `histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket[5m])))`),
	get("/api/v1/query", "query", `max_over_time(rate(up[5m])[1h:1m])`),
	get("/api/v1/query", "query", `max_over_time(up[31d])`),
	get("/api/v1/query", "query", `up offset 1w`),
	get("/api/v1/query", "query", `up @ 1700000000`),
	get("/api/v1/query", "query", `up{job=~"a|b\\.c", instance!="x"}`),
	get("/api/v1/query", "query", `topk(5, count by (__name__) ({__name__=~".+"}))`),
	get("/api/v1/query", "query", `1 + 1`),
	get("/api/v1/query", "query", `label_replace(up, "x", "$1", "job", "(.*)")`),
	get("/api/v1/query", "query", bigQuery(promguard.MaxQueryLen)),
	get("/api/v1/query", "query", strings.Repeat("(", 128)+"up"+strings.Repeat(")", 128)),
	get("/api/v1/query", "query", `up{instance=~"`+strings.Repeat(`host-[0-9]+\\.example\\.com|`, 500)+`x"}`),
	get("/api/v1/query", "query", `up{job=~"a{1000}"} # a comment with "quotes {1000000}`),
	get("/api/v1/query", "query", `label_replace(up, "ip", "$1", "instance", "([0-9]{1,3}(?:\\.[0-9]{1,3}){3}):.*")`),
	{method: http.MethodGet, target: "/api/v1/query?query=sum(up)+by+(job)", want: "query=sum%28up%29+by+%28job%29&timeout=2m"},
	{method: http.MethodGet, target: "/api/v1/query?query=up&time=" + t0 + "&stats=1"},
	post("/api/v1/query", "query", "up").wants("query=up&timeout=2m"),
	post("/api/v1/query", "query", typical, "time", t0, "timeout", "10s"),
	{method: http.MethodPost, target: "/api/v1/query", ct: "application/x-www-form-urlencoded; charset=UTF-8", body: q("query", "up")},
	{method: http.MethodPost, target: "/api/v1/query?" + q("query", "up")},
	{method: http.MethodPost, target: "/api/v1/query?" + q("query", "up"), ct: "application/x-www-form-urlencoded", body: q("time", t0), want: "query=up&time=1700000000&timeout=2m"},

	get("/api/v1/query_range", "query", "up", "start", t0, "end", t1h, "step", "15s").wants("end=1700003600&query=up&start=1700000000&step=15s&timeout=2m"),
	get("/api/v1/query_range", "query", typical, "start", t0, "end", t1h, "step", "15"),
	get("/api/v1/query_range", "query", "up", "start", t0, "end", "1700000060", "step", "0.5").wants("end=1700000060&query=up&start=1700000000&step=500ms&timeout=2m"),
	get("/api/v1/query_range", "query", "up", "start", "2023-11-14T22:13:20Z", "end", "2023-11-14T23:13:20Z", "step", "1m"),
	get("/api/v1/query_range", "query", "up", "start", t0, "end", t31d, "step", "1h"),
	get("/api/v1/query_range", "query", "up", "start", "0", "end", "10999", "step", "1"),
	get("/api/v1/query_range", "query", "up", "start", t0, "end", t0, "step", "1ms"),
	get("/api/v1/query_range", "query", "1 + 1", "start", t0, "end", t1h, "step", "1m"),
	// Whole-expression work within MaxSamples.
	get("/api/v1/query_range", "query", "rate(x[5m])", "start", t0, "end", t1h, "step", "15s"),
	get("/api/v1/query_range", "query", "max_over_time(rate(x[5m])[1h:1m])", "start", t0, "end", t1h, "step", "15s"),
	get("/api/v1/query_range", "query", "rate(x[1d])", "start", t0, "end", t31d, "step", "5m"),
	get("/api/v1/query", "query", "max_over_time(max_over_time(rate(x[5m])[31d:1h])[31d:1h])"),
	get("/api/v1/query", "query", "max_over_time(rate(x[5m])[31d:5m])"),
	get("/api/v1/query_range", "query", "up", "start", t0, "end", t1h, "step", "1m30s", "timeout", "1m", "stats", "all").wants("end=1700003600&query=up&start=1700000000&stats=all&step=1m30s&timeout=1m"),
	post("/api/v1/query_range", "query", typical, "start", t0, "end", t1h, "step", "60"),

	get("/api/v1/query_exemplars", "query", "up"),
	get("/api/v1/query_exemplars", "query", "up", "start", t0, "end", t1h).wants("end=1700003600&query=up&start=1700000000"),
	post("/api/v1/query_exemplars", "query", typical, "start", t0, "end", t1h),

	get("/api/v1/series", "match[]", "up").wants("match%5B%5D=up"),
	get("/api/v1/series", "match[]", "up", "match[]", `process_start_time_seconds{job="prometheus"}`),
	get("/api/v1/series", "match[]", `{__name__=~"http_.*"}`, "start", t0, "end", t1h),
	get("/api/v1/series", "match[]", "up", "limit", "10"),
	{method: http.MethodGet, target: "/api/v1/series?match%5b%5d=up"},
	post("/api/v1/series", "match[]", "up", "match[]", "go_goroutines"),

	get("/api/v1/labels"),
	get("/api/v1/labels", "match[]", "up", "start", t0, "end", t1h),
	post("/api/v1/labels", "match[]", "up"),
	get("/api/v1/label/job/values"),
	get("/api/v1/label/__name__/values"),
	get("/api/v1/label/_x9/values", "match[]", "up"),
	get("/api/v1/label/job/values", "limit", "5", "start", t0),

	get("/api/v1/metadata"),
	get("/api/v1/metadata", "metric", "up", "limit", "1"),
	get("/api/v1/metadata", "limit_per_metric", "1"),
	get("/api/v1/targets"),
	get("/api/v1/targets", "state", "active"),
	get("/api/v1/targets", "scrapePool", "prometheus"),
	get("/api/v1/targets/metadata", "match_target", `{job="prometheus"}`),
	get("/api/v1/targets/metadata", "metric", "up", "limit", "5"),
	get("/api/v1/rules"),
	get("/api/v1/rules", "type", "alert"),
	get("/api/v1/rules", "rule_name[]", "a", "rule_name[]", "b", "rule_group[]", "g", "file[]", "/etc/prometheus/rules.yml"),
	get("/api/v1/rules", "exclude_alerts", "true", "match[]", "up"),
	get("/api/v1/rules", "group_limit", "10", "group_next_token", "abc"),
	get("/api/v1/alerts"),
	get("/api/v1/status/buildinfo"),
	get("/api/v1/status/runtimeinfo"),
	get("/api/v1/status/tsdb"),
	get("/api/v1/status/tsdb", "limit", "5"),
}

func many(k, v string, n int) []string {
	var kv []string
	for range n {
		kv = append(kv, k, v)
	}
	return kv
}

var denied = []call{
	// Endpoints that are never allowed.
	{method: http.MethodPost, target: "/api/v1/admin/tsdb/snapshot", want: "admin API"},
	post("/api/v1/admin/tsdb/delete_series", "match[]", "up").wants("admin API"),
	get("/api/v1/admin/tsdb/delete_series", "match[]", "up").wants("admin API"),
	{method: http.MethodPost, target: "/api/v1/admin/tsdb/clean_tombstones", want: "admin API"},
	{method: http.MethodPut, target: "/api/v1/admin/tsdb/snapshot", want: "admin API"},
	{method: http.MethodPost, target: "/-/reload", want: "lifecycle"},
	{method: http.MethodPost, target: "/-/quit", want: "lifecycle"},
	get("/-/healthy").wants("lifecycle"),
	get("/-/ready").wants("lifecycle"),
	{method: http.MethodPost, target: "/api/v1/write", ct: "application/x-protobuf", body: "\x00snappy", want: "remote write"},
	{method: http.MethodPost, target: "/api/v1/read", want: "remote write or read"},
	{method: http.MethodPost, target: "/api/v1/otlp/v1/metrics", want: "OTLP"},
	get("/federate", "match[]", "up").wants("federation"),
	get("/").wants("not part of the Prometheus HTTP API"),
	get("/graph").wants("web UI"),
	get("/classic/graph").wants("web UI"),
	get("/static/index.js").wants("dot"),
	get("/metrics").wants("web UI"),
	get("/api/v1/status/config").wants("secrets"),
	get("/api/v1/status/flags").wants("secrets"),
	get("/api/v1/status/walreplay").wants("not an allowed Prometheus API endpoint"),
	get("/api/v1/alertmanagers").wants("Alertmanager URLs, which may hold credentials"),
	get("/api/v1/notifications").wants("not an allowed"),
	get("/api/v2/query", "query", "up").wants("not an allowed"),
	get("/api/v1").wants("not an allowed"),
	get("/api/v1/label/job").wants("not an allowed"),
	get("/api/v1/label/job/values/extra").wants("not an allowed"),
	get("/api/v1/label/1job/values").wants("not a label name"),
	get("/api/v1/label/job-x/values").wants("not a label name"),
	get("/api/v1/label/" + strings.Repeat("a", 257) + "/values").wants("not a label name"),
	get("/api/v1/label//values").wants("empty segment"),
	{method: http.MethodGet, u: &url.URL{Path: "/api/v1/label/a/b/values"}, want: "not an allowed"},

	// Path tricks.
	get("/api/v1/%61dmin/tsdb/delete_series", "match[]", "up").wants("percent-encoded"),
	get("/api/v1/query/../admin/tsdb/delete_series").wants("dot"),
	{method: http.MethodPost, u: &url.URL{Path: "/api/v1/query/../admin/tsdb/delete_series"}, want: "dot"},
	get("/api/v1/query/%2e%2e/admin/tsdb/snapshot").wants("dot"),
	{method: http.MethodGet, u: &url.URL{Path: "/api/v1/query/%2e%2e/admin"}, want: "% sign"},
	get("/api/v1/./query", "query", "up").wants("dot"),
	get("/api/v1/query/.", "query", "up").wants("dot"),
	get("/api/v1/query.json", "query", "up").wants("dot"),
	get("/API/v1/query", "query", "up").wants("not part of the Prometheus HTTP API"),
	get("/api/V1/query", "query", "up").wants("not an allowed"),
	get("/api/v1/Query", "query", "up").wants("not an allowed"),
	get("//api/v1/query", "query", "up").wants("starts with //"),
	get("/api/v1//query", "query", "up").wants("empty segment"),
	get("/api/v1/query/", "query", "up").wants("trailing slash"),
	get("/api/v1/query;x", "query", "up").wants("path parameters"),
	get("/api/v1/query;jsessionid=1").wants("path parameters"),
	get("/api/v1/query%3Bx", "query", "up").wants("path parameters"),
	get("/api/v1/quer%79", "query", "up").wants("percent-encoded"),
	get("/api/v1/query%2f..%2fadmin").wants("dot"),
	get("/api/v1/%2561dmin/tsdb/snapshot").wants("% sign"),
	{method: http.MethodGet, u: &url.URL{Path: "/api/v1/%61dmin/tsdb/snapshot"}, want: "% sign"},
	get("/api/v1/query%00", "query", "up").wants("only letters"),
	{method: http.MethodGet, u: &url.URL{Path: "/api/v1/query\x00"}, want: "only letters"},
	{method: http.MethodGet, u: &url.URL{Path: "/api/v1/quéry"}, want: "only letters"},
	{method: http.MethodGet, u: &url.URL{Path: "/api/v1/query\u202e"}, want: "only letters"},
	{method: http.MethodGet, target: "/api/v1/qu%C3%A9ry", want: "only letters"},
	{method: http.MethodGet, target: "/api/v1/query#frag", want: "only letters"},
	{method: http.MethodGet, u: &url.URL{Path: "/api/v1/query", Fragment: "x"}, want: "fragment"},
	{method: http.MethodGet, target: "http://prometheus:9090/api/v1/query?query=up", want: "absolute URL"},
	{method: http.MethodGet, u: &url.URL{Host: "evil", Path: "/api/v1/query"}, want: "absolute URL"},
	{method: http.MethodGet, u: &url.URL{Path: "api/v1/query", RawQuery: "query=up"}, want: "must start with /"},
	{method: http.MethodGet, u: &url.URL{}, want: "must start with /"},

	// Methods.
	{method: http.MethodHead, target: "/api/v1/query?query=up", want: "method HEAD"},
	{method: http.MethodOptions, target: "/api/v1/query", want: "method OPTIONS"},
	{method: http.MethodPut, target: "/api/v1/query?query=up", want: "use GET or POST"},
	{method: http.MethodDelete, target: "/api/v1/series?" + q("match[]", "up"), want: "method DELETE"},
	{method: http.MethodPatch, target: "/api/v1/labels", want: "method PATCH"},
	{method: "get", target: "/api/v1/query?query=up", want: "method get"},
	{method: http.MethodPost, target: "/api/v1/targets", want: "use GET"},
	{method: http.MethodPost, target: "/api/v1/status/buildinfo", want: "use GET"},
	{method: http.MethodPost, target: "/api/v1/rules", want: "use GET"},
	post("/api/v1/label/instance/values", "match[]", "up").wants("use GET"),

	// Queries.
	get("/api/v1/query").wants(`needs parameter "query"`),
	get("/api/v1/query", "query", "").wants("empty"),
	get("/api/v1/query", "query", "up(").wants("not valid PromQL"),
	get("/api/v1/query", "query", "up{").wants("not valid PromQL"),
	get("/api/v1/query", "query", "DROP TABLE x").wants("not valid PromQL"),
	get("/api/v1/query", "query", `{job=~".*"}`).wants("not valid PromQL"),
	get("/api/v1/query", "query", "up", "query", "down").wants("more than once"),
	{method: http.MethodPost, target: "/api/v1/query?" + q("query", "up"), ct: "application/x-www-form-urlencoded", body: q("query", "down"), want: "more than once"},
	get("/api/v1/query", "query", "up", "time", t0, "time", t1h).wants("more than once"),
	get("/api/v1/query", "query", bigQuery(promguard.MaxQueryLen+3)).wants("over the 16384-byte limit"),
	post("/api/v1/query", "query", "up"+strings.Repeat(" ", 60<<10)).wants("over the 16384-byte limit"),
	get("/api/v1/query", "query", "rate(up[32d])").wants("range selector [32d]"),
	get("/api/v1/query", "query", "max_over_time(up[1y])").wants("range selector"),
	get("/api/v1/query", "query", "max_over_time(up[32d:1h])").wants("subquery range"),
	get("/api/v1/query", "query", "max_over_time(up[1d:1s])").wants("makes over 11000 points"),
	// Whole-expression work over MaxSamples: nested subqueries multiply.
	get("/api/v1/query", "query", nested3).wants("an estimated 1.5e+13 samples per series, over the limit of 100000000"),
	get("/api/v1/query", "query", "max_over_time(max_over_time(max_over_time(rate(up[5m])[31d:1h])[31d:1h])[31d:1h])").wants("over the limit of 100000000"),
	get("/api/v1/query", "query", "max_over_time(max_over_time(rate(up[5m])[31d:5m])[31d:5m])").wants("use fewer nested subqueries"),
	get("/api/v1/query", "query", "sum(rate(up[5m])) + "+nested3).wants("the heaviest part, up[5m], is evaluated 7.1e+11 times"),
	get("/api/v1/query_range", "query", "max_over_time(up[31d])", "start", t0, "end", t31d, "step", "5m").wants("raise step or narrow start to end"),
	get("/api/v1/query_range", "query", "max_over_time(rate(up[5m])[1d:1m])", "start", t0, "end", t31d, "step", "5m").wants("over the limit of 100000000"),
	post("/api/v1/query_range", "query", "max_over_time(up[7d])", "start", t0, "end", t31d, "step", "5m").wants("estimated 360017280 samples"),
	get("/api/v1/query", "query", "rate(up[5m*2])").wants("computed ranges"),
	get("/api/v1/query", "query", "up offset (1h+1m)").wants("computed offsets"),
	get("/api/v1/query", "query", "max_over_time(up[1h:step()])").wants("computed subquery"),
	get("/api/v1/query", "query", "limitk(2, up)").wants("not valid PromQL"),
	get("/api/v1/query", "query", "info(up)").wants("not valid PromQL"),
	get("/api/v1/query", "query", `up{job=~"`+strings.Repeat("a{1000}", 2000)+`"}`).wants("too large once compiled"),
	get("/api/v1/query", "query", `up{job=~"`+strings.Repeat(`a\x7b1000}`, 30)+`"}`).wants("too large once compiled"),
	get("/api/v1/query", "query", `up{job=~'`+strings.Repeat(`.{1000}`, 70)+`'}`).wants("too large once compiled"),
	get("/api/v1/query", "query", "up{job=~`"+strings.Repeat(`(?:ab){1000}`, 30)+"`}").wants("too large once compiled"),
	get("/api/v1/query", "query", strings.Repeat(`up{job=~"a{1000}"} or `, 40)+"up").wants("too large once compiled"),
	get("/api/v1/query", "query", `label_replace(up, "x", "$1", "job", "`+strings.Repeat("(x{1000})", 70)+`")`).wants("too large once compiled"),
	get("/api/v1/series", many("match[]", `up{job=~"a{1000}b{1000}c{1000}d{1000}"}`, 10)...).wants("too large once compiled"),
	get("/api/v1/query", "query", strings.Repeat("(", 129)+"up"+strings.Repeat(")", 129)).wants("nest 129 deep"),
	get("/api/v1/query", "query", strings.Repeat("abs(", 3000)+"up"+strings.Repeat(")", 3000)).wants("nest 3000 deep"),
	get("/api/v1/query", "query", "up\x00").wants("control character"),
	get("/api/v1/query", "query", "up\x1b[2J").wants("control character"),
	get("/api/v1/query", "query", "up{job=\"a\u202eb\"}").wants("bidirectional"),
	{method: http.MethodGet, target: "/api/v1/query?query=%ff", want: "UTF-8"},
	{method: http.MethodGet, target: "/api/v1/query?query=%zz", want: "bad escape"},
	{method: http.MethodGet, target: "/api/v1/query?query=up;time=1", want: "; outside an escape"},
	{method: http.MethodGet, target: "/api/v1/query?query=up&&time=1", want: "empty parameter"},
	{method: http.MethodGet, target: "/api/v1/query?&query=up", want: "empty parameter"},
	{method: http.MethodGet, target: "/api/v1/query?query=up&", want: "empty parameter"},
	{method: http.MethodGet, target: "/api/v1/query?query=up&=x", want: "without a name"},
	{method: http.MethodGet, target: "/api/v1/query?query=up&x", want: `parameter "x" is not accepted`},
	{method: http.MethodGet, target: "/api/v1/query?query=up&q%00=1", want: "control character"},
	{method: http.MethodGet, target: "/api/v1/query?qu%C3%A9ry=up", want: "not accepted"},
	{method: http.MethodGet, target: "/api/v1/query?query=%2575p", want: "not valid PromQL"},
	{method: http.MethodGet, target: "/api/v1/query?" + strings.Repeat("a", promguard.MaxBody+1), want: "query string"},
	get("/api/v1/query", append([]string{"query", "up"}, many("stats", "all", 200)...)...).wants("parameters"),
	get("/api/v1/query", "query", "up", "Query", "up").wants(`"Query" is not accepted`),
	get("/api/v1/query", "query", "up", "foo", "bar").wants("not accepted"),
	get("/api/v1/query", "query", "up", "stats", "yes").wants("want one of"),
	get("/api/v1/query", "query", "up", "limit", "-1").wants("whole number"),
	get("/api/v1/query", "query", "up", "limit", "abc").wants("whole number"),
	get("/api/v1/query", "query", "up", "limit", "99999999999").wants("whole number"),
	get("/api/v1/query", "query", "up", "timeout", "5m").wants("over the 2m limit"),
	get("/api/v1/query", "query", "up", "timeout", "0").wants("positive"),
	get("/api/v1/query", "query", "up", "timeout", "-1").wants("positive"),
	get("/api/v1/query", "query", "up", "time", "2025-01-02").wants("not a time"),
	get("/api/v1/query", "query", "up", "time", "now").wants("not a time"),
	get("/api/v1/query", "query", "up", "time", "NaN").wants("out of range"),
	get("/api/v1/query", "query", "up", "time", "+Inf").wants("out of range"),
	get("/api/v1/query", "query", "up", "time", "-1").wants("out of range"),
	get("/api/v1/query", "query", "up", "time", "253402300800").wants("out of range"),
	get("/api/v1/query", "query", "up", "lookback_delta", "1h").wants("not accepted"),

	// Range queries.
	get("/api/v1/query_range", "query", "up", "start", t0, "end", t1h).wants(`needs parameter "step"`),
	get("/api/v1/query_range", "query", "up", "end", t1h, "step", "15s").wants(`needs parameter "start"`),
	get("/api/v1/query_range", "query", "up", "start", t0, "step", "15s").wants(`needs parameter "end"`),
	get("/api/v1/query_range", "start", t0, "end", t1h, "step", "15s").wants(`needs parameter "query"`),
	get("/api/v1/query_range", "query", "up", "start", t1h, "end", t0, "step", "15s").wants("before start"),
	get("/api/v1/query_range", "query", "up", "start", t0, "end", "1702678401", "step", "1h").wants("over the 31d limit"),
	get("/api/v1/query_range", "query", "up", "start", "2023-01-01T00:00:00Z", "end", "2023-02-10T00:00:00Z", "step", "1h").wants("over the 31d limit"),
	get("/api/v1/query_range", "query", "up", "start", t0, "end", t1h, "step", "0.1").wants("36001 points"),
	get("/api/v1/query_range", "query", "up", "start", "0", "end", "11000", "step", "1").wants("11001 points"),
	get("/api/v1/query_range", "query", "up", "start", t0, "end", t1h, "step", "0").wants("positive"),
	get("/api/v1/query_range", "query", "up", "start", t0, "end", t1h, "step", "0s").wants("positive"),
	get("/api/v1/query_range", "query", "up", "start", t0, "end", t1h, "step", "-15").wants("positive"),
	get("/api/v1/query_range", "query", "up", "start", t0, "end", t1h, "step", "abc").wants("not a duration"),
	get("/api/v1/query_range", "query", "up", "start", t0, "end", t1h, "step", "0.0001").wants("whole number of milliseconds"),
	get("/api/v1/query_range", "query", "up", "start", t0, "end", t1h, "step", "NaN").wants("positive"),
	get("/api/v1/query_range", "query", "up", "start", t0, "end", t1h, "step", "Inf").wants("over the 31d limit"),
	get("/api/v1/query_range", "query", "up", "start", t0, "end", t1h, "step", "10y").wants("over the 31d limit"),
	get("/api/v1/query_range", "query", "up", "start", "NaN", "end", t1h, "step", "15s").wants("out of range"),
	get("/api/v1/query_range", "query", "up", "start", "-1e300", "end", t1h, "step", "15s").wants("out of range"),
	get("/api/v1/query_range", "query", "up[5m]", "start", t0, "end", t1h, "step", "15s").wants("instant vector or a scalar"),
	get("/api/v1/query_range", "query", `"foo"`, "start", t0, "end", t1h, "step", "15s").wants("instant vector or a scalar"),
	get("/api/v1/query_range", "query", "up", "start", t0, "end", t1h, "step", "15s", "time", t0).wants("not accepted"),
	get("/api/v1/query_exemplars", "start", t0).wants(`needs parameter "query"`),
	get("/api/v1/query_exemplars", "query", "up", "step", "15s").wants("not accepted"),
	get("/api/v1/query_exemplars", "query", "up", "start", t0, "end", "1800000000").wants("over the 31d limit"),

	// Bodies.
	{method: http.MethodGet, target: "/api/v1/query?query=up", body: "query=down", want: "must not have a body"},
	{method: http.MethodPost, target: "/api/v1/query", ct: "application/json", body: `{"query":"up"}`, want: "Content-Type"},
	{method: http.MethodPost, target: "/api/v1/query", ct: "text/plain", body: "query=up", want: "Content-Type"},
	{method: http.MethodPost, target: "/api/v1/query", ct: "multipart/form-data; boundary=x", body: "--x\r\n", want: "Content-Type"},
	{method: http.MethodPost, target: "/api/v1/query", ct: "application/x-www-form-urlencoded; charset=latin1", body: "query=up", want: "charset=utf-8"},
	{method: http.MethodPost, target: "/api/v1/query", ct: "application/x-www-form-urlencoded;;", body: "query=up", want: "Content-Type"},
	{method: http.MethodPost, target: "/api/v1/query", body: "query=up", want: "needs Content-Type"},
	{method: http.MethodPost, target: "/api/v1/query", ct: "application/x-www-form-urlencoded", body: "query=up&" + strings.Repeat("x", promguard.MaxBody), want: "over the 65536-byte limit"},
	{method: http.MethodPost, target: "/api/v1/query", ct: "application/x-www-form-urlencoded", body: "query=%zz", want: "bad escape"},
	{method: http.MethodPost, target: "/api/v1/query", ct: "application/x-www-form-urlencoded", body: "query=up&time=1\n", want: `time "1\n" is not a time`},

	// Series selectors.
	get("/api/v1/series").wants(`needs parameter "match[]"`),
	get("/api/v1/series", "match[]", "").wants("empty"),
	get("/api/v1/series", "match[]", "up{").wants("not a series selector"),
	get("/api/v1/series", "match[]", "sum(up)").wants("not a series selector"),
	get("/api/v1/series", "match[]", "up[5m]").wants("not a series selector"),
	get("/api/v1/series", "match[]", `{__name__=~".*"}`).wants("selects every series"),
	get("/api/v1/series", "match[]", `{job=""}`).wants("selects every series"),
	get("/api/v1/series", "match[]", `{__name__=~".+"}`, "match[]", `{job!="x"}`).wants("selects every series"),
	get("/api/v1/label/job/values", "match[]", `{__name__=~"a|"}`).wants("selects every series"),
	get("/api/v1/series", "match[]", `{"my.metric"=~".*"}`).wants("selects every series"),
	{method: http.MethodGet, u: &url.URL{Path: "/api/v1/label/job/values", RawPath: "/api/v1/label/j%6Fb/values"}, want: "percent-encoded"},
	get("/api/v1/label/a%2Fb/values").wants("percent-encoded"),
	get("/api/v1/series", "match[]", `up} or {__name__=~".+"`).wants("not a series selector"),
	get("/api/v1/series", "match[]", `up{job="a"} or vector(1)`).wants("not a series selector"),
	get("/api/v1/series", "match[]", `up{job="a"}&match[]=x`).wants("not a series selector"),
	get("/api/v1/series", many("match[]", "up", 65)...).wants("over 64 times"),
	get("/api/v1/series", "match[]", "up", "start", t0, "end", "1800000000").wants("over the 31d limit"),
	get("/api/v1/series", "match", "up").wants(`"match" is not accepted`),
	get("/api/v1/labels", "match[]", "up or vector(1)").wants("not a series selector"),
	get("/api/v1/label/job/values", "match[]", "sum(up)").wants("not a series selector"),
	get("/api/v1/targets/metadata", "match_target", "up)").wants("not a series selector"),
	get("/api/v1/targets/metadata", "match_target", "up", "match_target", "up").wants("more than once"),

	// Other endpoints' parameters.
	get("/api/v1/targets", "state", "all").wants("want one of active, dropped, any"),
	get("/api/v1/rules", "type", "both").wants("want one of alert, record"),
	get("/api/v1/rules", "exclude_alerts", "yes").wants("want one of"),
	get("/api/v1/metadata", "metric", strings.Repeat("m", 2000)).wants("over the 1024-byte limit"),
	get("/api/v1/alerts", "foo", "1").wants("takes no parameters"),
	get("/api/v1/status/buildinfo", "x", "1").wants("takes no parameters"),
	get("/api/v1/status/tsdb", "limit", "x").wants("whole number"),
}

func TestCorpusSize(t *testing.T) {
	if len(allowed) < 60 || len(denied) < 100 {
		t.Errorf("corpus has %d allowed and %d denied calls, want at least 60 and 100", len(allowed), len(denied))
	}
}

func TestCheckAllowed(t *testing.T) {
	for _, c := range allowed {
		req, v := c.check(t)
		if !v.Allow {
			t.Errorf("Check(%v) = denied %q, want allowed", c, v.Reason)
			continue
		}
		if v.Reason != "" || v.Endpoint == "" {
			t.Errorf("Check(%v) = %+v, want no reason and an endpoint", c, v)
		}
		if req.Method != c.method {
			t.Errorf("Check(%v) rebuilt method %s, want %s", c, req.Method, c.method)
		}
		if c.want != "" {
			if got := req.Params().Encode(); got != c.want {
				t.Errorf("Check(%v) rebuilt parameters %s, want %s", c, got, c.want)
			}
		}
		recheck(t, c.String(), req)
	}
}

func TestCheckDenied(t *testing.T) {
	for _, c := range denied {
		req, v := c.check(t)
		if v.Allow {
			t.Errorf("Check(%v) = allowed %+v, want denied", c, req)
			continue
		}
		if !strings.Contains(v.Reason, c.want) {
			t.Errorf("Check(%v) reason = %q, want it to contain %q", c, v.Reason, c.want)
		}
		if len(v.Reason) > 1000 {
			t.Errorf("Check(%v) reason is %d bytes long", c, len(v.Reason))
		}
		if !reflect.DeepEqual(req, promguard.Request{}) {
			t.Errorf("Check(%v) denied but returned request %+v", c, req)
		}
	}
}

func TestCheckNilURL(t *testing.T) {
	if _, v := promguard.Check(http.MethodGet, nil, "", nil); v.Allow || !strings.Contains(v.Reason, "no URL") {
		t.Errorf("Check(nil URL) = %+v, want denied", v)
	}
}

func TestEndpointInVerdict(t *testing.T) {
	tests := []struct {
		c    call
		want string
	}{
		{get("/api/v1/label/job/values"), "/api/v1/label/{name}/values"},
		{get("/api/v1/query", "query", "up("), "/api/v1/query"},
		{call{method: http.MethodHead, target: "/api/v1/series"}, "/api/v1/series"},
		{get("/api/v1/admin/tsdb/snapshot"), ""},
	}
	for _, tt := range tests {
		if _, v := tt.c.check(t); v.Endpoint != tt.want {
			t.Errorf("Check(%v).Endpoint = %q, want %q", tt.c, v.Endpoint, tt.want)
		}
	}
}

// recheck builds the upstream request for an allowed call and checks it
// again: the guard must accept its own output unchanged.
func recheck(t testing.TB, what string, req promguard.Request) {
	t.Helper()
	hr, err := req.NewHTTPRequest(context.Background(), "http://prometheus.invalid:9090")
	if err != nil {
		t.Fatalf("%s: NewHTTPRequest: %v", what, err)
	}
	if hr.URL.Host != "prometheus.invalid:9090" || hr.URL.Path != req.Path {
		t.Fatalf("%s: upstream URL %s, want path %s on the base host", what, hr.URL, req.Path)
	}
	var body []byte
	if hr.Body != nil {
		body, _ = io.ReadAll(hr.Body)
	}
	target, err := url.ParseRequestURI(hr.URL.RequestURI())
	if err != nil {
		t.Fatalf("%s: upstream request URI %q does not parse: %v", what, hr.URL.RequestURI(), err)
	}
	again, v := promguard.Check(hr.Method, target, hr.Header.Get("Content-Type"), body)
	if !v.Allow {
		t.Fatalf("%s: the rebuilt request %s %s %q is denied: %s", what, hr.Method, hr.URL.RequestURI(), body, v.Reason)
	}
	if !reflect.DeepEqual(again, req) {
		t.Fatalf("%s: rechecking the rebuilt request gives %+v, want %+v", what, again, req)
	}
}

func TestNewHTTPRequest(t *testing.T) {
	req, v := promguard.Check(http.MethodPost, &url.URL{Path: "/api/v1/query"}, "application/x-www-form-urlencoded", []byte("query=up"))
	if !v.Allow {
		t.Fatal(v.Reason)
	}
	hr, err := req.NewHTTPRequest(context.Background(), "https://user:pw@prom.example:9443/prometheus/")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := hr.URL.String(), "https://user:pw@prom.example:9443/prometheus/api/v1/query"; got != want {
		t.Errorf("URL = %s, want %s", got, want)
	}
	if got := hr.Header.Get("Content-Type"); got != "application/x-www-form-urlencoded" {
		t.Errorf("Content-Type = %q", got)
	}
	for _, base := range []string{"", "prometheus:9090", "ftp://x", "http://x/?a=b", "http://x/#f", "http://%zz"} {
		if _, err := req.NewHTTPRequest(context.Background(), base); err == nil {
			t.Errorf("NewHTTPRequest(%q) succeeded, want an error", base)
		}
	}
	if _, err := (promguard.Request{}).NewHTTPRequest(context.Background(), "http://x"); err == nil {
		t.Error("NewHTTPRequest of a zero Request succeeded, want an error")
	}
}

func FuzzCheck(f *testing.F) {
	for _, c := range append(append([]call{}, allowed...), denied...) {
		if c.u == nil && len(c.target)+len(c.body) < 4096 {
			f.Add(c.method, c.target, c.ct, []byte(c.body))
		}
	}
	f.Fuzz(func(t *testing.T, method, target, ct string, body []byte) {
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return
		}
		req, v := promguard.Check(method, u, ct, body)
		if !v.Allow {
			if v.Reason == "" {
				t.Fatalf("Check(%s %q) denied without a reason", method, target)
			}
			return
		}
		recheck(t, fmt.Sprintf("%s %q", method, target), req)
	})
}

func BenchmarkCheck(b *testing.B) {
	u, err := url.ParseRequestURI("/api/v1/query?" + q("query", typical))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, v := promguard.Check(http.MethodGet, u, "", nil); !v.Allow {
			b.Fatal(v.Reason)
		}
	}
}

// BenchmarkCheckNested measures Check on the nested-subquery attack: the
// whole-expression estimate must stay cheap however large the work it
// refuses.
func BenchmarkCheckNested(b *testing.B) {
	u, err := url.ParseRequestURI("/api/v1/query?" + q("query", nested3))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, v := promguard.Check(http.MethodGet, u, "", nil); v.Allow {
			b.Fatal("allowed")
		}
	}
}

func BenchmarkCheckRange(b *testing.B) {
	u, err := url.ParseRequestURI("/api/v1/query_range?" + q("query", typical, "start", t0, "end", t1h, "step", "15s"))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, v := promguard.Check(http.MethodGet, u, "", nil); !v.Allow {
			b.Fatal(v.Reason)
		}
	}
}
