// Package promguard decides which calls an agent forwards to the Prometheus
// HTTP API it guards, and rebuilds every call it allows from the values it
// parsed, never from the raw URL or body, so that what Prometheus receives
// is exactly what was checked.
//
// The guard allows the read-only query and discovery endpoints of
// Prometheus's /api/v1 and denies everything else: the TSDB admin API, the
// lifecycle endpoints under /-/, remote write and read, OTLP, federation,
// the web UI, the configuration and flags (which may hold secrets), and any
// path it does not know. Parameters are allowlisted per endpoint; PromQL
// and series selectors go through the Prometheus parser; times, steps and
// ranges are bounded so that one call cannot ask Prometheus for more than a
// month of data or more than [MaxPoints] points per series.
//
// # The work of a whole query
//
// Bounding each part of a query is not enough: nested subqueries
// multiply. Three levels of month-long subqueries at a 5m step, each
// within [MaxPoints], took 4.2 s of Prometheus CPU for one series. So
// [Check] also estimates the work of the whole expression, per series,
// and refuses a query over [MaxSamples]: the expression is evaluated at 1
// timestamp (an instant query) or at (end−start)/step+1 (a range query);
// at each evaluation a vector selector reads about one sample, a range
// selector [r] reads r/[AssumedScrapeInterval] samples, and a subquery
// [R:S] yields R/S points, at each of which its inner expression is
// evaluated in turn, so the counts multiply down through nested
// subqueries. The refusal names the estimate, the limit and the heaviest
// part of the query, and says how to shrink it.
//
// # Answers that echo configuration
//
// A scrape configuration may hold secrets: a token in params: (the scrape
// URL's query string), user-info in a target's address, credentials in an
// Alertmanager URL, and rules are free text. /api/v1/status/config and
// /api/v1/status/flags are refused for that reason, and so is
// /api/v1/alertmanagers (it lists Alertmanager URLs). The endpoints below
// are allowed, but their answers echo configuration, so [Check] sets
// [Verdict.Rewrite] and the agent reads the answer whole (at most
// [MaxAnswer] bytes; a longer one is refused, never streamed) and passes
// on only what [Rewrite] makes of it. Rewrite keeps only the fields it
// knows, by name, and refuses (with [ErrAnswer]) an answer that is not
// the JSON Prometheus sends, rather than pass it through.
//
//   - /api/v1/targets: discoveredLabels is emptied ({}) for active and
//     dropped targets, which drops __address__ (user-info) and every
//     __param_* label; scrapeUrl and globalUrl lose their user-info, query
//     string and fragment; lastError, which quotes URLs and responses, is
//     replaced by [Withheld] when set; target labels whose name starts with
//     __ are dropped, and label values lose user-info (user:pw@host:port)
//     and, when they are URLs, user-info and query string. Fields the
//     guard does not know (a later release's) are dropped.
//   - /api/v1/targets/metadata: the target labels are cleaned as above;
//     metric, type, help and unit are kept.
//   - /api/v1/rules: every annotation value, of rules and of their alerts,
//     is replaced by [Withheld] (the names are kept), and so is lastError;
//     rule labels and alert labels are cleaned as above; names, queries,
//     files, health and timings are kept.
//   - /api/v1/alerts: annotation values are withheld and labels cleaned,
//     as for the alerts of /api/v1/rules.
//   - An error answer ("status":"error") keeps its errorType and error,
//     which for these endpoints are about the call's parameters.
//
// Every other allowed endpoint answers with data, not configuration, and
// is streamed as it comes: queries, series, labels and label values,
// metric metadata, buildinfo, runtimeinfo (start time, working directory,
// Go runtime settings, retention) and the TSDB statistics. A secret in a
// target label is a label of every series that target produced, and the
// queries return it like any label value: no rewriting of answers can
// tell it from data. User-info in a target's address becomes its instance
// label unless relabelling says otherwise (Prometheus 2.42 then fails to
// scrape the target, so a working configuration rarely has it), and
// relabelling can copy a __param_* value into a label. Keep secrets out of
// target labels and out of metrics_path (which scrapeUrl keeps): use
// basic_auth, authorization or a credentials file instead.
//
// Call [Check] with the request as the agent received it (the path relative
// to the Prometheus API root), then [Request.NewHTTPRequest] to build the
// upstream call, and [Rewrite] on the answer when [Verdict.Rewrite] says
// so.
package promguard

