package netmgr

// These tests run against moto_server, with two accounts: 111111111111
// (BYOC) and 222222222222 (peer). moto hands out credentials for any role
// ARN, and calls made with them act in the role's account, so the
// cross-account paths are exercised as they are on AWS.
//
// Where moto differs from AWS:
//   - sts:AssumeRole succeeds for any role ARN, without the role existing
//     and without checking the external ID (TestAssumeRoleRefused uses a
//     fake STS instead).
//   - IAM is not enforced, so AccessDenied is never returned
//     (TestPermissionError uses a fake EC2 instead).
//   - CreateVpcPeeringConnection answers "initiating-request" and the
//     connection is "pending-acceptance" at once; accepting makes it
//     "active" at once, with no "provisioning". The waiters return on
//     their first poll.
//   - Peering tags created by the requester are visible to the accepter
//     (on AWS they are per account).
//   - AZ names map to the same AZ IDs in every account (on AWS the
//     mapping is shuffled per account, which is why netmgr compares IDs).
//   - DescribeVpcPeeringConnections ignores the requester-vpc-info and
//     accepter-vpc-info filters; netmgr filters the answer again.
//   - EC2 success responses carry the request ID in the
//     x-amzn-requestid header, the body says "request-id".

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	elb "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/tetherhq/tether/internal/mototest"
)

func TestMain(m *testing.M) { os.Exit(mototest.Main(m)) }

const (
	byocAccount = "111111111111"
	peerAccount = "222222222222"
)

// recorder collects the calls a Manager records; fail, if set, makes the
// recorder fail on the call with that 1-based index.
type recorder struct {
	mu    sync.Mutex
	calls []Call
	fail  atomic.Int32
	hook  func(n int) // called with the 1-based index of each call
}

func (r *recorder) record(_ context.Context, c Call) error {
	r.mu.Lock()
	r.calls = append(r.calls, c)
	n := len(r.calls)
	r.mu.Unlock()
	if r.hook != nil {
		r.hook(n)
	}
	if int(r.fail.Load()) == n {
		return errors.New("audit log unavailable")
	}
	return nil
}

func (r *recorder) take() []Call {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.calls
	r.calls = nil
	return c
}

func baseConfig() aws.Config {
	return aws.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider("test", "test", "")}
}

// fixture is one BYOC VPC and one peer VPC in moto, with the clients to
// change them out of band.
type fixture struct {
	m        *Manager
	rec      *recorder
	target   Target
	peer     Peer
	tags     Tags
	byocEC2  *ec2.Client
	peerEC2  *ec2.Client
	byocELB  *elb.Client
	endpoint string
}

func roleARN(account string) string { return "arn:aws:iam::" + account + ":role/tether-network" }

// accountConfig returns a config acting in account, by assuming a role
// there as the broker does.
func accountConfig(endpoint, account string) aws.Config {
	cfg := baseConfig()
	cfg.BaseEndpoint = aws.String(endpoint)
	cfg.Credentials = aws.NewCredentialsCache(stscreds.NewAssumeRoleProvider(sts.NewFromConfig(cfg), roleARN(account)))
	return cfg
}

type vpcSpec struct {
	cidr string
	azs  []string
}

