// Package policy decides access requests with an OPA/Rego policy: who may
// ask for what on which deployment, whose reviews must approve first and
// for how long access may last at most.
//
// The default policy (access.rego, package tether.access) is embedded; an
// operator may point [Options.Dir] at a directory of .rego files instead,
// which [Engine.Watch] reloads when it changes. The broker asks one
// question per request, data.tether.access.decision, through [Engine.Decide].
// The answer is validated strictly: a policy whose decision is undefined or
// malformed makes Decide fail (closed), never half-decide. A reload that
// fails to parse or compile keeps the last good policy.
//
// Policies may use every OPA built-in except those that reach outside the
// broker or are not deterministic (http.send, net.lookup_ip_addr,
// opa.runtime, rand.intn): a decision must depend on its input alone, so
// that a logged input replays to the same decision.
package policy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetherhq/tether/internal/names"

	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/prometheus/client_golang/prometheus"
)

// Query is the document the broker asks for.
const Query = "data.tether.access.decision"

// ErrMalformed means the policy's decision was undefined or did not have
// the documented shape; the request must be denied and the policy fixed.
var ErrMalformed = errors.New("malformed policy decision")

// Actions a request may name in [Input.Action].
const (
	ActionAccess  = "access"
	ActionPeering = names.ScopePeering
)

// Input is the documented policy input (JSON names in snake_case).
type Input struct {
	Requester  Requester  `json:"requester"`
	Deployment Deployment `json:"deployment"`
	// Ticket is the GitHub issue cited; nil when none was.
	Ticket *Ticket `json:"ticket"`
	// Scopes are the scopes requested, such as "clickhouse:system" and
	// "prometheus:read".
	Scopes []string `json:"scopes"`
	// DurationSeconds is the duration requested.
	DurationSeconds int64 `json:"duration_seconds"`
	// BreakGlass asks for emergency access.
	BreakGlass bool `json:"break_glass"`
	// Dev reports that the broker runs in dev mode.
	Dev bool `json:"dev"`
	// Time is the evaluation time, also passed as [rego.EvalTime]; the
	// zero value means [Options.Now] at the call.
	Time time.Time `json:"time"`
	// Action is ActionAccess (the default, when empty) or ActionPeering.
	Action string `json:"action"`
	// Network is the change an ActionPeering request asks for; nil for
	// access. It never holds an external ID: those are secrets.
	Network *Network `json:"network"`
}

// Network kinds of a [Network] change.
const (
	NetworkPeering = "peering"
	NetworkIngress = "ingress"
)

// Network is the peer side of a network change, as the requester asked
// for it.
type Network struct {
	// Kind is NetworkPeering (VPC peering with routes and security-group
	// rules) or NetworkIngress (that, and a private hosted zone in the
	// peer VPC for the deployment's private endpoint).
	Kind      string `json:"kind"`
	AccountID string `json:"account_id"` // the peer's AWS account
	Region    string `json:"region"`
	VPCID     string `json:"vpc_id"`
	// RoleARN is the role Tether assumes in the peer account.
	RoleARN string `json:"role_arn"`
	// RouteTableIDs are the peer route tables to change; empty means
	// every route table of the VPC.
	RouteTableIDs []string `json:"route_table_ids"`
	// OutsideMaintenanceWindow asks to make the change outside the
	// deployment's maintenance windows.
	OutsideMaintenanceWindow bool `json:"outside_maintenance_window"`
}

// Requester is the verified user asking.
type Requester struct {
	Subject     string   `json:"subject"`
	Email       string   `json:"email"`
	Issuer      string   `json:"issuer"`
	Tenant      string   `json:"tenant"` // empty for the vendor issuer
	Roles       []string `json:"roles"`
	Groups      []string `json:"groups"`
	GitHubLogin string   `json:"github_login"`
	GitHubTeams []string `json:"github_teams"`
}

// Deployment is the customer deployment access is asked for.
type Deployment struct {
	ID     string            `json:"id"`
	Tenant string            `json:"tenant"`
	Name   string            `json:"name"`
	Region string            `json:"region"`
	Labels map[string]string `json:"labels"`
	// FreezeWindows are in effect when Start <= Time < End.
	FreezeWindows      []Window `json:"freeze_windows"`
	MaintenanceWindows []Window `json:"maintenance_windows"`
}

