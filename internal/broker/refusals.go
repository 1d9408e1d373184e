package broker

import (
	"fmt"
	"maps"
	"net"
	"sync"
	"time"

	"github.com/tetherhq/tether/audit"
)

// Bounds on what refused calls can cost the audit log.
const (
	// refusalWindow is the aggregation interval: per source, route,
	// event type and error code, the first refusal of a window is recorded at once
	// and the repeats within it are recorded as one event with a count
	// when the window ends.
	refusalWindow = 10 * time.Second
	// maxRefusalKeys bounds the sources (and source, type, code triples)
	// tracked at once; beyond it, new sources share one "*" entry.
	maxRefusalKeys = 4096
	// authFailBurst failed authentications are answered 401 from one
	// source; then authFailRate per second, and 429 beyond that.
	authFailBurst = 20
	authFailRate  = 2.0
	// Attacker-controlled strings are cut to these many bytes before
	// they reach the audit log.
	maxAuditPath    = 256
	maxAuditMethod  = 16
	maxAuditMessage = 300
)

// refusalKey is what repeats are aggregated by: who (an actor, or an IP
// address when the caller is unknown), what was refused (the route
// pattern, from the broker's own bounded table, never the raw path) and
// how (event type and error code).
type refusalKey struct{ source, route, typ, code string }

// refusalAgg is an aggregation window of one key.
type refusalAgg struct {
	start   time.Time   // when the window's first (recorded) refusal came
	repeats int         // refusals since, not yet recorded
	first   time.Time   // the first repeat
	last    time.Time   // the latest repeat
	sample  audit.Event // the first repeat, the template of the aggregate
}

// failBucket is a token bucket of failed authentications.
type failBucket struct {
	tokens float64
	at     time.Time
}

// refusalLog aggregates repeated refusals and limits failed
// authentications per source, so that no caller can flood the audit log.
// Its zero value is ready to use.
type refusalLog struct {
	mu      sync.Mutex
	open    map[refusalKey]*refusalAgg
	buckets map[string]*failBucket
}

// admit decides what to record for a refusal: ev itself when it is the
// first of its key in a window, nothing when it is a repeat (counted for
// the aggregate), and before it the aggregate of its key's previous
// window if that ended with repeats pending.
func (l *refusalLog) admit(k refusalKey, ev audit.Event, now time.Time) []audit.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open == nil {
		l.open = make(map[refusalKey]*refusalAgg)
	}
	a, ok := l.open[k]
	if !ok && len(l.open) >= maxRefusalKeys {
		k.source = "*"
		a, ok = l.open[k]
	}
	var out []audit.Event
	if ok && now.Sub(a.start) < refusalWindow {
		if a.repeats == 0 {
			a.first, a.sample = now, ev
		}
		a.repeats++
		a.last = now
		return nil
	}
	if ok && a.repeats > 0 {
		out = append(out, a.aggregate())
	}
	l.open[k] = &refusalAgg{start: now}
	return append(out, ev)
}

// due removes and returns the aggregates of the windows that ended by now,
// or of every window when all is set (at shutdown).
func (l *refusalLog) due(now time.Time, all bool) []audit.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []audit.Event
	for k, a := range l.open {
		if !all && now.Sub(a.start) < refusalWindow {
			continue
		}
		if a.repeats > 0 {
			out = append(out, a.aggregate())
		}
		delete(l.open, k)
	}
	for src, b := range l.buckets {
		if b.refill(now) >= authFailBurst {
			delete(l.buckets, src)
		}
	}
	return out
}

// aggregate is the one event standing for a window's repeats.
func (a *refusalAgg) aggregate() audit.Event {
	ev := a.sample
	ev.Details = maps.Clone(ev.Details)
	if ev.Details == nil {
		ev.Details = map[string]any{}
	}
	ev.Details["count"] = a.repeats
	ev.Details["first"] = a.first.UTC()
	ev.Details["last"] = a.last.UTC()
	return ev
}

// failed counts a failed authentication from source. It returns zero while
// the source is within its limit, or how long it must wait.
func (l *refusalLog) failed(source string, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.buckets == nil {
		l.buckets = make(map[string]*failBucket)
	}
	b, ok := l.buckets[source]
	if !ok {
		if len(l.buckets) >= maxRefusalKeys {
			source = "*"
			b, ok = l.buckets[source]
		}
		if !ok {
			b = &failBucket{tokens: authFailBurst, at: now}
			l.buckets[source] = b
		}
	}
	if b.refill(now) < 1 {
		return time.Duration((1 - b.tokens) / authFailRate * float64(time.Second))
	}
	b.tokens--
	return 0
}

// refill adds the tokens earned since the bucket was last seen.
func (b *failBucket) refill(now time.Time) float64 {
	if d := now.Sub(b.at); d > 0 {
		b.tokens = min(authFailBurst, b.tokens+d.Seconds()*authFailRate)
		b.at = now
	}
	return b.tokens
}

// retryAfter is a Retry-After header value: whole seconds, at least 1.
func retryAfter(d time.Duration) string {
	return fmt.Sprint(max(1, int((d+time.Second-1)/time.Second)))
}

// hostOf is the IP of a RemoteAddr (host:port), the source failed
// authentications are limited by. The broker knows no trusted proxies, so
// X-Forwarded-For is never believed.
func hostOf(remoteAddr string) string {
	if h, _, err := net.SplitHostPort(remoteAddr); err == nil {
		return h
	}
	return remoteAddr
}
