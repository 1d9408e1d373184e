package devbroker

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tetherhq/tether/internal/names"

	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/devidp"
	"github.com/tetherhq/tether/internal/identity"
)

// ClientID is the client ID of the dev identity provider's issuers, for
// both the CLI and the web login.
const ClientID = "tether"

// devIssuer is one issuer of the dev identity provider: the vendor's and
// one per customer tenant, each with its own signing key, so that a dev
// setup exercises tenant isolation exactly as a real one.
type devIssuer struct {
	name, tenant string
	roleMap      map[string]string
	users        []devidp.User
}

var devIssuers = []devIssuer{
	{
		name: "vendor",
		roleMap: map[string]string{
			"engineers":       names.RoleEngineer,
			"security":        names.RoleReviewer,
			"platform-admins": names.RoleAdmin,
		},
		users: []devidp.User{
			{Email: "engineer@vendor.test", Name: "Dev Engineer", Groups: []string{"engineers"}, Claims: map[string]any{"github_login": "dev-engineer"}},
			{Email: "reviewer@vendor.test", Name: "Dev Reviewer", Groups: []string{"security"}, Claims: map[string]any{"github_login": "dev-reviewer"}},
			{Email: "admin@vendor.test", Name: "Dev Admin", Groups: []string{"platform-admins"}, Claims: map[string]any{"github_login": "dev-admin"}},
			// An on-call lead: engineer and reviewer, to show that nobody
			// reviews their own request.
			{Email: "lead@vendor.test", Name: "Dev On-call Lead", Groups: []string{"engineers", "security"}, Claims: map[string]any{"github_login": "dev-lead"}},
		},
	},
	{
		name: "acme", tenant: "acme",
		roleMap: map[string]string{"acme-approvers": names.RoleApprover},
		users:   []devidp.User{{Email: "approver@acme.test", Name: "Acme Approver", Groups: []string{"acme-approvers"}}},
	},
	{
		name: "globex", tenant: "globex",
		roleMap: map[string]string{"globex-approvers": names.RoleApprover},
		users:   []devidp.User{{Email: "approver@globex.test", Name: "Globex Approver", Groups: []string{"globex-approvers"}}},
	},
}

// Identity builds the dev identity provider served under base (an
// absolute URL ending in its path, such as http://127.0.0.1:8443/dev/idp)
// and the identity configuration that trusts it: issuers vendor, acme and
// globex, with the dev users engineer@, reviewer@, admin@ and
// lead@vendor.test (engineer and reviewer), approver@acme.test and
// approver@globex.test. Tests use it as an external identity provider
// too.
func Identity(base string, now func() time.Time, redirectURIs ...string) (*devidp.IdP, identity.Config, error) {
	opts := devidp.Options{BaseURL: base, Now: now, RedirectURIs: redirectURIs}
	var cfg identity.Config
	for _, di := range devIssuers {
		opts.Issuers = append(opts.Issuers, devidp.IssuerSpec{Name: di.name, ClientIDs: []string{ClientID}, Users: di.users})
		ic := identity.IssuerConfig{
			Name:      di.name,
			IssuerURL: strings.TrimSuffix(base, "/") + "/" + di.name,
			ClientID:  ClientID,
			Tenant:    di.tenant,
			RoleMap:   di.roleMap,
			Scopes:    []string{"openid", "email", "profile", "offline_access"},
		}
		if di.tenant == "" {
			ic.GitHubLoginClaim = "github_login"
		}
		cfg.Issuers = append(cfg.Issuers, ic)
	}
	idp, err := devidp.New(opts)
	if err != nil {
		return nil, identity.Config{}, fmt.Errorf("dev identity provider: %w", err)
	}
	return idp, cfg, nil
}

// Users lists the dev users with their issuers, roles and tenants, as the
// auth config endpoint of a dev broker shows them.
func Users() []brokerapi.DevUser {
	var out []brokerapi.DevUser
	for _, di := range devIssuers {
		for _, u := range di.users {
			var roles []string
			for _, g := range u.Groups {
				if r, ok := di.roleMap[g]; ok && !slices.Contains(roles, r) {
					roles = append(roles, r)
				}
			}
			out = append(out, brokerapi.DevUser{Email: u.Email, Issuer: di.name, Roles: roles, Tenant: di.tenant})
		}
	}
	return out
}
