package devidp_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

func TestDiscovery(t *testing.T) {
	f := newFixture(t, false, nil)
	for _, name := range []string{"vendor", "acme"} {
		iss := f.idp.IssuerURL(name)
		resp, body := f.get(iss + "/.well-known/openid-configuration")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET discovery(%s) = %d, want 200", name, resp.StatusCode)
		}
		var d map[string]any
		if err := json.Unmarshal([]byte(body), &d); err != nil {
			t.Fatal(err)
		}
		want := map[string]any{
			"issuer":                                iss,
			"authorization_endpoint":                iss + "/authorize",
			"token_endpoint":                        iss + "/token",
			"jwks_uri":                              iss + "/jwks",
			"device_authorization_endpoint":         iss + "/device/code",
			"response_types_supported":              []any{"code"},
			"grant_types_supported":                 []any{"authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code"},
			"subject_types_supported":               []any{"public"},
			"id_token_signing_alg_values_supported": []any{"ES256"},
			"code_challenge_methods_supported":      []any{"S256"},
			"token_endpoint_auth_methods_supported": []any{"none"},
		}
		for k, v := range want {
			if got, _ := json.Marshal(d[k]); string(got) != mustJSON(t, v) {
				t.Errorf("discovery(%s)[%s] = %s, want %s", name, k, got, mustJSON(t, v))
			}
		}
		for _, k := range []string{"scopes_supported", "claims_supported"} {
			if _, ok := d[k].([]any); !ok {
				t.Errorf("discovery(%s)[%s] = %v, want a list", name, k, d[k])
			}
		}
	}
	if got := f.idp.IssuerURL("vendor"); got != f.srv.URL+"/dev/idp/vendor" {
		t.Errorf("IssuerURL(vendor) = %q, want %q", got, f.srv.URL+"/dev/idp/vendor")
	}
	resp, body := f.get(f.idp.IssuerURL("vendor") + "/jwks")
	var set struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal([]byte(body), &set); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET jwks = %d %q, %v", resp.StatusCode, body, err)
	}
	if len(set.Keys) != 1 {
		t.Fatalf("jwks has %d keys, want 1", len(set.Keys))
	}
	k := set.Keys[0]
	if k["alg"] != "ES256" || k["use"] != "sig" || k["kty"] != "EC" || k["crv"] != "P-256" || k["kid"] == "" || k["d"] != nil {
		t.Errorf("jwks key = %v, want a public EC P-256 key with kid, alg ES256, use sig", k)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestAuthCodeFlow logs in through golang.org/x/oauth2 with PKCE on each
// issuer and verifies the ID token with go-oidc, as the broker will.
func TestAuthCodeFlow(t *testing.T) {
	f := newFixture(t, false, nil)
	tests := []struct {
		issuer, clientID, email string
		wantSub                 string
		wantGroups              []any
		wantName                string
	}{
		{"vendor", cliClient, "ada@vendor.test", "dev|ada@vendor.test", []any{"eng"}, "Ada Lovelace"},
		{"vendor", brokerClient, "bob@vendor.test", "vendor-bob", []any{"ops", "rev"}, "Bob <script>alert(1)</script>"},
		{"acme", brokerClient, "carol@acme.test", "dev|carol@acme.test", []any{"approvers"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.issuer+"/"+tt.email, func(t *testing.T) {
			ctx := f.ctx()
			p := f.provider(tt.issuer)
			conf := oauthConfig(p, tt.clientID)
			verifier := oauth2.GenerateVerifier()
			nonce := "n-" + tt.email
			authURL := conf.AuthCodeURL("state-xyz", oauth2.S256ChallengeOption(verifier), oidc.Nonce(nonce),
				oauth2.SetAuthURLParam("login_hint", tt.email))

			resp, _ := f.get(authURL)
			q := redirectParams(t, resp, loopbackCB)
			if q.Get("state") != "state-xyz" || q.Get("iss") != f.idp.IssuerURL(tt.issuer) {
				t.Errorf("redirect params = %v, want state state-xyz and iss %s", q, f.idp.IssuerURL(tt.issuer))
			}

			tok, err := conf.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(verifier))
			if err != nil {
				t.Fatalf("Exchange() = %v", err)
			}
			raw, _ := tok.Extra("id_token").(string)
			idt, err := f.verifier(p, tt.clientID).Verify(ctx, raw)
			if err != nil {
				t.Fatalf("Verify(id_token) = %v", err)
			}
			if idt.Nonce != nonce {
				t.Errorf("nonce = %q, want %q", idt.Nonce, nonce)
			}
			if idt.Subject != tt.wantSub {
				t.Errorf("sub = %q, want %q", idt.Subject, tt.wantSub)
			}
			if err := idt.VerifyAccessToken(tok.AccessToken); err != nil {
				t.Errorf("VerifyAccessToken() = %v", err)
			}
			if tok.TokenType != "Bearer" || tok.RefreshToken == "" || tok.Extra("scope") != "openid email profile groups" {
				t.Errorf("token = type %q refresh %q scope %v, want Bearer, a refresh token and the asked scopes",
					tok.TokenType, tok.RefreshToken, tok.Extra("scope"))
			}
			if d := time.Until(tok.Expiry); d < 14*time.Minute || d > 16*time.Minute {
				t.Errorf("token expires in %v, want about 15m", d)
			}
			c := claimsOf(t, idt)
			if c["email"] != tt.email || c["email_verified"] != true || mustJSON(t, c["groups"]) != mustJSON(t, tt.wantGroups) {
				t.Errorf("claims = %v, want email %s verified, groups %v", c, tt.email, tt.wantGroups)
			}
			if name, _ := c["name"].(string); name != tt.wantName {
				t.Errorf("name claim = %q, want %q", name, tt.wantName)
			}
			if c["iat"] != c["nbf"] || c["auth_time"] == nil {
				t.Errorf("claims iat %v nbf %v auth_time %v, want nbf = iat and auth_time set", c["iat"], c["nbf"], c["auth_time"])
			}
			if tt.email == "ada@vendor.test" && c["github_login"] != "ada" {
				t.Errorf("github_login = %v, want ada", c["github_login"])
			}
		})
	}
}

// TestLoginPage drives the HTML page as a browser would: GET lists the
// dev users as buttons, and POSTing one (with the same parameters)
// redirects with a code.
func TestLoginPage(t *testing.T) {
	f := newFixture(t, false, nil)
	verifier := oauth2.GenerateVerifier()
	q := authorizeQuery(cliClient, configuredCB, oauth2.S256ChallengeFromVerifier(verifier))
	q.Set("nonce", `n"><b>`)
	authz := f.idp.IssuerURL("vendor") + "/authorize"

	resp, page := f.get(authz + "?" + q.Encode())
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /authorize = %d %s, want 200 HTML", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, want := range []string{
		`<button type="submit" name="email" value="ada@vendor.test">`,
		`<button type="submit" name="email" value="bob@vendor.test">`,
		`Bob &lt;script&gt;alert(1)&lt;/script&gt;`,
		`name="nonce" value="n&#34;&gt;&lt;b&gt;"`,
		`action="/dev/idp/vendor/authorize"`,
		`anyone who can reach it`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("login page lacks %q:\n%s", want, page)
		}
	}
	if strings.Contains(page, "<script>") {
		t.Errorf("login page has an unescaped <script>:\n%s", page)
	}

	form := url.Values{}
	for k, v := range q {
		form[k] = v
	}
	form.Set("email", "bob@vendor.test")
	resp, _ = f.postForm(authz, form, nil)
	code := redirectParams(t, resp, configuredCB).Get("code")

	tok, status, body := exchange(f, "vendor", url.Values{"client_id": {cliClient}, "code": {code},
		"redirect_uri": {configuredCB}, "code_verifier": {verifier}})
	if status != http.StatusOK {
		t.Fatalf("token = %d %s, want 200", status, body)
	}
	idt, err := f.verifier(f.provider("vendor"), cliClient).Verify(f.ctx(), tok.IDToken)
	if err != nil {
		t.Fatalf("Verify() = %v", err)
	}
	if idt.Nonce != `n"><b>` || idt.Subject != "vendor-bob" {
		t.Errorf("id token nonce %q sub %q, want the request's nonce and bob", idt.Nonce, idt.Subject)
	}
}

