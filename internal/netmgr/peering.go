package netmgr

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// Tag keys written on everything Tether creates.
const (
	TagManaged    = "tether:managed"
	TagDeployment = "tether:deployment"
	TagRequest    = "tether:request"
)

// Defaults for [Target].
var (
	DefaultLBTags                = map[string]string{"tether:ingress": "private"}
	DefaultLBSecurityGroupPrefix = "k8s-istioing-istioing-"
	DefaultServicePorts          = []int32{8443, 9440}
)

// Step is one resource of a plan, and what applying does to it.
type Step struct {
	Action   string // "create", "modify", "delete" or "none"
	Resource string // for people: "route 10.1.0.0/16 → pcx-… in rtb-…"
	Account  string
	ID       string // the existing resource, if any
}

// Plan is what an operation will do, or did.
type Plan struct {
	Steps    []Step
	Warnings []string
	// Intent is the state a plan or apply makes, for the approvers (nil
	// for teardown and disable).
	Intent *Intent
}

// Changes reports whether the plan changes anything.
func (p Plan) Changes() bool {
	return slices.ContainsFunc(p.Steps, func(s Step) bool { return s.Action != "none" })
}

// ItemStatus is the state of one resource: "ok", "missing" or "drifted".
type ItemStatus struct{ Resource, ID, State, Detail string }

// Status is the state of every resource of a peering or ingress.
type Status struct{ Items []ItemStatus }

// OK reports whether every item is ok.
func (s Status) OK() bool {
	return !slices.ContainsFunc(s.Items, func(i ItemStatus) bool { return i.State != "ok" })
}

// Item states.
const (
	StateOK      = "ok"
	StateMissing = "missing"
	StateDrifted = "drifted"
)

// livePeering lists the peering states in which a connection exists or
// is on its way.
var livePeering = []string{"initiating-request", "pending-acceptance", "provisioning", "active"}

func withDefaults(t Target) Target {
	if len(t.LBTags) == 0 {
		t.LBTags = DefaultLBTags
	}
	if t.LBSecurityGroupPrefix == "" {
		t.LBSecurityGroupPrefix = DefaultLBSecurityGroupPrefix
	}
	if len(t.ServicePorts) == 0 {
		t.ServicePorts = DefaultServicePorts
	}
	return t
}

// view is what netmgr reads of both sides before it plans.
type view struct {
	t                    Target
	p                    Peer
	byoc, peer           *session
	byocCIDRs, peerCIDRs []netip.Prefix
	// pcx is Tether's live peering connection for the pair, if any; all
	// holds every Tether peering connection of the pair, in any state.
	pcx     *ec2types.VpcPeeringConnection
	allPcx  []string
	byocRTs []ec2types.RouteTable
	peerRTs []ec2types.RouteTable
	sg      string
	sgRules []ec2types.SecurityGroupRule
	// warnings are for the plan.
	warnings []string
}

func (v *view) pairName() string {
	return fmt.Sprintf("VPC peering connection %s ↔ %s", v.t.VPCID, v.p.VPCID)
}

// readMode says how much observe checks.
type readMode int

const (
	forApply    readMode = iota // everything: overlap, size, AZs
	forStatus                   // what status reports on
	forTeardown                 // only what teardown deletes; missing pieces are fine
)

