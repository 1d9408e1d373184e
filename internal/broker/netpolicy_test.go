package broker_test

import (
	"context"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/tetherhq/tether/internal/broker"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/brokertest"
	"github.com/tetherhq/tether/internal/mototest"
	"github.com/tetherhq/tether/internal/netmgr"
)

// echoPolicy allows every request and quotes input.network, as JSON, as
// its only reason, so that the policy.decided event shows what the policy
// was given.
const echoPolicy = `package tether.access

decision := {
	"allow": true,
	"reasons": [json.marshal(object.get(input, "network", "absent"))],
	"required_reviews": [{"tenant": input.deployment.tenant, "role": "approver", "count": 1}],
	"max_duration_seconds": 86400,
	"scopes": ["network:peering"],
}
`

// TestNetworkRequestPolicyInputAndAudit: the policy input and the
// request.created event carry what a network change would touch (kind,
// peer account, region, VPC, role, route tables, outside the maintenance
// windows), so that a policy can decide on it and the audit log shows
// it; and the default policy asks two customer approvals for a change
// outside the maintenance windows. Before, both carried only the scope,
// and one approval sufficed.
func TestNetworkRequestPolicyInputAndAudit(t *testing.T) {
	ctx := context.Background()
	endpoint := mototest.Start(t)
	t.Setenv("AWS_ACCESS_KEY_ID", "test")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "test")
	t.Setenv("AWS_REGION", "us-east-1")
	byocVPC, peerVPC, peerRTB := networkOnMoto(t, endpoint)
	spec := brokerapi.PeeringSpec{
		Kind: "peering", AccountID: "222222222222", Region: "us-east-1", VPCID: peerVPC,
		RoleARN: "arn:aws:iam::222222222222:role/TetherNetwork", RouteTableIDs: []string{peerRTB},
		OutsideWindow: true,
	}
	wantNetwork := map[string]any{
		"kind": "peering", "account_id": "222222222222", "region": "us-east-1", "vpc_id": peerVPC,
		"role_arn": "arn:aws:iam::222222222222:role/TetherNetwork", "route_table_ids": []any{peerRTB},
		"outside_maintenance_window": true,
	}

	t.Run("default policy", func(t *testing.T) {
		b := brokertest.Start(t, func(c *broker.Config) { c.AWSEndpointURL = endpoint })
		eng := setUpNetworkDeployment(t, b, byocVPC, peerVPC)
		for _, tt := range []struct {
			outside bool
			want    int
		}{{false, 1}, {true, 2}} {
			s := spec
			s.OutsideWindow = tt.outside
			ar, err := eng.CreateRequest(ctx, brokerapi.CreateAccessRequest{
				Deployment: "acme/prod", Scopes: []string{"network:peering"}, Duration: "2h",
				Reason: "private ingress for the analytics VPC", Network: &s,
			})
			if err != nil {
				t.Fatalf("create (outside the windows: %v): %v", tt.outside, err)
			}
			rr := ar.Decision.RequiredReviews
			if len(rr) != 1 || rr[0].Role != "approver" || rr[0].Tenant != "acme" || rr[0].Count != tt.want {
				t.Errorf("request outside the maintenance windows %v: required reviews %+v, want %d approver(s) of acme", tt.outside, rr, tt.want)
			}

			ev := auditEvent(t, b, ar.ID, "request.created")
			var created struct {
				Details map[string]any `json:"details"`
			}
			if err := json.Unmarshal(ev, &created); err != nil {
				t.Fatal(err)
			}
			want := maps.Clone(wantNetwork)
			want["outside_maintenance_window"] = tt.outside
			if got := created.Details["network"]; !reflect.DeepEqual(got, want) {
				t.Errorf("request.created details.network = %#v, want %#v", got, want)
			}
			if strings.Contains(string(ev), "external_id") {
				t.Errorf("request.created = %s, which names an external ID", ev)
			}
		}
	})

	t.Run("policy input", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "echo.rego"), []byte(echoPolicy), 0o644); err != nil {
			t.Fatal(err)
		}
		b := brokertest.Start(t, func(c *broker.Config) { c.PolicyDir, c.AWSEndpointURL = dir, endpoint })
		eng := setUpNetworkDeployment(t, b, byocVPC, peerVPC)
		ar, err := eng.CreateRequest(ctx, brokerapi.CreateAccessRequest{
			Deployment: "acme/prod", Scopes: []string{"network:peering"}, Duration: "2h",
			Reason: "private ingress for the analytics VPC", Network: &spec,
		})
		if err != nil {
			t.Fatal(err)
		}
		var decided struct {
			Reason string `json:"reason"`
		}
		if err := json.Unmarshal(auditEvent(t, b, ar.ID, "policy.decided"), &decided); err != nil {
			t.Fatal(err)
		}
		var got any
		if err := json.Unmarshal([]byte(decided.Reason), &got); err != nil {
			t.Fatalf("policy.decided reason %q: %v", decided.Reason, err)
		}
		if !reflect.DeepEqual(got, wantNetwork) {
			t.Errorf("policy input network = %#v, want %#v", got, wantNetwork)
		}
	})
}

