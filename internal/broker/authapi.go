package broker

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/devidp"
	"github.com/tetherhq/tether/internal/identity"
)

// devIdPPath is where a dev broker serves its embedded identity provider.
const devIdPPath = "/dev/idp"

// DevClientID is the client ID of the dev identity provider's issuers,
// for both the CLI and the web login.
const DevClientID = "tether"

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
			"engineers":       identity.RoleEngineer,
			"security":        identity.RoleReviewer,
			"platform-admins": identity.RoleAdmin,
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
		roleMap: map[string]string{"acme-approvers": identity.RoleApprover},
		users:   []devidp.User{{Email: "approver@acme.test", Name: "Acme Approver", Groups: []string{"acme-approvers"}}},
	},
	{
		name: "globex", tenant: "globex",
		roleMap: map[string]string{"globex-approvers": identity.RoleApprover},
		users:   []devidp.User{{Email: "approver@globex.test", Name: "Globex Approver", Groups: []string{"globex-approvers"}}},
	},
}

// DevIdentity builds the dev identity provider served under base (an
// absolute URL ending in its path, such as http://127.0.0.1:8443/dev/idp)
// and the identity configuration that trusts it: issuers vendor, acme and
// globex, with the dev users engineer@, reviewer@, admin@ and
// lead@vendor.test (engineer and reviewer),
// approver@acme.test and approver@globex.test. Tests use it as an
// external identity provider too.
func DevIdentity(base string, now func() time.Time, redirectURIs ...string) (*devidp.IdP, identity.Config, error) {
	opts := devidp.Options{BaseURL: base, Now: now, RedirectURIs: redirectURIs}
	var cfg identity.Config
	for _, di := range devIssuers {
		opts.Issuers = append(opts.Issuers, devidp.IssuerSpec{Name: di.name, ClientIDs: []string{DevClientID}, Users: di.users})
		ic := identity.IssuerConfig{
			Name:      di.name,
			IssuerURL: strings.TrimSuffix(base, "/") + "/" + di.name,
			ClientID:  DevClientID,
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

// devUsers lists the dev users for the auth config endpoint.
func devUsers() []brokerapi.DevUser {
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

// loopbackURL turns the API's bound URL into one a local client can
// reach: a wildcard listen address becomes 127.0.0.1.
func loopbackURL(apiURL string) string {
	u, err := url.Parse(apiURL)
	if err != nil {
		return apiURL
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil {
		return apiURL
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		u.Host = net.JoinHostPort("127.0.0.1", port)
	}
	return u.String()
}

// handleAuthConfig tells 'broker login' how to sign in: with
// ?issuer=NAME the issuer the caller names, without it the vendor's. It
// needs no credentials, so it lists nothing the caller did not name: who
// the broker's customers are, and their identity providers, are not for
// anyone to enumerate. A dev broker, whose identity provider logs anyone
// in as anyone, also lists its dev users and their issuers.
func (b *Broker) handleAuthConfig(w http.ResponseWriter, r *http.Request) error {
	name := r.URL.Query().Get("issuer")
	if len(name) > 64 {
		return errorf(http.StatusBadRequest, "invalid_issuer", "issuer name: at most 64 characters")
	}
	out := brokerapi.AuthConfig{Issuers: []brokerapi.AuthIssuer{}}
	for _, ic := range b.identity.Issuers {
		if (name != "" && ic.Name != name) || (name == "" && ic.Tenant != "") {
			continue
		}
		out.Issuers = append(out.Issuers, brokerapi.AuthIssuer{
			Name: ic.Name, IssuerURL: ic.IssuerURL, ClientID: ic.CLIClient(), Tenant: ic.Tenant, Scopes: ic.LoginScopes(),
		})
	}
	if b.devIdP != nil {
		out.Dev = true
		out.DevUsers = devUsers()
	}
	if name != "" && len(out.Issuers) == 0 {
		return errorf(http.StatusNotFound, "unknown_issuer", "this broker has no identity provider named %q: ask the broker's operator which name to give to --issuer", name)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (b *Broker) handleWhoami(w http.ResponseWriter, r *http.Request) error {
	p := principalFrom(r.Context())
	out := brokerapi.Whoami{
		Subject: p.Subject, Email: p.Email, Issuer: p.Issuer, IssuerName: p.IssuerName, Tenant: p.Tenant,
		Roles: p.Roles, Groups: p.Groups, GitHubLogin: p.GitHubLogin, Expiry: p.Expiry.UTC(),
	}
	if p.Expiry.IsZero() {
		out.Expiry = time.Time{}
	}
	if b.github != nil && p.GitHubLogin != "" {
		teams, err := b.github.Teams(r.Context(), p.GitHubLogin)
		if err != nil {
			out.GitHubError = err.Error()
		}
		out.GitHubTeams = teams
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// DevIdP is a dev broker's embedded identity provider; nil outside dev
// mode.
func (b *Broker) DevIdP() *devidp.IdP { return b.devIdP }
