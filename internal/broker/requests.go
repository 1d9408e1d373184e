package broker

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tetherhq/tether/internal/approval"
	"github.com/tetherhq/tether/internal/names"

	"github.com/google/uuid"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/access"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/ghub"
	"github.com/tetherhq/tether/internal/identity"
	"github.com/tetherhq/tether/internal/source/registry"
	"github.com/tetherhq/tether/internal/store"
	"github.com/tetherhq/tether/policy"
)

// The access-request API: each handler decodes, authorizes, calls the
// lifecycle (package access) and encodes. The rules live in package
// access; this file maps its refusals to the API's answers.

const (
	// DefaultPendingTimeout is how long a request waits for its reviews.
	DefaultPendingTimeout = access.DefaultPendingTimeout
	// maxCommentLen bounds a comment or a reason given for a change.
	maxCommentLen = access.MaxCommentLen
	// maxWait bounds a long poll of GET /api/v1/requests/{id}.
	maxWait = 60 * time.Second
)

// knownScopes are the data sources' scopes and the network change's.
var knownScopes = append(registry.Scopes(), names.ScopePeering)

// person is how the store keeps who acted.
func person(p identity.Principal) store.Person {
	return store.Person{Subject: p.Subject, Email: p.Email, Issuer: p.Issuer, Tenant: p.Tenant, Roles: p.Roles}
}

func displayName(q store.Person) string { return access.DisplayName(q) }

// caller is who calls r, for the lifecycle.
func caller(r *http.Request) access.Caller {
	return access.Caller{Person: person(principalFrom(r.Context())), Actor: actorOf(r), Source: audit.Source{IP: r.RemoteAddr}}
}

// newAccess is the broker's request lifecycle: over its store, audited in
// its log, signed with its key, telling its long polls, data-plane cache,
// webhooks, tickets, metrics and agents.
func (b *Broker) newAccess() *access.Service {
	return access.New(access.Config{
		Store:          b.store,
		Audit:          accessAudit{b},
		Policy:         b.policy,
		Sign:           b.issueGrant,
		Now:            b.now,
		PendingTimeout: b.cfg.PendingTimeout,
		Logger:         b.cfg.Logger,
		Hooks: access.Hooks{
			Stored:   func() { b.changeGen.Add(1) }, // cached data-plane lookups go at once
			Changed:  b.changed,
			Notify:   b.notifyRequest,
			Comment:  b.commentTicket,
			Granted:  b.metrics.grants.Inc,
			Revoking: b.teardownOnRevoke,
			Revoked: func(ctx context.Context, ar store.AccessRequest) map[string]any {
				cut := b.pushRevocation(ctx, ar)
				return map[string]any{"cut_off": cut.CutOff, "killed": cut.Killed, "pushed": cut.Pushed}
			},
			StoreFailed: b.storeFailed,
		},
	})
}

// accessAudit records the lifecycle's events in the broker's audit log,
// telling the API's edge of each refusal recorded ([noteRecorded]); events
// of changes that stand without them wait in the broker's backlog.
type accessAudit struct{ b *Broker }

func (a accessAudit) RecordAll(ctx context.Context, es ...audit.Event) error {
	if err := a.b.auditLog.RecordAll(ctx, es...); err != nil {
		return err
	}
	for _, e := range es {
		noteRecorded(ctx, e)
	}
	return nil
}

func (a accessAudit) Defer(e audit.Event) bool { return a.b.backlog.add(e) }

