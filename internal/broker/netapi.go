package broker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/tetherhq/tether/internal/names"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/netmgr"
	"github.com/tetherhq/tether/internal/store"
)

// netTarget and netPeer, which check each side against the tenant's
// registrations and look up the role's external ID, are in netreg.go.

// netError maps a netmgr failure to an API error a person can act on.
func netError(err error) error {
	switch {
	case errors.Is(err, netmgr.ErrInvalid), errors.Is(err, netmgr.ErrCIDRTooSmall), errors.Is(err, netmgr.ErrPartition):
		return errorf(http.StatusBadRequest, "invalid_network", "%v", err)
	case errors.Is(err, netmgr.ErrOverlap):
		return errorf(http.StatusConflict, "cidr_overlap", "%v", err)
	case errors.Is(err, netmgr.ErrPlanChanged):
		return errorf(http.StatusConflict, "plan_changed", "%v", err)
	case errors.Is(err, netmgr.ErrConflict):
		return errorf(http.StatusConflict, "network_conflict", "%v", err)
	case errors.Is(err, netmgr.ErrPublicCIDR):
		return errorf(http.StatusForbidden, "public_cidr", "%v", err)
	case errors.Is(err, netmgr.ErrNotFound):
		return errorf(http.StatusNotFound, "aws_not_found", "%v", err)
	case errors.Is(err, netmgr.ErrPermission), errors.Is(err, netmgr.ErrExternalID):
		return errorf(http.StatusForbidden, "aws_denied", "%v", err)
	default:
		return errorf(http.StatusBadGateway, "aws_error", "%v", err)
	}
}

// netManager returns the network manager, or an error when the broker
// has none.
func (b *Broker) netManager() (*netmgr.Manager, error) {
	if b.net == nil {
		return nil, errorf(http.StatusNotImplemented, "network_not_configured", "this broker manages no networks: it needs AWS credentials in its environment (and aws_endpoint_url for a test endpoint)")
	}
	return b.net, nil
}

type netCallKey struct{}

// netCall is who a network change is carried out for, for the audit of
// each AWS call it makes.
type netCall struct {
	ar    store.AccessRequest
	actor audit.Actor
}

// recordAWSCall audits one AWS call that changed something; netmgr calls
// it after every mutating call, and an error stops the change.
func (b *Broker) recordAWSCall(ctx context.Context, c netmgr.Call) error {
	nc, _ := ctx.Value(netCallKey{}).(netCall)
	ev := audit.Event{
		Type: audit.AWSCall, Actor: nc.actor, Deployment: nc.ar.DeploymentID, RequestID: nc.ar.ID, Outcome: audit.Success,
		Details: map[string]any{"service": c.Service, "action": c.Action, "account": c.Account, "region": c.Region, "resources": c.ResourceIDs, "aws_request_id": c.RequestID},
	}
	if c.Err != nil {
		ev.Outcome, ev.Reason = audit.Failure, c.Err.Error()
	}
	return b.auditLog.Record(ctx, ev)
}

func planView(p netmgr.Plan) brokerapi.NetworkPlan {
	out := brokerapi.NetworkPlan{Warnings: p.Warnings}
	for _, s := range p.Steps {
		out.Steps = append(out.Steps, brokerapi.NetworkStep{Action: s.Action, Resource: s.Resource, Account: s.Account, ID: s.ID})
	}
	return out
}

func statusView(s netmgr.Status) brokerapi.NetworkStatus {
	var out brokerapi.NetworkStatus
	for _, it := range s.Items {
		out.Items = append(out.Items, brokerapi.NetworkItem{Resource: it.Resource, ID: it.ID, State: it.State, Detail: it.Detail})
	}
	return out
}

