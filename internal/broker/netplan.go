package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"time"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/netmgr"
	"github.com/tetherhq/tether/internal/store"
)

// The approved plan of a network change. The broker plans the change when
// the request is created (before anyone can approve it) and stores the
// plan, netmgr's Intent, in its canonical encoding with its SHA-256
// digest. Approvers see both; an approve body may carry the digest the
// approver was shown, and is refused when it differs. Apply plans again
// and refuses, changing nothing, when anything differs; teardown removes
// only what the request created and is allowed in any state once an apply
// began.

const (
	// networkTeardownTimeout bounds one automatic teardown.
	networkTeardownTimeout = 5 * time.Minute
	// networkTeardownRetryMax caps the wait between automatic teardown
	// tries.
	networkTeardownRetryMax = 10 * time.Minute
)

// netPeerFor is p with the public CIDRs its account's registration lists
// allowed: a peer VPC range outside private address space is accepted
// only when the tenant registered it as its own (broker network register
// --peer-cidr), inside an active registration of that account to that
// tenant. Anything it cannot read allows nothing.
func (b *Broker) netPeerFor(ctx context.Context, tenant string, p netmgr.Peer) netmgr.Peer {
	var own []netip.Prefix
	if reg, err := b.store.GetNetworkRegistrationByAccount(ctx, p.AccountID); err == nil && reg.Tenant == tenant && reg.State == store.RegistrationActive {
		for _, c := range reg.PeerCIDRs {
			if pfx, err := netip.ParsePrefix(c); err == nil {
				own = append(own, pfx.Masked())
			}
		}
	}
	p.PublicCIDROK = func(c netip.Prefix) bool { return registeredCIDR(own, c) }
	return p
}

// registeredCIDR reports whether prefix lies inside one of the registered
// ranges.
func registeredCIDR(own []netip.Prefix, prefix netip.Prefix) bool {
	for _, r := range own {
		if prefix.Bits() >= r.Bits() && r.Contains(prefix.Addr()) {
			return true
		}
	}
	return false
}

// planNetworkChange plans a network request's change as it is created,
// for its approvers: what netmgr would make, its digest, and the freezes
// the policy saw. Any failure refuses the request: nobody can approve a
// plan the broker could not make.
func (b *Broker) planNetworkChange(ctx context.Context, d store.DeploymentStatus, spec *store.PeeringSpec, requestID, engineer string) (*store.NetworkPlan, error) {
	m, err := b.netManager()
	if err != nil {
		return nil, err
	}
	t, p, err := b.netSides(ctx, d.Tenant, d.Settings.Network, spec)
	if err != nil {
		return nil, err
	}
	p = b.netPeerFor(ctx, d.Tenant, p)
	tags := netmgr.Tags{Deployment: d.ID, Request: requestID, Engineer: engineer}
	var plan netmgr.Plan
	if spec.Kind == "ingress" {
		plan, err = m.PlanIngress(ctx, t, p, tags)
	} else {
		plan, err = m.PlanPeering(ctx, t, p, tags)
	}
	if err != nil {
		return nil, netError(fmt.Errorf("plan the change for its approvers: %w", err))
	}
	if plan.Intent == nil {
		return nil, fmt.Errorf("plan the change: netmgr returned no intent")
	}
	return &store.NetworkPlan{
		Intent: plan.Intent.Canonical(), Digest: plan.Intent.Digest(), PlannedAt: b.now().UTC(),
		Freezes: slices.Clone(d.Settings.FreezeWindows),
	}, nil
}

// approvedIntent decodes a request's approved plan, checking it against
// its digest; a request without one (made before plans were stored) or
// with a damaged one cannot be applied.
func approvedIntent(ar store.AccessRequest) (netmgr.Intent, error) {
	var in netmgr.Intent
	np := ar.NetworkPlan
	if np == nil {
		return in, errorf(http.StatusConflict, "no_approved_plan", "request %s carries no approved plan (it predates plans bound to approvals): ask for the change again", ar.ID)
	}
	if err := json.Unmarshal(np.Intent, &in); err != nil || in.Digest() != np.Digest {
		return in, errorf(http.StatusInternalServerError, "plan_damaged", "request %s's stored plan does not match its digest %s: nothing is applied; ask for the change again", ar.ID, np.Digest)
	}
	return in, nil
}

