package broker

// Network registrations: the AWS accounts each tenant lets Tether touch.
// The rules, the state transitions and the sealed external IDs are
// internal/netaccess; these handlers decode, authorize, call and encode.

import (
	"crypto/cipher"
	"errors"
	"net/http"
	"slices"
	"strings"

	"github.com/tetherhq/tether/internal/names"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/identity"
	"github.com/tetherhq/tether/internal/netaccess"
	"github.com/tetherhq/tether/internal/store"
)

// SealKeyFile is the file in the data dir holding the key that seals
// external IDs, when [Config.NetworkSealKey] is not set.
const SealKeyFile = netaccess.SealKeyFile

// loadSealKey returns the AEAD that seals external IDs
// ([netaccess.LoadSealKey]).
func loadSealKey(cfg Config) (cipher.AEAD, error) {
	return netaccess.LoadSealKey(cfg.NetworkSealKey, cfg.DataDir)
}

// netAPIError is the API's answer to a refusal of the network domain,
// each code with its status; any other error passes unchanged.
func netAPIError(err error) error {
	var e *netaccess.Error
	if !errors.As(err, &e) {
		return err
	}
	switch e.Code {
	case "network_spec_required":
		return errorf(http.StatusBadRequest, "network_spec_required", "%s", e.Message)
	case "invalid_kind":
		return errorf(http.StatusBadRequest, "invalid_kind", "%s", e.Message)
	case "invalid_region":
		return errorf(http.StatusBadRequest, "invalid_region", "%s", e.Message)
	case "invalid_role_arn":
		return errorf(http.StatusBadRequest, "invalid_role_arn", "%s", e.Message)
	case "invalid_vpc_ids":
		return errorf(http.StatusBadRequest, "invalid_vpc_ids", "%s", e.Message)
	case "invalid_route_table_ids":
		return errorf(http.StatusBadRequest, "invalid_route_table_ids", "%s", e.Message)
	case "invalid_peer_cidrs":
		return errorf(http.StatusBadRequest, "invalid_peer_cidrs", "%s", e.Message)
	case "invalid_network":
		return errorf(http.StatusBadRequest, "invalid_network", "%s", e.Message)
	case "not_a_network_request":
		return errorf(http.StatusBadRequest, "not_a_network_request", "%s", e.Message)
	case "not_registered":
		return errorf(http.StatusForbidden, "not_registered", "%s", e.Message)
	case "registration_pending":
		return errorf(http.StatusForbidden, "registration_pending", "%s", e.Message)
	case "not_tenant_approver":
		return errorf(http.StatusForbidden, "not_tenant_approver", "%s", e.Message)
	case "not_requester":
		return errorf(http.StatusForbidden, "not_requester", "%s", e.Message)
	case "public_cidr":
		return errorf(http.StatusForbidden, "public_cidr", "%s", e.Message)
	case "aws_denied":
		return errorf(http.StatusForbidden, "aws_denied", "%s", e.Message)
	case "unknown_tenant":
		return errorf(http.StatusNotFound, "unknown_tenant", "%s", e.Message)
	case "registration_not_found":
		return errorf(http.StatusNotFound, "registration_not_found", "%s", e.Message)
	case "aws_not_found":
		return errorf(http.StatusNotFound, "aws_not_found", "%s", e.Message)
	case "account_registered":
		return errorf(http.StatusConflict, "account_registered", "%s", e.Message)
	case "already_confirmed":
		return errorf(http.StatusConflict, "already_confirmed", "%s", e.Message)
	case "registration_changed":
		return errorf(http.StatusConflict, "registration_changed", "%s", e.Message)
	case "no_network_config":
		return errorf(http.StatusConflict, "no_network_config", "%s", e.Message)
	case "not_approved":
		return errorf(http.StatusConflict, "not_approved", "%s", e.Message)
	case "window_over":
		return errorf(http.StatusConflict, "window_over", "%s", e.Message)
	case "not_applied":
		return errorf(http.StatusConflict, "not_applied", "%s", e.Message)
	case "frozen":
		return errorf(http.StatusConflict, "frozen", "%s", e.Message)
	case "outside_maintenance_window":
		return errorf(http.StatusConflict, "outside_maintenance_window", "%s", e.Message)
	case "no_approved_plan":
		return errorf(http.StatusConflict, "no_approved_plan", "%s", e.Message)
	case "plan_changed":
		return errorf(http.StatusConflict, "plan_changed", "%s", e.Message)
	case "cidr_overlap":
		return errorf(http.StatusConflict, "cidr_overlap", "%s", e.Message)
	case "network_conflict":
		return errorf(http.StatusConflict, "network_conflict", "%s", e.Message)
	case "plan_damaged":
		return errorf(http.StatusInternalServerError, "plan_damaged", "%s", e.Message)
	case "external_id_unreadable":
		return errorf(http.StatusInternalServerError, "external_id_unreadable", "%s", e.Message)
	case "network_not_configured":
		return errorf(http.StatusNotImplemented, "network_not_configured", "%s", e.Message)
	case "aws_error":
		return errorf(http.StatusBadGateway, "aws_error", "%s", e.Message)
	}
	if field, ok := strings.CutPrefix(e.Code, "invalid_"); ok && e.Kind == netaccess.Invalid {
		// The shape of an AWS identifier, named by its field.
		return errorf(http.StatusBadRequest, "invalid_"+field, "%s", e.Message)
	}
	return err // unmapped: answered as an internal error, logged
}

