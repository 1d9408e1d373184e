package devidp_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/tetherhq/tether/internal/devidp"
)

const (
	cliClient    = "tether-cli"
	brokerClient = "tether-broker"
	loopbackCB   = "http://127.0.0.1:9/callback" // never dialled: tests read Location
	configuredCB = "https://broker.dev.test/oauth/callback"
)

var testNow = time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)

// fakeClock is a settable clock.
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

// fixture is an IdP with a vendor and an acme issuer, served over
// loopback HTTP.
type fixture struct {
	t     *testing.T
	idp   *devidp.IdP
	srv   *httptest.Server
	clock *fakeClock // nil when the IdP runs on the real clock
	// after, when set, is called with each request once it was served.
	after atomic.Pointer[func(*http.Request)]
}

func testOptions() devidp.Options {
	return devidp.Options{
		Issuers: []devidp.IssuerSpec{
			{
				Name:      "vendor",
				ClientIDs: []string{cliClient, brokerClient},
				Users: []devidp.User{
					{Email: "ada@vendor.test", Name: "Ada Lovelace", Groups: []string{"eng"},
						Claims: map[string]any{"github_login": "ada"}},
					{Email: "bob@vendor.test", Name: "Bob <script>alert(1)</script>", Groups: []string{"ops", "rev"},
						Subject: "vendor-bob"},
				},
			},
			{
				Name:      "acme",
				ClientIDs: []string{brokerClient, "acme-portal"},
				Users:     []devidp.User{{Email: "carol@acme.test", Groups: []string{"approvers"}}},
			},
		},
		RedirectURIs: []string{configuredCB},
	}
}

// newFixture starts an IdP. The server is created unstarted so that its
// address, and so the IdP's BaseURL, is known before devidp.New.
func newFixture(t *testing.T, fakeTime bool, edit func(*devidp.Options)) *fixture {
	t.Helper()
	f := &fixture{t: t}
	f.srv = httptest.NewUnstartedServer(nil)
	opts := testOptions()
	opts.BaseURL = "http://" + f.srv.Listener.Addr().String() + "/dev/idp"
	if fakeTime {
		f.clock = &fakeClock{t: testNow}
		opts.Now = f.clock.Now
	}
	if edit != nil {
		edit(&opts)
	}
	idp, err := devidp.New(opts)
	if err != nil {
		f.srv.Listener.Close()
		t.Fatalf("New() = %v", err)
	}
	f.idp = idp
	h := idp.Handler()
	f.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r)
		if fn := f.after.Load(); fn != nil {
			(*fn)(r)
		}
	})
	f.srv.Start()
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fixture) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	f.t.Cleanup(cancel)
	return oidc.ClientContext(ctx, f.srv.Client())
}

func (f *fixture) provider(name string) *oidc.Provider {
	f.t.Helper()
	p, err := oidc.NewProvider(f.ctx(), f.idp.IssuerURL(name))
	if err != nil {
		f.t.Fatalf("NewProvider(%s) = %v", name, err)
	}
	return p
}

// verifier verifies ID tokens of issuer name for clientID, on the IdP's
// clock.
func (f *fixture) verifier(p *oidc.Provider, clientID string) *oidc.IDTokenVerifier {
	cfg := &oidc.Config{ClientID: clientID}
	if f.clock != nil {
		cfg.Now = f.clock.Now
	}
	return p.VerifierContext(oidc.ClientContext(context.Background(), f.srv.Client()), cfg)
}

func oauthConfig(p *oidc.Provider, clientID string) *oauth2.Config {
	return &oauth2.Config{
		ClientID:    clientID,
		Endpoint:    p.Endpoint(),
		RedirectURL: loopbackCB,
		Scopes:      []string{oidc.ScopeOpenID, "email", "profile", "groups"},
	}
}

// noRedirect returns the fixture's client that does not follow
// redirects, so tests read Location.
func (f *fixture) noRedirect() *http.Client {
	c := *f.srv.Client()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &c
}

// do sends req and returns the response with its body read.
func (f *fixture) do(req *http.Request) (*http.Response, string) {
	f.t.Helper()
	resp, err := f.noRedirect().Do(req)
	if err != nil {
		f.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatalf("%s %s: read body: %v", req.Method, req.URL, err)
	}
	return resp, string(body)
}

func (f *fixture) get(rawURL string) (*http.Response, string) {
	f.t.Helper()
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	return f.do(req)
}

func (f *fixture) postForm(rawURL string, form url.Values, header http.Header) (*http.Response, string) {
	f.t.Helper()
	req, err := http.NewRequest(http.MethodPost, rawURL, strings.NewReader(form.Encode()))
	if err != nil {
		f.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, v := range header {
		req.Header[k] = v
	}
	return f.do(req)
}

// authorizeQuery returns the query of a valid authorization request.
func authorizeQuery(clientID, redirectURI, challenge string) url.Values {
	return url.Values{
		"client_id":             {clientID},
		"redirect_uri":          {redirectURI},
		"response_type":         {"code"},
		"scope":                 {"openid email"},
		"state":                 {"st-123"},
		"code_challenge":        {challenge},
		"code_challenge_method": {"S256"},
	}
}

// redirectParams checks that resp redirects (303) to redirectURI and
// returns the parameters of the redirect.
func redirectParams(t *testing.T, resp *http.Response, redirectURI string) url.Values {
	t.Helper()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("status = %d, want %d (redirect)", resp.StatusCode, http.StatusSeeOther)
	}
	loc := resp.Header.Get("Location")
	lu, err := url.Parse(loc)
	if err != nil {
		t.Fatalf("Location %q: %v", loc, err)
	}
	ru, err := url.Parse(redirectURI)
	if err != nil {
		t.Fatal(err)
	}
	q := lu.Query()
	if lu.Scheme != ru.Scheme || lu.Host != ru.Host || lu.Path != ru.Path || lu.Fragment != "" {
		t.Fatalf("Location = %q, want a redirect to %q", loc, redirectURI)
	}
	for k, v := range ru.Query() {
		if q.Get(k) != v[0] {
			t.Fatalf("Location = %q dropped %s=%s of the redirect URI %q", loc, k, v[0], redirectURI)
		}
	}
	return q
}

// login runs the authorization endpoint with login_hint and returns the
// code it redirected with.
func (f *fixture) login(issuer, email string, q url.Values) string {
	f.t.Helper()
	q.Set("login_hint", email)
	resp, _ := f.get(f.idp.IssuerURL(issuer) + "/authorize?" + q.Encode())
	p := redirectParams(f.t, resp, q.Get("redirect_uri"))
	if p.Get("code") == "" {
		f.t.Fatalf("login(%s, %s): redirect %v has no code", issuer, email, p)
	}
	return p.Get("code")
}

// oauthErr decodes an RFC 6749 §5.2 error body.
func oauthErr(t *testing.T, body string) string {
	t.Helper()
	var e struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("error body %q: %v", body, err)
	}
	return e.Error
}

// claimsOf returns the claims of a verified ID token.
func claimsOf(t *testing.T, tok *oidc.IDToken) map[string]any {
	t.Helper()
	var c map[string]any
	if err := tok.Claims(&c); err != nil {
		t.Fatal(err)
	}
	return c
}
