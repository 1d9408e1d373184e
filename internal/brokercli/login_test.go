package brokercli

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/brokertest"
	"github.com/tetherhq/tether/internal/config"
)

// urlWriter captures the login URL the CLI prints for the user.
type urlWriter struct {
	mu   sync.Mutex
	buf  strings.Builder
	seen chan string
}

var loginURLRE = regexp.MustCompile(`https?://\S+/authorize\?\S+`)

func (w *urlWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if m := loginURLRE.FindString(w.buf.String()); m != "" && w.seen != nil {
		w.seen <- m
		w.seen = nil
	}
	return len(p), nil
}

// TestLoopbackLoginAndRefresh runs the browser login (authorization code
// with PKCE to a loopback redirect) against a real OIDC provider, with
// the test as the browser, then renews the login with its refresh token.
func TestLoopbackLoginAndRefresh(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	idp := brokertest.NewIdP(t)
	vendor := idp.Config.Issuers[0]
	is := brokerapi.AuthIssuer{Name: vendor.Name, IssuerURL: vendor.IssuerURL, ClientID: vendor.CLIClient(), Scopes: vendor.LoginScopes()}
	hc := &http.Client{Timeout: 10 * time.Second}
	octx := oidc.ClientContext(ctx, hc)
	ep, err := discover(octx, is)
	if err != nil {
		t.Fatal(err)
	}
	oc := &oauth2.Config{ClientID: is.ClientID, Endpoint: ep.Endpoint, Scopes: is.Scopes}

	seen := make(chan string, 1)
	w := &urlWriter{seen: seen}
	type result struct {
		tok *oauth2.Token
		err error
	}
	done := make(chan result, 1)
	go func() {
		tok, err := loopbackLogin(octx, oc, "", w)
		done <- result{tok, err}
	}()
	var loginURL string
	select {
	case loginURL = <-seen:
	case r := <-done:
		t.Fatalf("loopbackLogin returned before printing a URL: %v", r.err)
	}
	u, _ := url.Parse(loginURL)
	q := u.Query()
	for _, p := range []string{"state", "nonce", "code_challenge"} {
		if q.Get(p) == "" {
			t.Errorf("login URL %s lacks %s", loginURL, p)
		}
	}
	if q.Get("code_challenge_method") != "S256" || !strings.HasPrefix(q.Get("redirect_uri"), "http://127.0.0.1:") {
		t.Errorf("login URL %s: want S256 PKCE and a 127.0.0.1 redirect", loginURL)
	}
	// The "browser": the user picks engineer@vendor.test; the provider
	// redirects to the CLI's listener.
	q.Set("login_hint", "engineer@vendor.test")
	u.RawQuery = q.Encode()
	res, err := hc.Get(u.String())
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Errorf("callback page = %d, want 200", res.StatusCode)
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("loopbackLogin: %v", r.err)
	}
	idTok, _ := r.tok.Extra("id_token").(string)
	if claimString(idTok, "email") != "engineer@vendor.test" || r.tok.RefreshToken == "" {
		t.Fatalf("login gave id token for %q, refresh token %v; want engineer@vendor.test with a refresh token", claimString(idTok, "email"), r.tok.RefreshToken != "")
	}

	// An expiring login is renewed with the refresh token, and saved.
	path := filepath.Join(t.TempDir(), "cli.json")
	cfg := config.CLI{APIURL: "http://127.0.0.1:1", Login: &config.Login{
		Issuer: is.Name, IssuerURL: is.IssuerURL, ClientID: is.ClientID,
		IDToken: idTok, RefreshToken: r.tok.RefreshToken, Expiry: time.Now().Add(30 * time.Second),
	}}
	first := r.tok.RefreshToken
	if err := refreshLogin(ctx, path, &cfg); err != nil {
		t.Fatalf("refreshLogin: %v", err)
	}
	var saved config.CLI
	if err := config.Load(path, &saved); err != nil {
		t.Fatal(err)
	}
	if saved.Login == nil || saved.Login.IDToken == idTok || saved.Login.RefreshToken == first || time.Until(saved.Login.Expiry) < 5*time.Minute {
		t.Fatalf("after refresh the saved login = %+v, want a new ID token, a rotated refresh token and a later expiry", saved.Login)
	}
	// A fresh login is left alone; a used refresh token is refused with
	// advice.
	before := saved.Login.IDToken
	if err := refreshLogin(ctx, path, &saved); err != nil || saved.Login.IDToken != before {
		t.Errorf("refreshLogin(fresh) = %v, changed %v; want no refresh", err, saved.Login.IDToken != before)
	}
	stale := config.CLI{APIURL: cfg.APIURL, Login: &config.Login{Issuer: is.Name, IssuerURL: is.IssuerURL, ClientID: is.ClientID,
		IDToken: idTok, RefreshToken: first, Expiry: time.Now().Add(-time.Minute)}}
	if err := refreshLogin(ctx, path, &stale); err == nil || !strings.Contains(err.Error(), "run 'broker login' again") {
		t.Errorf("refreshLogin(used refresh token) = %v, want a refusal saying to log in again", err)
	}
	noRefresh := config.CLI{APIURL: cfg.APIURL, Login: &config.Login{Issuer: is.Name, IssuerURL: is.IssuerURL, ClientID: is.ClientID,
		IDToken: idTok, Expiry: time.Now().Add(-time.Minute)}}
	if err := refreshLogin(ctx, path, &noRefresh); err == nil || !strings.Contains(err.Error(), "gave no refresh token") {
		t.Errorf("refreshLogin(no refresh token) = %v, want 'gave no refresh token'", err)
	}
}