// netCaller is who calls, for the network domain.
func netCaller(r *http.Request) netaccess.Caller {
	return netaccess.Caller{Person: person(principalFrom(r.Context())), Actor: actorOf(r), Source: audit.Source{IP: r.RemoteAddr}}
}

// registrationView is the API form of a registration: never the external
// ID, sealed or not.
func registrationView(reg store.NetworkRegistration) brokerapi.NetworkRegistration {
	v := brokerapi.NetworkRegistration{
		ID: reg.ID, Tenant: reg.Tenant, AccountID: reg.AccountID, RoleARN: reg.RoleARN,
		VPCIDs: reg.VPCIDs, RouteTableIDs: reg.RouteTableIDs, PeerCIDRs: reg.PeerCIDRs,
		State: reg.State, RegisteredBy: displayName(reg.RegisteredBy), CreatedAt: reg.CreatedAt, ConfirmedAt: reg.ConfirmedAt,
	}
	if reg.ConfirmedBy != nil {
		v.ConfirmedBy = displayName(*reg.ConfirmedBy)
	}
	return v
}

// knownTenant reports whether the broker trusts an identity provider of
// tenant, whose approvers could confirm and use a registration.
func (b *Broker) knownTenant(tenant string) bool {
	return slices.ContainsFunc(b.identity.Issuers, func(ic identity.IssuerConfig) bool { return ic.Tenant == tenant })
}

// handleRegisterNetwork registers an AWS account to the tenant: active at
// once for the tenant's approver (the answer carries the external ID),
// pending for a vendor admin.
func (b *Broker) handleRegisterNetwork(w http.ResponseWriter, r *http.Request) error {
	tenant := r.PathValue("tenant")
	if !names.IsLabel(tenant) {
		return errorf(http.StatusBadRequest, "invalid_tenant", "tenant %q is not a DNS label", truncate(tenant, 64))
	}
	if err := b.netacc.Sealing(); err != nil {
		return netAPIError(err)
	}
	var in brokerapi.RegisterNetwork
	if err := decodeJSON(w, r, brokerapi.MaxBody, &in); err != nil {
		return err
	}
	reg, externalID, err := b.netacc.Register(r.Context(), netCaller(r), tenant, in)
	if err != nil {
		return netAPIError(err)
	}
	writeJSON(w, http.StatusCreated, brokerapi.RegistrationResult{Registration: registrationView(reg), ExternalID: externalID})
	return nil
}

// handleListRegistrations lists the registrations of the tenants the
// caller may act on (?tenant= narrows it to one).
func (b *Broker) handleListRegistrations(w http.ResponseWriter, r *http.Request) error {
	p, tenant := principalFrom(r.Context()), r.URL.Query().Get("tenant")
	if tenant == "" {
		tenant = p.Tenant
	}
	if tenant != "" && !p.CanActOnTenant(tenant) {
		return errorf(http.StatusForbidden, "wrong_tenant", "you (%s, %s) may not act on tenant %s", p.Subject, scopeOf(p), truncate(tenant, 64))
	}
	regs, err := b.netacc.List(r.Context(), tenant)
	if err != nil {
		return err
	}
	out := brokerapi.ListNetworkRegistrationsResponse{Registrations: []brokerapi.NetworkRegistration{}}
	for _, reg := range regs {
		out.Registrations = append(out.Registrations, registrationView(reg))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// handleConfirmRegistration confirms a vendor admin's registration, as an
// approver of its tenant; the answer carries the new external ID, once.
func (b *Broker) handleConfirmRegistration(w http.ResponseWriter, r *http.Request) error {
	reg, externalID, err := b.netacc.Confirm(r.Context(), netCaller(r), r.PathValue("tenant"), r.PathValue("id"))
	if err != nil {
		return netAPIError(err)
	}
	writeJSON(w, http.StatusOK, brokerapi.RegistrationResult{Registration: registrationView(reg), ExternalID: externalID})
	return nil
}

// handleUnregister removes a registration: network changes may no longer
// name the account, and the broker forgets the role's external ID.
func (b *Broker) handleUnregister(w http.ResponseWriter, r *http.Request) error {
	reg, err := b.netacc.Unregister(r.Context(), netCaller(r), r.PathValue("tenant"), r.PathValue("id"))
	if err != nil {
		return netAPIError(err)
	}
	writeJSON(w, http.StatusOK, registrationView(reg))
	return nil
}
