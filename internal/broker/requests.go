package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/ghub"
	"github.com/tetherhq/tether/internal/identity"
	"github.com/tetherhq/tether/internal/store"
	"github.com/tetherhq/tether/policy"
)

// Hard limits no policy can lift.
const (
	// MaxGrantDuration caps every grant, whatever the policy allows.
	MaxGrantDuration = 12 * time.Hour
	// MaxBreakGlassDuration caps a break-glass grant.
	MaxBreakGlassDuration = time.Hour
	// breakGlassReviews is how many distinct internal reviewers a
	// break-glass request needs at least.
	breakGlassReviews = 2
	// DefaultPendingTimeout is how long a request waits for its reviews.
	DefaultPendingTimeout = 24 * time.Hour
	minDuration           = time.Minute
	maxReasonLen          = 1000
	maxCommentLen         = 2000
	// maxWait bounds a long poll of GET /api/v1/requests/{id}.
	maxWait = 60 * time.Second
)

// Review roles of [brokerapi.RequiredReview].
const (
	reviewApprover = "approver" // a customer approver of the request's tenant
	reviewInternal = "internal" // a vendor reviewer or admin
)

var knownScopes = []string{brokerapi.ScopeClickHouse, brokerapi.ScopePrometheus, brokerapi.ScopePeering}

// person is how the store keeps who acted.
func person(p identity.Principal) store.Person {
	return store.Person{Subject: p.Subject, Email: p.Email, Issuer: p.Issuer, Tenant: p.Tenant, Roles: p.Roles}
}

// samePerson reports whether a principal is the person: same subject at
// the same issuer.
func samePerson(p identity.Principal, q store.Person) bool {
	return p.Subject == q.Subject && p.Issuer == q.Issuer
}

func displayName(q store.Person) string {
	if q.Email != "" {
		return q.Email
	}
	return q.Subject
}

