package broker

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net/http"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/tetherhq/tether/internal/names"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/identity"
	"github.com/tetherhq/tether/internal/store"
)

// Scope says how an endpoint's tenant is checked against the caller's.
type Scope int

const (
	// ScopePublic endpoints need no credentials at all.
	ScopePublic Scope = iota
	// ScopeVendor endpoints name no tenant and serve vendor staff only: a
	// customer's approver is refused whatever the roles list says.
	ScopeVendor
	// ScopeOwn endpoints answer any listed role about itself or filtered
	// to the tenants it may act on (a list of deployments).
	ScopeOwn
	// ScopeTenant endpoints name a deployment, by TENANT/NAME or by ID;
	// the caller must be able to act on its tenant
	// ([identity.Principal.CanActOnTenant]).
	ScopeTenant
	// ScopeRequest endpoints name an access request by ID; the caller
	// must be able to act on the tenant of its deployment.
	ScopeRequest
)

func (s Scope) String() string {
	switch s {
	case ScopePublic:
		return "public"
	case ScopeVendor:
		return "vendor"
	case ScopeOwn:
		return "own"
	case ScopeTenant:
		return "tenant"
	case ScopeRequest:
		return "request"
	}
	return "unknown"
}

// Endpoint is one row of the authorization table: who may call an API
// route and how its tenant is checked.
type Endpoint struct {
	Pattern string   // net/http ServeMux pattern, "METHOD /path"
	Roles   []string // any one of these; empty only for ScopePublic
	Scope   Scope

	handle func(b *Broker) func(http.ResponseWriter, *http.Request) error
}

var (
	anyRole     = []string{names.RoleEngineer, names.RoleReviewer, names.RoleAdmin, names.RoleApprover}
	vendorRole  = []string{names.RoleEngineer, names.RoleReviewer, names.RoleAdmin}
	adminOnly   = []string{names.RoleAdmin}
	engineer    = []string{names.RoleEngineer}
	reviewers   = []string{names.RoleApprover, names.RoleReviewer, names.RoleAdmin}
	netPlanners = []string{names.RoleEngineer, names.RoleAdmin, names.RoleApprover}
	netActors   = []string{names.RoleEngineer, names.RoleAdmin}
	// registrars register a tenant's AWS accounts: its approvers, or an
	// admin, whose registration waits for an approver's confirmation.
	registrars   = []string{names.RoleApprover, names.RoleAdmin}
	approverOnly = []string{names.RoleApprover}
	auditRoles   = []string{names.RoleReviewer, names.RoleAdmin}
	dataRoles    = []string{names.RoleEngineer}
	// tenantAudit read one tenant's audit trail: its approvers, and the
	// vendor's reviewers and admins (to see what the customer sees).
	tenantAudit = []string{names.RoleApprover, names.RoleReviewer, names.RoleAdmin}
)

