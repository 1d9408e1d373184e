package agent

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetherhq/tether/internal/brokerapi"

	"github.com/tetherhq/tether/internal/names"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/approval"
	"github.com/tetherhq/tether/internal/grant"
	"github.com/tetherhq/tether/internal/protocol"
	"github.com/tetherhq/tether/internal/source"
	"github.com/tetherhq/tether/internal/source/clickhouse"
	"github.com/tetherhq/tether/internal/source/prometheus"
	"github.com/tetherhq/tether/internal/source/registry"
)

// Upstreams configures what the agent guards: ClickHouse's HTTP interface
// and Prometheus's HTTP API, both inside the customer's VPC, and any other
// registered data source.
type Upstreams struct {
	ClickHouseURL      string // e.g. http://clickhouse:8123; empty disables SQL
	ClickHouseUser     string // the read-only user of deploy/clickhouse/users.d/tether.xml
	ClickHousePassword string
	PrometheusURL      string // e.g. http://prometheus:9090; empty disables PromQL
	// Sources configures data sources other than ClickHouse and
	// Prometheus, by their registered name; an empty URL disables one.
	Sources map[string]source.Upstream
	Limits  QueryLimits
}

// QueryLimits are the settings the agent forces on every query, whatever
// the query asks for.
type QueryLimits = source.Limits

// bySource is the upstream of each registered source: ClickHouse and
// Prometheus from their own fields, the others from Sources. Limits are
// defaulted.
func (u Upstreams) bySource() map[string]source.Upstream {
	m := make(map[string]source.Upstream, len(u.Sources)+2)
	for name, up := range u.Sources {
		m[name] = up
	}
	if u.ClickHouseURL != "" {
		m[clickhouse.Source.Name] = source.Upstream{URL: u.ClickHouseURL, User: u.ClickHouseUser, Password: u.ClickHousePassword}
	}
	if u.PrometheusURL != "" {
		m[prometheus.Source.Name] = source.Upstream{URL: u.PrometheusURL}
	}
	for name, up := range m {
		if up.URL == "" {
			delete(m, name)
			continue
		}
		up.Limits = u.Limits.WithDefaults()
		m[name] = up
	}
	return m
}

// Validate reports the first problem with u.
func (u Upstreams) Validate() error {
	for name := range u.Sources {
		if _, ok := registry.Lookup(name); !ok {
			return fmt.Errorf("upstream %q: no such data source; want one of %s", name, strings.Join(registry.Names(), ", "))
		}
	}
	ups := u.bySource()
	for _, src := range registry.All() {
		up, ok := ups[src.Name]
		if !ok {
			continue
		}
		p, err := url.Parse(up.URL)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" || (p.Path != "" && p.Path != "/") || p.RawQuery != "" {
			return fmt.Errorf("%s URL %q: want the server's base URL, such as http://127.0.0.1:8123", src.Title, up.URL)
		}
	}
	for _, src := range registry.All() {
		if up, ok := ups[src.Name]; ok && src.Validate != nil {
			if err := src.Validate(up); err != nil {
				return err
			}
		}
	}
	return nil
}

// ErrGrantRevoked is why a call in flight was cut off by a revocation.
var ErrGrantRevoked = source.ErrGrantRevoked

// ErrGrantExpired is why a call in flight was cut off at its grant's expiry.
var ErrGrantExpired = source.ErrGrantExpired

// dataPlane is the agent's guarded path to its upstreams.
type dataPlane struct {
	engines map[string]source.Engine // the configured sources' engines, by name
	hc      *http.Client
	seq     atomic.Uint64
	mu      sync.Mutex
	active  map[string]map[uint64]context.CancelCauseFunc // grant ID → running calls
	sigs    *grant.SigCache                               // grants whose signature verified
	revoke  *revocations                                  // revoked grants, kept in the state dir
	// callBound is how long an upstream may take over one call: the
	// query's time limit and a grace to say it ran out.
	callBound time.Duration
}