// handleNetworkPlan plans a change to a deployment's network without
// making it: validation, then each resource to create or change.
func (b *Broker) handleNetworkPlan(w http.ResponseWriter, r *http.Request) error {
	m, err := b.netManager()
	if err != nil {
		return err
	}
	var in brokerapi.PeeringSpec
	if err := decodeJSON(w, r, brokerapi.MaxBody, &in); err != nil {
		return err
	}
	spec, err := peeringFromAPI(&in)
	if err != nil {
		return err
	}
	d, err := b.lookup(r)
	if err != nil {
		return err
	}
	if d.Settings.Network == nil {
		return errorf(http.StatusConflict, "no_network_config", "deployment %s/%s has no network configuration: an admin sets it first ('broker network configure')", d.Tenant, d.Name)
	}
	// Only what is registered to the deployment's tenant, on both sides.
	t, p, err := b.netSides(r.Context(), d.Tenant, d.Settings.Network, spec)
	if err != nil {
		return err
	}
	var plan netmgr.Plan
	p = b.netPeerFor(r.Context(), d.Tenant, p)
	if spec.Kind == "ingress" {
		plan, err = m.PlanIngress(r.Context(), t, p, netmgr.Tags{Deployment: d.ID, Engineer: displayName(person(principalFrom(r.Context())))})
	} else {
		plan, err = m.PlanPeering(r.Context(), t, p, netmgr.Tags{Deployment: d.ID, Engineer: displayName(person(principalFrom(r.Context())))})
	}
	ev := audit.Event{Type: audit.NetworkPlanned, Actor: actorOf(r), Deployment: d.ID, Source: audit.Source{IP: r.RemoteAddr}, Outcome: audit.Success,
		Details: map[string]any{"kind": spec.Kind, "peer_vpc": spec.VPCID, "peer_account": spec.AccountID, "steps": len(plan.Steps), "warnings": plan.Warnings}}
	if err != nil {
		ev.Outcome, ev.Reason = audit.Failure, err.Error()
	}
	if rerr := b.record(r.Context(), ev); rerr != nil {
		return rerr
	}
	if err != nil {
		return netError(err)
	}
	writeJSON(w, http.StatusOK, planView(plan))
	return nil
}

// networkRequest loads a network change request the caller may carry
// out, with its deployment. To apply, the request must be active, in its
// change window, inside a maintenance window (unless approved for
// outside) and in no freeze its approvals did not see. To tear down, an
// apply must have begun (or the request be active): teardown only
// removes access, so it is allowed in any state after that, at any time.
// Either way only the requester or an admin acts.
func (b *Broker) networkRequest(r *http.Request, op string) (store.AccessRequest, store.DeploymentStatus, error) {
	var d store.DeploymentStatus
	ar, err := b.loadRequest(r.Context(), r.PathValue("id"))
	if err != nil {
		return ar, d, err
	}
	if ar.Network == nil {
		return ar, d, errorf(http.StatusBadRequest, "not_a_network_request", "request %s is an access request, not a network change", ar.ID)
	}
	p := principalFrom(r.Context())
	switch op {
	case "apply":
		if ar.State != store.StateActive {
			return ar, d, errorf(http.StatusConflict, "not_approved", "request %s is %s: a network change needs an approved, active request ('broker request show %s')", ar.ID, ar.State, ar.ID)
		}
		if ar.Grant != nil && !b.now().Before(ar.Grant.Expiry) {
			return ar, d, errorf(http.StatusConflict, "window_over", "request %s's change window ended at %s: ask again", ar.ID, ar.Grant.Expiry.UTC().Format("2006-01-02T15:04:05Z"))
		}
	case "teardown":
		applied := ar.NetworkPlan != nil && !ar.NetworkPlan.AppliedAt.IsZero()
		if !applied && ar.State != store.StateActive {
			return ar, d, errorf(http.StatusConflict, "not_applied", "request %s is %s and was never applied: there is nothing to tear down", ar.ID, ar.State)
		}
	}
	if op != "status" && !samePerson(p, ar.Requester) && !p.HasRole(names.RoleAdmin) {
		return ar, d, errorf(http.StatusForbidden, "not_requester", "only the requester or an admin carries out request %s", ar.ID)
	}
	d, err = b.store.GetDeployment(r.Context(), ar.DeploymentID)
	if err != nil {
		return ar, d, fmt.Errorf("get deployment: %w", err)
	}
	if d.Settings.Network == nil {
		return ar, d, errorf(http.StatusConflict, "no_network_config", "deployment %s/%s has no network configuration", d.Tenant, d.Name)
	}
	if op != "apply" {
		return ar, d, nil
	}
	now := b.now()
	if w, frozen := freezeSinceApproval(ar, d.Deployment, now); frozen {
		why := ""
		if w.Reason != "" {
			why = " (" + w.Reason + ")"
		}
		return ar, d, errorf(http.StatusConflict, "frozen", "deployment %s/%s is frozen%s from %s to %s, a freeze its approvers did not see: apply after it, or ask again (a request made during a freeze needs the approvals the policy asks for then)", d.Tenant, d.Name, why, w.Start.UTC().Format(time.RFC3339), w.End.UTC().Format(time.RFC3339))
	}
	if !ar.Network.OutsideWindow {
		if ok, next := inWindow(d.Settings.MaintenanceWindows, now); !ok {
			return ar, d, errorf(http.StatusConflict, "outside_maintenance_window", "deployment %s/%s takes network changes only in its maintenance windows: %s (a request made with --outside-maintenance-window, approved as such, may change it now)", d.Tenant, d.Name, next)
		}
	}
	return ar, d, nil
}