// Endpoints is the broker API's authorization table, the one place that
// says who may call what. The API registers exactly these routes, and a
// table-driven test calls every one as every role.
func Endpoints() []Endpoint {
	h := func(f func(*Broker, http.ResponseWriter, *http.Request) error) func(*Broker) func(http.ResponseWriter, *http.Request) error {
		return func(b *Broker) func(http.ResponseWriter, *http.Request) error {
			return func(w http.ResponseWriter, r *http.Request) error { return f(b, w, r) }
		}
	}
	eps := []Endpoint{
		{"GET /api/v1/auth/config", nil, ScopePublic, h((*Broker).handleAuthConfig)},
		{"GET /api/v1/openapi.json", nil, ScopePublic, h((*Broker).handleOpenAPI)},
		{"GET /api/v1/whoami", anyRole, ScopeOwn, h((*Broker).handleWhoami)},
		{"GET /api/v1/broker", vendorRole, ScopeVendor, h((*Broker).handleBrokerInfo)},
		{"GET /api/v1/tickets/{owner}/{repo}/{number}", vendorRole, ScopeVendor, h((*Broker).handleTicket)},

		{"POST /api/v1/deployments", adminOnly, ScopeVendor, h((*Broker).handleCreateDeployment)},
		{"GET /api/v1/deployments", anyRole, ScopeOwn, h((*Broker).handleListDeployments)},
		{"GET /api/v1/deployments/{id}", anyRole, ScopeTenant, h((*Broker).handleGetDeployment)},
		{"GET /api/v1/deployments/{tenant}/{name}", anyRole, ScopeTenant, h((*Broker).handleGetDeployment)},
		{"POST /api/v1/deployments/{id}/pairing-tokens", adminOnly, ScopeTenant, h((*Broker).handleNewPairingToken)},
		{"POST /api/v1/deployments/{tenant}/{name}/pairing-tokens", adminOnly, ScopeTenant, h((*Broker).handleNewPairingToken)},
		{"POST /api/v1/deployments/{id}/ping", adminOnly, ScopeTenant, h((*Broker).handlePing)},
		{"PUT /api/v1/deployments/{tenant}/{name}/settings", adminOnly, ScopeTenant, h((*Broker).handleSetSettings)},
		{"GET /api/v1/deployments/{tenant}/{name}/customer-settings", anyRole, ScopeTenant, h((*Broker).handleGetCustomerSettings)},
		{customerSettingsRoute, approverOnly, ScopeTenant, h((*Broker).handleSetCustomerSettings)},
		{"POST /api/v1/deployments/{tenant}/{name}/revoke-agent", []string{names.RoleAdmin, names.RoleApprover}, ScopeTenant, h((*Broker).handleRevokeAgent)},

		{"GET /api/v1/deployments/{tenant}/{name}/permits", anyRole, ScopeTenant, h((*Broker).handlePermits)},
		{"POST /api/v1/deployments/{tenant}/{name}/permits/statement", approverOnly, ScopeTenant, h((*Broker).handlePermitStatement)},
		{"POST /api/v1/deployments/{tenant}/{name}/permits", approverOnly, ScopeTenant, h((*Broker).handleSignPermit)},
		{"DELETE /api/v1/deployments/{tenant}/{name}/permits/{permit}", approverOnly, ScopeTenant, h((*Broker).handleRevokePermit)},

		{"POST /api/v1/requests", engineer, ScopeVendor, h((*Broker).handleCreateRequest)},
		{"GET /api/v1/requests", anyRole, ScopeOwn, h((*Broker).handleListRequests)},
		{"GET /api/v1/requests/{id}", anyRole, ScopeRequest, h((*Broker).handleGetRequest)},
		{"POST /api/v1/requests/{id}/approve", reviewers, ScopeRequest, func(b *Broker) func(http.ResponseWriter, *http.Request) error { return b.handleReview(true) }},
		{"POST /api/v1/requests/{id}/approval-statement", approverOnly, ScopeRequest, h((*Broker).handleApprovalStatement)},
		{"POST /api/v1/requests/{id}/deny", reviewers, ScopeRequest, func(b *Broker) func(http.ResponseWriter, *http.Request) error { return b.handleReview(false) }},
		{"POST /api/v1/requests/{id}/cancel", engineer, ScopeRequest, h((*Broker).handleCancelRequest)},
		{"POST /api/v1/requests/{id}/revoke", anyRole, ScopeRequest, h((*Broker).handleRevokeRequest)},

		{"POST /api/v1/deployments/{tenant}/{name}/network/plan", netPlanners, ScopeTenant, h((*Broker).handleNetworkPlan)},
		{"POST /api/v1/requests/{id}/network/apply", netActors, ScopeRequest, func(b *Broker) func(http.ResponseWriter, *http.Request) error { return b.handleNetworkChange(false) }},
		{"POST /api/v1/requests/{id}/network/teardown", netActors, ScopeRequest, func(b *Broker) func(http.ResponseWriter, *http.Request) error { return b.handleNetworkChange(true) }},
		{"GET /api/v1/requests/{id}/network/status", anyRole, ScopeRequest, h((*Broker).handleNetworkStatus)},
		{"POST /api/v1/deployments/{tenant}/{name}/ping", adminOnly, ScopeTenant, h((*Broker).handlePing)},

		{"GET /api/v1/network/registrations", anyRole, ScopeOwn, h((*Broker).handleListRegistrations)},
		{"POST /api/v1/tenants/{tenant}/network/registrations", registrars, ScopeTenant, h((*Broker).handleRegisterNetwork)},
		{"POST /api/v1/tenants/{tenant}/network/registrations/{id}/confirm", approverOnly, ScopeTenant, h((*Broker).handleConfirmRegistration)},
		{"DELETE /api/v1/tenants/{tenant}/network/registrations/{id}", registrars, ScopeTenant, h((*Broker).handleUnregister)},

		{"GET /api/v1/audit/events", auditRoles, ScopeVendor, h((*Broker).handleAuditSearch)},
		{"GET /api/v1/audit/checkpoint", auditRoles, ScopeVendor, h((*Broker).handleAuditCheckpoint)},
		{"GET /api/v1/audit/proof/inclusion", auditRoles, ScopeVendor, h((*Broker).handleInclusionProof)},
		{"GET /api/v1/audit/proof/consistency", auditRoles, ScopeVendor, h((*Broker).handleConsistencyProof)},
		{"GET /api/v1/audit/export", auditRoles, ScopeVendor, h((*Broker).handleAuditExport)},
		{"GET /api/v1/audit/public-key", auditRoles, ScopeVendor, h((*Broker).handleAuditPublicKey)},
		{"GET /api/v1/tenants/{tenant}/audit/events", tenantAudit, ScopeTenant, h((*Broker).handleTenantAuditSearch)},
		{"GET /api/v1/tenants/{tenant}/audit/export", tenantAudit, ScopeTenant, h((*Broker).handleTenantAuditExport)},
		{"GET /api/v1/tenants/{tenant}/audit/public-key", tenantAudit, ScopeTenant, h((*Broker).handleAuditPublicKey)},
	}
	return append(eps, dataEndpoints()...) // one row per data source
}

