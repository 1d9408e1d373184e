package netmgr

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
)

// PlanPeering validates t, p and tags, reads both sides and returns what
// [Manager.ApplyPeering] would do, with the [Intent] to approve. It
// changes nothing; on any error, including an overlap, a conflict with a
// route Tether did not make, a public peer CIDR, a too-small BYOC VPC or
// a missing load balancer security group, it returns no plan.
func (m *Manager) PlanPeering(ctx context.Context, t Target, p Peer, tags Tags) (Plan, error) {
	return m.converge(ctx, t, p, tags, true, nil)
}

// ApplyPeering converges the peering of t and p: it creates the peering
// connection from the BYOC side, accepts it as the peer, adds routes on
// both sides and opens the service ports on the load balancer's security
// group to the peer. It returns the steps it took; on error, those up to
// and including the failed one. Applying again after an error completes
// the work; applying again after success changes nothing. Everything it
// creates carries tags.Request, which must be set.
func (m *Manager) ApplyPeering(ctx context.Context, t Target, p Peer, tags Tags) (Plan, error) {
	return m.converge(ctx, t, p, tags, false, nil)
}

// ApplyApprovedPeering is [Manager.ApplyPeering] for an approved change:
// it first observes both sides and refuses, changing nothing, with a
// [*PlanChangedError] when the intent it would make differs from
// approved in any way.
func (m *Manager) ApplyApprovedPeering(ctx context.Context, t Target, p Peer, tags Tags, approved Intent) (Plan, error) {
	return m.converge(ctx, t, p, tags, false, &approved)
}

// converge plans (dry) or applies the peering; sharing the code keeps the
// plan honest.
func (m *Manager) converge(ctx context.Context, t Target, p Peer, tags Tags, dry bool, approved *Intent) (Plan, error) {
	if !dry && tags.Request == "" {
		return Plan{}, invalid("request tag is empty: every resource Tether makes carries its request, so that teardown removes only that request's")
	}
	v, err := m.observe(ctx, t, p, &tags, forApply)
	if err != nil {
		return Plan{}, err
	}
	in := v.intent("peering")
	if err := checkApproved(approved, in); err != nil {
		return Plan{}, err
	}
	plan := Plan{Warnings: v.warnings, Intent: &in}
	add := func(s Step) { plan.Steps = append(plan.Steps, s) }
	t, tagList := v.t, tetherTags(tags)

	// The peering connection, requested by the BYOC side.
	pcx, status := "", ""
	if v.pcx != nil {
		pcx, status = aws.ToString(v.pcx.VpcPeeringConnectionId), string(v.pcx.Status.Code)
		add(Step{Action: "none", Resource: v.pairName(), Account: t.AccountID, ID: pcx})
	} else {
		add(Step{Action: "create", Resource: v.pairName(), Account: t.AccountID})
		status = "initiating-request"
		if !dry {
			if pcx, err = m.createPeering(ctx, v, tagList); err != nil {
				return plan, err
			}
			plan.Steps[len(plan.Steps)-1].ID = pcx
		}
	}
	if !dry && status == "initiating-request" {
		if status, err = m.waitPeering(ctx, v.byoc, pcx, "pending-acceptance", "active"); err != nil {
			return plan, err
		}
	}

	// Acceptance, by the peer.
	accept := Step{Action: "none", Resource: "acceptance of " + v.pairName() + " by the peer", Account: p.AccountID, ID: pcx}
	if status == "initiating-request" || status == "pending-acceptance" {
		accept.Action = "modify"
	}
	add(accept)
	if !dry && accept.Action == "modify" {
		err := m.mutate(ctx, v.peer, []string{pcx}, func(ctx context.Context) ([]string, error) {
			_, err := v.peer.ec2.AcceptVpcPeeringConnection(ctx, &ec2.AcceptVpcPeeringConnectionInput{VpcPeeringConnectionId: aws.String(pcx)})
			return nil, err
		})
		if err != nil {
			return plan, fmt.Errorf("accept peering connection %s as account %s: %w", pcx, p.AccountID, err)
		}
		status = "provisioning"
	}
	if !dry && status != "active" {
		if _, err = m.waitPeering(ctx, v.byoc, pcx, "active"); err != nil {
			return plan, err
		}
	}

	// Routes, both ways.
	shown := pcx
	if shown == "" {
		shown = "the new peering connection"
	}
	for _, side := range []struct {
		s     *session
		rts   []ec2types.RouteTable
		cidrs []netip.Prefix
	}{{v.byoc, v.byocRTs, v.peerCIDRs}, {v.peer, v.peerRTs, v.byocCIDRs}} {
		for _, rt := range side.rts {
			rtb := aws.ToString(rt.RouteTableId)
			for _, cidr := range side.cidrs {
				state, _ := routeState(rt, cidr, pcx)
				step := Step{Action: "none", Resource: fmt.Sprintf("route %s → %s in %s", cidr, shown, rtb), Account: side.s.account, ID: rtb}
				switch state {
				case StateMissing:
					step.Action = "create"
				case StateDrifted:
					step.Action = "modify"
				}
				add(step)
				if dry || step.Action == "none" {
					continue
				}
				if err := m.putRoute(ctx, side.s, rtb, cidr, pcx, step.Action == "modify"); err != nil {
					return plan, err
				}
			}
		}
	}

	// The load balancer's security group, one rule per CIDR and port.
	for _, cidr := range v.peerCIDRs {
		for _, port := range t.ServicePorts {
			step := Step{Action: "none", Resource: fmt.Sprintf("ingress %s tcp/%d on %s", cidr, port, v.sg), Account: t.AccountID, ID: v.sg}
			if id := findRule(v.sgRules, cidr, port); id == "" {
				step.Action = "create"
			} else {
				step.ID = id
			}
			add(step)
			if dry || step.Action == "none" {
				continue
			}
			id, err := m.authorize(ctx, v.byoc, v.sg, cidr, port, tags)
			if err != nil {
				return plan, err
			}
			plan.Steps[len(plan.Steps)-1].ID = id
		}
	}
	return plan, nil
}

