package broker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	elb "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/broker"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/brokertest"
	"github.com/tetherhq/tether/internal/mototest"
	"github.com/tetherhq/tether/internal/netmgr"
)

// motoIn returns a config acting in account on moto, by assuming a role
// there as the broker does (moto accepts any role ARN).
func motoIn(endpoint, account string) aws.Config {
	cfg := aws.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider("test", "test", ""), BaseEndpoint: aws.String(endpoint)}
	cfg.Credentials = aws.NewCredentialsCache(stscreds.NewAssumeRoleProvider(sts.NewFromConfig(cfg), "arn:aws:iam::"+account+":role/TetherNetwork"))
	return cfg
}

// TestNetworkPeeringThroughBroker: an operator's network change through
// the broker against moto_server with two accounts — configure, plan,
// request, approve, apply, status, drift found and repaired, teardown —
// each AWS change an audit event.
func TestNetworkPeeringThroughBroker(t *testing.T) {
	endpoint := mototest.Start(t)
	t.Setenv("AWS_ACCESS_KEY_ID", "test")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "test")
	t.Setenv("AWS_REGION", "us-east-1")
	ctx := context.Background()
	byoc, peer := ec2.NewFromConfig(motoIn(endpoint, "111111111111")), ec2.NewFromConfig(motoIn(endpoint, "222222222222"))
	bv, err := byoc.CreateVpc(ctx, &ec2.CreateVpcInput{CidrBlock: aws.String("10.0.0.0/16")})
	if err != nil {
		t.Fatal(err)
	}
	byocVPC := aws.ToString(bv.Vpc.VpcId)
	sg, err := byoc.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String(netmgr.DefaultLBSecurityGroupPrefix + "abc"), Description: aws.String("istio"), VpcId: aws.String(byocVPC)})
	if err != nil {
		t.Fatal(err)
	}
	// The private load balancer, found by its tags, for private ingress.
	var subnets []string
	for i, az := range []string{"us-east-1a", "us-east-1b"} {
		sn, err := byoc.CreateSubnet(ctx, &ec2.CreateSubnetInput{VpcId: aws.String(byocVPC), CidrBlock: aws.String(fmt.Sprintf("10.0.%d.0/24", i)), AvailabilityZone: aws.String(az)})
		if err != nil {
			t.Fatal(err)
		}
		subnets = append(subnets, aws.ToString(sn.Subnet.SubnetId))
	}
	if _, err := elb.NewFromConfig(motoIn(endpoint, "111111111111")).CreateLoadBalancer(ctx, &elb.CreateLoadBalancerInput{
		Name: aws.String("istio-private"), Scheme: elbtypes.LoadBalancerSchemeEnumInternal, Subnets: subnets,
		SecurityGroups: []string{aws.ToString(sg.GroupId)}, Tags: []elbtypes.Tag{{Key: aws.String("tether:ingress"), Value: aws.String("private")}},
	}); err != nil {
		t.Fatal(err)
	}
	pv, err := peer.CreateVpc(ctx, &ec2.CreateVpcInput{CidrBlock: aws.String("10.1.0.0/16")})
	if err != nil {
		t.Fatal(err)
	}
	peerVPC := aws.ToString(pv.Vpc.VpcId)

	b := brokertest.Start(t, func(c *broker.Config) { c.AWSEndpointURL = endpoint })
	if _, err := b.Client.CreateDeployment(ctx, brokerapi.CreateDeploymentRequest{Tenant: "acme", Name: "prod"}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Client.SetDeploymentSettings(ctx, "acme/prod", brokerapi.DeploymentSettings{Network: &brokerapi.NetworkConfig{
		AccountID: "111111111111", Region: "us-east-1", VPCID: byocVPC, RoleARN: "arn:aws:iam::111111111111:role/TetherNetwork", ExternalID: "tether-acme-prod",
		PrivateHostname: "abc123-private.us-east-1.aws.clickhouse.example",
	}}); err != nil {
		t.Fatal(err)
	}
	eng, acme := asUser(t, b, "engineer@vendor.test"), asUser(t, b, "approver@acme.test")
	spec := brokerapi.PeeringSpec{Kind: "peering", AccountID: "222222222222", Region: "us-east-1", VPCID: peerVPC, RoleARN: "arn:aws:iam::222222222222:role/TetherNetwork", ExternalID: "acme-peer"}

	plan, err := eng.PlanNetwork(ctx, "acme/prod", spec)
	if err != nil {
		t.Fatalf("plan: %v", err)
	}
	if len(plan.Steps) == 0 || !slices.ContainsFunc(plan.Steps, func(s brokerapi.NetworkStep) bool { return s.Action == "create" }) {
		t.Fatalf("plan = %+v, want resources to create", plan)
	}
	overlap := spec
	ov, _ := peer.CreateVpc(ctx, &ec2.CreateVpcInput{CidrBlock: aws.String("10.0.128.0/20")})
	overlap.VPCID = aws.ToString(ov.Vpc.VpcId)
	_, err = eng.PlanNetwork(ctx, "acme/prod", overlap)
	wantAPIErr(t, "plan with an overlapping peer", err, 409, "10.0.128.0/20")

	ar, err := eng.CreateRequest(ctx, brokerapi.CreateAccessRequest{Deployment: "acme/prod", Scopes: []string{"network:peering"}, Duration: "2h", Reason: "analytics VPC", Network: &spec})
	if err != nil {
		t.Fatal(err)
	}
	_, err = eng.ApplyNetwork(ctx, ar.ID)
	wantAPIErr(t, "apply before approval", err, 409, "needs an approved, active request")
	if _, err := acme.Approve(ctx, ar.ID, "ok, in our window"); err != nil {
		t.Fatal(err)
	}
	done, err := eng.ApplyNetwork(ctx, ar.ID)
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	again, err := eng.ApplyNetwork(ctx, ar.ID)
	if err != nil || slices.ContainsFunc(again.Steps, func(s brokerapi.NetworkStep) bool { return s.Action != "none" }) {
		t.Errorf("second apply = %+v, %v; want nothing to do", again, err)
	}
	st, err := acme.NetworkStatus(ctx, ar.ID)
	if err != nil || slices.ContainsFunc(st.Items, func(it brokerapi.NetworkItem) bool { return it.State != "ok" }) {
		t.Fatalf("status after apply = %+v, %v; want all ok", st, err)
	}

	// Drift: the BYOC route back to the peer is deleted out of band.
	rts, err := byoc.DescribeRouteTables(ctx, &ec2.DescribeRouteTablesInput{})
	if err != nil {
		t.Fatal(err)
	}
	deleted := false
	for _, rt := range rts.RouteTables {
		for _, r := range rt.Routes {
			if aws.ToString(r.DestinationCidrBlock) == "10.1.0.0/16" && !deleted {
				if _, err := byoc.DeleteRoute(ctx, &ec2.DeleteRouteInput{RouteTableId: rt.RouteTableId, DestinationCidrBlock: r.DestinationCidrBlock}); err != nil {
					t.Fatal(err)
				}
				deleted = true
			}
		}
	}
	if !deleted {
		t.Fatalf("apply made no route to 10.1.0.0/16 in the BYOC VPC (apply: %+v)", done)
	}
	st, _ = eng.NetworkStatus(ctx, ar.ID)
	if !slices.ContainsFunc(st.Items, func(it brokerapi.NetworkItem) bool { return it.State == "missing" || it.State == "drifted" }) {
		t.Errorf("status after deleting a route = %+v, want it missing", st)
	}
	if _, err := eng.ApplyNetwork(ctx, ar.ID); err != nil {
		t.Fatalf("repairing apply: %v", err)
	}
	if st, _ = eng.NetworkStatus(ctx, ar.ID); slices.ContainsFunc(st.Items, func(it brokerapi.NetworkItem) bool { return it.State != "ok" }) {
		t.Errorf("status after repair = %+v, want all ok", st)
	}
	// Private ingress over the peering: its own request and approval.
	in := spec
	in.Kind = "ingress"
	ir, err := eng.CreateRequest(ctx, brokerapi.CreateAccessRequest{Deployment: "acme/prod", Scopes: []string{"network:peering"}, Duration: "1h", Reason: "private endpoint", Network: &in})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := acme.Approve(ctx, ir.ID, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := eng.ApplyNetwork(ctx, ir.ID); err != nil {
		t.Fatalf("ingress enable: %v", err)
	}
	if st, err = eng.NetworkStatus(ctx, ir.ID); err != nil || slices.ContainsFunc(st.Items, func(it brokerapi.NetworkItem) bool { return it.State != "ok" }) {
		t.Errorf("ingress status = %+v, %v; want all ok", st, err)
	}
	if _, err := eng.TeardownNetwork(ctx, ir.ID); err != nil {
		t.Fatalf("ingress disable: %v", err)
	}

	if _, err := eng.TeardownNetwork(ctx, ar.ID); err != nil {
		t.Fatalf("teardown: %v", err)
	}
	pcx, _ := byoc.DescribeVpcPeeringConnections(ctx, &ec2.DescribeVpcPeeringConnectionsInput{})
	for _, p := range pcx.VpcPeeringConnections {
		if p.Status != nil && p.Status.Code != "deleted" && p.Status.Code != "rejected" {
			t.Errorf("after teardown peering %s is %s", aws.ToString(p.VpcPeeringConnectionId), p.Status.Code)
		}
	}

	// Every AWS change is in the audit log, with the action and resources.
	evs, err := b.Client.AuditSearch(ctx, brokerapi.AuditQuery{Type: string(audit.AWSCall), Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, ae := range evs {
		var e audit.Event
		json.Unmarshal(ae.Event, &e)
		actions = append(actions, e.Details["action"].(string))
		if e.RequestID != ar.ID && e.RequestID != ir.ID {
			t.Errorf("aws.call %v names request %q, want %s or %s", e.Details, e.RequestID, ar.ID, ir.ID)
		}
	}
	for _, want := range []string{"CreateVpcPeeringConnection", "AcceptVpcPeeringConnection", "CreateRoute", "DeleteVpcPeeringConnection", "CreateHostedZone", "ChangeResourceRecordSets"} {
		if !slices.ContainsFunc(actions, func(a string) bool { return strings.HasSuffix(a, want) }) {
			t.Errorf("audit has aws.call actions %q, want %s among them", actions, want)
		}
	}
	types := auditTypes(t, b)
	for _, want := range []string{"network.planned", "network.applied", "network.drift", "network.torn_down"} {
		if !slices.ContainsFunc(types, func(s string) bool { return strings.HasPrefix(s, want) }) {
			t.Errorf("audit log lacks %s", want)
		}
	}
}
