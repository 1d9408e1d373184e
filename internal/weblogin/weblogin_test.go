package weblogin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/names"

	"github.com/tetherhq/tether/internal/devidp"
	"github.com/tetherhq/tether/internal/identity"
)

var testStart = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

const (
	clientID    = "tether-web"
	cliClientID = "tether-cli"
	vendorEmail = "eve@vendor.example"
	acmeEmail   = "ann@acme.example"
	noRoleEmail = "nobody@vendor.example"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// syncBuffer collects the manager's logs so tests can check that no
// secret reached them.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testTransport passes requests through, except that it can fail every
// request (the IdP is down) or answer the token endpoint itself (a fake
// token endpoint returning a token of the test's choosing).
type testTransport struct {
	down  atomic.Bool
	mu    sync.Mutex
	token func(r *http.Request) (idToken string)
}

func (tt *testTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if tt.down.Load() {
		return nil, errors.New("test: identity provider is down")
	}
	tt.mu.Lock()
	token := tt.token
	tt.mu.Unlock()
	// Only the token exchange is a POST; discovery and JWKS are GETs.
	if token != nil && r.Method == http.MethodPost {
		if err := r.ParseForm(); err != nil {
			return nil, err
		}
		body, _ := json.Marshal(map[string]any{
			"access_token": "test-access-token",
			"token_type":   "Bearer",
			"expires_in":   3600,
			"id_token":     token(r),
		})
		return &http.Response{
			StatusCode: http.StatusOK,
			Header:     http.Header{"Content-Type": {"application/json"}},
			Body:       io.NopCloser(bytes.NewReader(body)),
			Request:    r,
		}, nil
	}
	return http.DefaultTransport.RoundTrip(r)
}

func (tt *testTransport) setToken(f func(r *http.Request) string) {
	tt.mu.Lock()
	defer tt.mu.Unlock()
	tt.token = f
}

type env struct {
	t         *testing.T
	clock     *fakeClock
	idp       *devidp.IdP
	broker    *httptest.Server
	m         *Manager
	transport *testTransport
	logs      *syncBuffer
	// cfg is m's configuration; served is the mux of the manager the
	// broker URL reaches (m unless a test switches).
	cfg    Config
	served atomic.Pointer[http.ServeMux]

	mu       sync.Mutex
	events   []Event
	eventErr error
}

func (e *env) setEventErr(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.eventErr = err
}

func (e *env) Events() []Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.events)
}

func (e *env) lastEvent() Event {
	e.t.Helper()
	evs := e.Events()
	if len(evs) == 0 {
		e.t.Fatal("no events")
	}
	return evs[len(evs)-1]
}

type tlogWriter struct{ t *testing.T }

