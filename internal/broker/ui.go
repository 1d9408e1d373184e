package broker

import (
	"context"
	"fmt"
	"html/template"
	"net/http"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/config"
	"github.com/tetherhq/tether/internal/weblogin"
)

// startWebLogin sets up the browser login (authorization code + PKCE at
// any trusted issuer) for the broker's pages.
func (b *Broker) startWebLogin(publicURL string) error {
	var providers []weblogin.Provider
	for _, ic := range b.identity.Issuers {
		p := weblogin.Provider{Name: ic.Name, IssuerURL: ic.IssuerURL, ClientID: ic.ClientID, Scopes: ic.LoginScopes()}
		if ic.ClientSecret != "" {
			secret, err := config.Secret(ic.ClientSecret)
			if err != nil {
				return fmt.Errorf("identity issuer %s: client_secret: %w", ic.Name, err)
			}
			p.ClientSecret = secret
		}
		providers = append(providers, p)
	}
	m, err := weblogin.New(weblogin.Config{
		Providers:   providers,
		RedirectURL: publicURL + weblogin.CallbackPath,
		Verify:      b.verifier.Verify,
		Now:         b.now,
		Logger:      b.cfg.Logger,
		OnEvent:     b.webLoginEvent,
	})
	if err != nil {
		return fmt.Errorf("web login: %w", err)
	}
	b.web = m
	return nil
}

// webLoginEvent audits web logins, failed logins and logouts.
func (b *Broker) webLoginEvent(ctx context.Context, e weblogin.Event) error {
	ev := audit.Event{
		Actor:   actor(e.Principal, ""),
		Source:  audit.Source{IP: e.RemoteAddr},
		Outcome: audit.Success,
		Details: map[string]any{"issuer": e.Provider},
	}
	if e.Principal.Subject == "" {
		ev.Actor = audit.Actor{}
	}
	switch e.Kind {
	case weblogin.EventLogin:
		ev.Type = audit.AuthLogin
	case weblogin.EventLogout:
		ev.Type = audit.AuthLogout
	default:
		ev.Type, ev.Outcome, ev.Reason = audit.AuthFailed, audit.Failure, e.Reason
		ev.Details["path"] = weblogin.CallbackPath
	}
	return b.auditLog.Record(ctx, ev)
}

var uiPage = template.Must(template.New("ui").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Tether</title>
<style>body{font:15px system-ui,sans-serif;margin:2rem;max-width:60rem}table{border-collapse:collapse}td,th{padding:.3rem .8rem;text-align:left;border-bottom:1px solid #ddd}</style>
</head><body>
<h1>Tether</h1>
{{if .Signed}}
<p>Signed in as <b>{{.Name}}</b> through {{.Issuer}}{{if .Tenant}} (tenant <b>{{.Tenant}}</b>){{end}}, roles {{range $i, $r := .Roles}}{{if $i}}, {{end}}{{$r}}{{end}}.</p>
<form method="post" action="/auth/logout"><input type="hidden" name="csrf" value="{{.CSRF}}"><button>Sign out</button></form>
<h2>Deployments</h2>
{{if .Deployments}}<table><tr><th>Tenant</th><th>Name</th><th>Region</th><th>Agent</th></tr>
{{range .Deployments}}<tr><td>{{.Tenant}}</td><td>{{.Name}}</td><td>{{.Region}}</td><td>{{.AgentStatus}}</td></tr>{{end}}
</table>{{else}}<p>No deployments you may see.</p>{{end}}
{{else}}
<p>Sign in with:</p>
<ul>{{range .Issuers}}<li><a href="/auth/login?issuer={{.Name}}&amp;next=/ui/">{{.Name}}</a>{{if .Tenant}} (approvers of {{.Tenant}}){{else}} (vendor staff){{end}}</li>{{end}}</ul>
{{if not .Dev}}<form method="get" action="/auth/login"><label>Customer approvers: your organisation's sign-in name <input name="issuer" required maxlength="63" pattern="[a-z0-9-]+"></label><input type="hidden" name="next" value="/ui/"> <button>Sign in</button></form>{{end}}
{{end}}
</body></html>`))

// handleUI is the broker's page: who you are and the deployments you may
// see, behind the web login.
func (b *Broker) handleUI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'")
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	p, ok := b.web.Principal(r)
	// Signed out, the page names the vendor's identity provider only:
	// listing customers' would tell anyone who Tether's customers are. A
	// customer's approver types their organisation's sign-in name (the
	// broker's operator tells them; notification links carry it). A dev
	// broker lists its dev issuers.
	issuers := b.identity.Issuers
	if b.cfg.Dev == nil {
		issuers = nil
		for _, ic := range b.identity.Issuers {
			if ic.Tenant == "" {
				issuers = append(issuers, ic)
			}
		}
	}
	data := map[string]any{"Signed": ok, "Issuers": issuers, "Dev": b.cfg.Dev != nil}
	if !ok {
		uiPage.Execute(w, data)
		return
	}
	ds, err := b.store.ListDeployments(r.Context())
	if err != nil {
		b.log.Error("list deployments for the UI", "err", err)
		http.Error(w, "internal error; the broker log has details", http.StatusInternalServerError)
		return
	}
	var visible []any
	for _, d := range ds {
		if p.CanActOnTenant(d.Tenant) {
			visible = append(visible, b.view(d))
		}
	}
	name := p.Email
	if name == "" {
		name = p.Subject
	}
	data["Name"], data["Issuer"], data["Tenant"], data["Roles"] = name, p.IssuerName, p.Tenant, p.Roles
	data["CSRF"], data["Deployments"] = b.web.CSRFToken(r), visible
	uiPage.Execute(w, data)
}
