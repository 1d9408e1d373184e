package brokercli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/alecthomas/kong"

	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/cli"
	"github.com/tetherhq/tether/internal/source/registry"
)

// proxyCmd is 'broker proxy'.
type proxyCmd struct {
	ClickHouse proxyServeCmd `cmd:"" name:"clickhouse" help:"ClickHouse's HTTP interface on a loopback port (default 127.0.0.1:8123)"`
	Prometheus proxyServeCmd `cmd:"" name:"prometheus" help:"Prometheus's /api/v1/ API on a loopback port (default 127.0.0.1:9090)"`
	HelpCmd    cli.HelpCmd   `cmd:"" name:"help" hidden:""`
}

func (proxyCmd) Help() string {
	return `Serves the deployment's ClickHouse or Prometheus on a local port, through
the broker under your active grant, until interrupted (Ctrl-C):

clickhouse: ClickHouse's HTTP interface, for curl and HTTP drivers: GET
/ping, GET /?query=SQL, POST / with the SQL as the body; answers as
ClickHouse does: TabSeparated unless the SQL says FORMAT or the URL
default_format; other URL settings are not passed on (the agent sets its
own limits). Default port 8123.

prometheus: Prometheus's /api/v1/ API, GET and POST: add it to Grafana as
a Prometheus data source at http://127.0.0.1:PORT. Default port 9090.

Whoever can connect to the port uses your access, so the proxy listens on
a loopback address only and refuses calls from web pages. Every call is
logged to stderr. The CLI login is renewed as needed while it runs.`
}

type proxyServeCmd struct {
	Deployment string `placeholder:"TENANT/NAME" help:"deployment as TENANT/NAME, e.g. acme/prod (required)"`
	Listen     string `placeholder:"HOST:PORT" help:"loopback address to serve on, 127.0.0.1:PORT or [::1]:PORT (port 0 picks one; default the service's own port)"`
	clientFlags
}

func (proxyServeCmd) Help() string { return proxyCmd{}.Help() }

// maxProxyBody bounds the body of a call to a local proxy.
const maxProxyBody = 1 << 20

func (cmd *proxyServeCmd) Run(kctx *kong.Context, e *env) error {
	ctx, stderr, kind, dep := e.ctx, e.stderr, kctx.Selected().Name, &cmd.Deployment
	src, _ := registry.Lookup(kind)
	listen := &cmd.Listen
	if *listen == "" {
		*listen = src.Proxy.DefaultListen
	}
	ref, err := parseDeploymentRef("--deployment", *dep)
	if err != nil {
		return err
	}
	if err := checkLoopback(*listen); err != nil {
		return err
	}
	p := &proxy{kind: kind, ref: ref, log: stderr, client: cmd.client}
	// Fail now, not on the first call, when there is no login; warn when
	// there is no grant yet, which calls will need.
	c, err := p.brokerClient(ctx)
	if err != nil {
		return err
	}
	scope := src.Scope
	if rs, err := c.ListRequests(ctx, brokerapi.RequestQuery{State: brokerapi.StateActive, Mine: true, Deployment: ref}); err == nil &&
		!slices.ContainsFunc(rs, func(r brokerapi.AccessRequest) bool { return r.Grant != nil && slices.Contains(r.Grant.Scopes, scope) }) {
		fmt.Fprintf(stderr, "note: you have no active grant with scope %s on %s yet; calls fail until one is approved ('broker request create --deployment %s --scope %s ...')\n", scope, ref, ref, scope)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("--listen %s: %w", *listen, err)
	}
	fmt.Fprintf(stderr, "Serving %s of %s at http://%s through the broker; Ctrl-C stops.\n", kind, ref, ln.Addr())
	return serveProxy(ctx, ln, p)
}

// checkLoopback accepts a HOST:PORT whose host is a loopback address.
func checkLoopback(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return cli.Usagef("--listen %q: want 127.0.0.1:PORT", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return cli.Usagef("--listen %q: port %q: want a number from 0 to 65535", addr, port)
	}
	if !isLoopbackHost(host) {
		return cli.Usagef("--listen %q: the proxy serves your access to whoever connects, so it listens on a loopback address only: want 127.0.0.1:PORT, [::1]:PORT or localhost:PORT", addr)
	}
	return nil
}

