package netmgr

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	elb "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
	"github.com/aws/aws-sdk-go-v2/service/route53"
	r53types "github.com/aws/aws-sdk-go-v2/service/route53/types"
)

// findLB returns the one internal load balancer of the BYOC VPC tagged
// with all of t.LBTags.
func (m *Manager) findLB(ctx context.Context, s *session, t Target) (*elbtypes.LoadBalancer, error) {
	t = withDefaults(t)
	var candidates []elbtypes.LoadBalancer
	pg := elb.NewDescribeLoadBalancersPaginator(s.elb, &elb.DescribeLoadBalancersInput{})
	for pg.HasMorePages() {
		out, err := pg.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list load balancers in account %s: %w", s.account, err)
		}
		for _, lb := range out.LoadBalancers {
			if aws.ToString(lb.VpcId) == t.VPCID && lb.Scheme == elbtypes.LoadBalancerSchemeEnumInternal {
				candidates = append(candidates, lb)
			}
		}
	}
	var found []elbtypes.LoadBalancer
	for chunk := range slices.Chunk(candidates, 20) { // DescribeTags takes 20 ARNs
		arns := make([]string, len(chunk))
		for i, lb := range chunk {
			arns[i] = aws.ToString(lb.LoadBalancerArn)
		}
		out, err := s.elb.DescribeTags(ctx, &elb.DescribeTagsInput{ResourceArns: arns})
		if err != nil {
			return nil, fmt.Errorf("read load balancer tags in account %s: %w", s.account, err)
		}
		for _, td := range out.TagDescriptions {
			have := map[string]string{}
			for _, tag := range td.Tags {
				have[aws.ToString(tag.Key)] = aws.ToString(tag.Value)
			}
			if matches(have, t.LBTags) {
				i := slices.IndexFunc(chunk, func(lb elbtypes.LoadBalancer) bool {
					return aws.ToString(lb.LoadBalancerArn) == aws.ToString(td.ResourceArn)
				})
				if i >= 0 {
					found = append(found, chunk[i])
				}
			}
		}
	}
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("no internal load balancer in BYOC VPC %s (account %s) is tagged %v; tag the private load balancer or set LBTags: %w", t.VPCID, s.account, t.LBTags, ErrNotFound)
	case 1:
		return &found[0], nil
	}
	var names []string
	for _, lb := range found {
		names = append(names, aws.ToString(lb.LoadBalancerName))
	}
	return nil, invalid("%d internal load balancers in BYOC VPC %s are tagged %v (%s); make LBTags pick one", len(found), t.VPCID, t.LBTags, strings.Join(names, ", "))
}