// upstreamGrace is how long past the query's time limit the agent waits
// for an upstream to answer (ClickHouse to report its own timeout) before
// it gives up on it: the time limit, at most 10 s.
func upstreamGrace(limit time.Duration) time.Duration { return min(limit, 10*time.Second) }

// refuseUpstreamRedirect is the upstream client's CheckRedirect: an
// upstream that answers with a redirect gets no request to where it
// points, and the call fails saying so.
func refuseUpstreamRedirect(req *http.Request, via []*http.Request) error {
	return errors.New("the upstream answered with a redirect, which the agent does not follow")
}

func newDataPlane(up Upstreams, revoked *revocations) *dataPlane {
	limit := up.Limits.WithDefaults().MaxExecutionTime
	bound := limit + upstreamGrace(limit)
	d := &dataPlane{
		engines: map[string]source.Engine{},
		hc: &http.Client{Transport: timeoutTransport{after: bound, rt: &http.Transport{
			MaxIdleConnsPerHost:   8,
			IdleConnTimeout:       90 * time.Second,
			ResponseHeaderTimeout: bound,
		}},
			// The guard checked the call to the upstream, not wherever
			// its answer might point: a redirect is never followed.
			CheckRedirect: refuseUpstreamRedirect,
		},
		callBound: bound,
		active:    map[string]map[uint64]context.CancelCauseFunc{},
		sigs:      grant.NewSigCache(1024),
		revoke:    revoked,
	}
	// Call numbers — and with them ClickHouse query IDs,
	// tether-<grant>-<n> — must not repeat after a restart: ClickHouse
	// refuses a query whose ID is still running (the dead agent's, say).
	// They start at a random point of 2^62.
	var seed [8]byte
	rand.Read(seed[:])
	d.seq.Store(binary.BigEndian.Uint64(seed[:]) >> 2)
	ups := up.bySource()
	for _, src := range registry.All() {
		if u, ok := ups[src.Name]; ok {
			d.engines[src.Name] = src.New(u)
		}
	}
	return d
}

// timeoutTransport names an upstream's failure to answer in time as a
// [source.TimeoutError], so that the engineer reads "did not answer
// within", not a transport error.
type timeoutTransport struct {
	rt    http.RoundTripper
	after time.Duration
}

