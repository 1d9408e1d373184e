package netaccess

// The approved plan of a network change. The service plans the change
// when the request is created (before anyone can approve it); the request
// stores the plan, netmgr's Intent, in its canonical encoding with its
// SHA-256 digest. Approvers see both; an approval may carry the digest
// the approver was shown, and is refused when it differs. Apply plans
// again and refuses, changing nothing, when anything differs; teardown
// removes only what the request created and is allowed in any state once
// an apply began.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/netmgr"
	"github.com/tetherhq/tether/internal/store"
)

const (
	// TeardownTimeout bounds one automatic teardown.
	TeardownTimeout = 5 * time.Minute
	// TeardownRetryMax caps the wait between automatic teardown tries.
	TeardownRetryMax = 10 * time.Minute
)

var errNotDue = errors.New("not due")

type callKey struct{}

// call is who a network change is carried out for, for the audit of each
// AWS call it makes.
type call struct {
	ar    store.AccessRequest
	actor audit.Actor
}

// RecordAWSCall audits one AWS call that changed something, for the
// change ctx carries out; netmgr calls it after every mutating call
// (netmgr.Config.Recorder), and an error stops the change.
func (s *Service) RecordAWSCall(ctx context.Context, c netmgr.Call) error {
	nc, _ := ctx.Value(callKey{}).(call)
	ev := audit.Event{
		Type: audit.AWSCall, Actor: nc.actor, Deployment: nc.ar.DeploymentID, RequestID: nc.ar.ID, Outcome: audit.Success,
		Details: map[string]any{"service": c.Service, "action": c.Action, "account": c.Account, "region": c.Region, "resources": c.ResourceIDs, "aws_request_id": c.RequestID},
	}
	if c.Err != nil {
		ev.Outcome, ev.Reason = audit.Failure, c.Err.Error()
	}
	return s.cfg.CallAudit.Record(ctx, ev)
}

func (s *Service) plan(ctx context.Context, m Manager, t netmgr.Target, p netmgr.Peer, kind string, tags netmgr.Tags) (netmgr.Plan, error) {
	if kind == "ingress" {
		return m.PlanIngress(ctx, t, p, tags)
	}
	return m.PlanPeering(ctx, t, p, tags)
}

// Plan plans a network request's change as it is created, for its
// approvers: what netmgr would make, its digest, and the freezes the
// policy saw. Any failure refuses the request: nobody can approve a plan
// the broker could not make.
func (s *Service) Plan(ctx context.Context, d store.DeploymentStatus, spec *store.PeeringSpec, requestID, engineer string) (*store.NetworkPlan, error) {
	m, err := s.manager()
	if err != nil {
		return nil, err
	}
	t, p, err := s.Sides(ctx, d.Tenant, d.Settings.Network, spec)
	if err != nil {
		return nil, err
	}
	p = s.peerFor(ctx, d.Tenant, p)
	plan, err := s.plan(ctx, m, t, p, spec.Kind, netmgr.Tags{Deployment: d.ID, Request: requestID, Engineer: engineer})
	if err != nil {
		return nil, NetError(fmt.Errorf("plan the change for its approvers: %w", err))
	}
	if plan.Intent == nil {
		return nil, fmt.Errorf("plan the change: netmgr returned no intent")
	}
	return &store.NetworkPlan{
		Intent: plan.Intent.Canonical(), Digest: plan.Intent.Digest(), PlannedAt: s.now().UTC(),
		Freezes: slices.Clone(d.Settings.FreezeWindows),
	}, nil
}

// Preview plans a change to deployment d's network without making it, for
// c, and audits it: validation, then each resource to create or change.
func (s *Service) Preview(ctx context.Context, c Caller, d store.DeploymentStatus, spec *store.PeeringSpec) (netmgr.Plan, error) {
	m, err := s.manager()
	if err != nil {
		return netmgr.Plan{}, err
	}
	if d.Settings.Network == nil {
		return netmgr.Plan{}, refuse(Conflict, "no_network_config", "deployment %s/%s has no network configuration: an admin sets it first ('broker network configure')", d.Tenant, d.Name)
	}
	// Only what is registered to the deployment's tenant, on both sides.
	t, p, err := s.Sides(ctx, d.Tenant, d.Settings.Network, spec)
	if err != nil {
		return netmgr.Plan{}, err
	}
	p = s.peerFor(ctx, d.Tenant, p)
	plan, err := s.plan(ctx, m, t, p, spec.Kind, netmgr.Tags{Deployment: d.ID, Engineer: displayName(c.Person)})
	ev := audit.Event{Type: audit.NetworkPlanned, Actor: c.Actor, Deployment: d.ID, Source: c.Source, Outcome: audit.Success,
		Details: map[string]any{"kind": spec.Kind, "peer_vpc": spec.VPCID, "peer_account": spec.AccountID, "steps": len(plan.Steps), "warnings": plan.Warnings}}
	if err != nil {
		ev.Outcome, ev.Reason = audit.Failure, err.Error()
	}
	if rerr := s.cfg.Audit.Record(ctx, ev); rerr != nil {
		return plan, rerr
	}
	if err != nil {
		return plan, NetError(err)
	}
	return plan, nil
}