func matches(have, want map[string]string) bool {
	for k, v := range want {
		if got, ok := have[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// ingressView is what ingress reads beyond the peering.
type ingressView struct {
	*view
	lb     *elbtypes.LoadBalancer
	zone   string // the request's hosted zone ID, bare, or ""
	inVPC  bool   // the zone is associated with the peer VPC
	tagged bool   // the zone carries Tether's tags
	// other is a Tether zone for the same name and peer VPC made for
	// another request, which this request must leave alone.
	other  string
	record *r53types.ResourceRecordSet
	host   string // PrivateHostname, fully qualified with the dot
}

func (iv *ingressView) zoneName() string {
	return fmt.Sprintf("private hosted zone %s for %s", iv.host, iv.p.VPCID)
}

func (iv *ingressView) recordName() string {
	return fmt.Sprintf("alias A %s → %s", iv.host, aws.ToString(iv.lb.DNSName))
}

// recordOK reports whether the record aliases the load balancer.
func (iv *ingressView) recordOK() bool {
	r := iv.record
	if r == nil || r.AliasTarget == nil {
		return false
	}
	norm := func(s string) string {
		return strings.TrimSuffix(strings.ToLower(strings.TrimPrefix(s, "dualstack.")), ".")
	}
	return norm(aws.ToString(r.AliasTarget.DNSName)) == norm(aws.ToString(iv.lb.DNSName)) &&
		aws.ToString(r.AliasTarget.HostedZoneId) == aws.ToString(iv.lb.CanonicalHostedZoneId)
}

// intent is the state enabling makes.
func (iv *ingressView) intent() Intent {
	in := iv.view.intent("ingress")
	in.PrivateHostname = strings.TrimSuffix(iv.host, ".")
	in.LoadBalancer = strings.TrimSuffix(strings.ToLower(aws.ToString(iv.lb.DNSName)), ".")
	return in
}

// zoneComment marks a request's hosted zone; it is written with the
// zone, so a zone whose tagging was interrupted is still found.
func zoneComment(t Tags) string { return "tether:" + t.Deployment + ":" + t.Request }

// observeIngress reads the peering and what ingress adds. The hosted zone
// lives in the peer account: AWS creates a private zone only with a VPC of
// the same account. With tags, the zone is the request's (by its tags or
// comment); without, any Tether zone of the name.
func (m *Manager) observeIngress(ctx context.Context, t Target, p Peer, tags *Tags) (*ingressView, error) {
	if t.PrivateHostname == "" {
		return nil, invalid("BYOC private hostname is empty: want the private endpoint, such as abc123-private.us-east-1.aws.example.com")
	}
	// The peering an ingress rides on may be any request's of the
	// deployment.
	var pcxTags *Tags
	if tags != nil {
		pcxTags = &Tags{Deployment: tags.Deployment}
	}
	v, err := m.observe(ctx, t, p, pcxTags, forStatus)
	if err != nil {
		return nil, err
	}
	iv := &ingressView{view: v, host: strings.TrimSuffix(strings.ToLower(t.PrivateHostname), ".") + "."}
	if iv.lb, err = m.findLB(ctx, v.byoc, v.t); err != nil {
		return nil, err
	}

	r53 := v.peer.r53
	out, err := r53.ListHostedZonesByName(ctx, &route53.ListHostedZonesByNameInput{DNSName: aws.String(iv.host), MaxItems: aws.Int32(100)})
	if err != nil {
		return nil, fmt.Errorf("list hosted zones named %s in account %s: %w", iv.host, p.AccountID, err)
	}
	for _, z := range out.HostedZones {
		if aws.ToString(z.Name) != iv.host || z.Config == nil || !z.Config.PrivateZone {
			continue
		}
		id := bareZoneID(aws.ToString(z.Id))
		tout, err := r53.ListTagsForResource(ctx, &route53.ListTagsForResourceInput{ResourceType: r53types.TagResourceTypeHostedzone, ResourceId: aws.String(id)})
		if err != nil {
			return nil, fmt.Errorf("read tags of hosted zone %s in account %s: %w", id, p.AccountID, err)
		}
		have := map[string]string{}
		if tout.ResourceTagSet != nil {
			for _, tag := range tout.ResourceTagSet.Tags {
				have[aws.ToString(tag.Key)] = aws.ToString(tag.Value)
			}
		}
		comment := aws.ToString(z.Config.Comment)
		tether := have[TagManaged] == "true" || strings.HasPrefix(comment, "tether:")
		if !tether {
			continue
		}
		var mine, tagged bool
		if tags != nil {
			tagged = have[TagManaged] == "true" && have[TagDeployment] == tags.Deployment && have[TagRequest] == tags.Request
			mine = tags.Request != "" && (tagged || comment == zoneComment(*tags))
		} else {
			tagged = have[TagManaged] == "true"
			mine = true
		}
		gz, err := r53.GetHostedZone(ctx, &route53.GetHostedZoneInput{Id: aws.String(id)})
		if err != nil {
			return nil, fmt.Errorf("read hosted zone %s in account %s: %w", id, p.AccountID, err)
		}
		inVPC := slices.ContainsFunc(gz.VPCs, func(vpc r53types.VPC) bool { return aws.ToString(vpc.VPCId) == p.VPCID })
		switch {
		case !mine && inVPC:
			iv.other = id
		case mine && (iv.zone == "" || (inVPC && !iv.inVPC)):
			iv.zone, iv.inVPC, iv.tagged = id, inVPC, tagged
		}
	}
	if iv.zone == "" {
		return iv, nil
	}
	rout, err := r53.ListResourceRecordSets(ctx, &route53.ListResourceRecordSetsInput{
		HostedZoneId:    aws.String(iv.zone),
		StartRecordName: aws.String(iv.host),
		StartRecordType: r53types.RRTypeA,
		MaxItems:        aws.Int32(1),
	})
	if err != nil {
		return nil, fmt.Errorf("read records of hosted zone %s in account %s: %w", iv.zone, p.AccountID, err)
	}
	for i, r := range rout.ResourceRecordSets {
		if strings.EqualFold(aws.ToString(r.Name), iv.host) && r.Type == r53types.RRTypeA {
			iv.record = &rout.ResourceRecordSets[i]
		}
	}
	return iv, nil
}

func bareZoneID(id string) string { return strings.TrimPrefix(id, "/hostedzone/") }

// PlanIngress validates and reads what [Manager.EnableIngress] needs and
// returns what it would do, with the [Intent] to approve. It changes
// nothing.
func (m *Manager) PlanIngress(ctx context.Context, t Target, p Peer, tags Tags) (Plan, error) {
	return m.enableIngress(ctx, t, p, tags, true, nil)
}

// EnableIngress makes t.PrivateHostname resolve, from the peer VPC, to the
// private load balancer (found by t.LBTags): a private hosted zone for the
// name itself, in the peer account and associated with the peer VPC, with
// an alias A record at its apex; and opens the service ports to the peer
// as [Manager.ApplyPeering] does. The zone is the name itself, not its
// parent domain, so that the other names of the domain (the public
// endpoint) still resolve publicly from the peer VPC. The name must be
// under [Config.PrivateDomain]. It converges like ApplyPeering, and
// everything it creates carries tags.Request, which must be set.
func (m *Manager) EnableIngress(ctx context.Context, t Target, p Peer, tags Tags) (Plan, error) {
	return m.enableIngress(ctx, t, p, tags, false, nil)
}

// EnableApprovedIngress is [Manager.EnableIngress] for an approved change:
// it refuses, changing nothing, with a [*PlanChangedError] when the
// intent it observes differs from approved.
func (m *Manager) EnableApprovedIngress(ctx context.Context, t Target, p Peer, tags Tags, approved Intent) (Plan, error) {
	return m.enableIngress(ctx, t, p, tags, false, &approved)
}

func (m *Manager) enableIngress(ctx context.Context, t Target, p Peer, tags Tags, dry bool, approved *Intent) (Plan, error) {
	if !dry && tags.Request == "" {
		return Plan{}, invalid("request tag is empty: every resource Tether makes carries its request, so that disable removes only that request's")
	}
	if err := ValidatePrivateHostname(t.PrivateHostname, m.cfg.PrivateDomain); err != nil {
		return Plan{}, err
	}
	if err := validatePair(t, p, &tags); err != nil {
		return Plan{}, err
	}
	iv, err := m.observeIngress(ctx, t, p, &tags)
	if err != nil {
		return Plan{}, err
	}
	if err := iv.checkPeerCIDRs(); err != nil {
		return Plan{}, err
	}
	in := iv.intent()
	if err := checkApproved(approved, in); err != nil {
		return Plan{}, err
	}
	plan := Plan{Intent: &in}
	add := func(s Step) { plan.Steps = append(plan.Steps, s) }
	if iv.pcx == nil || iv.pcx.Status.Code != "active" {
		plan.Warnings = append(plan.Warnings, fmt.Sprintf("%s is not active; the peer reaches the private endpoint only over it: apply the peering", iv.pairName()))
	}
	r53 := iv.peer.r53
	r53tags := []r53types.Tag{{Key: aws.String(TagManaged), Value: aws.String("true")}, {Key: aws.String(TagDeployment), Value: aws.String(tags.Deployment)}}
	if tags.Request != "" {
		r53tags = append(r53tags, r53types.Tag{Key: aws.String(TagRequest), Value: aws.String(tags.Request)})
	}

	switch {
	case iv.zone == "" && iv.other != "":
		return Plan{}, fmt.Errorf("peer VPC %s already has Tether's %s (%s), made for another request; disable that request's ingress first: %w", p.VPCID, iv.zoneName(), iv.other, ErrConflict)
	case iv.zone == "":
		add(Step{Action: "create", Resource: iv.zoneName(), Account: p.AccountID})
		if dry {
			break
		}
		err := m.mutate(ctx, iv.peer, []string{p.VPCID}, func(ctx context.Context) ([]string, error) {
			out, err := r53.CreateHostedZone(ctx, &route53.CreateHostedZoneInput{
				Name:             aws.String(iv.host),
				CallerReference:  aws.String(fmt.Sprintf("tether-%s-%d", tags.Request, m.cfg.Now().UnixNano())),
				HostedZoneConfig: &r53types.HostedZoneConfig{PrivateZone: true, Comment: aws.String(zoneComment(tags))},
				VPC:              &r53types.VPC{VPCId: aws.String(p.VPCID), VPCRegion: r53types.VPCRegion(p.Region)},
			})
			if err != nil {
				return nil, err
			}
			iv.zone = bareZoneID(aws.ToString(out.HostedZone.Id))
			return []string{iv.zone}, nil
		})
		if err != nil {
			return plan, fmt.Errorf("create %s in account %s: %w", iv.zoneName(), p.AccountID, err)
		}
		plan.Steps[len(plan.Steps)-1].ID = iv.zone
	case !iv.inVPC:
		// Someone disassociated the zone; Tether does not reassociate
		// (it would need route53:AssociateVPCWithHostedZone): say so.
		return plan, fmt.Errorf("%s (%s) is no longer associated with %s; disable and enable ingress again: %w", iv.zoneName(), iv.zone, p.VPCID, ErrNotFound)
	default:
		add(Step{Action: "none", Resource: iv.zoneName(), Account: p.AccountID, ID: iv.zone})
	}
	if !iv.tagged {
		add(Step{Action: "modify", Resource: "tags of " + iv.zoneName(), Account: p.AccountID, ID: iv.zone})
		if !dry {
			err := m.mutate(ctx, iv.peer, []string{iv.zone}, func(ctx context.Context) ([]string, error) {
				_, err := r53.ChangeTagsForResource(ctx, &route53.ChangeTagsForResourceInput{ResourceType: r53types.TagResourceTypeHostedzone, ResourceId: aws.String(iv.zone), AddTags: r53tags})
				return nil, err
			})
			if err != nil {
				return plan, fmt.Errorf("tag hosted zone %s in account %s: %w", iv.zone, p.AccountID, err)
			}
		}
	}

	step := Step{Action: "none", Resource: iv.recordName(), Account: p.AccountID, ID: iv.zone}
	switch {
	case iv.record == nil:
		step.Action = "create"
	case !iv.recordOK():
		step.Action = "modify"
	}
	add(step)
	if step.Action != "none" && !dry {
		err := m.mutate(ctx, iv.peer, []string{iv.zone}, func(ctx context.Context) ([]string, error) {
			_, err := r53.ChangeResourceRecordSets(ctx, &route53.ChangeResourceRecordSetsInput{
				HostedZoneId: aws.String(iv.zone),
				ChangeBatch: &r53types.ChangeBatch{Comment: aws.String(zoneComment(tags)), Changes: []r53types.Change{{
					Action: r53types.ChangeActionUpsert,
					ResourceRecordSet: &r53types.ResourceRecordSet{
						Name: aws.String(iv.host),
						Type: r53types.RRTypeA,
						AliasTarget: &r53types.AliasTarget{
							DNSName:              iv.lb.DNSName,
							HostedZoneId:         iv.lb.CanonicalHostedZoneId,
							EvaluateTargetHealth: false,
						},
					},
				}}},
			})
			return nil, err
		})
		if err != nil {
			return plan, fmt.Errorf("upsert %s in account %s: %w", iv.recordName(), p.AccountID, err)
		}
	}

	for _, cidr := range iv.peerCIDRs {
		for _, port := range iv.t.ServicePorts {
			step := Step{Action: "none", Resource: fmt.Sprintf("ingress %s tcp/%d on %s", cidr, port, iv.sg), Account: t.AccountID, ID: iv.sg}
			if id := findRule(iv.sgRules, cidr, port); id != "" {
				step.ID = id
				add(step)
				continue
			}
			step.Action = "create"
			add(step)
			if dry {
				continue
			}
			id, err := m.authorize(ctx, iv.byoc, iv.sg, cidr, port, tags)
			if err != nil {
				return plan, err
			}
			plan.Steps[len(plan.Steps)-1].ID = id
		}
	}
	return plan, nil
}

// IngressStatus reports the hosted zone, its association with the peer
// VPC, the alias record and the security group rules as ok, missing or
// drifted.
func (m *Manager) IngressStatus(ctx context.Context, t Target, p Peer) (Status, error) {
	iv, err := m.observeIngress(ctx, t, p, nil)
	if err != nil {
		return Status{}, err
	}
	var st Status
	add := func(i ItemStatus) { st.Items = append(st.Items, i) }
	switch {
	case iv.zone == "":
		add(ItemStatus{Resource: iv.zoneName(), State: StateMissing})
	case !iv.inVPC:
		add(ItemStatus{Resource: iv.zoneName(), ID: iv.zone, State: StateDrifted, Detail: "not associated with " + p.VPCID})
	default:
		add(ItemStatus{Resource: iv.zoneName(), ID: iv.zone, State: StateOK})
	}
	rec := ItemStatus{Resource: iv.recordName(), ID: iv.zone, State: StateOK}
	switch {
	case iv.record == nil:
		rec.State = StateMissing
	case !iv.recordOK():
		rec.State = StateDrifted
		if iv.record.AliasTarget != nil {
			rec.Detail = "aliases " + aws.ToString(iv.record.AliasTarget.DNSName)
		} else {
			rec.Detail = "not an alias"
		}
	}
	add(rec)
	for _, item := range iv.peeringStatus().Items {
		if strings.HasPrefix(item.Resource, "ingress ") {
			add(item)
		}
	}
	return st, nil
}

// DisableIngress deletes the alias record and the hosted zone Tether
// created for tags.Request (found by its tags or comment), and the
// security group rules that request made, if any; another request's zone
// (for another peer VPC, say) and the peering's rules stay:
// [Manager.TeardownPeering] removes those.
func (m *Manager) DisableIngress(ctx context.Context, t Target, p Peer, tags Tags) (Plan, error) {
	if tags.Request == "" {
		return Plan{}, invalid("request tag is empty: disable removes only what one request made")
	}
	iv, err := m.observeIngress(ctx, t, p, &tags)
	if err != nil {
		return Plan{}, err
	}
	var plan Plan
	if err := m.revokeRules(ctx, iv.view, tags, &plan); err != nil {
		return plan, err
	}
	if iv.zone == "" {
		return plan, nil
	}
	r53 := iv.peer.r53
	if iv.record != nil {
		rec := *iv.record
		plan.Steps = append(plan.Steps, Step{Action: "delete", Resource: fmt.Sprintf("A record %s", iv.host), Account: p.AccountID, ID: iv.zone})
		err := m.mutate(ctx, iv.peer, []string{iv.zone}, func(ctx context.Context) ([]string, error) {
			_, err := r53.ChangeResourceRecordSets(ctx, &route53.ChangeResourceRecordSetsInput{
				HostedZoneId: aws.String(iv.zone),
				ChangeBatch:  &r53types.ChangeBatch{Changes: []r53types.Change{{Action: r53types.ChangeActionDelete, ResourceRecordSet: &rec}}},
			})
			return nil, err
		})
		if err != nil {
			return plan, fmt.Errorf("delete A record %s in hosted zone %s (account %s): %w", iv.host, iv.zone, p.AccountID, err)
		}
	}
	plan.Steps = append(plan.Steps, Step{Action: "delete", Resource: iv.zoneName(), Account: p.AccountID, ID: iv.zone})
	err = m.mutate(ctx, iv.peer, []string{iv.zone}, func(ctx context.Context) ([]string, error) {
		_, err := r53.DeleteHostedZone(ctx, &route53.DeleteHostedZoneInput{Id: aws.String(iv.zone)})
		return nil, err
	})
	if err != nil {
		return plan, fmt.Errorf("delete hosted zone %s in account %s; remove records others added to it first: %w", iv.zone, p.AccountID, err)
	}
	return plan, nil
}