func (w tlogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// newEnv runs a dev IdP with issuers vendor and acme, an identity
// verifier for both, and a broker mux with the manager and a /ui/ page
// that shows the signed-in user.
func newEnv(t *testing.T, edit func(*Config)) *env {
	t.Helper()
	e := &env{t: t, clock: &fakeClock{t: testStart}, transport: &testTransport{}, logs: &syncBuffer{}}

	var idpHandler atomic.Pointer[http.Handler]
	idpSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		(*idpHandler.Load()).ServeHTTP(w, r)
	}))
	t.Cleanup(idpSrv.Close)
	e.broker = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.served.Load().ServeHTTP(w, r)
	}))
	t.Cleanup(e.broker.Close)
	redirectURL := e.broker.URL + CallbackPath

	idp, err := devidp.New(devidp.Options{
		BaseURL: idpSrv.URL + "/idp",
		Issuers: []devidp.IssuerSpec{
			{Name: "vendor", ClientIDs: []string{clientID}, Users: []devidp.User{
				{Email: vendorEmail, Subject: "eve", Name: "Eve", Groups: []string{"eng"}},
				{Email: noRoleEmail, Subject: "nobody", Name: "Nobody", Groups: []string{"visitors"}},
			}},
			{Name: "acme", ClientIDs: []string{clientID}, Users: []devidp.User{
				{Email: acmeEmail, Subject: "ann", Name: "Ann", Groups: []string{"approvers"}},
			}},
		},
		Now:          e.clock.Now,
		IDTokenTTL:   time.Hour,
		RedirectURIs: []string{redirectURL},
	})
	if err != nil {
		t.Fatalf("devidp.New: %v", err)
	}
	h := idp.Handler()
	idpHandler.Store(&h)
	e.idp = idp

	client := &http.Client{Transport: e.transport, Timeout: 10 * time.Second}
	ver, err := identity.New(context.Background(), identity.Config{Issuers: []identity.IssuerConfig{
		// The verifier also accepts the CLI's tokens; a web login must not.
		{Name: "vendor", IssuerURL: idp.IssuerURL("vendor"), ClientID: clientID, Audiences: []string{cliClientID}, RoleMap: map[string]string{"eng": names.RoleEngineer}},
		{Name: "acme", IssuerURL: idp.IssuerURL("acme"), ClientID: clientID, Tenant: "acme", RoleMap: map[string]string{"approvers": names.RoleApprover}},
	}}, identity.WithClock(e.clock.Now), identity.WithHTTPClient(client))
	if err != nil {
		t.Fatalf("identity.New: %v", err)
	}

	cfg := Config{
		Providers: []Provider{
			{Name: "vendor", IssuerURL: idp.IssuerURL("vendor"), ClientID: clientID},
			{Name: "acme", IssuerURL: idp.IssuerURL("acme"), ClientID: clientID},
		},
		RedirectURL: redirectURL,
		Verify:      ver.Verify,
		HTTPClient:  client,
		Now:         e.clock.Now,
		OnEvent: func(ctx context.Context, ev Event) error {
			e.mu.Lock()
			defer e.mu.Unlock()
			e.events = append(e.events, ev)
			return e.eventErr
		},
		Logger: slog.New(slog.NewTextHandler(io.MultiWriter(e.logs, tlogWriter{t}), &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if edit != nil {
		edit(&cfg)
	}
	e.cfg = cfg
	var mux *http.ServeMux
	e.m, mux = e.newManager()
	e.served.Store(mux)
	return e
}

// newManager returns another manager with e's configuration (its own
// in-memory store unless the configuration names one) and a mux
// serving it with a /ui/ page that shows the signed-in user.
func (e *env) newManager() (*Manager, *http.ServeMux) {
	e.t.Helper()
	m, err := New(e.cfg)
	if err != nil {
		e.t.Fatalf("New: %v", err)
	}
	mux := http.NewServeMux()
	m.Register(mux)
	mux.HandleFunc("GET /ui/", func(w http.ResponseWriter, r *http.Request) {
		p, ok := m.Principal(r)
		if !ok {
			http.Error(w, "not signed in", http.StatusUnauthorized)
			return
		}
		fmt.Fprintf(w, "email=%s tenant=%s roles=%s csrf=%s", p.Email, p.Tenant, strings.Join(p.Roles, ","), m.CSRFToken(r))
	})
	return m, mux
}

// browser is a minimal cookie-keeping client. The cookies are Secure and
// the test servers plain http, so it keeps them itself (per host, with
// path matching) instead of using a cookiejar; it never follows
// redirects.
type browser struct {
	t       *testing.T
	client  *http.Client
	cookies map[string]map[string]*http.Cookie // host → name → cookie
}

func newBrowser(t *testing.T) *browser {
	return &browser{
		t: t,
		client: &http.Client{
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
			Timeout:       10 * time.Second,
		},
		cookies: map[string]map[string]*http.Cookie{},
	}
}

type response struct {
	*http.Response
	body string
}

func (b *browser) do(method, rawURL string, form url.Values) response {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, rawURL, body)
	if err != nil {
		b.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for _, c := range b.cookies[req.URL.Host] {
		if strings.HasPrefix(req.URL.Path, c.Path) {
			req.AddCookie(&http.Cookie{Name: c.Name, Value: c.Value})
		}
	}
	resp, err := b.client.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", method, rawURL, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		b.t.Fatal(err)
	}
	jar := b.cookies[req.URL.Host]
	if jar == nil {
		jar = map[string]*http.Cookie{}
		b.cookies[req.URL.Host] = jar
	}
	for _, c := range resp.Cookies() {
		if c.MaxAge < 0 {
			delete(jar, c.Name)
			continue
		}
		if c.Path == "" {
			c.Path = "/"
		}
		jar[c.Name] = c
	}
	return response{resp, string(data)}
}

func (b *browser) get(rawURL string) response {
	b.t.Helper()
	return b.do(http.MethodGet, rawURL, nil)
}

func (b *browser) cookie(host, name string) string {
	if c, ok := b.cookies[host][name]; ok {
		return c.Value
	}
	return ""
}

func (e *env) host() string { return strings.TrimPrefix(e.broker.URL, "http://") }

// storedSessions is how many sessions the manager's in-memory store
// holds, expired or not.
func (e *env) storedSessions() int { return e.m.store.(*memStore).len(kindSession) }

// startLogin asks the broker for a login and returns the authorization
// URL it redirects to.
func (e *env) startLogin(b *browser, issuer, next string) *url.URL {
	e.t.Helper()
	q := url.Values{}
	if issuer != "" {
		q.Set("issuer", issuer)
	}
	if next != "" {
		q.Set("next", next)
	}
	resp := b.get(e.broker.URL + LoginPath + "?" + q.Encode())
	if resp.StatusCode != http.StatusFound {
		e.t.Fatalf("GET %s?%s: status %d, want 302; body %s", LoginPath, q.Encode(), resp.StatusCode, resp.body)
	}
	u, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		e.t.Fatal(err)
	}
	return u
}

// authorize visits the IdP as user email and returns the callback URL it
// sends the browser to.
func (e *env) authorize(b *browser, authURL *url.URL, email string) string {
	e.t.Helper()
	u := *authURL
	q := u.Query()
	q.Set("login_hint", email)
	u.RawQuery = q.Encode()
	resp := b.get(u.String())
	if resp.StatusCode/100 != 3 {
		e.t.Fatalf("GET authorize: status %d, want a redirect; body %s", resp.StatusCode, resp.body)
	}
	loc := resp.Header.Get("Location")
	if !strings.HasPrefix(loc, e.broker.URL+CallbackPath+"?") {
		e.t.Fatalf("authorize redirected to %q, want the callback", loc)
	}
	return loc
}