func (b *Broker) handleCreateRequest(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	p := principalFrom(ctx)
	var req brokerapi.CreateAccessRequest
	if err := decodeJSON(w, r, brokerapi.MaxBody, &req); err != nil {
		return err
	}
	tenant, name, ok := strings.Cut(req.Deployment, "/")
	if !ok {
		return errorf(http.StatusBadRequest, "invalid_deployment", "deployment %q: want TENANT/NAME, such as acme/prod", req.Deployment)
	}
	if err := validateDeploymentName(tenant, name, ""); err != nil {
		return err
	}
	scopes, err := checkScopes(req.Scopes)
	if err != nil {
		return err
	}
	dur, err := time.ParseDuration(req.Duration)
	if err != nil || dur < minDuration || dur > MaxGrantDuration {
		return errorf(http.StatusBadRequest, "invalid_duration", "duration %q: want a duration from 1m to %v, such as 30m or 2h", req.Duration, MaxGrantDuration)
	}
	reason := strings.TrimSpace(req.Reason)
	if reason == "" || len(reason) > maxReasonLen {
		return errorf(http.StatusBadRequest, "invalid_reason", "reason: want why you need access, 1 to %d characters", maxReasonLen)
	}
	if req.Ticket != "" {
		if _, err := ghub.ParseTicketRef(req.Ticket); err != nil {
			return errorf(http.StatusBadRequest, "invalid_ticket", "%v", err)
		}
	}
	d, err := b.store.GetDeploymentByName(ctx, tenant, name)
	if errors.Is(err, store.ErrNotFound) {
		return errorf(http.StatusNotFound, "deployment_not_found", "no deployment %s/%s: 'broker deployment list' shows them", tenant, name)
	}
	if err != nil {
		return fmt.Errorf("get deployment: %w", err)
	}
	if !p.CanActOnTenant(d.Tenant) {
		return errorf(http.StatusForbidden, "wrong_tenant", "you may not act on tenant %s", d.Tenant)
	}
	action := policy.ActionAccess
	var network *store.PeeringSpec
	if slices.Contains(scopes, brokerapi.ScopePeering) {
		action = policy.ActionPeering
		if d.Settings.Network == nil {
			return errorf(http.StatusConflict, "no_network_config", "deployment %s/%s has no network configuration: an admin sets it first ('broker network configure --deployment %s/%s …')", d.Tenant, d.Name, d.Tenant, d.Name)
		}
		if network, err = peeringFromAPI(req.Network); err != nil {
			return err
		}
		// Only what is registered to the deployment's tenant.
		if err := b.checkNetworkRequest(ctx, d.Tenant, d.Settings.Network, network); err != nil {
			return err
		}
	} else if req.Network != nil {
		return errorf(http.StatusBadRequest, "unexpected_network", "network is only for a network:peering request")
	} else if d.Agent == nil {
		return errorf(http.StatusConflict, "agent_unpaired", "deployment %s/%s has no paired agent, so no access to it is possible yet", d.Tenant, d.Name)
	}

	in := policy.Input{
		Requester: policy.Requester{
			Subject: p.Subject, Email: p.Email, Issuer: p.Issuer, Tenant: p.Tenant,
			Roles: p.Roles, Groups: p.Groups, GitHubLogin: p.GitHubLogin,
		},
		Deployment:      policyDeployment(d.Deployment),
		Scopes:          scopes,
		DurationSeconds: int64(dur / time.Second),
		BreakGlass:      req.BreakGlass,
		Dev:             b.cfg.Dev != nil,
		Time:            b.now().UTC(),
		Action:          action,
		Network:         policyNetwork(network),
	}
	// Policy input from GitHub: any failure refuses the request; a
	// ticket or team that cannot be checked is never taken as fine.
	if req.Ticket != "" {
		in.Ticket = &policy.Ticket{Ref: req.Ticket}
		if b.github != nil {
			t, err := b.github.Ticket(ctx, req.Ticket)
			if err != nil {
				return ticketError(req.Ticket, err)
			}
			in.Ticket = &policy.Ticket{Ref: t.Ref, Verified: true, State: t.State, Labels: t.Labels, Assignees: t.Assignees}
		}
	}
	if b.github != nil && p.GitHubLogin != "" {
		teams, err := b.github.Teams(ctx, p.GitHubLogin)
		if err != nil {
			return errorf(http.StatusBadGateway, "github_unavailable", "could not look up your GitHub teams, which the policy reads: %v", err)
		}
		in.Requester.GitHubTeams = teams
	}

	id := uuid.NewString()
	dec, err := b.decide(ctx, r, in, id, d.ID)
	if err != nil {
		return err
	}
	if !dec.Allow {
		return errorf(http.StatusForbidden, "policy_denied", "policy (%s) denies the request: %s", short(dec.PolicyHash), strings.Join(dec.Reasons, "; "))
	}
	reviews, granted, maxDur, err := b.hardRules(d.Tenant, req.BreakGlass, in.Ticket, scopes, dec)
	if err != nil {
		return err
	}
	if dur > maxDur {
		return errorf(http.StatusForbidden, "duration_too_long", "duration %v is longer than the %v allowed for this request", dur, maxDur)
	}
	dec.RequiredReviews = reviews
	dec.Scopes = granted
	// A network change is planned now, for its approvers to see and
	// approve exactly; apply refuses anything else.
	var netPlan *store.NetworkPlan
	if network != nil {
		if netPlan, err = b.planNetworkChange(ctx, d, network, id, displayName(person(p))); err != nil {
			return err
		}
	}
	decJSON, _ := json.Marshal(dec)

	now := b.now()
	ar := store.AccessRequest{
		ID: id, DeploymentID: d.ID, Tenant: d.Tenant, Name: d.Name,
		Requester: person(p), Scopes: scopes, Duration: dur, Reason: reason, Ticket: req.Ticket,
		BreakGlass: req.BreakGlass, Network: network, NetworkPlan: netPlan, State: store.StatePending, Decision: decJSON,
		PendingUntil: now.Add(b.cfg.PendingTimeout), CreatedAt: now, UpdatedAt: now, Version: 1,
	}
	// The event first: an access that cannot be audited does not begin.
	if err := b.record(ctx, audit.Event{
		Type: audit.RequestCreated, Actor: actorOf(r), Deployment: d.ID, RequestID: id,
		Source: audit.Source{IP: r.RemoteAddr}, Outcome: audit.Success, Reason: reason,
		Details: createdDetails(d.Tenant+"/"+d.Name, scopes, dur, req.Ticket, req.BreakGlass, network),
	}); err != nil {
		return err
	}
	if err := b.store.CreateRequest(ctx, ar); err != nil {
		return fmt.Errorf("create request: %w", err)
	}
	b.notifyRequest(ar, "request.created", displayName(ar.Requester), fmt.Sprintf("%s asks for %s on %s/%s for %v: %s", displayName(ar.Requester), strings.Join(scopes, ", "), d.Tenant, d.Name, dur, reason))
	if req.BreakGlass {
		if err := b.record(ctx, audit.Event{
			Type: audit.BreakglassUsed, Actor: actorOf(r), Deployment: d.ID, RequestID: id,
			Source: audit.Source{IP: r.RemoteAddr}, Outcome: audit.Success, Reason: reason,
			Details: map[string]any{"ticket": req.Ticket},
		}); err != nil {
			return err
		}
		b.notifyRequest(ar, "breakglass.used", displayName(ar.Requester), fmt.Sprintf("BREAK-GLASS: %s invoked emergency access to %s/%s citing %s, without customer approval: %s", displayName(ar.Requester), d.Tenant, d.Name, req.Ticket, reason))
	}
	if len(reviews) == 0 {
		if ar, err = b.activate(ctx, ar, "auto-approved by policy"); err != nil {
			return err
		}
	}
	b.changed()
	writeJSON(w, http.StatusCreated, b.requestView(ar))
	return nil
}

