package netaccess

import (
	"net/netip"
	"regexp"
	"slices"
	"strings"

	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/store"
)

// Bounds of a registration.
const (
	MaxRegisteredVPCs  = 50
	MaxRegisteredRTBs  = 200
	MaxRegisteredCIDRs = 50
)

var (
	accountRE  = regexp.MustCompile(`^[0-9]{12}$`)
	vpcRE      = regexp.MustCompile(`^vpc-([0-9a-f]{8}|[0-9a-f]{17})$`)
	rtbRE      = regexp.MustCompile(`^rtb-([0-9a-f]{8}|[0-9a-f]{17})$`)
	roleARNRE  = regexp.MustCompile(`^arn:aws(-cn|-us-gov)?:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}$`)
	hostnameRE = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$`)
	regionRE   = regexp.MustCompile(`^[a-z]{2,}(-[a-z0-9]+)*-[0-9]+$`)
)

// checkAWS validates the shape of AWS identifiers before anything is
// stored or any call made; each message names the field and what it
// accepts.
func checkAWS(field, value string, re *regexp.Regexp, want string) error {
	if len(value) > 2048 || !re.MatchString(value) {
		return refuse(Invalid, "invalid_"+field, "%s %q: want %s", field, value, want)
	}
	return nil
}

// ParseNetworkConfig validates a deployment's BYOC side as the API gives
// it; nil stays nil (no network configuration).
func ParseNetworkConfig(in *brokerapi.NetworkConfig) (*store.NetworkConfig, error) {
	if in == nil {
		return nil, nil
	}
	checks := []error{
		checkAWS("account_id", in.AccountID, accountRE, "a 12-digit AWS account ID"),
		checkAWS("vpc_id", in.VPCID, vpcRE, "a VPC ID such as vpc-0a1b2c3d4e5f67890"),
		checkAWS("role_arn", in.RoleARN, roleARNRE, "an IAM role ARN such as arn:aws:iam::111111111111:role/TetherNetwork (deploy/aws/tether-network-role.yaml creates it)"),
	}
	if !regionRE.MatchString(in.Region) {
		checks = append(checks, refuse(Invalid, "invalid_region", "region %q: want an AWS region such as us-east-1", in.Region))
	}
	for _, rt := range in.RouteTableIDs {
		checks = append(checks, checkAWS("route_table_ids", rt, rtbRE, "route table IDs such as rtb-0a1b2c3d4e5f67890"))
	}
	if in.PrivateHostname != "" {
		checks = append(checks, checkAWS("private_hostname", in.PrivateHostname, hostnameRE, "the private endpoint's DNS name, such as abc123-private.us-east-1.aws.example.com"))
	}
	for _, err := range checks {
		if err != nil {
			return nil, err
		}
	}
	return &store.NetworkConfig{
		AccountID: in.AccountID, Region: in.Region, VPCID: in.VPCID, RoleARN: in.RoleARN,
		RouteTableIDs: slices.Clone(in.RouteTableIDs), LBTags: in.LBTags, PrivateHostname: in.PrivateHostname,
	}, nil
}

// ParsePeering validates the shape of the peer side of a network change
// request; [Service.CheckRequest] then checks that it is registered to the
// deployment's tenant. It carries no external ID: the broker holds the
// registered role's.
func ParsePeering(in *brokerapi.PeeringSpec) (*store.PeeringSpec, error) {
	if in == nil {
		return nil, refuse(Invalid, "network_spec_required", "a network:peering request needs the change: give network.kind (peering or ingress), account_id, region, vpc_id and role_arn of the peer")
	}
	if in.Kind != "peering" && in.Kind != "ingress" {
		return nil, refuse(Invalid, "invalid_kind", "network.kind %q: want peering or ingress", in.Kind)
	}
	checks := []error{
		checkAWS("peer account_id", in.AccountID, accountRE, "a 12-digit AWS account ID"),
		checkAWS("peer vpc_id", in.VPCID, vpcRE, "a VPC ID such as vpc-0a1b2c3d4e5f67890"),
		checkAWS("peer role_arn", in.RoleARN, roleARNRE, "an IAM role ARN in the peer account, such as arn:aws:iam::222222222222:role/TetherNetwork"),
	}
	if !regionRE.MatchString(in.Region) {
		checks = append(checks, refuse(Invalid, "invalid_region", "peer region %q: want an AWS region such as us-east-1", in.Region))
	}
	for _, rt := range in.RouteTableIDs {
		checks = append(checks, checkAWS("peer route_table_ids", rt, rtbRE, "route table IDs such as rtb-0a1b2c3d4e5f67890"))
	}
	for _, err := range checks {
		if err != nil {
			return nil, err
		}
	}
	return &store.PeeringSpec{Kind: in.Kind, AccountID: in.AccountID, Region: in.Region, VPCID: in.VPCID,
		RoleARN: in.RoleARN, RouteTableIDs: slices.Clone(in.RouteTableIDs), OutsideWindow: in.OutsideWindow}, nil
}

// ParseRegistration validates what a registration of an account to
// tenant names: the account, a role of that account, 1 to
// [MaxRegisteredVPCs] VPCs, and optionally route tables and IPv4 peer
// CIDRs (sorted, without duplicates).
func ParseRegistration(tenant string, in brokerapi.RegisterNetwork) (store.NetworkRegistration, error) {
	reg := store.NetworkRegistration{Tenant: tenant, AccountID: in.AccountID, RoleARN: in.RoleARN}
	if err := checkAWS("account_id", in.AccountID, accountRE, "a 12-digit AWS account ID"); err != nil {
		return reg, err
	}
	if err := checkAWS("role_arn", in.RoleARN, roleARNRE, "an IAM role ARN such as arn:aws:iam::111111111111:role/TetherNetwork (deploy/aws/tether-network-role.yaml creates it)"); err != nil {
		return reg, err
	}
	if acct := strings.SplitN(in.RoleARN, ":", 6)[4]; acct != in.AccountID {
		return reg, refuse(Invalid, "invalid_role_arn", "role_arn %s is a role of account %s, not of account %s: register each account with a role of its own", in.RoleARN, acct, in.AccountID)
	}
	if len(in.VPCIDs) == 0 || len(in.VPCIDs) > MaxRegisteredVPCs {
		return reg, refuse(Invalid, "invalid_vpc_ids", "vpc_ids: want 1 to %d VPCs of account %s that Tether may peer or reach (--vpc vpc-…)", MaxRegisteredVPCs, in.AccountID)
	}
	for _, v := range in.VPCIDs {
		if err := checkAWS("vpc_ids", v, vpcRE, "VPC IDs such as vpc-0a1b2c3d4e5f67890"); err != nil {
			return reg, err
		}
	}
	if len(in.RouteTableIDs) > MaxRegisteredRTBs {
		return reg, refuse(Invalid, "invalid_route_table_ids", "route_table_ids: at most %d", MaxRegisteredRTBs)
	}
	for _, rt := range in.RouteTableIDs {
		if err := checkAWS("route_table_ids", rt, rtbRE, "route table IDs such as rtb-0a1b2c3d4e5f67890"); err != nil {
			return reg, err
		}
	}
	if len(in.PeerCIDRs) > MaxRegisteredCIDRs {
		return reg, refuse(Invalid, "invalid_peer_cidrs", "peer_cidrs: at most %d", MaxRegisteredCIDRs)
	}
	for _, c := range in.PeerCIDRs {
		p, err := netip.ParsePrefix(c)
		if err != nil || !p.Addr().Is4() || p != p.Masked() {
			return reg, refuse(Invalid, "invalid_peer_cidrs", "peer_cidrs %q: want IPv4 CIDR blocks such as 10.1.0.0/16, with no host bits set", truncate(c, 64))
		}
	}
	reg.VPCIDs = uniq(in.VPCIDs)
	reg.RouteTableIDs = uniq(in.RouteTableIDs)
	reg.PeerCIDRs = uniq(in.PeerCIDRs)
	return reg, nil
}

func uniq(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	out := slices.Clone(s)
	slices.Sort(out)
	return slices.Compact(out)
}