func (t timeoutTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	res, err := t.rt.RoundTrip(r)
	var ne net.Error
	if err != nil && r.Context().Err() == nil && errors.As(err, &ne) && ne.Timeout() {
		return nil, &source.TimeoutError{After: t.after, Err: err}
	}
	return res, err
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

// callContext is the context of one call under a grant: cancelled by a
// revocation of the grant, or at its expiry (zero: none).
func (d *dataPlane) callContext(ctx context.Context, grantID string, expiry time.Time) (context.Context, func()) {
	ctx, untrack := d.track(ctx, grantID)
	if expiry.IsZero() {
		return ctx, untrack
	}
	ctx, cancel := context.WithDeadlineCause(ctx, expiry, ErrGrantExpired)
	return ctx, func() { cancel(); untrack() }
}

// verifyGrant checks the call's grant against the pinned broker key, this
// agent and deployment, the scope, time and revocation, then, where the
// customer configured an approval authority, the customer's approval
// proofs it carries; a refusal is audited and journalled. The verdict
// says on what the grant is served (who approved it, under which permit,
// or as break-glass).
func (a *Agent) verifyGrant(r *http.Request, scope string) (grant.Grant, approval.Verdict, error) {
	pub, err := protocol.ParsePublicKey(a.state.BrokerKey)
	if err != nil {
		return grant.Grant{}, approval.Verdict{}, err
	}
	v := grant.Verifier{
		Key: pub, Deployment: a.state.DeploymentID, Agent: a.state.AgentID,
		Now: a.now, Revoked: a.data.isRevoked, Cache: a.data.sigs,
	}
	token := r.Header.Get(protocol.HeaderGrant)
	g, err := v.Verify(token, scope)
	if err != nil {
		a.record(r.Context(), audit.Event{
			Type: audit.AuthFailed, Outcome: audit.Failure,
			Actor:   audit.Actor{Subject: g.Subject},
			GrantID: g.ID, RequestID: g.RequestID,
			Reason:  "grant refused: " + err.Error(),
			Details: map[string]any{"path": r.URL.Path, "scope": scope},
		})
		return g, approval.Verdict{}, err
	}
	// A broker whose audit log was rewritten gets no access at all.
	if err := a.checkWitness(); err != nil {
		a.record(r.Context(), audit.Event{
			Type: audit.AuthFailed, Outcome: audit.Failure,
			Actor: grantActor(g), GrantID: g.ID, RequestID: g.RequestID,
			Reason:  err.Error(),
			Details: map[string]any{"path": r.URL.Path, "scope": scope},
		})
		return g, approval.Verdict{}, err
	}
	// The broker's key alone does not open the customer's deployment:
	// the customer's own identity provider must have signed for it.
	verdict, err := a.approve(r.Context(), g, token)
	if err != nil {
		code := refusalCode(err)
		a.log.Warn("refused a grant the customer did not approve", "grant", g.ID, "request", g.RequestID, "engineer", g.Subject, "code", code, "reason", err)
		a.record(r.Context(), audit.Event{
			Type: audit.AuthFailed, Outcome: audit.Failure,
			Actor: grantActor(g), GrantID: g.ID, RequestID: g.RequestID,
			Reason:  "grant refused: " + err.Error(),
			Details: map[string]any{"path": r.URL.Path, "scope": scope, "code": code, "break_glass": g.BreakGlass},
		})
		return g, approval.Verdict{}, err
	}
	if verdict.BreakGlass {
		a.announceBreakGlass(r.Context(), g)
	}
	return g, verdict, nil
}

// approve decides whether the customer's approval authority lets g be
// served (see Config.Approval). Without an authority every grant is
// served, but a break-glass grant when DenyBreakGlass is set.
func (a *Agent) approve(ctx context.Context, g grant.Grant, token string) (approval.Verdict, error) {
	if a.cfg.Approval != nil {
		return a.cfg.Approval.Check(ctx, g, token)
	}
	if g.BreakGlass {
		if a.cfg.DenyBreakGlass {
			return approval.Verdict{}, fmt.Errorf("a break-glass grant, and this agent's customer refuses them (--break-glass deny): %w", approval.ErrBreakGlassRefused)
		}
		return approval.Verdict{BreakGlass: true}, nil
	}
	return approval.Verdict{}, nil
}

// Codes of the agent's refusals of a grant, stable for clients to branch on.
const (
	CodeGrantRefused      = "grant_refused"
	CodeNotApproved       = "not_approved_by_customer"
	CodeBreakGlassRefused = "break_glass_refused"
)

// refusalCode is the error code a refusal of a grant is answered with.
func refusalCode(err error) string {
	switch {
	case errors.Is(err, approval.ErrBreakGlassRefused):
		return CodeBreakGlassRefused
	case errors.Is(err, approval.ErrNotApproved):
		return CodeNotApproved
	}
	return CodeGrantRefused
}

// announceBreakGlass makes the first call of a break-glass grant the
// customer allows loud: a WARN log line and a journal entry of its own
// (breakglass.used, kept on the customer's host only: the broker records
// its own when it issues the grant). Each call of the grant is journalled
// with break_glass set as well.
func (a *Agent) announceBreakGlass(ctx context.Context, g grant.Grant) {
	a.mu.Lock()
	if a.breakGlassSeen == nil || len(a.breakGlassSeen) >= 1024 {
		a.breakGlassSeen = make(map[string]bool)
	}
	seen := a.breakGlassSeen[g.ID]
	a.breakGlassSeen[g.ID] = true
	a.mu.Unlock()
	if seen {
		return
	}
	a.log.Warn("serving a BREAK-GLASS grant without customer approval, as this agent's customer allows (--break-glass allow)",
		"grant", g.ID, "request", g.RequestID, "engineer", g.Subject, "expires", g.Expiry)
	a.journal.append(a.now(), audit.Event{
		Type: audit.BreakglassUsed, Outcome: audit.Success,
		Actor: grantActor(g), GrantID: g.ID, RequestID: g.RequestID,
		Reason:  "break-glass grant served without customer approval (--break-glass allow)",
		Details: map[string]any{"break_glass": true},
	})
}

// record spools an audit event; a failure to spool is logged (the spool
// is full or the disk failed) and fails the call closed.
func (a *Agent) record(ctx context.Context, e audit.Event) error {
	return a.recordSynced(e, true)
}

// recordSynced is record, waiting for the disk only with sync.
func (a *Agent) recordSynced(e audit.Event, sync bool) error {
	if err := a.recordEvent(e, sync); err != nil {
		a.log.Error("could not spool an audit event", "type", e.Type, "err", err)
		return err
	}
	return nil
}

func grantActor(g grant.Grant) audit.Actor {
	return audit.Actor{Subject: g.Subject, Role: names.RoleEngineer}
}

func apiErr(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, brokerapi.ErrorEnvelope{Error: brokerapi.ErrorBody{Code: code, Message: msg}})
}