// decide asks the policy and audits its answer. A policy error refuses.
func (b *Broker) decide(ctx context.Context, r *http.Request, in policy.Input, requestID, deploymentID string) (policy.Decision, error) {
	dec, err := b.policy.Decide(ctx, in)
	ev := audit.Event{
		Type: audit.PolicyDecided, Actor: actorOf(r), Deployment: deploymentID, RequestID: requestID,
		Source: audit.Source{IP: r.RemoteAddr}, Outcome: audit.Success,
	}
	if err != nil {
		ev.Outcome, ev.Reason = audit.Failure, "policy error: "+err.Error()
		ev.Details = map[string]any{"policy_hash": b.policy.Hash()}
		if rerr := b.record(ctx, ev); rerr != nil {
			return dec, rerr
		}
		b.log.Error("policy evaluation failed", "err", err)
		return dec, errorf(http.StatusInternalServerError, "policy_error", "the policy could not decide (%v), so the request is refused", err)
	}
	if !dec.Allow {
		ev.Outcome = audit.Failure
	}
	ev.Reason = strings.Join(dec.Reasons, "; ")
	ev.Details = map[string]any{
		"policy_hash": dec.PolicyHash, "allow": dec.Allow, "required_reviews": dec.RequiredReviews,
		"max_duration": dec.MaxDuration.String(), "scopes": dec.Scopes,
	}
	if err := b.record(ctx, ev); err != nil {
		return dec, err
	}
	return dec, nil
}

// hardRules applies what no policy can lift: reviews count only within
// the deployment's own tenant, break-glass needs a sev1 ticket and two
// internal reviewers for at most an hour, every grant is capped, and the
// granted scopes are what was asked and what the policy allows.
func (b *Broker) hardRules(tenant string, breakGlass bool, ticket *policy.Ticket, requested []string, dec policy.Decision) ([]policy.Review, []string, time.Duration, error) {
	var reviews []policy.Review
	for _, rv := range dec.RequiredReviews {
		switch rv.Role {
		case reviewApprover:
			// Only the deployment's own tenant approves it, whatever the
			// policy named.
			rv.Tenant = tenant
		case reviewInternal:
			rv.Tenant = ""
		default:
			return nil, nil, 0, errorf(http.StatusInternalServerError, "policy_error", "the policy asked for reviews by %q, which the broker does not know, so the request is refused", rv.Role)
		}
		if rv.Count < 1 {
			return nil, nil, 0, errorf(http.StatusInternalServerError, "policy_error", "the policy asked for %d reviews, so the request is refused", rv.Count)
		}
		reviews = append(reviews, rv)
	}
	maxDur := min(dec.MaxDuration, MaxGrantDuration)
	if breakGlass {
		if ticket == nil || !ticket.Verified || !slices.Contains(ticket.Labels, "sev1") {
			return nil, nil, 0, errorf(http.StatusForbidden, "breakglass_needs_sev1", "break-glass needs a verified GitHub ticket labelled sev1 (--ticket owner/repo#N)")
		}
		internal := 0
		for _, rv := range reviews {
			if rv.Role == reviewApprover {
				return nil, nil, 0, errorf(http.StatusInternalServerError, "policy_error", "the policy asked for customer reviews of a break-glass request, which skips them by definition")
			}
			internal += rv.Count
		}
		if internal < breakGlassReviews {
			reviews = []policy.Review{{Role: reviewInternal, Count: breakGlassReviews}}
		}
		maxDur = min(maxDur, MaxBreakGlassDuration)
	}
	var granted []string
	for _, s := range requested {
		if slices.Contains(dec.Scopes, s) {
			granted = append(granted, s)
		}
	}
	if len(granted) == 0 {
		return nil, nil, 0, errorf(http.StatusForbidden, "no_scope", "the policy grants none of the scopes asked for (%s)", strings.Join(requested, ", "))
	}
	return reviews, granted, maxDur, nil
}

