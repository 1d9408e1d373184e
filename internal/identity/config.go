package identity

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strings"

	"github.com/tetherhq/tether/internal/names"
)

// DefaultGroupsClaim is the ID token claim read for group membership when
// [IssuerConfig.GroupsClaim] is empty.
const DefaultGroupsClaim = "groups"

// Config lists the OpenID Connect issuers whose ID tokens the broker
// accepts. Exactly one issuer is the vendor's (no tenant); every other
// issuer belongs to one customer tenant.
type Config struct {
	Issuers []IssuerConfig `json:"issuers"`
}

// IssuerConfig describes one trusted OpenID Connect issuer.
type IssuerConfig struct {
	// Name identifies the issuer in errors, logs and [Principal.IssuerName].
	Name string `json:"name"`
	// IssuerURL must equal, byte for byte, the iss claim of its tokens and
	// the issuer in its discovery document. It must be https, except for
	// loopback hosts used in development.
	IssuerURL string `json:"issuer_url"`
	// ClientID is the broker's client ID at this issuer; tokens whose aud
	// holds it are accepted. The web login uses it.
	ClientID string `json:"client_id"`
	// ClientSecret (an env:/file: reference) is the web login's client
	// secret, for issuers that register the broker as a confidential
	// client; empty for a public client.
	ClientSecret string `json:"client_secret,omitempty"`
	// CLIClientID is the public client 'broker login' uses (device flow
	// or loopback PKCE); empty means ClientID. Its tokens are accepted.
	CLIClientID string `json:"cli_client_id,omitempty"`
	// Audiences are further aud values accepted besides ClientID.
	Audiences []string `json:"audiences,omitempty"`
	// GroupsClaim names the claim holding the user's groups; empty means
	// [DefaultGroupsClaim].
	GroupsClaim string `json:"groups_claim,omitempty"`
	// Tenant is empty for the vendor issuer and names the customer tenant
	// for a customer issuer. It comes from configuration only: a tenant
	// claim inside a token is never trusted.
	Tenant string `json:"tenant,omitempty"`
	// RoleMap maps a group to the role its members hold.
	RoleMap map[string]string `json:"role_map"`
	// Scopes are requested at login; empty means [DefaultScopes]. Add the
	// scope some issuers need before they put groups in the ID token
	// (for example "groups" on Dex).
	Scopes []string `json:"scopes,omitempty"`
	// Admins names, by sub claim, the users of the vendor issuer who hold
	// the admin role whatever their groups.
	Admins []string `json:"admins,omitempty"`
	// GitHubLoginClaim names the claim holding the user's GitHub login
	// (vendor issuer only), used to look up their GitHub teams.
	GitHubLoginClaim string `json:"github_login_claim,omitempty"`
}

// DefaultScopes are requested at login when [IssuerConfig.Scopes] is
// empty; offline_access asks for a refresh token.
var DefaultScopes = []string{"openid", "email", "profile", "offline_access"}

// LoginScopes are the scopes requested when logging in at this issuer;
// they always include openid.
func (ic IssuerConfig) LoginScopes() []string {
	if len(ic.Scopes) == 0 {
		return append([]string(nil), DefaultScopes...)
	}
	if !slices.Contains(ic.Scopes, "openid") {
		return append([]string{"openid"}, ic.Scopes...)
	}
	return append([]string(nil), ic.Scopes...)
}

// CLIClient is the client ID 'broker login' uses at this issuer.
func (ic IssuerConfig) CLIClient() string {
	if ic.CLIClientID != "" {
		return ic.CLIClientID
	}
	return ic.ClientID
}

// Vendor returns the vendor issuer of a valid c.
func (c Config) Vendor() (IssuerConfig, bool) {
	for _, ic := range c.Issuers {
		if ic.Tenant == "" {
			return ic, true
		}
	}
	return IssuerConfig{}, false
}

func (ic IssuerConfig) groupsClaim() string {
	if ic.GroupsClaim == "" {
		return DefaultGroupsClaim
	}
	return ic.GroupsClaim
}

