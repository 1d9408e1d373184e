package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/agentapi"
	"github.com/tetherhq/tether/internal/grant"
	"github.com/tetherhq/tether/internal/promguard"
	"github.com/tetherhq/tether/internal/sqlguard"
)

// Upstreams configures what the agent guards: ClickHouse's HTTP interface
// and Prometheus's HTTP API, both inside the customer's VPC.
type Upstreams struct {
	ClickHouseURL      string // e.g. http://clickhouse:8123; empty disables SQL
	ClickHouseUser     string // the read-only user of deploy/clickhouse/users.d/tether.xml
	ClickHousePassword string
	PrometheusURL      string // e.g. http://prometheus:9090; empty disables PromQL
	Limits             QueryLimits
}

// QueryLimits are the settings the agent forces on every query, whatever
// the query asks for.
type QueryLimits struct {
	MaxExecutionTime time.Duration // default 60s
	MaxResultRows    int64         // default 10,000,000
	MaxResultBytes   int64         // default 2 GB
	MaxMemoryUsage   int64         // default 2 GB
}

func (l *QueryLimits) setDefaults() {
	if l.MaxExecutionTime <= 0 {
		l.MaxExecutionTime = 60 * time.Second
	}
	if l.MaxResultRows <= 0 {
		l.MaxResultRows = 10_000_000
	}
	if l.MaxResultBytes <= 0 {
		l.MaxResultBytes = 2_000_000_000
	}
	if l.MaxMemoryUsage <= 0 {
		l.MaxMemoryUsage = 2_000_000_000
	}
}

// Validate reports the first problem with u.
func (u Upstreams) Validate() error {
	for name, s := range map[string]string{"ClickHouse URL": u.ClickHouseURL, "Prometheus URL": u.PrometheusURL} {
		if s == "" {
			continue
		}
		p, err := url.Parse(s)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" || (p.Path != "" && p.Path != "/") || p.RawQuery != "" {
			return fmt.Errorf("%s %q: want the server's base URL, such as http://127.0.0.1:8123", name, s)
		}
	}
	if u.ClickHouseURL != "" && u.ClickHouseUser == "" {
		return errors.New("ClickHouse user is not set: want the read-only user of deploy/clickhouse/users.d/tether.xml (--clickhouse-user)")
	}
	return nil
}

// ErrGrantRevoked is why a call in flight was cut off by a revocation.
var ErrGrantRevoked = errors.New("grant revoked")

// ErrGrantExpired is why a call in flight was cut off at its grant's expiry.
var ErrGrantExpired = errors.New("grant expired")

// dataPlane is the agent's guarded path to its upstreams.
type dataPlane struct {
	up     Upstreams
	hc     *http.Client
	seq    atomic.Uint64
	mu     sync.Mutex
	active map[string]map[uint64]context.CancelCauseFunc // grant ID → running calls
	sigs   *grant.SigCache                               // grants whose signature verified
	revoke *revocations                                  // revoked grants, kept in the state dir
	schema schemaCache                                   // the SQL guard for this server
}

func newDataPlane(up Upstreams, revoked *revocations) *dataPlane {
	up.Limits.setDefaults()
	return &dataPlane{
		up: up,
		hc: &http.Client{Transport: &http.Transport{
			MaxIdleConnsPerHost:   8,
			IdleConnTimeout:       90 * time.Second,
			ResponseHeaderTimeout: up.Limits.MaxExecutionTime + 10*time.Second,
		}},
		active: map[string]map[uint64]context.CancelCauseFunc{},
		sigs:   grant.NewSigCache(1024),
		revoke: revoked,
	}
}

// isRevoked reports whether the broker revoked the grant.
func (d *dataPlane) isRevoked(id string) bool { return d.revoke.has(id) }

// Revoke marks a grant revoked, cancels its calls in flight and returns
// how many, once the revocation is on disk. Revoked grants past their
// expiry are forgotten: they fail verification anyway. An error means the
// revocation holds only until the agent restarts.
func (d *dataPlane) Revoke(id string, until, now time.Time) (int, error) {
	err := d.revoke.add(id, until, now)
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, cancel := range d.active[id] {
		cancel(ErrGrantRevoked)
		n++
	}
	return n, err
}