// freezeSinceApproval names a freeze window of the deployment that is on
// now and was not declared, or not on, when the policy decided the
// request: the approvals did not account for it, so apply waits.
func freezeSinceApproval(ar store.AccessRequest, d store.Deployment, now time.Time) (store.Window, bool) {
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

// markApplied records that an apply began changing AWS for ar.
func (b *Broker) markApplied(ctx context.Context, id string) error {
	_, err := b.update(ctx, id, func(cur *store.AccessRequest) error {
		if cur.NetworkPlan == nil || !cur.NetworkPlan.AppliedAt.IsZero() {
			return errNotDue
		}
		cur.NetworkPlan.AppliedAt = b.now().UTC()
		return nil
	})
	if errors.Is(err, errNotDue) {
		return nil
	}
	return err
}

// markTornDown records a teardown's outcome: done, or failed and, for a
// revoked request, when to try again.
func (b *Broker) markTornDown(ctx context.Context, id string, tdErr error) {
	_, err := b.update(context.WithoutCancel(ctx), id, func(cur *store.AccessRequest) error {
		np := cur.NetworkPlan
		if np == nil {
			return errNotDue
		}
		if tdErr == nil {
			np.TornDownAt, np.TeardownDue, np.TeardownError = b.now().UTC(), time.Time{}, ""
			return nil
		}
		np.TeardownAttempts++
		np.TeardownError = tdErr.Error()
		if cur.State == store.StateRevoked {
			wait := min(time.Duration(1<<min(np.TeardownAttempts, 10))*time.Second, networkTeardownRetryMax)
			np.TeardownDue = b.now().Add(wait).UTC()
		}
		return nil
	})
	if err != nil && !errors.Is(err, errNotDue) {
		b.log.Error("record a network teardown", "request", id, "err", err)
	}
}

// teardownOnRevoke, called as a request is revoked, schedules the
// teardown of its applied network change at once.
func (b *Broker) teardownOnRevoke(ar *store.AccessRequest) {
	if np := ar.NetworkPlan; ar.Network != nil && np != nil && !np.AppliedAt.IsZero() && np.TornDownAt.Before(np.AppliedAt) {
		np.TeardownDue = b.now().UTC()
	}
}

// runNetworkTeardowns tears down the applied network changes of revoked
// requests, retrying failures with backoff, until ctx ends.
func (b *Broker) runNetworkTeardowns(ctx context.Context) {
	t := time.NewTicker(b.cfg.LifecycleInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if b.net == nil {
			continue
		}
		due, err := b.store.ListRequests(ctx, store.RequestFilter{States: []string{store.StateRevoked}, DueBefore: b.now().Add(time.Millisecond), Limit: 10})
		if err != nil {
			if ctx.Err() == nil {
				b.log.Error("list network changes to tear down", "err", err)
			}
			continue
		}
		for _, ar := range due {
			if ar.Network == nil || ar.NetworkPlan == nil || ar.NetworkPlan.TeardownDue.IsZero() {
				continue
			}
			tctx, cancel := context.WithTimeout(ctx, networkTeardownTimeout)
			b.autoTeardown(tctx, ar)
			cancel()
		}
	}
}

// autoTeardown tears down a revoked request's change as the broker, and
// audits it.
func (b *Broker) autoTeardown(ctx context.Context, ar store.AccessRequest) {
	actor := audit.Actor{Subject: "broker", Role: "broker"}
	d, err := b.store.GetDeployment(ctx, ar.DeploymentID)
	var plan netmgr.Plan
	switch {
	case err != nil:
		err = fmt.Errorf("get deployment: %w", err)
	case d.Settings.Network == nil:
		err = fmt.Errorf("deployment %s/%s has no network configuration any more", d.Tenant, d.Name)
	default:
		plan, err = b.teardown(context.WithValue(ctx, netCallKey{}, netCall{ar: ar, actor: actor}), ar, d.Settings.Network, "")
	}
	b.markTornDown(ctx, ar.ID, err)
	ev := audit.Event{Type: audit.NetworkTornDown, Actor: actor, Deployment: ar.DeploymentID, RequestID: ar.ID, Outcome: audit.Success,
		Reason:  "the request was revoked: " + ar.EndReason,
		Details: map[string]any{"kind": ar.Network.Kind, "peer_vpc": ar.Network.VPCID, "changed": changed(plan), "automatic": true, "attempt": ar.NetworkPlan.TeardownAttempts + 1}}
	if err != nil {
		ev.Outcome, ev.Reason = audit.Failure, "the request was revoked; teardown failed, will retry: "+err.Error()
		b.log.Warn("automatic network teardown failed; will retry", "request", ar.ID, "err", err)
	}
	if rerr := b.record(ctx, ev); rerr != nil {
		b.log.Error("audit an automatic network teardown", "request", ar.ID, "err", rerr)
	}
	b.changed()
}

// teardown removes what request ar made, and nothing else.
func (b *Broker) teardown(ctx context.Context, ar store.AccessRequest, n *store.NetworkConfig, engineer string) (netmgr.Plan, error) {
	m, err := b.netManager()
	if err != nil {
		return netmgr.Plan{}, err
	}
	t, p, err := b.netSides(ctx, ar.Tenant, n, ar.Network)
	if err != nil {
		return netmgr.Plan{}, err
	}
	tags := netmgr.Tags{Deployment: ar.DeploymentID, Request: ar.ID, Engineer: engineer}
	if ar.Network.Kind == "ingress" {
		return m.DisableIngress(ctx, t, p, tags)
	}
	return m.TeardownPeering(ctx, t, p, tags)
}

func changed(p netmgr.Plan) int {
	n := 0
	for _, s := range p.Steps {
		if s.Action != "none" {
			n++
		}
	}
	return n
}

// networkPlanView is a request's approved plan as the API shows it.
func networkPlanView(np *store.NetworkPlan) *brokerapi.ApprovedNetworkPlan {
	if np == nil {
		return nil
	}
	v := &brokerapi.ApprovedNetworkPlan{
		Digest: np.Digest, PlannedAt: np.PlannedAt.UTC(), AppliedAt: np.AppliedAt, TornDownAt: np.TornDownAt,
		TeardownDue: np.TeardownDue, TeardownAttempts: np.TeardownAttempts, TeardownError: np.TeardownError,
	}
	json.Unmarshal(np.Intent, &v.Intent) // the same JSON shape; a damaged plan shows empty and is refused at apply
	return v
}