// observe validates t and p, then reads both sides. Nothing is changed.
// tags, if set, narrows Tether's peering connections to those of its
// deployment and, when tags.Request is set, of that request (see
// [ownedBy]).
func (m *Manager) observe(ctx context.Context, t Target, p Peer, tags *Tags, mode readMode) (*view, error) {
	if err := validatePair(t, p, tags); err != nil {
		return nil, err
	}
	t = withDefaults(t)
	v := &view{t: t, p: p}
	var err error
	if v.byoc, err = m.session(ctx, targetSide(t).actingFor(tags)); err != nil {
		return nil, err
	}
	if v.peer, err = m.session(ctx, peerSide(p).actingFor(tags)); err != nil {
		return nil, err
	}

	byocVPC, err := describeVPC(ctx, v.byoc, "BYOC", t.VPCID)
	if err != nil {
		return nil, err
	}
	if v.byocCIDRs, err = vpcCIDRs("BYOC", byocVPC); err != nil {
		return nil, err
	}
	peerVPC, err := describeVPC(ctx, v.peer, "peer", p.VPCID)
	switch {
	case errors.Is(err, ErrNotFound) && mode == forTeardown:
		// The customer deleted their VPC first: there is nothing to
		// clean up on their side.
	case err != nil:
		return nil, err
	default:
		if v.peerCIDRs, err = vpcCIDRs("peer", peerVPC); err != nil {
			return nil, err
		}
	}

	if mode == forApply {
		primary, err := netip.ParsePrefix(aws.ToString(byocVPC.CidrBlock))
		if err != nil {
			return nil, invalid("BYOC VPC %s CIDR %q from AWS: %v", t.VPCID, aws.ToString(byocVPC.CidrBlock), err)
		}
		warn, err := checkSize(t.VPCID, primary)
		if err != nil {
			return nil, err
		}
		if warn != "" {
			v.warnings = append(v.warnings, warn)
		}
		if a, b, ok := overlap(v.peerCIDRs, v.byocCIDRs); ok {
			return nil, fmt.Errorf("peer VPC %s CIDR %s overlaps BYOC VPC %s CIDR %s; peer a VPC whose ranges do not overlap: %w", p.VPCID, a, t.VPCID, b, ErrOverlap)
		}
	}

	// Every peering connection of the BYOC VPC, on either end.
	var pcxs []ec2types.VpcPeeringConnection
	for _, end := range []string{"requester-vpc-info.vpc-id", "accepter-vpc-info.vpc-id"} {
		pg := ec2.NewDescribeVpcPeeringConnectionsPaginator(v.byoc.ec2, &ec2.DescribeVpcPeeringConnectionsInput{
			Filters: []ec2types.Filter{{Name: aws.String(end), Values: []string{t.VPCID}}},
		})
		for pg.HasMorePages() {
			out, err := pg.NextPage(ctx)
			if err != nil {
				return nil, fmt.Errorf("list peering connections of BYOC VPC %s: %w", t.VPCID, err)
			}
			for _, c := range out.VpcPeeringConnections {
				// Filter again: moto ignores these filters, and a
				// connection of the VPC to itself would come twice.
				mine := aws.ToString(c.RequesterVpcInfo.VpcId) == t.VPCID || aws.ToString(c.AccepterVpcInfo.VpcId) == t.VPCID
				dup := slices.ContainsFunc(pcxs, func(d ec2types.VpcPeeringConnection) bool {
					return aws.ToString(d.VpcPeeringConnectionId) == aws.ToString(c.VpcPeeringConnectionId)
				})
				if mine && !dup {
					pcxs = append(pcxs, c)
				}
			}
		}
	}
	for i, c := range pcxs {
		live := c.Status != nil && slices.Contains(livePeering, string(c.Status.Code))
		req, acc := aws.ToString(c.RequesterVpcInfo.VpcId), aws.ToString(c.AccepterVpcInfo.VpcId)
		samePair := (req == t.VPCID && acc == p.VPCID) || (req == p.VPCID && acc == t.VPCID)
		ours := req == t.VPCID && acc == p.VPCID && ownedBy(c.Tags, tags)
		switch {
		case ours:
			v.allPcx = append(v.allPcx, aws.ToString(c.VpcPeeringConnectionId))
			if live && v.pcx == nil {
				v.pcx = &pcxs[i]
			}
		case live && samePair && mode == forApply:
			made := "not made by Tether"
			if tagValue(c.Tags, TagManaged) == "true" {
				made = "made by Tether for request " + orNone(tagValue(c.Tags, TagRequest))
			}
			return nil, fmt.Errorf("BYOC VPC %s and peer VPC %s are already peered by %s (%s, %s); Tether changes only what it created for this request: tear that peering down first: %w",
				t.VPCID, p.VPCID, aws.ToString(c.VpcPeeringConnectionId), c.Status.Code, made, ErrConflict)
		case live && mode == forApply:
			other := c.AccepterVpcInfo
			if aws.ToString(other.VpcId) == t.VPCID {
				other = c.RequesterVpcInfo
			}
			cidrs, err := parseCIDRs("peered VPC", peeringCIDRs(other))
			if err != nil {
				return nil, err
			}
			if a, b, ok := overlap(v.peerCIDRs, cidrs); ok {
				return nil, fmt.Errorf("peer VPC %s CIDR %s overlaps %s of VPC %s, already peered with BYOC VPC %s by %s (%s); choose a VPC whose ranges do not overlap: %w",
					p.VPCID, a, b, aws.ToString(other.VpcId), t.VPCID, aws.ToString(c.VpcPeeringConnectionId), c.Status.Code, ErrOverlap)
			}
		}
	}

	if v.byocRTs, err = routeTables(ctx, v.byoc, "BYOC", t.VPCID, t.RouteTableIDs, mode == forTeardown); err != nil {
		return nil, err
	}
	if peerVPC != nil {
		if v.peerRTs, err = routeTables(ctx, v.peer, "peer", p.VPCID, p.RouteTableIDs, mode == forTeardown); err != nil {
			return nil, err
		}
	}

	if mode == forApply {
		if err := v.checkPeerCIDRs(); err != nil {
			return nil, err
		}
		if err := v.routeConflicts(); err != nil {
			return nil, err
		}
		warn, err := azOverlap(ctx, v.byoc, v.peer, t.VPCID, p.VPCID)
		if err != nil {
			return nil, err
		}
		if warn != "" {
			v.warnings = append(v.warnings, warn)
		}
	}

	v.sg, err = m.lbSecurityGroup(ctx, v.byoc, t)
	if errors.Is(err, ErrNotFound) && mode == forTeardown {
		return v, nil
	}
	if err != nil {
		return nil, err
	}
	pg := ec2.NewDescribeSecurityGroupRulesPaginator(v.byoc.ec2, &ec2.DescribeSecurityGroupRulesInput{
		Filters: []ec2types.Filter{{Name: aws.String("group-id"), Values: []string{v.sg}}},
	})
	for pg.HasMorePages() {
		out, err := pg.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list rules of security group %s: %w", v.sg, err)
		}
		for _, r := range out.SecurityGroupRules {
			if !aws.ToBool(r.IsEgress) {
				v.sgRules = append(v.sgRules, r)
			}
		}
	}
	return v, nil
}