func newFixture(t *testing.T, byoc, peer vpcSpec) *fixture {
	t.Helper()
	endpoint := mototest.Endpoint(t)
	ctx := t.Context()
	f := &fixture{rec: new(recorder), endpoint: endpoint}
	bcfg, pcfg := accountConfig(endpoint, byocAccount), accountConfig(endpoint, peerAccount)
	f.byocEC2, f.peerEC2, f.byocELB = ec2.NewFromConfig(bcfg), ec2.NewFromConfig(pcfg), elb.NewFromConfig(bcfg)

	byocVPC, byocSubnets := makeVPC(t, f.byocEC2, byoc)
	peerVPC, _ := makeVPC(t, f.peerEC2, peer)
	sg, err := f.byocEC2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{
		GroupName: aws.String(DefaultLBSecurityGroupPrefix + byocVPC[4:12]), Description: aws.String("istio ingress"), VpcId: aws.String(byocVPC),
	})
	if err != nil {
		t.Fatal(err)
	}
	// A security group that is not the load balancer's, and must stay
	// untouched.
	if _, err := f.byocEC2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("other"), Description: aws.String("other"), VpcId: aws.String(byocVPC)}); err != nil {
		t.Fatal(err)
	}
	if len(byocSubnets) >= 2 {
		_, err = f.byocELB.CreateLoadBalancer(ctx, &elb.CreateLoadBalancerInput{
			Name:           aws.String("private-" + byocVPC[4:12]),
			Scheme:         elbtypes.LoadBalancerSchemeEnumInternal,
			Subnets:        byocSubnets,
			SecurityGroups: []string{aws.ToString(sg.GroupId)},
			Tags:           []elbtypes.Tag{{Key: aws.String("tether:ingress"), Value: aws.String("private")}},
		})
		if err != nil {
			t.Fatal(err)
		}
	}

	m, err := New(Config{
		AWS:           baseConfig(),
		EndpointURL:   endpoint,
		Recorder:      f.rec.record,
		PrivateDomain: "aws.clickhouse.example",
		Now:           func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) },
		Logger:        testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	f.m = m
	f.target = Target{
		AccountID: byocAccount, Region: "us-east-1", VPCID: byocVPC,
		RoleARN: roleARN(byocAccount), ExternalID: "byoc-external-id",
		PrivateHostname: "s" + byocVPC[4:12] + "-private.us-east-1.aws.clickhouse.example",
	}
	f.peer = Peer{AccountID: peerAccount, Region: "us-east-1", VPCID: peerVPC, RoleARN: roleARN(peerAccount), ExternalID: "peer-external-id"}
	f.tags = Tags{Deployment: "dep-" + byocVPC[4:12], Request: "req-1"}
	return f
}

func makeVPC(t *testing.T, c *ec2.Client, spec vpcSpec) (string, []string) {
	t.Helper()
	ctx := t.Context()
	out, err := c.CreateVpc(ctx, &ec2.CreateVpcInput{CidrBlock: aws.String(spec.cidr)})
	if err != nil {
		t.Fatal(err)
	}
	vpc := aws.ToString(out.Vpc.VpcId)
	var subnets []string
	for i, az := range spec.azs {
		// Subnets take consecutive /28s at the start of the VPC.
		base := strings.Split(spec.cidr, "/")[0]
		parts := strings.Split(base, ".")
		cidr := fmt.Sprintf("%s.%s.%s.%d/28", parts[0], parts[1], parts[2], i*16)
		sn, err := c.CreateSubnet(ctx, &ec2.CreateSubnetInput{VpcId: aws.String(vpc), CidrBlock: aws.String(cidr), AvailabilityZone: aws.String(az)})
		if err != nil {
			t.Fatal(err)
		}
		subnets = append(subnets, aws.ToString(sn.Subnet.SubnetId))
	}
	return vpc, subnets
}

func actions(steps []Step) map[string]int {
	n := map[string]int{}
	for _, s := range steps {
		n[s.Action]++
	}
	return n
}

func statusOf(t *testing.T, st Status, prefix string) []ItemStatus {
	t.Helper()
	var out []ItemStatus
	for _, i := range st.Items {
		if strings.HasPrefix(i.Resource, prefix) {
			out = append(out, i)
		}
	}
	return out
}

func mustOK(t *testing.T, st Status) {
	t.Helper()
	for _, i := range st.Items {
		if i.State != StateOK {
			t.Errorf("status %q = %s (%s), want ok", i.Resource, i.State, i.Detail)
		}
	}
}