// Prepare checks that c may carry out op on network change request ar
// now ([CheckOp], and [CheckApply] to apply) and returns its deployment.
func (s *Service) Prepare(ctx context.Context, c Caller, op Op, ar store.AccessRequest) (store.DeploymentStatus, error) {
	var d store.DeploymentStatus
	if err := CheckOp(op, ar, c.Person, s.now()); err != nil {
		return d, err
	}
	d, err := s.cfg.Store.GetDeployment(ctx, ar.DeploymentID)
	if err != nil {
		return d, fmt.Errorf("get deployment: %w", err)
	}
	if d.Settings.Network == nil {
		return d, refuse(Conflict, "no_network_config", "deployment %s/%s has no network configuration", d.Tenant, d.Name)
	}
	if op != OpApply {
		return d, nil
	}
	return d, CheckApply(ar, d.Deployment, s.now())
}

// Change applies (teardown false) or tears down request ar's change on
// deployment d for c, as [Service.Prepare] allowed it, and audits it. An
// error is returned as it is: a refusal of this package, the recorder's
// error, or a failure of netmgr's for [NetError] to classify.
func (s *Service) Change(ctx context.Context, c Caller, ar store.AccessRequest, d store.DeploymentStatus, teardown bool) (netmgr.Plan, error) {
	m, err := s.manager()
	if err != nil {
		return netmgr.Plan{}, err
	}
	ctx = context.WithValue(ctx, callKey{}, call{ar: ar, actor: c.Actor})
	engineer := displayName(c.Person)
	var plan netmgr.Plan
	typ := audit.NetworkApplied
	if teardown {
		typ = audit.NetworkTornDown
		plan, err = s.teardown(ctx, m, ar, d.Settings.Network, engineer)
		s.markTornDown(ctx, ar.ID, err)
	} else {
		plan, err = s.apply(ctx, m, ar, d, engineer)
	}
	details := map[string]any{"kind": ar.Network.Kind, "peer_vpc": ar.Network.VPCID, "changed": Changed(plan)}
	if ar.NetworkPlan != nil {
		details["plan_digest"] = ar.NetworkPlan.Digest
	}
	var pce *netmgr.PlanChangedError
	if errors.As(err, &pce) {
		details["plan_now"], details["differences"] = pce.Now, pce.Differences
	}
	ev := audit.Event{Type: typ, Actor: c.Actor, Deployment: ar.DeploymentID, RequestID: ar.ID, Source: c.Source, Outcome: audit.Success, Details: details}
	if err != nil {
		ev.Outcome, ev.Reason = audit.Failure, err.Error()
	}
	if rerr := s.cfg.Audit.Record(ctx, ev); rerr != nil {
		return plan, rerr
	}
	s.changed()
	return plan, err
}

// apply carries out an approved request's change exactly as approved.
func (s *Service) apply(ctx context.Context, m Manager, ar store.AccessRequest, d store.DeploymentStatus, engineer string) (netmgr.Plan, error) {
	approved, err := ApprovedIntent(ar)
	if err != nil {
		return netmgr.Plan{}, err
	}
	t, p, err := s.Sides(ctx, ar.Tenant, d.Settings.Network, ar.Network)
	if err != nil {
		return netmgr.Plan{}, err
	}
	p = s.peerFor(ctx, ar.Tenant, p)
	if err := s.markApplied(ctx, ar.ID); err != nil {
		return netmgr.Plan{}, fmt.Errorf("record the apply: %w", err)
	}
	tags := netmgr.Tags{Deployment: ar.DeploymentID, Request: ar.ID, Engineer: engineer}
	if ar.Network.Kind == "ingress" {
		return m.EnableApprovedIngress(ctx, t, p, tags, approved)
	}
	return m.ApplyApprovedPeering(ctx, t, p, tags, approved)
}

// teardown removes what request ar made, and nothing else.
func (s *Service) teardown(ctx context.Context, m Manager, ar store.AccessRequest, n *store.NetworkConfig, engineer string) (netmgr.Plan, error) {
	t, p, err := s.Sides(ctx, ar.Tenant, n, ar.Network)
	if err != nil {
		return netmgr.Plan{}, err
	}
	tags := netmgr.Tags{Deployment: ar.DeploymentID, Request: ar.ID, Engineer: engineer}
	if ar.Network.Kind == "ingress" {
		return m.DisableIngress(ctx, t, p, tags)
	}
	return m.TeardownPeering(ctx, t, p, tags)
}

// Status observes request ar's change on deployment d and audits any
// drift from what it should be.
func (s *Service) Status(ctx context.Context, c Caller, ar store.AccessRequest, d store.DeploymentStatus) (netmgr.Status, error) {
	m, err := s.manager()
	if err != nil {
		return netmgr.Status{}, err
	}
	t, p, err := s.Sides(ctx, ar.Tenant, d.Settings.Network, ar.Network)
	if err != nil {
		return netmgr.Status{}, err
	}
	var st netmgr.Status
	if ar.Network.Kind == "ingress" {
		st, err = m.IngressStatus(ctx, t, p)
	} else {
		st, err = m.PeeringStatus(ctx, t, p)
	}
	if err != nil {
		return st, NetError(err)
	}
	var drift []string
	for _, it := range st.Items {
		if it.State != "ok" {
			drift = append(drift, it.Resource+": "+it.State)
		}
	}
	if len(drift) > 0 {
		if err := s.cfg.Audit.Record(ctx, audit.Event{Type: audit.NetworkDrift, Actor: c.Actor, Deployment: ar.DeploymentID, RequestID: ar.ID,
			Outcome: audit.Failure, Reason: strings.Join(drift, "; ")}); err != nil {
			return st, err
		}
	}
	return st, nil
}

