package broker

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/config"
	"github.com/tetherhq/tether/internal/identity"
	"github.com/tetherhq/tether/internal/source/clickhouse"
	"github.com/tetherhq/tether/internal/source/prometheus"
	"github.com/tetherhq/tether/internal/weblogin"
	"github.com/tetherhq/tether/internal/webui"
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
		OnCeremony:  b.uiCeremonyDone,
		Store:       b.store,
		// What the console's ceremonies carry to their callback, which
		// may reach another broker.
		CeremonyData: []any{uiCeremony{}, permitCeremony{}},
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

// The web console: server-rendered pages (package webui) behind the web
// login, each authorized by a row of the API's table ([UIRoutes]).

// UIRoute is one route of the web console and the API endpoint whose
// authorization it follows: the same roles and the same tenant check, by
// the same code ([Broker.permit]).
type UIRoute struct {
	Pattern string // net/http ServeMux pattern, "METHOD /ui/..."
	Follows string // the Pattern of an [Endpoints] row

	handle func(b *Broker, w http.ResponseWriter, r *http.Request) error
}

// UIRoutes is the web console's route table. A test holds every route to
// an existing [Endpoints] row.
func UIRoutes() []UIRoute {
	return []UIRoute{
		// The stylesheet is as public as the sign-in configuration.
		{"GET " + webui.StaticPrefix, "GET /api/v1/auth/config", func(_ *Broker, w http.ResponseWriter, r *http.Request) error {
			webui.ServeStatic(w, r)
			return nil
		}},
		{"GET /ui/{$}", "GET /api/v1/deployments", (*Broker).uiHome},
		{"GET /ui/", "GET /api/v1/whoami", (*Broker).uiNotFound},
		{"GET /ui/inbox", "GET /api/v1/requests", (*Broker).uiInbox},
		{"GET /ui/requests/{id}", "GET /api/v1/requests/{id}", (*Broker).uiRequest},
		{"POST /ui/requests/{id}/approve", approveRoute, (*Broker).uiApprove},
		{"POST /ui/requests/{id}/deny", "POST /api/v1/requests/{id}/deny", (*Broker).uiDeny},
		{"POST /ui/requests/{id}/revoke", revokeRoute, (*Broker).uiRevoke},
		{"GET /ui/request", createRequestRoute, (*Broker).uiRequestForm},
		{"POST /ui/request", createRequestRoute, (*Broker).uiCreateRequest},
		{"GET /ui/requests/{id}/status", "GET /api/v1/requests/{id}", (*Broker).uiRequestStatus},
		{"POST /ui/requests/{id}/cancel", "POST /api/v1/requests/{id}/cancel", (*Broker).uiCancel},
		{"GET /ui/grants", "GET /api/v1/requests", (*Broker).uiGrants},
		{"GET /ui/deployments/{tenant}/{name}/query", clickhouse.Source.BrokerPattern(), (*Broker).uiQueryPage},
		{"POST /ui/deployments/{tenant}/{name}/query/clickhouse", clickhouse.Source.BrokerPattern(), uiQueryOf(clickhouse.Source)},
		{"POST /ui/deployments/{tenant}/{name}/query/prometheus", prometheus.Source.BrokerPattern(), uiQueryOf(prometheus.Source)},
		{"GET /ui/audit", "GET /api/v1/audit/events", (*Broker).uiAudit},
		{"GET /ui/audit/sessions/{id}", "GET /api/v1/audit/events", (*Broker).uiAuditSession},
		{"GET /ui/audit/verify", "GET /api/v1/audit/checkpoint", (*Broker).uiAuditVerify},
		{"GET /ui/audit/export", "GET /api/v1/audit/export", (*Broker).uiAuditExport},
		{"GET /ui/tenants/{tenant}/audit", "GET /api/v1/tenants/{tenant}/audit/events", (*Broker).uiAudit},
		{"GET /ui/tenants/{tenant}/audit/sessions/{id}", "GET /api/v1/tenants/{tenant}/audit/events", (*Broker).uiAuditSession},
		{"GET /ui/tenants/{tenant}/audit/export", "GET /api/v1/tenants/{tenant}/audit/export", (*Broker).uiTenantAuditExport},
		{"GET /ui/deployments", "GET /api/v1/deployments", (*Broker).uiDeployments},
		{"POST /ui/deployments", createDeploymentRoute, (*Broker).uiCreateDeployment},
		{"GET /ui/deployments/{tenant}/{name}", "GET /api/v1/deployments/{tenant}/{name}", (*Broker).uiDeployment},
		{"POST /ui/deployments/{tenant}/{name}/pairing-tokens", pairingTokenRoute, (*Broker).uiPairingToken},
		{"POST /ui/deployments/{tenant}/{name}/revoke-agent", revokeAgentRoute, (*Broker).uiRevokeAgent},
		{"POST /ui/deployments/{tenant}/{name}/windows", customerSettingsRoute, (*Broker).uiAddWindow},
		{"POST /ui/deployments/{tenant}/{name}/windows/remove", customerSettingsRoute, (*Broker).uiRemoveWindow},
		{"POST /ui/deployments/{tenant}/{name}/permits", signPermitRoute, (*Broker).uiSignPermit},
		{"POST /ui/deployments/{tenant}/{name}/permits/{permit}/revoke", "DELETE /api/v1/deployments/{tenant}/{name}/permits/{permit}", (*Broker).uiRevokePermit},
		{"GET /ui/tenant-grants", "GET /api/v1/requests", (*Broker).uiTenantGrants},
		{"GET /ui/history", "GET /api/v1/requests", (*Broker).uiHistory},
	}
}