// login runs a whole login and returns the callback's response.
func (e *env) login(b *browser, issuer, email, next string) response {
	e.t.Helper()
	return b.get(e.authorize(b, e.startLogin(b, issuer, next), email))
}

func (e *env) mustLogin(b *browser, issuer, email string) {
	e.t.Helper()
	if resp := e.login(b, issuer, email, ""); resp.StatusCode != http.StatusSeeOther {
		e.t.Fatalf("login as %s: status %d, want 303; body %s", email, resp.StatusCode, resp.body)
	}
}

// ui fetches /ui/ and returns its status and body.
func (e *env) ui(b *browser) response {
	e.t.Helper()
	return b.get(e.broker.URL + "/ui/")
}

func (e *env) csrf(b *browser) string {
	e.t.Helper()
	resp := e.ui(b)
	_, tok, ok := strings.Cut(resp.body, "csrf=")
	if resp.StatusCode != http.StatusOK || !ok || tok == "" {
		e.t.Fatalf("GET /ui/: status %d body %q, want a signed-in page with a csrf token", resp.StatusCode, resp.body)
	}
	return tok
}

// setCookieHeader returns the Set-Cookie header for name.
func setCookieHeader(t *testing.T, resp response, name string) string {
	t.Helper()
	for _, h := range resp.Header.Values("Set-Cookie") {
		if strings.HasPrefix(h, name+"=") {
			return h
		}
	}
	t.Fatalf("no Set-Cookie for %s in %q", name, resp.Header.Values("Set-Cookie"))
	return ""
}

func hasAttr(header, attr string) bool {
	for _, a := range strings.Split(header, ";") {
		if strings.EqualFold(strings.TrimSpace(a), attr) {
			return true
		}
	}
	return false
}

func TestLoginLogout(t *testing.T) {
	e := newEnv(t, nil)
	b := newBrowser(t)

	// Login: a pending-login cookie and a PKCE authorization request.
	resp := b.get(e.broker.URL + LoginPath + "?issuer=vendor&next=" + url.QueryEscape("/ui/tunnels?id=7"))
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("GET login: status %d, want 302; body %s", resp.StatusCode, resp.body)
	}
	lc := setCookieHeader(t, resp, LoginCookie)
	for _, attr := range []string{"HttpOnly", "Secure", "SameSite=Lax", "Path=/auth/", "Max-Age=600"} {
		if !hasAttr(lc, attr) {
			t.Errorf("login cookie %q lacks %s", lc, attr)
		}
	}
	authURL, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	if want := e.idp.IssuerURL("vendor"); !strings.HasPrefix(authURL.String(), want) {
		t.Errorf("authorization URL %q is not under issuer %q", authURL, want)
	}
	aq := authURL.Query()
	for k, want := range map[string]string{
		"response_type":         "code",
		"client_id":             clientID,
		"redirect_uri":          e.broker.URL + CallbackPath,
		"scope":                 "openid email profile",
		"code_challenge_method": "S256",
	} {
		if got := aq.Get(k); got != want {
			t.Errorf("authorization URL %s = %q, want %q", k, got, want)
		}
	}
	for _, k := range []string{"state", "nonce", "code_challenge"} {
		if len(aq.Get(k)) < 43 {
			t.Errorf("authorization URL %s = %q, want 32 random bytes or more", k, aq.Get(k))
		}
	}

	// IdP, then callback: a session cookie, the login cookie cleared.
	callback := e.authorize(b, authURL, vendorEmail)
	resp = b.get(callback)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/tunnels?id=7" {
		t.Fatalf("callback: status %d Location %q, want 303 to /ui/tunnels?id=7; body %s", resp.StatusCode, resp.Header.Get("Location"), resp.body)
	}
	sc := setCookieHeader(t, resp, SessionCookie)
	for _, attr := range []string{"HttpOnly", "Secure", "SameSite=Lax", "Path=/"} {
		if !hasAttr(sc, attr) {
			t.Errorf("session cookie %q lacks %s", sc, attr)
		}
	}
	if strings.Contains(sc, "Max-Age") || strings.Contains(sc, "Expires") {
		t.Errorf("session cookie %q has a lifetime, want a browser-session cookie", sc)
	}
	if lc := setCookieHeader(t, resp, LoginCookie); !hasAttr(lc, "Max-Age=0") || !hasAttr(lc, "Path=/auth/") {
		t.Errorf("callback's login cookie %q does not delete it", lc)
	}
	if b.cookie(e.host(), LoginCookie) != "" {
		t.Errorf("login cookie still held after the callback")
	}

	// The session works.
	if resp := e.ui(b); resp.StatusCode != http.StatusOK || !strings.Contains(resp.body, "email="+vendorEmail+" tenant= roles=engineer") {
		t.Fatalf("GET /ui/ = %d %q, want the vendor engineer", resp.StatusCode, resp.body)
	}
	req := httptest.NewRequest(http.MethodGet, "/ui/", nil)
	req.AddCookie(&http.Cookie{Name: SessionCookie, Value: b.cookie(e.host(), SessionCookie)})
	p, ok := e.m.Principal(req)
	if !ok || p.Subject != "eve" || p.IssuerName != "vendor" || p.Issuer != e.idp.IssuerURL("vendor") || !p.HasRole(names.RoleEngineer) {
		t.Fatalf("Principal = %+v, %v; want eve, engineer, vendor", p, ok)
	}
	if ev := e.lastEvent(); ev.Kind != EventLogin || ev.Principal.Subject != "eve" || ev.Provider != "vendor" || ev.RemoteAddr == "" {
		t.Errorf("login event = %+v", ev)
	}

	// Logout.
	sessionValue := b.cookie(e.host(), SessionCookie)
	resp = b.do(http.MethodPost, e.broker.URL+LogoutPath, url.Values{"csrf": {e.csrf(b)}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		t.Fatalf("logout: status %d Location %q, want 303 to /", resp.StatusCode, resp.Header.Get("Location"))
	}
	if sc := setCookieHeader(t, resp, SessionCookie); !hasAttr(sc, "Max-Age=0") {
		t.Errorf("logout's session cookie %q does not delete it", sc)
	}
	if ev := e.lastEvent(); ev.Kind != EventLogout || ev.Principal.Subject != "eve" {
		t.Errorf("logout event = %+v", ev)
	}
	if resp := e.ui(b); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /ui/ after logout = %d, want 401", resp.StatusCode)
	}
	// The server-side session is gone, not just the browser's cookie.
	if _, ok := e.m.Principal(req); ok {
		t.Errorf("Principal with the old session cookie after logout = true, want false")
	}
	if got := e.m.CSRFToken(req); got != "" {
		t.Errorf("CSRFToken after logout = %q, want empty", got)
	}

	// Nothing secret was logged.
	code, _ := url.Parse(callback)
	logs := e.logs.String()
	for name, secret := range map[string]string{
		"session cookie": sessionValue,
		"code":           code.Query().Get("code"),
		"state":          aq.Get("state"),
		"nonce":          aq.Get("nonce"),
	} {
		if secret != "" && strings.Contains(logs, secret) {
			t.Errorf("logs hold the %s", name)
		}
	}
	if !strings.Contains(logs, "component=weblogin") {
		t.Errorf("logs lack component=weblogin: %s", logs)
	}
}

