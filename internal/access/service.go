package access

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tetherhq/tether/internal/approval"

	"github.com/tetherhq/tether/internal/names"

	"github.com/google/uuid"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/grant"
	"github.com/tetherhq/tether/internal/notify"
	"github.com/tetherhq/tether/internal/store"
	"github.com/tetherhq/tether/policy"
)

// Store is what the lifecycle reads and writes; [store.Store] is one.
type Store interface {
	GetRequest(ctx context.Context, id string) (store.AccessRequest, error)
	CreateRequest(ctx context.Context, ar store.AccessRequest) error
	// UpdateRequest stores ar if the stored version is ar.Version, else
	// fails with an error wrapping [store.ErrConflict].
	UpdateRequest(ctx context.Context, ar store.AccessRequest) error
	ListRequests(ctx context.Context, f store.RequestFilter) ([]store.AccessRequest, error)
	GetDeployment(ctx context.Context, id string) (store.DeploymentStatus, error)
}

// Recorder writes audit events durably.
type Recorder interface {
	// RecordAll stores es in one commit, all or none, and returns once
	// they are durable.
	RecordAll(ctx context.Context, es ...audit.Event) error
	// Defer keeps a stamped event to write as soon as the log takes
	// writes again, for a change that stands although its event could not
	// be written (a revocation). It reports false when it cannot keep it.
	Defer(e audit.Event) bool
}

// Policy decides requests; [policy.Engine] is one.
type Policy interface {
	Decide(ctx context.Context, in policy.Input) (policy.Decision, error)
	Hash() string
}

// Hooks are what the lifecycle tells the rest of the broker. Every field
// may be nil.
type Hooks struct {
	// Stored follows every stored change of a request, before its event
	// is written (cached data-plane lookups must go at once).
	Stored func()
	// Changed follows a change once it is audited (long polls wake).
	Changed func()
	// Notify tells the request's customer (webhooks), after the event.
	Notify func(ar store.AccessRequest, typ, actor, summary string)
	// Comment comments on the request's ticket; it must not block.
	Comment func(ar store.AccessRequest, body string)
	// Granted counts a grant issued and audited.
	Granted func()
	// Revoking runs inside the write that revokes ar (an applied network
	// change schedules its teardown).
	Revoking func(ar *store.AccessRequest)
	// Revoked runs once a revocation is stored, or decided but not
	// storable, before its event: it cuts the grant off at the agent and
	// returns what that achieved, for the event's details ("pushed": true
	// when the agent took it).
	Revoked func(ctx context.Context, ar store.AccessRequest) map[string]any
	// StoreFailed is told why a revocation could not be stored. It frees
	// what it can (the store's reserve, when err says the disk is full)
	// and reports whether storing it again may now succeed, and what an
	// operator is to do if it does not.
	StoreFailed func(err error) (retry bool, why string)
}

// Config configures a [Service].
type Config struct {
	Store  Store
	Audit  Recorder
	Policy Policy
	// Sign signs an agent grant with the broker key.
	Sign func(grant.Grant) (string, error)
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// PendingTimeout is how long a request waits for its reviews; zero
	// means DefaultPendingTimeout.
	PendingTimeout time.Duration
	Hooks          Hooks
	// Logger receives what no caller is told; nil discards.
	Logger *slog.Logger
}

// Service runs the lifecycle over a store: it decides with the rules of
// this package, stores by compare-and-swap on the request's version
// (several brokers may share a database), and records every change's
// audit event before it returns. A change whose event cannot be written
// is undone and fails with [CodeAuditUnavailable]; a revocation stands.
type Service struct {
	cfg Config
	log *slog.Logger

	mu         sync.Mutex
	unrecorded map[string]unrecorded // request ID → a revocation in force but not yet stored
}

