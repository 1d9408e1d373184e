package broker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/protocol"
	"github.com/tetherhq/tether/internal/source"
	"github.com/tetherhq/tether/internal/source/registry"
	"github.com/tetherhq/tether/internal/store"
)

// dataEndpoints are the authorization table's rows of the data plane:
// one per registered data source, for engineers, on a deployment named
// by TENANT/NAME.
func dataEndpoints() []Endpoint {
	var eps []Endpoint
	for _, src := range registry.All() {
		eps = append(eps, Endpoint{src.BrokerPattern(), dataRoles, ScopeTenant, func(b *Broker) func(http.ResponseWriter, *http.Request) error {
			return func(w http.ResponseWriter, r *http.Request) error { return b.handleDataPlane(src, w, r) }
		}})
	}
	return eps
}

// handleDataPlane is the data-plane passthrough of one data source: a
// call carrying a grant for the source's scope goes to the deployment's
// agent over the tailnet, where the grant is verified against the
// broker's key and the call guarded; the answer streams back.
func (b *Broker) handleDataPlane(src source.Source, w http.ResponseWriter, r *http.Request) error {
	var timing protocol.ServerTiming
	timing.Add(protocol.TimingAuth, authTime(r.Context()))
	lookupStart := time.Now()
	d, g, err := b.dataTarget(r, src.Scope)
	if err != nil {
		return err
	}
	timing.Add(protocol.TimingLookup, time.Since(lookupStart))
	tok := g.Token
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, protocol.MaxBody))
	if err != nil {
		return errorf(http.StatusRequestEntityTooLarge, "body_too_large", "request body is larger than %d bytes", protocol.MaxBody)
	}
	// A source that takes the rest of the path has the agent's guard
	// decide on the target exactly as the caller wrote it: it is passed
	// through unchanged, escaped, with its query.
	target, err := src.AgentTarget(r)
	if err != nil {
		return errorf(http.StatusBadRequest, "bad_path", "want %s", src.Usage())
	}
	// The agent compresses what it sends over the tailnet; the broker
	// relays it decompressed.
	h := http.Header{protocol.HeaderGrant: {tok}, "Accept-Encoding": {protocol.EncodingZstd}}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		h.Set("Content-Type", ct)
	}
	if d.Agent == nil {
		return errorf(http.StatusConflict, "agent_unpaired", "deployment %s/%s has no paired agent", d.Tenant, d.Name)
	}
	ctx, untrack := b.trackAgentCall(r.Context(), d.Agent.ID)
	defer untrack()
	var progress atomic.Int64 // bytes relayed
	ctx, unwatch := b.watchAgent(ctx, d, &progress)
	defer unwatch()
	callStart := time.Now()
	res, err := b.callAgent(ctx, *d.Agent, r.Method, target, body, h)
	roundTrip := time.Since(callStart)
	var gone *agentGoneError
	switch {
	case err != nil && errors.Is(context.Cause(ctx), errAgentRevoked):
		return errorf(http.StatusConflict, "agent_revoked", "stopped: the agent of %s/%s was revoked", d.Tenant, d.Name)
	case err != nil && errors.As(context.Cause(ctx), &gone):
		return errorf(http.StatusBadGateway, "agent_unreachable", "the agent of %s/%s did not answer: %s", d.Tenant, d.Name, gone.why)
	case errors.Is(err, errAgentOffTailnet):
		return errorf(http.StatusServiceUnavailable, "agent_offline", "the agent of %s/%s is not on the tailnet: nothing was sent; retry once it is online ('broker deployment show %s/%s')", d.Tenant, d.Name, d.Tenant, d.Name)
	case errors.Is(err, errAgentRedirect):
		return errorf(http.StatusBadGateway, "agent_refused_answer", "the agent of %s/%s answered with a redirect; the broker follows none, and recorded it", d.Tenant, d.Name)
	case err != nil:
		// The transport's error names the agent's tailnet address: it
		// goes to the broker's log; the engineer is told what happened.
		b.log.Warn("data-plane call to the agent failed", "deployment", d.Tenant+"/"+d.Name, "agent_id", d.Agent.ID, "err", err)
		return errorf(http.StatusBadGateway, "agent_unreachable", "the agent of %s/%s did not answer: %s", d.Tenant, d.Name, transportReason(err))
	}
	defer res.Body.Close()
	// A client that accepts zstd gets the agent's compressed answer as
	// it came (checked on the side): fewer bytes on the engineer's own
	// link, and no decompressing on the broker's.
	answer, err := agentAnswer(res, b.cfg.MaxAgentAnswer, func() {
		b.agentCallRefused(context.WithoutCancel(ctx), *d.Agent, target, fmt.Sprintf("the agent's answer decompressed past %d bytes", b.cfg.MaxAgentAnswer))
	}, protocol.AcceptsZstd(r.Header))
	if err != nil {
		b.agentCallRefused(ctx, *d.Agent, target, err.Error())
		return errorf(http.StatusBadGateway, "agent_refused_answer", "the agent of %s/%s: %v; the broker recorded it", d.Tenant, d.Name, err)
	}
	defer answer.stop()
	w.Header().Set("Vary", "Accept-Encoding")
	if answer.compressed {
		w.Header().Set("Content-Encoding", protocol.EncodingZstd)
	}
	// Results stream for as long as the grant allows, past the server's
	// write timeout: each write gets streamWriteTimeout (the engineer
	// stopped reading), and the answer ends with the grant (the agent
	// cuts it off then, and says so in its trailer).
	rc := http.NewResponseController(w)
	end := g.Expiry.Add(streamWriteTimeout)
	deadline := func() {
		d := b.now().Add(streamWriteTimeout)
		if d.After(end) {
			d = end
		}
		rc.SetWriteDeadline(d)
	}
	deadline()
	for _, k := range []string{"Content-Type", "Tether-Query-Id"} {
		if v := res.Header.Get(k); v != "" {
			w.Header().Set(k, v)
		}
	}
	// Per hop: the broker's own, the tailnet's (the round trip less the
	// time the agent says it spent), then the agent's.
	agentTiming := protocol.TimingFrom(res.Header)
	inAgent, _ := agentTiming.Get(protocol.TimingAgent)
	timing.Add(protocol.TimingTailnet, roundTrip-inAgent)
	timing = append(timing, agentTiming...)
	w.Header().Set(protocol.HeaderServerTiming, timing.String())
	streamStart := time.Now()
	ok2xx := res.StatusCode >= 200 && res.StatusCode < 300
	if ok2xx {
		// A successful answer ends with the agent's word on whether it
		// is whole, passed on, so that the engineer never reads a cut
		// result as complete.
		w.Header().Set("Trailer", protocol.TrailerStopped+", "+protocol.TrailerResult+", "+protocol.HeaderServerTiming)
	}
	// The status goes out with the first byte: an answer cut off before
	// any byte of it was relayed is answered with an error instead.
	started := false
	start := func() {
		if !started {
			started = true
			w.WriteHeader(res.StatusCode)
		}
	}
	refuse := func(why string) error {
		for _, k := range []string{"Content-Encoding", "Trailer", "Content-Type", "Tether-Query-Id"} {
			w.Header().Del(k)
		}
		return errorf(http.StatusBadGateway, "agent_refused_answer", "the agent of %s/%s: %s; the broker recorded it", d.Tenant, d.Name, why)
	}
	buf := make([]byte, 64<<10)
	var relayed int64
	for {
		n, rerr := answer.Read(buf)
		if n > 0 {
			start()
			deadline()
			if _, werr := w.Write(buf[:n]); werr != nil {
				return nil
			}
			relayed += int64(n)
			progress.Store(relayed)
			deadline()
			rc.Flush()
		}
		if rerr == io.EOF {
			if err := answer.done(); err != nil {
				// The compressed answer relayed as it came failed its
				// check at its end: the client must not read it as whole.
				b.agentCallRefused(context.WithoutCancel(ctx), *d.Agent, target, err.Error())
				b.recordCutAnswer(r, src, d, g, relayed, err.Error())
				if !started {
					return refuse(err.Error())
				}
				panic(http.ErrAbortHandler)
			}
			start()
			if !ok2xx {
				return nil
			}
			var streamed protocol.ServerTiming
			streamed.Add(protocol.TimingStream, time.Since(streamStart))
			w.Header().Set(protocol.HeaderServerTiming, streamed.String())
			complete, reason := protocol.ResultReason(res.Trailer.Get(protocol.TrailerResult))
			stopped := stoppedText(res.Trailer.Get(protocol.TrailerStopped))
			switch {
			case complete && stopped == "":
				w.Header().Set(protocol.TrailerResult, protocol.ResultComplete)
				return nil
			case stopped != "":
				reason = stopped
			default:
				reason = stoppedText(reason)
				// The agent records the calls it stops; one it did not
				// say it finished is recorded here.
				b.recordCutAnswer(r, src, d, g, relayed, "the agent's answer ended without saying it was complete: "+reason)
			}
			w.Header().Set(protocol.TrailerStopped, reason)
			w.Header().Set(protocol.TrailerResult, protocol.ResultIncomplete(reason))
			return nil
		}
		if rerr != nil {
			// Cut off (the agent's answer passed the broker's bound, the
			// agent died, or the tailnet connection broke): record it and
			// abort the response, so the client sees an incomplete
			// result, never a complete one.
			why := transportReason(rerr)
			if errors.As(context.Cause(ctx), &gone) {
				why = gone.why
			}
			b.log.Warn("agent answer cut off", "deployment", d.Tenant+"/"+d.Name, "err", rerr, "why", why)
			b.recordCutAnswer(r, src, d, g, relayed, "the agent's answer broke off before its end: "+why)
			if !started {
				return refuse(why)
			}
			panic(http.ErrAbortHandler)
		}
	}
}

