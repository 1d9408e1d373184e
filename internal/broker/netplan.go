package broker

// The approved plan of a network change: planned when the request is
// created, bound to its approvals by digest, applied only as approved,
// torn down when the request is revoked. The rules are internal/netaccess.

import (
	"context"
	"encoding/json"

	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/netaccess"
	"github.com/tetherhq/tether/internal/store"
)

// planNetworkChange plans a network request's change as it is created,
// for its approvers ([netaccess.Service.Plan]).
func (b *Broker) planNetworkChange(ctx context.Context, d store.DeploymentStatus, spec *store.PeeringSpec, requestID, engineer string) (*store.NetworkPlan, error) {
	np, err := b.netacc.Plan(ctx, d, spec, requestID, engineer)
	return np, netAPIError(err)
}

// teardownOnRevoke, called as a request is revoked, schedules the
// teardown of its applied network change at once.
func (b *Broker) teardownOnRevoke(ar *store.AccessRequest) {
	netaccess.ScheduleTeardown(ar, b.now())
}

// runNetworkTeardowns tears down the applied network changes of revoked
// requests, retrying failures with backoff, until ctx ends.
func (b *Broker) runNetworkTeardowns(ctx context.Context) {
	if b.netacc != nil {
		b.netacc.RunTeardowns(ctx, b.cfg.LifecycleInterval)
	}
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