func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// serveProxy serves p on ln until ctx ends.
func serveProxy(ctx context.Context, ln net.Listener, p *proxy) error {
	srv := &http.Server{
		Handler:           p,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute, // the request only: answers stream for as long as the grant allows
		IdleTimeout:       2 * time.Minute,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("proxy: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	p.logf("proxy stopped")
	return nil
}

// proxy is a local ClickHouse or Prometheus endpoint that forwards to the
// broker's data plane with the CLI's login.
type proxy struct {
	kind   string // "clickhouse" or "prometheus"
	ref    string // TENANT/NAME
	client func(context.Context) (*brokerapi.Client, error)
	log    io.Writer

	// clientMu serialises client: renewing a login rotates its refresh
	// token, which two renewals at once would spend twice.
	clientMu sync.Mutex
	logMu    sync.Mutex
}

func (p *proxy) brokerClient(ctx context.Context) (*brokerapi.Client, error) {
	p.clientMu.Lock()
	defer p.clientMu.Unlock()
	return p.client(ctx)
}

func (p *proxy) logf(format string, args ...any) {
	p.logMu.Lock()
	defer p.logMu.Unlock()
	fmt.Fprintf(p.log, "%s %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func (p *proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &statusRecorder{ResponseWriter: w}
	if msg := p.refuseOrigin(r); msg != "" {
		p.fail(rec, http.StatusForbidden, "forbidden", msg)
	} else if p.kind == "clickhouse" {
		p.clickhouse(rec, r)
	} else {
		p.prometheus(rec, r)
	}
	p.logf("%s %s %d %s", r.Method, r.URL.Path, rec.code(), time.Since(start).Round(time.Millisecond))
}

// refuseOrigin says why a call that may come from a web page, rather than
// a program of the user's, is refused: a page the user visits could
// otherwise use their access (a form posted cross-site, or DNS rebinding
// a name of the page's to 127.0.0.1).
func (p *proxy) refuseOrigin(r *http.Request) string {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if !isLoopbackHost(strings.Trim(host, "[]")) {
		return fmt.Sprintf("Host %q is not a loopback address: the proxy answers calls to 127.0.0.1, [::1] or localhost only", r.Host)
	}
	if s := r.Header.Get("Sec-Fetch-Site"); s != "" && s != "same-origin" && s != "none" {
		return "a web page may not call the proxy (Sec-Fetch-Site: " + s + ")"
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || !isLoopbackHost(u.Hostname()) {
			return "a web page may not call the proxy (Origin: " + o + ")"
		}
	}
	return ""
}

// fail answers in the error shape of the proxied service.
func (p *proxy) fail(w http.ResponseWriter, status int, code, msg string) {
	if p.kind == "clickhouse" {
		chError(w, status, msg)
		return
	}
	promErrorBody(w, status, code, msg)
}

// chError answers as ClickHouse does on an error: plain text.
func chError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
	w.Header().Set("X-ClickHouse-Exception-Code", "497")
	w.WriteHeader(status)
	fmt.Fprintf(w, "Code: 497. DB::Exception: %s\n", oneLine(msg))
}

// promErrorBody answers as Prometheus does on an error.
func promErrorBody(w http.ResponseWriter, status int, errorType, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"status": "error", "errorType": errorType, "error": msg})
}

func (p *proxy) clickhouse(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/ping" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
		io.WriteString(w, "Ok.\n")
		return
	case r.URL.Path != "/":
		chError(w, http.StatusNotFound, fmt.Sprintf("there is no handler for %s: the proxy serves queries at / and /ping", r.URL.Path))
		return
	case r.Method != http.MethodGet && r.Method != http.MethodPost:
		w.Header().Set("Allow", "GET, POST")
		chError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s: send queries with GET /?query=SQL or POST /", r.Method))
		return
	}
	q := r.URL.Query()
	if q.Get("compress") == "1" || q.Get("decompress") == "1" || r.Header.Get("Content-Encoding") != "" {
		chError(w, http.StatusBadRequest, "the proxy does not support ClickHouse's compression (compress, decompress or Content-Encoding); turn it off in the client")
		return
	}
	sql := q.Get("query")
	if r.Method == http.MethodPost {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxProxyBody))
		if err != nil {
			chError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("the request body is over %d bytes", maxProxyBody))
			return
		}
		// As ClickHouse does: the query parameter, a newline, the body.
		if len(body) > 0 {
			if sql != "" {
				sql += "\n"
			}
			sql += string(body)
		}
	}
	if strings.TrimSpace(sql) == "" {
		chError(w, http.StatusBadRequest, "Empty query: give it as ?query=SQL or as the POST body")
		return
	}
	// As ClickHouse's HTTP interface: a FORMAT in the SQL wins (the agent
	// passes the format on as default_format), then default_format, then
	// TabSeparated. The agent's own default, TabSeparatedWithNames, is
	// for 'broker query' and never applies to the proxy.
	format := q.Get("default_format")
	if format == "" {
		format = "TabSeparated"
	}
	in := map[string]string{"sql": sql, "format": format}
	b, _ := json.Marshal(in)
	res, ok := p.forward(w, r, http.MethodPost, "clickhouse/query", bytes.NewReader(b), http.Header{"Content-Type": {"application/json"}})
	if !ok {
		return
	}
	defer res.Body.Close()
	if id := res.Header.Get("Tether-Query-Id"); id != "" {
		w.Header().Set("X-ClickHouse-Query-Id", id)
		w.Header().Set("Tether-Query-Id", id)
	}
	streamAnswer(w, res)
}