func describeVPC(ctx context.Context, s *session, what, id string) (*ec2types.Vpc, error) {
	out, err := s.ec2.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{VpcIds: []string{id}})
	if isCode(err, "InvalidVpcID.NotFound") || (err == nil && len(out.Vpcs) == 0) {
		return nil, fmt.Errorf("%s VPC %s not found in account %s region %s; check the VPC ID and region: %w", what, id, s.account, s.region, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("describe %s VPC %s: %w", what, id, err)
	}
	return &out.Vpcs[0], nil
}

// vpcCIDRs returns every IPv4 CIDR block associated with the VPC.
func vpcCIDRs(what string, vpc *ec2types.Vpc) ([]netip.Prefix, error) {
	blocks := []string{aws.ToString(vpc.CidrBlock)}
	for _, a := range vpc.CidrBlockAssociationSet {
		if a.CidrBlockState != nil && a.CidrBlockState.State != ec2types.VpcCidrBlockStateCodeAssociated {
			continue
		}
		if c := aws.ToString(a.CidrBlock); !slices.Contains(blocks, c) {
			blocks = append(blocks, c)
		}
	}
	return parseCIDRs(what+" VPC "+aws.ToString(vpc.VpcId), blocks)
}

func peeringCIDRs(info *ec2types.VpcPeeringConnectionVpcInfo) []string {
	if info == nil {
		return nil
	}
	blocks := []string{}
	if c := aws.ToString(info.CidrBlock); c != "" {
		blocks = append(blocks, c)
	}
	for _, b := range info.CidrBlockSet {
		if c := aws.ToString(b.CidrBlock); c != "" && !slices.Contains(blocks, c) {
			blocks = append(blocks, c)
		}
	}
	return blocks
}

// routeTables returns the given route tables, or all of the VPC's.
// Unless lenient, a given table that is missing or in another VPC is an
// error.
func routeTables(ctx context.Context, s *session, what, vpc string, ids []string, lenient bool) ([]ec2types.RouteTable, error) {
	in := &ec2.DescribeRouteTablesInput{Filters: []ec2types.Filter{{Name: aws.String("vpc-id"), Values: []string{vpc}}}}
	var out []ec2types.RouteTable
	pg := ec2.NewDescribeRouteTablesPaginator(s.ec2, in)
	for pg.HasMorePages() {
		page, err := pg.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list route tables of %s VPC %s: %w", what, vpc, err)
		}
		out = append(out, page.RouteTables...)
	}
	if len(ids) == 0 || lenient {
		// Teardown looks at every table: the configured set may have
		// changed since apply.
		return out, nil
	}
	var picked []ec2types.RouteTable
	for _, id := range ids {
		i := slices.IndexFunc(out, func(rt ec2types.RouteTable) bool { return aws.ToString(rt.RouteTableId) == id })
		if i < 0 {
			return nil, fmt.Errorf("%s route table %s not found in VPC %s (account %s); list only tables of that VPC: %w", what, id, vpc, s.account, ErrNotFound)
		}
		picked = append(picked, out[i])
	}
	return picked, nil
}