func (m *Manager) createPeering(ctx context.Context, v *view, tags []ec2types.Tag) (string, error) {
	in := &ec2.CreateVpcPeeringConnectionInput{
		VpcId:       aws.String(v.t.VPCID),
		PeerVpcId:   aws.String(v.p.VPCID),
		PeerOwnerId: aws.String(v.p.AccountID),
		TagSpecifications: []ec2types.TagSpecification{{
			ResourceType: ec2types.ResourceTypeVpcPeeringConnection,
			Tags:         tags,
		}},
	}
	if v.p.Region != v.t.Region {
		in.PeerRegion = aws.String(v.p.Region)
	}
	var id string
	err := m.mutate(ctx, v.byoc, []string{v.t.VPCID, v.p.VPCID}, func(ctx context.Context) ([]string, error) {
		out, err := v.byoc.ec2.CreateVpcPeeringConnection(ctx, in)
		if err != nil {
			return nil, err
		}
		id = aws.ToString(out.VpcPeeringConnection.VpcPeeringConnectionId)
		return []string{id}, nil
	})
	if err != nil {
		return "", fmt.Errorf("create %s: %w", v.pairName(), err)
	}
	return id, nil
}

// waitPeering waits, with the SDK's waiter, until the peering connection
// is in one of the wanted states, and returns that state. A connection
// that failed, was rejected, expired or was deleted is an error.
func (m *Manager) waitPeering(ctx context.Context, s *session, pcx string, want ...string) (string, error) {
	var got string
	w := ec2.NewVpcPeeringConnectionExistsWaiter(s.ec2, func(o *ec2.VpcPeeringConnectionExistsWaiterOptions) {
		o.MinDelay = m.cfg.WaitTimeout / 300
		o.Retryable = func(ctx context.Context, _ *ec2.DescribeVpcPeeringConnectionsInput, out *ec2.DescribeVpcPeeringConnectionsOutput, err error) (bool, error) {
			if isCode(err, "InvalidVpcPeeringConnectionID.NotFound") {
				return true, nil
			}
			if err != nil {
				return false, err
			}
			if len(out.VpcPeeringConnections) == 0 || out.VpcPeeringConnections[0].Status == nil {
				return true, nil
			}
			st := out.VpcPeeringConnections[0].Status
			got = string(st.Code)
			switch {
			case slices.Contains(want, got):
				return false, nil
			case slices.Contains(livePeering, got):
				return true, nil
			}
			return false, fmt.Errorf("peering connection %s is %s (%s); tear down and apply again", pcx, got, aws.ToString(st.Message))
		}
	})
	err := w.Wait(ctx, &ec2.DescribeVpcPeeringConnectionsInput{VpcPeeringConnectionIds: []string{pcx}}, m.cfg.WaitTimeout)
	if err != nil {
		return "", fmt.Errorf("wait for peering connection %s to be %v: %w", pcx, want, err)
	}
	return got, nil
}