import (
	"context"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"
)

// Limits the guard enforces.
const (
	// MaxQueryLen bounds a PromQL expression, and each series selector, in
	// bytes after decoding.
	MaxQueryLen = 16 << 10
	// MaxBody bounds a POST body and, separately, the URL's query string.
	// Callers read at most MaxBody+1 bytes of the body so that Check sees
	// an oversized body and denies it.
	MaxBody = 64 << 10
	// MaxRange bounds end−start of a call, and the range of any range
	// selector or subquery in its PromQL.
	MaxRange = 31 * 24 * time.Hour
	// MaxPoints bounds the points per series of a range query,
	// (end−start)/step + 1, and of a subquery.
	MaxPoints = 11000
	// MaxTimeout is the longest evaluation timeout a query may ask for; a
	// query that asks for none is sent with this one.
	MaxTimeout = 2 * time.Minute
	// MaxMatchers bounds the match[] (and other repeated) parameters of a
	// call.
	MaxMatchers = 64
	// maxParams bounds the parameters of a call, repeated ones included.
	maxParams = 128
	// maxText bounds free-text parameters such as scrapePool or metric.
	maxText = 1 << 10
)

// Request is an allowed call, rebuilt from parsed values. Its parameters
// are in Query for GET and in Form (the form-encoded body) for POST.
type Request struct {
	Method string     // GET or POST
	Path   string     // e.g. /api/v1/query_range
	Query  url.Values // URL query parameters; nil for POST
	Form   url.Values // body parameters; nil for GET
}

// Params returns the call's parameters, wherever they travel.
func (r Request) Params() url.Values {
	if r.Method == http.MethodPost {
		return r.Form
	}
	return r.Query
}

// Verdict is the guard's decision on one call.
type Verdict struct {
	Allow bool
	// Reason says why the call was denied, in words a person can act on;
	// empty when allowed.
	Reason string
	// Endpoint is the endpoint the path matched, such as /api/v1/query or
	// /api/v1/label/{name}/values; empty when it matched none.
	Endpoint string
	// Rewrite says that the answer echoes configuration and must not be
	// passed on as it comes: read it whole (up to [MaxAnswer] bytes) and
	// pass on what [Rewrite] makes of it, or nothing.
	Rewrite bool
}

func deny(endpoint, format string, args ...any) (Request, Verdict) {
	return Request{}, Verdict{Reason: fmt.Sprintf(format, args...), Endpoint: endpoint}
}