func TestCustomerLogin(t *testing.T) {
	e := newEnv(t, nil)
	b := newBrowser(t)
	e.mustLogin(b, "acme", acmeEmail)
	if resp := e.ui(b); !strings.Contains(resp.body, "email="+acmeEmail+" tenant=acme roles=approver") {
		t.Errorf("GET /ui/ = %d %q, want the acme approver", resp.StatusCode, resp.body)
	}
}

func TestSingleProviderNeedsNoIssuer(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Providers = c.Providers[:1] })
	b := newBrowser(t)
	e.mustLogin(b, "", vendorEmail)
	if resp := e.ui(b); resp.StatusCode != http.StatusOK {
		t.Errorf("GET /ui/ = %d, want 200", resp.StatusCode)
	}
}

func TestUnknownIssuer(t *testing.T) {
	e := newEnv(t, nil)
	for issuer, want := range map[string]int{"": http.StatusOK, "evil": http.StatusBadRequest} {
		resp := newBrowser(t).get(e.broker.URL + LoginPath + "?issuer=" + issuer)
		if resp.StatusCode != want || !strings.Contains(resp.body, "vendor, acme") || !strings.Contains(resp.body, `href="/auth/login?issuer=acme"`) {
			t.Errorf("login with issuer %q = %d %q, want %d listing vendor, acme", issuer, resp.StatusCode, resp.body, want)
		}
		if len(resp.Cookies()) != 0 {
			t.Errorf("login with issuer %q set cookies %v", issuer, resp.Cookies())
		}
	}
}

func TestOpenRedirectRefused(t *testing.T) {
	e := newEnv(t, nil)
	for _, next := range []string{
		"//evil.example/",
		"/\\evil.example/",
		"https://evil.example/",
		"http:/evil.example",
		"javascript:alert(1)",
		"ui/",
		"/\t/evil.example",
		"/\n/evil.example",
		"/ui/\\..\\",
	} {
		resp := newBrowser(t).get(e.broker.URL + LoginPath + "?issuer=vendor&next=" + url.QueryEscape(next))
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("login with next %q = %d (Location %q), want 400", next, resp.StatusCode, resp.Header.Get("Location"))
		}
		if len(resp.Cookies()) != 0 {
			t.Errorf("login with next %q set cookies", next)
		}
	}
	// No next lands on the default.
	b := newBrowser(t)
	if resp := e.login(b, "vendor", vendorEmail, ""); resp.Header.Get("Location") != DefaultNext {
		t.Errorf("login without next redirected to %q, want %q", resp.Header.Get("Location"), DefaultNext)
	}
}

func TestSafeNext(t *testing.T) {
	for next, want := range map[string]bool{
		"/":                                   true,
		"/ui/":                                true,
		"/ui/a?b=c#d":                         true,
		"/ui/%2F%2Fevil":                      true,
		"":                                    false,
		"//evil":                              false,
		"/\\evil":                             false,
		"\\\\evil":                            false,
		"https://evil/":                       false,
		"/ui/\x00":                            false,
		"/\r\n/evil":                          false,
		"ui":                                  false,
		"/" + strings.Repeat("a", maxNextLen): false,
	} {
		if got := safeNext(next); got != want {
			t.Errorf("safeNext(%q) = %v, want %v", next, got, want)
		}
	}
}