// Window is a span of time a deployment's owner declared. A zero Start or
// End reaches the policy as a time it cannot read, which the default policy
// treats as open on that side.
type Window struct {
	Start  time.Time `json:"start"`
	End    time.Time `json:"end"`
	Reason string    `json:"reason"`
}

// Ticket is the GitHub issue a request cites, as the broker read it.
type Ticket struct {
	Ref       string   `json:"ref"` // owner/repo#N
	Verified  bool     `json:"verified"`
	State     string   `json:"state"` // "open" or "closed"
	Labels    []string `json:"labels"`
	Assignees []string `json:"assignees"`
}

// Review is a set of approvals a request needs before it is granted.
type Review struct {
	// Tenant is the customer whose approvers must approve; empty for
	// names.ReviewInternal.
	Tenant string `json:"tenant"`
	// Role is names.ReviewApprover (a customer approver of Tenant) or names.ReviewInternal
	// (a vendor reviewer or admin).
	Role string `json:"role"`
	// Count is how many distinct people of Role must approve, at least 1.
	Count int `json:"count"`
}

// Decision is the policy's answer to an [Input].
type Decision struct {
	Allow bool `json:"allow"`
	// Reasons explain a denial, one actionable line per problem, or say
	// what happens next when allowed.
	Reasons []string `json:"reasons"`
	// RequiredReviews must all approve before a grant; empty means the
	// policy asks for no review (the default policy never answers that for
	// an allowed request: where a customer wants no per-request approval,
	// its approvers sign a standing permit).
	RequiredReviews []Review `json:"required_reviews"`
	// MaxDuration is MaxDurationSeconds as a duration.
	MaxDuration        time.Duration `json:"-"`
	MaxDurationSeconds int64         `json:"max_duration_seconds"`
	// Scopes are the scopes that would be granted.
	Scopes []string `json:"scopes"`
	// PolicyHash identifies the policy that decided ([Engine.Hash]).
	PolicyHash string `json:"policy_hash"`
}

// Options configures an [Engine]. The zero value evaluates the embedded
// default policy.
type Options struct {
	// Dir is a directory of .rego files to load instead of the embedded
	// default, with its subdirectories; files named *_test.rego are tests
	// and not evaluated, and names starting with "." are skipped. [Engine.Watch]
	// reloads it when it changes.
	Dir string
	// Logger receives reloads and their failures; nil discards.
	Logger *slog.Logger
	// Registerer receives tether_policy_reloads_total{result="ok|error"}
	// and tether_policy_decision_duration_seconds{result}; nil registers
	// nothing.
	Registerer prometheus.Registerer
	// OnReload is called after each reload attempt (not after the initial
	// load in [New]), for the audit log: hash is the content read (empty if
	// the directory could not be read) and err, when non-nil, is why it
	// was kept out while [Engine.Hash] stays the last good policy's. It is
	// called with the reload lock held and must not call [Engine.Reload].
	OnReload func(hash string, err error)
	// Now is the clock used when [Input.Time] is zero; nil means time.Now.
	Now func() time.Time
}

// Engine evaluates a policy. It is safe for concurrent use.
type Engine struct {
	opts    Options
	log     *slog.Logger
	now     func() time.Time
	metrics *metrics

	cur atomic.Pointer[compiled]

	reloadMu sync.Mutex
	lastSeen string // content hash (or read error) of the last load attempt
}

// compiled is one loaded policy, swapped whole on reload.
type compiled struct {
	query rego.PreparedEvalQuery
	hash  string
}

// New loads and compiles the policy of opts: the embedded default, or
// opts.Dir. An initial policy that does not parse or compile is an error
// naming the file and line.
func New(ctx context.Context, opts Options) (*Engine, error) {
	e := &Engine{opts: opts, log: opts.Logger, now: opts.Now}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	e.log = e.log.With("component", "policy")
	if e.now == nil {
		e.now = time.Now
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, fmt.Errorf("register policy metrics: %w", err)
	}
	e.metrics = m

	src, err := e.read()
	if err != nil {
		return nil, err
	}
	c, err := prepare(ctx, src)
	if err != nil {
		return nil, err
	}
	e.cur.Store(c)
	e.lastSeen = c.hash
	e.log.Info("policy loaded", "source", src.origin, "hash", c.hash, "modules", len(src.files))
	return e, nil
}