// agentGoneError is why the broker gave up on an agent's answer: the
// agent went offline or restarted while the broker waited for it.
type agentGoneError struct{ why string }

func (e *agentGoneError) Error() string { return e.why }

// watchAgent returns a context for a call to d's agent that ends when the
// agent is gone: a killed agent's tailnet connection is never closed (its
// network stack died with it), so the broker would wait for its answer
// for ever. Each heartbeat interval in which no byte of the answer came
// (progress did not move), the agent's last heartbeat is read: none for
// three intervals (the agent is offline), or one from a process that
// started after the call did (the agent restarted, and the call died with
// its predecessor), ends the call. Run stop when the call ends.
func (b *Broker) watchAgent(ctx context.Context, d store.DeploymentStatus, progress *atomic.Int64) (_ context.Context, stop func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	every := b.cfg.HeartbeatInterval
	if every <= 0 || d.Agent == nil {
		return ctx, func() { cancel(nil) }
	}
	started := b.now()
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		last := int64(-1)
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if n := progress.Load(); n != last {
				last = n
				continue
			}
			cur, err := b.store.GetDeployment(ctx, d.ID)
			if err != nil {
				continue // the store's trouble is not the agent's
			}
			now := b.now()
			switch a := cur.Agent; {
			case a == nil || a.ID != d.Agent.ID:
				cancel(&agentGoneError{why: "the agent was unpaired while it answered"})
				return
			case now.Sub(a.Last.At) > 3*every:
				cancel(&agentGoneError{why: fmt.Sprintf("the agent went offline while it answered (no heartbeat for %v)", now.Sub(a.Last.At).Round(time.Second))})
				return
			case a.Last.At.After(started) && a.Last.Uptime < a.Last.At.Sub(started):
				cancel(&agentGoneError{why: "the agent restarted while it answered"})
				return
			}
		}
	}()
	return ctx, func() { close(done); cancel(nil) }
}

