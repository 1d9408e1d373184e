package agent

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tetherhq/tether/internal/approval"
	"github.com/tetherhq/tether/internal/grant"
	"github.com/tetherhq/tether/internal/protocol"
	"github.com/tetherhq/tether/internal/source"
	"github.com/tetherhq/tether/internal/source/registry"
)

// The agent's metrics are Prometheus metrics on a registry of its own
// (never the process-wide default one), served at GET /metrics on the
// loopback health address (--health-addr) only: the tailnet API answers
// broker nodes alone, and has no /metrics. Every label is bounded: a
// source is a registered source's name (or "none" for a refused call that
// is no data-plane call), an outcome one of four words, a refusal's reason
// one of the codes below, a direction "in" or "out". No grant, engineer,
// SQL, PromQL or address ever becomes a label: the agent serves one
// deployment, so none is needed either.

// Outcomes of a data-plane call (tether_agent_calls_total's outcome).
const (
	outcomeOK         = "ok"         // answered in full
	outcomeIncomplete = "incomplete" // answered, then cut short (revocation, expiry, the upstream's error mid-answer)
	outcomeRefused    = "refused"    // refused: see tether_agent_refusals_total
	outcomeFailed     = "failed"     // not answered: the upstream failed, the audit spool failed, the caller left
)

// sourceNone is the source label of a refused call that is no data-plane
// call: a ping, a revocation, an unknown path.
const sourceNone = "none"

// Refusal reasons (tether_agent_refusals_total's reason). A refusal of
// the broker's call itself (serve.go's verifyBroker):
const (
	reasonNotAPeer      = "not_a_peer"      // the caller is not on the tailnet
	reasonNotBroker     = "not_broker_node" // a tailnet node that did not prove the broker key
	reasonClockSkew     = "clock_skew"      // the call's signature time is beyond protocol.MaxCallSkew
	reasonMalformedCall = "malformed_call"  // signature, time, nonce or body malformed
	reasonBadSignature  = "bad_signature"   // the call's signature is not the pinned broker key's
	reasonReplayedCall  = "replayed_call"   // a nonce seen before
	reasonNonceLimit    = "nonce_limit"     // too many calls within the nonce window
	reasonInternal      = "internal"        // the agent's own state is broken
)

// Refusals of a call's grant (verifyGrant), of its admission (admitCall)
// and of the call by the source's guard, named by the agent API's answer
// code.
const (
	reasonWitnessRefusing    = "witness_refusing"
	reasonNotApproved        = CodeNotApproved
	reasonBreakGlassRefused  = CodeBreakGlassRefused
	reasonGrantExpired       = "grant_expired"
	reasonGrantRevoked       = "grant_revoked"
	reasonGrantNotYetValid   = "grant_not_yet_valid"
	reasonGrantScope         = "grant_scope"
	reasonGrantSignature     = "grant_signature"
	reasonGrantOtherAgent    = "grant_other_agent"
	reasonGrantMalformed     = "grant_malformed"
	reasonGrantRefused       = CodeGrantRefused
	reasonTooManyCalls       = "too_many_calls"
	reasonNotConfigured      = "source_not_configured"
	reasonBadRequest         = "bad_request"
	reasonQueryDenied        = "query_denied"
	reasonPromDenied         = "prom_denied"
	reasonPromAnswerWithheld = "prom_answer_withheld"
)

// answerRefusals maps the agent API's error codes that mean a refusal to
// their reason; any other error answer is a failure. Codes not listed here
// never reach a label.
var answerRefusals = map[string]string{
	"query_denied":         reasonQueryDenied,
	"prom_denied":          reasonPromDenied,
	"prom_answer_withheld": reasonPromAnswerWithheld,
	"too_many_calls":       reasonTooManyCalls,
	"grant_revoked":        reasonGrantRevoked, // cut off before the upstream answered
	"grant_expired":        reasonGrantExpired,
	"bad_json":             reasonBadRequest,
	"bad_body":             reasonBadRequest,
}

// callRefusal is the error of a refused broker call with its reason code;
// its message is the wrapped error's.
type callRefusal struct {
	code string
	err  error
}