// accessError is the API's answer to a refusal of the lifecycle; any other
// error passes unchanged.
func accessError(err error) error {
	var e *access.Error
	if !errors.As(err, &e) {
		return err
	}
	switch e.Code {
	case access.CodePolicyDenied:
		return errorf(http.StatusForbidden, "policy_denied", "%s", e.Message)
	case access.CodePolicyError:
		return errorf(http.StatusInternalServerError, "policy_error", "%s", e.Message)
	case access.CodeBreakGlassNeedSev1:
		return errorf(http.StatusForbidden, "breakglass_needs_sev1", "%s", e.Message)
	case access.CodeDurationTooLong:
		return errorf(http.StatusForbidden, "duration_too_long", "%s", e.Message)
	case access.CodeNoScope:
		return errorf(http.StatusForbidden, "no_scope", "%s", e.Message)
	case access.CodeNotPending:
		return errorf(http.StatusConflict, "not_pending", "%s", e.Message)
	case access.CodeAlreadyReviewed:
		return errorf(http.StatusConflict, "already_reviewed", "%s", e.Message)
	case access.CodeReviewNotNeeded:
		return errorf(http.StatusConflict, "review_not_needed", "%s", e.Message)
	case access.CodePlanDigestMismatch:
		return errorf(http.StatusConflict, "plan_digest_mismatch", "%s", e.Message)
	case access.CodeNotRequester:
		return errorf(http.StatusForbidden, "not_requester", "%s", e.Message)
	case access.CodeNotAllowedToRevoke:
		return errorf(http.StatusForbidden, "not_allowed_to_revoke", "%s", e.Message)
	case access.CodeNotActive:
		return errorf(http.StatusConflict, "not_active", "%s", e.Message)
	case access.CodeNotApproved:
		return errorf(http.StatusConflict, "not_approved", "%s", e.Message)
	case access.CodeAgentUnpaired:
		return errorf(http.StatusConflict, "agent_unpaired", "%s", e.Message)
	case access.CodeRequestNotFound:
		return errorf(http.StatusNotFound, "request_not_found", "%s", e.Message)
	case access.CodeBusy:
		return errorf(http.StatusConflict, "busy", "%s", e.Message)
	case access.CodeAuditUnavailable:
		return errorf(http.StatusInternalServerError, "audit_unavailable", "%s", e.Message)
	case access.CodeRevocationUnrecorded:
		return errorf(http.StatusInternalServerError, "revocation_unrecorded", "%s", e.Message)
	case access.CodeProofRequired:
		return errorf(http.StatusForbidden, "approval_proof_required", "%s", e.Message)
	case access.CodeStatementMismatch:
		return errorf(http.StatusConflict, "statement_mismatch", "%s", e.Message)
	case access.CodePermitGone:
		return errorf(http.StatusConflict, "permit_gone", "%s", e.Message)
	case access.CodeWindowOver:
		return errorf(http.StatusConflict, "approved_window_over", "%s", e.Message)
	}
	return fmt.Errorf("access: %w", err) // a code this table lacks: a 500
}

// TicketSource verifies the tickets requests cite, for the policy.
type TicketSource interface {
	// Ticket returns ref as the policy is to see it. A ticket the source
	// cannot vouch for comes back unverified, with why; an error refuses
	// the request (a ticket that cannot be checked is never taken as fine).
	Ticket(ctx context.Context, ref string) (t policy.Ticket, unverified string, err error)
}

// githubTickets verifies tickets at GitHub.
type githubTickets struct{ gh *ghub.Client }

func (g githubTickets) Ticket(ctx context.Context, ref string) (policy.Ticket, string, error) {
	t, err := g.gh.Ticket(ctx, ref)
	if err != nil {
		return policy.Ticket{}, "", ticketError(ref, err)
	}
	return policy.Ticket{Ref: t.Ref, Verified: true, State: t.State, Labels: t.Labels, Assignees: t.Assignees}, "", nil
}

// noTicketSource is why a ticket goes unverified on a broker without one.
const noTicketSource = `no ticket source is configured: this broker has no "github" configuration, so it cannot read the ticket's state or labels (an operator sets "github" in the broker config)`

// tickets is where the tickets requests cite are verified: GitHub when
// configured, else what the dev wiring set (b.tickets), else nothing.
func (b *Broker) ticketSource() TicketSource {
	if b.github != nil {
		return githubTickets{b.github}
	}
	return b.tickets
}

// policyTicket is what the policy is told of a cited ticket, and why it
// is unverified if it is.
func (b *Broker) policyTicket(ctx context.Context, ref string) (*policy.Ticket, string, error) {
	src := b.ticketSource()
	if src == nil {
		return &policy.Ticket{Ref: ref}, noTicketSource, nil
	}
	t, unverified, err := src.Ticket(ctx, ref)
	if err != nil {
		return nil, "", err
	}
	return &t, unverified, nil
}

func (b *Broker) handleCreateRequest(w http.ResponseWriter, r *http.Request) error {
	var req brokerapi.CreateAccessRequest
	if err := decodeJSON(w, r, brokerapi.MaxBody, &req); err != nil {
		return err
	}
	ar, err := b.createRequest(r, req)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, b.requestView(ar))
	return nil
}