// track registers a call under its grant so revocation can cancel it.
func (d *dataPlane) track(ctx context.Context, grantID string) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	n := d.seq.Add(1)
	d.mu.Lock()
	if d.active[grantID] == nil {
		d.active[grantID] = map[uint64]context.CancelCauseFunc{}
	}
	d.active[grantID][n] = cancel
	d.mu.Unlock()
	return ctx, func() {
		cancel(nil)
		d.mu.Lock()
		delete(d.active[grantID], n)
		if len(d.active[grantID]) == 0 {
			delete(d.active, grantID)
		}
		d.mu.Unlock()
	}
}

// callContext is the context of one call under grant g: cancelled by a
// revocation of g, or at g's expiry.
func (d *dataPlane) callContext(ctx context.Context, g grant.Grant) (context.Context, func()) {
	ctx, untrack := d.track(ctx, g.ID)
	if g.Expiry.IsZero() {
		return ctx, untrack
	}
	ctx, cancel := context.WithDeadlineCause(ctx, g.Expiry, ErrGrantExpired)
	return ctx, func() { cancel(); untrack() }
}

// verifyGrant checks the call's grant against the pinned broker key, this
// agent and deployment, the scope, time and revocation; a refusal is
// audited.
func (a *Agent) verifyGrant(r *http.Request, scope string) (grant.Grant, error) {
	pub, err := agentapi.ParsePublicKey(a.state.BrokerKey)
	if err != nil {
		return grant.Grant{}, err
	}
	v := grant.Verifier{
		Key: pub, Deployment: a.state.DeploymentID, Agent: a.state.AgentID,
		Now: a.now, Revoked: a.data.isRevoked, Cache: a.data.sigs,
	}
	g, err := v.Verify(r.Header.Get(agentapi.HeaderGrant), scope)
	if err != nil {
		a.record(r.Context(), audit.Event{
			Type: audit.AuthFailed, Outcome: audit.Failure,
			Actor:   audit.Actor{Subject: g.Subject},
			GrantID: g.ID, RequestID: g.RequestID,
			Reason:  "grant refused: " + err.Error(),
			Details: map[string]any{"path": r.URL.Path, "scope": scope},
		})
		return g, err
	}
	// A broker whose audit log was rewritten gets no access at all.
	if err := a.checkWitness(); err != nil {
		a.record(r.Context(), audit.Event{
			Type: audit.AuthFailed, Outcome: audit.Failure,
			Actor: grantActor(g), GrantID: g.ID, RequestID: g.RequestID,
			Reason:  err.Error(),
			Details: map[string]any{"path": r.URL.Path, "scope": scope},
		})
		return g, err
	}
	return g, nil
}

// record spools an audit event; a failure to spool is logged (the spool
// is full or the disk failed) and fails the call closed.
func (a *Agent) record(ctx context.Context, e audit.Event) error {
	if err := a.RecordEvent(ctx, e); err != nil {
		a.log.Error("could not spool an audit event", "type", e.Type, "err", err)
		return err
	}
	return nil
}

func grantActor(g grant.Grant) audit.Actor {
	return audit.Actor{Subject: g.Subject, Role: "engineer"}
}

func apiErr(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, agentapi.Error{Error: agentapi.ErrorBody{Code: code, Message: msg}})
}

// handleRevoke is the broker's instant revocation: the grant is refused
// from now on and its calls in flight are cut off.
func (a *Agent) handleRevoke(w http.ResponseWriter, r *http.Request) {
	var req agentapi.RevokeRequest
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || req.GrantID == "" {
		apiErr(w, http.StatusBadRequest, "bad_json", "request body: want {\"grant_id\": \"…\"}")
		return
	}
	if !grantIDRE.MatchString(req.GrantID) {
		apiErr(w, http.StatusBadRequest, "bad_grant_id", "grant_id: want a grant ID (letters, digits and '-')")
		return
	}
	n, serr := a.data.Revoke(req.GrantID, req.Until, a.now())
	// Cutting the HTTP call off is not enough: ClickHouse may keep
	// running a query whose client went away. Kill the grant's queries by
	// their ID prefix, which the agent sets on every query.
	killed, kerr := a.killQueries(r.Context(), req.GrantID)
	if kerr != nil {
		a.log.Warn("could not kill the revoked grant's queries", "grant", req.GrantID, "err", kerr)
	}
	if serr != nil {
		// The grant is refused from now on, but a restart would forget
		// it: say so, and the broker pushes the revocation again.
		a.log.Error("could not save a revocation", "grant", req.GrantID, "err", serr)
		apiErr(w, http.StatusServiceUnavailable, "revocation_not_saved", "the agent refuses the grant now but could not save the revocation to its state dir; the broker will retry")
		return
	}
	writeJSON(w, http.StatusOK, agentapi.RevokeResponse{CutOff: n, Killed: killed})
}