type principalKey struct{}

// principalFrom returns the authenticated caller of a request that passed
// [Broker.authorize].
func principalFrom(ctx context.Context) identity.Principal {
	p, _ := ctx.Value(principalKey{}).(identity.Principal)
	return p
}

// actor is the audit actor for a principal. A principal holding several
// roles is recorded with the one the endpoint needed.
func actor(p identity.Principal, role string) audit.Actor {
	a := audit.Actor{Subject: p.Subject, Issuer: p.Issuer, Tenant: p.Tenant, Role: role}
	if p.Email != "" {
		a.Subject = p.Email
	}
	return a
}

// actorOf is the audit actor of the caller of r.
func actorOf(r *http.Request) audit.Actor {
	return actor(principalFrom(r.Context()), actingRole(r))
}

type roleKey struct{}

func actingRole(r *http.Request) string {
	s, _ := r.Context().Value(roleKey{}).(string)
	return s
}

// bootstrapPrincipal is the dev broker's bootstrap token holder.
var bootstrapPrincipal = identity.Principal{
	Subject: "admin:bootstrap", IssuerName: "bootstrap", Roles: []string{names.RoleAdmin},
}

// authenticate finds who is calling: the dev bootstrap token (dev mode
// only) or an OpenID Connect ID token verified against the configured
// issuers. It never falls back to anonymous.
func (b *Broker) authenticate(r *http.Request) (identity.Principal, error) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || tok == "" {
		return identity.Principal{}, errorf(http.StatusUnauthorized, "unauthenticated",
			"no bearer token: run 'broker login' (the CLI then sends your ID token), or send Authorization: Bearer <ID token>")
	}
	if b.devAdminToken != "" && strings.HasPrefix(tok, "tat_") {
		got := sha256.Sum256([]byte(tok))
		if subtle.ConstantTimeCompare(got[:], b.adminHash[:]) == 1 {
			return bootstrapPrincipal, nil
		}
		return identity.Principal{}, errorf(http.StatusUnauthorized, "invalid_token", "invalid bootstrap token: the dev broker writes a new one to DATA_DIR/cli.json each start")
	}
	p, err := b.verifier.Verify(r.Context(), tok)
	switch {
	case err == nil:
		return p, nil
	case errors.Is(err, identity.ErrUnknownIssuer):
		// The message names no issuer this broker trusts: that list would
		// tell anyone with a forged token who Tether's customers are.
		return p, errorf(http.StatusUnauthorized, "unknown_issuer", "%v: this broker does not trust that issuer; run 'broker login --issuer NAME' with the sign-in name your broker's operator gave you", err)
	case errors.Is(err, identity.ErrNoRole):
		return p, errorf(http.StatusForbidden, "no_role", "%v: ask your identity provider's admin to add you to a group this broker maps to a role", err)
	case errors.Is(err, identity.ErrInvalidToken):
		return p, errorf(http.StatusUnauthorized, "invalid_token", "%v: run 'broker login' again", err)
	default:
		// The issuer could not be reached: refuse, never guess.
		b.log.Warn("identity provider unreachable", "err", err)
		return p, errorf(http.StatusServiceUnavailable, "idp_unavailable", "%v: the token could not be checked, so the call is refused; try again shortly", err)
	}
}