// handleRevoke is the broker's instant revocation: the grant is refused
// from now on and its calls in flight are cut off.
func (a *Agent) handleRevoke(w http.ResponseWriter, r *http.Request) {
	var req protocol.RevokeRequest
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
	// running a query whose client went away. Each source stops what its
	// upstream still runs (ClickHouse kills the grant's queries by their
	// ID prefix, which it sets on every query).
	killed, kerr := a.stopUpstreams(r.Context(), req.GrantID)
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
	writeJSON(w, http.StatusOK, protocol.RevokeResponse{CutOff: n, Killed: killed})
}

var grantIDRE = regexp.MustCompile(`^[A-Za-z0-9-]{1,64}$`)

// stopUpstreams asks every configured source to stop what its upstream
// still runs for a grant (ClickHouse: KILL QUERY by the grant's query-ID
// prefix) and returns how many it stopped.
func (a *Agent) stopUpstreams(ctx context.Context, grantID string) (int, error) {
	env := sourceEnv{a: a}
	total := 0
	var errs []error
	for _, src := range registry.All() {
		eng := a.data.engines[src.Name]
		if eng == nil {
			continue
		}
		n, err := eng.Revoke(ctx, env, grantID)
		total += n
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", src.Title, err))
		}
	}
	return total, errors.Join(errs...)
}

// stopOrphans asks every configured source to stop what a previous run
// of the agent left running upstream (ClickHouse: KILL QUERY of this
// user's tether-… queries). Run once at start, before the agent serves;
// a failure is logged, not fatal: the orphans end at their time limit.
func (a *Agent) stopOrphans(ctx context.Context) {
	env := sourceEnv{a: a}
	for _, src := range registry.All() {
		st, ok := a.data.engines[src.Name].(source.OrphanStopper)
		if !ok {
			continue
		}
		n, err := st.StopOrphans(ctx, env)
		switch {
		case err != nil:
			a.log.Warn("could not stop what the agent's previous run left running; it ends at its time limit", "source", src.Title, "err", err)
		case n > 0:
			a.log.Info("stopped what the agent's previous run left running", "source", src.Title, "stopped", n)
		}
	}
}

