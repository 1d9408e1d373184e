package netmgr

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/route53"

	"github.com/tetherhq/tether/internal/testenv"
)

// TestApprovedPlanBinds: an apply given the approved intent refuses,
// changing nothing, when what it observes differs: here the private
// hostname an admin changed after approval, and a CIDR the customer added
// to the peer VPC.
func TestApprovedPlanBinds(t *testing.T) {
	f := newFixture(t, vpcSpec{"10.0.0.0/16", []string{"us-east-1a", "us-east-1b"}}, vpcSpec{"10.1.0.0/16", []string{"us-east-1a"}})
	ctx := t.Context()

	plan, err := f.m.PlanPeering(ctx, f.target, f.peer, f.tags)
	if err != nil || plan.Intent == nil {
		t.Fatalf("PlanPeering = %+v, %v; want an intent", plan, err)
	}
	approved := *plan.Intent
	if d := approved.Digest(); !strings.HasPrefix(d, "sha256:") || len(d) != 71 {
		t.Errorf("Digest = %q, want sha256: and 64 hex digits", d)
	}
	// The same state, listed in another order, has the same digest.
	shuffled := approved
	shuffled.Rules = slices.Clone(approved.Rules)
	slices.Reverse(shuffled.Rules)
	if shuffled.Digest() != approved.Digest() {
		t.Errorf("digest depends on list order")
	}
	if len(approved.Routes) != 2 || len(approved.Rules) != 2 || approved.SecurityGroup == "" || approved.Peer.CIDRs[0] != "10.1.0.0/16" {
		t.Errorf("intent = %+v, want two routes, two rules, the security group and the peer CIDR", approved)
	}
	b, _ := json.Marshal(approved)
	if strings.Contains(string(b), f.peer.ExternalID) || strings.Contains(string(b), f.target.ExternalID) {
		t.Errorf("intent %s carries an external ID", b)
	}

	// The customer adds a CIDR to the peer VPC after approval.
	if _, err := f.peerEC2.AssociateVpcCidrBlock(ctx, &ec2.AssociateVpcCidrBlockInput{VpcId: aws.String(f.peer.VPCID), CidrBlock: aws.String("10.9.0.0/16")}); err != nil {
		t.Fatal(err)
	}
	_, err = f.m.ApplyApprovedPeering(ctx, f.target, f.peer, f.tags, approved)
	var pce *PlanChangedError
	if !errors.Is(err, ErrPlanChanged) || !errors.As(err, &pce) || !strings.Contains(err.Error(), "peer CIDRs were 10.1.0.0/16, are now 10.1.0.0/16, 10.9.0.0/16") {
		t.Fatalf("ApplyApprovedPeering after a CIDR was added = %v, want ErrPlanChanged naming the CIDRs", err)
	}
	if calls := f.rec.take(); len(calls) != 0 {
		t.Errorf("refused apply made %d mutating calls", len(calls))
	}
	if _, err := f.peerEC2.DisassociateVpcCidrBlock(ctx, &ec2.DisassociateVpcCidrBlockInput{AssociationId: cidrAssociation(t, f.peerEC2, f.peer.VPCID, "10.9.0.0/16")}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.m.ApplyApprovedPeering(ctx, f.target, f.peer, f.tags, approved); err != nil {
		t.Fatalf("ApplyApprovedPeering as approved: %v", err)
	}
	f.rec.take()

	// Ingress: the private hostname changes after approval.
	itags := Tags{Deployment: f.tags.Deployment, Request: "req-ingress"}
	iplan, err := f.m.PlanIngress(ctx, f.target, f.peer, itags)
	if err != nil || iplan.Intent == nil || iplan.Intent.PrivateHostname != f.target.PrivateHostname {
		t.Fatalf("PlanIngress = %+v, %v; want an intent naming %s", iplan, err, f.target.PrivateHostname)
	}
	if calls := f.rec.take(); len(calls) != 0 {
		t.Errorf("PlanIngress made %d mutating calls", len(calls))
	}
	changed := f.target
	changed.PrivateHostname = "other-private.us-east-1.aws.clickhouse.example"
	_, err = f.m.EnableApprovedIngress(ctx, changed, f.peer, itags, *iplan.Intent)
	want := fmt.Sprintf("private hostname was %s, is now %s", f.target.PrivateHostname, changed.PrivateHostname)
	if !errors.Is(err, ErrPlanChanged) || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "ask for a new approval") {
		t.Fatalf("EnableApprovedIngress with another hostname = %v, want ErrPlanChanged saying %q", err, want)
	}
	if calls := f.rec.take(); len(calls) != 0 {
		t.Errorf("refused enable made %d mutating calls", len(calls))
	}
	if _, err := f.m.EnableApprovedIngress(ctx, f.target, f.peer, itags, *iplan.Intent); err != nil {
		t.Fatalf("EnableApprovedIngress as approved: %v", err)
	}
}