var grantIDRE = regexp.MustCompile(`^[A-Za-z0-9-]{1,64}$`)

// killQueries asks ClickHouse to kill every query of a grant (query IDs
// tether-<grant>-<n>) and returns how many it found.
func (a *Agent) killQueries(ctx context.Context, grantID string) (int, error) {
	if a.data.up.ClickHouseURL == "" {
		return 0, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	// grantID matched grantIDRE: nothing in it needs quoting.
	return a.kill(ctx, "query_id LIKE 'tether-"+grantID+"-%'")
}

// kill runs KILL QUERY WHERE cond (built only from checked IDs) and
// returns how many queries it found.
func (a *Agent) kill(ctx context.Context, cond string) (int, error) {
	sql := "KILL QUERY WHERE " + cond + " ASYNC FORMAT TabSeparated"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(a.data.up.ClickHouseURL, "/")+"/", strings.NewReader(sql))
	if err != nil {
		return 0, err
	}
	req.SetBasicAuth(a.data.up.ClickHouseUser, a.data.up.ClickHousePassword)
	res, err := a.data.hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	if res.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("clickhouse answered %s: %s", res.Status, strings.TrimSpace(string(body)))
	}
	return strings.Count(string(body), "\n"), nil
}

// handleClickHouse runs one guarded query: grant, guard, audit, forced
// limits, then the result streamed back without buffering.
func (a *Agent) handleClickHouse(w http.ResponseWriter, r *http.Request) {
	if a.data.up.ClickHouseURL == "" {
		apiErr(w, http.StatusNotImplemented, "no_clickhouse", "this agent has no ClickHouse configured (--clickhouse-url)")
		return
	}
	g, err := a.verifyGrant(r, grant.ScopeClickHouse)
	if err == nil && !grantIDRE.MatchString(g.ID) {
		// Query IDs carry the grant ID into ClickHouse's SQL (KILL QUERY).
		err = fmt.Errorf("grant ID %q is not letters, digits and '-'", g.ID)
	}
	if err != nil {
		apiErr(w, http.StatusForbidden, "grant_refused", err.Error())
		return
	}
	release, ok := a.admitCall(w, r, g, audit.QueryDenied)
	if !ok {
		return
	}
	defer release()
	var q agentapi.ClickHouseQuery
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&q); err != nil {
		apiErr(w, http.StatusBadRequest, "bad_json", "request body: want {\"sql\": \"…\", \"format\": \"…\"}: "+err.Error())
		return
	}
	base := audit.Event{Actor: grantActor(g), GrantID: g.ID, RequestID: g.RequestID, Source: audit.Source{IP: r.RemoteAddr}}
	guard, err := a.sqlGuard(r.Context())
	if err != nil {
		e := base
		e.Type, e.Outcome, e.Reason = audit.QueryDenied, audit.Failure, err.Error()
		e.Details = map[string]any{"sql": q.SQL}
		a.record(r.Context(), e)
		apiErr(w, http.StatusBadGateway, "clickhouse_unreachable", err.Error())
		return
	}
	v, err := guard.Check(q.SQL)
	if err == nil && !v.Allow {
		err = errors.New(v.Reason)
	}
	format := q.Format
	if err == nil && v.Format == "" && format != "" {
		// A format asked beside the SQL passes the same allowlist.
		if fv, ferr := sqlguard.Check("SELECT 1 FORMAT " + format); ferr != nil || !fv.Allow || fv.Format != format {
			err = fmt.Errorf("format %q is not allowed", format)
		}
	}
	if err != nil {
		e := base
		e.Type, e.Outcome, e.Reason = audit.QueryDenied, audit.Failure, err.Error()
		e.Details = map[string]any{"sql": q.SQL}
		a.record(r.Context(), e)
		apiErr(w, http.StatusForbidden, "query_denied", err.Error())
		return
	}
	if format == "" {
		format = "TabSeparatedWithNames"
	}
	queryID := fmt.Sprintf("tether-%s-%d", g.ID, a.data.seq.Add(1))
	e := base
	e.Type, e.Outcome = audit.QueryAllowed, audit.Success
	e.Details = map[string]any{"sql": q.SQL, "query_id": queryID, "tables": v.Tables}
	// The event is made durable while ClickHouse starts on the query;
	// nothing of the answer leaves before it is on disk.
	recorded := make(chan error, 1)
	go func() { recorded <- a.record(r.Context(), e) }()

	ctx, done := a.data.callContext(r.Context(), g)
	defer done()
	lim := a.data.up.Limits
	params := url.Values{
		"query_id":             {queryID},
		"default_format":       {format},
		"max_execution_time":   {strconv.Itoa(int(lim.MaxExecutionTime / time.Second))},
		"max_result_rows":      {strconv.FormatInt(lim.MaxResultRows, 10)},
		"max_result_bytes":     {strconv.FormatInt(lim.MaxResultBytes, 10)},
		"result_overflow_mode": {"throw"},
		"max_memory_usage":     {strconv.FormatInt(lim.MaxMemoryUsage, 10)},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(a.data.up.ClickHouseURL, "/")+"/?"+params.Encode(), strings.NewReader(q.SQL))
	if err != nil {
		apiErr(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	req.SetBasicAuth(a.data.up.ClickHouseUser, a.data.up.ClickHousePassword)
	// However the call ends early — the grant expires or is revoked, the
	// broker or the engineer goes away — ClickHouse must stop too: a
	// query whose HTTP client left may otherwise run on.
	defer func() {
		if ctx.Err() != nil {
			kctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 3*time.Second)
			defer cancel()
			if _, err := a.kill(kctx, "query_id = '"+queryID+"'"); err != nil {
				a.log.Warn("could not kill a query cut off early", "query_id", queryID, "err", err)
			}
		}
	}()
	start := time.Now()
	res, err := a.data.hc.Do(req)
	if rerr := <-recorded; rerr != nil {
		if err == nil {
			res.Body.Close()
		}
		done() // cancels the call: the deferred kill stops the query
		apiErr(w, http.StatusServiceUnavailable, "audit_unavailable", "the agent could not record the query, so it did not answer it")
		return
	}
	// finish reports the end of the query: the bytes streamed, the rows
	// of the result when the answer tells them (rc, nil when nothing
	// was streamed), and what ClickHouse's summary header said it read.
	finish := func(rc *resultCounter, bytes int64, summary map[string]int64, ferr error) {
		e := base
		e.Type, e.Outcome = audit.QueryFinished, audit.Success
		e.Details = map[string]any{"query_id": queryID, "bytes": bytes, "duration_ms": time.Since(start).Milliseconds()}
		if rc != nil {
			if n, ok := rc.rows(); ok && ferr == nil {
				e.Details["result_rows"] = n
			}
			if code, ok := rc.exception(); ok && ferr == nil {
				ferr = fmt.Errorf("ClickHouse stopped the answer with an error (code %s) after it began", code)
			}
		}
		for k, v := range summary {
			e.Details[k] = v
		}
		if ferr != nil {
			e.Outcome, e.Reason = audit.Failure, ferr.Error()
		}
		// The answer has streamed out by now (it is how rows and bytes
		// are counted), so the report of it is written beside the end of
		// the response rather than before: query.allowed, durable before
		// anything was answered, already says the query ran.
		a.finishing.do(func() { a.record(context.WithoutCancel(r.Context()), e) })
	}
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("cut off: %w", context.Cause(ctx))
		}
		finish(nil, 0, nil, err)
		a.upstreamFailed(w, ctx, "ClickHouse", "clickhouse_unreachable", queryID, err)
		return
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(res.Body, 16<<10))
		ferr := fmt.Errorf("ClickHouse answered %s: %s", res.Status, strings.TrimSpace(string(msg)))
		finish(nil, 0, nil, ferr)
		apiErr(w, http.StatusBadGateway, "clickhouse_error", ferr.Error())
		return
	}
	w.Header().Set("Content-Type", res.Header.Get("Content-Type"))
	w.Header().Set("Tether-Query-Id", queryID)
	w.Header().Set("Trailer", agentapi.TrailerStopped)
	w.WriteHeader(http.StatusOK)
	if v.Format != "" {
		format = v.Format // ClickHouse answers in the statement's FORMAT
	}
	rc := newResultCounter(format)
	n, cerr := stream(w, res.Body, rc)
	if ctx.Err() != nil {
		cerr = fmt.Errorf("cut off: %w", context.Cause(ctx))
	}
	if cerr != nil {
		a.stoppedEarly(w, ctx, "ClickHouse", queryID, cerr)
	}
	finish(rc, n, clickHouseSummary(res.Header.Get("X-ClickHouse-Summary")), cerr)
}