const (
	approveRoute = "POST /api/v1/requests/{id}/approve"
	revokeRoute  = "POST /api/v1/requests/{id}/revoke"
	// maxFormBody bounds a console form.
	maxFormBody = 64 << 10
)

var pages = webui.Must()

// endpointRow returns the [Endpoints] row of pattern.
func endpointRow(pattern string) (Endpoint, bool) {
	for _, e := range Endpoints() {
		if e.Pattern == pattern {
			return e, true
		}
	}
	return Endpoint{}, false
}

// registerUI adds the console's routes to mux, each behind the
// authorization of the API row it follows.
func (b *Broker) registerUI(mux *http.ServeMux) {
	for _, rt := range UIRoutes() {
		e, ok := endpointRow(rt.Follows)
		if !ok {
			panic("web console route " + rt.Pattern + " follows no API endpoint " + rt.Follows) // TestUIRoutesFollowTheTable
		}
		mux.Handle(rt.Pattern, b.uiAuthorize(rt, e))
	}
}

// uiAuthorize wraps a console route: a signed-out visitor of a page is
// shown the sign-in page; a POST must carry the session's CSRF token;
// then the caller is checked against e exactly as the API checks a
// bearer token's principal. Refusals are audited by the API's edge
// ([Broker.recordRefusal]) and answered with a page.
func (b *Broker) uiAuthorize(rt UIRoute, e Endpoint) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r = withCall(r)
		r = r.WithContext(context.WithValue(r.Context(), loadedKey{}, new(loadedRequest)))
		serve := func(r *http.Request) {
			if err := rt.handle(b, w, r); err != nil {
				b.uiAnswer(w, r, callerOf(r), err)
			}
		}
		if e.Scope == ScopePublic {
			serve(r)
			return
		}
		p, ok := b.web.Principal(r)
		if !ok {
			if r.Method == http.MethodGet {
				b.uiSignIn(w, r)
				return
			}
			b.uiAnswer(w, r, audit.Actor{}, errorf(http.StatusUnauthorized, "unauthenticated",
				"you are not signed in, or your session ended: sign in again, then repeat what you did"))
			return
		}
		if r.Method != http.MethodGet {
			if err := b.checkCSRF(w, r); err != nil {
				b.uiAnswer(w, r, actor(p, ""), err)
				return
			}
		}
		if err := b.permit(r, e, p); err != nil {
			b.uiAnswer(w, r, actor(p, ""), err)
			return
		}
		serve(withPrincipal(r, p, e))
	})
}

// withPrincipal carries p, authorized for e, to the handler as
// [Broker.authorize] does.
func withPrincipal(r *http.Request, p identity.Principal, e Endpoint) *http.Request {
	role := ""
	for _, want := range e.Roles {
		if p.HasRole(want) {
			role = want
			break
		}
	}
	ctx := context.WithValue(r.Context(), principalKey{}, p)
	return r.WithContext(context.WithValue(ctx, roleKey{}, role))
}

// checkCSRF reads r's bounded form and refuses it unless its csrf field
// is the session's token (compared in constant time).
func (b *Broker) checkCSRF(w http.ResponseWriter, r *http.Request) error {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBody)
	if err := r.ParseForm(); err != nil {
		return errorf(http.StatusBadRequest, "invalid_form", "the form could not be read (at most %d bytes of application/x-www-form-urlencoded): reload the page and try again", maxFormBody)
	}
	want := b.web.CSRFToken(r)
	got := r.PostForm.Get("csrf")
	if want == "" || got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
		return errorf(http.StatusForbidden, "csrf_invalid", "the form did not come from a current Tether page of your session (its CSRF token is missing or wrong): reload the page and try again")
	}
	return nil
}