// networkOnMoto makes a BYOC VPC with the load balancer's security group
// in account 111111111111 and a peer VPC in 222222222222, and returns
// their IDs and the peer VPC's main route table.
func networkOnMoto(t *testing.T, endpoint string) (byocVPC, peerVPC, peerRTB string) {
	t.Helper()
	ctx := context.Background()
	byoc, peer := ec2.NewFromConfig(motoIn(endpoint, "111111111111")), ec2.NewFromConfig(motoIn(endpoint, "222222222222"))
	bv, err := byoc.CreateVpc(ctx, &ec2.CreateVpcInput{CidrBlock: aws.String("10.0.0.0/16")})
	if err != nil {
		t.Fatal(err)
	}
	byocVPC = aws.ToString(bv.Vpc.VpcId)
	if _, err := byoc.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String(netmgr.DefaultLBSecurityGroupPrefix + "abc"), Description: aws.String("istio"), VpcId: aws.String(byocVPC)}); err != nil {
		t.Fatal(err)
	}
	pv, err := peer.CreateVpc(ctx, &ec2.CreateVpcInput{CidrBlock: aws.String("10.1.0.0/16")})
	if err != nil {
		t.Fatal(err)
	}
	peerVPC = aws.ToString(pv.Vpc.VpcId)
	rts, err := peer.DescribeRouteTables(ctx, &ec2.DescribeRouteTablesInput{Filters: []ec2types.Filter{{Name: aws.String("vpc-id"), Values: []string{peerVPC}}}})
	if err != nil || len(rts.RouteTables) == 0 {
		t.Fatalf("peer route tables = %v, %v", rts, err)
	}
	return byocVPC, peerVPC, aws.ToString(rts.RouteTables[0].RouteTableId)
}

// setUpNetworkDeployment creates acme/prod with a network configuration,
// both accounts registered to acme, and returns an engineer's client.
func setUpNetworkDeployment(t *testing.T, b *brokertest.Broker, byocVPC, peerVPC string) *brokerapi.Client {
	t.Helper()
	ctx := context.Background()
	if _, err := b.Client.CreateDeployment(ctx, brokerapi.CreateDeploymentRequest{Tenant: "acme", Name: "prod"}); err != nil {
		t.Fatal(err)
	}
	// Both sides registered to acme (netreg_test.go).
	registerNetwork(t, b, "acme", "111111111111", byocVPC)
	registerNetwork(t, b, "acme", "222222222222", peerVPC)
	cfg := brokerapi.NetworkConfig{AccountID: "111111111111", Region: "us-east-1", VPCID: byocVPC, RoleARN: "arn:aws:iam::111111111111:role/TetherNetwork"}
	if _, err := b.Client.SetDeploymentSettings(ctx, "acme/prod", brokerapi.DeploymentSettings{Network: &cfg}); err != nil {
		t.Fatal(err)
	}
	return asUser(t, b, "engineer@vendor.test")
}

// auditEvent returns the request's only event of type typ.
func auditEvent(t *testing.T, b *brokertest.Broker, request, typ string) json.RawMessage {
	t.Helper()
	evs, err := b.Client.AuditSearch(context.Background(), brokerapi.AuditQuery{Request: request, Type: typ, Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 {
		t.Fatalf("request %s has %d %s events, want 1", request, len(evs), typ)
	}
	return evs[0].Event
}