// markApplied records that an apply began changing AWS for request id.
func (s *Service) markApplied(ctx context.Context, id string) error {
	_, err := s.cfg.UpdateRequest(ctx, id, func(cur *store.AccessRequest) error {
		if cur.NetworkPlan == nil || !cur.NetworkPlan.AppliedAt.IsZero() {
			return errNotDue
		}
		cur.NetworkPlan.AppliedAt = s.now().UTC()
		return nil
	})
	if errors.Is(err, errNotDue) {
		return nil
	}
	return err
}

// markTornDown records a teardown's outcome: done, or failed and, for a
// revoked request, when to try again.
func (s *Service) markTornDown(ctx context.Context, id string, tdErr error) {
	_, err := s.cfg.UpdateRequest(context.WithoutCancel(ctx), id, func(cur *store.AccessRequest) error {
		np := cur.NetworkPlan
		if np == nil {
			return errNotDue
		}
		if tdErr == nil {
			np.TornDownAt, np.TeardownDue, np.TeardownError = s.now().UTC(), time.Time{}, ""
			return nil
		}
		np.TeardownAttempts++
		np.TeardownError = tdErr.Error()
		if cur.State == store.StateRevoked {
			wait := min(time.Duration(1<<min(np.TeardownAttempts, 10))*time.Second, TeardownRetryMax)
			np.TeardownDue = s.now().Add(wait).UTC()
		}
		return nil
	})
	if err != nil && !errors.Is(err, errNotDue) {
		s.log.Error("record a network teardown", "request", id, "err", err)
	}
}

// RunTeardowns tears down the applied network changes of revoked
// requests every interval, retrying failures with backoff, until ctx
// ends.
func (s *Service) RunTeardowns(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.TeardownDue(ctx)
	}
}

// TeardownDue tears down, as the broker, the applied changes of revoked
// requests whose teardown is due (at most 10 a call), and audits each.
func (s *Service) TeardownDue(ctx context.Context) {
	m, err := s.manager()
	if err != nil {
		return
	}
	due, err := s.cfg.Store.ListRequests(ctx, store.RequestFilter{States: []string{store.StateRevoked}, DueBefore: s.now().Add(time.Millisecond), Limit: 10})
	if err != nil {
		if ctx.Err() == nil {
			s.log.Error("list network changes to tear down", "err", err)
		}
		return
	}
	for _, ar := range due {
		if ar.Network == nil || ar.NetworkPlan == nil || ar.NetworkPlan.TeardownDue.IsZero() {
			continue
		}
		tctx, cancel := context.WithTimeout(ctx, TeardownTimeout)
		s.autoTeardown(tctx, m, ar)
		cancel()
	}
}

// autoTeardown tears down a revoked request's change as the broker, and
// audits it.
func (s *Service) autoTeardown(ctx context.Context, m Manager, ar store.AccessRequest) {
	d, err := s.cfg.Store.GetDeployment(ctx, ar.DeploymentID)
	var plan netmgr.Plan
	switch {
	case err != nil:
		err = fmt.Errorf("get deployment: %w", err)
	case d.Settings.Network == nil:
		err = fmt.Errorf("deployment %s/%s has no network configuration any more", d.Tenant, d.Name)
	default:
		plan, err = s.teardown(context.WithValue(ctx, callKey{}, call{ar: ar, actor: broker}), m, ar, d.Settings.Network, "")
	}
	s.markTornDown(ctx, ar.ID, err)
	ev := audit.Event{Type: audit.NetworkTornDown, Actor: broker, Deployment: ar.DeploymentID, RequestID: ar.ID, Outcome: audit.Success,
		Reason:  "the request was revoked: " + ar.EndReason,
		Details: map[string]any{"kind": ar.Network.Kind, "peer_vpc": ar.Network.VPCID, "changed": Changed(plan), "automatic": true, "attempt": ar.NetworkPlan.TeardownAttempts + 1}}
	if err != nil {
		ev.Outcome, ev.Reason = audit.Failure, "the request was revoked; teardown failed, will retry: "+err.Error()
		s.log.Warn("automatic network teardown failed; will retry", "request", ar.ID, "err", err)
	}
	if rerr := s.cfg.Audit.Record(ctx, ev); rerr != nil {
		s.log.Error("audit an automatic network teardown", "request", ar.ID, "err", rerr)
	}
	s.changed()
}

// displayName is how a person is named in tags and messages.
func displayName(q store.Person) string {
	if q.Email != "" {
		return q.Email
	}
	return q.Subject
}