// Check decides whether a call to the Prometheus HTTP API may go upstream
// and, if so, returns it rebuilt from its parsed parameters.
//
// u is the request target as received, with its path relative to the
// Prometheus API root (/api/v1/…): an origin-form URL such as
// url.ParseRequestURI gives, without scheme or host. contentType and body
// are the request's Content-Type header and body (read with a limit of
// [MaxBody]+1 bytes).
//
// A POST may carry parameters both in the URL and in the body; as in
// Prometheus they are merged, and the rebuilt call carries them all in its
// body. A parameter that takes one value and is given more than once,
// wherever, is denied rather than resolved. A query that sets no timeout is
// given [MaxTimeout].
func Check(method string, u *url.URL, contentType string, body []byte) (Request, Verdict) {
	ep, label, reason := route(u)
	if ep == nil {
		return deny("", "%s", reason)
	}
	switch {
	case method == http.MethodGet:
	case method == http.MethodPost && ep.post:
	case ep.post:
		return deny(ep.pattern, "method %s is not allowed on %s: use GET or POST", printable(method), ep.pattern)
	default:
		return deny(ep.pattern, "method %s is not allowed on %s: use GET", printable(method), ep.pattern)
	}

	if len(u.RawQuery) > MaxBody {
		return deny(ep.pattern, "the URL's query string is %d bytes, over the %d-byte limit: send long queries with POST", len(u.RawQuery), MaxBody)
	}
	params, reason := parseForm(u.RawQuery, "URL query")
	if reason != "" {
		return deny(ep.pattern, "%s", reason)
	}
	if method == http.MethodGet && len(body) > 0 {
		return deny(ep.pattern, "a GET request must not have a body: put the parameters in the URL, or use POST")
	}
	if method == http.MethodPost {
		if reason := checkContentType(contentType, len(body) > 0); reason != "" {
			return deny(ep.pattern, "%s", reason)
		}
		if len(body) > MaxBody {
			return deny(ep.pattern, "the body is over the %d-byte limit", MaxBody)
		}
		more, reason := parseForm(string(body), "body")
		if reason != "" {
			return deny(ep.pattern, "%s", reason)
		}
		params = append(params, more...)
	}
	if len(params) > maxParams {
		return deny(ep.pattern, "the call has %d parameters, over the limit of %d", len(params), maxParams)
	}

	c := call{ep: ep, values: url.Values{}}
	for _, p := range params {
		if reason := c.add(p.key, p.value); reason != "" {
			return deny(ep.pattern, "%s", reason)
		}
	}
	if reason := c.finish(); reason != "" {
		return deny(ep.pattern, "%s", reason)
	}

	path := ep.pattern
	if label != "" {
		path = "/api/v1/label/" + label + "/values"
	}
	req := Request{Method: method, Path: path}
	if method == http.MethodPost {
		req.Form = c.values
	} else {
		req.Query = c.values
	}
	return req, Verdict{Allow: true, Endpoint: ep.pattern, Rewrite: ep.answer != nil}
}

// route matches the path of u against the endpoints, and says why not when
// none matches. label is the label name of /api/v1/label/{name}/values.
func route(u *url.URL) (ep *endpoint, label, reason string) {
	switch {
	case u == nil:
		return nil, "", "the request has no URL"
	case u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "":
		return nil, "", "the request target must be a path such as /api/v1/query, not an absolute URL"
	case u.Fragment != "" || u.RawFragment != "":
		return nil, "", "the request target must not have a #fragment"
	}
	p := u.Path
	if p == "" || p[0] != '/' {
		return nil, "", fmt.Sprintf("the path %q must start with /, e.g. /api/v1/query", printable(p))
	}
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_', c == '/', c == '-':
		case c == '.':
			return nil, "", fmt.Sprintf("the path %q holds a dot: . and .. segments and file names are not allowed", printable(p))
		case c == '%':
			return nil, "", fmt.Sprintf("the path %q holds a %% sign (double encoding?): write the path plainly, e.g. /api/v1/query", printable(p))
		case c == ';':
			return nil, "", fmt.Sprintf("the path %q holds a ;: path parameters are not allowed", printable(p))
		default:
			r, _ := utf8.DecodeRuneInString(p[i:])
			return nil, "", fmt.Sprintf("the path %q holds %q: only letters, digits, _, - and / are allowed", printable(p), r)
		}
	}
	switch {
	case u.RawPath != "":
		// The path held escapes that differ from its canonical encoding,
		// such as %61 for "a" or %2F for "/": a classic way around path
		// rules, and never needed for the allowed endpoints.
		return nil, "", fmt.Sprintf("the path %q is percent-encoded: write it plainly, e.g. /api/v1/query", printable(u.RawPath))
	case strings.HasPrefix(p, "//"):
		return nil, "", fmt.Sprintf("the path %q starts with //: write it as /api/v1/…", p)
	case strings.Contains(p, "//"):
		return nil, "", fmt.Sprintf("the path %q has an empty segment (//)", p)
	case len(p) > 1 && strings.HasSuffix(p, "/"):
		return nil, "", fmt.Sprintf("the path %q ends with /: remove the trailing slash", p)
	}
	if ep := endpoints[p]; ep != nil {
		return ep, "", ""
	}
	if rest, ok := strings.CutPrefix(p, "/api/v1/label/"); ok {
		name, ok := strings.CutSuffix(rest, "/values")
		if ok && !strings.Contains(name, "/") {
			if !validLabelName(name) {
				return nil, "", fmt.Sprintf("%q is not a label name: in the path, a label name matches [a-zA-Z_][a-zA-Z0-9_]* (up to 256 characters)", name)
			}
			return labelValues, name, ""
		}
	}
	return nil, "", deniedPath(p)
}