func TestPeeringLifecycle(t *testing.T) {
	f := newFixture(t, vpcSpec{"10.0.0.0/16", []string{"us-east-1a", "us-east-1b"}}, vpcSpec{"10.1.0.0/16", []string{"us-east-1a", "us-east-1c", "us-east-1b"}})
	ctx := t.Context()

	plan, err := f.m.PlanPeering(ctx, f.target, f.peer, f.tags)
	if err != nil {
		t.Fatalf("PlanPeering: %v", err)
	}
	// One route table on each side (the main one), two ports.
	if got, want := actions(plan.Steps), map[string]int{"create": 5, "modify": 1}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("PlanPeering steps = %v, want %v: %+v", got, want, plan.Steps)
	}
	if !slices.ContainsFunc(plan.Warnings, func(w string) bool {
		return strings.HasPrefix(w, "2 of 3 peer subnets share an AZ ID with the BYOC VPC: use1-az")
	}) {
		t.Errorf("PlanPeering warnings = %q, want the AZ ID overlap", plan.Warnings)
	}
	if calls := f.rec.take(); len(calls) != 0 {
		t.Fatalf("PlanPeering made %d mutating calls, want 0", len(calls))
	}

	applied, err := f.m.ApplyPeering(ctx, f.target, f.peer, f.tags)
	if err != nil {
		t.Fatalf("ApplyPeering: %v", err)
	}
	if len(applied.Steps) != len(plan.Steps) {
		t.Errorf("ApplyPeering took %d steps, plan had %d", len(applied.Steps), len(plan.Steps))
	}
	calls := f.rec.take()
	var names []string
	for _, c := range calls {
		names = append(names, c.Service+":"+c.Action+"@"+c.Account)
		if c.Err != nil || c.RequestID == "" || c.Region != "us-east-1" {
			t.Errorf("recorded call %+v, want success with a request ID in us-east-1", c)
		}
	}
	want := []string{
		"ec2:CreateVpcPeeringConnection@" + byocAccount,
		"ec2:AcceptVpcPeeringConnection@" + peerAccount,
		"ec2:CreateRoute@" + byocAccount,
		"ec2:CreateRoute@" + peerAccount,
		"ec2:AuthorizeSecurityGroupIngress@" + byocAccount,
		"ec2:AuthorizeSecurityGroupIngress@" + byocAccount,
	}
	if !slices.Equal(names, want) {
		t.Errorf("recorded calls = %q, want %q", names, want)
	}

	st, err := f.m.PeeringStatus(ctx, f.target, f.peer)
	if err != nil {
		t.Fatal(err)
	}
	mustOK(t, st)
	if len(st.Items) != 5 {
		t.Errorf("PeeringStatus has %d items, want 5: %+v", len(st.Items), st.Items)
	}

	// Idempotent: nothing to do, nothing called.
	again, err := f.m.ApplyPeering(ctx, f.target, f.peer, f.tags)
	if err != nil {
		t.Fatal(err)
	}
	if again.Changes() {
		t.Errorf("second ApplyPeering steps = %+v, want all none", again.Steps)
	}
	if calls := f.rec.take(); len(calls) != 0 {
		t.Errorf("second ApplyPeering made %d mutating calls, want 0: %+v", len(calls), calls)
	}

	// Drift, out of band: the BYOC route deleted, the peer route pointed
	// at an internet gateway, one security group rule revoked.
	pcx := applied.Steps[0].ID
	byocRT := routeTableOf(t, f.byocEC2, f.target.VPCID)
	peerRT := routeTableOf(t, f.peerEC2, f.peer.VPCID)
	if _, err := f.byocEC2.DeleteRoute(ctx, &ec2.DeleteRouteInput{RouteTableId: aws.String(byocRT), DestinationCidrBlock: aws.String("10.1.0.0/16")}); err != nil {
		t.Fatal(err)
	}
	igw, err := f.peerEC2.CreateInternetGateway(ctx, &ec2.CreateInternetGatewayInput{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.peerEC2.AttachInternetGateway(ctx, &ec2.AttachInternetGatewayInput{InternetGatewayId: igw.InternetGateway.InternetGatewayId, VpcId: aws.String(f.peer.VPCID)}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.peerEC2.ReplaceRoute(ctx, &ec2.ReplaceRouteInput{RouteTableId: aws.String(peerRT), DestinationCidrBlock: aws.String("10.0.0.0/16"), GatewayId: igw.InternetGateway.InternetGatewayId}); err != nil {
		t.Fatal(err)
	}
	sgStep := applied.Steps[len(applied.Steps)-1]
	sg := strings.Fields(sgStep.Resource)[4]
	if _, err := f.byocEC2.RevokeSecurityGroupIngress(ctx, &ec2.RevokeSecurityGroupIngressInput{GroupId: aws.String(sg), SecurityGroupRuleIds: []string{sgStep.ID}}); err != nil {
		t.Fatal(err)
	}
	st, err = f.m.PeeringStatus(ctx, f.target, f.peer)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, i := range st.Items {
		got[i.Resource] = i.State
	}
	for res, state := range map[string]string{
		fmt.Sprintf("route 10.1.0.0/16 → %s in %s", pcx, byocRT): StateMissing,
		fmt.Sprintf("route 10.0.0.0/16 → %s in %s", pcx, peerRT): StateDrifted,
		fmt.Sprintf("ingress 10.1.0.0/16 tcp/9440 on %s", sg):    StateMissing,
		fmt.Sprintf("ingress 10.1.0.0/16 tcp/8443 on %s", sg):    StateOK,
	} {
		if got[res] != state {
			t.Errorf("PeeringStatus %q = %q, want %q (all: %+v)", res, got[res], state, st.Items)
		}
	}

	// The peer's route through an internet gateway is not Tether's:
	// apply refuses to replace it, and changes nothing.
	_, err = f.m.ApplyPeering(ctx, f.target, f.peer, f.tags)
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), aws.ToString(igw.InternetGateway.InternetGatewayId)) {
		t.Fatalf("ApplyPeering over an internet gateway route = %v, want ErrConflict naming the gateway", err)
	}
	if calls := f.rec.take(); len(calls) != 0 {
		t.Errorf("refused ApplyPeering made %d mutating calls", len(calls))
	}
	if _, err := f.peerEC2.DeleteRoute(ctx, &ec2.DeleteRouteInput{RouteTableId: aws.String(peerRT), DestinationCidrBlock: aws.String("10.0.0.0/16")}); err != nil {
		t.Fatal(err)
	}
	repaired, err := f.m.ApplyPeering(ctx, f.target, f.peer, f.tags)
	if err != nil {
		t.Fatalf("ApplyPeering after drift: %v", err)
	}
	if got, want := actions(repaired.Steps), map[string]int{"none": 3, "create": 3}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("ApplyPeering after drift steps = %v, want %v", got, want)
	}
	f.rec.take()
	if st, err = f.m.PeeringStatus(ctx, f.target, f.peer); err != nil {
		t.Fatal(err)
	}
	mustOK(t, st)

	// Something Tether did not make: a route elsewhere and a rule without
	// Tether's description. Teardown must leave them.
	if _, err := f.byocEC2.CreateRoute(ctx, &ec2.CreateRouteInput{RouteTableId: aws.String(byocRT), DestinationCidrBlock: aws.String("0.0.0.0/0"), GatewayId: aws.String(mustIGW(t, f.byocEC2, f.target.VPCID))}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.byocEC2.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: aws.String(sg), IpPermissions: []ec2types.IpPermission{{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(443), ToPort: aws.Int32(443), IpRanges: []ec2types.IpRange{{CidrIp: aws.String("10.1.0.0/16"), Description: aws.String("customer")}}}}}); err != nil {
		t.Fatal(err)
	}

	down, err := f.m.TeardownPeering(ctx, f.target, f.peer, f.tags)
	if err != nil {
		t.Fatalf("TeardownPeering: %v", err)
	}
	if got, want := actions(down.Steps), map[string]int{"delete": 5}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("TeardownPeering steps = %v, want %v: %+v", got, want, down.Steps)
	}
	if st, err = f.m.PeeringStatus(ctx, f.target, f.peer); err != nil {
		t.Fatal(err)
	}
	for _, i := range st.Items {
		if i.State != StateMissing {
			t.Errorf("after teardown %q = %s, want missing", i.Resource, i.State)
		}
	}
	rt, _ := f.byocEC2.DescribeRouteTables(ctx, &ec2.DescribeRouteTablesInput{RouteTableIds: []string{byocRT}})
	if n := len(rt.RouteTables[0].Routes); n != 2 {
		t.Errorf("BYOC route table has %d routes after teardown, want 2 (local, 0.0.0.0/0)", n)
	}
	rules, _ := f.byocEC2.DescribeSecurityGroupRules(ctx, &ec2.DescribeSecurityGroupRulesInput{Filters: []ec2types.Filter{{Name: aws.String("group-id"), Values: []string{sg}}}})
	var left []string
	for _, r := range rules.SecurityGroupRules {
		if !aws.ToBool(r.IsEgress) {
			left = append(left, aws.ToString(r.Description))
		}
	}
	if !slices.Equal(left, []string{"customer"}) {
		t.Errorf("ingress rules left after teardown = %q, want [customer]", left)
	}
	// Teardown again: nothing left to do.
	f.rec.take()
	if down, err = f.m.TeardownPeering(ctx, f.target, f.peer, f.tags); err != nil || len(down.Steps) != 0 {
		t.Errorf("second TeardownPeering = %+v, %v; want no steps", down.Steps, err)
	}
}