// New returns a Service.
func New(cfg Config) *Service {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.PendingTimeout == 0 {
		cfg.PendingTimeout = DefaultPendingTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Service{cfg: cfg, log: cfg.Logger.With("component", "access"), unrecorded: map[string]unrecorded{}}
}

// Caller is who acts, as the store keeps them and as the audit log names
// them for this call.
type Caller struct {
	Person store.Person
	Actor  audit.Actor
	Source audit.Source
}

// broker is the actor of what the broker does by itself.
var broker = audit.Actor{Subject: "broker", Role: "broker"}

func (s *Service) now() time.Time { return s.cfg.Now() }

// record writes events in one commit; failing to is an error that stops
// the action they record.
func (s *Service) record(ctx context.Context, es ...audit.Event) error {
	if err := s.cfg.Audit.RecordAll(ctx, es...); err != nil {
		s.log.Error("audit write failed", "type", es[0].Type, "err", err)
		return refuse(CodeAuditUnavailable, "the audit log could not be written, so the action was not taken")
	}
	return nil
}

func (s *Service) changed() {
	if s.cfg.Hooks.Changed != nil {
		s.cfg.Hooks.Changed()
	}
}

func (s *Service) notify(ar store.AccessRequest, typ, actor, summary string) {
	if s.cfg.Hooks.Notify != nil {
		s.cfg.Hooks.Notify(ar, typ, actor, summary)
	}
}

func (s *Service) comment(ar store.AccessRequest, body string) {
	if s.cfg.Hooks.Comment != nil && ar.Ticket != "" {
		s.cfg.Hooks.Comment(ar, body)
	}
}

// Update applies change to the stored request, retrying when another
// broker or request changed it first; change decides again on the fresh
// copy each time. An error from change is returned as it is.
func (s *Service) Update(ctx context.Context, id string, change func(*store.AccessRequest) error) (store.AccessRequest, error) {
	for range 5 {
		ar, err := s.cfg.Store.GetRequest(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			return ar, refuse(CodeRequestNotFound, "no request %s: 'broker request list' shows them", id)
		}
		if err != nil {
			return ar, fmt.Errorf("get request: %w", err)
		}
		if err := change(&ar); err != nil {
			return ar, err
		}
		ar.UpdatedAt = s.now()
		err = s.cfg.Store.UpdateRequest(ctx, ar)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			return ar, fmt.Errorf("update request: %w", err)
		}
		ar.Version++
		if s.cfg.Hooks.Stored != nil {
			s.cfg.Hooks.Stored()
		}
		return ar, nil
	}
	return store.AccessRequest{}, refuse(CodeBusy, "request %s is changing under heavy contention; try again", id)
}

var errChangedSince = errors.New("the request changed since")

// undo puts a request back as it was before a change stored as version
// ver, unless it changed since: a change whose audit event could not be
// written does not stand. Only changes that take no access away are
// undone (a review, a cancellation, a timeout, an expiry whose grant is
// past its own expiry anyway); a revocation stands.
func (s *Service) undo(ctx context.Context, before store.AccessRequest, ver int64) {
	_, err := s.Update(context.WithoutCancel(ctx), before.ID, func(cur *store.AccessRequest) error {
		if cur.Version != ver {
			return errChangedSince
		}
		v := cur.Version
		*cur = before
		cur.Version = v
		return nil
	})
	if err != nil {
		s.log.Error("could not undo a request change whose audit event was not written", "request", before.ID, "err", err)
	}
}

// Create is a new request, checked and described by the broker.
type Create struct {
	Caller
	Deployment store.DeploymentStatus
	Scopes     []string // valid, sorted, without duplicates
	Duration   time.Duration
	Reason     string
	Ticket     string
	BreakGlass bool
	Network    *store.PeeringSpec // the change of a network:peering request
	// Input is what the policy decides on.
	Input policy.Input
	// Plan, for a network change, plans it for its approvers to see; it
	// runs once the request is allowed, with the request's ID.
	Plan func(ctx context.Context, id string) (*store.NetworkPlan, error)
}

