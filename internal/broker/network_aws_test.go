package broker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
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
	ov, err := peer.CreateVpc(ctx, &ec2.CreateVpcInput{CidrBlock: aws.String("10.0.128.0/20")})
	if err != nil {
		t.Fatal(err)
	}

	// Everything the broker logs, at every level, to look for secrets in.
	var logs syncBuffer
	b := brokertest.Start(t, func(c *broker.Config) {
		c.AWSEndpointURL = endpoint
		c.NetworkPrivateDomain = "aws.clickhouse.example"
		c.Logger = slog.New(slog.NewTextHandler(io.MultiWriter(&logs, tLogWriter{t}), &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	if _, err := b.Client.CreateDeployment(ctx, brokerapi.CreateDeploymentRequest{Tenant: "acme", Name: "prod"}); err != nil {
		t.Fatal(err)
	}
	// acme's approver registers both accounts; the broker makes their
	// external IDs.
	secrets := []string{
		registerNetwork(t, b, "acme", "111111111111", byocVPC),
		registerNetwork(t, b, "acme", "222222222222", peerVPC, aws.ToString(ov.Vpc.VpcId)),
	}
	if _, err := b.Client.SetDeploymentSettings(ctx, "acme/prod", brokerapi.DeploymentSettings{Network: &brokerapi.NetworkConfig{
		AccountID: "111111111111", Region: "us-east-1", VPCID: byocVPC, RoleARN: "arn:aws:iam::111111111111:role/TetherNetwork",
		PrivateHostname: "abc123-private.us-east-1.aws.clickhouse.example",
	}}); err != nil {
		t.Fatal(err)
	}
	eng, acme := asUser(t, b, "engineer@vendor.test"), asUser(t, b, "approver@acme.test")
	spec := brokerapi.PeeringSpec{Kind: "peering", AccountID: "222222222222", Region: "us-east-1", VPCID: peerVPC, RoleARN: "arn:aws:iam::222222222222:role/TetherNetwork"}

	plan, err := eng.PlanNetwork(ctx, "acme/prod", spec)
	if err != nil {
		t.Fatalf("plan: %v", err)
	}
	if len(plan.Steps) == 0 || !slices.ContainsFunc(plan.Steps, func(s brokerapi.NetworkStep) bool { return s.Action == "create" }) {
		t.Fatalf("plan = %+v, want resources to create", plan)
	}
	overlap := spec
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
	// The broker assumed both roles with their external IDs, and showed
	// them nowhere.
	wantNoSecret(t, b, &logs, secrets, "acme/prod", ar.ID)

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

	// The external IDs were used (the broker assumed both roles) and
	// never shown again: not in the deployment, the requests, the audit
	// log or the broker's log.
	wantNoSecret(t, b, &logs, secrets, "acme/prod", ar.ID, ir.ID)
}

// wantNoSecret checks that none of the secrets shows in the deployment,
// the requests, the audit log or the broker's log.
func wantNoSecret(t *testing.T, b *brokertest.Broker, logs *syncBuffer, secrets []string, deployment string, requests ...string) {
	t.Helper()
	ctx := context.Background()
	var seen []string
	for _, c := range []*brokerapi.Client{b.Client, asUser(t, b, "engineer@vendor.test"), asUser(t, b, "approver@acme.test")} {
		d, err := c.GetDeployment(ctx, deployment)
		if err != nil {
			t.Fatal(err)
		}
		js, _ := json.Marshal(d)
		seen = append(seen, "GET deployment: "+string(js))
		for _, id := range requests {
			ar, err := c.GetRequest(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			js, _ := json.Marshal(ar)
			seen = append(seen, "GET request: "+string(js))
		}
		regs, err := c.ListNetworkRegistrations(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		js, _ = json.Marshal(regs)
		seen = append(seen, "GET registrations: "+string(js))
	}
	evs, err := b.Client.AuditSearch(ctx, brokerapi.AuditQuery{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for _, ae := range evs {
		seen = append(seen, "audit event: "+string(ae.Event))
	}
	seen = append(seen, "broker log: "+logs.String())
	for _, s := range seen {
		for _, secret := range secrets {
			if strings.Contains(s, secret) {
				t.Errorf("external ID %s disclosed in %.300s", secret, s)
			}
		}
		if strings.Contains(s, "external_id") && !strings.HasPrefix(s, "broker log") {
			t.Errorf("an external_id field is disclosed in %.300s", s)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for a logger's concurrent writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

type tLogWriter struct{ t testing.TB }

func (w tLogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// TestNetworkCrossTenantRefused: the attack of issue 20 on moto. globex
// registered its account, VPC and role; an engineer names them as the
// peer of a peering request on acme/prod, which only acme approves. The
// request is refused, and so is a plan naming them, by the engineer or by
// acme's approver (who could read globex's routes with it); nothing in
// globex's account changes. Before the fix the request was created,
// approved by acme alone and applied: the broker accepted the peering in
// globex's account and routed globex's VPC to acme's.
func TestNetworkCrossTenantRefused(t *testing.T) {
	endpoint := mototest.Start(t)
	t.Setenv("AWS_ACCESS_KEY_ID", "test")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "test")
	t.Setenv("AWS_REGION", "us-east-1")
	ctx := context.Background()
	acmeEC2, globexEC2 := ec2.NewFromConfig(motoIn(endpoint, "111111111111")), ec2.NewFromConfig(motoIn(endpoint, "222222222222"))
	av, err := acmeEC2.CreateVpc(ctx, &ec2.CreateVpcInput{CidrBlock: aws.String("10.0.0.0/16")})
	if err != nil {
		t.Fatal(err)
	}
	gv, err := globexEC2.CreateVpc(ctx, &ec2.CreateVpcInput{CidrBlock: aws.String("10.2.0.0/16")})
	if err != nil {
		t.Fatal(err)
	}
	acmeVPC, globexVPC := aws.ToString(av.Vpc.VpcId), aws.ToString(gv.Vpc.VpcId)
	if _, err := acmeEC2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String(netmgr.DefaultLBSecurityGroupPrefix + "abc"), Description: aws.String("istio"), VpcId: aws.String(acmeVPC)}); err != nil {
		t.Fatal(err)
	}
	globexState := func() string {
		t.Helper()
		pcx, err := globexEC2.DescribeVpcPeeringConnections(ctx, &ec2.DescribeVpcPeeringConnectionsInput{})
		if err != nil {
			t.Fatal(err)
		}
		rts, err := globexEC2.DescribeRouteTables(ctx, &ec2.DescribeRouteTablesInput{})
		if err != nil {
			t.Fatal(err)
		}
		var routes []string
		for _, rt := range rts.RouteTables {
			for _, r := range rt.Routes {
				routes = append(routes, aws.ToString(rt.RouteTableId)+" "+aws.ToString(r.DestinationCidrBlock)+" "+aws.ToString(r.GatewayId)+aws.ToString(r.VpcPeeringConnectionId))
			}
		}
		slices.Sort(routes)
		return fmt.Sprintf("%d peerings, routes %v", len(pcx.VpcPeeringConnections), routes)
	}
	before := globexState()

	b := brokertest.Start(t, func(c *broker.Config) { c.AWSEndpointURL = endpoint })
	for _, tenant := range []string{"acme", "globex"} {
		if _, err := b.Client.CreateDeployment(ctx, brokerapi.CreateDeploymentRequest{Tenant: tenant, Name: "prod"}); err != nil {
			t.Fatal(err)
		}
	}
	registerNetwork(t, b, "acme", "111111111111", acmeVPC)
	registerNetwork(t, b, "globex", "222222222222", globexVPC)
	if _, err := b.Client.SetDeploymentSettings(ctx, "acme/prod", brokerapi.DeploymentSettings{Network: &brokerapi.NetworkConfig{
		AccountID: "111111111111", Region: "us-east-1", VPCID: acmeVPC, RoleARN: "arn:aws:iam::111111111111:role/TetherNetwork",
	}}); err != nil {
		t.Fatal(err)
	}
	// globex's own deployment, as the engineer reads it: its account, VPC
	// and role, and no external ID any more.
	if _, err := b.Client.SetDeploymentSettings(ctx, "globex/prod", brokerapi.DeploymentSettings{Network: &brokerapi.NetworkConfig{
		AccountID: "222222222222", Region: "us-east-1", VPCID: globexVPC, RoleARN: "arn:aws:iam::222222222222:role/TetherNetwork",
	}}); err != nil {
		t.Fatal(err)
	}
	eng, acme := asUser(t, b, "engineer@vendor.test"), asUser(t, b, "approver@acme.test")
	gd, err := eng.GetDeployment(ctx, "globex/prod")
	if err != nil {
		t.Fatal(err)
	}
	n := gd.Settings.Network
	steal := brokerapi.PeeringSpec{Kind: "peering", AccountID: n.AccountID, Region: n.Region, VPCID: n.VPCID, RoleARN: n.RoleARN}

	const why = "peer account 222222222222 is not registered to tenant acme: its approvers register it with 'broker network register"
	ar, err := eng.CreateRequest(ctx, brokerapi.CreateAccessRequest{Deployment: "acme/prod", Scopes: []string{"network:peering"}, Duration: "2h", Reason: "analytics", Network: &steal})
	wantAPIErr(t, "acme request naming globex's account", err, 403, why)
	if err == nil {
		// The attack as it was: acme's approval alone, then apply.
		if _, err := acme.Approve(ctx, ar.ID, "ok"); err != nil {
			t.Fatal(err)
		}
		_, err = eng.ApplyNetwork(ctx, ar.ID)
		t.Errorf("apply of the approved cross-tenant request: %v", err)
	}
	ingress := steal
	ingress.Kind = "ingress"
	_, err = eng.CreateRequest(ctx, brokerapi.CreateAccessRequest{Deployment: "acme/prod", Scopes: []string{"network:peering"}, Duration: "2h", Reason: "analytics", Network: &ingress})
	wantAPIErr(t, "acme ingress request naming globex's account", err, 403, why)
	for who, c := range map[string]*brokerapi.Client{"engineer": eng, "acme's approver": acme} {
		_, err = c.PlanNetwork(ctx, "acme/prod", steal)
		wantAPIErr(t, "plan by "+who+" with globex's role", err, 403, why)
		_, err = c.PlanNetwork(ctx, "acme/prod", ingress)
		wantAPIErr(t, "ingress plan by "+who+" with globex's role", err, 403, why)
	}
	// Registering globex's account to acme is refused too.
	_, err = acme.RegisterNetwork(ctx, "acme", brokerapi.RegisterNetwork{AccountID: "222222222222", RoleARN: n.RoleARN, VPCIDs: []string{globexVPC}})
	wantAPIErr(t, "acme registering globex's account", err, 409, "registered to another tenant")
	// Nor can acme configure its deployment onto globex's account.
	_, err = b.Client.SetDeploymentSettings(ctx, "acme/prod", brokerapi.DeploymentSettings{Network: n})
	wantAPIErr(t, "acme/prod configured onto globex's account", err, 403, "BYOC account 222222222222 is not registered to tenant acme")

	if after := globexState(); after != before {
		t.Errorf("globex's account changed: before %s, after %s", before, after)
	}
	evs, err := b.Client.AuditSearch(ctx, brokerapi.AuditQuery{Type: string(audit.AWSCall), Limit: 100})
	if err != nil || len(evs) != 0 {
		t.Errorf("aws.call events = %d, %v; want none: nothing may change", len(evs), err)
	}
	refusals := 0
	for _, s := range auditTypes(t, b) {
		if strings.HasPrefix(s, "auth.failed: not_registered") {
			refusals++
		}
	}
	if refusals == 0 { // repeats from one caller on one route are aggregated
		t.Errorf("audit log has no not_registered refusal")
	}
}
