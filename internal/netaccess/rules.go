package netaccess

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/tetherhq/tether/internal/names"
	"github.com/tetherhq/tether/internal/netmgr"
	"github.com/tetherhq/tether/internal/store"
)

// Op is what is done with an approved network change request.
type Op string

// The operations on a network change request.
const (
	OpApply    Op = "apply"
	OpTeardown Op = "teardown"
	OpStatus   Op = "status"
)

// IsTenantApprover reports whether p is a customer approver of tenant
// (not vendor staff holding the role name).
func IsTenantApprover(p store.Person, tenant string) bool {
	return p.Tenant != "" && p.Tenant == tenant && slices.Contains(p.Roles, names.RoleApprover)
}

// CheckOp decides whether who may carry out op on network change request
// ar now, before its deployment is read. To apply, the request must be
// active and in its change window. To tear down, an apply must have begun
// (or the request be active): teardown only removes access, so it is
// allowed in any state after that. Only the requester or an admin applies
// or tears down; anyone who may see the request reads its status.
func CheckOp(op Op, ar store.AccessRequest, who store.Person, now time.Time) error {
	if ar.Network == nil {
		return refuse(Invalid, "not_a_network_request", "request %s is an access request, not a network change", ar.ID)
	}
	switch op {
	case OpApply:
		if ar.State != store.StateActive {
			return refuse(Conflict, "not_approved", "request %s is %s: a network change needs an approved, active request ('broker request show %s')", ar.ID, ar.State, ar.ID)
		}
		if ar.Grant != nil && !now.Before(ar.Grant.Expiry) {
			return refuse(Conflict, "window_over", "request %s's change window ended at %s: ask again", ar.ID, ar.Grant.Expiry.UTC().Format("2006-01-02T15:04:05Z"))
		}
	case OpTeardown:
		applied := ar.NetworkPlan != nil && !ar.NetworkPlan.AppliedAt.IsZero()
		if !applied && ar.State != store.StateActive {
			return refuse(Conflict, "not_applied", "request %s is %s and was never applied: there is nothing to tear down", ar.ID, ar.State)
		}
	}
	samePerson := who.Subject == ar.Requester.Subject && who.Issuer == ar.Requester.Issuer
	if op != OpStatus && !samePerson && !slices.Contains(who.Roles, names.RoleAdmin) {
		return refuse(Forbidden, "not_requester", "only the requester or an admin carries out request %s", ar.ID)
	}
	return nil
}

// CheckApply decides whether request ar's change may be applied to
// deployment d now: in no freeze its approvals did not see, and inside a
// maintenance window unless it was approved for outside one.
func CheckApply(ar store.AccessRequest, d store.Deployment, now time.Time) error {
	if w, frozen := FreezeSinceApproval(ar, d, now); frozen {
		why := ""
		if w.Reason != "" {
			why = " (" + w.Reason + ")"
		}
		return refuse(Conflict, "frozen", "deployment %s/%s is frozen%s from %s to %s, a freeze its approvers did not see: apply after it, or ask again (a request made during a freeze needs the approvals the policy asks for then)", d.Tenant, d.Name, why, w.Start.UTC().Format(time.RFC3339), w.End.UTC().Format(time.RFC3339))
	}
	if ar.Network != nil && !ar.Network.OutsideWindow {
		if ok, next := InWindow(d.Settings.MaintenanceWindows, now); !ok {
			return refuse(Conflict, "outside_maintenance_window", "deployment %s/%s takes network changes only in its maintenance windows: %s (a request made with --outside-maintenance-window, approved as such, may change it now)", d.Tenant, d.Name, next)
		}
	}
	return nil
}

// InWindow reports whether now falls in one of the deployment's
// maintenance windows, and names the next one when it does not. No
// windows means any time.
func InWindow(ws []store.Window, now time.Time) (bool, string) {
	if len(ws) == 0 {
		return true, ""
	}
	var next *store.Window
	for i, w := range ws {
		if !now.Before(w.Start) && now.Before(w.End) {
			return true, ""
		}
		if w.Start.After(now) && (next == nil || w.Start.Before(next.Start)) {
			next = &ws[i]
		}
	}
	if next == nil {
		return false, "the deployment declares no maintenance window to come"
	}
	return false, fmt.Sprintf("the next maintenance window is %s to %s", next.Start.UTC().Format(time.RFC3339), next.End.UTC().Format(time.RFC3339))
}

