package brokercli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/chtest"
	"github.com/tetherhq/tether/internal/cli"
	"github.com/tetherhq/tether/internal/config"
	"github.com/tetherhq/tether/internal/protocol"
)

func TestMain(m *testing.M) {
	code := m.Run()
	chtest.Stop()
	os.Exit(code)
}

// brokerCall is what the fake broker saw of one data-plane call.
type brokerCall struct {
	method, path, rawQuery, contentType, auth string
	body                                      []byte
	sql, format                               string
}

// fakeBroker records data-plane calls and answers them with handle.
type fakeBroker struct {
	mu     sync.Mutex
	calls  []brokerCall
	handle func(w http.ResponseWriter, c brokerCall)
}

func (f *fakeBroker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	c := brokerCall{method: r.Method, path: r.URL.EscapedPath(), rawQuery: r.URL.RawQuery, contentType: r.Header.Get("Content-Type"), auth: r.Header.Get("Authorization"), body: b}
	if strings.HasSuffix(c.path, "/clickhouse/query") {
		var in map[string]string
		json.Unmarshal(b, &in)
		c.sql, c.format = in["sql"], in["format"]
	}
	f.mu.Lock()
	f.calls = append(f.calls, c)
	f.mu.Unlock()
	f.handle(w, c)
}

func (f *fakeBroker) last(t *testing.T) brokerCall {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.calls) == 0 {
		t.Fatal("the broker got no call")
	}
	return f.calls[len(f.calls)-1]
}

// startProxy serves a proxy of kind for acme/prod in front of a fake
// broker answering with handle.
func startProxy(t *testing.T, kind string, handle func(http.ResponseWriter, brokerCall)) (*fakeBroker, *httptest.Server, *syncBuffer) {
	t.Helper()
	fb := &fakeBroker{handle: handle}
	broker := httptest.NewServer(fb)
	t.Cleanup(broker.Close)
	log := &syncBuffer{}
	p := &proxy{kind: kind, ref: "acme/prod", log: log, client: func(context.Context) (*brokerapi.Client, error) {
		return brokerapi.NewClient(config.CLI{APIURL: broker.URL, Token: "t"})
	}}
	local := httptest.NewServer(p)
	t.Cleanup(local.Close)
	return fb, local, log
}

