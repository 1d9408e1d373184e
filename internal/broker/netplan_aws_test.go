package broker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	elb "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
	"github.com/aws/aws-sdk-go-v2/service/route53"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/broker"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/brokertest"
	"github.com/tetherhq/tether/internal/mototest"
	"github.com/tetherhq/tether/internal/netmgr"
)

// netWorld is a BYOC VPC with its private load balancer and peer VPCs on
// moto, registered to acme, and a broker managing them.
type netWorld struct {
	b          *brokertest.Broker
	byoc, peer *ec2.Client
	r53        *route53.Client
	byocVPC    string
	peerVPCs   map[string]string // by CIDR
	cfg        brokerapi.NetworkConfig
	eng, acme  *brokerapi.Client
}

func newNetWorld(t *testing.T, peerCIDRs ...string) *netWorld {
	t.Helper()
	endpoint := mototest.Start(t)
	t.Setenv("AWS_ACCESS_KEY_ID", "test")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "test")
	t.Setenv("AWS_REGION", "us-east-1")
	ctx := context.Background()
	w := &netWorld{byoc: ec2.NewFromConfig(motoIn(endpoint, "111111111111")), peer: ec2.NewFromConfig(motoIn(endpoint, "222222222222")),
		r53: route53.NewFromConfig(motoIn(endpoint, "222222222222")), peerVPCs: map[string]string{}}
	bv, err := w.byoc.CreateVpc(ctx, &ec2.CreateVpcInput{CidrBlock: aws.String("10.0.0.0/16")})
	if err != nil {
		t.Fatal(err)
	}
	w.byocVPC = aws.ToString(bv.Vpc.VpcId)
	sg, err := w.byoc.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String(netmgr.DefaultLBSecurityGroupPrefix + "abc"), Description: aws.String("istio"), VpcId: aws.String(w.byocVPC)})
	if err != nil {
		t.Fatal(err)
	}
	var subnets []string
	for i, az := range []string{"us-east-1a", "us-east-1b"} {
		sn, err := w.byoc.CreateSubnet(ctx, &ec2.CreateSubnetInput{VpcId: aws.String(w.byocVPC), CidrBlock: aws.String(fmt.Sprintf("10.0.%d.0/24", i)), AvailabilityZone: aws.String(az)})
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
	var vpcs []string
	for _, c := range peerCIDRs {
		pv, err := w.peer.CreateVpc(ctx, &ec2.CreateVpcInput{CidrBlock: aws.String(c)})
		if err != nil {
			t.Fatal(err)
		}
		w.peerVPCs[c] = aws.ToString(pv.Vpc.VpcId)
		vpcs = append(vpcs, aws.ToString(pv.Vpc.VpcId))
	}
	w.b = brokertest.Start(t, func(c *broker.Config) {
		c.AWSEndpointURL = endpoint
		c.NetworkPrivateDomain = "aws.clickhouse.example"
	})
	if _, err := w.b.Client.CreateDeployment(ctx, brokerapi.CreateDeploymentRequest{Tenant: "acme", Name: "prod"}); err != nil {
		t.Fatal(err)
	}
	registerNetwork(t, w.b, "acme", "111111111111", w.byocVPC)
	registerNetwork(t, w.b, "acme", "222222222222", vpcs...)
	w.cfg = brokerapi.NetworkConfig{AccountID: "111111111111", Region: "us-east-1", VPCID: w.byocVPC, RoleARN: "arn:aws:iam::111111111111:role/TetherNetwork",
		PrivateHostname: "abc123-private.us-east-1.aws.clickhouse.example"}
	w.configure(t, w.cfg, nil)
	w.eng, w.acme = asUser(t, w.b, "engineer@vendor.test"), asUser(t, w.b, "approver@acme.test")
	return w
}