// Validate reports every problem in c, each naming the issuer and field
// to fix, joined into one error; it returns nil if c is usable.
func (c Config) Validate() error {
	if len(c.Issuers) == 0 {
		return errors.New("identity config: no issuers; add the vendor issuer (an entry with no tenant)")
	}
	var errs []error
	issuerNames := map[string]int{}
	urls := map[string]int{}
	var vendors []string
	for i, ic := range c.Issuers {
		where := fmt.Sprintf("issuers[%d]", i)
		if ic.Name != "" {
			where = fmt.Sprintf("issuers[%d] (%q)", i, ic.Name)
		}
		fail := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("identity config: %s: "+format, append([]any{where}, args...)...))
		}

		if ic.Name == "" {
			fail("name is empty; give each issuer a unique name")
		} else if j, dup := issuerNames[ic.Name]; dup {
			fail("name is already used by issuers[%d]; names must be unique", j)
		} else {
			issuerNames[ic.Name] = i
		}

		if err := checkIssuerURL(ic.IssuerURL); err != nil {
			fail("issuer_url: %v", err)
		} else if j, dup := urls[ic.IssuerURL]; dup {
			fail("issuer_url %q is already used by issuers[%d]; each issuer must be listed once", ic.IssuerURL, j)
		} else {
			urls[ic.IssuerURL] = i
		}

		if ic.ClientID == "" {
			fail("client_id is empty; set the broker's client ID registered at this issuer")
		}
		for k, a := range ic.Audiences {
			if a == "" {
				fail("audiences[%d] is empty; remove it", k)
			}
		}
		if ic.Tenant == "" {
			vendors = append(vendors, where)
		} else if strings.TrimSpace(ic.Tenant) != ic.Tenant {
			fail("tenant %q has surrounding spaces", ic.Tenant)
		}

		if len(ic.RoleMap) == 0 && len(ic.Admins) == 0 {
			fail("role_map is empty; map at least one group to a role, or every token would be refused")
		}
		if len(ic.Admins) > 0 && ic.Tenant != "" {
			fail("admins: only the vendor issuer may name admins; this issuer belongs to tenant %q", ic.Tenant)
		}
		for k, a := range ic.Admins {
			if a == "" {
				fail("admins[%d] is empty; name each admin by the sub claim of their ID token", k)
			}
		}
		if ic.GitHubLoginClaim != "" && ic.Tenant != "" {
			fail("github_login_claim: only the vendor issuer's users have GitHub logins; remove it from tenant %q's issuer", ic.Tenant)
		}
		groups := make([]string, 0, len(ic.RoleMap))
		for g := range ic.RoleMap {
			groups = append(groups, g)
		}
		sort.Strings(groups)
		for _, g := range groups {
			role := ic.RoleMap[g]
			switch {
			case g == "":
				fail("role_map has an empty group name")
			case role == names.RoleApprover && ic.Tenant == "":
				fail("role_map[%q] = %q: approver is a customer role; set tenant on this issuer or map the group to engineer, reviewer or admin", g, role)
			case (role == names.RoleEngineer || role == names.RoleReviewer || role == names.RoleAdmin) && ic.Tenant != "":
				fail("role_map[%q] = %q: %s is a vendor role and this issuer belongs to tenant %q; only approver may be granted here", g, role, role, ic.Tenant)
			case role != names.RoleEngineer && role != names.RoleReviewer && role != names.RoleAdmin && role != names.RoleApprover:
				fail("role_map[%q] = %q: unknown role; use one of engineer, reviewer, admin (vendor issuer) or approver (customer issuer)", g, role)
			}
		}
	}
	switch len(vendors) {
	case 0:
		errs = append(errs, errors.New("identity config: no vendor issuer; exactly one issuer must have an empty tenant"))
	case 1:
	default:
		errs = append(errs, fmt.Errorf("identity config: %d vendor issuers (%s); exactly one issuer may have an empty tenant, set tenant on the others", len(vendors), strings.Join(vendors, ", ")))
	}
	return errors.Join(errs...)
}

func checkIssuerURL(raw string) error {
	if raw == "" {
		return errors.New("empty; set the issuer's URL exactly as its tokens' iss claim")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%q does not parse: %w", raw, err)
	}
	if u.Host == "" {
		return fmt.Errorf("%q has no host", raw)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%q must not carry user info, a query or a fragment", raw)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		host := u.Hostname()
		if host == "localhost" || host == "127.0.0.1" || host == "::1" {
			return nil
		}
		return fmt.Errorf("%q uses http; use https (http is allowed only for 127.0.0.1 and localhost)", raw)
	default:
		return fmt.Errorf("%q has scheme %q; use https", raw, u.Scheme)
	}
}
