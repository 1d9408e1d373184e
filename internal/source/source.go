// Package source is Tether's data-source abstraction. Each kind of
// upstream the agent guards — ClickHouse's system tables, Prometheus's
// read API — is a [Source]: the grant scope that opens it, its routes on
// the broker and on the agent, how the CLI's local proxy reaches it, and
// the agent-side [Engine] that runs one call under a verified grant with
// its guard, limits, kill and audit.
//
// Sources live in sub-packages (source/clickhouse, source/prometheus) and
// are listed in one place, [github.com/tetherhq/tether/internal/source/registry],
// which the agent's mux, the broker's route and authorization table, grant
// scope validation and the CLI read. Nothing else switches on a source's
// name. The agent keeps what is common to every source: it verifies the
// grant, admits the call under the grant's call limit, and only then hands
// it to the engine, through the small [Env] it implements.
package source

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/tetherhq/tether/audit"
)

// Source describes one kind of data source. Its values are plain data but
// for New, which builds the agent side.
type Source struct {
	// Name is the source's path segment on the broker
	// (/api/v1/deployments/TENANT/NAME/<Name>/…) and on the agent
	// (/v1/<Name>/…), the kind of 'broker proxy <Name>', and the stem of the
	// agent's --<Name>-url flag. Lowercase letters only.
	Name string
	// Title is how messages name the upstream, such as "ClickHouse".
	Title string
	// Scope is the grant scope that opens the source, such as
	// "clickhouse:system". The policy must allow it (policy/access.rego).
	Scope string
	// Denied is the audit type of a call the agent refused, such as
	// query.denied: the guard's refusals and the grant's call limit.
	Denied audit.Type
	// Route is where the source's calls go.
	Route Route
	// Proxy is what 'broker proxy <Name>' needs to know.
	Proxy Proxy
	// Validate, if set, checks the upstream's configuration beyond its URL
	// (which the agent checks for every source).
	Validate func(Upstream) error
	// New builds the agent side for a configured upstream (its URL is
	// set and valid).
	New func(Upstream) Engine
}

// Route is a source's one data-plane route. The broker serves it under
// /api/v1/deployments/{tenant}/{name}/<Name>/ and the agent under
// /v1/<Name>/.
type Route struct {
	// Method is the route's one HTTP method with Path; empty with Rest.
	Method string
	// Path is the route's fixed path after the source's name, such as
	// "query". The broker passes no query string on.
	Path string
	// Rest, instead of Method and Path, takes every method and the rest
	// of the path, which the broker passes to the agent exactly as the
	// caller wrote it, escaped, with its query string: the agent's guard
	// decides on the exact target.
	Rest bool
	// Example is what the rest of the path looks like, for messages,
	// such as "api/v1/…".
	Example string
}

// BrokerPattern is the source's ServeMux pattern on the broker's API.
func (s Source) BrokerPattern() string {
	p := s.brokerPrefix("{tenant}", "{name}")
	if s.Route.Rest {
		return p + "{rest...}"
	}
	return s.Route.Method + " " + p + s.Route.Path
}

func (s Source) brokerPrefix(tenant, name string) string {
	return "/api/v1/deployments/" + tenant + "/" + name + "/" + s.Name + "/"
}

// AgentPath is the source's path on the agent's API: a fixed path, or
// with Rest the prefix the rest of the target follows.
func (s Source) AgentPath() string { return "/v1/" + s.Name + "/" + s.Route.Path }

// AgentPattern is the source's ServeMux pattern on the agent's API.
func (s Source) AgentPattern() string {
	if s.Route.Rest {
		return s.AgentPath()
	}
	return s.Route.Method + " " + s.AgentPath()
}

// brokerPrefixSegments is the number of slashes in a broker prefix,
// /api/v1/deployments/{tenant}/{name}/<Name>/.
const brokerPrefixSegments = 7

// ErrBadPath is why [Source.AgentTarget] refused a broker request.
var ErrBadPath = errors.New("not a path of the source")

// AgentTarget is the request target on the agent for r, a broker request
// that matched [Source.BrokerPattern]: the fixed path, or the agent's
// prefix followed by the rest of r's escaped path and its query, passed
// through unchanged.
func (s Source) AgentTarget(r *http.Request) (string, error) {
	if !s.Route.Rest {
		return s.AgentPath(), nil
	}
	// The prefix /api/v1/deployments/TENANT/NAME/<Name>/ is cut by its
	// segments, as the mux matched them, not by the length of the
	// unescaped values: a tenant written %61cme is acme.
	raw := r.URL.EscapedPath()
	i, n := 0, 0
	for ; i < len(raw) && n < brokerPrefixSegments; i++ {
		if raw[i] == '/' {
			n++
		}
	}
	if n < brokerPrefixSegments {
		return "", ErrBadPath
	}
	target := s.AgentPath() + raw[i:]
	if r.URL.RawQuery != "" {
		target += "?" + r.URL.RawQuery
	}
	return target, nil
}