// putRoute creates, or replaces, the route to cidr via pcx.
func (m *Manager) putRoute(ctx context.Context, s *session, rtb string, cidr netip.Prefix, pcx string, replace bool) error {
	err := m.mutate(ctx, s, []string{rtb, pcx}, func(ctx context.Context) ([]string, error) {
		var err error
		if replace {
			_, err = s.ec2.ReplaceRoute(ctx, &ec2.ReplaceRouteInput{RouteTableId: aws.String(rtb), DestinationCidrBlock: aws.String(cidr.String()), VpcPeeringConnectionId: aws.String(pcx)})
		} else {
			_, err = s.ec2.CreateRoute(ctx, &ec2.CreateRouteInput{RouteTableId: aws.String(rtb), DestinationCidrBlock: aws.String(cidr.String()), VpcPeeringConnectionId: aws.String(pcx)})
		}
		return nil, err
	})
	if err != nil {
		return fmt.Errorf("route %s → %s in %s (account %s): %w", cidr, pcx, rtb, s.account, err)
	}
	return nil
}

// ruleDescription marks the security group rules of a request; the
// rule's tags say the same where AWS keeps them.
func ruleDescription(t Tags) string { return "tether:" + t.Deployment + ":" + t.Request }

// ruleOwned reports whether a security group rule is the request's: by
// its tags or, where tags were lost, by its description. Rules made for
// another request of the same deployment (once all described
// "tether:<deployment>") are not.
func ruleOwned(r ec2types.SecurityGroupRule, t Tags) bool {
	if t.Request == "" {
		return false
	}
	return ownedBy(r.Tags, &t) || aws.ToString(r.Description) == ruleDescription(t)
}

// findRule returns the ID of an ingress rule that admits cidr on tcp/port.
func findRule(rules []ec2types.SecurityGroupRule, cidr netip.Prefix, port int32) string {
	for _, r := range rules {
		c, err := netip.ParsePrefix(aws.ToString(r.CidrIpv4))
		if err != nil || !c.Masked().Contains(cidr.Addr()) || c.Bits() > cidr.Bits() {
			continue
		}
		all := aws.ToString(r.IpProtocol) == "-1"
		tcp := aws.ToString(r.IpProtocol) == "tcp" && aws.ToInt32(r.FromPort) <= port && port <= aws.ToInt32(r.ToPort)
		if all || tcp {
			return aws.ToString(r.SecurityGroupRuleId)
		}
	}
	return ""
}

// authorize adds the tagged ingress rule for cidr on tcp/port.
func (m *Manager) authorize(ctx context.Context, s *session, sg string, cidr netip.Prefix, port int32, tags Tags) (string, error) {
	var id string
	err := m.mutate(ctx, s, []string{sg}, func(ctx context.Context) ([]string, error) {
		out, err := s.ec2.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{
			GroupId: aws.String(sg),
			IpPermissions: []ec2types.IpPermission{{
				IpProtocol: aws.String("tcp"),
				FromPort:   aws.Int32(port),
				ToPort:     aws.Int32(port),
				IpRanges:   []ec2types.IpRange{{CidrIp: aws.String(cidr.String()), Description: aws.String(ruleDescription(tags))}},
			}},
			TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeSecurityGroupRule, Tags: tetherTags(tags)}},
		})
		if err != nil {
			return nil, err
		}
		for _, r := range out.SecurityGroupRules {
			id = aws.ToString(r.SecurityGroupRuleId)
		}
		return []string{id}, nil
	})
	if err != nil {
		return "", fmt.Errorf("allow %s on tcp/%d in security group %s (account %s): %w", cidr, port, sg, s.account, err)
	}
	return id, nil
}