func checkScopes(in []string) ([]string, error) {
	if len(in) == 0 {
		return nil, errorf(http.StatusBadRequest, "invalid_scope", "no scope: want one or more of %s", strings.Join(knownScopes, ", "))
	}
	var out []string
	for _, s := range in {
		if !slices.Contains(knownScopes, s) {
			return nil, errorf(http.StatusBadRequest, "invalid_scope", "scope %q: want one or more of %s", s, strings.Join(knownScopes, ", "))
		}
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out, nil
}

func policyDeployment(d store.Deployment) policy.Deployment {
	pd := policy.Deployment{
		ID: d.ID, Tenant: d.Tenant, Name: d.Name, Region: d.Region,
		Labels: d.Settings.Labels, ApprovalMode: d.Settings.ApprovalMode,
	}
	if pd.ApprovalMode == "" {
		pd.ApprovalMode = "customer"
	}
	for _, w := range d.Settings.FreezeWindows {
		pd.FreezeWindows = append(pd.FreezeWindows, policy.Window{Start: w.Start, End: w.End, Reason: w.Reason})
	}
	for _, w := range d.Settings.MaintenanceWindows {
		pd.MaintenanceWindows = append(pd.MaintenanceWindows, policy.Window{Start: w.Start, End: w.End, Reason: w.Reason})
	}
	return pd
}

// policyNetwork is the policy's view of a network change; nil for access.
func policyNetwork(n *store.PeeringSpec) *policy.Network {
	if n == nil {
		return nil
	}
	return &policy.Network{
		Kind: n.Kind, AccountID: n.AccountID, Region: n.Region, VPCID: n.VPCID, RoleARN: n.RoleARN,
		RouteTableIDs: slices.Clone(n.RouteTableIDs), OutsideMaintenanceWindow: n.OutsideWindow,
	}
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

// decision reads a request's stored policy decision.
func decision(ar store.AccessRequest) policy.Decision {
	var d policy.Decision
	json.Unmarshal(ar.Decision, &d)
	d.MaxDuration = time.Duration(d.MaxDurationSeconds) * time.Second
	return d
}

// missingReviews says, per required review, how many more it needs.
func missingReviews(ar store.AccessRequest) []policy.Review {
	var out []policy.Review
	for _, rv := range decision(ar).RequiredReviews {
		got := 0
		for _, x := range ar.Reviews {
			if x.Approve && x.Role == rv.Role && (rv.Role != reviewApprover || x.Reviewer.Tenant == rv.Tenant) {
				got++
			}
		}
		if got < rv.Count {
			out = append(out, policy.Review{Tenant: rv.Tenant, Role: rv.Role, Count: rv.Count - got})
		}
	}
	return out
}

func describeReview(rv policy.Review) string {
	who := "vendor reviewers or admins"
	if rv.Role == reviewApprover {
		who = "approvers of tenant " + rv.Tenant
		if rv.Count == 1 {
			who = "approver of tenant " + rv.Tenant
		}
	} else if rv.Count == 1 {
		who = "vendor reviewer or admin"
	}
	return fmt.Sprintf("%d more approval%s from %s %s", rv.Count, plural(rv.Count), article(rv.Count), who)
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func article(n int) string {
	if n == 1 {
		return "an"
	}
	return ""
}

// reviewRole is the role of reviews a principal's review fills, for a
// request of tenant needing reviews, or "" when it fills none.
func reviewRole(p identity.Principal, tenant string, reviews []policy.Review) string {
	for _, rv := range reviews {
		switch {
		case rv.Role == reviewApprover && p.Tenant == tenant && p.HasRole(identity.RoleApprover):
			return reviewApprover
		case rv.Role == reviewInternal && isInternal(p):
			return reviewInternal
		}
	}
	return ""
}

// isInternal reports whether p is vendor staff who may review internally:
// a reviewer or an admin of the vendor's issuer.
func isInternal(p identity.Principal) bool {
	return p.Tenant == "" && (p.HasRole(identity.RoleReviewer) || p.HasRole(identity.RoleAdmin))
}

// update applies change to the stored request, retrying when another
// broker or request changed it first; change decides again on the fresh
// copy each time.
func (b *Broker) update(ctx context.Context, id string, change func(*store.AccessRequest) error) (store.AccessRequest, error) {
	for range 5 {
		ar, err := b.store.GetRequest(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			return ar, errorf(http.StatusNotFound, "request_not_found", "no request %s: 'broker request list' shows them", id)
		}
		if err != nil {
			return ar, fmt.Errorf("get request: %w", err)
		}
		if err := change(&ar); err != nil {
			return ar, err
		}
		ar.UpdatedAt = b.now()
		err = b.store.UpdateRequest(ctx, ar)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			return ar, fmt.Errorf("update request: %w", err)
		}
		ar.Version++
		// Cached data-plane lookups go at once; callers wake long polls
		// (b.changed) once the change is audited.
		b.changeGen.Add(1)
		return ar, nil
	}
	return store.AccessRequest{}, errorf(http.StatusConflict, "busy", "request %s is changing under heavy contention; try again", id)
}

func (b *Broker) loadRequest(ctx context.Context, id string) (store.AccessRequest, error) {
	if _, err := uuid.Parse(id); err != nil {
		return store.AccessRequest{}, errorf(http.StatusBadRequest, "invalid_request_id", "request %q: want a request ID (a UUID, as printed by 'broker request create')", id)
	}
	ar, err := b.store.GetRequest(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return ar, errorf(http.StatusNotFound, "request_not_found", "no request %s: 'broker request list' shows them", id)
	}
	if err != nil {
		return ar, fmt.Errorf("get request: %w", err)
	}
	return ar, nil
}

func (b *Broker) handleReview(approve bool) func(w http.ResponseWriter, r *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		ctx := r.Context()
		p := principalFrom(ctx)
		var body brokerapi.ReviewBody
		if err := decodeJSON(w, r, brokerapi.MaxBody, &body); err != nil {
			return err
		}
		comment := strings.TrimSpace(body.Comment)
		if len(comment) > maxCommentLen {
			return errorf(http.StatusBadRequest, "invalid_comment", "comment: at most %d characters", maxCommentLen)
		}
		if !approve && comment == "" {
			return errorf(http.StatusBadRequest, "comment_required", "a denial needs a comment saying why (--comment)")
		}
		id := r.PathValue("id")
		cur, err := b.requestOf(r)
		if err != nil {
			return err
		}
		d, err := b.store.GetDeployment(ctx, cur.DeploymentID)
		if err != nil {
			return fmt.Errorf("get deployment: %w", err)
		}
		var role string
		var before store.AccessRequest
		ar, err := b.update(ctx, id, func(ar *store.AccessRequest) error {
			if ar.State != store.StatePending {
				return errorf(http.StatusConflict, "not_pending", "request %s is %s, not pending: it takes no more reviews", ar.ID, ar.State)
			}
			if samePerson(p, ar.Requester) {
				return b.refuseReview(ctx, r, *ar, "self_review", "nobody reviews their own request")
			}
			for _, x := range ar.Reviews {
				if x.Reviewer.Subject == p.Subject && x.Reviewer.Issuer == p.Issuer {
					return errorf(http.StatusConflict, "already_reviewed", "you reviewed request %s already; a reviewer counts once", ar.ID)
				}
			}
			// Any required review may be reviewed (a denial counts even
			// when no approval of that kind is still missing).
			role = reviewRole(p, ar.Tenant, decision(*ar).RequiredReviews)
			if role == "" {
				return b.refuseReview(ctx, r, *ar, "not_a_reviewer", fmt.Sprintf("your review does not count for request %s: it needs %s", ar.ID, waitingText(*ar)))
			}
			if approve && reviewRole(p, ar.Tenant, missingReviews(*ar)) == "" {
				return errorf(http.StatusConflict, "review_not_needed", "request %s needs no more approvals of your kind; it is waiting for %s", ar.ID, waitingText(*ar))
			}
			if err := checkReviewDigest(*ar, body.PlanDigest); err != nil {
				return err
			}
			before = *ar
			before.Reviews = slices.Clone(ar.Reviews)
			ar.Reviews = append(ar.Reviews, store.Review{Reviewer: person(p), Role: role, Approve: approve, Comment: comment, At: b.now()})
			if !approve {
				ar.State, ar.EndedAt, ar.EndedBy, ar.EndReason = store.StateDenied, b.now(), displayName(person(p)), comment
			} else if len(missingReviews(*ar)) == 0 {
				// The last approval issues the grant in the same write.
				rec, err := b.newGrant(*ar, d)
				if err != nil {
					return err
				}
				ar.State, ar.Grant = store.StateActive, rec
			}
			return nil
		})
		if err != nil {
			return err
		}
		typ := audit.ReviewApproved
		if !approve {
			typ = audit.ReviewDenied
		}
		review := audit.Event{
			Type: typ, Actor: actor(p, roleName(role)), Deployment: ar.DeploymentID, RequestID: ar.ID,
			Source: audit.Source{IP: r.RemoteAddr}, Outcome: audit.Success, Reason: comment,
			Details: map[string]any{"counted_as": role, "state": ar.State},
		}
		if ar.NetworkPlan != nil {
			review.Details["plan_digest"] = ar.NetworkPlan.Digest // what the review approved
		}
		switch ar.State {
		case store.StateActive:
			if err := b.granted(ctx, ar, "approved by "+displayName(person(p)), review); err != nil {
				return err
			}
		default:
			// A review that cannot be audited does not count.
			if err := b.record(ctx, review); err != nil {
				b.undo(ctx, before, ar.Version)
				return err
			}
			if ar.State == store.StateDenied {
				b.notifyRequest(ar, "request.denied", displayName(person(p)), fmt.Sprintf("%s denied %s's request for %s/%s: %s", displayName(person(p)), displayName(ar.Requester), ar.Tenant, ar.Name, comment))
			}
		}
		b.changed()
		writeJSON(w, http.StatusOK, b.requestView(ar))
		return nil
	}
}

func roleName(role string) string {
	if role == reviewInternal {
		return "reviewer"
	}
	return role
}

// undo puts a request back as it was before a change stored as version
// ver, unless it changed since: a change whose audit event could not be
// written does not stand. Only changes that take no access away are
// undone (a review, a cancellation, a timeout, an expiry whose grant is
// past its own expiry anyway); a revocation stands.
func (b *Broker) undo(ctx context.Context, before store.AccessRequest, ver int64) {
	_, err := b.update(context.WithoutCancel(ctx), before.ID, func(cur *store.AccessRequest) error {
		if cur.Version != ver {
			return errChangedSince
		}
		v := cur.Version
		*cur = before
		cur.Version = v
		return nil
	})
	if err != nil {
		b.log.Error("could not undo a request change whose audit event was not written", "request", before.ID, "err", err)
	}
}

var errChangedSince = errors.New("the request changed since")

// refuseReview records a refused review and returns its 403.
func (b *Broker) refuseReview(ctx context.Context, r *http.Request, ar store.AccessRequest, code, msg string) error {
	if err := b.record(ctx, audit.Event{
		Type: audit.AuthFailed, Actor: actorOf(r), Deployment: ar.DeploymentID, RequestID: ar.ID,
		Source: audit.Source{IP: r.RemoteAddr}, Outcome: audit.Failure, Reason: code,
		Details: map[string]any{"method": r.Method, "path": r.URL.Path, "status": http.StatusForbidden, "message": msg},
	}); err != nil {
		return err
	}
	return errorf(http.StatusForbidden, code, "%s", msg)
}

func waitingText(ar store.AccessRequest) string {
	var parts []string
	for _, rv := range missingReviews(ar) {
		parts = append(parts, describeReview(rv))
	}
	if len(parts) == 0 {
		return "nothing"
	}
	return strings.Join(parts, " and ")
}

func (b *Broker) handleCancelRequest(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	p := principalFrom(ctx)
	id := r.PathValue("id")
	if _, err := b.requestOf(r); err != nil {
		return err
	}
	var before store.AccessRequest
	ar, err := b.update(ctx, id, func(ar *store.AccessRequest) error {
		if !samePerson(p, ar.Requester) {
			return errorf(http.StatusForbidden, "not_requester", "only the requester may cancel request %s (a reviewer denies it instead)", ar.ID)
		}
		if ar.State != store.StatePending {
			return errorf(http.StatusConflict, "not_pending", "request %s is %s: only a pending request can be cancelled (revoke an active one)", ar.ID, ar.State)
		}
		before = *ar
		ar.State, ar.EndedAt, ar.EndedBy, ar.EndReason = store.StateCancelled, b.now(), displayName(person(p)), "cancelled by the requester"
		return nil
	})
	if err != nil {
		return err
	}
	if err := b.record(ctx, audit.Event{
		Type: audit.RequestCancelled, Actor: actorOf(r), Deployment: ar.DeploymentID, RequestID: ar.ID,
		Source: audit.Source{IP: r.RemoteAddr}, Outcome: audit.Success,
	}); err != nil {
		b.undo(ctx, before, ar.Version)
		return err
	}
	b.changed()
	writeJSON(w, http.StatusOK, b.requestView(ar))
	return nil
}

func (b *Broker) handleRevokeRequest(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	p := principalFrom(ctx)
	var body brokerapi.RevokeBody
	if err := decodeJSON(w, r, brokerapi.MaxBody, &body); err != nil {
		return err
	}
	reason := strings.TrimSpace(body.Reason)
	if reason == "" || len(reason) > maxCommentLen {
		return errorf(http.StatusBadRequest, "reason_required", "a revocation needs a reason (--reason), at most %d characters", maxCommentLen)
	}
	id := r.PathValue("id")
	if _, err := b.requestOf(r); err != nil {
		return err
	}
	ar, err := b.update(ctx, id, func(ar *store.AccessRequest) error {
		mayRevoke := samePerson(p, ar.Requester) ||
			(p.Tenant == ar.Tenant && p.HasRole(identity.RoleApprover)) ||
			isInternal(p)
		if !mayRevoke {
			return errorf(http.StatusForbidden, "not_allowed_to_revoke", "only the requester, an approver of tenant %s, a reviewer or an admin may revoke request %s", ar.Tenant, ar.ID)
		}
		if ar.State != store.StateActive && ar.State != store.StateApproved {
			return errorf(http.StatusConflict, "not_active", "request %s is %s: only an approved or active request can be revoked", ar.ID, ar.State)
		}
		ar.State, ar.EndedAt, ar.EndedBy, ar.EndReason = store.StateRevoked, b.now(), displayName(person(p)), reason
		b.teardownOnRevoke(ar) // an applied network change comes down by itself
		return nil
	})
	if err != nil {
		return err
	}
	cut := b.pushRevocation(ctx, ar)
	details := map[string]any{"cut_off": cut.CutOff, "killed": cut.Killed, "pushed": cut.Pushed}
	ev := audit.Event{
		Type: audit.GrantRevoked, Actor: actorOf(r), Deployment: ar.DeploymentID, RequestID: ar.ID, GrantID: grantID(ar),
		Source: audit.Source{IP: r.RemoteAddr}, Outcome: audit.Success, Reason: reason, Details: details,
	}
	if err := audit.Stamp(&ev, b.now()); err != nil {
		return err
	}
	if err := b.record(ctx, ev); err != nil {
		// Unlike every other change, a revocation is never undone for
		// want of its event: the grant stays revoked (fail closed), the
		// call is not answered as done, and the event is written as soon
		// as the log takes writes again.
		if !b.backlog.add(ev) {
			b.log.Error("audit backlog full: a revocation's event is lost", "request", ar.ID)
		}
		b.changed()
		return errorf(http.StatusInternalServerError, "audit_unavailable", "request %s is revoked and its grant refused, but the audit log could not be written: the broker records the revocation as soon as it can; tell the broker's operator", ar.ID)
	}
	b.changed()
	b.notifyRequest(ar, "request.revoked", displayName(person(p)), fmt.Sprintf("%s revoked %s's access to %s/%s: %s", displayName(person(p)), displayName(ar.Requester), ar.Tenant, ar.Name, reason))
	b.commentTicket(ar, fmt.Sprintf("Tether: access of %s to %s/%s was **revoked** by %s: %s", displayName(ar.Requester), ar.Tenant, ar.Name, displayName(person(p)), reason))
	writeJSON(w, http.StatusOK, b.requestView(ar))
	return nil
}

func grantID(ar store.AccessRequest) string {
	if ar.Grant == nil {
		return ""
	}
	return ar.Grant.ID
}

func (b *Broker) handleListRequests(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	p := principalFrom(ctx)
	q := r.URL.Query()
	f := store.RequestFilter{Limit: 500}
	if s := q.Get("state"); s != "" {
		if !slices.Contains([]string{store.StatePending, store.StateApproved, store.StateActive, store.StateExpired, store.StateRevoked, store.StateDenied, store.StateCancelled, store.StateTimedOut}, s) {
			return errorf(http.StatusBadRequest, "invalid_state", "state %q: want pending, approved, active, expired, revoked, denied, cancelled or timed_out", s)
		}
		f.States = []string{s}
	}
	if m := q.Get("mine"); m != "" {
		mine, err := strconv.ParseBool(m)
		if err != nil {
			return errorf(http.StatusBadRequest, "invalid_mine", "mine %q: want true or false", m)
		}
		if mine {
			f.Requester = p.Subject
		}
	}
	if dep := q.Get("deployment"); dep != "" {
		tenant, name, ok := strings.Cut(dep, "/")
		if !ok || validateDeploymentName(tenant, name, "") != nil {
			return errorf(http.StatusBadRequest, "invalid_deployment", "deployment %q: want TENANT/NAME", dep)
		}
		d, err := b.store.GetDeploymentByName(ctx, tenant, name)
		if errors.Is(err, store.ErrNotFound) {
			return errorf(http.StatusNotFound, "deployment_not_found", "no deployment %s", dep)
		}
		if err != nil {
			return err
		}
		f.DeploymentID = d.ID
	}
	if p.Tenant != "" {
		f.Tenant = p.Tenant // a customer sees its own tenant's requests only
	}
	ars, err := b.store.ListRequests(ctx, f)
	if err != nil {
		return fmt.Errorf("list requests: %w", err)
	}
	out := brokerapi.ListAccessRequests{Requests: make([]brokerapi.AccessRequest, 0, len(ars))}
	for _, ar := range ars {
		if f.Requester != "" && ar.Requester.Issuer != p.Issuer {
			continue
		}
		if p.CanActOnTenant(ar.Tenant) {
			out.Requests = append(out.Requests, b.requestView(ar))
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (b *Broker) handleGetRequest(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	ar, err := b.requestOf(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	if ws := q.Get("wait"); ws != "" {
		wait, err := time.ParseDuration(ws)
		if err != nil || wait < 0 {
			return errorf(http.StatusBadRequest, "invalid_wait", "wait %q: want a duration up to %v, such as 30s", ws, maxWait)
		}
		version, err := strconv.ParseInt(q.Get("version"), 10, 64)
		if err != nil {
			return errorf(http.StatusBadRequest, "invalid_version", "version %q: a long poll needs the version last seen", q.Get("version"))
		}
		if ar, err = b.waitRequest(ctx, ar, version, min(wait, maxWait)); err != nil {
			return err
		}
	}
	writeJSON(w, http.StatusOK, b.requestView(ar))
	return nil
}

// waitRequest returns ar once its version differs from version, or at
// the deadline. Changes made by this broker wake it at once; others' are
// seen within a second.
func (b *Broker) waitRequest(ctx context.Context, ar store.AccessRequest, version int64, wait time.Duration) (store.AccessRequest, error) {
	// The server's write timeout would cut a long poll.
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for ar.Version == version {
		ch := b.changes()
		select {
		case <-ctx.Done():
			return ar, ctx.Err()
		case <-deadline.C:
			return ar, nil
		case <-ch:
		case <-tick.C:
		}
		fresh, err := b.store.GetRequest(ctx, ar.ID)
		if err != nil {
			return ar, fmt.Errorf("get request: %w", err)
		}
		ar = fresh
	}
	return ar, nil
}

// changed wakes every long poll.
func (b *Broker) changed() {
	b.changeGen.Add(1)
	b.changeMu.Lock()
	close(b.changeCh)
	b.changeCh = make(chan struct{})
	b.changeMu.Unlock()
}

func (b *Broker) changes() <-chan struct{} {
	b.changeMu.Lock()
	defer b.changeMu.Unlock()
	return b.changeCh
}

// requestView is a request as the API shows it (never the grant token).
func (b *Broker) requestView(ar store.AccessRequest) brokerapi.AccessRequest {
	dec := decision(ar)
	v := brokerapi.AccessRequest{
		ID: ar.ID, Deployment: ar.Tenant + "/" + ar.Name, DeploymentID: ar.DeploymentID, Tenant: ar.Tenant,
		Requester: displayName(ar.Requester), Scopes: ar.Scopes, Duration: ar.Duration.String(), Reason: ar.Reason,
		Ticket: ar.Ticket, BreakGlass: ar.BreakGlass, Network: peeringView(ar.Network), NetworkPlan: networkPlanView(ar.NetworkPlan), State: ar.State,
		Decision: brokerapi.Decision{
			Allow: dec.Allow, Reasons: dec.Reasons, MaxDuration: dec.MaxDuration.String(), Scopes: dec.Scopes, PolicyHash: dec.PolicyHash,
		},
		PendingUntil: ar.PendingUntil.UTC(), CreatedAt: ar.CreatedAt.UTC(), UpdatedAt: ar.UpdatedAt.UTC(),
		EndedAt: ar.EndedAt, EndedBy: ar.EndedBy, EndReason: ar.EndReason, Version: ar.Version,
	}
	if !v.EndedAt.IsZero() {
		v.EndedAt = v.EndedAt.UTC()
	}
	for _, rv := range dec.RequiredReviews {
		v.Decision.RequiredReviews = append(v.Decision.RequiredReviews, brokerapi.RequiredReview{Tenant: rv.Tenant, Role: rv.Role, Count: rv.Count})
	}
	for _, x := range ar.Reviews {
		v.Reviews = append(v.Reviews, brokerapi.Review{Reviewer: displayName(x.Reviewer), Tenant: x.Reviewer.Tenant, Role: x.Role, Approve: x.Approve, Comment: x.Comment, At: x.At.UTC()})
	}
	if ar.State == store.StatePending {
		for _, rv := range missingReviews(ar) {
			v.Waiting = append(v.Waiting, describeReview(rv))
		}
	}
	if g := ar.Grant; g != nil {
		v.Grant = &brokerapi.Grant{ID: g.ID, Scopes: g.Scopes, NotBefore: g.NotBefore.UTC(), Expiry: g.Expiry.UTC()}
	}
	return v
}