// createRequest checks and creates r's caller's access request, as the
// API and the web console's request form both do: the same checks, the
// policy's decision, audit events and refusals.
func (b *Broker) createRequest(r *http.Request, req brokerapi.CreateAccessRequest) (store.AccessRequest, error) {
	ctx := r.Context()
	p := principalFrom(ctx)
	tenant, name, ok := strings.Cut(req.Deployment, "/")
	if !ok {
		return store.AccessRequest{}, errorf(http.StatusBadRequest, "invalid_deployment", "deployment %q: want TENANT/NAME, such as acme/prod", req.Deployment)
	}
	if err := validateDeploymentName(tenant, name, ""); err != nil {
		return store.AccessRequest{}, err
	}
	scopes, err := checkScopes(req.Scopes)
	if err != nil {
		return store.AccessRequest{}, err
	}
	dur, err := time.ParseDuration(req.Duration)
	if err != nil || dur < access.MinDuration || dur > access.MaxGrantDuration {
		return store.AccessRequest{}, errorf(http.StatusBadRequest, "invalid_duration", "duration %q: want a duration from 1m to %v, such as 30m or 2h", req.Duration, access.MaxGrantDuration)
	}
	reason := strings.TrimSpace(req.Reason)
	if reason == "" || len(reason) > access.MaxReasonLen {
		return store.AccessRequest{}, errorf(http.StatusBadRequest, "invalid_reason", "reason: want why you need access, 1 to %d characters", access.MaxReasonLen)
	}
	if req.Ticket != "" {
		if _, err := ghub.ParseTicketRef(req.Ticket); err != nil {
			return store.AccessRequest{}, errorf(http.StatusBadRequest, "invalid_ticket", "%v", err)
		}
	}
	d, err := b.store.GetDeploymentByName(ctx, tenant, name)
	if errors.Is(err, store.ErrNotFound) {
		return store.AccessRequest{}, errorf(http.StatusNotFound, "deployment_not_found", "no deployment %s/%s: 'broker deployment list' shows them", tenant, name)
	}
	if err != nil {
		return store.AccessRequest{}, fmt.Errorf("get deployment: %w", err)
	}
	if !p.CanActOnTenant(d.Tenant) {
		return store.AccessRequest{}, errorf(http.StatusForbidden, "wrong_tenant", "you may not act on tenant %s", d.Tenant)
	}
	c := access.Create{
		Caller: caller(r), Deployment: d, Scopes: scopes, Duration: dur, Reason: reason,
		Ticket: req.Ticket, BreakGlass: req.BreakGlass,
	}
	action := policy.ActionAccess
	if slices.Contains(scopes, names.ScopePeering) {
		action = policy.ActionPeering
		if d.Settings.Network == nil {
			return store.AccessRequest{}, errorf(http.StatusConflict, "no_network_config", "deployment %s/%s has no network configuration: an admin sets it first ('broker network configure --deployment %s/%s …')", d.Tenant, d.Name, d.Tenant, d.Name)
		}
		if c.Network, err = peeringFromAPI(req.Network); err != nil {
			return store.AccessRequest{}, err
		}
		// Only what is registered to the deployment's tenant.
		if err := b.checkNetworkRequest(ctx, d.Tenant, d.Settings.Network, c.Network); err != nil {
			return store.AccessRequest{}, err
		}
		c.Plan = func(ctx context.Context, id string) (*store.NetworkPlan, error) {
			return b.planNetworkChange(ctx, d, c.Network, id, displayName(c.Person))
		}
	} else if req.Network != nil {
		return store.AccessRequest{}, errorf(http.StatusBadRequest, "unexpected_network", "network is only for a network:peering request")
	} else if d.Agent == nil {
		return store.AccessRequest{}, errorf(http.StatusConflict, "agent_unpaired", "deployment %s/%s has no paired agent, so no access to it is possible yet", d.Tenant, d.Name)
	}

	c.Input = policy.Input{
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
		Network:         policyNetwork(c.Network),
	}
	// Policy input from GitHub: any failure refuses the request; a
	// ticket or team that cannot be checked is never taken as fine.
	if req.Ticket != "" {
		var unverified string
		if c.Input.Ticket, unverified, err = b.policyTicket(ctx, req.Ticket); err != nil {
			return store.AccessRequest{}, err
		}
		if req.BreakGlass {
			if err := access.BreakGlassTicket(req.Ticket, unverified); err != nil {
				return store.AccessRequest{}, accessError(err)
			}
		}
	}
	if b.github != nil && p.GitHubLogin != "" {
		teams, err := b.github.Teams(ctx, p.GitHubLogin)
		if err != nil {
			return store.AccessRequest{}, errorf(http.StatusBadGateway, "github_unavailable", "could not look up your GitHub teams, which the policy reads: %v", err)
		}
		c.Input.Requester.GitHubTeams = teams
	}
	ar, err := b.access.Create(ctx, c)
	if err != nil {
		return ar, accessError(err)
	}
	return ar, nil
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
		Labels: d.Settings.Labels,
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

// update applies change to the stored request, retrying when another
// broker or request changed it first ([access.Service.Update]).
func (b *Broker) update(ctx context.Context, id string, change func(*store.AccessRequest) error) (store.AccessRequest, error) {
	ar, err := b.access.Update(ctx, id, change)
	return ar, accessError(err)
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
		cur, err := b.requestOf(r)
		if err != nil {
			return err
		}
		if !approve && (body.Statement != "" || body.Proof != "") {
			return errorf(http.StatusBadRequest, "invalid_review", "a denial carries no approval statement or proof")
		}
		if body.Statement != "" || body.Proof != "" {
			if err := b.checkProof(ctx, principalFrom(ctx), body.Statement, body.Proof); err != nil {
				return b.refuseReview(ctx, r, cur, "approval_proof_invalid", err.Error())
			}
		}
		ar, err := b.review(r, cur, access.Review{Approve: approve, Comment: comment, PlanDigest: body.PlanDigest, Statement: body.Statement, Proof: body.Proof})
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, b.requestView(ar))
		return nil
	}
}

