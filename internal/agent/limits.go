package agent

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"sync"
	"time"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/grant"
)

// DefaultMaxCallsPerGrant is how many calls one grant may have in flight
// at the agent when [Config.MaxCallsPerGrant] is zero.
const DefaultMaxCallsPerGrant = 4

// callRefusalWindow is how often the refusals of one grant over its call
// limit reach the audit log one by one: the first refusal of a window is
// recorded at once, the repeats within it as one event with a count (the
// same rule the broker applies to its own refusals), so that a caller
// hammering a busy grant cannot flood the log.
const callRefusalWindow = 10 * time.Second

// callLimiter counts the calls in flight per grant. A grant's entry
// exists only while it has calls in flight, so its memory is bounded by
// the calls in flight, whatever the number of grants. Its zero value is
// ready to use.
type callLimiter struct {
	mu     sync.Mutex
	grants map[string]*grantCalls
}

// grantCalls is one grant's calls in flight and the aggregation window
// of its refusals.
type grantCalls struct {
	inFlight int
	window   time.Time // when the window's first (recorded) refusal came; zero: none
	repeats  refusalRun
}

// refusalRun is refusals answered but not yet recorded one by one.
type refusalRun struct {
	n           int
	first, last time.Time
	sample      audit.Event // the first of them, the template of their aggregate
}

// admission is the limiter's answer to one call.
type admission struct {
	ok       bool       // the call holds a slot; release it when it ends
	record   bool       // refused: record this refusal now
	repeats  refusalRun // refused: record this aggregate (of an ended window) first
	inFlight int        // the grant's calls in flight, this one included if ok
}

// acquire takes one of grant id's limit slots, or refuses the call when
// they are all taken; ev is the refusal's audit event.
func (l *callLimiter) acquire(id string, limit int, now time.Time, ev audit.Event) admission {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.grants == nil {
		l.grants = make(map[string]*grantCalls)
	}
	c := l.grants[id]
	if c == nil {
		c = &grantCalls{}
		l.grants[id] = c
	}
	if c.inFlight < limit {
		c.inFlight++
		return admission{ok: true, inFlight: c.inFlight}
	}
	ad := admission{inFlight: c.inFlight}
	if !c.window.IsZero() && now.Sub(c.window) < callRefusalWindow {
		if c.repeats.n == 0 {
			c.repeats.first, c.repeats.sample = now, ev
		}
		c.repeats.n++
		c.repeats.last = now
		return ad
	}
	ad.record, ad.repeats = true, c.repeats
	c.window, c.repeats = now, refusalRun{}
	return ad
}

// release gives back a slot of grant id. When it was the grant's last
// call in flight the entry goes, and with it any refusals not yet
// recorded: they are returned for the caller to record.
func (l *callLimiter) release(id string) refusalRun {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.grants[id]
	if c == nil {
		return refusalRun{}
	}
	if c.inFlight--; c.inFlight > 0 {
		return refusalRun{}
	}
	delete(l.grants, id)
	return c.repeats
}

// maxCallsPerGrant is the configured limit, or the default.
func (a *Agent) maxCallsPerGrant() int {
	if a.cfg.MaxCallsPerGrant > 0 {
		return a.cfg.MaxCallsPerGrant
	}
	return DefaultMaxCallsPerGrant
}

// admitCall takes one of grant g's call slots for the call r. When the
// grant already has its limit of calls in flight it answers 429
// too_many_calls, audits the refusal as typ (query.denied or prom.denied;
// repeats aggregated per callRefusalWindow) and returns false. Otherwise
// the caller must run release when the call ends, however it ends
// (deferred: a client gone away, a revocation and a panic included).
func (a *Agent) admitCall(w http.ResponseWriter, r *http.Request, g grant.Grant, typ audit.Type) (release func(), ok bool) {
	limit := a.maxCallsPerGrant()
	calls := "calls"
	if limit == 1 {
		calls = "call"
	}
	msg := fmt.Sprintf("grant %s already has %d %s in flight (the agent's --max-calls-per-grant); wait for one to finish, then retry", g.ID, limit, calls)
	event := audit.Event{
		Type: typ, Outcome: audit.Failure, Reason: msg,
		Actor: grantActor(g), GrantID: g.ID, RequestID: g.RequestID, Source: audit.Source{IP: r.RemoteAddr},
		Details: map[string]any{"limit": "max_calls_per_grant", "max_calls_per_grant": limit, "method": r.Method, "path": r.URL.Path},
	}
	ad := a.calls.acquire(g.ID, limit, a.now(), event)
	if ad.ok {
		return func() {
			if run := a.calls.release(g.ID); run.n > 0 {
				a.record(context.WithoutCancel(r.Context()), run.aggregate())
			}
		}, true
	}
	if ad.repeats.n > 0 {
		a.record(r.Context(), ad.repeats.aggregate())
	}
	if ad.record {
		a.record(r.Context(), event)
	}
	apiErr(w, http.StatusTooManyRequests, "too_many_calls", msg)
	return nil, false
}

// aggregate is the one audit event standing for a run of refusals.
func (run refusalRun) aggregate() audit.Event {
	e := run.sample
	e.Details = maps.Clone(e.Details)
	if e.Details == nil {
		e.Details = map[string]any{}
	}
	e.Details["count"] = run.n
	e.Details["first"] = run.first.UTC()
	e.Details["last"] = run.last.UTC()
	return e
}