// authorize wraps an endpoint's handler: it authenticates the caller,
// checks role and tenant as the table says, and on any failure answers
// 401/403 with a JSON error and records auth.failed.
func (b *Broker) authorize(e Endpoint) http.Handler {
	h := e.handle(b)
	serve := func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			var ae *apiError
			if !errors.As(err, &ae) {
				b.log.Error("API request failed", "method", r.Method, "path", r.URL.Path, "err", err)
			}
			b.answer(w, r, callerOf(r), err)
		}
	}
	if e.Scope == ScopePublic {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { serve(w, withCall(r)) })
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r = withCall(r)
		r = r.WithContext(context.WithValue(r.Context(), loadedKey{}, new(loadedRequest)))
		p, err := b.authenticate(r)
		if err == nil {
			err = b.permit(r, e, p)
		}
		if err != nil {
			b.refuse(w, r, p, err)
			return
		}
		role := ""
		for _, want := range e.Roles {
			if p.HasRole(want) {
				role = want
				break
			}
		}
		markAuthed(r.Context())
		ctx := context.WithValue(r.Context(), principalKey{}, p)
		ctx = context.WithValue(ctx, roleKey{}, role)
		serve(w, r.WithContext(ctx))
	})
}

// permit checks an authenticated principal against one table row.
func (b *Broker) permit(r *http.Request, e Endpoint, p identity.Principal) error {
	if !slices.ContainsFunc(e.Roles, p.HasRole) {
		return errorf(http.StatusForbidden, "forbidden", "%s %s needs the role %s; you (%s) hold %s%s",
			r.Method, r.URL.Path, strings.Join(e.Roles, " or "), p.Subject, rolesOf(p), forbiddenHint(e.Pattern))
	}
	switch e.Scope {
	case ScopeVendor:
		if p.Tenant != "" {
			return errorf(http.StatusForbidden, "forbidden", "%s %s is for vendor staff; you sign in through tenant %s's identity provider", r.Method, r.URL.Path, p.Tenant)
		}
	case ScopeTenant, ScopeRequest:
		tenant, err := b.requestTenant(r, e.Scope)
		if err != nil {
			return err
		}
		if !p.CanActOnTenant(tenant) {
			return errorf(http.StatusForbidden, "wrong_tenant", "you (%s, %s) may not act on tenant %s", p.Subject, scopeOf(p), tenant)
		}
	}
	return nil
}

// requestTenant is the tenant a ScopeTenant request names: the {tenant}
// path segment, or the tenant of the deployment {id}. A malformed or
// unknown ID is answered as such; IDs are random UUIDs, so that reveals
// nothing a caller could guess.
func (b *Broker) requestTenant(r *http.Request, scope Scope) (string, error) {
	if scope == ScopeRequest {
		ar, err := b.loadRequest(r.Context(), r.PathValue("id"))
		if err != nil {
			return "", err
		}
		if l, ok := r.Context().Value(loadedKey{}).(*loadedRequest); ok {
			l.ar = &ar
		}
		return ar.Tenant, nil
	}
	if t := r.PathValue("tenant"); t != "" {
		return t, nil
	}
	d, err := b.lookup(r)
	if err != nil {
		return "", err
	}
	return d.Tenant, nil
}

// refuse answers an authentication or authorization failure; the edge
// records it ([Broker.answer]).
func (b *Broker) refuse(w http.ResponseWriter, r *http.Request, p identity.Principal, err error) {
	a := actor(p, "")
	if a.Subject == "" {
		a = audit.Actor{}
	}
	b.answer(w, r, a, err)
}

// callerOf is the audit actor of r's caller, or none for a public
// endpoint.
func callerOf(r *http.Request) audit.Actor {
	p := principalFrom(r.Context())
	if p.Subject == "" {
		return audit.Actor{}
	}
	return actor(p, actingRole(r))
}

func rolesOf(p identity.Principal) string {
	if len(p.Roles) == 0 {
		return "no role"
	}
	return strings.Join(p.Roles, ", ")
}

func scopeOf(p identity.Principal) string {
	if p.Tenant == "" {
		return "vendor " + rolesOf(p)
	}
	return rolesOf(p) + " of tenant " + p.Tenant
}

// truncate cuts s to at most n bytes, at a character boundary, marking
// the cut: what a caller sent reaches the audit log bounded.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

type loadedKey struct{}

// loadedRequest carries the access request the authorization check
// loaded to its handler, which then need not read it again.
type loadedRequest struct{ ar *store.AccessRequest }

// requestOf returns the request a ScopeRequest endpoint names: the one
// authorization loaded, or a fresh read.
func (b *Broker) requestOf(r *http.Request) (store.AccessRequest, error) {
	if l, ok := r.Context().Value(loadedKey{}).(*loadedRequest); ok && l.ar != nil {
		return *l.ar, nil
	}
	return b.loadRequest(r.Context(), r.PathValue("id"))
}