type tokenJSON struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	IDToken      string `json:"id_token"`
	RefreshToken string `json:"refresh_token"`
	Scope        string `json:"scope"`
}

// exchange posts an authorization_code grant to issuer's token endpoint.
func exchange(f *fixture, issuer string, form url.Values) (tokenJSON, int, string) {
	f.t.Helper()
	if form.Get("grant_type") == "" {
		form.Set("grant_type", "authorization_code")
	}
	resp, body := f.postForm(f.idp.IssuerURL(issuer)+"/token", form, nil)
	var tok tokenJSON
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal([]byte(body), &tok); err != nil {
			f.t.Fatalf("token response %q: %v", body, err)
		}
		if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
			f.t.Errorf("token response Cache-Control = %q, want no-store", cc)
		}
	}
	return tok, resp.StatusCode, body
}

// TestRefresh refreshes an expired token through oauth2's TokenSource:
// a fresh ID token without nonce, a new refresh token, and the old one
// refused.
func TestRefresh(t *testing.T) {
	f := newFixture(t, false, nil)
	ctx := f.ctx()
	p := f.provider("vendor")
	conf := oauthConfig(p, cliClient)
	verifier := oauth2.GenerateVerifier()
	resp, _ := f.get(conf.AuthCodeURL("s", oauth2.S256ChallengeOption(verifier), oidc.Nonce("n1"),
		oauth2.SetAuthURLParam("login_hint", "ada@vendor.test")))
	tok, err := conf.Exchange(ctx, redirectParams(t, resp, loopbackCB).Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("Exchange() = %v", err)
	}
	first, err := f.verifier(p, cliClient).Verify(ctx, tok.Extra("id_token").(string))
	if err != nil {
		t.Fatal(err)
	}

	oldRefresh := tok.RefreshToken
	tok.Expiry = time.Now().Add(-time.Minute)
	fresh, err := conf.TokenSource(ctx, tok).Token()
	if err != nil {
		t.Fatalf("TokenSource().Token() = %v", err)
	}
	raw, _ := fresh.Extra("id_token").(string)
	idt, err := f.verifier(p, cliClient).Verify(ctx, raw)
	if err != nil {
		t.Fatalf("Verify(refreshed id_token) = %v", err)
	}
	if at, want := claimsOf(t, idt)["auth_time"], claimsOf(t, first)["auth_time"]; idt.Nonce != "" || idt.Subject != first.Subject || at != want {
		t.Errorf("refreshed id token nonce %q sub %q auth_time %v, want no nonce, sub %q, auth_time %v",
			idt.Nonce, idt.Subject, at, first.Subject, want)
	}
	if fresh.RefreshToken == "" || fresh.RefreshToken == oldRefresh {
		t.Errorf("refresh token %q after refresh, want a new one", fresh.RefreshToken)
	}

	// The old refresh token was spent.
	_, err = conf.TokenSource(ctx, &oauth2.Token{RefreshToken: oldRefresh, Expiry: time.Now().Add(-time.Minute)}).Token()
	if re := (*oauth2.RetrieveError)(nil); !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
		t.Errorf("refresh with a used token = %v, want invalid_grant", err)
	}
	// The new one works once, with narrower scope if asked.
	resp, body := f.postForm(f.idp.IssuerURL("vendor")+"/token", url.Values{"grant_type": {"refresh_token"},
		"client_id": {cliClient}, "refresh_token": {fresh.RefreshToken}, "scope": {"openid"}}, nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"scope":"openid"`) {
		t.Errorf("refresh with scope openid = %d %s, want 200 with scope openid", resp.StatusCode, body)
	}
}

func TestRefreshRefusals(t *testing.T) {
	f := newFixture(t, true, nil)
	newRefresh := func() string {
		verifier := oauth2.GenerateVerifier()
		code := f.login("vendor", "ada@vendor.test", authorizeQuery(cliClient, loopbackCB, oauth2.S256ChallengeFromVerifier(verifier)))
		tok, status, body := exchange(f, "vendor", url.Values{"client_id": {cliClient}, "code": {code},
			"redirect_uri": {loopbackCB}, "code_verifier": {verifier}})
		if status != http.StatusOK {
			t.Fatalf("exchange = %d %s", status, body)
		}
		return tok.RefreshToken
	}
	tests := []struct {
		name     string
		edit     func(form url.Values)
		wantCode string
	}{
		{"unknown token", func(v url.Values) { v.Set("refresh_token", "nope") }, "invalid_grant"},
		{"other client", func(v url.Values) { v.Set("client_id", brokerClient) }, "invalid_grant"},
		{"wider scope", func(v url.Values) { v.Set("scope", "openid offline_access") }, "invalid_scope"},
		{"expired", func(url.Values) { f.clock.Advance(25 * time.Hour) }, "invalid_grant"},
		{"missing token", func(v url.Values) { v.Del("refresh_token") }, "invalid_request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			form := url.Values{"grant_type": {"refresh_token"}, "client_id": {cliClient}, "refresh_token": {newRefresh()}}
			tt.edit(form)
			resp, body := f.postForm(f.idp.IssuerURL("vendor")+"/token", form, nil)
			if resp.StatusCode != http.StatusBadRequest || oauthErr(t, body) != tt.wantCode {
				t.Errorf("refresh(%s) = %d %s, want 400 %s", tt.name, resp.StatusCode, body, tt.wantCode)
			}
		})
	}
}

// TestCodeExchangeRefusals sends token requests that must fail.
func TestCodeExchangeRefusals(t *testing.T) {
	f := newFixture(t, true, nil)
	tests := []struct {
		name       string
		issuer     string // token endpoint's issuer; vendor if empty
		edit       func(form url.Values, h http.Header)
		wantStatus int
		wantCode   string
	}{
		{"wrong code_verifier", "", func(v url.Values, _ http.Header) { v.Set("code_verifier", oauth2.GenerateVerifier()) }, 400, "invalid_grant"},
		{"missing code_verifier", "", func(v url.Values, _ http.Header) { v.Del("code_verifier") }, 400, "invalid_grant"},
		{"short code_verifier", "", func(v url.Values, _ http.Header) { v.Set("code_verifier", "abc") }, 400, "invalid_grant"},
		{"wrong redirect_uri", "", func(v url.Values, _ http.Header) { v.Set("redirect_uri", "http://127.0.0.1:10/callback") }, 400, "invalid_grant"},
		{"missing redirect_uri", "", func(v url.Values, _ http.Header) { v.Del("redirect_uri") }, 400, "invalid_grant"},
		{"unknown client_id", "", func(v url.Values, _ http.Header) { v.Set("client_id", "mallory") }, 401, "invalid_client"},
		{"missing client_id", "", func(v url.Values, _ http.Header) { v.Del("client_id") }, 400, "invalid_request"},
		{"other client's code", "", func(v url.Values, _ http.Header) { v.Set("client_id", brokerClient) }, 400, "invalid_grant"},
		{"other issuer", "acme", func(v url.Values, _ http.Header) { v.Set("client_id", brokerClient) }, 400, "invalid_grant"},
		{"unknown code", "", func(v url.Values, _ http.Header) { v.Set("code", "nope") }, 400, "invalid_grant"},
		{"expired code", "", func(url.Values, http.Header) { f.clock.Advance(61 * time.Second) }, 400, "invalid_grant"},
		{"basic auth", "", func(_ url.Values, h http.Header) { h.Set("Authorization", "Basic dGV0aGVyLWNsaTo=") }, 401, "invalid_client"},
		{"repeated code", "", func(v url.Values, _ http.Header) { v.Add("code", "x") }, 400, "invalid_request"},
		{"unknown grant_type", "", func(v url.Values, _ http.Header) { v.Set("grant_type", "password") }, 400, "unsupported_grant_type"},
		{"missing grant_type", "", func(v url.Values, _ http.Header) { v.Del("grant_type") }, 400, "invalid_request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			verifier := oauth2.GenerateVerifier()
			code := f.login("vendor", "ada@vendor.test", authorizeQuery(cliClient, loopbackCB, oauth2.S256ChallengeFromVerifier(verifier)))
			form := url.Values{"grant_type": {"authorization_code"}, "client_id": {cliClient}, "code": {code},
				"redirect_uri": {loopbackCB}, "code_verifier": {verifier}}
			h := http.Header{}
			tt.edit(form, h)
			issuer := tt.issuer
			if issuer == "" {
				issuer = "vendor"
			}
			resp, body := f.postForm(f.idp.IssuerURL(issuer)+"/token", form, h)
			if resp.StatusCode != tt.wantStatus || oauthErr(t, body) != tt.wantCode {
				t.Errorf("token(%s) = %d %s, want %d %s", tt.name, resp.StatusCode, body, tt.wantStatus, tt.wantCode)
			}
			if tt.wantStatus == 401 && resp.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("token(%s): 401 without WWW-Authenticate", tt.name)
			}
		})
	}

	t.Run("reused code", func(t *testing.T) {
		verifier := oauth2.GenerateVerifier()
		code := f.login("vendor", "ada@vendor.test", authorizeQuery(cliClient, loopbackCB, oauth2.S256ChallengeFromVerifier(verifier)))
		form := url.Values{"client_id": {cliClient}, "code": {code}, "redirect_uri": {loopbackCB}, "code_verifier": {verifier}}
		if _, status, body := exchange(f, "vendor", form); status != http.StatusOK {
			t.Fatalf("first exchange = %d %s, want 200", status, body)
		}
		if _, status, body := exchange(f, "vendor", form); status != 400 || oauthErr(t, body) != "invalid_grant" {
			t.Errorf("second exchange = %d %s, want 400 invalid_grant", status, body)
		}
	})
	t.Run("code spent by a failed attempt", func(t *testing.T) {
		verifier := oauth2.GenerateVerifier()
		code := f.login("vendor", "ada@vendor.test", authorizeQuery(cliClient, loopbackCB, oauth2.S256ChallengeFromVerifier(verifier)))
		bad := url.Values{"client_id": {cliClient}, "code": {code}, "redirect_uri": {loopbackCB}, "code_verifier": {oauth2.GenerateVerifier()}}
		exchange(f, "vendor", bad)
		good := url.Values{"client_id": {cliClient}, "code": {code}, "redirect_uri": {loopbackCB}, "code_verifier": {verifier}}
		if _, status, body := exchange(f, "vendor", good); status != 400 || oauthErr(t, body) != "invalid_grant" {
			t.Errorf("exchange after a wrong verifier = %d %s, want 400 invalid_grant", status, body)
		}
	})
}

// TestAuthorizeRefusals checks that a bad client or redirect URI gets an
// error page, never a redirect, and that other errors are redirected
// with RFC 6749 §4.1.2.1 parameters.
func TestAuthorizeRefusals(t *testing.T) {
	f := newFixture(t, false, nil)
	challenge := oauth2.S256ChallengeFromVerifier(oauth2.GenerateVerifier())
	tests := []struct {
		name     string
		method   string // GET unless set
		edit     func(q url.Values)
		wantPage int    // status of an error page; 0 means a redirect
		wantErr  string // error parameter of the redirect
	}{
		{"unknown client_id", "", func(q url.Values) { q.Set("client_id", "mallory") }, 400, ""},
		{"client of another issuer", "", func(q url.Values) { q.Set("client_id", "acme-portal") }, 400, ""},
		{"missing client_id", "", func(q url.Values) { q.Del("client_id") }, 400, ""},
		{"repeated client_id", "", func(q url.Values) { q.Add("client_id", cliClient) }, 400, ""},
		{"missing redirect_uri", "", func(q url.Values) { q.Del("redirect_uri") }, 400, ""},
		{"unregistered redirect_uri", "", func(q url.Values) { q.Set("redirect_uri", "https://evil.example/cb") }, 400, ""},
		{"https loopback", "", func(q url.Values) { q.Set("redirect_uri", "https://127.0.0.1:9/cb") }, 400, ""},
		{"loopback lookalike", "", func(q url.Values) { q.Set("redirect_uri", "http://127.0.0.1.evil.example/cb") }, 400, ""},
		{"loopback with user info", "", func(q url.Values) { q.Set("redirect_uri", "http://evil.example@127.0.0.1/cb") }, 400, ""},
		{"loopback with fragment", "", func(q url.Values) { q.Set("redirect_uri", "http://127.0.0.1/cb#x") }, 400, ""},
		{"configured uri with suffix", "", func(q url.Values) { q.Set("redirect_uri", configuredCB+"/x") }, 400, ""},
		{"response_type token", "", func(q url.Values) { q.Set("response_type", "token") }, 0, "unsupported_response_type"},
		{"no openid scope", "", func(q url.Values) { q.Set("scope", "email") }, 0, "invalid_scope"},
		{"missing state", "", func(q url.Values) { q.Del("state") }, 0, "invalid_request"},
		{"missing code_challenge", "", func(q url.Values) { q.Del("code_challenge") }, 0, "invalid_request"},
		{"plain pkce", "", func(q url.Values) { q.Set("code_challenge_method", "plain") }, 0, "invalid_request"},
		{"default pkce method is plain", "", func(q url.Values) { q.Del("code_challenge_method") }, 0, "invalid_request"},
		{"malformed challenge", "", func(q url.Values) { q.Set("code_challenge", "short") }, 0, "invalid_request"},
		{"repeated scope", "", func(q url.Values) { q.Add("scope", "openid") }, 0, "invalid_request"},
		{"unknown login_hint", "", func(q url.Values) { q.Set("login_hint", "eve@vendor.test") }, 0, "access_denied"},
		{"prompt none", "", func(q url.Values) { q.Set("prompt", "none") }, 0, "login_required"},
		{"unknown email", "POST", func(q url.Values) { q.Set("email", "eve@vendor.test") }, 400, ""},
		{"acme user on vendor", "POST", func(q url.Values) { q.Set("email", "carol@acme.test") }, 400, ""},
		{"cancel", "POST", func(q url.Values) { q.Set("action", "deny") }, 0, "access_denied"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := authorizeQuery(cliClient, loopbackCB, challenge)
			tt.edit(q)
			authz := f.idp.IssuerURL("vendor") + "/authorize"
			var resp *http.Response
			var body string
			if tt.method == "POST" {
				resp, body = f.postForm(authz, q, nil)
			} else {
				resp, body = f.get(authz + "?" + q.Encode())
			}
			if tt.wantPage != 0 {
				if resp.StatusCode != tt.wantPage || resp.Header.Get("Location") != "" || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
					t.Errorf("authorize(%s) = %d, Location %q, want an HTML %d page and no redirect",
						tt.name, resp.StatusCode, resp.Header.Get("Location"), tt.wantPage)
				}
				if strings.Contains(body, "code=") {
					t.Errorf("authorize(%s) page mentions a code:\n%s", tt.name, body)
				}
				return
			}
			p := redirectParams(t, resp, loopbackCB)
			if p.Get("error") != tt.wantErr || p.Get("error_description") == "" || p.Get("code") != "" {
				t.Errorf("authorize(%s) redirect = %v, want error %s with a description and no code", tt.name, p, tt.wantErr)
			}
			if want := q.Get("state"); len(q["state"]) == 1 && p.Get("state") != want {
				t.Errorf("authorize(%s) state = %q, want %q", tt.name, p.Get("state"), want)
			}
		})
	}
}

// TestLoopbackRedirects checks which redirect URIs are accepted without
// configuration.
func TestLoopbackRedirects(t *testing.T) {
	f := newFixture(t, false, nil)
	challenge := oauth2.S256ChallengeFromVerifier(oauth2.GenerateVerifier())
	for _, uri := range []string{
		"http://127.0.0.1/cb", "http://127.0.0.1:49152/cb", "http://[::1]:8080/callback",
		"http://localhost:1234/", "http://127.0.0.1:9/cb?keep=1", configuredCB,
	} {
		code := f.login("vendor", "ada@vendor.test", authorizeQuery(cliClient, uri, challenge))
		if code == "" {
			t.Errorf("login with redirect %q issued no code", uri)
		}
	}
}

func TestScopesGranted(t *testing.T) {
	f := newFixture(t, false, nil)
	verifier := oauth2.GenerateVerifier()
	q := authorizeQuery(cliClient, loopbackCB, oauth2.S256ChallengeFromVerifier(verifier))
	q.Set("scope", "openid openid weird groups")
	code := f.login("vendor", "ada@vendor.test", q)
	tok, status, body := exchange(f, "vendor", url.Values{"client_id": {cliClient}, "code": {code},
		"redirect_uri": {loopbackCB}, "code_verifier": {verifier}})
	if status != http.StatusOK || tok.Scope != "openid groups" {
		t.Errorf("exchange = %d %s, want scope %q", status, body, "openid groups")
	}
	if !slices.Contains(strings.Fields(tok.Scope), "openid") {
		t.Errorf("scope %q lacks openid", tok.Scope)
	}
}