// FreezeSinceApproval names a freeze window of the deployment that is on
// now and was not declared, or not on, when the policy decided the
// request: the approvals did not account for it, so apply waits.
func FreezeSinceApproval(ar store.AccessRequest, d store.Deployment, now time.Time) (store.Window, bool) {
	var seen []store.Window
	if ar.NetworkPlan != nil {
		seen = ar.NetworkPlan.Freezes
	}
	for _, w := range d.Settings.FreezeWindows {
		if now.Before(w.Start) || !now.Before(w.End) {
			continue
		}
		known := slices.ContainsFunc(seen, func(s store.Window) bool { return s.Start.Equal(w.Start) && s.End.Equal(w.End) })
		onAtDecision := !ar.CreatedAt.Before(w.Start) && ar.CreatedAt.Before(w.End)
		if !known || !onAtDecision {
			return w, true
		}
	}
	return store.Window{}, false
}

// ApprovedIntent decodes a request's approved plan, checking it against
// its digest; a request without one (made before plans were stored) or
// with a damaged one cannot be applied.
func ApprovedIntent(ar store.AccessRequest) (netmgr.Intent, error) {
	var in netmgr.Intent
	np := ar.NetworkPlan
	if np == nil {
		return in, refuse(Conflict, "no_approved_plan", "request %s carries no approved plan (it predates plans bound to approvals): ask for the change again", ar.ID)
	}
	if err := json.Unmarshal(np.Intent, &in); err != nil || in.Digest() != np.Digest {
		return in, refuse(Internal, "plan_damaged", "request %s's stored plan does not match its digest %s: nothing is applied; ask for the change again", ar.ID, np.Digest)
	}
	return in, nil
}

// RegisteredCIDR reports whether prefix lies inside one of the registered
// ranges.
func RegisteredCIDR(own []netip.Prefix, prefix netip.Prefix) bool {
	for _, r := range own {
		if prefix.Bits() >= r.Bits() && r.Contains(prefix.Addr()) {
			return true
		}
	}
	return false
}

// ScheduleTeardown, called inside the write that revokes ar, makes the
// teardown of its applied network change due at once.
func ScheduleTeardown(ar *store.AccessRequest, now time.Time) {
	if np := ar.NetworkPlan; ar.Network != nil && np != nil && !np.AppliedAt.IsZero() && np.TornDownAt.Before(np.AppliedAt) {
		np.TeardownDue = now.UTC()
	}
}

// Changed counts the steps of p that change something.
func Changed(p netmgr.Plan) int {
	n := 0
	for _, s := range p.Steps {
		if s.Action != "none" {
			n++
		}
	}
	return n
}

// NetError classifies a netmgr failure as a refusal a person can act on;
// a refusal of this package stays as it is.
func NetError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	switch {
	case errors.Is(err, netmgr.ErrInvalid), errors.Is(err, netmgr.ErrCIDRTooSmall), errors.Is(err, netmgr.ErrPartition):
		return refuse(Invalid, "invalid_network", "%v", err)
	case errors.Is(err, netmgr.ErrOverlap):
		return refuse(Conflict, "cidr_overlap", "%v", err)
	case errors.Is(err, netmgr.ErrPlanChanged):
		return refuse(Conflict, "plan_changed", "%v", err)
	case errors.Is(err, netmgr.ErrConflict):
		return refuse(Conflict, "network_conflict", "%v", err)
	case errors.Is(err, netmgr.ErrPublicCIDR):
		return refuse(Forbidden, "public_cidr", "%v", err)
	case errors.Is(err, netmgr.ErrNotFound):
		return refuse(NotFound, "aws_not_found", "%v", err)
	case errors.Is(err, netmgr.ErrPermission), errors.Is(err, netmgr.ErrExternalID):
		return refuse(Forbidden, "aws_denied", "%v", err)
	default:
		return refuse(Upstream, "aws_error", "%v", err)
	}
}
