package broker

import (
	"context"

	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/netaccess"
	"github.com/tetherhq/tether/internal/store"
)

// networkFromAPI validates a deployment's BYOC side
// ([netaccess.ParseNetworkConfig]).
func networkFromAPI(in *brokerapi.NetworkConfig) (*store.NetworkConfig, error) {
	n, err := netaccess.ParseNetworkConfig(in)
	return n, netAPIError(err)
}

func networkView(n *store.NetworkConfig) *brokerapi.NetworkConfig {
	if n == nil {
		return nil
	}
	return &brokerapi.NetworkConfig{
		AccountID: n.AccountID, Region: n.Region, VPCID: n.VPCID, RoleARN: n.RoleARN,
		RouteTableIDs: n.RouteTableIDs, LBTags: n.LBTags, PrivateHostname: n.PrivateHostname,
	}
}

// peeringFromAPI validates the shape of the peer side of a network change
// request ([netaccess.ParsePeering]); [Broker.checkNetworkRequest] then
// checks that it is registered to the deployment's tenant.
func peeringFromAPI(in *brokerapi.PeeringSpec) (*store.PeeringSpec, error) {
	s, err := netaccess.ParsePeering(in)
	return s, netAPIError(err)
}

func peeringView(s *store.PeeringSpec) *brokerapi.PeeringSpec {
	if s == nil {
		return nil
	}
	return &brokerapi.PeeringSpec{Kind: s.Kind, AccountID: s.AccountID, Region: s.Region, VPCID: s.VPCID,
		RoleARN: s.RoleARN, RouteTableIDs: s.RouteTableIDs, OutsideWindow: s.OutsideWindow}
}

// checkNetworkConfig checks that a deployment's BYOC side is registered
// to its tenant.
func (b *Broker) checkNetworkConfig(ctx context.Context, tenant string, n *store.NetworkConfig) error {
	return netAPIError(b.netacc.CheckConfig(ctx, tenant, n))
}

// checkNetworkRequest checks that a network change names only what is
// registered to the deployment's tenant: its own BYOC side and the peer.
func (b *Broker) checkNetworkRequest(ctx context.Context, tenant string, n *store.NetworkConfig, spec *store.PeeringSpec) error {
	return netAPIError(b.netacc.CheckRequest(ctx, tenant, n, spec))
}