func (r *callRefusal) Error() string { return r.err.Error() }
func (r *callRefusal) Unwrap() error { return r.err }

// refusedCall tags err, why a broker call is refused, with its reason.
func refusedCall(code string, err error) error { return &callRefusal{code: code, err: err} }

// callRefusalReason is the reason of a refused broker call.
func callRefusalReason(err error) string {
	if r, ok := errors.AsType[*callRefusal](err); ok {
		return r.code
	}
	return reasonInternal
}

// grantRefusalReason is the reason of a refused grant.
func grantRefusalReason(err error) string {
	switch {
	case errors.Is(err, ErrWitnessRefuses):
		return reasonWitnessRefusing
	case errors.Is(err, approval.ErrBreakGlassRefused):
		return reasonBreakGlassRefused
	case errors.Is(err, approval.ErrNotApproved):
		return reasonNotApproved
	case errors.Is(err, grant.ErrExpired):
		return reasonGrantExpired
	case errors.Is(err, grant.ErrRevoked):
		return reasonGrantRevoked
	case errors.Is(err, grant.ErrNotYetValid):
		return reasonGrantNotYetValid
	case errors.Is(err, grant.ErrScope):
		return reasonGrantScope
	case errors.Is(err, grant.ErrSignature), errors.Is(err, grant.ErrAlgorithm):
		return reasonGrantSignature
	case errors.Is(err, grant.ErrWrongDeployment), errors.Is(err, grant.ErrWrongAgent):
		return reasonGrantOtherAgent
	case errors.Is(err, grant.ErrMalformed):
		return reasonGrantMalformed
	}
	return reasonGrantRefused
}

// callBuckets suit calls from a cached SELECT 1 (about a millisecond) to
// the default query time limit (60 s).
var callBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

// agentMetrics are the agent's metrics and the registry that serves them.
type agentMetrics struct {
	reg      *prometheus.Registry
	calls    *prometheus.CounterVec   // source, outcome
	refusals *prometheus.CounterVec   // source, reason
	rows     *prometheus.CounterVec   // source
	bytes    *prometheus.CounterVec   // source, direction
	duration *prometheus.HistogramVec // source
	ttfb     *prometheus.HistogramVec // source

	spooled   atomic.Int64 // events in the audit spool, not yet delivered
	tailnetUp atomic.Bool  // the agent's tailnet node is up (not joining again)

	clientsMu sync.Mutex
	clients   map[string]*http.Client // the data plane's client, timed per source
}

// metrics returns the agent's metrics, made at first use.
func (a *Agent) metrics() *agentMetrics {
	a.metricsOnce.Do(func() { a.m = newAgentMetrics(a) })
	return a.m
}

func newAgentMetrics(a *Agent) *agentMetrics {
	m := &agentMetrics{
		reg: prometheus.NewRegistry(),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_agent_calls_total",
			Help: "Data-plane calls the agent answered, by source and outcome (ok, incomplete: cut short after the answer began, refused, failed).",
		}, []string{"source", "outcome"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_agent_refusals_total",
			Help: "Calls the agent refused, by source (none: a broker call that is no data-plane call) and reason code (the broker call's verification, the grant's, the call limit, the guard's).",
		}, []string{"source", "reason"}),
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_agent_rows_total",
			Help: "Result rows the agent streamed, by source (sources that count rows: ClickHouse).",
		}, []string{"source"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_agent_bytes_total",
			Help: "Bytes of data-plane calls: in, the calls' bodies from the broker; out, the answers to it.",
		}, []string{"source", "direction"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tether_agent_call_duration_seconds",
			Help:    "How long a data-plane call took at the agent, from its arrival to the end of its answer (streaming included).",
			Buckets: callBuckets,
		}, []string{"source"}),
		ttfb: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tether_agent_upstream_ttfb_seconds",
			Help:    "How long the upstream took to answer each request the agent sent it, to its headers (time to first byte): the calls' requests, and the agent's own (the guard's read of ClickHouse's catalog, a KILL QUERY).",
			Buckets: callBuckets,
		}, []string{"source"}),
		clients: map[string]*http.Client{},
	}
	for _, src := range registry.All() {
		for _, o := range []string{outcomeOK, outcomeIncomplete, outcomeRefused, outcomeFailed} {
			m.calls.WithLabelValues(src.Name, o)
		}
		m.rows.WithLabelValues(src.Name)
		m.bytes.WithLabelValues(src.Name, "in")
		m.bytes.WithLabelValues(src.Name, "out")
		m.duration.WithLabelValues(src.Name)
		m.ttfb.WithLabelValues(src.Name)
	}
	m.reg.MustRegister(m.calls, m.refusals, m.rows, m.bytes, m.duration, m.ttfb, newStateCollector(a, m),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// healthHandler serves the loopback health address: GET /healthz, and
// GET /metrics from the agent's own registry.
func (a *Agent) healthHandler() http.Handler {
	mh := promhttp.HandlerFor(a.metrics().reg, promhttp.HandlerOpts{MaxRequestsInFlight: 4, Timeout: 10 * time.Second})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/metrics" {
			if r.Method != http.MethodGet && r.Method != http.MethodHead {
				w.Header().Set("Allow", "GET, HEAD")
				http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
				return
			}
			mh.ServeHTTP(w, r)
			return
		}
		a.serveHealth(w, r)
	})
}

