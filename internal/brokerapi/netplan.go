package brokerapi

import (
	"context"
	"time"
)

// ApprovedNetworkPlan is the exact change a network request's approvers approve,
// fixed when the request was made, and how far it got. Apply refuses when
// what it would make differs from it in anything.
type ApprovedNetworkPlan struct {
	// Digest is the SHA-256 of the intent's canonical encoding,
	// "sha256:<hex>": what the approval binds.
	Digest    string        `json:"digest"`
	Intent    NetworkIntent `json:"intent"`
	PlannedAt time.Time     `json:"planned_at"`
	AppliedAt time.Time     `json:"applied_at,omitzero"`
	// TornDownAt is when a teardown last completed.
	TornDownAt time.Time `json:"torn_down_at,omitzero"`
	// TeardownDue is when the broker next tries to tear down a revoked,
	// applied change by itself; TeardownAttempts and TeardownError say how
	// the tries so far went.
	TeardownDue      time.Time `json:"teardown_due,omitzero"`
	TeardownAttempts int       `json:"teardown_attempts,omitempty"`
	TeardownError    string    `json:"teardown_error,omitempty"`
}

// NetworkIntent is the state a network change makes (no secrets, no IDs
// AWS has yet to assign).
type NetworkIntent struct {
	Kind            string             `json:"kind"`
	BYOC            NetworkIntentSide  `json:"byoc"`
	Peer            NetworkIntentSide  `json:"peer"`
	Routes          []NetworkRoute     `json:"routes,omitempty"`
	SecurityGroup   string             `json:"security_group"`
	Rules           []NetworkRuleEntry `json:"rules"`
	PrivateHostname string             `json:"private_hostname,omitempty"`
	LoadBalancer    string             `json:"load_balancer,omitempty"`
}

// NetworkIntentSide is one VPC of a [NetworkIntent].
type NetworkIntentSide struct {
	Account     string   `json:"account"`
	Region      string   `json:"region"`
	VPC         string   `json:"vpc"`
	Role        string   `json:"role,omitempty"`
	CIDRs       []string `json:"cidrs"`
	RouteTables []string `json:"route_tables,omitempty"`
}

// NetworkRoute is a route a network change makes through its peering.
type NetworkRoute struct {
	Account     string `json:"account"`
	RouteTable  string `json:"route_table"`
	Destination string `json:"destination"`
}

// NetworkRuleEntry is a security group rule a network change makes:
// tcp/Port from CIDR on the load balancer's security group.
type NetworkRuleEntry struct {
	CIDR string `json:"cidr"`
	Port int32  `json:"port"`
}

// ApprovePlan approves a network change request as the caller, naming the
// plan digest the caller was shown: the broker refuses the approval when
// the request's plan is another.
func (c *Client) ApprovePlan(ctx context.Context, id, comment, digest string) (AccessRequest, error) {
	return c.requestAction(ctx, id, "approve", ReviewBody{Comment: comment, PlanDigest: digest})
}