func FuzzSafeNext(f *testing.F) {
	for _, s := range []string{"/ui/", "//evil", "/\\evil", "/\t/evil", "https://evil", "/a/../b"} {
		f.Add(s)
	}
	base, _ := url.Parse("https://broker.example.com/auth/login")
	f.Fuzz(func(t *testing.T, next string) {
		if !safeNext(next) {
			return
		}
		// Whatever is accepted must stay on the broker's origin, as a
		// browser resolves it, even after it strips tabs and newlines.
		u, err := base.Parse(next)
		if err != nil {
			t.Fatalf("safeNext(%q) = true but it does not parse: %v", next, err)
		}
		if u.Scheme != "https" || u.Host != "broker.example.com" {
			t.Errorf("safeNext(%q) = true but it resolves to %s", next, u)
		}
	})
}

func TestStateMismatch(t *testing.T) {
	e := newEnv(t, nil)
	b := newBrowser(t)
	callback := e.authorize(b, e.startLogin(b, "vendor", ""), vendorEmail)
	u, _ := url.Parse(callback)
	q := u.Query()
	q.Set("state", randomToken())
	u.RawQuery = q.Encode()
	resp := b.get(u.String())
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(resp.body, "Try again") {
		t.Errorf("callback with another state = %d %q, want 400 offering to try again", resp.StatusCode, resp.body)
	}
	if b.cookie(e.host(), SessionCookie) != "" {
		t.Errorf("callback with another state set a session cookie")
	}
	if ev := e.lastEvent(); ev.Kind != EventLoginFailed || ev.Reason != "state mismatch" || ev.Provider != "vendor" {
		t.Errorf("event = %+v, want login_failed for state mismatch", ev)
	}
}

func TestStateReused(t *testing.T) {
	e := newEnv(t, nil)
	b := newBrowser(t)
	callback := e.authorize(b, e.startLogin(b, "vendor", ""), vendorEmail)
	loginValue := b.cookie(e.host(), LoginCookie)
	if resp := b.get(callback); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("callback = %d, want 303", resp.StatusCode)
	}
	// Replay the callback with the login cookie the browser had.
	attacker := newBrowser(t)
	attacker.cookies[e.host()] = map[string]*http.Cookie{LoginCookie: {Name: LoginCookie, Value: loginValue, Path: "/auth/"}}
	resp := attacker.get(callback)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(resp.body, "already completed") {
		t.Errorf("replayed callback = %d %q, want 400", resp.StatusCode, resp.body)
	}
	if attacker.cookie(e.host(), SessionCookie) != "" {
		t.Errorf("replayed callback set a session cookie")
	}
	if ev := e.lastEvent(); ev.Kind != EventLoginFailed {
		t.Errorf("event = %+v, want login_failed", ev)
	}
}

func TestFailedCallbackUsesUpLogin(t *testing.T) {
	e := newEnv(t, nil)
	b := newBrowser(t)
	callback := e.authorize(b, e.startLogin(b, "vendor", ""), vendorEmail)
	loginValue := b.cookie(e.host(), LoginCookie)
	u, _ := url.Parse(callback)
	q := u.Query()
	q.Set("state", "wrong")
	u.RawQuery = q.Encode()
	if resp := b.get(u.String()); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("callback with wrong state = %d, want 400", resp.StatusCode)
	}
	b.cookies[e.host()][LoginCookie] = &http.Cookie{Name: LoginCookie, Value: loginValue, Path: "/auth/"}
	if resp := b.get(callback); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("right callback after a wrong one = %d, want 400 (single use)", resp.StatusCode)
	}
}

func TestMissingLoginCookie(t *testing.T) {
	e := newEnv(t, nil)
	b := newBrowser(t)
	callback := e.authorize(b, e.startLogin(b, "vendor", ""), vendorEmail)
	other := newBrowser(t)
	resp := other.get(callback)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(resp.body, "cookies") {
		t.Errorf("callback without login cookie = %d %q, want 400 mentioning cookies", resp.StatusCode, resp.body)
	}
	if ev := e.lastEvent(); ev.Kind != EventLoginFailed || ev.Provider != "" || ev.Principal.Subject != "" {
		t.Errorf("event = %+v, want login_failed without principal", ev)
	}
}

func TestPendingLoginExpires(t *testing.T) {
	e := newEnv(t, nil)
	b := newBrowser(t)
	callback := e.authorize(b, e.startLogin(b, "vendor", ""), vendorEmail)
	e.clock.Advance(PendingLoginLifetime + time.Second)
	if resp := b.get(callback); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("callback after %v = %d, want 400", PendingLoginLifetime, resp.StatusCode)
	}
}