// refusedBrokerCall counts a broker call refused by verifyBroker.
func (m *agentMetrics) refusedBrokerCall(path string, err error) {
	src := sourceNone
	for _, s := range registry.All() {
		if strings.HasPrefix(path, s.AgentPath()) || path == strings.TrimSuffix(s.AgentPath(), "/") {
			src = s.Name
			break
		}
	}
	m.refusals.WithLabelValues(src, callRefusalReason(err)).Inc()
}

// client is the data plane's client hc, with the time to the upstream's
// answer observed as src's.
func (m *agentMetrics) client(hc *http.Client, src string) *http.Client {
	m.clientsMu.Lock()
	defer m.clientsMu.Unlock()
	if c := m.clients[src]; c != nil {
		return c
	}
	c := *hc
	c.Transport = ttfbTransport{rt: hc.Transport, obs: m.ttfb.WithLabelValues(src)}
	m.clients[src] = &c
	return &c
}

// ttfbTransport observes how long each round trip took to its response
// headers. A query's KILL (sent when a call is cut off) is one of them.
type ttfbTransport struct {
	rt  http.RoundTripper
	obs prometheus.Observer
}

func (t ttfbTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	start := time.Now()
	res, err := t.rt.RoundTrip(r)
	if err == nil {
		d := time.Since(start)
		t.obs.Observe(d.Seconds())
		source.AddTiming(r.Context(), protocol.TimingUpstream, d)
	}
	return res, err
}

// observeRows counts the result rows a finished call's audit event
// reports.
func (m *agentMetrics) observeRows(src string, details map[string]any) {
	var n float64
	switch v := details["result_rows"].(type) {
	case int64:
		n = float64(v)
	case int:
		n = float64(v)
	case uint64:
		n = float64(v)
	case float64:
		n = v
	default:
		return
	}
	if n > 0 {
		m.rows.WithLabelValues(src).Add(n)
	}
}

// callMeter measures one data-plane call: it wraps the call's answer to
// count its bytes and see its status, and the call's body to count what
// the broker sent.
type callMeter struct {
	http.ResponseWriter
	m      *agentMetrics
	src    string
	start  time.Time
	in     *countingReader
	out    int64
	status int
	reason string // set when the agent refused the call before its engine ran
	errAns []byte // the start of an error answer, to read its code
}

// maxErrAnswer bounds what a meter keeps of an error answer: the agent's
// own error answers are a short JSON object.
const maxErrAnswer = 2 << 10

// meter starts measuring a call of source src; done ends it.
func (m *agentMetrics) meter(w http.ResponseWriter, r *http.Request, src string) *callMeter {
	c := &callMeter{ResponseWriter: w, m: m, src: src, start: time.Now()}
	if r.Body != nil {
		c.in = &countingReader{r: r.Body}
		r.Body = c.in
	}
	return c
}