// Create asks the policy (audited with its hash and reasons), applies the
// hard rules, and stores the request pending, or active at once when no
// review is required.
func (s *Service) Create(ctx context.Context, c Create) (store.AccessRequest, error) {
	id := uuid.NewString()
	d := c.Deployment
	dec, err := s.decide(ctx, c, id)
	if err != nil {
		return store.AccessRequest{}, err
	}
	if !dec.Allow {
		return store.AccessRequest{}, refuse(CodePolicyDenied, "policy (%s) denies the request: %s", short(dec.PolicyHash), strings.Join(dec.Reasons, "; "))
	}
	terms, err := Terms(d.Tenant, c.BreakGlass, c.Input.Ticket, c.Scopes, dec)
	if err != nil {
		return store.AccessRequest{}, err
	}
	if c.Duration > terms.MaxDuration {
		return store.AccessRequest{}, refuse(CodeDurationTooLong, "duration %v is longer than the %v allowed for this request", c.Duration, terms.MaxDuration)
	}
	now := s.now()
	// The customer's agent, and the customer's permits, have a say in the
	// approvals: the grant must satisfy the agent, and a permit the
	// customer signed stands in for their per-request approval.
	terms.Reviews = agentApprovals(d, c, terms.Reviews)
	var permit string
	terms.Reviews, permit = applyPermit(d, c, terms.Reviews, now)
	if permit != "" {
		dec.Reasons = append(dec.Reasons, "covered by the customer's standing permit "+permit+": no per-request customer approval is needed")
	}
	dec.RequiredReviews = terms.Reviews
	dec.Scopes = terms.Scopes
	// A network change is planned now, for its approvers to see and
	// approve exactly; apply refuses anything else.
	var plan *store.NetworkPlan
	if c.Network != nil && c.Plan != nil {
		if plan, err = c.Plan(ctx, id); err != nil {
			return store.AccessRequest{}, err
		}
	}
	decJSON, _ := json.Marshal(dec)

	ar := store.AccessRequest{
		ID: id, DeploymentID: d.ID, Tenant: d.Tenant, Name: d.Name,
		Requester: c.Person, Scopes: c.Scopes, Duration: c.Duration, Reason: c.Reason, Ticket: c.Ticket,
		BreakGlass: c.BreakGlass, Network: c.Network, NetworkPlan: plan, State: store.StatePending, Decision: decJSON, Permit: permit,
		PendingUntil: now.Add(s.cfg.PendingTimeout), CreatedAt: now, UpdatedAt: now, Version: 1,
	}
	// The event first: an access that cannot be audited does not begin.
	if err := s.record(ctx, audit.Event{
		Type: audit.RequestCreated, Actor: c.Actor, Deployment: d.ID, RequestID: id,
		Source: c.Source, Outcome: audit.Success, Reason: c.Reason,
		Details: createdDetails(d.Tenant+"/"+d.Name, c.Scopes, c.Duration, c.Ticket, c.BreakGlass, c.Network),
	}); err != nil {
		return store.AccessRequest{}, err
	}
	if err := s.cfg.Store.CreateRequest(ctx, ar); err != nil {
		return store.AccessRequest{}, fmt.Errorf("create request: %w", err)
	}
	who := DisplayName(ar.Requester)
	s.notify(ar, notify.RequestCreated, who, fmt.Sprintf("%s asks for %s on %s/%s for %v: %s", who, strings.Join(c.Scopes, ", "), d.Tenant, d.Name, c.Duration, c.Reason))
	if c.BreakGlass {
		if err := s.record(ctx, audit.Event{
			Type: audit.BreakglassUsed, Actor: c.Actor, Deployment: d.ID, RequestID: id,
			Source: c.Source, Outcome: audit.Success, Reason: c.Reason,
			Details: map[string]any{"ticket": c.Ticket},
		}); err != nil {
			return store.AccessRequest{}, err
		}
		s.notify(ar, "breakglass.used", who, fmt.Sprintf("BREAK-GLASS: %s invoked emergency access to %s/%s citing %s, without customer approval: %s", who, d.Tenant, d.Name, c.Ticket, c.Reason))
	}
	if len(terms.Reviews) == 0 {
		why := "granted at once: the policy asks for no review"
		if permit != "" {
			why = "granted under the customer's permit " + permit
		}
		if ar, err = s.activate(ctx, ar, why); err != nil {
			return store.AccessRequest{}, err
		}
	}
	s.changed()
	return ar, nil
}

