package broker

import (
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"time"

	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/store"
)

var (
	accountRE  = regexp.MustCompile(`^[0-9]{12}$`)
	vpcRE      = regexp.MustCompile(`^vpc-([0-9a-f]{8}|[0-9a-f]{17})$`)
	rtbRE      = regexp.MustCompile(`^rtb-([0-9a-f]{8}|[0-9a-f]{17})$`)
	roleARNRE  = regexp.MustCompile(`^arn:aws(-cn|-us-gov)?:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}$`)
	hostnameRE = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$`)
)

// checkAWS validates the shape of AWS identifiers before anything is
// stored or any call made; each message names the field and what it
// accepts.
func checkAWS(field, value string, re *regexp.Regexp, want string) error {
	if len(value) > 2048 || !re.MatchString(value) {
		return errorf(http.StatusBadRequest, "invalid_"+field, "%s %q: want %s", field, value, want)
	}
	return nil
}

func networkFromAPI(in *brokerapi.NetworkConfig) (*store.NetworkConfig, error) {
	if in == nil {
		return nil, nil
	}
	checks := []error{
		checkAWS("account_id", in.AccountID, accountRE, "a 12-digit AWS account ID"),
		checkAWS("vpc_id", in.VPCID, vpcRE, "a VPC ID such as vpc-0a1b2c3d4e5f67890"),
		checkAWS("role_arn", in.RoleARN, roleARNRE, "an IAM role ARN such as arn:aws:iam::111111111111:role/TetherNetwork (deploy/aws/tether-network-role.yaml creates it)"),
	}
	if !regionRE.MatchString(in.Region) {
		checks = append(checks, errorf(http.StatusBadRequest, "invalid_region", "region %q: want an AWS region such as us-east-1", in.Region))
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
// request; [Broker.checkNetworkRequest] then checks that it is registered
// to the deployment's tenant. It carries no external ID: the broker holds
// the registered role's.
func peeringFromAPI(in *brokerapi.PeeringSpec) (*store.PeeringSpec, error) {
	if in == nil {
		return nil, errorf(http.StatusBadRequest, "network_spec_required", "a network:peering request needs the change: give network.kind (peering or ingress), account_id, region, vpc_id and role_arn of the peer")
	}
	if in.Kind != "peering" && in.Kind != "ingress" {
		return nil, errorf(http.StatusBadRequest, "invalid_kind", "network.kind %q: want peering or ingress", in.Kind)
	}
	checks := []error{
		checkAWS("peer account_id", in.AccountID, accountRE, "a 12-digit AWS account ID"),
		checkAWS("peer vpc_id", in.VPCID, vpcRE, "a VPC ID such as vpc-0a1b2c3d4e5f67890"),
		checkAWS("peer role_arn", in.RoleARN, roleARNRE, "an IAM role ARN in the peer account, such as arn:aws:iam::222222222222:role/TetherNetwork"),
	}
	if !regionRE.MatchString(in.Region) {
		checks = append(checks, errorf(http.StatusBadRequest, "invalid_region", "peer region %q: want an AWS region such as us-east-1", in.Region))
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

func peeringView(s *store.PeeringSpec) *brokerapi.PeeringSpec {
	if s == nil {
		return nil
	}
	return &brokerapi.PeeringSpec{Kind: s.Kind, AccountID: s.AccountID, Region: s.Region, VPCID: s.VPCID,
		RoleARN: s.RoleARN, RouteTableIDs: s.RouteTableIDs, OutsideWindow: s.OutsideWindow}
}

// inWindow reports whether now falls in one of the deployment's
// maintenance windows, and names the next one when it does not. No
// windows means any time.
func inWindow(ws []store.Window, now time.Time) (bool, string) {
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