// stopReason says, in words for the engineer, why a call under a grant
// was stopped by the agent: revoked, expired, or its caller went away.
// ok is false while the call's context is live.
func stopReason(ctx context.Context) (code, msg string, ok bool) {
	switch cause := context.Cause(ctx); {
	case errors.Is(cause, ErrGrantRevoked):
		return "grant_revoked", "stopped: the grant was revoked", true
	case errors.Is(cause, ErrGrantExpired):
		return "grant_expired", "stopped: the grant expired", true
	case ctx.Err() != nil:
		return "cancelled", "stopped: the caller went away", true
	}
	return "", "", false
}

// upstreamFailed answers a call whose upstream gave no answer. The
// engineer is told what happened; the upstream's address, the limits the
// agent forces on it and the transport's error go to the agent's log
// only.
func (a *Agent) upstreamFailed(w http.ResponseWriter, ctx context.Context, upstream, code, callID string, err error) {
	if scode, msg, ok := stopReason(ctx); ok {
		a.log.Info("call stopped before "+upstream+" answered", "call", callID, "reason", msg)
		apiErr(w, http.StatusForbidden, scode, msg)
		return
	}
	a.log.Warn(upstream+" did not answer", "call", callID, "err", err)
	apiErr(w, http.StatusBadGateway, code, upstream+" is unreachable from the agent (the agent's log has the details)")
}