// review applies r's caller's review of cur, as the API and the web
// console both do: a review refused for who reviews is an authorization
// failure, audited as one.
func (b *Broker) review(r *http.Request, cur store.AccessRequest, rv access.Review) (store.AccessRequest, error) {
	ctx := r.Context()
	ar, err := b.access.Review(ctx, cur, caller(r), rv)
	var ae *access.Error
	if errors.As(err, &ae) {
		switch ae.Code {
		case access.CodeSelfReview:
			return ar, b.refuseReview(ctx, r, cur, "self_review", ae.Message)
		case access.CodeNotAReviewer:
			return ar, b.refuseReview(ctx, r, cur, "not_a_reviewer", ae.Message)
		}
	}
	if err != nil {
		return ar, accessError(err)
	}
	return ar, nil
}

// maxProofAge bounds how long before an approval its proof may have been
// signed: the ceremony is a sign-in just before the approval is sent.
const maxProofAge = 10 * time.Minute

// checkProof verifies a customer approver's proof of an approval
// statement: an ID token from the caller's own identity provider, about
// the caller, fresh, whose nonce is the digest of the statement.
func (b *Broker) checkProof(ctx context.Context, p identity.Principal, statement, proof string) error {
	if statement == "" || proof == "" {
		return errors.New("an approval proof comes with the statement it signs: send both, or neither")
	}
	if len(statement) > brokerapi.MaxBody || len(proof) > 16<<10 {
		return errors.New("the approval statement or proof is too long")
	}
	// The signature, issuer, audience and expiry, as for a login; bounded
	// even if the caller's context is not.
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	q, err := b.verifier.Verify(ctx, proof)
	if err != nil {
		return fmt.Errorf("the approval proof is not a valid ID token of a trusted identity provider: %v", err)
	}
	if q.Issuer != p.Issuer || q.Subject != p.Subject {
		return fmt.Errorf("the approval proof is %s's at %s, not yours: sign it yourself", q.Subject, q.IssuerName)
	}
	if subtle.ConstantTimeCompare([]byte(q.Nonce), []byte(approval.Digest([]byte(statement)))) != 1 {
		return errors.New("the approval proof's nonce is not the digest of the statement sent with it: sign the statement you send")
	}
	if age := b.now().Sub(q.IssuedAt); age > maxProofAge {
		return fmt.Errorf("the approval proof was signed %s ago, over the %s limit: approve again", age.Round(time.Second), maxProofAge)
	}
	return nil
}