// azOverlap describes how many peer subnets share an AZ ID (not name:
// names are shuffled per account) with the BYOC VPC's subnets.
func azOverlap(ctx context.Context, byoc, peer *session, byocVPC, peerVPC string) (string, error) {
	byocAZ, err := subnetAZIDs(ctx, byoc, byocVPC)
	if err != nil {
		return "", err
	}
	peerAZ, err := subnetAZIDs(ctx, peer, peerVPC)
	if err != nil {
		return "", err
	}
	if len(peerAZ) == 0 {
		return fmt.Sprintf("peer VPC %s has no subnets", peerVPC), nil
	}
	var shared []string
	n := 0
	for _, az := range peerAZ {
		if slices.Contains(byocAZ, az) {
			n++
			shared = append(shared, az)
		}
	}
	sort.Strings(shared)
	shared = slices.Compact(shared)
	if n == 0 {
		return fmt.Sprintf("0 of %d peer subnets share an AZ ID with the BYOC VPC; traffic will cross AZs, which costs more", len(peerAZ)), nil
	}
	return fmt.Sprintf("%d of %d peer subnets share an AZ ID with the BYOC VPC: %s", n, len(peerAZ), strings.Join(shared, ", ")), nil
}

// subnetAZIDs returns the AZ ID of each subnet of the VPC.
func subnetAZIDs(ctx context.Context, s *session, vpc string) ([]string, error) {
	var ids []string
	pg := ec2.NewDescribeSubnetsPaginator(s.ec2, &ec2.DescribeSubnetsInput{
		Filters: []ec2types.Filter{{Name: aws.String("vpc-id"), Values: []string{vpc}}},
	})
	for pg.HasMorePages() {
		out, err := pg.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list subnets of VPC %s: %w", vpc, err)
		}
		for _, sn := range out.Subnets {
			ids = append(ids, aws.ToString(sn.AvailabilityZoneId))
		}
	}
	return ids, nil
}

// lbSecurityGroup finds the private load balancer's security group: the
// one group of the VPC named with the prefix or, if several are, the one
// the load balancer tagged LBTags uses.
func (m *Manager) lbSecurityGroup(ctx context.Context, s *session, t Target) (string, error) {
	var ids []string
	pg := ec2.NewDescribeSecurityGroupsPaginator(s.ec2, &ec2.DescribeSecurityGroupsInput{
		Filters: []ec2types.Filter{
			{Name: aws.String("vpc-id"), Values: []string{t.VPCID}},
			{Name: aws.String("group-name"), Values: []string{t.LBSecurityGroupPrefix + "*"}},
		},
	})
	for pg.HasMorePages() {
		out, err := pg.NextPage(ctx)
		if err != nil {
			return "", fmt.Errorf("list security groups of BYOC VPC %s: %w", t.VPCID, err)
		}
		for _, g := range out.SecurityGroups {
			if strings.HasPrefix(aws.ToString(g.GroupName), t.LBSecurityGroupPrefix) {
				ids = append(ids, aws.ToString(g.GroupId))
			}
		}
	}
	switch len(ids) {
	case 0:
		return "", fmt.Errorf("no security group named %s* in BYOC VPC %s (account %s); is the private load balancer deployed, and is LBSecurityGroupPrefix right: %w", t.LBSecurityGroupPrefix, t.VPCID, s.account, ErrNotFound)
	case 1:
		return ids[0], nil
	}
	lb, err := m.findLB(ctx, s, t)
	if err != nil {
		return "", fmt.Errorf("several security groups named %s* in BYOC VPC %s (%s), so the load balancer must pick: %w", t.LBSecurityGroupPrefix, t.VPCID, strings.Join(ids, ", "), err)
	}
	var picked []string
	for _, id := range lb.SecurityGroups {
		if slices.Contains(ids, id) {
			picked = append(picked, id)
		}
	}
	if len(picked) != 1 {
		return "", invalid("several security groups named %s* in BYOC VPC %s (%s) and the private load balancer %s uses %d of them; narrow LBSecurityGroupPrefix", t.LBSecurityGroupPrefix, t.VPCID, strings.Join(ids, ", "), aws.ToString(lb.LoadBalancerName), len(picked))
	}
	return picked[0], nil
}