// stoppedEarly ends an answer that stopped mid-stream with a trailer
// saying why; the detail goes to the agent's log.
func (a *Agent) stoppedEarly(w http.ResponseWriter, ctx context.Context, upstream, callID string, err error) {
	_, msg, ok := stopReason(ctx)
	if !ok {
		msg = "stopped: " + upstream + " stopped answering"
	}
	a.log.Info("answer stopped early", "call", callID, "reason", msg, "err", err)
	w.Header().Set(agentapi.TrailerStopped, msg)
}

// stream copies src to w as it arrives, shows each piece to observe (if
// not nil) and counts the bytes. Data is flushed once the source has been
// quiet for flushDelay, not after every read: a small answer then leaves
// in one packet with the end of the response, while a slow stream still
// reaches the engineer within milliseconds of each chunk.
func stream(w http.ResponseWriter, src io.Reader, observe io.Writer) (n int64, err error) {
	rc := http.NewResponseController(w)
	type chunk struct {
		buf []byte
		k   int
		err error
	}
	chunks := make(chan chunk)
	free := make(chan []byte, 2)
	free <- make([]byte, 64<<10)
	free <- make([]byte, 64<<10)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			var buf []byte
			select {
			case buf = <-free:
			case <-stop:
				return
			}
			k, rerr := src.Read(buf)
			select {
			case chunks <- chunk{buf, k, rerr}:
			case <-stop:
				return
			}
			if rerr != nil {
				return
			}
		}
	}()
	var flush <-chan time.Time
	for {
		select {
		case <-flush:
			rc.Flush()
			flush = nil
			continue
		case c := <-chunks:
			if c.k > 0 {
				if observe != nil {
					observe.Write(c.buf[:c.k])
				}
				if _, werr := w.Write(c.buf[:c.k]); werr != nil {
					return n, werr
				}
				n += int64(c.k)
				if flush == nil {
					flush = time.After(flushDelay)
				}
			}
			free <- c.buf
			if errors.Is(c.err, io.EOF) {
				return n, nil
			}
			if c.err != nil {
				return n, c.err
			}
		}
	}
}

// flushDelay is how long streamed data may wait for more before it is
// sent.
const flushDelay = 2 * time.Millisecond