// decide asks the policy and audits its answer. A policy error refuses.
func (s *Service) decide(ctx context.Context, c Create, requestID string) (policy.Decision, error) {
	dec, err := s.cfg.Policy.Decide(ctx, c.Input)
	ev := audit.Event{
		Type: audit.PolicyDecided, Actor: c.Actor, Deployment: c.Deployment.ID, RequestID: requestID,
		Source: c.Source, Outcome: audit.Success,
	}
	if err != nil {
		ev.Outcome, ev.Reason = audit.Failure, "policy error: "+err.Error()
		ev.Details = map[string]any{"policy_hash": s.cfg.Policy.Hash()}
		if rerr := s.record(ctx, ev); rerr != nil {
			return dec, rerr
		}
		s.log.Error("policy evaluation failed", "err", err)
		return dec, refuse(CodePolicyError, "the policy could not decide (%v), so the request is refused", err)
	}
	if !dec.Allow {
		ev.Outcome = audit.Failure
	}
	ev.Reason = strings.Join(dec.Reasons, "; ")
	ev.Details = map[string]any{
		"policy_hash": dec.PolicyHash, "allow": dec.Allow, "required_reviews": dec.RequiredReviews,
		"max_duration": dec.MaxDuration.String(), "scopes": dec.Scopes,
	}
	if err := s.record(ctx, ev); err != nil {
		return dec, err
	}
	return dec, nil
}

// createdDetails are the details of a request.created event. A network
// change is recorded as the policy saw it: what and where, never an
// external ID.
func createdDetails(deployment string, scopes []string, dur time.Duration, ticket string, breakGlass bool, n *store.PeeringSpec) map[string]any {
	d := map[string]any{"deployment": deployment, "scopes": scopes, "duration": dur.String(), "ticket": ticket, "break_glass": breakGlass}
	if n != nil {
		d["network"] = map[string]any{
			"kind": n.Kind, "account_id": n.AccountID, "region": n.Region, "vpc_id": n.VPCID, "role_arn": n.RoleARN,
			"route_table_ids": slices.Clone(n.RouteTableIDs), "outside_maintenance_window": n.OutsideWindow,
		}
	}
	return d
}

func short(hash string) string {
	if len(hash) > 12 {
		return hash[:12]
	}
	return hash
}

// Review counts by's review of cur, the request as the caller was
// authorized for it ([ApplyReview]); the last required approval signs the
// grant in the same write and audits review and grant in one commit. A
// review that cannot be audited is undone.
func (s *Service) Review(ctx context.Context, cur store.AccessRequest, by Caller, rv Review) (store.AccessRequest, error) {
	d, err := s.cfg.Store.GetDeployment(ctx, cur.DeploymentID)
	if err != nil {
		return cur, fmt.Errorf("get deployment: %w", err)
	}
	rv.Reviewer = by.Person
	if d.Agent != nil {
		rv.Agent = d.Agent.ID
	}
	var role string
	var before store.AccessRequest
	ar, err := s.Update(ctx, cur.ID, func(ar *store.AccessRequest) error {
		next, counted, err := ApplyReview(*ar, rv, s.now())
		if err != nil {
			return err
		}
		if next.State == store.StateApproved {
			if next.Grant, err = s.issue(next, d); err != nil {
				return err
			}
			next.State = store.StateActive
		}
		before, role = *ar, counted
		*ar = next
		return nil
	})
	if err != nil {
		return ar, err
	}
	typ := audit.ReviewApproved
	if !rv.Approve {
		typ = audit.ReviewDenied
	}
	actor := audit.Actor{Subject: DisplayName(by.Person), Issuer: by.Person.Issuer, Tenant: by.Person.Tenant, Role: roleName(role)}
	review := audit.Event{
		Type: typ, Actor: actor, Deployment: ar.DeploymentID, RequestID: ar.ID,
		Source: by.Source, Outcome: audit.Success, Reason: rv.Comment,
		Details: map[string]any{"counted_as": role, "state": ar.State},
	}
	if rv.Statement != "" && rv.Approve {
		// What the customer signed, by digest (the proof's nonce): a
		// reviewer can match it to the grant's terms and the agent's check.
		review.Details["statement_digest"] = approval.Digest([]byte(rv.Statement))
	}
	if ar.NetworkPlan != nil {
		review.Details["plan_digest"] = ar.NetworkPlan.Digest // what the review approved
	}
	if ar.State == store.StateActive {
		if err := s.granted(ctx, ar, "approved by "+DisplayName(by.Person), review); err != nil {
			return ar, err
		}
	} else {
		// A review that cannot be audited does not count.
		if err := s.record(ctx, review); err != nil {
			s.undo(ctx, before, ar.Version)
			return ar, err
		}
		if ar.State == store.StateDenied {
			who := DisplayName(by.Person)
			s.notify(ar, notify.RequestDenied, who, fmt.Sprintf("%s denied %s's request for %s/%s: %s", who, DisplayName(ar.Requester), ar.Tenant, ar.Name, rv.Comment))
		}
	}
	s.changed()
	return ar, nil
}

