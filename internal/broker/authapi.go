package broker

import (
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/tetherhq/tether/internal/brokerapi"
)

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
		out.DevUsers = b.devUsers
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