func routeTableOf(t *testing.T, c *ec2.Client, vpc string) string {
	t.Helper()
	out, err := c.DescribeRouteTables(t.Context(), &ec2.DescribeRouteTablesInput{Filters: []ec2types.Filter{{Name: aws.String("vpc-id"), Values: []string{vpc}}}})
	if err != nil || len(out.RouteTables) != 1 {
		t.Fatalf("route tables of %s: %v, %v", vpc, out, err)
	}
	return aws.ToString(out.RouteTables[0].RouteTableId)
}

func mustIGW(t *testing.T, c *ec2.Client, vpc string) string {
	t.Helper()
	igw, err := c.CreateInternetGateway(t.Context(), &ec2.CreateInternetGatewayInput{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.AttachInternetGateway(t.Context(), &ec2.AttachInternetGatewayInput{InternetGatewayId: igw.InternetGateway.InternetGatewayId, VpcId: aws.String(vpc)}); err != nil {
		t.Fatal(err)
	}
	return aws.ToString(igw.InternetGateway.InternetGatewayId)
}

// TestApplyResumes interrupts apply after each of its mutating calls, by
// a failing recorder and by a cancelled context, and checks that the next
// apply completes the work.
func TestApplyResumes(t *testing.T) {
	for n := 1; n <= 6; n++ {
		for _, how := range []string{"recorder", "cancel"} {
			t.Run(fmt.Sprintf("%s-after-call-%d", how, n), func(t *testing.T) {
				f := newFixture(t, vpcSpec{"10.0.0.0/22", []string{"us-east-1a"}}, vpcSpec{"10.1.0.0/16", []string{"us-east-1b"}})
				ctx, cancel := context.WithCancel(t.Context())
				defer cancel()
				if how == "recorder" {
					f.rec.fail.Store(int32(n))
				} else {
					f.rec.hook = func(i int) {
						if i == n {
							cancel()
						}
					}
				}
				if _, err := f.m.ApplyPeering(ctx, f.target, f.peer, f.tags); err == nil && n < 6 {
					t.Fatalf("ApplyPeering interrupted after call %d succeeded", n)
				}
				f.rec.fail.Store(0)
				f.rec.hook = nil
				f.rec.take()
				if _, err := f.m.ApplyPeering(t.Context(), f.target, f.peer, f.tags); err != nil {
					t.Fatalf("ApplyPeering after interruption: %v", err)
				}
				st, err := f.m.PeeringStatus(t.Context(), f.target, f.peer)
				if err != nil {
					t.Fatal(err)
				}
				mustOK(t, st)
				// Exactly one peering connection for the pair.
				out, _ := f.byocEC2.DescribeVpcPeeringConnections(t.Context(), &ec2.DescribeVpcPeeringConnectionsInput{Filters: []ec2types.Filter{{Name: aws.String("requester-vpc-info.vpc-id"), Values: []string{f.target.VPCID}}}})
				n := 0
				for _, c := range out.VpcPeeringConnections {
					// moto ignores the filter.
					if aws.ToString(c.RequesterVpcInfo.VpcId) == f.target.VPCID && c.Status.Code != "deleted" {
						n++
					}
				}
				if n != 1 {
					t.Errorf("%d peering connections after resume, want 1", n)
				}
			})
		}
	}
}

func TestPlanRefuses(t *testing.T) {
	t.Run("overlap with the BYOC VPC", func(t *testing.T) {
		f := newFixture(t, vpcSpec{"10.0.0.0/16", nil}, vpcSpec{"10.0.128.0/20", nil})
		_, err := f.m.PlanPeering(t.Context(), f.target, f.peer, f.tags)
		if !errors.Is(err, ErrOverlap) || !strings.Contains(err.Error(), "10.0.128.0/20") || !strings.Contains(err.Error(), "10.0.0.0/16") {
			t.Errorf("PlanPeering = %v, want ErrOverlap naming 10.0.128.0/20 and 10.0.0.0/16", err)
		}
	})
	t.Run("overlap with an existing peering", func(t *testing.T) {
		f := newFixture(t, vpcSpec{"10.0.0.0/16", nil}, vpcSpec{"10.2.0.0/16", nil})
		if _, err := f.m.ApplyPeering(t.Context(), f.target, f.peer, f.tags); err != nil {
			t.Fatal(err)
		}
		f.rec.take()
		other, _ := makeVPC(t, f.peerEC2, vpcSpec{"10.2.8.0/24", nil})
		p := f.peer
		p.VPCID = other
		_, err := f.m.ApplyPeering(t.Context(), f.target, p, f.tags)
		if !errors.Is(err, ErrOverlap) || !strings.Contains(err.Error(), "10.2.8.0/24 overlaps 10.2.0.0/16") {
			t.Errorf("ApplyPeering = %v, want ErrOverlap naming 10.2.8.0/24 and 10.2.0.0/16", err)
		}
		if calls := f.rec.take(); len(calls) != 0 {
			t.Errorf("refused ApplyPeering made %d mutating calls", len(calls))
		}
	})
	t.Run("BYOC CIDR too small", func(t *testing.T) {
		f := newFixture(t, vpcSpec{"10.0.0.0/24", nil}, vpcSpec{"10.1.0.0/16", nil})
		_, err := f.m.ApplyPeering(t.Context(), f.target, f.peer, f.tags)
		if !errors.Is(err, ErrCIDRTooSmall) || !strings.Contains(err.Error(), "10.0.0.0/24") {
			t.Errorf("ApplyPeering = %v, want ErrCIDRTooSmall naming 10.0.0.0/24", err)
		}
		if calls := f.rec.take(); len(calls) != 0 {
			t.Errorf("refused ApplyPeering made %d mutating calls", len(calls))
		}
	})
	t.Run("BYOC CIDR /23 warns", func(t *testing.T) {
		f := newFixture(t, vpcSpec{"10.0.0.0/23", nil}, vpcSpec{"10.1.0.0/16", nil})
		plan, err := f.m.PlanPeering(t.Context(), f.target, f.peer, f.tags)
		if err != nil || !slices.ContainsFunc(plan.Warnings, func(w string) bool { return strings.Contains(w, "/23") }) {
			t.Errorf("PlanPeering = %q, %v; want a /23 warning", plan.Warnings, err)
		}
	})
	t.Run("no load balancer security group", func(t *testing.T) {
		f := newFixture(t, vpcSpec{"10.0.0.0/16", nil}, vpcSpec{"10.1.0.0/16", nil})
		tg := f.target
		tg.LBSecurityGroupPrefix = "nonexistent-"
		_, err := f.m.PlanPeering(t.Context(), tg, f.peer, f.tags)
		if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "nonexistent-*") {
			t.Errorf("PlanPeering = %v, want ErrNotFound naming nonexistent-*", err)
		}
	})
	t.Run("missing VPC", func(t *testing.T) {
		f := newFixture(t, vpcSpec{"10.0.0.0/16", nil}, vpcSpec{"10.1.0.0/16", nil})
		p := f.peer
		p.VPCID = "vpc-0123456789abcdef0"
		_, err := f.m.PlanPeering(t.Context(), f.target, p, f.tags)
		if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), p.VPCID) {
			t.Errorf("PlanPeering = %v, want ErrNotFound naming %s", err, p.VPCID)
		}
	})
}