func cidrAssociation(t *testing.T, c *ec2.Client, vpc, cidr string) *string {
	t.Helper()
	out, err := c.DescribeVpcs(t.Context(), &ec2.DescribeVpcsInput{VpcIds: []string{vpc}})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range out.Vpcs[0].CidrBlockAssociationSet {
		if aws.ToString(a.CidrBlock) == cidr {
			return a.AssociationId
		}
	}
	t.Fatalf("VPC %s has no CIDR %s", vpc, cidr)
	return nil
}

// TestPrivateHostnameOutsideDomain: a private zone for AWS's STS endpoint
// (the attack: an admin set it after approval) or for any name outside
// the vendor's private domain is refused before anything is made.
func TestPrivateHostnameOutsideDomain(t *testing.T) {
	f := newFixture(t, vpcSpec{"10.0.0.0/16", []string{"us-east-1a", "us-east-1b"}}, vpcSpec{"10.1.0.0/16", []string{"us-east-1a"}})
	ctx := t.Context()
	for _, host := range []string{"sts.us-east-1.amazonaws.com", "s3.amazonaws.com", "login.example.org", "aws.clickhouse.example", "x.aws.clickhouse.example.evil.com"} {
		tg := f.target
		tg.PrivateHostname = host
		for name, call := range map[string]func() (Plan, error){
			"PlanIngress":   func() (Plan, error) { return f.m.PlanIngress(ctx, tg, f.peer, f.tags) },
			"EnableIngress": func() (Plan, error) { return f.m.EnableIngress(ctx, tg, f.peer, f.tags) },
		} {
			if _, err := call(); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), host) {
				t.Errorf("%s(%s) = %v, want ErrInvalid naming it", name, host, err)
			}
		}
	}
	if calls := f.rec.take(); len(calls) != 0 {
		t.Errorf("refused ingress made %d mutating calls: %+v", len(calls), calls)
	}
	zones, err := route53.NewFromConfig(accountConfig(f.endpoint, peerAccount)).ListHostedZones(ctx, &route53.ListHostedZonesInput{})
	if err != nil {
		t.Fatal(err)
	}
	for _, z := range zones.HostedZones {
		// moto is shared by the package's tests: look for these names.
		if n := aws.ToString(z.Name); strings.Contains(n, "amazonaws") || strings.Contains(n, "example.org") || strings.Contains(n, "evil") || n == "aws.clickhouse.example." {
			t.Errorf("hosted zone %s made by a refused ingress", n)
		}
	}

	for _, tt := range []struct {
		host, domain string
		ok           bool
	}{
		{"abc-private.us-east-1.aws.clickhouse.example", "aws.clickhouse.example", true},
		{"abc-private.us-east-1.aws.clickhouse.example.", "aws.clickhouse.example.", true},
		{"ABC-private.us-east-1.aws.clickhouse.example", "aws.clickhouse.example", false},
		{"abc.aws.clickhouse.example", "", false},
		{"sts.us-east-1.amazonaws.com", "amazonaws.com", false},
		{"sts.us-east-1.amazonaws.com", "us-east-1.amazonaws.com", false},
		{"abc.example.aws", "example.aws", false},
	} {
		if err := ValidatePrivateHostname(tt.host, tt.domain); (err == nil) != tt.ok {
			t.Errorf("ValidatePrivateHostname(%q, %q) = %v, want ok %v", tt.host, tt.domain, err, tt.ok)
		}
	}
	if _, err := New(Config{AWS: baseConfig(), PrivateDomain: "amazonaws.com"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("New with private domain amazonaws.com = %v, want ErrInvalid", err)
	}
}