// PeeringStatus reports each piece of the peering as ok, missing or
// drifted: the connection (drifted unless active), each route (drifted
// when it points elsewhere or is a blackhole) and each security group
// rule. It changes nothing.
func (m *Manager) PeeringStatus(ctx context.Context, t Target, p Peer) (Status, error) {
	v, err := m.observe(ctx, t, p, nil, forStatus)
	if err != nil {
		return Status{}, err
	}
	return v.peeringStatus(), nil
}

func (v *view) peeringStatus() Status {
	var st Status
	add := func(i ItemStatus) { st.Items = append(st.Items, i) }
	pcx := ""
	switch {
	case v.pcx == nil:
		add(ItemStatus{Resource: v.pairName(), State: StateMissing})
	case v.pcx.Status.Code != ec2types.VpcPeeringConnectionStateReasonCodeActive:
		pcx = aws.ToString(v.pcx.VpcPeeringConnectionId)
		add(ItemStatus{Resource: v.pairName(), ID: pcx, State: StateDrifted, Detail: fmt.Sprintf("%s: %s", v.pcx.Status.Code, aws.ToString(v.pcx.Status.Message))})
	default:
		pcx = aws.ToString(v.pcx.VpcPeeringConnectionId)
		add(ItemStatus{Resource: v.pairName(), ID: pcx, State: StateOK})
	}
	shown := pcx
	if shown == "" {
		shown = "the peering connection"
	}
	for _, side := range []struct {
		rts   []ec2types.RouteTable
		cidrs []netip.Prefix
	}{{v.byocRTs, v.peerCIDRs}, {v.peerRTs, v.byocCIDRs}} {
		for _, rt := range side.rts {
			for _, cidr := range side.cidrs {
				state, detail := routeState(rt, cidr, pcx)
				add(ItemStatus{Resource: fmt.Sprintf("route %s → %s in %s", cidr, shown, aws.ToString(rt.RouteTableId)), ID: aws.ToString(rt.RouteTableId), State: state, Detail: detail})
			}
		}
	}
	for _, cidr := range v.peerCIDRs {
		for _, port := range v.t.ServicePorts {
			item := ItemStatus{Resource: fmt.Sprintf("ingress %s tcp/%d on %s", cidr, port, v.sg), State: StateMissing}
			if id := findRule(v.sgRules, cidr, port); id != "" {
				item.ID, item.State = id, StateOK
			}
			add(item)
		}
	}
	return st
}