// serveSource serves one call of a data source: the grant verified for
// the source's scope (and the engine's own check of it), the call
// admitted under the grant's call limit, then the engine's guard, limits,
// upstream call and audit.
func (a *Agent) serveSource(src source.Source) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		m := a.metrics().meter(w, r, src.Name)
		defer m.done()
		w = m
		eng := a.data.engines[src.Name]
		if eng == nil {
			apiErr(w, http.StatusNotImplemented, "no_"+src.Name, "this agent has no "+src.Title+" configured (--"+src.Name+"-url)")
			return
		}
		start := time.Now()
		ctx, timings := source.WithTimings(r.Context())
		r = r.WithContext(ctx)
		g, verdict, err := a.verifyGrant(r, src.Scope)
		if gc, ok := eng.(source.GrantChecker); ok && err == nil {
			err = gc.CheckGrant(g.ID)
		}
		source.AddTiming(ctx, protocol.TimingGrant, time.Since(start))
		if err != nil {
			m.refuse(grantRefusalReason(err))
			apiErr(w, http.StatusForbidden, refusalCode(err), err.Error())
			return
		}
		release, ok := a.admitCall(w, r, g, src.Denied)
		if !ok {
			m.refuse(reasonTooManyCalls)
			return
		}
		defer release()
		sw := a.newStreamWriter(w, g.Expiry)
		sw.timings, sw.start = timings, start
		var out http.ResponseWriter = sw
		zw := &zstdWriter{streamWriter: sw}
		if protocol.AcceptsZstd(r.Header) {
			out = zw
		}
		eng.Serve(sourceEnv{a: a, approval: approvalDetails(verdict), src: src.Name}, source.Call{
			GrantID: g.ID, RequestID: g.RequestID, Expiry: g.Expiry,
			Event: audit.Event{Actor: grantActor(g), GrantID: g.ID, RequestID: g.RequestID, Source: audit.Source{IP: r.RemoteAddr}},
		}, out, r)
		zw.close()
		sw.finish()
	}
}

// streamWriter is the agent's answer to one data-plane call. It ends a
// successful answer with the [protocol.TrailerResult] trailer (complete,
// or incomplete with the engine's reason), and bounds the answer by write
// deadlines that move with the data: each write may take the agent's
// write timeout (the broker stopped reading), and the answer as a whole
// lasts no longer than the grant (plus that timeout, to say it expired)
// and the query's own time limit — never the server's fixed write
// timeout, which cut every answer longer than a minute.
type streamWriter struct {
	http.ResponseWriter
	rc     *http.ResponseController
	now    func() time.Time
	idle   time.Duration // one write's bound
	end    time.Time     // the answer's bound
	status int
	// timings are the call's hops so far, sent with the answer's headers
	// as Server-Timing beside the agent's own time (start to headers).
	timings *source.Timings
	start   time.Time
}

func (a *Agent) newStreamWriter(w http.ResponseWriter, expiry time.Time) *streamWriter {
	idle := a.writeTimeout()
	now := a.now()
	end := now.Add(a.data.callBound + idle)
	if !expiry.IsZero() && expiry.Add(idle).Before(end) {
		end = expiry.Add(idle)
	}
	sw := &streamWriter{ResponseWriter: w, rc: http.NewResponseController(w), now: a.now, idle: idle, end: end}
	// Until the first write (the upstream may think for as long as its
	// limit allows) the answer's bound holds, not the server's.
	sw.rc.SetWriteDeadline(end)
	return sw
}

// extend gives the next write the agent's write timeout, within the
// answer's bound.
func (sw *streamWriter) extend() {
	d := sw.now().Add(sw.idle)
	if d.After(sw.end) {
		d = sw.end
	}
	sw.rc.SetWriteDeadline(d)
}

func (sw *streamWriter) WriteHeader(status int) {
	if sw.status == 0 {
		sw.status = status
		if status >= 200 && status < 300 {
			sw.Header().Add("Trailer", protocol.TrailerResult)
		}
		if sw.timings != nil {
			st := sw.timings.Snapshot()
			st.Add(protocol.TimingAgent, time.Since(sw.start))
			sw.Header().Set(protocol.HeaderServerTiming, st.String())
		}
	}
	sw.ResponseWriter.WriteHeader(status)
}