// routeState says whether rt routes cidr through pcx.
func routeState(rt ec2types.RouteTable, cidr netip.Prefix, pcx string) (state, detail string) {
	for _, r := range rt.Routes {
		d, err := netip.ParsePrefix(aws.ToString(r.DestinationCidrBlock))
		if err != nil || d.Masked() != cidr {
			continue
		}
		target := routeTarget(r)
		switch {
		case pcx != "" && aws.ToString(r.VpcPeeringConnectionId) == pcx && r.State != ec2types.RouteStateBlackhole:
			return StateOK, ""
		case r.State == ec2types.RouteStateBlackhole:
			return StateDrifted, "route is a blackhole via " + target
		default:
			return StateDrifted, "route points to " + target
		}
	}
	return StateMissing, ""
}

func routeTarget(r ec2types.Route) string {
	for _, s := range []*string{r.VpcPeeringConnectionId, r.GatewayId, r.NatGatewayId, r.TransitGatewayId, r.NetworkInterfaceId, r.InstanceId, r.LocalGatewayId, r.CarrierGatewayId, r.EgressOnlyInternetGatewayId, r.CoreNetworkArn} {
		if aws.ToString(s) != "" {
			return aws.ToString(s)
		}
	}
	return "an unknown target"
}

// ownedBy reports whether a resource's tags make it Tether's for tags:
// managed, of tags.Deployment and, when tags.Request is set, of that
// request. Nil tags take any Tether resource.
func ownedBy(have []ec2types.Tag, tags *Tags) bool {
	if tagValue(have, TagManaged) != "true" {
		return false
	}
	if tags == nil {
		return true
	}
	return tagValue(have, TagDeployment) == tags.Deployment && (tags.Request == "" || tagValue(have, TagRequest) == tags.Request)
}

// checkPeerCIDRs refuses a peer CIDR outside private address space that
// the customer has not registered: Tether would open the load balancer
// to it.
func (v *view) checkPeerCIDRs() error {
	for _, c := range v.peerCIDRs {
		if IsPrivateCIDR(c) || (v.p.PublicCIDROK != nil && v.p.PublicCIDROK(c)) {
			continue
		}
		return fmt.Errorf("peer VPC %s CIDR %s is not private address space (RFC 1918 or 100.64.0.0/10) and the customer has not registered it; Tether opens the private endpoint only to private ranges or to ranges the customer registered: %w", v.p.VPCID, c, ErrPublicCIDR)
	}
	return nil
}

// routeConflicts refuses when a route table Tether would add a route to
// already routes an overlapping destination through anything but this
// request's peering connection (an internet gateway, a NAT, another
// peering, a transit gateway): apply would replace it and teardown
// delete it. The VPC's local routes (checked as overlap) and default
// routes (less specific than any CIDR) are no conflict.
func (v *view) routeConflicts() error {
	var found []string
	for _, side := range []struct {
		account string
		rts     []ec2types.RouteTable
		cidrs   []netip.Prefix
		what    string
	}{{v.t.AccountID, v.byocRTs, v.peerCIDRs, "peer"}, {v.p.AccountID, v.peerRTs, v.byocCIDRs, "BYOC"}} {
		for _, rt := range side.rts {
			for _, r := range rt.Routes {
				d, err := netip.ParsePrefix(aws.ToString(r.DestinationCidrBlock))
				if err != nil || d.Bits() == 0 || aws.ToString(r.GatewayId) == "local" {
					continue
				}
				if via := aws.ToString(r.VpcPeeringConnectionId); via != "" && slices.Contains(v.allPcx, via) {
					continue
				}
				for _, c := range side.cidrs {
					if d.Masked().Overlaps(c) {
						found = append(found, fmt.Sprintf("route table %s (account %s) routes %s via %s, which overlaps %s CIDR %s", aws.ToString(rt.RouteTableId), side.account, d, routeTarget(r), side.what, c))
					}
				}
			}
		}
	}
	if len(found) == 0 {
		return nil
	}
	return fmt.Errorf("%s; Tether changes only routes it created: remove or narrow those routes, or peer a VPC with other ranges: %w", strings.Join(found, "; "), ErrConflict)
}