// roleName is the audit role of a review counted as role.
func roleName(role string) string {
	if role == names.ReviewInternal {
		return names.RoleReviewer
	}
	return role
}

// Cancel cancels a pending request for its requester ([Cancel]). A
// cancellation that cannot be audited is undone.
func (s *Service) Cancel(ctx context.Context, id string, by Caller) (store.AccessRequest, error) {
	var before store.AccessRequest
	ar, err := s.Update(ctx, id, func(ar *store.AccessRequest) error {
		next, err := Cancel(*ar, by.Person, s.now())
		if err != nil {
			return err
		}
		before, *ar = *ar, next
		return nil
	})
	if err != nil {
		return ar, err
	}
	if err := s.record(ctx, audit.Event{
		Type: audit.RequestCancelled, Actor: by.Actor, Deployment: ar.DeploymentID, RequestID: ar.ID,
		Source: by.Source, Outcome: audit.Success,
	}); err != nil {
		s.undo(ctx, before, ar.Version)
		return ar, err
	}
	s.changed()
	return ar, nil
}

// Revoke revokes an approved or active request ([Revoke]) and cuts its
// grant off (Hooks.Revoked). Unlike every other change, a revocation is
// never undone for want of its record: it only takes access away, so it
// is put in force before it is durable.
//
//   - When the store cannot take it, Hooks.StoreFailed may free space (the
//     store's reserve on a full disk) and it is stored again. If it still
//     cannot be, the revocation is held in memory: the grant is refused by
//     [Service.Unrecorded], still pushed to the agent, and
//     [Service.RetryUnrecorded] stores it once the store takes writes; the
//     call fails with [CodeRevocationUnrecorded], saying what took effect
//     and what did not.
//   - When its audit event cannot be written, the grant stays revoked
//     (fail closed), the call fails with [CodeAuditUnavailable], and the
//     event is kept to be written as soon as the log takes writes again.
func (s *Service) Revoke(ctx context.Context, id string, by Caller, reason string) (store.AccessRequest, error) {
	at := s.now()
	var decided *store.AccessRequest
	change := func(ar *store.AccessRequest) error {
		next, err := Revoke(*ar, by.Person, reason, at)
		if err != nil {
			return err
		}
		if s.cfg.Hooks.Revoking != nil {
			s.cfg.Hooks.Revoking(&next) // an applied network change comes down by itself
		}
		*ar = next
		decided = &next
		return nil
	}
	ar, err := s.Update(ctx, id, change)
	var why string
	if err != nil && decided != nil && !isRefusal(err) && s.cfg.Hooks.StoreFailed != nil {
		var retry bool
		if retry, why = s.cfg.Hooks.StoreFailed(err); retry {
			decided = nil
			ar, err = s.Update(ctx, id, change)
		}
	}
	if err != nil {
		if decided == nil || isRefusal(err) {
			return ar, err // not decided, or refused: nothing changed
		}
		// Decided on the stored request, but not stored: in force anyway.
		s.log.Error("a revocation could not be stored: it is in force at this broker and is stored as soon as the store takes writes", "request", id, "err", err)
		ar = *decided
		if !s.hold(ar, by, reason, at) {
			s.log.Error("too many revocations wait to be stored: this one is in force at the agent only", "request", id)
		}
		if why == "" {
			why = "the store failed (the broker's log has details)"
		}
	}
	stored := err == nil
	var details map[string]any
	if s.cfg.Hooks.Revoked != nil {
		details = s.cfg.Hooks.Revoked(ctx, ar)
	}
	ev := audit.Event{
		Type: audit.GrantRevoked, Actor: by.Actor, Deployment: ar.DeploymentID, RequestID: ar.ID, GrantID: grantID(ar),
		Source: by.Source, Outcome: audit.Success, Reason: reason, Details: details,
	}
	if err := audit.Stamp(&ev, at); err != nil {
		return ar, err
	}
	audited := true
	if err := s.cfg.Audit.RecordAll(ctx, ev); err != nil {
		s.log.Error("audit write failed", "type", ev.Type, "err", err)
		if !s.cfg.Audit.Defer(ev) {
			s.log.Error("audit backlog full: a revocation's event is lost", "request", ar.ID)
		}
		audited = false
	}
	s.changed()
	if !stored {
		return ar, refuse(CodeRevocationUnrecorded, "%s", unrecordedMessage(ar, details, why, audited))
	}
	if !audited {
		return ar, refuse(CodeAuditUnavailable, "request %s is revoked and its grant refused, but the audit log could not be written: the broker records the revocation as soon as it can; tell the broker's operator", ar.ID)
	}
	who := DisplayName(by.Person)
	s.notify(ar, notify.RequestRevoked, who, fmt.Sprintf("%s revoked %s's access to %s/%s: %s", who, DisplayName(ar.Requester), ar.Tenant, ar.Name, reason))
	s.comment(ar, fmt.Sprintf("Tether: access of %s to %s/%s was **revoked** by %s: %s", DisplayName(ar.Requester), ar.Tenant, ar.Name, who, reason))
	return ar, nil
}

