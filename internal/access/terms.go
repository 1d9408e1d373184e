package access

import (
	"slices"
	"strings"
	"time"

	"github.com/tetherhq/tether/internal/approval"
	"github.com/tetherhq/tether/internal/names"
	"github.com/tetherhq/tether/internal/store"
)

// Codes of refusals about customer-signed approvals.
const (
	CodeProofRequired     = "approval_proof_required" // a customer approval without its signed statement
	CodeStatementMismatch = "statement_mismatch"      // the signed statement is not about this request
	CodeWindowOver        = "approved_window_over"    // the approved window ended before the grant
)

// maxStatementSkew is how far ahead of the broker's clock a statement's
// window may start: statements are made by the broker, so only clock
// drift between brokers separates them.
const maxStatementSkew = time.Minute

// CurrentTerms returns the statement a request's customer approvals are
// counted against: that of its latest customer approval with one. ok is
// false when no customer signed yet.
func CurrentTerms(ar store.AccessRequest) (s approval.Statement, canonical string, ok bool) {
	for _, x := range slices.Backward(ar.Reviews) {
		if x.Approve && x.Role == names.ReviewApprover && x.Statement != "" {
			st, err := approval.ParseStatement([]byte(x.Statement))
			if err != nil {
				return approval.Statement{}, "", false // stored by us, checked then: cannot happen
			}
			return st, x.Statement, true
		}
	}
	return approval.Statement{}, "", false
}

// ProposeTerms is the statement an approver is asked to sign for ar,
// whose deployment's agent is agentID: the terms other approvers already
// signed, when the approver narrows nothing and they still have a minute
// to run; else a window of duration (zero: the requested one) from now,
// over scopes (nil: all the policy allows).
func ProposeTerms(ar store.AccessRequest, agentID string, duration time.Duration, scopes []string, now time.Time) (approval.Statement, error) {
	if ar.State != store.StatePending {
		return approval.Statement{}, refuse(CodeNotPending, "request %s is %s, not pending: there is nothing to approve", ar.ID, ar.State)
	}
	if agentID == "" {
		return approval.Statement{}, refuse(CodeAgentUnpaired, "deployment %s/%s has no paired agent, so there is no grant to approve", ar.Tenant, ar.Name)
	}
	if cur, _, ok := CurrentTerms(ar); ok && duration == 0 && scopes == nil && cur.Agent == agentID && cur.NotAfter.After(now.Add(MinDuration)) {
		return cur, nil
	}
	allowed := Decision(ar).Scopes
	if scopes == nil {
		scopes = allowed
	}
	for _, s := range scopes {
		if !slices.Contains(allowed, s) {
			return approval.Statement{}, refuse(CodeStatementMismatch, "scope %q was not asked for or not allowed: approve some of %s", s, strings.Join(allowed, ", "))
		}
	}
	switch {
	case duration == 0:
		duration = ar.Duration
	case duration < MinDuration || duration%time.Second != 0:
		return approval.Statement{}, refuse(CodeStatementMismatch, "duration %s: want whole seconds of at least %s", duration, MinDuration)
	case duration > ar.Duration:
		return approval.Statement{}, refuse(CodeStatementMismatch, "duration %s is longer than the %s asked for: an approver may only shorten it", duration, ar.Duration)
	}
	start := now.Truncate(time.Second).UTC()
	st := approval.Statement{
		Request: ar.ID, Deployment: ar.DeploymentID, Agent: agentID,
		Engineer: approval.Person{Issuer: ar.Requester.Issuer, Subject: ar.Requester.Subject},
		Scopes:   slices.Sorted(slices.Values(scopes)), NotBefore: start, NotAfter: start.Add(duration), Decision: approval.Approve,
	}
	if err := st.Validate(); err != nil {
		return approval.Statement{}, refuse(CodeStatementMismatch, "the approval statement of request %s: %v", ar.ID, err)
	}
	return st, nil
}

// checkStatement refuses a signed statement that is not an approval of
// ar by its deployment's agent agentID, within what was asked and
// allowed, with time left to run.
func checkStatement(ar store.AccessRequest, agentID, canonical string, now time.Time) (approval.Statement, error) {
	st, err := approval.ParseStatement([]byte(canonical))
	if err != nil {
		return st, refuse(CodeStatementMismatch, "%v", err)
	}
	wrong := func(what, got, want string) error {
		return refuse(CodeStatementMismatch, "the statement you signed names %s %q, but request %s's is %q: ask for a new statement ('broker request approve %s')", what, got, ar.ID, want, ar.ID)
	}
	switch {
	case st.Request != ar.ID:
		return st, wrong("request", st.Request, ar.ID)
	case st.Deployment != ar.DeploymentID:
		return st, wrong("deployment", st.Deployment, ar.DeploymentID)
	case st.Agent != agentID:
		return st, wrong("agent", st.Agent, agentID)
	case st.Engineer.Issuer != ar.Requester.Issuer || st.Engineer.Subject != ar.Requester.Subject:
		return st, wrong("engineer", st.Engineer.Subject, ar.Requester.Subject)
	case st.Decision != approval.Approve:
		return st, refuse(CodeStatementMismatch, "the statement you signed records the decision %q; an approval signs %q", st.Decision, approval.Approve)
	}
	allowed := Decision(ar).Scopes
	for _, s := range st.Scopes {
		if !slices.Contains(allowed, s) {
			return st, refuse(CodeStatementMismatch, "the statement you signed grants %q, which request %s may not have (%s)", s, ar.ID, strings.Join(allowed, ", "))
		}
	}
	if d := st.NotAfter.Sub(st.NotBefore); d > ar.Duration {
		return st, refuse(CodeStatementMismatch, "the statement you signed lasts %s, longer than the %s asked for", d, ar.Duration)
	}
	if st.NotBefore.After(now.Add(maxStatementSkew)) || st.NotBefore.Before(ar.CreatedAt.Add(-maxStatementSkew)) {
		return st, refuse(CodeStatementMismatch, "the statement you signed starts %s, which is not a time the broker offered for request %s", st.NotBefore.Format(time.RFC3339), ar.ID)
	}
	if !st.NotAfter.After(now.Add(MinDuration)) {
		return st, refuse(CodeWindowOver, "the window you signed ends %s, too soon to grant: ask for a new statement ('broker request approve %s')", st.NotAfter.Format(time.RFC3339), ar.ID)
	}
	return st, nil
}

// countsToward reports whether review x is a customer approval of the
// current terms (canonical), when some customer signed any.
func countsToward(x store.Review, current string) bool {
	return x.Role != names.ReviewApprover || x.Statement == current
}
