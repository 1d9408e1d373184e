// Package names is the one home of the words Tether's parts share: the
// roles people hold, the roles a review counts as, the grant scopes, and
// the rule for the names people give tenants, deployments and hosts. It
// imports nothing, so the agent, the broker, the CLI and the policy can
// all use it.
package names

import "strings"

// Roles a signed-in person holds (the identity provider's groups map to
// them; see docs/operations.md).
const (
	RoleEngineer = "engineer" // asks for access and uses grants
	RoleReviewer = "reviewer" // vendor security reviewer: reviews, reads the audit log
	RoleAdmin    = "admin"    // vendor admin: deployments, agents, settings
	RoleApprover = "approver" // a customer's approver, for their own tenant
)

// Review roles: what a review counts as (policy input and stored reviews).
const (
	ReviewApprover = "approver" // a customer approver of the request's tenant
	ReviewInternal = "internal" // a vendor reviewer or admin
)

// Grant scopes. The data-source scopes are the ones the registered data
// sources serve (internal/source/registry); network:peering is a network
// change's.
const (
	ScopeClickHouse = "clickhouse:system" // read-only SQL on ClickHouse's system tables
	ScopePrometheus = "prometheus:read"   // the read-only Prometheus HTTP API
	ScopePeering    = "network:peering"   // a VPC peering and its routes
)

// IsLabel reports whether s is a lowercase RFC 1123 DNS label: 1-63 of
// a-z, 0-9 and '-', not starting or ending with '-'. Tenants, deployment
// names and tailnet hostnames are labels.
func IsLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// LabelRule is IsLabel's rule in words, for error messages.
const LabelRule = "1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'"

// ParseDeployment splits a deployment reference TENANT/NAME, both labels;
// ok is false for anything else.
func ParseDeployment(ref string) (tenant, name string, ok bool) {
	tenant, name, ok = strings.Cut(ref, "/")
	if !ok || !IsLabel(tenant) || !IsLabel(name) {
		return "", "", false
	}
	return tenant, name, true
}