// handleApprovalStatement answers the statement a customer approver
// signs to approve a request: the terms other approvers signed, or the
// narrowed ones asked for.
func (b *Broker) handleApprovalStatement(w http.ResponseWriter, r *http.Request) error {
	var body brokerapi.ApprovalStatementBody
	if err := decodeJSON(w, r, brokerapi.MaxBody, &body); err != nil {
		return err
	}
	var dur time.Duration
	if body.Duration != "" {
		var err error
		if dur, err = time.ParseDuration(body.Duration); err != nil || dur <= 0 {
			return errorf(http.StatusBadRequest, "invalid_duration", "duration %q: want a Go duration such as 30m or 1h", truncate(body.Duration, 40))
		}
	}
	ar, err := b.requestOf(r)
	if err != nil {
		return err
	}
	if ar.Network != nil {
		// The broker carries a network change out itself: no agent
		// checks a signature, and the plan digest binds the approval.
		writeJSON(w, http.StatusOK, brokerapi.ApprovalStatement{Unsigned: "a network change is approved by its plan digest: the broker, not an agent, carries it out"})
		return nil
	}
	d, err := b.store.GetDeployment(r.Context(), ar.DeploymentID)
	if err != nil {
		return fmt.Errorf("get deployment: %w", err)
	}
	var agentID string
	if d.Agent != nil {
		agentID = d.Agent.ID
	}
	var scopes []string
	if len(body.Scopes) > 0 {
		scopes = body.Scopes
	}
	st, err := access.ProposeTerms(ar, agentID, dur, scopes, b.now())
	if err != nil {
		return accessError(err)
	}
	canon, err := st.Canonical()
	if err != nil {
		return fmt.Errorf("approval statement: %w", err)
	}
	p := principalFrom(r.Context())
	writeJSON(w, http.StatusOK, brokerapi.ApprovalStatement{
		Statement: string(canon), Digest: approval.Digest(canon), Issuer: p.Issuer, ClientID: b.ceremonyClient(p),
		Scopes: st.Scopes, NotBefore: st.NotBefore, NotAfter: st.NotAfter, Agent: st.Agent,
	})
	return nil
}

// ceremonyClient is the client ID the CLI signs with at p's identity
// provider: the one it logs in with there.
func (b *Broker) ceremonyClient(p identity.Principal) string {
	for _, ic := range b.identity.Issuers {
		if ic.IssuerURL == p.Issuer {
			return ic.CLIClient()
		}
	}
	return ""
}

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

func (b *Broker) handleCancelRequest(w http.ResponseWriter, r *http.Request) error {
	cur, err := b.requestOf(r)
	if err != nil {
		return err
	}
	ar, err := b.access.Cancel(r.Context(), cur.ID, caller(r))
	if err != nil {
		return accessError(err)
	}
	writeJSON(w, http.StatusOK, b.requestView(ar))
	return nil
}

func (b *Broker) handleRevokeRequest(w http.ResponseWriter, r *http.Request) error {
	var body brokerapi.RevokeBody
	if err := decodeJSON(w, r, brokerapi.MaxBody, &body); err != nil {
		return err
	}
	reason := strings.TrimSpace(body.Reason)
	if reason == "" || len(reason) > maxCommentLen {
		return errorf(http.StatusBadRequest, "reason_required", "a revocation needs a reason (--reason), at most %d characters", maxCommentLen)
	}
	cur, err := b.requestOf(r)
	if err != nil {
		return err
	}
	ar, err := b.access.Revoke(r.Context(), cur.ID, caller(r), reason)
	if err != nil {
		return accessError(err)
	}
	writeJSON(w, http.StatusOK, b.requestView(ar))
	return nil
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
	ars, err := b.visibleRequests(ctx, p, f)
	if err != nil {
		return err
	}
	out := brokerapi.ListAccessRequests{Requests: make([]brokerapi.AccessRequest, 0, len(ars))}
	for _, ar := range ars {
		out.Requests = append(out.Requests, b.requestView(ar))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// visibleRequests lists the requests f selects that p may see: a
// customer's own tenant's only, and with f.Requester only p's own. The
// API's list and the web console's inbox both list through it.
func (b *Broker) visibleRequests(ctx context.Context, p identity.Principal, f store.RequestFilter) ([]store.AccessRequest, error) {
	if p.Tenant != "" {
		f.Tenant = p.Tenant // a customer sees its own tenant's requests only
	}
	ars, err := b.store.ListRequests(ctx, f)
	if err != nil {
		return nil, fmt.Errorf("list requests: %w", err)
	}
	out := ars[:0]
	for _, ar := range ars {
		if f.Requester != "" && ar.Requester.Issuer != p.Issuer {
			continue
		}
		if p.CanActOnTenant(ar.Tenant) {
			out = append(out, ar)
		}
	}
	return out, nil
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
	dec := access.Decision(ar)
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
		for _, rv := range access.Missing(ar) {
			v.Waiting = append(v.Waiting, access.Describe(rv))
		}
	}
	if g := ar.Grant; g != nil {
		v.Grant = &brokerapi.Grant{ID: g.ID, Scopes: g.Scopes, NotBefore: g.NotBefore.UTC(), Expiry: g.Expiry.UTC()}
	}
	return v
}
