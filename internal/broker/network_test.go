package broker_test

import (
	"context"
	"strings"
	"testing"

	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/brokertest"
)

// TestNetworkChangeRequest: a network change goes through the same
// request, policy and approval path as access, and carries exactly the
// change the customer approves.
func TestNetworkChangeRequest(t *testing.T) {
	b := brokertest.Start(t, nil)
	ctx := context.Background()
	if _, err := b.Client.CreateDeployment(ctx, brokerapi.CreateDeploymentRequest{Tenant: "acme", Name: "prod"}); err != nil {
		t.Fatal(err)
	}
	eng := asUser(t, b, "engineer@vendor.test")
	spec := &brokerapi.PeeringSpec{Kind: "peering", AccountID: "222222222222", Region: "us-east-1", VPCID: "vpc-0a1b2c3d4e5f67890", RoleARN: "arn:aws:iam::222222222222:role/TetherNetwork"}
	ask := brokerapi.CreateAccessRequest{Deployment: "acme/prod", Scopes: []string{"network:peering"}, Duration: "2h", Reason: "peer the analytics VPC", Network: spec}

	_, err := eng.CreateRequest(ctx, ask)
	wantAPIErr(t, "peering without network config", err, 409, "no network configuration")

	cfg := brokerapi.NetworkConfig{AccountID: "111111111111", Region: "us-east-1", VPCID: "vpc-0123456789abcdef0", RoleARN: "arn:aws:iam::111111111111:role/TetherNetwork"}
	bad := cfg
	bad.VPCID = "vpc-XYZ"
	_, err = b.Client.SetDeploymentSettings(ctx, "acme/prod", brokerapi.DeploymentSettings{Network: &bad})
	wantAPIErr(t, "network config with vpc-XYZ", err, 400, `vpc_id "vpc-XYZ"`)
	// The BYOC side, like the peer, must be registered to acme.
	_, err = b.Client.SetDeploymentSettings(ctx, "acme/prod", brokerapi.DeploymentSettings{Network: &cfg})
	wantAPIErr(t, "network config of an unregistered account", err, 403, "BYOC account 111111111111 is not registered to tenant acme")
	registerNetwork(t, b, "acme", "111111111111", "vpc-0123456789abcdef0")
	other := cfg
	other.VPCID = "vpc-0123456789abcdef1"
	_, err = b.Client.SetDeploymentSettings(ctx, "acme/prod", brokerapi.DeploymentSettings{Network: &other})
	wantAPIErr(t, "network config of an unregistered VPC", err, 403, "BYOC VPC vpc-0123456789abcdef1 is not registered")
	if _, err := b.Client.SetDeploymentSettings(ctx, "acme/prod", brokerapi.DeploymentSettings{Network: &cfg}); err != nil {
		t.Fatal(err)
	}
	_, err = eng.CreateRequest(ctx, ask)
	wantAPIErr(t, "peering with an unregistered peer", err, 403, "peer account 222222222222 is not registered to tenant acme: its approvers register it with 'broker network register")
	registerNetwork(t, b, "acme", "222222222222", "vpc-0a1b2c3d4e5f67890")

	for _, tt := range []struct {
		name string
		edit func(*brokerapi.CreateAccessRequest)
		msg  string
	}{
		{"no spec", func(r *brokerapi.CreateAccessRequest) { r.Network = nil }, "needs the change"},
		{"bad peer VPC", func(r *brokerapi.CreateAccessRequest) { s := *spec; s.VPCID = "vpc-XYZ"; r.Network = &s }, `peer vpc_id "vpc-XYZ"`},
		{"bad account", func(r *brokerapi.CreateAccessRequest) { s := *spec; s.AccountID = "12345"; r.Network = &s }, "12-digit"},
		{"mixed with access", func(r *brokerapi.CreateAccessRequest) { r.Scopes = []string{"network:peering", "clickhouse:system"} }, "cannot be part of a network:peering request"},
	} {
		r := ask
		tt.edit(&r)
		_, err := eng.CreateRequest(ctx, r)
		if ae := apiErr(t, err); ae.Status >= 500 || !strings.Contains(ae.Message, tt.msg) {
			t.Errorf("create (%s) = %v, want a refusal mentioning %q", tt.name, err, tt.msg)
		}
	}

	// The change is planned as the request is made, for its approvers:
	// a broker that cannot reach AWS (none here) refuses the request
	// rather than ask for approval of a plan it could not make. The rest
	// of the life of a network request runs on moto
	// (TestNetworkMaintenanceWindow and the tests beside it).
	_, err = eng.CreateRequest(ctx, ask)
	if ae := apiErr(t, err); !strings.Contains(ae.Message, "plan the change for its approvers") {
		t.Errorf("create without AWS = %v, want a refusal saying the change could not be planned", err)
	}
}