// Usage says what a path of the source looks like on the broker.
func (s Source) Usage() string {
	if s.Route.Rest {
		return s.brokerPrefix("TENANT", "NAME") + s.Route.Example
	}
	return s.Route.Method + " " + s.brokerPrefix("TENANT", "NAME") + s.Route.Path
}

// Proxy is what the CLI's local proxy of a source needs: 'broker proxy
// <Name>' listens on DefaultListen and sends a local call to the broker
// path <Name>/…. How the local calls are spoken (ClickHouse's HTTP
// interface, Prometheus's API) is the CLI's.
type Proxy struct {
	DefaultListen string // such as 127.0.0.1:8123, the upstream's own port
}

// Upstream is how the agent reaches one source's server. The agent
// checks URL is a base URL (http or https, no path or query) before New.
type Upstream struct {
	URL      string // such as http://clickhouse:8123
	User     string // the upstream's read-only user, where it has users
	Password string
	Limits   Limits
}

// Limits are the bounds the agent forces on every call to a source that
// can enforce them, whatever the call asks for.
type Limits struct {
	MaxExecutionTime time.Duration // default 60s
	MaxResultRows    int64         // default 10,000,000
	MaxResultBytes   int64         // default 2 GB
	MaxMemoryUsage   int64         // default 2 GB
}

// WithDefaults returns l with its zero fields set to their defaults.
func (l Limits) WithDefaults() Limits {
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
	return l
}

// Engine is the agent side of a source, bound to its upstream.
type Engine interface {
	// Serve answers one call: the agent has verified its grant and
	// admitted it under the grant's call limit. Serve reads the call,
	// runs the guard, records the verdict through env (an allowed call's
	// event durable before any of the answer leaves), calls the upstream
	// in env.CallContext with the limits forced, and streams the answer,
	// marking one cut short ([StoppedEarly]).
	Serve(env Env, c Call, w http.ResponseWriter, r *http.Request)
	// Revoke stops whatever the upstream still runs for a revoked grant,
	// beyond the HTTP calls the agent has already cut off, and returns
	// how many it stopped. grantID is letters, digits and '-'.
	Revoke(ctx context.Context, env Env, grantID string) (int, error)
}

// OrphanStopper is an optional interface of an [Engine] whose upstream
// may still run what a previous run of the agent started (ClickHouse runs
// a query on after its client died): the agent calls StopOrphans once at
// start, before it serves, and it returns how many it stopped.
type OrphanStopper interface {
	StopOrphans(ctx context.Context, env Env) (int, error)
}

// GrantChecker is an optional interface of an [Engine] that refuses some
// grants the verifier accepted: ClickHouse carries the grant ID into SQL
// (KILL QUERY), so it takes only IDs that need no quoting.
type GrantChecker interface {
	CheckGrant(id string) error
}

// Call is one call under a verified grant.
type Call struct {
	GrantID   string
	RequestID string
	Expiry    time.Time // zero: none
	// Event is the base of every audit event the call records: its
	// actor, grant, request and the caller's address are filled in.
	Event audit.Event
}

// Env is what an engine gets from the agent.
type Env interface {
	// Record makes an audit event durable (fsync) in the agent's spool;
	// a failure is logged and fails the call closed.
	Record(ctx context.Context, e audit.Event) error
	// AfterCall runs fn, which records the end of a call, beside the end
	// of the response; the agent waits for it before it stops.
	AfterCall(fn func())
	// CallContext is the context of the upstream call: cancelled, with
	// cause ErrGrantRevoked or ErrGrantExpired, when the grant is revoked
	// or expires, or when ctx ends. Run done when the call ends.
	CallContext(ctx context.Context, c Call) (_ context.Context, done func())
	// Client is the agent's HTTP client for its upstreams.
	Client() *http.Client
	// NextID numbers calls, for query and call IDs unique on this agent.
	NextID() uint64
	// Now is the agent's clock.
	Now() time.Time
	// Logger is the agent's logger.
	Logger() *slog.Logger
}