func (b *Broker) handleNetworkChange(teardown bool) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		m, err := b.netManager()
		if err != nil {
			return err
		}
		op := "apply"
		if teardown {
			op = "teardown"
		}
		ar, d, err := b.networkRequest(r, op)
		if err != nil {
			return err
		}
		ctx := context.WithValue(r.Context(), netCallKey{}, netCall{ar: ar, actor: actorOf(r)})
		engineer := displayName(person(principalFrom(r.Context())))
		var plan netmgr.Plan
		if teardown {
			plan, err = b.teardown(ctx, ar, d.Settings.Network, engineer)
			b.markTornDown(ctx, ar.ID, err)
		} else {
			plan, err = b.apply(ctx, m, ar, d, engineer)
		}
		typ := audit.NetworkApplied
		if teardown {
			typ = audit.NetworkTornDown
		}
		details := map[string]any{"kind": ar.Network.Kind, "peer_vpc": ar.Network.VPCID, "changed": changed(plan)}
		if ar.NetworkPlan != nil {
			details["plan_digest"] = ar.NetworkPlan.Digest
		}
		var pce *netmgr.PlanChangedError
		if errors.As(err, &pce) {
			details["plan_now"], details["differences"] = pce.Now, pce.Differences
		}
		ev := audit.Event{Type: typ, Actor: actorOf(r), Deployment: ar.DeploymentID, RequestID: ar.ID, Source: audit.Source{IP: r.RemoteAddr}, Outcome: audit.Success, Details: details}
		if err != nil {
			ev.Outcome, ev.Reason = audit.Failure, err.Error()
		}
		if rerr := b.record(ctx, ev); rerr != nil {
			return rerr
		}
		b.changed()
		if err != nil {
			var ae *apiError
			if errors.As(err, &ae) {
				return err
			}
			return netError(err)
		}
		writeJSON(w, http.StatusOK, planView(plan))
		return nil
	}
}

// apply carries out an approved request's change exactly as approved.
func (b *Broker) apply(ctx context.Context, m *netmgr.Manager, ar store.AccessRequest, d store.DeploymentStatus, engineer string) (netmgr.Plan, error) {
	approved, err := approvedIntent(ar)
	if err != nil {
		return netmgr.Plan{}, err
	}
	t, p, err := b.netSides(ctx, ar.Tenant, d.Settings.Network, ar.Network)
	if err != nil {
		return netmgr.Plan{}, err
	}
	p = b.netPeerFor(ctx, ar.Tenant, p)
	if err := b.markApplied(ctx, ar.ID); err != nil {
		return netmgr.Plan{}, fmt.Errorf("record the apply: %w", err)
	}
	tags := netmgr.Tags{Deployment: ar.DeploymentID, Request: ar.ID, Engineer: engineer}
	if ar.Network.Kind == "ingress" {
		return m.EnableApprovedIngress(ctx, t, p, tags, approved)
	}
	return m.ApplyApprovedPeering(ctx, t, p, tags, approved)
}

func (b *Broker) handleNetworkStatus(w http.ResponseWriter, r *http.Request) error {
	m, err := b.netManager()
	if err != nil {
		return err
	}
	ar, d, err := b.networkRequest(r, "status")
	if err != nil {
		return err
	}
	t, p, err := b.netSides(r.Context(), ar.Tenant, d.Settings.Network, ar.Network)
	if err != nil {
		return err
	}
	var st netmgr.Status
	if ar.Network.Kind == "ingress" {
		st, err = m.IngressStatus(r.Context(), t, p)
	} else {
		st, err = m.PeeringStatus(r.Context(), t, p)
	}
	if err != nil {
		return netError(err)
	}
	var drift []string
	for _, it := range st.Items {
		if it.State != "ok" {
			drift = append(drift, it.Resource+": "+it.State)
		}
	}
	if len(drift) > 0 {
		if err := b.record(r.Context(), audit.Event{Type: audit.NetworkDrift, Actor: actorOf(r), Deployment: ar.DeploymentID, RequestID: ar.ID,
			Outcome: audit.Failure, Reason: strings.Join(drift, "; ")}); err != nil {
			return err
		}
	}
	writeJSON(w, http.StatusOK, statusView(st))
	return nil
}

// startNetwork sets up network management with the broker's own AWS
// credentials (from the environment; nothing is called until a network
// change is asked for).
func (b *Broker) startNetwork(ctx context.Context) error {
	cfg, err := awsconfig.LoadDefaultConfig(ctx)
	if err != nil {
		return fmt.Errorf("aws config: %w", err)
	}
	m, err := netmgr.New(netmgr.Config{AWS: cfg, EndpointURL: b.cfg.AWSEndpointURL, Recorder: b.recordAWSCall, PrivateDomain: b.cfg.NetworkPrivateDomain, Now: b.now, Logger: b.cfg.Logger})
	if err != nil {
		return fmt.Errorf("network management: %w", err)
	}
	b.net = m
	return nil
}