// refuse says the agent refused the call, for reason.
func (c *callMeter) refuse(reason string) { c.reason = reason }

func (c *callMeter) WriteHeader(status int) {
	if c.status == 0 {
		c.status = status
	}
	c.ResponseWriter.WriteHeader(status)
}

func (c *callMeter) Write(p []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	if c.status >= 400 && len(c.errAns) < maxErrAnswer {
		c.errAns = append(c.errAns, p[:min(len(p), maxErrAnswer-len(c.errAns))]...)
	}
	n, err := c.ResponseWriter.Write(p)
	c.out += int64(n)
	return n, err
}

func (c *callMeter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// done records the call once its handler returned (or panicked).
func (c *callMeter) done() {
	outcome, reason := c.classify()
	m := c.m
	m.calls.WithLabelValues(c.src, outcome).Inc()
	if reason != "" {
		m.refusals.WithLabelValues(c.src, reason).Inc()
	}
	if c.in != nil {
		m.bytes.WithLabelValues(c.src, "in").Add(float64(c.in.n.Load()))
	}
	m.bytes.WithLabelValues(c.src, "out").Add(float64(c.out))
	m.duration.WithLabelValues(c.src).Observe(time.Since(c.start).Seconds())
}

// classify is the call's outcome and, for a refusal, its reason.
func (c *callMeter) classify() (outcome, reason string) {
	switch {
	case c.reason != "":
		return outcomeRefused, c.reason
	case c.status >= 200 && c.status < 300:
		if c.Header().Get(protocol.TrailerStopped) != "" {
			return outcomeIncomplete, ""
		}
		return outcomeOK, ""
	case c.status == 0:
		return outcomeFailed, "" // the handler gave up before answering
	}
	var e struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	if json.Unmarshal(c.errAns, &e) == nil {
		if r, ok := answerRefusals[e.Error.Code]; ok {
			return outcomeRefused, r
		}
		if e.Error.Code == "no_"+c.src {
			return outcomeRefused, reasonNotConfigured
		}
	}
	return outcomeFailed, ""
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.ReadCloser
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func (c *countingReader) Close() error { return c.r.Close() }

// countSpool sets the spool's depth from its file, once at start: the
// events a previous run left undelivered.
func (m *agentMetrics) countSpool(path string) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	var n int64
	r := bufio.NewReaderSize(f, 64<<10)
	for {
		line, err := r.ReadSlice('\n')
		if len(line) > 0 && line[len(line)-1] == '\n' {
			n++
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			break
		}
	}
	m.spooled.Store(n)
}

// spoolHead is how much of the spool's first event is read for its time:
// an event's JSON starts with its version, ID and time.
const spoolHead = 512

// oldestSpooled is the time of the event whose JSON head is the start
// of; ok is false when there is none or its time cannot be read.
func oldestSpooled(head []byte) (t time.Time, ok bool) {
	const key = `"time":"`
	i := bytes.Index(head, []byte(key))
	if i < 0 || bytes.IndexByte(head[:i], '\n') >= 0 {
		return t, false
	}
	rest := head[i+len(key):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return t, false
	}
	t, err := time.Parse(time.RFC3339Nano, string(rest[:j]))
	return t, err == nil
}

// stateCollector reports the agent's state at scrape time: witness,
// spool, tailnet, broker nodes, heartbeats, clock, calls in flight and
// build. Its reads are in memory but for the witness state file and the
// head of the spool, both small.
type stateCollector struct {
	a *Agent
	m *agentMetrics

	witnessRefusing, witnessSize, brokerSize   *prometheus.Desc
	spoolEvents, spoolBytes, spoolOldest       *prometheus.Desc
	tailnetUp, proven, lastHeartbeat, interval *prometheus.Desc
	clockSkew, inFlight, buildInfo             *prometheus.Desc
}

func newStateCollector(a *Agent, m *agentMetrics) *stateCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("tether_agent_"+name, help, labels, nil)
	}
	return &stateCollector{
		a: a, m: m,
		witnessRefusing: d("witness_refusing", "1 while the agent, as the customer's witness, found the broker's audit log rewritten and refuses every data-plane call (its heartbeats say why); 0 otherwise."),
		witnessSize:     d("witness_checkpoint_size", "Tree size of the broker's audit checkpoint the agent last cosigned."),
		brokerSize:      d("broker_checkpoint_size", "Tree size of the latest audit checkpoint the broker announced in a heartbeat answer; the agent cosigns up to it."),
		spoolEvents:     d("spool_events", "Audit events in the agent's spool, recorded (fsynced) but not yet delivered to the broker."),
		spoolBytes:      d("spool_bytes", "Size of the undelivered events in the agent's audit spool; at 256 MiB the agent refuses calls it cannot record."),
		spoolOldest:     d("spool_oldest_age_seconds", "Age of the oldest undelivered event in the agent's audit spool; 0 when the spool is empty."),
		tailnetUp:       d("tailnet_up", "1 while the agent's tailnet node is up; 0 before it joined and while it joins again."),
		proven:          d("broker_nodes_proven", "Broker nodes that proved the broker's key to the agent recently; only they may call it."),
		lastHeartbeat:   d("heartbeat_last_success_timestamp_seconds", "Unix time of the last heartbeat the broker accepted; 0 before the first."),
		interval:        d("heartbeat_interval_seconds", "The heartbeat interval the broker asks for; the agent is offline after three missed heartbeats."),
		clockSkew:       d("clock_skew_seconds", "How far the agent's clock is ahead of the broker's (negative: behind), as its latest heartbeat measured; the agent refuses the broker's calls beyond 60 s."),
		inFlight:        d("calls_in_flight", "Data-plane calls being answered."),
		buildInfo:       d("build_info", "The agent's version, as label version; always 1.", "version"),
	}
}