// TestRouteConflict: a route to the peer CIDR (or a part of it) through
// an internet gateway is a conflict: plan reports it, apply refuses and
// changes nothing, and teardown leaves the route.
func TestRouteConflict(t *testing.T) {
	for _, dst := range []string{"10.1.0.0/16", "10.1.128.0/17", "10.0.0.0/8"} {
		t.Run(strings.ReplaceAll(dst, "/", "_"), func(t *testing.T) {
			f := newFixture(t, vpcSpec{"10.0.0.0/16", nil}, vpcSpec{"10.1.0.0/16", nil})
			ctx := t.Context()
			rtb := routeTableOf(t, f.byocEC2, f.target.VPCID)
			igw := mustIGW(t, f.byocEC2, f.target.VPCID)
			if _, err := f.byocEC2.CreateRoute(ctx, &ec2.CreateRouteInput{RouteTableId: aws.String(rtb), DestinationCidrBlock: aws.String(dst), GatewayId: aws.String(igw)}); err != nil {
				t.Fatal(err)
			}
			_, err := f.m.PlanPeering(ctx, f.target, f.peer, f.tags)
			if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), igw) || !strings.Contains(err.Error(), dst) {
				t.Fatalf("PlanPeering = %v, want ErrConflict naming %s and %s", err, igw, dst)
			}
			if _, err := f.m.ApplyPeering(ctx, f.target, f.peer, f.tags); !errors.Is(err, ErrConflict) {
				t.Fatalf("ApplyPeering = %v, want ErrConflict", err)
			}
			if calls := f.rec.take(); len(calls) != 0 {
				t.Errorf("refused apply made %d mutating calls: %+v", len(calls), calls)
			}
			if _, err := f.m.TeardownPeering(ctx, f.target, f.peer, f.tags); err != nil {
				t.Fatalf("TeardownPeering: %v", err)
			}
			out, err := f.byocEC2.DescribeRouteTables(ctx, &ec2.DescribeRouteTablesInput{RouteTableIds: []string{rtb}})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.ContainsFunc(out.RouteTables[0].Routes, func(r ec2types.Route) bool {
				return aws.ToString(r.DestinationCidrBlock) == dst && aws.ToString(r.GatewayId) == igw
			}) {
				t.Errorf("route %s via %s gone after teardown: %+v", dst, igw, out.RouteTables[0].Routes)
			}
		})
	}
}

// TestTeardownOnlyItsOwn: two requests peer the BYOC VPC with two peer
// VPCs, and two ingress requests make zones for the same name in each;
// tearing one down (twice) leaves the other's peering, routes, rules and
// zone intact.
func TestTeardownOnlyItsOwn(t *testing.T) {
	f := newFixture(t, vpcSpec{"10.0.0.0/16", []string{"us-east-1a", "us-east-1b"}}, vpcSpec{"10.1.0.0/16", []string{"us-east-1a"}})
	ctx := t.Context()
	otherVPC, _ := makeVPC(t, f.peerEC2, vpcSpec{"10.2.0.0/16", []string{"us-east-1a"}})
	p1, p2 := f.peer, f.peer
	p2.VPCID = otherVPC
	a := Tags{Deployment: f.tags.Deployment, Request: "req-a"}
	b := Tags{Deployment: f.tags.Deployment, Request: "req-b"}
	ia := Tags{Deployment: f.tags.Deployment, Request: "req-ia"}
	ib := Tags{Deployment: f.tags.Deployment, Request: "req-ib"}
	for _, x := range []struct {
		p Peer
		t Tags
	}{{p1, a}, {p2, b}} {
		if _, err := f.m.ApplyPeering(ctx, f.target, x.p, x.t); err != nil {
			t.Fatalf("ApplyPeering %s: %v", x.t.Request, err)
		}
	}
	for _, x := range []struct {
		p Peer
		t Tags
	}{{p1, ia}, {p2, ib}} {
		if _, err := f.m.EnableIngress(ctx, f.target, x.p, x.t); err != nil {
			t.Fatalf("EnableIngress %s: %v", x.t.Request, err)
		}
	}
	// A second ingress request for the same name and VPC is refused: the
	// VPC has another request's zone.
	if _, err := f.m.EnableIngress(ctx, f.target, p2, Tags{Deployment: f.tags.Deployment, Request: "req-ic"}); !errors.Is(err, ErrConflict) {
		t.Errorf("EnableIngress of a third request on p2 = %v, want ErrConflict", err)
	}
	f.rec.take()

	for range 2 {
		if _, err := f.m.DisableIngress(ctx, f.target, p1, ia); err != nil {
			t.Fatalf("DisableIngress ia: %v", err)
		}
		if _, err := f.m.TeardownPeering(ctx, f.target, p1, a); err != nil {
			t.Fatalf("TeardownPeering a: %v", err)
		}
	}
	st, err := f.m.PeeringStatus(ctx, f.target, p2)
	if err != nil {
		t.Fatal(err)
	}
	mustOK(t, st)
	ist, err := f.m.IngressStatus(ctx, f.target, p2)
	if err != nil {
		t.Fatal(err)
	}
	mustOK(t, ist)
	// And request a's are gone.
	st, err = f.m.PeeringStatus(ctx, f.target, p1)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range st.Items {
		if i.State != StateMissing {
			t.Errorf("after teardown of a, %q = %s, want missing", i.Resource, i.State)
		}
	}
}