// TestLoopbackLoginRefusesForgedState: a redirect with another state (a
// stale tab, or a forged link) ends the login with a clear error.
func TestLoopbackLoginRefusesForgedState(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	oc := &oauth2.Config{ClientID: "c", Endpoint: oauth2.Endpoint{AuthURL: "http://127.0.0.1:1/authorize", TokenURL: "http://127.0.0.1:1/token"}}
	seen := make(chan string, 1)
	w := &urlWriter{seen: seen}
	done := make(chan error, 1)
	go func() {
		_, err := loopbackLogin(ctx, oc, "", w)
		done <- err
	}()
	u, _ := url.Parse(<-seen)
	redirect := u.Query().Get("redirect_uri")
	res, err := http.Get(redirect + "?code=x&state=forged")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusBadRequest {
		t.Errorf("forged callback = %d, want 400", res.StatusCode)
	}
	if err := <-done; err == nil || !strings.Contains(err.Error(), "wrong state") {
		t.Errorf("loopbackLogin(forged state) = %v, want a wrong-state error", err)
	}
}

// TestIdPRedirectNotFollowed: a token endpoint that answers with a
// redirect gets no second request carrying the code and PKCE verifier
// (or a refresh token) to wherever it points.
func TestIdPRedirectNotFollowed(t *testing.T) {
	var stolen atomic.Int32
	thief := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { stolen.Add(1) }))
	defer thief.Close()
	var issuer string
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/.well-known/openid-configuration":
			fmt.Fprintf(w, `{"issuer":%q,"authorization_endpoint":%q,"token_endpoint":%q,"jwks_uri":%q}`, issuer, issuer+"/auth", issuer+"/token", issuer+"/jwks")
		case "/token":
			http.Redirect(w, r, thief.URL+"/token", http.StatusTemporaryRedirect)
		default:
			http.NotFound(w, r)
		}
	}))
	defer idp.Close()
	issuer = idp.URL
	octx, _, oc, err := oauthClient(context.Background(), brokerapi.AuthIssuer{Name: "evil", IssuerURL: issuer, ClientID: "tether"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := oc.Exchange(octx, "the-code", oauth2.VerifierOption("the-verifier")); err == nil {
		t.Fatal("Exchange succeeded through a redirect")
	}
	if n := stolen.Load(); n != 0 {
		t.Fatalf("the redirect's target got %d requests carrying the code", n)
	}
}