// uiAnswer records a refusal as the API's edge does and answers with an
// error page.
func (b *Broker) uiAnswer(w http.ResponseWriter, r *http.Request, a audit.Actor, err error) {
	err = b.recordRefusal(r, a, err)
	heading, status, code, msg := "Something went wrong", http.StatusInternalServerError, "internal", "internal error; the broker log has details"
	var ae *apiError
	if errors.As(err, &ae) {
		status, code, msg = ae.status, ae.code, ae.message
		if ae.retry > 0 {
			w.Header().Set("Retry-After", retryAfter(ae.retry))
		}
		if status < 500 {
			heading = "Refused"
		}
	} else {
		b.log.Error("web console request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	back := ""
	if id := r.PathValue("id"); id != "" && r.Method != http.MethodGet {
		back = "/ui/requests/" + url.PathEscape(id)
	}
	b.render(w, r, status, "error", heading, errorPage{Heading: heading, Code: code, Message: msg, Back: back})
}

type errorPage struct {
	Heading, Code, Message, Back string
}

// render writes a console page with the layout's header and navigation.
func (b *Broker) render(w http.ResponseWriter, r *http.Request, status int, name, title string, data any) {
	p := webui.Page{Title: title, Data: data}
	who := principalFrom(r.Context())
	if who.Subject == "" {
		who, _ = b.web.Principal(r)
	}
	if who.Subject != "" {
		name := who.Email
		if name == "" {
			name = who.Subject
		}
		p.User = &webui.User{Name: name, Issuer: who.IssuerName, Tenant: who.Tenant, Roles: who.Roles}
		p.CSRF = b.web.CSRFToken(r)
		for _, n := range []webui.NavItem{{Path: "/ui/", Text: "Deployments"}, {Path: "/ui/inbox", Text: "Inbox"}} {
			n.Current = r.URL.Path == n.Path
			p.Nav = append(p.Nav, n)
		}
		p.Nav = append(p.Nav, auditNav(who, r.URL.Path)...)
		p.Nav = append(p.Nav, engineerNav(who, r.URL.Path)...)
		p.Nav = append(p.Nav, settingsNav(who, r.URL.Path)...)
	}
	if r.Method == http.MethodGet {
		p.Notice = notices[r.URL.Query().Get("done")]
	}
	if err := pages.Render(w, status, name, p); err != nil {
		b.log.Error("render web console page", "page", name, "err", err)
	}
}

// notices are the messages a page shows after an action redirected to
// it (?done=…); anything else shows none.
var notices = map[string]string{
	"approved":       "Your approval is recorded.",
	"denied":         "Your denial is recorded.",
	"revoked":        "Access is revoked.",
	"requested":      "Your request is recorded.",
	"cancelled":      "Your request is cancelled.",
	"agent-revoked":  "The agent is revoked: it is refused from now on; a new agent pairs with a new pairing token.",
	"window-added":   "The window is added.",
	"window-removed": "The window is removed.",
	"permit-signed":  "Your signature on the permit is recorded.",
	"permit-revoked": "The permit is revoked: no new grant is issued under it.",
}

type signInIssuer struct{ Name, Tenant, URL string }

// uiSignIn shows a signed-out visitor how to sign in, and brings them
// back to the page they asked for.
func (b *Broker) uiSignIn(w http.ResponseWriter, r *http.Request) {
	next := r.URL.Path
	// Signed out, the page names the vendor's identity provider only:
	// listing customers' would tell anyone who Tether's customers are. A
	// customer's approver types their organisation's sign-in name (the
	// broker's operator tells them; notification links carry it). A dev
	// broker lists its dev issuers.
	var issuers []signInIssuer
	for _, ic := range b.identity.Issuers {
		if ic.Tenant == "" || b.cfg.Dev != nil {
			u := weblogin.LoginPath + "?" + url.Values{"issuer": {ic.Name}, "next": {next}}.Encode()
			issuers = append(issuers, signInIssuer{Name: ic.Name, Tenant: ic.Tenant, URL: u})
		}
	}
	status := http.StatusUnauthorized
	if next == "/ui/" {
		status = http.StatusOK
	}
	b.render(w, r, status, "signin", "Sign in", map[string]any{"Issuers": issuers, "Dev": b.cfg.Dev != nil, "Next": next})
}

// uiHome lists the deployments the caller may see.
func (b *Broker) uiHome(w http.ResponseWriter, r *http.Request) error {
	p := principalFrom(r.Context())
	ds, err := b.store.ListDeployments(r.Context())
	if err != nil {
		return fmt.Errorf("list deployments: %w", err)
	}
	var visible []brokerapi.Deployment
	for _, d := range ds {
		if p.CanActOnTenant(d.Tenant) {
			visible = append(visible, b.view(d))
		}
	}
	b.render(w, r, http.StatusOK, "home", "Deployments", map[string]any{"Deployments": visible})
	return nil
}

func (b *Broker) uiNotFound(w http.ResponseWriter, r *http.Request) error {
	return errorf(http.StatusNotFound, "not_found", "no page %s: start from the deployments or the inbox", truncate(r.URL.Path, maxAuditPath))
}