// TeardownPeering removes what [Manager.ApplyPeering] created for
// tags.Request, and nothing else: the routes to the other side's CIDRs
// through the request's peering connection (tagged with the request),
// the security group rules tagged (or described) with the request, and
// that peering connection. Another request's peering and rules, and
// routes through anything else, stay. Routes and rules go first, so an
// interrupted teardown can be run again.
func (m *Manager) TeardownPeering(ctx context.Context, t Target, p Peer, tags Tags) (Plan, error) {
	if tags.Request == "" {
		return Plan{}, invalid("request tag is empty: teardown removes only what one request made")
	}
	v, err := m.observe(ctx, t, p, &tags, forTeardown)
	if err != nil {
		return Plan{}, err
	}
	var plan Plan
	add := func(s Step) { plan.Steps = append(plan.Steps, s) }

	for _, side := range []struct {
		s     *session
		rts   []ec2types.RouteTable
		cidrs []netip.Prefix
	}{{v.byoc, v.byocRTs, v.peerCIDRs}, {v.peer, v.peerRTs, v.byocCIDRs}} {
		for _, rt := range side.rts {
			rtb := aws.ToString(rt.RouteTableId)
			for _, r := range rt.Routes {
				via := aws.ToString(r.VpcPeeringConnectionId)
				dst, err := netip.ParsePrefix(aws.ToString(r.DestinationCidrBlock))
				if err != nil || !slices.Contains(v.allPcx, via) || !slices.Contains(side.cidrs, dst.Masked()) {
					continue
				}
				add(Step{Action: "delete", Resource: fmt.Sprintf("route %s → %s in %s", dst, via, rtb), Account: side.s.account, ID: rtb})
				err = m.mutate(ctx, side.s, []string{rtb, via}, func(ctx context.Context) ([]string, error) {
					_, err := side.s.ec2.DeleteRoute(ctx, &ec2.DeleteRouteInput{RouteTableId: aws.String(rtb), DestinationCidrBlock: aws.String(dst.String())})
					return nil, err
				})
				if err != nil && !isCode(err, "InvalidRoute.NotFound") {
					return plan, fmt.Errorf("delete route %s in %s (account %s): %w", dst, rtb, side.s.account, err)
				}
			}
		}
	}

	if err := m.revokeRules(ctx, v, tags, &plan); err != nil {
		return plan, err
	}

	if v.pcx != nil {
		pcx := aws.ToString(v.pcx.VpcPeeringConnectionId)
		add(Step{Action: "delete", Resource: v.pairName(), Account: t.AccountID, ID: pcx})
		err := m.mutate(ctx, v.byoc, []string{pcx}, func(ctx context.Context) ([]string, error) {
			_, err := v.byoc.ec2.DeleteVpcPeeringConnection(ctx, &ec2.DeleteVpcPeeringConnectionInput{VpcPeeringConnectionId: aws.String(pcx)})
			return nil, err
		})
		if err != nil {
			return plan, fmt.Errorf("delete peering connection %s (account %s): %w", pcx, t.AccountID, err)
		}
		w := ec2.NewVpcPeeringConnectionDeletedWaiter(v.byoc.ec2, func(o *ec2.VpcPeeringConnectionDeletedWaiterOptions) {
			o.MinDelay = m.cfg.WaitTimeout / 300
		})
		if err := w.Wait(ctx, &ec2.DescribeVpcPeeringConnectionsInput{VpcPeeringConnectionIds: []string{pcx}}, m.cfg.WaitTimeout); err != nil {
			return plan, fmt.Errorf("wait for peering connection %s to be deleted: %w", pcx, err)
		}
	}
	return plan, nil
}

// tetherTags returns the EC2 tags Tether writes.
func tetherTags(t Tags) []ec2types.Tag {
	tags := []ec2types.Tag{
		{Key: aws.String(TagManaged), Value: aws.String("true")},
		{Key: aws.String(TagDeployment), Value: aws.String(t.Deployment)},
	}
	if t.Request != "" {
		tags = append(tags, ec2types.Tag{Key: aws.String(TagRequest), Value: aws.String(t.Request)})
	}
	return tags
}

func tagValue(tags []ec2types.Tag, key string) string {
	for _, t := range tags {
		if aws.ToString(t.Key) == key {
			return aws.ToString(t.Value)
		}
	}
	return ""
}

// isCode reports whether err is an AWS error with the code.
func isCode(err error, code string) bool {
	var apiErr smithy.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode() == code
}

// revokeRules revokes the security group rules the request made, and no
// other.
func (m *Manager) revokeRules(ctx context.Context, v *view, tags Tags, plan *Plan) error {
	for _, r := range v.sgRules {
		if !ruleOwned(r, tags) {
			continue
		}
		id := aws.ToString(r.SecurityGroupRuleId)
		plan.Steps = append(plan.Steps, Step{Action: "delete", Resource: fmt.Sprintf("ingress %s %s/%d on %s", aws.ToString(r.CidrIpv4), aws.ToString(r.IpProtocol), aws.ToInt32(r.FromPort), v.sg), Account: v.t.AccountID, ID: id})
		err := m.mutate(ctx, v.byoc, []string{v.sg, id}, func(ctx context.Context) ([]string, error) {
			_, err := v.byoc.ec2.RevokeSecurityGroupIngress(ctx, &ec2.RevokeSecurityGroupIngressInput{GroupId: aws.String(v.sg), SecurityGroupRuleIds: []string{id}})
			return nil, err
		})
		if err != nil {
			return fmt.Errorf("revoke rule %s of security group %s (account %s): %w", id, v.sg, v.t.AccountID, err)
		}
	}
	return nil
}