// deniedPath says why a path that is no allowed endpoint is denied, naming
// the family it belongs to when it is a known one.
func deniedPath(p string) string {
	under := func(prefix string) bool { return p == prefix || strings.HasPrefix(p, prefix+"/") }
	switch {
	case under("/api/v1/admin"):
		return fmt.Sprintf("%s is part of the TSDB admin API (snapshots, deletion), which is never allowed", p)
	case under("/-"):
		return fmt.Sprintf("%s is a Prometheus lifecycle or health endpoint (/-/reload, /-/quit, …), which is not allowed", p)
	case under("/api/v1/write"), under("/api/v1/read"):
		return fmt.Sprintf("%s is remote write or read, which is not allowed: query with /api/v1/query or /api/v1/query_range", p)
	case under("/api/v1/otlp"):
		return fmt.Sprintf("%s is OTLP ingestion, which is not allowed", p)
	case under("/federate"):
		return fmt.Sprintf("%s is federation, which is not allowed: query with /api/v1/query", p)
	case under("/api/v1/status/config"), under("/api/v1/status/flags"):
		return fmt.Sprintf("%s may expose secrets (configuration, flags) and is not allowed", p)
	case under("/api/v1/alertmanagers"):
		return fmt.Sprintf("%s lists Alertmanager URLs, which may hold credentials, and is not allowed: /api/v1/alerts lists the alerts", p)
	case !strings.HasPrefix(p, "/api/"):
		return fmt.Sprintf("%s is not part of the Prometheus HTTP API (the web UI and other pages are not served): use the API under /api/v1/, e.g. /api/v1/query", p)
	}
	return fmt.Sprintf("%s is not an allowed Prometheus API endpoint; allowed: %s", p, strings.Join(allowedPatterns(), ", "))
}