func grantID(ar store.AccessRequest) string {
	if ar.Grant == nil {
		return ""
	}
	return ar.Grant.ID
}

// issue signs the grant of an approved request for the deployment's
// current agent ([GrantFor]).
func (s *Service) issue(ar store.AccessRequest, d store.DeploymentStatus) (*store.GrantRecord, error) {
	g, err := GrantFor(ar, d, uuid.NewString(), s.now())
	if err != nil {
		return nil, err
	}
	rec := &store.GrantRecord{ID: g.ID, Scopes: g.Scopes, AgentID: g.Agent, NotBefore: g.NotBefore, Expiry: g.Expiry, IssuedAt: g.IssuedAt}
	if ar.Network != nil {
		return rec, nil
	}
	if rec.Token, err = s.cfg.Sign(g); err != nil {
		return nil, fmt.Errorf("issue grant: %w", err)
	}
	return rec, nil
}

// activate issues the grant of a request that needs no (more) reviews
// and makes it active.
func (s *Service) activate(ctx context.Context, ar store.AccessRequest, why string) (store.AccessRequest, error) {
	d, err := s.cfg.Store.GetDeployment(ctx, ar.DeploymentID)
	if err != nil {
		return ar, fmt.Errorf("get deployment: %w", err)
	}
	ar, err = s.Update(ctx, ar.ID, func(cur *store.AccessRequest) error {
		if cur.State != store.StateApproved && cur.State != store.StatePending {
			return refuse(CodeNotApproved, "request %s became %s before its grant was issued", cur.ID, cur.State)
		}
		rec, err := s.issue(*cur, d)
		if err != nil {
			return err
		}
		cur.State, cur.Grant = store.StateActive, rec
		return nil
	})
	if err != nil {
		return ar, err
	}
	if err := s.granted(ctx, ar, why); err != nil {
		return ar, err
	}
	return ar, nil
}