func TestIngress(t *testing.T) {
	f := newFixture(t, vpcSpec{"10.0.0.0/16", []string{"us-east-1a", "us-east-1b"}}, vpcSpec{"10.1.0.0/16", []string{"us-east-1a"}})
	ctx := t.Context()
	if _, err := f.m.ApplyPeering(ctx, f.target, f.peer, f.tags); err != nil {
		t.Fatal(err)
	}
	f.rec.take()

	st, err := f.m.IngressStatus(ctx, f.target, f.peer)
	if err != nil {
		t.Fatalf("IngressStatus: %v", err)
	}
	if z := statusOf(t, st, "private hosted zone"); len(z) != 1 || z[0].State != StateMissing {
		t.Errorf("IngressStatus zone before enable = %+v, want missing", z)
	}

	// Ingress is a request of its own, over the peering's connection.
	itags := Tags{Deployment: f.tags.Deployment, Request: "req-ingress"}
	plan, err := f.m.EnableIngress(ctx, f.target, f.peer, itags)
	if err != nil {
		t.Fatalf("EnableIngress: %v", err)
	}
	// Zone, its tags, the record; the rules are the peering's.
	if got, want := actions(plan.Steps), map[string]int{"create": 2, "modify": 1, "none": 2}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("EnableIngress steps = %v, want %v: %+v", got, want, plan.Steps)
	}
	var names []string
	for _, c := range f.rec.take() {
		names = append(names, c.Service+":"+c.Action+"@"+c.Account)
	}
	if want := []string{"route53:CreateHostedZone@" + peerAccount, "route53:ChangeTagsForResource@" + peerAccount, "route53:ChangeResourceRecordSets@" + peerAccount}; !slices.Equal(names, want) {
		t.Errorf("EnableIngress calls = %q, want %q", names, want)
	}
	if st, err = f.m.IngressStatus(ctx, f.target, f.peer); err != nil {
		t.Fatal(err)
	}
	mustOK(t, st)
	if len(st.Items) != 4 {
		t.Errorf("IngressStatus items = %+v, want zone, record, two rules", st.Items)
	}

	again, err := f.m.EnableIngress(ctx, f.target, f.peer, itags)
	if err != nil || again.Changes() {
		t.Errorf("second EnableIngress = %+v, %v; want all none", again.Steps, err)
	}
	if calls := f.rec.take(); len(calls) != 0 {
		t.Errorf("second EnableIngress made %d mutating calls", len(calls))
	}

	down, err := f.m.DisableIngress(ctx, f.target, f.peer, itags)
	if err != nil {
		t.Fatalf("DisableIngress: %v", err)
	}
	if got := actions(down.Steps); got["delete"] != 2 {
		t.Errorf("DisableIngress steps = %+v, want two deletes", down.Steps)
	}
	if st, err = f.m.IngressStatus(ctx, f.target, f.peer); err != nil {
		t.Fatal(err)
	}
	if z := statusOf(t, st, "private hosted zone"); len(z) != 1 || z[0].State != StateMissing {
		t.Errorf("IngressStatus zone after disable = %+v, want missing", z)
	}
	// The rules stay with the peering.
	for _, i := range statusOf(t, st, "ingress ") {
		if i.State != StateOK {
			t.Errorf("after DisableIngress %q = %s, want ok", i.Resource, i.State)
		}
	}
}