// handlePrometheus forwards one guarded Prometheus API call: grant, guard
// (the call is rebuilt from its parsed parameters, never passed through),
// audit, then the answer streamed back.
func (a *Agent) handlePrometheus(w http.ResponseWriter, r *http.Request) {
	if a.data.up.PrometheusURL == "" {
		apiErr(w, http.StatusNotImplemented, "no_prometheus", "this agent has no Prometheus configured (--prometheus-url)")
		return
	}
	g, err := a.verifyGrant(r, grant.ScopePrometheus)
	if err != nil {
		apiErr(w, http.StatusForbidden, "grant_refused", err.Error())
		return
	}
	release, ok := a.admitCall(w, r, g, audit.PromDenied)
	if !ok {
		return
	}
	defer release()
	body, err := io.ReadAll(io.LimitReader(r.Body, promguard.MaxBody+1))
	if err != nil {
		apiErr(w, http.StatusBadRequest, "bad_body", err.Error())
		return
	}
	base := audit.Event{Actor: grantActor(g), GrantID: g.ID, RequestID: g.RequestID, Source: audit.Source{IP: r.RemoteAddr}}
	// The guard sees the request target exactly as received.
	target := strings.TrimPrefix(r.RequestURI, strings.TrimSuffix(agentapi.PathPrometheus, "/"))
	var (
		req promguard.Request
		v   promguard.Verdict
	)
	u, perr := url.ParseRequestURI(target)
	if perr != nil || !strings.HasPrefix(r.RequestURI, agentapi.PathPrometheus) {
		v = promguard.Verdict{Reason: "request target is not an origin-form Prometheus API path such as /api/v1/query?query=up (an absolute URL such as http://host/api/v1/… is refused)"}
	} else {
		req, v = promguard.Check(r.Method, u, r.Header.Get("Content-Type"), body)
	}
	if !v.Allow {
		e := base
		e.Type, e.Outcome, e.Reason = audit.PromDenied, audit.Failure, v.Reason
		e.Details = map[string]any{"method": r.Method, "target": target}
		a.record(r.Context(), e)
		apiErr(w, http.StatusForbidden, "prom_denied", v.Reason)
		return
	}
	e := base
	e.Type, e.Outcome = audit.PromAllowed, audit.Success
	e.Details = map[string]any{"method": req.Method, "endpoint": v.Endpoint, "params": req.Params()}
	if err := a.record(r.Context(), e); err != nil {
		apiErr(w, http.StatusServiceUnavailable, "audit_unavailable", "the agent could not record the call, so it did not make it")
		return
	}
	ctx, done := a.data.callContext(r.Context(), g)
	defer done()
	up, err := req.NewHTTPRequest(ctx, a.data.up.PrometheusURL)
	if err != nil {
		apiErr(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	callID := fmt.Sprintf("prom-%s-%d", g.ID, a.data.seq.Add(1))
	res, err := a.data.hc.Do(up)
	if err != nil {
		a.upstreamFailed(w, ctx, "Prometheus", "prometheus_unreachable", callID, err)
		return
	}
	defer res.Body.Close()
	if v.Rewrite {
		// The answer echoes configuration that may hold secrets: read it
		// whole (bounded), rewrite it, and pass on the rewritten answer
		// or none, never a byte of it unrewritten.
		raw, err := io.ReadAll(io.LimitReader(res.Body, promguard.MaxAnswer+1))
		if err != nil {
			if ctx.Err() != nil {
				err = context.Cause(ctx)
			}
			a.upstreamFailed(w, ctx, "Prometheus", "prometheus_unreachable", callID, err)
			return
		}
		out, err := promguard.Rewrite(v.Endpoint, raw)
		if err != nil {
			// The reason names the endpoint and what is wrong with the
			// answer, never the answer itself.
			e := base
			e.Type, e.Outcome, e.Reason = audit.PromDenied, audit.Failure, err.Error()
			e.Details = map[string]any{"method": req.Method, "endpoint": v.Endpoint, "call": callID, "stage": "answer", "status": res.StatusCode}
			a.record(context.WithoutCancel(r.Context()), e)
			apiErr(w, http.StatusBadGateway, "prom_answer_withheld", err.Error())
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(res.StatusCode)
		w.Write(out)
		return
	}
	w.Header().Set("Content-Type", res.Header.Get("Content-Type"))
	w.Header().Set("Trailer", agentapi.TrailerStopped)
	w.WriteHeader(res.StatusCode)
	_, serr := stream(w, res.Body, nil)
	if ctx.Err() != nil {
		serr = context.Cause(ctx)
	}
	if serr != nil {
		a.stoppedEarly(w, ctx, "Prometheus", callID, serr)
	}
}