// grantIssued is the audit event of a grant.
func grantIssued(ar store.AccessRequest, why string) audit.Event {
	g := ar.Grant
	return audit.Event{
		Type: audit.GrantIssued, Actor: broker, Deployment: ar.DeploymentID,
		RequestID: ar.ID, GrantID: g.ID, AgentID: g.AgentID, Outcome: audit.Success, Reason: why,
		Details: map[string]any{"scopes": g.Scopes, "not_before": g.NotBefore, "expiry": g.Expiry, "policy_hash": Decision(ar).PolicyHash, "subject": DisplayName(ar.Requester)},
	}
}

// granted audits a grant just stored, with the events that led to it, in
// one commit, then tells the customer and the ticket. A grant that cannot
// be audited is revoked at once and the call fails.
func (s *Service) granted(ctx context.Context, ar store.AccessRequest, why string, before ...audit.Event) error {
	if err := s.cfg.Audit.RecordAll(ctx, append(before, grantIssued(ar, why))...); err != nil {
		s.log.Error("audit write failed; revoking the grant it would have recorded", "request", ar.ID, "err", err)
		s.Update(context.WithoutCancel(ctx), ar.ID, func(cur *store.AccessRequest) error {
			cur.State, cur.EndedAt, cur.EndedBy, cur.EndReason = store.StateRevoked, s.now(), "broker", "the grant could not be audited"
			return nil
		})
		return refuse(CodeAuditUnavailable, "the audit log could not be written, so no grant was issued")
	}
	g := ar.Grant
	if s.cfg.Hooks.Granted != nil {
		s.cfg.Hooks.Granted()
	}
	who, until := DisplayName(ar.Requester), g.Expiry.UTC().Format(time.RFC3339)
	s.notify(ar, notify.RequestApproved, why, fmt.Sprintf("%s's access to %s/%s (%s) is granted until %s: %s", who, ar.Tenant, ar.Name, strings.Join(g.Scopes, ", "), until, why))
	s.comment(ar, fmt.Sprintf("Tether: %s was **granted** %s on %s/%s until %s (%s).", who, strings.Join(g.Scopes, ", "), ar.Tenant, ar.Name, until, why))
	return nil
}

// ExpireDue times out the pending requests and expires the grants that
// are due at now ([Expire]), each audited; one whose event cannot be
// written is undone and tried again at the next call (an expired grant is
// refused by its own expiry meanwhile, by broker and agent).
func (s *Service) ExpireDue(ctx context.Context) error {
	now := s.now()
	due, err := s.cfg.Store.ListRequests(ctx, store.RequestFilter{
		States:    []string{store.StatePending, store.StateApproved, store.StateActive},
		DueBefore: now.Add(time.Millisecond),
	})
	if err != nil {
		return fmt.Errorf("list due requests: %w", err)
	}
	for _, ar := range due {
		var typ audit.Type
		var before store.AccessRequest
		ar, err := s.Update(ctx, ar.ID, func(cur *store.AccessRequest) error {
			next, t, err := Expire(*cur, now)
			if err != nil {
				return err
			}
			before, typ, *cur = *cur, t, next
			return nil
		})
		if errors.Is(err, ErrNotDue) {
			continue
		}
		if err != nil {
			s.log.Error("request lifecycle", "request", ar.ID, "err", err)
			continue
		}
		if err := s.cfg.Audit.RecordAll(ctx, audit.Event{
			Type: typ, Actor: broker, Deployment: ar.DeploymentID,
			RequestID: ar.ID, GrantID: grantID(ar), Outcome: audit.Success, Reason: ar.EndReason,
		}); err != nil {
			s.log.Error("audit a request's end; undone until the audit log takes writes", "request", ar.ID, "err", err)
			s.undo(ctx, before, ar.Version)
			continue
		}
		s.changed()
		if typ == audit.GrantExpired {
			who := DisplayName(ar.Requester)
			s.notify(ar, notify.RequestExpired, "broker", fmt.Sprintf("%s's access to %s/%s expired", who, ar.Tenant, ar.Name))
			s.comment(ar, fmt.Sprintf("Tether: access of %s to %s/%s **expired**.", who, ar.Tenant, ar.Name))
		}
	}
	return nil
}