func (w *netWorld) configure(t *testing.T, cfg brokerapi.NetworkConfig, freezes []brokerapi.Window) {
	t.Helper()
	ctx := context.Background()
	if _, err := w.b.Client.SetDeploymentSettings(ctx, "acme/prod", brokerapi.DeploymentSettings{Network: &cfg}); err != nil {
		t.Fatal(err)
	}
	// Freezes are the customer's: an approver of acme declares them.
	if _, err := asUser(t, w.b, "approver@acme.test").UpdateCustomerSettings(ctx, "acme/prod", func(s *brokerapi.CustomerSettings) error {
		s.FreezeWindows = freezes
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func (w *netWorld) spec(kind, cidr string) brokerapi.PeeringSpec {
	return brokerapi.PeeringSpec{Kind: kind, AccountID: "222222222222", Region: "us-east-1", VPCID: w.peerVPCs[cidr], RoleARN: "arn:aws:iam::222222222222:role/TetherNetwork"}
}

func (w *netWorld) request(t *testing.T, spec brokerapi.PeeringSpec) (brokerapi.AccessRequest, error) {
	t.Helper()
	return w.eng.CreateRequest(context.Background(), brokerapi.CreateAccessRequest{Deployment: "acme/prod", Scopes: []string{"network:peering"}, Duration: "2h", Reason: "network change", Network: &spec})
}

func (w *netWorld) approved(t *testing.T, spec brokerapi.PeeringSpec) brokerapi.AccessRequest {
	t.Helper()
	ar, err := w.request(t, spec)
	if err != nil {
		t.Fatalf("create %s request: %v", spec.Kind, err)
	}
	if ar, err = w.acme.Approve(context.Background(), ar.ID, "ok"); err != nil || ar.State != brokerapi.StateActive {
		t.Fatalf("approve: %+v, %v", ar, err)
	}
	return ar
}

// TestNetworkApprovalBindsPlan: the request carries the plan and its
// digest for the approver; after approval an admin changes the private
// hostname and apply refuses, saying what changed; an AWS name is refused
// outright, at request and at apply, and no zone is made for it.
func TestNetworkApprovalBindsPlan(t *testing.T) {
	w := newNetWorld(t, "10.1.0.0/16")
	ctx := context.Background()
	spec := w.spec("ingress", "10.1.0.0/16")

	ar, err := w.request(t, spec)
	if err != nil {
		t.Fatal(err)
	}
	np := ar.NetworkPlan
	if np == nil || !strings.HasPrefix(np.Digest, "sha256:") || np.Intent.PrivateHostname != w.cfg.PrivateHostname || np.Intent.Peer.VPC != spec.VPCID || len(np.Intent.Rules) != 2 {
		t.Fatalf("request's network plan = %+v, want the digest, the hostname, the peer VPC and two rules", np)
	}
	// The approver sees the same plan, and approving another digest is
	// refused.
	seen, err := w.acme.GetRequest(ctx, ar.ID)
	if err != nil || seen.NetworkPlan == nil || seen.NetworkPlan.Digest != np.Digest {
		t.Fatalf("approver's view = %+v, %v; want digest %s", seen.NetworkPlan, err, np.Digest)
	}
	_, err = w.acme.ApprovePlan(ctx, ar.ID, "ok", "sha256:"+strings.Repeat("0", 64))
	wantAPIErr(t, "approve another plan", err, 409, "look at the request again")
	if _, err := w.acme.ApprovePlan(ctx, ar.ID, "ok", np.Digest); err != nil {
		t.Fatalf("approve with the digest shown: %v", err)
	}

	// After approval, the admin points the hostname elsewhere.
	moved := w.cfg
	moved.PrivateHostname = "other-private.us-east-1.aws.clickhouse.example"
	w.configure(t, moved, nil)
	_, err = w.eng.ApplyNetwork(ctx, ar.ID)
	wantAPIErr(t, "apply after the hostname changed", err, 409, "the plan changed since approval: private hostname was abc123-private.us-east-1.aws.clickhouse.example, is now other-private.us-east-1.aws.clickhouse.example")
	sts := w.cfg
	sts.PrivateHostname = "sts.us-east-1.amazonaws.com"
	w.configure(t, sts, nil)
	_, err = w.eng.ApplyNetwork(ctx, ar.ID)
	wantAPIErr(t, "apply with an STS hostname", err, 400, "sts.us-east-1.amazonaws.com")
	_, err = w.request(t, spec)
	wantAPIErr(t, "request with an STS hostname", err, 400, "sts.us-east-1.amazonaws.com")
	zones, err := w.r53.ListHostedZones(ctx, &route53.ListHostedZonesInput{})
	if err != nil {
		t.Fatal(err)
	}
	for _, z := range zones.HostedZones {
		if strings.Contains(aws.ToString(z.Name), "amazonaws") || strings.Contains(aws.ToString(z.Name), "other-private") {
			t.Errorf("hosted zone %s made though refused", aws.ToString(z.Name))
		}
	}
	// Back as approved, it applies.
	w.configure(t, w.cfg, nil)
	if _, err := w.eng.ApplyNetwork(ctx, ar.ID); err != nil {
		t.Fatalf("apply as approved: %v", err)
	}
	if evs := auditDetails(t, w.b, audit.ReviewApproved); len(evs) == 0 || evs[len(evs)-1]["plan_digest"] != np.Digest {
		t.Errorf("review.approved details = %v, want plan_digest %s", evs, np.Digest)
	}
}

func auditDetails(t *testing.T, b *brokertest.Broker, typ audit.Type) []map[string]any {
	t.Helper()
	evs, err := b.Client.AuditSearch(context.Background(), brokerapi.AuditQuery{Type: string(typ), Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, ae := range evs {
		var e audit.Event
		json.Unmarshal(ae.Event, &e)
		out = append(out, e.Details)
	}
	return out
}

// TestNetworkFreezeAfterApproval: a freeze declared after approval blocks
// apply.
func TestNetworkFreezeAfterApproval(t *testing.T) {
	w := newNetWorld(t, "10.1.0.0/16")
	ctx := context.Background()
	ar := w.approved(t, w.spec("peering", "10.1.0.0/16"))
	now := time.Now().UTC().Truncate(time.Second)
	w.configure(t, w.cfg, []brokerapi.Window{{Start: now.Add(-time.Minute), End: now.Add(time.Hour), Reason: "quarter end"}})
	_, err := w.eng.ApplyNetwork(ctx, ar.ID)
	wantAPIErr(t, "apply in a freeze declared after approval", err, 409, "frozen (quarter end)")
	pcx, _ := w.byoc.DescribeVpcPeeringConnections(ctx, &ec2.DescribeVpcPeeringConnectionsInput{})
	if len(pcx.VpcPeeringConnections) != 0 {
		t.Errorf("a frozen apply made peering connections: %+v", pcx.VpcPeeringConnections)
	}
	w.configure(t, w.cfg, nil)
	if _, err := w.eng.ApplyNetwork(ctx, ar.ID); err != nil {
		t.Fatalf("apply after the freeze: %v", err)
	}
}

// TestNetworkRevokeTearsDown: revoking an applied network request tears
// its change down by itself, audited; a revoked request may still be torn
// down by hand; another request's peering stays.
func TestNetworkRevokeTearsDown(t *testing.T) {
	w := newNetWorld(t, "10.1.0.0/16", "10.2.0.0/16")
	ctx := context.Background()
	a := w.approved(t, w.spec("peering", "10.1.0.0/16"))
	b := w.approved(t, w.spec("peering", "10.2.0.0/16"))
	for _, ar := range []brokerapi.AccessRequest{a, b} {
		if _, err := w.eng.ApplyNetwork(ctx, ar.ID); err != nil {
			t.Fatalf("apply %s: %v", ar.ID, err)
		}
	}
	if _, err := w.acme.Revoke(ctx, a.ID, "no longer needed"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	var got brokerapi.AccessRequest
	for {
		var err error
		if got, err = w.eng.GetRequest(ctx, a.ID); err != nil {
			t.Fatal(err)
		}
		if got.NetworkPlan != nil && !got.NetworkPlan.TornDownAt.IsZero() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("revoked request not torn down: %+v", got.NetworkPlan)
		}
		if _, err := w.eng.WaitRequest(ctx, a.ID, got.Version, 2*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	live := map[string]string{}
	pcx, _ := w.byoc.DescribeVpcPeeringConnections(ctx, &ec2.DescribeVpcPeeringConnectionsInput{})
	for _, p := range pcx.VpcPeeringConnections {
		live[aws.ToString(p.AccepterVpcInfo.VpcId)] = string(p.Status.Code)
	}
	if live[w.peerVPCs["10.1.0.0/16"]] != "deleted" || live[w.peerVPCs["10.2.0.0/16"]] != "active" {
		t.Errorf("peerings after revoking a = %v, want a's deleted and b's active", live)
	}
	st, err := w.eng.NetworkStatus(ctx, b.ID)
	if err != nil || slices.ContainsFunc(st.Items, func(it brokerapi.NetworkItem) bool { return it.State != "ok" }) {
		t.Errorf("b's status after a's teardown = %+v, %v; want all ok", st, err)
	}
	found := false
	for _, d := range auditDetails(t, w.b, audit.NetworkTornDown) {
		if d["automatic"] == true {
			found = true
		}
	}
	if !found {
		t.Errorf("no automatic network.torn_down event")
	}
	// Teardown by hand after revoke is allowed (it only removes access).
	if _, err := w.eng.TeardownNetwork(ctx, a.ID); err != nil {
		t.Errorf("teardown of a revoked request: %v", err)
	}
	// A request never applied has nothing to tear down.
	c, err := w.request(t, w.spec("ingress", "10.2.0.0/16"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = w.eng.TeardownNetwork(ctx, c.ID)
	wantAPIErr(t, "teardown of a pending request", err, 409, "never applied")
}

// TestNetworkRequestRefusesEarly: a public peer CIDR the customer did not
// register and a made-up region are refused when the request is made,
// the region before any AWS call.
func TestNetworkRequestRefusesEarly(t *testing.T) {
	w := newNetWorld(t, "52.94.0.0/16")
	_, err := w.request(t, w.spec("peering", "52.94.0.0/16"))
	wantAPIErr(t, "request for a public peer CIDR", err, 403, "52.94.0.0/16 is not private address space")
	spec := w.spec("peering", "52.94.0.0/16")
	spec.Region = "zz-nowhere-9"
	start := time.Now()
	_, err = w.request(t, spec)
	if ae := apiErr(t, err); ae.Status != 400 || !strings.Contains(ae.Message, "zz-nowhere-9") {
		t.Errorf("request in zz-nowhere-9 = %v, want 400 naming the region", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("refusing zz-nowhere-9 took %v, want no AWS call", d)
	}

	// Registered by the customer as a range of its own, the same public
	// CIDR is accepted.
	ctx := context.Background()
	acme := asUser(t, w.b, "approver@acme.test")
	regs, err := acme.ListNetworkRegistrations(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	for _, reg := range regs {
		if reg.AccountID != "222222222222" {
			continue
		}
		if err := acme.UnregisterNetwork(ctx, "acme", reg.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := acme.RegisterNetwork(ctx, "acme", brokerapi.RegisterNetwork{AccountID: reg.AccountID, RoleARN: reg.RoleARN, VPCIDs: reg.VPCIDs, PeerCIDRs: []string{"52.94.0.0/16"}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.request(t, w.spec("peering", "52.94.0.0/16")); err != nil {
		t.Errorf("request for a public peer CIDR the customer registered: %v", err)
	}
}

// TestNetworkMaintenanceWindow: outside the customer's maintenance window
// the change waits, unless the approved request said otherwise; the
// customer's approver does not apply.
func TestNetworkMaintenanceWindow(t *testing.T) {
	w := newNetWorld(t, "10.1.0.0/16")
	ctx := context.Background()
	ar := w.approved(t, w.spec("peering", "10.1.0.0/16"))
	if ar.Network == nil || ar.Network.VPCID != w.peerVPCs["10.1.0.0/16"] || ar.Grant == nil {
		t.Fatalf("network request = %+v, want active carrying the peer VPC", ar)
	}
	tomorrow := time.Now().Add(24 * time.Hour).UTC().Truncate(time.Second)
	if _, err := w.acme.UpdateCustomerSettings(ctx, "acme/prod", func(s *brokerapi.CustomerSettings) error {
		s.MaintenanceWindows = []brokerapi.Window{{Start: tomorrow, End: tomorrow.Add(2 * time.Hour)}}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	_, err := w.eng.ApplyNetwork(ctx, ar.ID)
	wantAPIErr(t, "apply outside the maintenance window", err, 409, "the next maintenance window is "+tomorrow.Format(time.RFC3339))
	_, err = w.acme.ApplyNetwork(ctx, ar.ID)
	wantAPIErr(t, "apply by the customer's approver", err, 403, "needs the role")
}