func checkContentType(ct string, hasBody bool) string {
	if ct == "" {
		if hasBody {
			return "a POST body needs Content-Type: application/x-www-form-urlencoded"
		}
		return ""
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || mt != "application/x-www-form-urlencoded" {
		return fmt.Sprintf("Content-Type %q is not allowed: send the parameters as application/x-www-form-urlencoded", printable(ct))
	}
	for k, v := range params {
		if k != "charset" || !strings.EqualFold(v, "utf-8") {
			return fmt.Sprintf("Content-Type %q is not allowed: the only parameter allowed is charset=utf-8", printable(ct))
		}
	}
	return ""
}

type param struct{ key, value string }

// parseForm parses a query string or form body strictly: & separates
// parameters, and empty parameters, semicolons, bad escapes and invalid
// UTF-8 are refused.
func parseForm(s, where string) ([]param, string) {
	if s == "" {
		return nil, ""
	}
	var out []param
	for part := range strings.SplitSeq(s, "&") {
		if len(out) == maxParams {
			return nil, fmt.Sprintf("the %s has over %d parameters", where, maxParams)
		}
		if part == "" {
			return nil, fmt.Sprintf("the %s has an empty parameter (&& or a leading or trailing &)", where)
		}
		if strings.Contains(part, ";") {
			return nil, fmt.Sprintf("the %s holds a ; outside an escape: separate parameters with & and escape ; as %%3B", where)
		}
		rk, rv, _ := strings.Cut(part, "=")
		k, err := url.QueryUnescape(rk)
		if err != nil {
			return nil, fmt.Sprintf("the %s has a bad escape in parameter name %q", where, printable(rk))
		}
		v, err := url.QueryUnescape(rv)
		if err != nil {
			return nil, fmt.Sprintf("the %s has a bad escape in parameter %q", where, printable(k))
		}
		if k == "" {
			return nil, fmt.Sprintf("the %s has a parameter without a name", where)
		}
		if reason := checkText(k, v); reason != "" {
			return nil, reason
		}
		out = append(out, param{k, v})
	}
	return out, ""
}

// checkText refuses names and values that are not valid UTF-8 or that hold
// control characters (but tabs and newlines in values) or bidirectional
// overrides, which could make an audit record read differently from what
// ran.
func checkText(k, v string) string {
	if !utf8.ValidString(k) || !utf8.ValidString(v) {
		return fmt.Sprintf("parameter %q is not valid UTF-8", printable(k))
	}
	for _, r := range k {
		if r < 0x20 || (0x7f <= r && r < 0xa0) || bidi(r) {
			return fmt.Sprintf("parameter name %q holds control character %U", printable(k), r)
		}
	}
	for _, r := range v {
		switch {
		case r == '\t' || r == '\n' || r == '\r':
		case r < 0x20 || (0x7f <= r && r < 0xa0):
			return fmt.Sprintf("parameter %q holds control character %U", printable(k), r)
		case bidi(r):
			return fmt.Sprintf("parameter %q holds bidirectional control %U", printable(k), r)
		}
	}
	return ""
}

func bidi(r rune) bool {
	return 0x202a <= r && r <= 0x202e || 0x2066 <= r && r <= 0x2069
}

// printable shortens s for a reason: reasons end up in logs and audit
// records, so they must not echo megabytes back.
func printable(s string) string {
	const max = 120
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

func validLabelName(s string) bool {
	if s == "" || len(s) > 256 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '_' || i > 0 && '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

// NewHTTPRequest builds the upstream call for r to the Prometheus at base,
// its root URL such as http://prometheus:9090 (a path prefix such as
// /prometheus is kept). Only the guard's rebuilt values travel: the path,
// and the parameters in the URL (GET) or a form body (POST).
func (r Request) NewHTTPRequest(ctx context.Context, base string) (*http.Request, error) {
	b, err := url.Parse(base)
	if err != nil {
		return nil, fmt.Errorf("prometheus URL %q: %w", base, err)
	}
	if (b.Scheme != "http" && b.Scheme != "https") || b.Host == "" || b.Opaque != "" || b.RawQuery != "" || b.Fragment != "" {
		return nil, fmt.Errorf("prometheus URL %q: want the server's root URL, such as http://prometheus:9090", base)
	}
	if (r.Method != http.MethodGet && r.Method != http.MethodPost) || !strings.HasPrefix(r.Path, "/api/v1/") {
		return nil, fmt.Errorf("build prometheus request: %s %q is not a request allowed by Check", r.Method, r.Path)
	}
	u := &url.URL{Scheme: b.Scheme, User: b.User, Host: b.Host, Path: strings.TrimSuffix(b.Path, "/") + r.Path}
	if b.RawPath != "" {
		u.RawPath = strings.TrimSuffix(b.RawPath, "/") + r.Path
	}
	var body io.Reader
	if r.Method == http.MethodPost {
		body = strings.NewReader(r.Form.Encode())
	} else {
		u.RawQuery = r.Query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, r.Method, u.String(), body)
	if err != nil {
		return nil, fmt.Errorf("build prometheus request: %w", err)
	}
	if r.Method == http.MethodPost {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	return req, nil
}