func get(t *testing.T, u string, h ...string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	for i := 0; i+1 < len(h); i += 2 {
		req.Header.Set(h[i], h[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, string(b)
}

func post(t *testing.T, u, contentType, body string) (*http.Response, string) {
	t.Helper()
	res, err := http.Post(u, contentType, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, string(b)
}

func TestClickHouseProxy(t *testing.T) {
	release := make(chan struct{})
	fb, local, log := startProxy(t, "clickhouse", func(w http.ResponseWriter, c brokerCall) {
		switch {
		case strings.Contains(c.sql, "system.secrets"):
			writeAPIError(w, http.StatusForbidden, "query_denied", "table system.secrets is not allowed:\nread the docs")
		case strings.Contains(c.sql, "stream"):
			w.Header().Set("Tether-Query-Id", "q-stream")
			w.Write([]byte("first\n"))
			w.(http.Flusher).Flush()
			<-release
			w.Write([]byte("second\n"))
		default:
			w.Header().Set("Content-Type", "text/tab-separated-values; charset=UTF-8")
			w.Header().Set("Tether-Query-Id", "q-1")
			w.Write([]byte("1\n"))
		}
	})

	if res, body := get(t, local.URL+"/ping"); res.StatusCode != 200 || body != "Ok.\n" {
		t.Errorf("GET /ping = %d %q, want 200 Ok.", res.StatusCode, body)
	}

	// GET with query and default_format; the local caller's credentials
	// are not passed on, the CLI's are.
	res, body := get(t, local.URL+"/?query="+url.QueryEscape("SELECT 1")+"&default_format=JSONEachRow&user=default&password=x", "Authorization", "Basic ZGVmYXVsdDp4")
	c := fb.last(t)
	if res.StatusCode != 200 || body != "1\n" || res.Header.Get("X-ClickHouse-Query-Id") != "q-1" || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/tab-separated-values") {
		t.Errorf("GET /?query = %d %q %v", res.StatusCode, body, res.Header)
	}
	if c.method != "POST" || c.path != "/api/v1/deployments/acme/prod/clickhouse/query" || c.sql != "SELECT 1" || c.format != "JSONEachRow" || c.auth != "Bearer t" {
		t.Errorf("broker saw %+v, want POST .../clickhouse/query of SELECT 1 as JSONEachRow with the CLI's token", c)
	}

	// POST: the query parameter, a newline, then the body.
	post(t, local.URL+"/?query="+url.QueryEscape("SELECT name FROM system.tables"), "text/plain", "LIMIT 1 FORMAT CSV")
	if c := fb.last(t); c.sql != "SELECT name FROM system.tables\nLIMIT 1 FORMAT CSV" || c.format != "TabSeparated" {
		t.Errorf("POST with query and body: broker saw sql %q format %q", c.sql, c.format)
	}
	post(t, local.URL+"/", "", "SELECT 2")
	if c := fb.last(t); c.sql != "SELECT 2" {
		t.Errorf("POST body only: broker saw sql %q", c.sql)
	}

	// A broker error becomes ClickHouse's plain-text error, same status.
	res, body = get(t, local.URL+"/?query="+url.QueryEscape("SELECT * FROM system.secrets"))
	if res.StatusCode != 403 || body != "Code: 497. DB::Exception: table system.secrets is not allowed: read the docs\n" || res.Header.Get("X-ClickHouse-Exception-Code") != "497" {
		t.Errorf("denied query = %d %q, want 403 and a ClickHouse-style error", res.StatusCode, body)
	}

	// The answer streams: the first chunk arrives before the broker has
	// sent the rest.
	sres, err := http.Get(local.URL + "/?query=" + url.QueryEscape("SELECT stream"))
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(sres.Body)
	if line, err := br.ReadString('\n'); err != nil || line != "first\n" {
		t.Errorf("first streamed line = %q, %v", line, err)
	}
	close(release)
	if rest, _ := io.ReadAll(br); string(rest) != "second\n" {
		t.Errorf("rest of the stream = %q", rest)
	}
	sres.Body.Close()

	for _, tc := range []struct {
		name   string
		do     func() (*http.Response, string)
		status int
		want   string
	}{
		{"empty query", func() (*http.Response, string) { return get(t, local.URL+"/") }, 400, "Code: 497. DB::Exception: Empty query"},
		{"other path", func() (*http.Response, string) { return get(t, local.URL+"/play") }, 404, "no handler for /play"},
		{"compression", func() (*http.Response, string) { return get(t, local.URL+"/?query=SELECT+1&compress=1") }, 400, "compression"},
		{"web page", func() (*http.Response, string) {
			return get(t, local.URL+"/?query=SELECT+1", "Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site")
		}, 403, "a web page may not call the proxy"},
		{"rebound host", func() (*http.Response, string) {
			req, _ := http.NewRequest(http.MethodGet, local.URL+"/?query=SELECT+1", nil)
			req.Host = "evil.example:8123"
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			b, _ := io.ReadAll(res.Body)
			return res, string(b)
		}, 403, "not a loopback address"},
		{"large body", func() (*http.Response, string) {
			return post(t, local.URL+"/", "text/plain", "SELECT '"+strings.Repeat("x", maxProxyBody)+"'")
		}, 413, "over 1048576 bytes"},
	} {
		res, body := tc.do()
		if res.StatusCode != tc.status || !strings.Contains(body, tc.want) {
			t.Errorf("%s: %d %q, want %d and %q", tc.name, res.StatusCode, body, tc.status, tc.want)
		}
	}
	fb.mu.Lock()
	n := len(fb.calls)
	fb.mu.Unlock()
	if n != 5 {
		t.Errorf("the broker got %d calls, want 5 (refused calls never reach it)", n)
	}
	for _, w := range []string{"GET /ping 200", "GET / 403", "POST / 413", "GET /play 404"} {
		if !strings.Contains(log.String(), w) {
			t.Errorf("log lacks %q:\n%s", w, log.String())
		}
	}
}

func TestPrometheusProxy(t *testing.T) {
	fb, local, _ := startProxy(t, "prometheus", func(w http.ResponseWriter, c brokerCall) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case strings.Contains(c.rawQuery, "denied"):
			writeAPIError(w, http.StatusForbidden, "no_grant", "you have no active grant with scope prometheus:read on acme/prod")
		case strings.Contains(c.rawQuery, "bad"):
			w.WriteHeader(http.StatusBadRequest)
			w.Write([]byte(`{"status":"error","errorType":"bad_data","error":"parse error"}`))
		default:
			w.Write([]byte(`{"status":"success","data":[]}`))
		}
	})

	res, body := get(t, local.URL+"/api/v1/query?query=up%7Bjob%3D%22ch%22%7D&time=1767225600")
	c := fb.last(t)
	if res.StatusCode != 200 || body != `{"status":"success","data":[]}` {
		t.Errorf("GET query = %d %q", res.StatusCode, body)
	}
	if c.method != "GET" || c.path != "/api/v1/deployments/acme/prod/prometheus/api/v1/query" || c.rawQuery != "query=up%7Bjob%3D%22ch%22%7D&time=1767225600" || c.auth != "Bearer t" {
		t.Errorf("broker saw %+v", c)
	}

	form := url.Values{"query": {"rate(x[5m])"}, "start": {"1"}, "end": {"2"}, "step": {"15"}}.Encode()
	post(t, local.URL+"/api/v1/query_range", "application/x-www-form-urlencoded", form)
	if c := fb.last(t); c.method != "POST" || c.path != "/api/v1/deployments/acme/prod/prometheus/api/v1/query_range" || string(c.body) != form || c.contentType != "application/x-www-form-urlencoded" {
		t.Errorf("POST form: broker saw %+v", c)
	}

	get(t, local.URL+"/api/v1/label/__name__/values?match%5B%5D=up")
	if c := fb.last(t); c.path != "/api/v1/deployments/acme/prod/prometheus/api/v1/label/__name__/values" || c.rawQuery != "match%5B%5D=up" {
		t.Errorf("label values: broker saw %+v", c)
	}

	// The broker's error, in Prometheus's shape; Prometheus's own, as is.
	res, body = get(t, local.URL+"/api/v1/query?query=denied")
	var pe map[string]string
	json.Unmarshal([]byte(body), &pe)
	if res.StatusCode != 403 || pe["status"] != "error" || pe["errorType"] != "no_grant" || !strings.Contains(pe["error"], "no active grant") {
		t.Errorf("broker refusal = %d %q", res.StatusCode, body)
	}
	if res, body = get(t, local.URL+"/api/v1/query?query=bad"); res.StatusCode != 400 || body != `{"status":"error","errorType":"bad_data","error":"parse error"}` {
		t.Errorf("Prometheus error = %d %q, want it passed through", res.StatusCode, body)
	}

	for _, p := range []string{"/metrics", "/api/v2/alerts", "/api/v1/../../requests"} {
		res, body := get(t, local.URL+p)
		json.Unmarshal([]byte(body), &pe)
		if res.StatusCode != 404 || pe["status"] != "error" || pe["errorType"] != "not_found" {
			t.Errorf("GET %s = %d %q, want a 404 in Prometheus's error shape", p, res.StatusCode, body)
		}
	}
}

func TestCheckLoopback(t *testing.T) {
	for _, a := range []string{"127.0.0.1:9090", "127.0.0.2:0", "[::1]:8123", "localhost:8123"} {
		if err := checkLoopback(a); err != nil {
			t.Errorf("checkLoopback(%q) = %v, want nil", a, err)
		}
	}
	for _, a := range []string{"0.0.0.0:8123", ":8123", "[::]:8123", "10.0.0.1:80", "example.com:80", "127.0.0.1:99999", "127.0.0.1"} {
		err := checkLoopback(a)
		var ue *cli.UsageError
		if !errors.As(err, &ue) {
			t.Errorf("checkLoopback(%q) = %v, want a usage error", a, err)
		}
	}
}

// TestServeProxyStops: the proxy serves until its context ends.
func TestServeProxyStops(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	log := &syncBuffer{}
	p := &proxy{kind: "clickhouse", ref: "acme/prod", log: log}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serveProxy(ctx, ln, p) }()
	if res, body := get(t, "http://"+ln.Addr().String()+"/ping"); res.StatusCode != 200 || body != "Ok.\n" {
		t.Errorf("/ping = %d %q", res.StatusCode, body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("serveProxy = %v after cancel, want nil", err)
	}
	if !strings.Contains(log.String(), "proxy stopped") {
		t.Errorf("log = %q", log.String())
	}
}

// TestClickHouseProxyAnswersAsClickHouse sends the same calls to a real
// ClickHouse and to the proxy in front of it, and wants the same answers:
// TabSeparated by default (no header line), default_format honoured, a
// FORMAT in the SQL winning over default_format. The broker and the agent
// are stood in for by what the agent does with a query: the format it is
// given goes to ClickHouse as default_format, TabSeparatedWithNames when
// none is given (protocol.ClickHouseQuery).
func TestClickHouseProxyAnswersAsClickHouse(t *testing.T) {
	ch := chtest.Start(t)
	query := func(params url.Values, body string) (*http.Response, string) {
		params.Set("user", "tether")
		params.Set("password", chtest.Password)
		method := http.MethodGet
		if body != "" {
			method = http.MethodPost
		}
		req, err := http.NewRequest(method, ch.URL+"/?"+params.Encode(), strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res, string(b)
	}
	_, local, _ := startProxy(t, "clickhouse", func(w http.ResponseWriter, c brokerCall) {
		format := c.format
		if format == "" {
			format = "TabSeparatedWithNames" // the agent's default
		}
		var q protocol.ClickHouseQuery
		if err := json.Unmarshal(c.body, &q); err != nil || q.SQL != c.sql {
			t.Errorf("the proxy sent %q, want an protocol.ClickHouseQuery", c.body)
		}
		res, body := query(url.Values{"default_format": {format}}, c.sql)
		w.Header().Set("Content-Type", res.Header.Get("Content-Type"))
		w.WriteHeader(res.StatusCode)
		io.WriteString(w, body)
	})
	for _, tc := range []struct {
		name   string
		params url.Values
		body   string
	}{
		{"no format", url.Values{"query": {"SELECT version()"}}, ""},
		{"two columns, no format", url.Values{"query": {"SELECT name, is_aggregate FROM system.functions WHERE name IN ('sum', 'abs') ORDER BY name"}}, ""},
		{"default_format", url.Values{"query": {"SELECT 1 AS x, 'a' AS y"}, "default_format": {"CSVWithNames"}}, ""},
		{"FORMAT in the SQL", url.Values{"query": {"SELECT 1 AS x FORMAT JSONEachRow"}}, ""},
		{"FORMAT wins over default_format", url.Values{"default_format": {"JSON"}}, "SELECT 1 AS x, 'a' AS y FORMAT TSVWithNames"},
		{"query and body", url.Values{"query": {"SELECT 2 AS z"}}, "FORMAT Vertical"},
	} {
		_, want := query(url.Values(maps.Clone(tc.params)), tc.body)
		var res *http.Response
		var got string
		u := local.URL + "/?" + tc.params.Encode()
		if tc.body != "" {
			res, got = post(t, u, "text/plain", tc.body)
		} else {
			res, got = get(t, u)
		}
		if res.StatusCode != http.StatusOK || got != want {
			t.Errorf("%s: the proxy answered %d %q, ClickHouse answers %q", tc.name, res.StatusCode, got, want)
		}
	}
}
