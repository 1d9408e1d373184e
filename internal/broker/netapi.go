package broker

// The network change API: plan, apply, teardown and status of approved
// network:peering requests. The rules and the calls to netmgr are
// internal/netaccess; these handlers decode, authorize, call and encode.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/netaccess"
	"github.com/tetherhq/tether/internal/netmgr"
)

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
	if err := b.netacc.Configured(); err != nil {
		return netAPIError(err)
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
	plan, err := b.netacc.Preview(r.Context(), netCaller(r), d, spec)
	if err != nil {
		return netAPIError(err)
	}
	writeJSON(w, http.StatusOK, planView(plan))
	return nil
}

func (b *Broker) handleNetworkChange(teardown bool) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		if err := b.netacc.Configured(); err != nil {
			return netAPIError(err)
		}
		op := netaccess.OpApply
		if teardown {
			op = netaccess.OpTeardown
		}
		ar, err := b.loadRequest(r.Context(), r.PathValue("id"))
		if err != nil {
			return err
		}
		c := netCaller(r)
		d, err := b.netacc.Prepare(r.Context(), c, op, ar)
		if err != nil {
			return netAPIError(err)
		}
		plan, err := b.netacc.Change(r.Context(), c, ar, d, teardown)
		if err != nil {
			var ae *apiError
			if errors.As(err, &ae) {
				return err
			}
			return netAPIError(netaccess.NetError(err))
		}
		writeJSON(w, http.StatusOK, planView(plan))
		return nil
	}
}

func (b *Broker) handleNetworkStatus(w http.ResponseWriter, r *http.Request) error {
	if err := b.netacc.Configured(); err != nil {
		return netAPIError(err)
	}
	ar, err := b.loadRequest(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	c := netCaller(r)
	d, err := b.netacc.Prepare(r.Context(), c, netaccess.OpStatus, ar)
	if err != nil {
		return netAPIError(err)
	}
	st, err := b.netacc.Status(r.Context(), c, ar, d)
	if err != nil {
		return netAPIError(err)
	}
	writeJSON(w, http.StatusOK, statusView(st))
	return nil
}

// netAudit records the network domain's events in the broker's log.
type netAudit struct{ b *Broker }

func (a netAudit) Record(ctx context.Context, e audit.Event) error { return a.b.record(ctx, e) }

// awsCallAudit records netmgr's aws.call events; its error, unwrapped,
// stops the change.
type awsCallAudit struct{ b *Broker }

func (a awsCallAudit) Record(ctx context.Context, e audit.Event) error {
	return a.b.auditLog.Record(ctx, e)
}

// startNetwork sets up network management with the broker's own AWS
// credentials (from the environment; nothing is called until a network
// change is asked for).
func (b *Broker) startNetwork(ctx context.Context) error {
	var opts []func(*awsconfig.LoadOptions) error
	if u, err := url.Parse(b.cfg.AWSEndpointURL); err == nil && isLoopback(u.Hostname()) {
		// A local emulator (moto_server): credentials and region come
		// from the environment, and nothing asks the host's instance
		// metadata service, which is not the emulator's.
		opts = append(opts, awsconfig.WithEC2IMDSClientEnableState(imds.ClientDisabled))
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return fmt.Errorf("aws config: %w", err)
	}
	var svc *netaccess.Service
	m, err := netmgr.New(netmgr.Config{AWS: cfg, EndpointURL: b.cfg.AWSEndpointURL, Recorder: func(ctx context.Context, c netmgr.Call) error { return svc.RecordAWSCall(ctx, c) },
		PrivateDomain: b.cfg.NetworkPrivateDomain, Now: b.now, Logger: b.cfg.Logger})
	if err != nil {
		return fmt.Errorf("network management: %w", err)
	}
	svc = netaccess.New(netaccess.Config{
		Store: b.store, Audit: netAudit{b}, CallAudit: awsCallAudit{b}, Manager: m, Seal: b.netSeal, KnownTenant: b.knownTenant,
		UpdateRequest: b.update, Changed: b.changed, Now: b.now, Logger: b.log,
	})
	b.netacc = svc
	return nil
}