func (p *proxy) prometheus(w http.ResponseWriter, r *http.Request) {
	switch {
	case !strings.HasPrefix(r.URL.Path, "/api/v1/") || path.Clean(r.URL.Path) != r.URL.Path:
		promErrorBody(w, http.StatusNotFound, "not_found", fmt.Sprintf("no such path %s: the proxy serves Prometheus's /api/v1/ API", r.URL.Path))
		return
	case r.Method != http.MethodGet && r.Method != http.MethodPost:
		w.Header().Set("Allow", "GET, POST")
		promErrorBody(w, http.StatusMethodNotAllowed, "bad_data", fmt.Sprintf("method %s: the proxy forwards GET and POST", r.Method))
		return
	}
	var body io.Reader
	h := http.Header{}
	if r.Method == http.MethodPost {
		b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxProxyBody))
		if err != nil {
			promErrorBody(w, http.StatusRequestEntityTooLarge, "bad_data", fmt.Sprintf("the request body is over %d bytes", maxProxyBody))
			return
		}
		body = bytes.NewReader(b)
		if ct := r.Header.Get("Content-Type"); ct != "" {
			h.Set("Content-Type", ct)
		}
	}
	target := "prometheus" + r.URL.EscapedPath()
	if r.URL.RawQuery != "" {
		target += "?" + r.URL.RawQuery
	}
	res, ok := p.forward(w, r, r.Method, target, body, h)
	if !ok {
		return
	}
	defer res.Body.Close()
	streamAnswer(w, res)
}

// forward makes the data-plane call and returns a successful answer; a
// failure it answers itself, translating the broker's JSON errors into
// the proxied service's error shape.
func (p *proxy) forward(w http.ResponseWriter, r *http.Request, method, target string, body io.Reader, h http.Header) (*http.Response, bool) {
	c, err := p.brokerClient(r.Context())
	if err != nil {
		p.fail(w, http.StatusBadGateway, "unavailable", "the proxy has no working broker login: "+err.Error())
		return nil, false
	}
	res, err := c.DataPlane(r.Context(), method, p.ref, target, body, h)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		p.fail(w, http.StatusBadGateway, "unavailable", "cannot reach the broker: "+err.Error())
		return nil, false
	}
	if res.StatusCode < 300 {
		return res, true
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(res.Body, brokerapi.MaxBody))
	if e, ok := brokerapi.DecodeError(res.StatusCode, b); ok {
		p.fail(w, res.StatusCode, e.Code, e.Message)
		return nil, false
	}
	// The service's own error (Prometheus's JSON): pass it on.
	if ct := res.Header.Get("Content-Type"); ct != "" {
		w.Header().Set("Content-Type", ct)
	}
	w.WriteHeader(res.StatusCode)
	w.Write(b)
	return nil, false
}

// streamAnswer copies a successful answer to w as it arrives.
func streamAnswer(w http.ResponseWriter, res *http.Response) {
	if ct := res.Header.Get("Content-Type"); ct != "" {
		w.Header().Set("Content-Type", ct)
	}
	w.WriteHeader(res.StatusCode)
	rc := http.NewResponseController(w)
	buf := make([]byte, 32<<10)
	for {
		n, err := res.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			rc.Flush()
		}
		if err != nil {
			return
		}
	}
}

// statusRecorder remembers the status of an answer, for the log.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// Unwrap lets [http.ResponseController] reach the flusher.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (s *statusRecorder) code() int {
	if s.status == 0 {
		return http.StatusOK
	}
	return s.status
}