// streamWriteTimeout bounds one write of a data-plane answer to the
// engineer: a client that stops reading for this long is cut off.
const streamWriteTimeout = 60 * time.Second

// recordCutAnswer audits an answer the broker relayed incomplete that
// the agent could not record as such (it died, or the connection broke):
// query.finished with outcome failure, recorded by the broker. Best
// effort: the engineer is told either way.
func (b *Broker) recordCutAnswer(r *http.Request, src source.Source, d store.DeploymentStatus, g store.GrantRecord, relayed int64, reason string) {
	e := audit.Event{
		Type: audit.QueryFinished, Outcome: audit.Failure, Reason: reason,
		Actor: actorOf(r), Deployment: d.ID, GrantID: g.ID, RequestID: grantRequestID(g.Token),
		Details: map[string]any{"source": src.Name, "bytes_relayed": relayed, "recorded_by": "broker"},
	}
	if d.Agent != nil {
		e.AgentID = d.Agent.ID
	}
	if err := b.auditLog.Record(context.WithoutCancel(r.Context()), e); err != nil {
		b.log.Error("audit write failed", "type", e.Type, "err", err)
	}
}

// dataTarget finds the deployment and the caller's live grant for a
// data-plane call. The answer is remembered for up to a second, and
// forgotten at once when any request changes on this broker (a
// revocation on another broker sharing the database reaches the agent,
// which refuses the grant by itself).
func (b *Broker) dataTarget(r *http.Request, scope string) (store.DeploymentStatus, store.GrantRecord, error) {
	p := principalFrom(r.Context())
	key := strings.Join([]string{p.Issuer, p.Subject, r.PathValue("tenant"), r.PathValue("name"), scope, r.Header.Get(protocol.HeaderGrant)}, "\x00")
	now := b.now()
	gen := b.changeGen.Load()
	b.dataMu.Lock()
	e, ok := b.dataCache[key]
	b.dataMu.Unlock()
	if ok && e.gen == gen && now.Sub(e.at) < time.Second && now.Before(e.g.Expiry) {
		return e.d, e.g, nil
	}
	d, err := b.lookup(r)
	if err != nil {
		return d, store.GrantRecord{}, err
	}
	// The broker checks the grant is live and the caller's; the agent
	// checks it again against the key it pinned.
	g, err := b.liveGrant(r.Context(), r, d.ID, scope)
	if err != nil {
		return d, g, err
	}
	b.dataMu.Lock()
	if len(b.dataCache) >= 10000 {
		clear(b.dataCache)
	}
	b.dataCache[key] = dataEntry{d: d, g: g, at: now, gen: gen}
	b.dataMu.Unlock()
	return d, g, nil
}

// stoppedText is the agent's reason for stopping an answer early, made
// safe to pass on: the agent is not trusted to write the broker's
// headers, so anything but short printable ASCII becomes a generic reason.
func stoppedText(s string) string {
	if s == "" {
		return ""
	}
	if len(s) > 200 {
		return "stopped early"
	}
	for _, c := range s {
		if c < 0x20 || c > 0x7e {
			return "stopped early"
		}
	}
	return s
}

// transportReason is what the engineer is told of a failed call to an
// agent: the failure without the URL, which holds the agent's tailnet
// address.
func transportReason(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timed out"
	case errors.Is(err, context.Canceled):
		return "the call was cancelled"
	}
	return err.Error()
}

type dataEntry struct {
	d   store.DeploymentStatus
	g   store.GrantRecord
	at  time.Time
	gen uint64
}
