package access

import (
	"fmt"
	"slices"
	"time"

	"github.com/tetherhq/tether/internal/approval"
	"github.com/tetherhq/tether/internal/grant"
	"github.com/tetherhq/tether/internal/names"
	"github.com/tetherhq/tether/internal/store"
	"github.com/tetherhq/tether/policy"
)

// CodePermitGone refuses a grant under a permit revoked or expired since
// the request was made.
const CodePermitGone = "permit_gone"

// CoveringPermit returns the first live permit of deployment d that
// stands in for need customer approvals of a request by requester (in
// groups) for scopes and duration starting now: signed by at least need
// approvers other than the requester, for d, covering the scopes and the
// whole window, allowing the duration, and naming no engineer group or
// one of the requester's.
func CoveringPermit(d store.DeploymentStatus, requester store.Person, groups, scopes []string, duration time.Duration, need int, now time.Time) (store.Permit, bool) {
	for _, sp := range d.Settings.Permits {
		if !sp.RevokedAt.IsZero() {
			continue
		}
		p, err := approval.ParsePermit([]byte(sp.Canonical))
		if err != nil || p.Deployment != d.ID || duration > p.MaxGrant {
			continue
		}
		if p.EngineerGroup != "" && !slices.Contains(groups, p.EngineerGroup) {
			continue
		}
		if !isSubset(scopes, p.Scopes) {
			continue
		}
		if !slices.ContainsFunc(p.Windows, func(w approval.Window) bool { return w.Contains(now, now.Add(duration)) }) {
			continue
		}
		signers := 0
		for _, s := range sp.Signers {
			if !SamePerson(s, requester) {
				signers++
			}
		}
		if signers >= max(need, 1) {
			return sp, true
		}
	}
	return store.Permit{}, false
}

func isSubset(a, b []string) bool {
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

// applyPermit drops the customer approvals a covering permit of d stands
// in for from reviews, returning the permit's ID ("" when none covers).
// The agent's own requirement counts: a permit signed by fewer approvers
// than the agent requires covers nothing.
func applyPermit(d store.DeploymentStatus, c Create, reviews []policy.Review, now time.Time) ([]policy.Review, string) {
	i := slices.IndexFunc(reviews, func(rv policy.Review) bool { return rv.Role == names.ReviewApprover })
	if i < 0 || c.BreakGlass || c.Network != nil {
		return reviews, ""
	}
	p, ok := CoveringPermit(d, c.Person, c.Input.Requester.Groups, c.Scopes, c.Duration, reviews[i].Count, now)
	if !ok {
		return reviews, ""
	}
	return slices.Delete(slices.Clone(reviews), i, i+1), p.ID
}

// agentApprovals raises the customer approvals reviews ask for to what
// deployment d's agent requires, adding them when the policy asked none:
// a grant with fewer proofs than the agent requires would be refused.
// Break-glass and network changes are not for the agent to approve.
func agentApprovals(d store.DeploymentStatus, c Create, reviews []policy.Review) []policy.Review {
	if d.Agent == nil || c.BreakGlass || c.Network != nil {
		return reviews
	}
	n := d.Agent.ApprovalsRequired()
	if n == 0 {
		return reviews
	}
	reviews = slices.Clone(reviews)
	for i, rv := range reviews {
		if rv.Role == names.ReviewApprover {
			reviews[i].Count = max(rv.Count, n)
			return reviews
		}
	}
	return append(reviews, policy.Review{Tenant: d.Tenant, Role: names.ReviewApprover, Count: n})
}

// permitGrant fills in g, the grant of ar issued under permit id at now:
// the permit's proofs, and a window from now that ends within the
// permit's window.
func permitGrant(g grant.Grant, ar store.AccessRequest, d store.DeploymentStatus, now time.Time) (grant.Grant, error) {
	i := slices.IndexFunc(d.Settings.Permits, func(p store.Permit) bool { return p.ID == ar.Permit })
	if i < 0 || !d.Settings.Permits[i].RevokedAt.IsZero() {
		return grant.Grant{}, refuse(CodePermitGone, "permit %s of deployment %s/%s, under which request %s was made, was revoked: ask again, for a customer approval", ar.Permit, d.Tenant, d.Name, ar.ID)
	}
	sp := d.Settings.Permits[i]
	p, err := approval.ParsePermit([]byte(sp.Canonical))
	if err != nil {
		return grant.Grant{}, fmt.Errorf("permit %s: %w", sp.ID, err)
	}
	end := now.Add(ar.Duration)
	wi := slices.IndexFunc(p.Windows, func(w approval.Window) bool { return !now.Before(w.Start) && now.Before(w.End) })
	if wi < 0 || p.Windows[wi].End.Sub(now) < MinDuration {
		return grant.Grant{}, refuse(CodePermitGone, "permit %s of deployment %s/%s has no window open now: ask again, for a customer approval", sp.ID, d.Tenant, d.Name)
	}
	if end.After(p.Windows[wi].End) {
		end = p.Windows[wi].End
	}
	g.NotBefore, g.Expiry = now, end
	g.Permit = sp.Canonical
	g.Proofs = sp.Proofs[:min(len(sp.Proofs), grant.MaxProofs)]
	return g, nil
}