// Describe implements [prometheus.Collector].
func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.witnessRefusing, c.witnessSize, c.brokerSize, c.spoolEvents, c.spoolBytes, c.spoolOldest,
		c.tailnetUp, c.proven, c.lastHeartbeat, c.interval, c.clockSkew, c.inFlight, c.buildInfo} {
		ch <- d
	}
}

// Collect implements [prometheus.Collector].
func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	a := c.a
	now := a.now()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(c.witnessRefusing, b2f(a.WitnessRefusal() != ""))
	if w, _, err := a.loadWitness(); err == nil {
		gauge(c.witnessSize, float64(w.Size))
	}
	a.mu.Lock()
	lastOK, interval, brokerSize := a.lastOK, a.interval, a.checkpointSize
	a.mu.Unlock()
	gauge(c.brokerSize, float64(brokerSize))
	gauge(c.spoolEvents, float64(max(c.m.spooled.Load(), 0)))
	if a.spool != nil {
		size, head := a.spool.undelivered(spoolHead)
		gauge(c.spoolBytes, float64(size))
		age := 0.0
		if t, ok := oldestSpooled(head); ok {
			age = max(now.Sub(t).Seconds(), 0)
		}
		gauge(c.spoolOldest, age)
	}
	gauge(c.tailnetUp, b2f(c.m.tailnetUp.Load()))
	gauge(c.proven, float64(a.proven.count(now)))
	hb := 0.0
	if !lastOK.IsZero() {
		hb = float64(lastOK.UnixNano()) / 1e9
	}
	gauge(c.lastHeartbeat, hb)
	gauge(c.interval, interval.Seconds())
	if o := a.clock.latest(); o != nil {
		gauge(c.clockSkew, o.Offset().Seconds())
	}
	gauge(c.inFlight, float64(a.calls.inFlight()))
	gauge(c.buildInfo, 1, a.cfg.Version)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// count is the broker nodes whose proof is still trusted at now.
func (p *provenNodes) count(now time.Time) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, u := range p.until {
		if now.Before(u) {
			n++
		}
	}
	return n
}

// inFlight is the calls in flight, all grants together.
func (l *callLimiter) inFlight() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, g := range l.grants {
		n += g.inFlight
	}
	return n
}
