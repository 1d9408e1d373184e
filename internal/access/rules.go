// Package access is the access-request lifecycle as plain Go: the states
// a request goes through, the hard rules no policy can lift, review
// counting, grant issuance and expiry.
//
// The rules are pure functions over a [store.AccessRequest] and the time
// (this file): [Terms] turns the policy's decision into what may be
// granted, [ApplyReview], [Cancel], [Revoke] and [Expire] each decide one
// transition. A [Service] loads and stores requests through a [Store],
// records the audit events of every change through a [Recorder] before
// anyone is answered, and signs grants; it knows nothing of HTTP, the
// tailnet or the identity provider, so the broker's handlers only decode,
// authorize, call and encode.
//
// The states:
//
//	pending ──review (last approval)──► approved ──grant signed──► active ──► expired
//	   │  └─review (denial)──► denied                               └──revoke──► revoked
//	   ├──cancel (the requester)──► cancelled
//	   └──nobody reviewed it in time──► timed_out
//
// "approved" lasts only inside the write that signs the grant; a request
// the policy approves without reviews goes from pending to active.
package access

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tetherhq/tether/internal/names"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/grant"
	"github.com/tetherhq/tether/internal/store"
	"github.com/tetherhq/tether/policy"
)

// Hard limits no policy can lift.
const (
	// MaxGrantDuration caps every grant, whatever the policy allows.
	MaxGrantDuration = 12 * time.Hour
	// MaxBreakGlassDuration caps a break-glass grant.
	MaxBreakGlassDuration = time.Hour
	// BreakGlassReviews is how many distinct internal reviewers a
	// break-glass request needs at least.
	BreakGlassReviews = 2
	// DefaultPendingTimeout is how long a request waits for its reviews.
	DefaultPendingTimeout = 24 * time.Hour
	// MinDuration is the shortest grant one may ask for.
	MinDuration = time.Minute
	// MaxReasonLen bounds a request's reason.
	MaxReasonLen = 1000
	// MaxCommentLen bounds a review's comment and a revocation's reason.
	MaxCommentLen = 2000
)

// Error is a refusal by the lifecycle. Code is stable (the broker's API
// answers it, with an HTTP status of its choosing); Message says what to
// do about it.
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Message }