func TestIdPError(t *testing.T) {
	e := newEnv(t, nil)
	b := newBrowser(t)
	authURL := e.startLogin(b, "vendor", "/ui/x")
	q := url.Values{"error": {"access_denied"}, "error_description": {"<b>user said no</b>"}, "state": {authURL.Query().Get("state")}}
	resp := b.get(e.broker.URL + CallbackPath + "?" + q.Encode())
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(resp.body, "access_denied") {
		t.Errorf("callback with error = %d %q, want 401 naming access_denied", resp.StatusCode, resp.body)
	}
	if strings.Contains(resp.body, "<b>") || !strings.Contains(resp.body, "&lt;b&gt;user said no") {
		t.Errorf("error page does not escape the IdP's description: %q", resp.body)
	}
	if !strings.Contains(resp.body, `href="/auth/login?issuer=vendor&amp;next=%2Fui%2Fx"`) {
		t.Errorf("error page does not offer to try again: %q", resp.body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("Content-Type = %q", ct)
	}
	if ev := e.lastEvent(); ev.Kind != EventLoginFailed || !strings.Contains(ev.Reason, "access_denied") {
		t.Errorf("event = %+v, want login_failed naming access_denied", ev)
	}
}

// fakeTokenLogin starts a login and completes it through the fake token
// endpoint, which returns the ID token mint makes from the login's nonce.
func (e *env) fakeTokenLogin(mint func(nonce string) string) (response, *browser) {
	e.t.Helper()
	b := newBrowser(e.t)
	authURL := e.startLogin(b, "vendor", "")
	nonce := authURL.Query().Get("nonce")
	var sawVerifier atomic.Bool
	e.transport.setToken(func(r *http.Request) string {
		sawVerifier.Store(r.PostForm.Get("code_verifier") != "" && r.PostForm.Get("code") == "fake-code")
		return mint(nonce)
	})
	e.t.Cleanup(func() { e.transport.setToken(nil) })
	q := url.Values{"code": {"fake-code"}, "state": {authURL.Query().Get("state")}}
	resp := b.get(e.broker.URL + CallbackPath + "?" + q.Encode())
	if !sawVerifier.Load() {
		e.t.Errorf("token request lacked the code or the PKCE verifier")
	}
	return resp, b
}

func (e *env) token(issuer, email, nonce string) string {
	e.t.Helper()
	return e.tokenFor(issuer, email, clientID, nonce)
}

func (e *env) tokenFor(issuer, email, client, nonce string) string {
	e.t.Helper()
	tok, err := e.idp.Token(issuer, email, client, nonce)
	if err != nil {
		e.t.Fatalf("devidp Token(%s, %s): %v", issuer, email, err)
	}
	return tok
}

func TestFakeTokenEndpointControl(t *testing.T) {
	// The right token through the fake endpoint signs in: the refusals
	// below are for the reason they test, not the harness.
	e := newEnv(t, nil)
	resp, b := e.fakeTokenLogin(func(nonce string) string { return e.token("vendor", vendorEmail, nonce) })
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("callback = %d %q, want 303", resp.StatusCode, resp.body)
	}
	if resp := e.ui(b); resp.StatusCode != http.StatusOK {
		t.Errorf("GET /ui/ = %d, want 200", resp.StatusCode)
	}
}

func TestNonceMismatch(t *testing.T) {
	e := newEnv(t, nil)
	resp, b := e.fakeTokenLogin(func(string) string { return e.token("vendor", vendorEmail, randomToken()) })
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("callback with another nonce = %d %q, want 401", resp.StatusCode, resp.body)
	}
	if b.cookie(e.host(), SessionCookie) != "" {
		t.Errorf("callback with another nonce set a session cookie")
	}
	if ev := e.lastEvent(); ev.Kind != EventLoginFailed || !strings.Contains(ev.Reason, "nonce") || ev.Principal.Subject != "eve" {
		t.Errorf("event = %+v, want login_failed for the nonce, with the verified principal", ev)
	}

	// No nonce at all is refused too.
	resp, _ = e.fakeTokenLogin(func(string) string { return e.token("vendor", vendorEmail, "") })
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("callback without nonce = %d, want 401", resp.StatusCode)
	}
}

func TestTokenFromOtherIssuer(t *testing.T) {
	e := newEnv(t, nil)
	resp, b := e.fakeTokenLogin(func(nonce string) string { return e.token("acme", acmeEmail, nonce) })
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("vendor login completed with an acme token = %d %q, want 401", resp.StatusCode, resp.body)
	}
	if b.cookie(e.host(), SessionCookie) != "" {
		t.Errorf("vendor login with an acme token set a session cookie")
	}
	if ev := e.lastEvent(); ev.Kind != EventLoginFailed || !strings.Contains(ev.Reason, "issuer") {
		t.Errorf("event = %+v, want login_failed for the issuer", ev)
	}
}

func TestTokenForOtherClient(t *testing.T) {
	e := newEnv(t, nil)
	resp, b := e.fakeTokenLogin(func(nonce string) string { return e.tokenFor("vendor", vendorEmail, cliClientID, nonce) })
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("web login completed with a token for %s = %d %q, want 401", cliClientID, resp.StatusCode, resp.body)
	}
	if b.cookie(e.host(), SessionCookie) != "" {
		t.Errorf("web login with a token for another client set a session cookie")
	}
	if ev := e.lastEvent(); ev.Kind != EventLoginFailed || !strings.Contains(ev.Reason, "audience") {
		t.Errorf("event = %+v, want login_failed for the audience", ev)
	}
}