// Hash returns the hash of the policy in use: the hex SHA-256 of its
// modules ([Decision.PolicyHash]).
func (e *Engine) Hash() string { return e.cur.Load().hash }

// Decide evaluates the policy on in. An undefined or malformed decision is
// an error: the caller must deny.
func (e *Engine) Decide(ctx context.Context, in Input) (Decision, error) {
	start := time.Now()
	d, err := e.decide(ctx, in)
	result := "error"
	switch {
	case err != nil:
	case d.Allow:
		result = "allow"
	default:
		result = "deny"
	}
	e.metrics.decisions.WithLabelValues(result).Observe(time.Since(start).Seconds())
	return d, err
}

func (e *Engine) decide(ctx context.Context, in Input) (Decision, error) {
	c := e.cur.Load()
	if in.Time.IsZero() {
		in.Time = e.now()
	}
	rs, err := c.query.Eval(ctx, rego.EvalParsedInput(in.value()), rego.EvalTime(in.Time))
	if err != nil {
		return Decision{}, fmt.Errorf("evaluate policy %s: %w", short(c.hash), err)
	}
	if len(rs) != 1 || len(rs[0].Expressions) != 1 {
		return Decision{}, fmt.Errorf("evaluate policy %s: %s is undefined for this input; the policy must always define it: %w", short(c.hash), Query, ErrMalformed)
	}
	d, err := parseDecision(rs[0].Expressions[0].Value)
	if err != nil {
		return Decision{}, fmt.Errorf("evaluate policy %s: %w", short(c.hash), err)
	}
	d.PolicyHash = c.hash
	return d, nil
}

// Reload re-reads [Options.Dir] and, if it compiles, swaps it in
// atomically: decisions in flight finish on the policy they started with.
// On failure the last good policy stays in use; the failure is logged,
// counted and passed to [Options.OnReload], and returned. With the embedded
// policy there is nothing to re-read and Reload returns nil.
func (e *Engine) Reload(ctx context.Context) error {
	if e.opts.Dir == "" {
		return nil
	}
	e.reloadMu.Lock()
	defer e.reloadMu.Unlock()
	return e.reloadLocked(ctx)
}

func (e *Engine) reloadLocked(ctx context.Context) error {
	hash, err := e.tryReload(ctx)
	if err != nil {
		e.metrics.reloads.WithLabelValues("error").Inc()
		e.log.Error("policy reload failed; keeping the last good policy", "dir", e.opts.Dir, "hash", hash, "kept", e.Hash(), "err", err)
	} else {
		e.metrics.reloads.WithLabelValues("ok").Inc()
		e.log.Info("policy reloaded", "dir", e.opts.Dir, "hash", hash)
	}
	if e.opts.OnReload != nil {
		e.opts.OnReload(hash, err)
	}
	return err
}

func (e *Engine) tryReload(ctx context.Context) (string, error) {
	src, err := e.read()
	if err != nil {
		e.lastSeen = "error: " + err.Error()
		return "", fmt.Errorf("reload policy: %w", err)
	}
	e.lastSeen = src.hash
	c, err := prepare(ctx, src)
	if err != nil {
		return src.hash, fmt.Errorf("reload policy: %w", err)
	}
	e.cur.Store(c)
	return c.hash, nil
}

// Watch polls [Options.Dir] every interval (5s if every <= 0) and reloads
// it when its content changes, until ctx ends. A change that fails to load
// is reported once, not on every poll. With the embedded policy Watch
// returns at once.
func (e *Engine) Watch(ctx context.Context, every time.Duration) {
	if e.opts.Dir == "" {
		return
	}
	if every <= 0 {
		every = 5 * time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		seen := "error: "
		src, err := e.read()
		if err != nil {
			seen += err.Error()
		} else {
			seen = src.hash
		}
		e.reloadMu.Lock()
		if seen != e.lastSeen {
			_ = e.reloadLocked(ctx) // logged, counted and reported
		}
		e.reloadMu.Unlock()
	}
}

func short(hash string) string {
	if len(hash) > 12 {
		return hash[:12]
	}
	return hash
}
