package brokerapi

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// Network registration states, as [NetworkRegistration.State].
const (
	RegistrationPending = "pending" // a vendor admin's, waiting for an approver of the tenant
	RegistrationActive  = "active"
)

// RegisterNetwork is the body of POST
// /api/v1/tenants/{tenant}/network/registrations: an AWS account of the
// tenant, the role Tether assumes there and the VPCs (and, optionally,
// route tables and peer CIDRs) network changes may name in it.
type RegisterNetwork struct {
	AccountID     string   `json:"account_id"`
	RoleARN       string   `json:"role_arn"`
	VPCIDs        []string `json:"vpc_ids"`
	RouteTableIDs []string `json:"route_table_ids,omitempty"`
	PeerCIDRs     []string `json:"peer_cidrs,omitempty"`
}

// NetworkRegistration is an AWS account registered to a tenant. It never
// carries the role's external ID; see [RegistrationResult].
type NetworkRegistration struct {
	ID            string    `json:"id"`
	Tenant        string    `json:"tenant"`
	AccountID     string    `json:"account_id"`
	RoleARN       string    `json:"role_arn"`
	VPCIDs        []string  `json:"vpc_ids"`
	RouteTableIDs []string  `json:"route_table_ids,omitempty"`
	PeerCIDRs     []string  `json:"peer_cidrs,omitempty"`
	State         string    `json:"state"`
	RegisteredBy  string    `json:"registered_by"`
	CreatedAt     time.Time `json:"created_at"`
	ConfirmedBy   string    `json:"confirmed_by,omitempty"`
	ConfirmedAt   time.Time `json:"confirmed_at,omitzero"`
}

// RegistrationResult answers a registration or a confirmation. ExternalID
// is set once, in the answer that makes the registration active (an
// approver's registration, or the confirmation of an admin's): the value
// for the role's CloudFormation stack (its NoEcho ExternalId parameter).
// The broker never shows it again.
type RegistrationResult struct {
	Registration NetworkRegistration `json:"registration"`
	ExternalID   string              `json:"external_id,omitempty"`
}

// ListNetworkRegistrationsResponse is the body of GET
// /api/v1/network/registrations.
type ListNetworkRegistrationsResponse struct {
	Registrations []NetworkRegistration `json:"registrations"`
}

func registrationsPath(tenant string) string {
	return "/api/v1/tenants/" + url.PathEscape(tenant) + "/network/registrations"
}

// RegisterNetwork registers an AWS account to a tenant.
func (c *Client) RegisterNetwork(ctx context.Context, tenant string, in RegisterNetwork) (RegistrationResult, error) {
	var out RegistrationResult
	err := c.do(ctx, http.MethodPost, registrationsPath(tenant), in, &out)
	return out, err
}

// ListNetworkRegistrations lists the registrations of the tenants the
// caller may act on, of one tenant if tenant is not empty.
func (c *Client) ListNetworkRegistrations(ctx context.Context, tenant string) ([]NetworkRegistration, error) {
	var out ListNetworkRegistrationsResponse
	path := "/api/v1/network/registrations"
	if tenant != "" {
		path += "?tenant=" + url.QueryEscape(tenant)
	}
	err := c.do(ctx, http.MethodGet, path, nil, &out)
	return out.Registrations, err
}

// ConfirmNetworkRegistration confirms a vendor admin's registration, as an
// approver of its tenant.
func (c *Client) ConfirmNetworkRegistration(ctx context.Context, tenant, id string) (RegistrationResult, error) {
	var out RegistrationResult
	err := c.do(ctx, http.MethodPost, registrationsPath(tenant)+"/"+url.PathEscape(id)+"/confirm", struct{}{}, &out)
	return out, err
}

// UnregisterNetwork removes a registration.
func (c *Client) UnregisterNetwork(ctx context.Context, tenant, id string) error {
	return c.do(ctx, http.MethodDelete, registrationsPath(tenant)+"/"+url.PathEscape(id), nil, nil)
}