// TestPublicPeerCIDR: a peer VPC in public address space is refused
// unless the customer registered the range.
func TestPublicPeerCIDR(t *testing.T) {
	f := newFixture(t, vpcSpec{"10.0.0.0/16", nil}, vpcSpec{"52.94.0.0/16", nil})
	ctx := t.Context()
	_, err := f.m.PlanPeering(ctx, f.target, f.peer, f.tags)
	if !errors.Is(err, ErrPublicCIDR) || !strings.Contains(err.Error(), "52.94.0.0/16") {
		t.Fatalf("PlanPeering(52.94.0.0/16) = %v, want ErrPublicCIDR naming it", err)
	}
	if _, err := f.m.ApplyPeering(ctx, f.target, f.peer, f.tags); !errors.Is(err, ErrPublicCIDR) {
		t.Fatalf("ApplyPeering(52.94.0.0/16) = %v, want ErrPublicCIDR", err)
	}
	if calls := f.rec.take(); len(calls) != 0 {
		t.Errorf("refused apply made %d mutating calls", len(calls))
	}
	p := f.peer
	p.PublicCIDROK = func(c netip.Prefix) bool { return c == netip.MustParsePrefix("52.94.0.0/16") }
	if _, err := f.m.PlanPeering(ctx, f.target, p, f.tags); err != nil {
		t.Errorf("PlanPeering of a registered public CIDR = %v, want ok", err)
	}

	for _, tt := range []struct {
		cidr string
		want bool
	}{{"10.1.0.0/16", true}, {"172.16.0.0/12", true}, {"172.32.0.0/16", false}, {"192.168.4.0/24", true}, {"100.64.0.0/10", true}, {"100.128.0.0/16", false}, {"52.94.0.0/16", false}, {"8.0.0.0/7", false}} {
		if got := IsPrivateCIDR(netip.MustParsePrefix(tt.cidr)); got != tt.want {
			t.Errorf("IsPrivateCIDR(%s) = %v, want %v", tt.cidr, got, tt.want)
		}
	}
}

// TestUnknownRegionRefusedFast: a made-up region is refused before any
// call, and a failing call is tried at most three times.
func TestUnknownRegionRefusedFast(t *testing.T) {
	m, err := New(Config{AWS: baseConfig(), EndpointURL: failServer(t), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if m.cfg.MaxAttempts != 3 {
		t.Errorf("default MaxAttempts = %d, want 3", m.cfg.MaxAttempts)
	}
	for _, side := range []string{"target", "peer"} {
		tg, p := validTarget(), validPeer()
		if side == "target" {
			tg.Region = "zz-nowhere-9"
		} else {
			p.Region = "zz-nowhere-9"
		}
		if _, err := m.PlanPeering(t.Context(), tg, p, Tags{Deployment: "d"}); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "zz-nowhere-9") {
			t.Errorf("PlanPeering with %s region zz-nowhere-9 = %v, want ErrInvalid naming it", side, err)
		}
	}
}

// TestKnownRegionsMatchSDK keeps knownRegions equal to the regions of
// the aws-sdk-go-v2 in go.mod (its partitions.json).
func TestKnownRegionsMatchSDK(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/aws/aws-sdk-go-v2").Output()
	testenv.Require(t, err == nil && strings.TrimSpace(string(out)) != "", "the go tool, to find the AWS SDK's module directory (go list: %v)", err)
	raw, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(out)), "internal", "endpoints", "awsrulesfn", "partitions.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Partitions []struct {
			ID      string                     `json:"id"`
			Regions map[string]json.RawMessage `json:"regions"`
		} `json:"partitions"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for _, p := range doc.Partitions {
		for r := range p.Regions {
			if !strings.HasPrefix(r, "aws-") { // "aws-global" and the like are no regions
				want[r] = p.ID
			}
		}
	}
	if fmt.Sprint(want) != fmt.Sprint(knownRegions) {
		t.Errorf("knownRegions = %v\nthe SDK knows %v\nupdate validate.go", knownRegions, want)
	}
}
