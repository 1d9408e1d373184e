// Package prometheus is the Prometheus data source: the read-only
// Prometheus HTTP API. On the agent every call is checked by the
// Prometheus guard and rebuilt from its parsed parameters (never passed
// through), answers that echo configuration are rewritten before any of
// them leaves, and prom.allowed and prom.denied are audited. Prometheus
// runs nothing a revocation must stop beyond the HTTP call the agent cuts
// off.
package prometheus

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/tetherhq/tether/internal/names"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/promguard"
	"github.com/tetherhq/tether/internal/protocol"
	"github.com/tetherhq/tether/internal/source"
)

// Scope is the grant scope of the Prometheus read API.
const Scope = names.ScopePrometheus

// Source is the Prometheus data source.
var Source = source.Source{
	Name:   "prometheus",
	Title:  "Prometheus",
	Scope:  Scope,
	Denied: audit.PromDenied,
	Route:  source.Route{Rest: true, Example: "api/v1/…"},
	Proxy:  source.Proxy{DefaultListen: "127.0.0.1:9090"},
	New:    func(up source.Upstream) source.Engine { return &engine{up: up} },
}

// engine is the agent side of Prometheus.
type engine struct{ up source.Upstream }

// Revoke has nothing to stop: a Prometheus query ends with its HTTP call.
func (e *engine) Revoke(context.Context, source.Env, string) (int, error) { return 0, nil }

// Serve forwards one guarded Prometheus API call: guard (the call is
// rebuilt from its parsed parameters, never passed through), audit, then
// the answer streamed back, or rewritten whole where it echoes
// configuration.
func (e *engine) Serve(env source.Env, c source.Call, w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, promguard.MaxBody+1))
	if err != nil {
		source.Error(w, http.StatusBadRequest, "bad_body", err.Error())
		return
	}
	base := c.Event
	// The guard sees the request target exactly as received.
	prefix := Source.AgentPath()
	target := strings.TrimPrefix(r.RequestURI, strings.TrimSuffix(prefix, "/"))
	var (
		req promguard.Request
		v   promguard.Verdict
	)
	guardStart := time.Now()
	u, perr := url.ParseRequestURI(target)
	if perr != nil || !strings.HasPrefix(r.RequestURI, prefix) {
		v = promguard.Verdict{Reason: "request target is not an origin-form Prometheus API path such as /api/v1/query?query=up (an absolute URL such as http://host/api/v1/… is refused)"}
	} else {
		req, v = promguard.Check(r.Method, u, r.Header.Get("Content-Type"), body)
	}
	source.AddTiming(r.Context(), protocol.TimingGuard, time.Since(guardStart))
	if !v.Allow {
		ev := base
		ev.Type, ev.Outcome, ev.Reason = audit.PromDenied, audit.Failure, v.Reason
		ev.Details = map[string]any{"method": r.Method, "target": target}
		env.Record(r.Context(), ev)
		source.Error(w, http.StatusForbidden, "prom_denied", v.Reason)
		return
	}
	ev := base
	ev.Type, ev.Outcome = audit.PromAllowed, audit.Success
	ev.Details = map[string]any{"method": req.Method, "endpoint": v.Endpoint, "params": req.Params()}
	if err := env.Record(r.Context(), ev); err != nil {
		source.Error(w, http.StatusServiceUnavailable, "audit_unavailable", "the agent could not record the call, so it did not make it")
		return
	}
	ctx, done := env.CallContext(r.Context(), c)
	defer done()
	up, err := req.NewHTTPRequest(ctx, e.up.URL)
	if err != nil {
		source.Error(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	log := env.Logger()
	callID := fmt.Sprintf("prom-%s-%d", c.GrantID, env.NextID())
	res, err := env.Client().Do(up)
	if err != nil {
		source.UpstreamFailed(w, ctx, log, "Prometheus", "prometheus_unreachable", callID, err)
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
			source.UpstreamFailed(w, ctx, log, "Prometheus", "prometheus_unreachable", callID, err)
			return
		}
		out, err := promguard.Rewrite(v.Endpoint, raw)
		if err != nil {
			// The reason names the endpoint and what is wrong with the
			// answer, never the answer itself.
			ev := base
			ev.Type, ev.Outcome, ev.Reason = audit.PromDenied, audit.Failure, err.Error()
			ev.Details = map[string]any{"method": req.Method, "endpoint": v.Endpoint, "call": callID, "stage": "answer", "status": res.StatusCode}
			env.Record(context.WithoutCancel(r.Context()), ev)
			source.Error(w, http.StatusBadGateway, "prom_answer_withheld", err.Error())
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(res.StatusCode)
		w.Write(out)
		return
	}
	w.Header().Set("Content-Type", res.Header.Get("Content-Type"))
	w.Header().Set("Trailer", protocol.TrailerStopped)
	w.WriteHeader(res.StatusCode)
	_, serr := source.Stream(w, res.Body, nil)
	if ctx.Err() != nil {
		serr = context.Cause(ctx)
	}
	if serr != nil {
		source.StoppedEarly(w, ctx, log, "Prometheus", callID, serr)
	}
}