func TestNoRole(t *testing.T) {
	e := newEnv(t, nil)
	resp := e.login(newBrowser(t), "vendor", noRoleEmail, "")
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(resp.body, "role") {
		t.Errorf("login without a role = %d %q, want 403", resp.StatusCode, resp.body)
	}
}

func TestIdleExpiry(t *testing.T) {
	e := newEnv(t, nil)
	b := newBrowser(t)
	e.mustLogin(b, "vendor", vendorEmail)
	// Each use extends the session by the idle timeout.
	for i := range 3 {
		e.clock.Advance(DefaultIdleTimeout - time.Minute)
		if resp := e.ui(b); resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /ui/ after %d idle periods = %d, want 200", i+1, resp.StatusCode)
		}
	}
	// CSRFToken does not extend it.
	e.clock.Advance(DefaultIdleTimeout - time.Minute)
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.AddCookie(&http.Cookie{Name: SessionCookie, Value: b.cookie(e.host(), SessionCookie)})
	if e.m.CSRFToken(req) == "" {
		t.Fatal("CSRFToken = empty, want the token")
	}
	e.clock.Advance(time.Minute)
	if resp := e.ui(b); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /ui/ after %v idle = %d, want 401", DefaultIdleTimeout, resp.StatusCode)
	}
	if n := e.storedSessions(); n != 0 {
		t.Errorf("%d sessions stored after expiry, want 0", n)
	}
}

func TestAbsoluteExpiry(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.IdleTimeout = 30 * time.Minute
		c.AbsoluteTimeout = time.Hour
	})
	b := newBrowser(t)
	e.mustLogin(b, "vendor", vendorEmail)
	for _, at := range []time.Duration{20 * time.Minute, 40 * time.Minute, 59 * time.Minute} {
		e.clock.Advance(at - e.clock.Now().Sub(testStart))
		if resp := e.ui(b); resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /ui/ %v after login = %d, want 200", at, resp.StatusCode)
		}
	}
	e.clock.Advance(time.Minute)
	if resp := e.ui(b); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /ui/ an hour after login, though active = %d, want 401", resp.StatusCode)
	}
}

func TestExpiredSessionsSwept(t *testing.T) {
	e := newEnv(t, nil)
	for range 5 {
		e.mustLogin(newBrowser(t), "vendor", vendorEmail)
	}
	e.clock.Advance(DefaultIdleTimeout)
	// A new login sweeps the expired sessions without anyone looking
	// them up.
	e.mustLogin(newBrowser(t), "vendor", vendorEmail)
	if n := e.storedSessions(); n != 1 {
		t.Errorf("%d sessions stored, want 1", n)
	}
}

func TestLogoutCSRF(t *testing.T) {
	e := newEnv(t, nil)
	b := newBrowser(t)
	e.mustLogin(b, "vendor", vendorEmail)
	for _, form := range []url.Values{{}, {"csrf": {""}}, {"csrf": {randomToken()}}, {"csrf": {"short"}}} {
		resp := b.do(http.MethodPost, e.broker.URL+LogoutPath, form)
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("logout with form %v = %d, want 403", form, resp.StatusCode)
		}
		if resp := e.ui(b); resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /ui/ after refused logout = %d, want 200", resp.StatusCode)
		}
	}
	// Another user's token does not log this one out.
	other := newBrowser(t)
	e.mustLogin(other, "acme", acmeEmail)
	if resp := b.do(http.MethodPost, e.broker.URL+LogoutPath, url.Values{"csrf": {e.csrf(other)}}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("logout with another session's token = %d, want 403", resp.StatusCode)
	}
	for _, ev := range e.Events() {
		if ev.Kind == EventLogout {
			t.Errorf("refused logout emitted %+v", ev)
		}
	}
	if resp := b.do(http.MethodPost, e.broker.URL+LogoutPath, url.Values{"csrf": {e.csrf(b)}}); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("logout with the token = %d, want 303", resp.StatusCode)
	}
	if resp := e.ui(other); resp.StatusCode != http.StatusOK {
		t.Errorf("the other user's session ended with this one's logout")
	}
}

func TestSessionEviction(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxSessions = 2 })
	bs := []*browser{newBrowser(t), newBrowser(t), newBrowser(t)}
	for _, b := range bs {
		e.clock.Advance(time.Second)
		e.mustLogin(b, "vendor", vendorEmail)
	}
	for i, want := range []int{http.StatusUnauthorized, http.StatusOK, http.StatusOK} {
		if resp := e.ui(bs[i]); resp.StatusCode != want {
			t.Errorf("GET /ui/ for session %d of 3 with MaxSessions 2 = %d, want %d", i, resp.StatusCode, want)
		}
	}
}

func TestNewLoginEndsOldSession(t *testing.T) {
	e := newEnv(t, nil)
	b := newBrowser(t)
	e.mustLogin(b, "vendor", vendorEmail)
	old := b.cookie(e.host(), SessionCookie)
	e.mustLogin(b, "acme", acmeEmail)
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.AddCookie(&http.Cookie{Name: SessionCookie, Value: old})
	if _, ok := e.m.Principal(req); ok {
		t.Errorf("the session before the new login still works")
	}
	if n := e.storedSessions(); n != 1 {
		t.Errorf("%d sessions, want 1", n)
	}
}