func refuse(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// The codes of [Error].
const (
	CodePolicyDenied       = "policy_denied"         // the policy said no
	CodePolicyError        = "policy_error"          // the policy failed or asked for what cannot be
	CodeBreakGlassNeedSev1 = "breakglass_needs_sev1" // break-glass without a verified sev1 ticket
	CodeDurationTooLong    = "duration_too_long"     // longer than the policy or the hard cap allows
	CodeNoScope            = "no_scope"              // the policy grants none of the scopes asked for
	CodeNotPending         = "not_pending"           // a review or cancellation of a request no longer pending
	CodeSelfReview         = "self_review"           // the requester reviewing their own request
	CodeAlreadyReviewed    = "already_reviewed"      // a reviewer counts once
	CodeNotAReviewer       = "not_a_reviewer"        // the review fills none of the required reviews
	CodeReviewNotNeeded    = "review_not_needed"     // an approval of a kind no longer missing
	CodePlanDigestMismatch = "plan_digest_mismatch"  // the reviewer saw another network plan
	CodeNotRequester       = "not_requester"         // a cancellation by someone else
	CodeNotAllowedToRevoke = "not_allowed_to_revoke"
	CodeNotActive          = "not_active"     // a revocation of a request not approved or active
	CodeNotApproved        = "not_approved"   // the request changed while its grant was issued
	CodeAgentUnpaired      = "agent_unpaired" // no agent to sign the grant for
	CodeRequestNotFound    = "request_not_found"
	CodeBusy               = "busy"              // too much contention on one request
	CodeAuditUnavailable   = "audit_unavailable" // the change's event could not be written
)

// SamePerson reports whether two people are one: the same subject at the
// same issuer.
func SamePerson(p, q store.Person) bool {
	return p.Subject == q.Subject && p.Issuer == q.Issuer
}

// IsInternal reports whether p is vendor staff who may review internally:
// a reviewer or an admin of the vendor's issuer.
func IsInternal(p store.Person) bool {
	return p.Tenant == "" && (slices.Contains(p.Roles, names.RoleReviewer) || slices.Contains(p.Roles, names.RoleAdmin))
}

// DisplayName is how a person is named in events, messages and grants.
func DisplayName(q store.Person) string {
	if q.Email != "" {
		return q.Email
	}
	return q.Subject
}

// Decision reads a request's stored policy decision.
func Decision(ar store.AccessRequest) policy.Decision {
	var d policy.Decision
	json.Unmarshal(ar.Decision, &d)
	d.MaxDuration = time.Duration(d.MaxDurationSeconds) * time.Second
	return d
}

// GrantTerms are what the hard rules let a request have.
type GrantTerms struct {
	// Reviews are the approvals required before a grant; none means the
	// request is approved at once.
	Reviews []policy.Review
	// Scopes are those asked for that the policy allows.
	Scopes []string
	// MaxDuration is the longest grant.
	MaxDuration time.Duration
}

// Terms applies what no policy can lift to the policy's decision of an
// allowed request: reviews count only within the deployment's own tenant,
// break-glass needs a verified sev1 ticket and two internal reviewers for
// at most an hour, every grant is capped, and the granted scopes are what
// was asked and what the policy allows.
func Terms(tenant string, breakGlass bool, ticket *policy.Ticket, requested []string, dec policy.Decision) (GrantTerms, error) {
	var t GrantTerms
	for _, rv := range dec.RequiredReviews {
		switch rv.Role {
		case names.ReviewApprover:
			// Only the deployment's own tenant approves it, whatever the
			// policy named.
			rv.Tenant = tenant
		case names.ReviewInternal:
			rv.Tenant = ""
		default:
			return GrantTerms{}, refuse(CodePolicyError, "the policy asked for reviews by %q, which the broker does not know, so the request is refused", rv.Role)
		}
		if rv.Count < 1 {
			return GrantTerms{}, refuse(CodePolicyError, "the policy asked for %d reviews, so the request is refused", rv.Count)
		}
		t.Reviews = append(t.Reviews, rv)
	}
	t.MaxDuration = min(dec.MaxDuration, MaxGrantDuration)
	if breakGlass {
		if ticket == nil || !ticket.Verified || !slices.Contains(ticket.Labels, "sev1") {
			return GrantTerms{}, refuse(CodeBreakGlassNeedSev1, "break-glass needs a verified GitHub ticket labelled sev1 (--ticket owner/repo#N)")
		}
		internal := 0
		for _, rv := range t.Reviews {
			if rv.Role == names.ReviewApprover {
				return GrantTerms{}, refuse(CodePolicyError, "the policy asked for customer reviews of a break-glass request, which skips them by definition")
			}
			internal += rv.Count
		}
		if internal < BreakGlassReviews {
			t.Reviews = []policy.Review{{Role: names.ReviewInternal, Count: BreakGlassReviews}}
		}
		t.MaxDuration = min(t.MaxDuration, MaxBreakGlassDuration)
	}
	for _, s := range requested {
		if slices.Contains(dec.Scopes, s) {
			t.Scopes = append(t.Scopes, s)
		}
	}
	if len(t.Scopes) == 0 {
		return GrantTerms{}, refuse(CodeNoScope, "the policy grants none of the scopes asked for (%s)", strings.Join(requested, ", "))
	}
	return t, nil
}

// BreakGlassTicket refuses a break-glass request before the policy when
// its ticket cannot be verified at all, saying why (unverified, as a
// ticket source explains it) rather than letting the policy report a
// ticket "not labelled sev1" that nobody could read.
func BreakGlassTicket(ref, unverified string) error {
	if unverified == "" {
		return nil
	}
	return refuse(CodeBreakGlassNeedSev1, "break-glass needs a verified ticket labelled sev1, and ticket %s cannot be verified: %s", ref, unverified)
}

// Missing says, per required review, how many more approvals it needs. A
// customer approval counts only from the required tenant.
//
// Customer approvals count only when they signed the same terms (the
// latest signed statement, [CurrentTerms]): the agent serves a grant only
// with enough proofs of the very terms it carries.
func Missing(ar store.AccessRequest) []policy.Review {
	var out []policy.Review
	_, current, _ := CurrentTerms(ar)
	for _, rv := range Decision(ar).RequiredReviews {
		got := 0
		for _, x := range ar.Reviews {
			if x.Approve && x.Role == rv.Role && (rv.Role != names.ReviewApprover || x.Reviewer.Tenant == rv.Tenant) && countsToward(x, current) {
				got++
			}
		}
		if got < rv.Count {
			out = append(out, policy.Review{Tenant: rv.Tenant, Role: rv.Role, Count: rv.Count - got})
		}
	}
	return out
}

// ReviewRole is the role of reviews p's review fills, for a request of
// tenant needing reviews, or "" when it fills none.
func ReviewRole(p store.Person, tenant string, reviews []policy.Review) string {
	for _, rv := range reviews {
		switch {
		case rv.Role == names.ReviewApprover && p.Tenant == tenant && slices.Contains(p.Roles, names.RoleApprover):
			return names.ReviewApprover
		case rv.Role == names.ReviewInternal && IsInternal(p):
			return names.ReviewInternal
		}
	}
	return ""
}

// Describe says what a missing review still needs, for people.
func Describe(rv policy.Review) string {
	who := "vendor reviewers or admins"
	if rv.Role == names.ReviewApprover {
		who = "approvers of tenant " + rv.Tenant
		if rv.Count == 1 {
			who = "approver of tenant " + rv.Tenant
		}
	} else if rv.Count == 1 {
		who = "vendor reviewer or admin"
	}
	if rv.Count == 1 {
		article := "a "
		if rv.Role == names.ReviewApprover {
			article = "an "
		}
		return fmt.Sprintf("1 more approval from %s%s", article, who)
	}
	return fmt.Sprintf("%d more approvals from %s", rv.Count, who)
}

// Waiting says what a pending request waits for, or "nothing".
func Waiting(ar store.AccessRequest) string {
	var parts []string
	for _, rv := range Missing(ar) {
		parts = append(parts, Describe(rv))
	}
	if len(parts) == 0 {
		return "nothing"
	}
	return strings.Join(parts, " and ")
}

// Review is one person's verdict on a request.
type Review struct {
	Reviewer store.Person
	Approve  bool
	Comment  string // required for a denial
	// PlanDigest, when set, is the digest of the network plan the
	// reviewer was shown; it must be the request's.
	PlanDigest string
	// Statement is the canonical approval statement a customer approver
	// signed and Proof the ID token whose nonce is its digest, verified by
	// the caller; a customer's approval of an agent grant needs both.
	Statement string
	Proof     string
	// Agent is the deployment's current agent, which the statement must
	// name.
	Agent string
}

// ApplyReview decides a review: it returns the request with the review
// counted and the role it counted as, denied on a denial and approved once
// no approval is missing. Nobody reviews their own request, a reviewer
// counts once, and a review counts only for a required review of the
// reviewer's kind (a customer's only for the deployment's own tenant).
func ApplyReview(ar store.AccessRequest, rev Review, now time.Time) (store.AccessRequest, string, error) {
	if ar.State != store.StatePending {
		return ar, "", refuse(CodeNotPending, "request %s is %s, not pending: it takes no more reviews", ar.ID, ar.State)
	}
	if SamePerson(rev.Reviewer, ar.Requester) {
		return ar, "", refuse(CodeSelfReview, "nobody reviews their own request")
	}
	// Any required review may be reviewed (a denial counts even when no
	// approval of that kind is still missing).
	role := ReviewRole(rev.Reviewer, ar.Tenant, Decision(ar).RequiredReviews)
	signed := role == names.ReviewApprover && rev.Approve && ar.Network == nil
	if signed {
		if rev.Statement == "" || rev.Proof == "" {
			return ar, "", refuse(CodeProofRequired, "a customer approval is signed at your identity provider: run 'broker request approve %s', which asks for the statement and signs it", ar.ID)
		}
		if _, err := checkStatement(ar, rev.Agent, rev.Statement, now); err != nil {
			return ar, "", err
		}
	}
	_, current, _ := CurrentTerms(ar)
	for i, x := range ar.Reviews {
		if !SamePerson(x.Reviewer, rev.Reviewer) {
			continue
		}
		// A customer whose approval no longer counts, because another
		// approver signed other terms, may sign again.
		if signed && x.Approve && x.Role == names.ReviewApprover && x.Statement != current && x.Statement != rev.Statement {
			ar.Reviews = slices.Delete(slices.Clone(ar.Reviews), i, i+1)
			break
		}
		return ar, "", refuse(CodeAlreadyReviewed, "you reviewed request %s already; a reviewer counts once", ar.ID)
	}
	if role == "" {
		return ar, "", refuse(CodeNotAReviewer, "your review does not count for request %s: it needs %s", ar.ID, Waiting(ar))
	}
	if rev.Approve && ReviewRole(rev.Reviewer, ar.Tenant, Missing(ar)) == "" {
		return ar, "", refuse(CodeReviewNotNeeded, "request %s needs no more approvals of your kind; it is waiting for %s", ar.ID, Waiting(ar))
	}
	if err := checkPlanDigest(ar, rev.PlanDigest); err != nil {
		return ar, "", err
	}
	x := store.Review{Reviewer: rev.Reviewer, Role: role, Approve: rev.Approve, Comment: rev.Comment, At: now}
	if signed {
		x.Statement, x.Proof = rev.Statement, rev.Proof
	}
	ar.Reviews = append(slices.Clone(ar.Reviews), x)
	switch {
	case !rev.Approve:
		ar.State, ar.EndedAt, ar.EndedBy, ar.EndReason = store.StateDenied, now, DisplayName(rev.Reviewer), rev.Comment
	case len(Missing(ar)) == 0:
		ar.State = store.StateApproved
	}
	return ar, role, nil
}

// checkPlanDigest refuses a review that names a network plan digest other
// than the request's.
func checkPlanDigest(ar store.AccessRequest, digest string) error {
	if digest == "" {
		return nil
	}
	if ar.NetworkPlan == nil || ar.NetworkPlan.Digest != digest {
		have := "none"
		if ar.NetworkPlan != nil {
			have = ar.NetworkPlan.Digest
		}
		return refuse(CodePlanDigestMismatch, "you were shown plan %s but request %s's plan is %s: look at the request again ('broker request show %s') before you review it", digest, ar.ID, have, ar.ID)
	}
	return nil
}

// Cancel decides a cancellation: only the requester, only while pending.
func Cancel(ar store.AccessRequest, by store.Person, now time.Time) (store.AccessRequest, error) {
	if !SamePerson(by, ar.Requester) {
		return ar, refuse(CodeNotRequester, "only the requester may cancel request %s (a reviewer denies it instead)", ar.ID)
	}
	if ar.State != store.StatePending {
		return ar, refuse(CodeNotPending, "request %s is %s: only a pending request can be cancelled (revoke an active one)", ar.ID, ar.State)
	}
	ar.State, ar.EndedAt, ar.EndedBy, ar.EndReason = store.StateCancelled, now, DisplayName(by), "cancelled by the requester"
	return ar, nil
}

// Revoke decides a revocation: by the requester, an approver of the
// request's tenant, or vendor staff, of an approved or active request.
func Revoke(ar store.AccessRequest, by store.Person, reason string, now time.Time) (store.AccessRequest, error) {
	mayRevoke := SamePerson(by, ar.Requester) ||
		(by.Tenant == ar.Tenant && slices.Contains(by.Roles, names.RoleApprover)) ||
		IsInternal(by)
	if !mayRevoke {
		return ar, refuse(CodeNotAllowedToRevoke, "only the requester, an approver of tenant %s, a reviewer or an admin may revoke request %s", ar.Tenant, ar.ID)
	}
	if ar.State != store.StateActive && ar.State != store.StateApproved {
		return ar, refuse(CodeNotActive, "request %s is %s: only an approved or active request can be revoked", ar.ID, ar.State)
	}
	ar.State, ar.EndedAt, ar.EndedBy, ar.EndReason = store.StateRevoked, now, DisplayName(by), reason
	return ar, nil
}

// ErrNotDue is [Expire]'s answer for a request that needs nothing yet.
var ErrNotDue = errors.New("not due")

// Expire decides what time alone does to a request: a pending one times
// out, an approved or active one's grant expires. It returns the event
// type that records it, or [ErrNotDue].
func Expire(ar store.AccessRequest, now time.Time) (store.AccessRequest, audit.Type, error) {
	if due := ar.DueAt(); due.IsZero() || due.After(now) {
		return ar, "", ErrNotDue
	}
	var typ audit.Type
	switch ar.State {
	case store.StatePending:
		ar.State, typ, ar.EndReason = store.StateTimedOut, audit.RequestTimedOut, "nobody reviewed it in time"
	case store.StateApproved, store.StateActive:
		ar.State, typ, ar.EndReason = store.StateExpired, audit.GrantExpired, "the grant ran its course"
	default:
		return ar, "", ErrNotDue // a revoked network change's teardown is not ours
	}
	ar.EndedAt, ar.EndedBy = now, "broker"
	return ar, typ, nil
}

// GrantFor is the grant of an approved request for the deployment's
// current agent, with the given ID, starting at now (whole seconds). A
// network change is carried out by the broker itself within the approved
// window: its grant names no agent and is never signed.
//
// A grant customers approved has exactly the terms they signed (window
// and scopes) and carries their proofs, so that the agent can check them.
func GrantFor(ar store.AccessRequest, d store.DeploymentStatus, id string, now time.Time) (grant.Grant, error) {
	now = now.Truncate(time.Second)
	dec := Decision(ar)
	g := grant.Grant{
		ID: id, RequestID: ar.ID, Deployment: ar.DeploymentID,
		Subject: DisplayName(ar.Requester), Scopes: dec.Scopes,
		NotBefore: now, Expiry: now.Add(ar.Duration), IssuedAt: now, PolicyHash: dec.PolicyHash,
		EngineerIssuer: ar.Requester.Issuer, EngineerSubject: ar.Requester.Subject,
		BreakGlass: ar.BreakGlass,
	}
	if ar.Network != nil {
		return g, nil
	}
	if d.Agent == nil {
		return grant.Grant{}, refuse(CodeAgentUnpaired, "deployment %s/%s has no paired agent, so no grant can be issued", d.Tenant, d.Name)
	}
	g.Agent = d.Agent.ID
	if ar.Permit != "" {
		return permitGrant(g, ar, d, now)
	}
	st, current, ok := CurrentTerms(ar)
	if !ok {
		return g, nil
	}
	if st.Agent != g.Agent {
		return grant.Grant{}, refuse(CodeStatementMismatch, "deployment %s/%s's agent changed since its customer approved request %s: the approval names agent %s, and it must be approved again", d.Tenant, d.Name, ar.ID, st.Agent)
	}
	if !now.Before(st.NotAfter) {
		return grant.Grant{}, refuse(CodeWindowOver, "the window the customer approved for request %s ended at %s", ar.ID, st.NotAfter.Format(time.RFC3339))
	}
	g.Scopes, g.NotBefore, g.Expiry = st.Scopes, st.NotBefore, st.NotAfter
	for _, x := range ar.Reviews {
		if x.Approve && x.Role == names.ReviewApprover && x.Reviewer.Tenant == ar.Tenant && x.Statement == current && len(g.Proofs) < grant.MaxProofs {
			g.Proofs = append(g.Proofs, x.Proof)
		}
	}
	return g, nil
}