func (sw *streamWriter) Write(p []byte) (int, error) {
	if sw.status == 0 {
		sw.WriteHeader(http.StatusOK)
	}
	sw.extend()
	return sw.ResponseWriter.Write(p)
}

// FlushError is what [http.ResponseController.Flush] calls.
func (sw *streamWriter) FlushError() error {
	sw.extend()
	return http.NewResponseController(sw.ResponseWriter).Flush()
}

func (sw *streamWriter) Unwrap() http.ResponseWriter { return sw.ResponseWriter }

// finish sets the result trailer of a successful answer once the engine
// has returned: complete unless the engine said it stopped early (a
// revocation, the grant's expiry, the upstream breaking off or ending
// with its own error). The end of the response, trailer included, gets
// one more write timeout.
func (sw *streamWriter) finish() {
	if sw.status < 200 || sw.status >= 300 {
		return
	}
	if msg := sw.Header().Get(protocol.TrailerStopped); msg != "" {
		sw.Header().Set(protocol.TrailerResult, protocol.ResultIncomplete(msg))
	} else {
		sw.Header().Set(protocol.TrailerResult, protocol.ResultComplete)
	}
	sw.extend()
}

// sourceEnv is what the agent gives a data source's engine. approval,
// when set, is added to the details of every event the call records: on
// what the agent served the grant. src, when set, is the source of the
// call the engine serves: its upstream's answers are timed, and its rows
// counted, as that source's (metrics.go).
type sourceEnv struct {
	a        *Agent
	approval map[string]any
	src      string
}

var _ source.Env = sourceEnv{}

// approvalDetails are the audit details saying on what a grant is served:
// approvers (their names), the permit's ID, break_glass; nil when the
// agent enforces no approval and the grant is no break-glass grant.
func approvalDetails(v approval.Verdict) map[string]any {
	d := map[string]any{}
	if len(v.Approvers) > 0 {
		names := make([]string, len(v.Approvers))
		for i, ap := range v.Approvers {
			names[i] = ap.Name()
		}
		d["approvers"] = names
	}
	if v.Permit != "" {
		d["permit"] = v.Permit
	}
	if v.BreakGlass {
		d["break_glass"] = true
	}
	if len(d) == 0 {
		return nil
	}
	return d
}

func (e sourceEnv) Record(ctx context.Context, ev audit.Event) error {
	if len(e.approval) > 0 {
		d := make(map[string]any, len(ev.Details)+len(e.approval))
		maps.Copy(d, ev.Details)
		maps.Copy(d, e.approval)
		ev.Details = d
	}
	if e.src != "" && ev.Type == audit.QueryFinished {
		e.a.metrics().observeRows(e.src, ev.Details)
	}
	// The report of a query's end is written after its answer left, and
	// gates nothing: it is synced with the next event or shortly after,
	// not waited for.
	sync := ev.Type != audit.QueryFinished
	start := time.Now()
	err := e.a.recordSynced(ev, sync)
	if ev.Type == audit.QueryAllowed || ev.Type == audit.PromAllowed {
		source.AddTiming(ctx, protocol.TimingAudit, time.Since(start))
	}
	return err
}
func (e sourceEnv) AfterCall(fn func()) { e.a.finishing.do(fn) }
func (e sourceEnv) Client() *http.Client {
	if e.src != "" {
		return e.a.metrics().client(e.a.data.hc, e.src)
	}
	return e.a.data.hc
}
func (e sourceEnv) NextID() uint64       { return e.a.data.seq.Add(1) }
func (e sourceEnv) Now() time.Time       { return e.a.now() }
func (e sourceEnv) Logger() *slog.Logger { return e.a.log }

func (e sourceEnv) CallContext(ctx context.Context, c source.Call) (context.Context, func()) {
	return e.a.data.callContext(ctx, c.GrantID, c.Expiry)
}