func TestAuditFailureAbortsLogin(t *testing.T) {
	e := newEnv(t, nil)
	e.setEventErr(errors.New("audit log unavailable"))
	b := newBrowser(t)
	resp := e.login(b, "vendor", vendorEmail, "")
	if resp.StatusCode != http.StatusInternalServerError || !strings.Contains(resp.body, "audit") {
		t.Errorf("login with failing audit = %d %q, want 500 mentioning the audit log", resp.StatusCode, resp.body)
	}
	if b.cookie(e.host(), SessionCookie) != "" {
		t.Errorf("login with failing audit set a session cookie")
	}
	if n := e.storedSessions(); n != 0 {
		t.Errorf("%d sessions stored, want 0", n)
	}
	if ev := e.lastEvent(); ev.Kind != EventLogin {
		t.Errorf("last event = %+v, want the refused login", ev)
	}
}

func TestIdPDown(t *testing.T) {
	e := newEnv(t, nil)
	e.transport.down.Store(true)
	b := newBrowser(t)
	resp := b.get(e.broker.URL + LoginPath + "?issuer=vendor")
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(resp.body, "unreachable") {
		t.Errorf("login with the IdP down = %d %q, want 502 saying it is unreachable", resp.StatusCode, resp.body)
	}
	if len(resp.Cookies()) != 0 {
		t.Errorf("login with the IdP down set cookies")
	}
	// The failure is not cached.
	e.transport.down.Store(false)
	e.mustLogin(b, "vendor", vendorEmail)

	// Down between login and callback: the exchange fails with 502.
	callback := e.authorize(b, e.startLogin(b, "vendor", ""), vendorEmail)
	e.transport.down.Store(true)
	if resp := b.get(callback); resp.StatusCode != http.StatusBadGateway {
		t.Errorf("callback with the IdP down = %d %q, want 502", resp.StatusCode, resp.body)
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{
		Providers:   []Provider{{Name: "vendor", IssuerURL: "https://idp.example.com", ClientID: "c"}},
		RedirectURL: "https://broker.example.com/auth/callback",
		Verify:      func(context.Context, string) (identity.Principal, error) { return identity.Principal{}, nil },
	}
	if err := ok.Validate(); err != nil {
		t.Fatalf("Validate() = %v, want nil", err)
	}
	for name, edit := range map[string]func(*Config){
		"no providers":        func(c *Config) { c.Providers = nil },
		"duplicate name":      func(c *Config) { c.Providers = append(c.Providers, c.Providers[0]) },
		"no client ID":        func(c *Config) { c.Providers[0].ClientID = "" },
		"bad issuer":          func(c *Config) { c.Providers[0].IssuerURL = "idp.example.com" },
		"relative redirect":   func(c *Config) { c.RedirectURL = "/auth/callback" },
		"http redirect":       func(c *Config) { c.RedirectURL = "http://broker.example.com/auth/callback" },
		"http issuer":         func(c *Config) { c.Providers[0].IssuerURL = "http://idp.example.com" },
		"other callback path": func(c *Config) { c.RedirectURL = "https://broker.example.com/cb" },
		"no verify":           func(c *Config) { c.Verify = nil },
		"negative timeout":    func(c *Config) { c.IdleTimeout = -time.Second },
	} {
		c := ok
		c.Providers = slices.Clone(ok.Providers)
		edit(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("Validate() with %s = nil, want an error", name)
		}
	}
}

func TestBoundedStoreSweep(t *testing.T) {
	now := testStart
	s := newBoundedStore(100, func(v time.Time, now time.Time) bool { return !now.Before(v) })
	// Entries expiring in no particular order: the sweep must find the
	// expired ones wherever they are.
	for i := range 90 {
		exp := now.Add(time.Hour)
		if i%3 == 0 {
			exp = now.Add(time.Minute)
		}
		s.put(fmt.Sprint(i), exp, now)
	}
	now = now.Add(2 * time.Minute)
	for i := range 4 {
		s.put(fmt.Sprint("new", i), now.Add(time.Hour), now)
	}
	if got, want := s.len(), 60+4; got != want {
		t.Errorf("len after sweeps = %d, want %d", got, want)
	}
	for i := range 90 {
		_, ok := s.get(fmt.Sprint(i))
		if want := i%3 != 0; ok != want {
			t.Errorf("get(%d) = %v, want %v", i, ok, want)
		}
	}
}

func TestAuthorizationResponseFromOtherIssuer(t *testing.T) {
	e := newEnv(t, nil)
	b := newBrowser(t)
	callback := e.authorize(b, e.startLogin(b, "vendor", ""), vendorEmail)
	u, _ := url.Parse(callback)
	q := u.Query()
	if got := q.Get("iss"); got != e.idp.IssuerURL("vendor") {
		t.Fatalf("callback iss = %q, want the vendor issuer", got)
	}
	q.Set("iss", e.idp.IssuerURL("acme"))
	u.RawQuery = q.Encode()
	if resp := b.get(u.String()); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("callback with iss of acme for a vendor login = %d %q, want 400", resp.StatusCode, resp.body)
	}
	if ev := e.lastEvent(); ev.Kind != EventLoginFailed || !strings.Contains(ev.Reason, "iss") {
		t.Errorf("event = %+v, want login_failed for iss", ev)
	}
}
