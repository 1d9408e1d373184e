package brokercli

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/cli"
	"github.com/tetherhq/tether/internal/config"
)

type loginCmd struct {
	clientFlags
	APIURL  string        `name:"api-url" placeholder:"URL" help:"broker API URL, when the CLI config does not exist yet"`
	Issuer  string        `placeholder:"NAME" help:"identity provider to sign in with, as the broker names it (default: the vendor's)"`
	DevUser string        `name:"dev-user" placeholder:"EMAIL" help:"dev brokers only: log in as this built-in user, e.g. approver@acme.test"`
	Timeout time.Duration `default:"10m" help:"how long to wait for you to finish signing in"`
}

func (loginCmd) Help() string {
	return `Signs you in with an identity provider the broker trusts and keeps your
tokens in the CLI config (mode 0600). Vendor staff use the vendor issuer
(the default); a customer's approvers pick their company's issuer with
--issuer. Where the provider offers the device flow (RFC 8628) you get a
URL and a code to enter; otherwise a browser login redirects back to a
one-off listener on 127.0.0.1.

--dev-user EMAIL logs in a dev broker's built-in user at once (dev brokers
only); its tokens are checked exactly like any other.

Without an existing CLI config, give --api-url; the config is written to
--config, $TETHER_CONFIG or ~/.config/tether/cli.json.`
}

// idpTimeout bounds each request to an identity provider.
const idpTimeout = 15 * time.Second

func (cmd *loginCmd) Run(e *env) error {
	ctx, stdout, stderr := e.ctx, e.stdout, e.stderr
	apiURL, issuerName, devUser := &cmd.APIURL, &cmd.Issuer, &cmd.DevUser
	path := configPath(cmd.Config)
	var cfg config.CLI
	switch err := loadCLIConfigFile(path, &cfg); {
	case err == nil:
		if *apiURL != "" && *apiURL != cfg.APIURL {
			cfg = config.CLI{APIURL: *apiURL, CAFile: cfg.CAFile}
		}
	case errors.Is(err, os.ErrNotExist) && *apiURL != "":
		cfg = config.CLI{APIURL: *apiURL}
	case errors.Is(err, os.ErrNotExist):
		return cli.Usagef("broker login: no CLI config at %s: give --api-url https://BROKER (or --config FILE)", path)
	default:
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, cmd.Timeout)
	defer cancel()

	anon, err := brokerapi.NewAnonymousClient(cfg.APIURL, cfg.CAFile)
	if err != nil {
		return err
	}
	ac, err := authConfig(ctx, anon, *issuerName, *devUser)
	if err != nil {
		return err
	}
	is, err := pickIssuer(ac, *issuerName, *devUser, cfg.APIURL)
	if err != nil {
		return err
	}

	octx, hc, oc, err := oauthClient(ctx, is)
	if err != nil {
		return err
	}

	var tok *oauth2.Token
	if oc.Endpoint.DeviceAuthURL != "" {
		tok, err = deviceLogin(octx, oc, *devUser, "", hc, stderr)
	} else {
		if *devUser != "" {
			return fmt.Errorf("--dev-user: issuer %s offers no device flow, so a dev user cannot be logged in without a browser", is.Name)
		}
		tok, err = loopbackLogin(octx, oc, "", stderr)
	}
	if err != nil {
		return err
	}
	idTok, _ := tok.Extra("id_token").(string)
	if idTok == "" {
		return fmt.Errorf("issuer %s returned no ID token: it must be an OpenID Connect provider and the scopes must include openid", is.Name)
	}
	l := &config.Login{
		Issuer: is.Name, IssuerURL: is.IssuerURL, ClientID: is.ClientID,
		IDToken: idTok, RefreshToken: tok.RefreshToken, Expiry: tokenExpiry(idTok),
	}
	// The broker has the last word: a login it refuses is not kept.
	cfg.Login = l
	c, err := brokerapi.NewClient(cfg)
	if err != nil {
		return err
	}
	who, err := c.Whoami(ctx)
	if err != nil {
		return fmt.Errorf("the broker refused the login: %w", err)
	}
	l.Subject, l.Email, l.Tenant = who.Subject, who.Email, who.Tenant
	if *devUser != "" {
		l.DevUser = who.Email
	}
	if err := saveCLIConfig(path, cfg); err != nil {
		return err
	}
	name := who.Subject
	if who.Email != "" {
		name = who.Email
	}
	fmt.Fprintf(stdout, "Logged in as %s (issuer %s, %s, roles %s). The token expires %s; the CLI renews it while the login lasts.\n",
		name, who.IssuerName, tenantText(who.Tenant), strings.Join(who.Roles, ", "), l.Expiry.Local().Format(time.RFC3339))
	return nil
}

// authConfig asks the broker how to sign in with the issuer named (the
// vendor's when none is). The broker names no other issuer, so on a dev
// broker a dev user's own issuer is asked for once the first answer says
// which it is.
func authConfig(ctx context.Context, anon *brokerapi.Client, issuer, devUser string) (brokerapi.AuthConfig, error) {
	what := "the vendor's identity provider"
	if issuer != "" {
		what = "identity provider " + issuer
	}
	ac, err := anon.AuthConfig(ctx, issuer)
	var ae *brokerapi.Error
	if errors.As(err, &ae) && ae.Code == "unknown_issuer" {
		return ac, cli.Usagef("--issuer %q: the broker has no identity provider by that name; ask the broker's operator which name to give", issuer)
	}
	if err != nil {
		return ac, fmt.Errorf("ask the broker how to sign in with %s: %w", what, err)
	}
	if issuer != "" || devUser == "" || !ac.Dev {
		return ac, nil
	}
	for _, u := range ac.DevUsers {
		if !strings.EqualFold(u.Email, devUser) {
			continue
		}
		for _, is := range ac.Issuers {
			if is.Name == u.Issuer {
				return ac, nil
			}
		}
		more, err := anon.AuthConfig(ctx, u.Issuer)
		if err != nil {
			return ac, fmt.Errorf("ask the broker how to sign in with identity provider %s: %w", u.Issuer, err)
		}
		ac.Issuers = append(ac.Issuers, more.Issuers...)
		return ac, nil
	}
	return ac, nil
}

func tenantText(t string) string {
	if t == "" {
		return "vendor"
	}
	return "tenant " + t
}

// pickIssuer chooses the issuer to log in with.
func pickIssuer(ac brokerapi.AuthConfig, name, devUser, apiURL string) (brokerapi.AuthIssuer, error) {
	names := make([]string, 0, len(ac.Issuers))
	for _, is := range ac.Issuers {
		names = append(names, is.Name)
	}
	if devUser != "" {
		if !ac.Dev {
			return brokerapi.AuthIssuer{}, cli.Usagef("--dev-user works only against a dev broker ('broker serve --dev'); the broker at %s is not one: run 'broker login' without it", apiURL)
		}
		var users []string
		for _, u := range ac.DevUsers {
			users = append(users, u.Email)
			if strings.EqualFold(u.Email, devUser) {
				if name != "" && name != u.Issuer {
					return brokerapi.AuthIssuer{}, cli.Usagef("--dev-user %s belongs to issuer %s, not %s", devUser, u.Issuer, name)
				}
				name = u.Issuer
			}
		}
		if name == "" {
			return brokerapi.AuthIssuer{}, cli.Usagef("--dev-user %q: no such dev user; the dev broker has %s", devUser, strings.Join(users, ", "))
		}
	}
	for _, is := range ac.Issuers {
		if is.Name == name || (name == "" && is.Tenant == "") {
			return is, nil
		}
	}
	if name == "" {
		return brokerapi.AuthIssuer{}, errors.New("the broker names no vendor identity provider: a customer's approver signs in with --issuer NAME (the broker's operator tells you the name)")
	}
	return brokerapi.AuthIssuer{}, cli.Usagef("--issuer %q: the broker does not offer it (it answered for %s)", name, strings.Join(names, ", "))
}

type endpoints struct {
	oauth2.Endpoint
	provider *oidc.Provider
}

// oauthClient discovers issuer is and returns the CLI's OAuth 2.0 client
// there (its client ID and scopes), the bounded HTTP client its calls
// use, and the context that carries that client to them.
func oauthClient(ctx context.Context, is brokerapi.AuthIssuer) (context.Context, *http.Client, *oauth2.Config, error) {
	// The token endpoint is sent the login's code and PKCE verifier, or
	// its refresh token: a redirect would carry them wherever it points.
	hc := &http.Client{Timeout: idpTimeout, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	octx := oidc.ClientContext(ctx, hc)
	ep, err := discover(octx, is)
	if err != nil {
		return nil, nil, nil, err
	}
	return octx, hc, &oauth2.Config{ClientID: is.ClientID, Endpoint: ep.Endpoint, Scopes: is.Scopes}, nil
}

// discover reads the issuer's discovery document.
func discover(ctx context.Context, is brokerapi.AuthIssuer) (endpoints, error) {
	p, err := oidc.NewProvider(ctx, is.IssuerURL)
	if err != nil {
		return endpoints{}, fmt.Errorf("identity provider %s (%s) is unreachable or not an OpenID Connect provider: %w", is.Name, is.IssuerURL, err)
	}
	var extra struct {
		Device string `json:"device_authorization_endpoint"`
	}
	p.Claims(&extra)
	ep := p.Endpoint()
	ep.DeviceAuthURL = extra.Device
	return endpoints{Endpoint: ep, provider: p}, nil
}

// deviceLogin runs the device authorization grant (RFC 8628), sending
// nonce when not empty. For a dev user it approves the request itself on
// the dev provider's verification page, as a person would in the browser.
func deviceLogin(ctx context.Context, oc *oauth2.Config, devUser, nonce string, hc *http.Client, stderr io.Writer) (*oauth2.Token, error) {
	var opts []oauth2.AuthCodeOption
	if nonce != "" {
		opts = append(opts, oidc.Nonce(nonce))
	}
	da, err := oc.DeviceAuth(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("start the device login: %w", err)
	}
	if devUser != "" {
		if err := approveDevDevice(ctx, hc, da, devUser); err != nil {
			return nil, err
		}
	} else {
		fmt.Fprintf(stderr, "To sign in, open %s and enter the code %s\n", da.VerificationURI, da.UserCode)
		if da.VerificationURIComplete != "" {
			fmt.Fprintf(stderr, "(or open %s)\n", da.VerificationURIComplete)
		}
	}
	return waitWithProgress(ctx, stderr, devUser == "", func(ctx context.Context) (*oauth2.Token, error) {
		tok, err := oc.DeviceAccessToken(ctx, da)
		var re *oauth2.RetrieveError
		switch {
		case errors.As(err, &re) && re.ErrorCode == "access_denied":
			return nil, errors.New("the sign-in was denied at the identity provider")
		case errors.As(err, &re) && re.ErrorCode == "expired_token":
			return nil, errors.New("the code expired before the sign-in finished: run 'broker login' again")
		case errors.Is(err, context.DeadlineExceeded):
			return nil, errors.New("timed out waiting for the sign-in: run 'broker login' again (or raise --timeout)")
		case err != nil:
			return nil, fmt.Errorf("device login: %w", err)
		}
		return tok, nil
	})
}

// approveDevDevice approves a device request on a dev provider's
// verification page as devUser.
func approveDevDevice(ctx context.Context, hc *http.Client, da *oauth2.DeviceAuthResponse, devUser string) error {
	form := url.Values{"user_code": {da.UserCode}, "email": {devUser}, "action": {"approve"}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, da.VerificationURI, strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	res, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("approve the dev login: %w", err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(res.Body, 4<<10))
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("the dev identity provider refused %s: %s", devUser, strings.TrimSpace(string(body)))
	}
	return nil
}

// waitWithProgress runs wait while showing how long it has been waiting.
func waitWithProgress(ctx context.Context, stderr io.Writer, show bool, wait func(context.Context) (*oauth2.Token, error)) (*oauth2.Token, error) {
	type result struct {
		tok *oauth2.Token
		err error
	}
	done := make(chan result, 1)
	go func() {
		tok, err := wait(ctx)
		done <- result{tok, err}
	}()
	tty := show && isTerminal(stderr)
	if show && !tty {
		fmt.Fprintln(stderr, "Waiting for you to sign in…")
	}
	start := time.Now()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case r := <-done:
			if tty {
				fmt.Fprint(stderr, "\r\033[K")
			}
			return r.tok, r.err
		case <-tick.C:
			if tty {
				fmt.Fprintf(stderr, "\rWaiting for you to sign in… %s ", time.Since(start).Round(time.Second))
			}
		}
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// loopbackLogin runs the authorization code flow with PKCE, the
// redirect going to a one-off listener on 127.0.0.1 (RFC 8252). The ID
// token must carry nonce; empty means a random one.
func loopbackLogin(ctx context.Context, oc *oauth2.Config, nonce string, stderr io.Writer) (*oauth2.Token, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen for the login redirect: %w", err)
	}
	defer ln.Close()
	cfg := *oc
	cfg.RedirectURL = "http://" + ln.Addr().String() + "/callback"
	state, verifier := randomString(), oauth2.GenerateVerifier()
	if nonce == "" {
		nonce = randomString()
	}
	authURL := cfg.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier), oidc.Nonce(nonce))

	type result struct {
		code string
		err  error
	}
	got := make(chan result, 1)
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/callback" {
			http.NotFound(w, r)
			return
		}
		q := r.URL.Query()
		var res result
		switch {
		case q.Get("error") != "":
			res.err = fmt.Errorf("the identity provider refused the sign-in: %s %s", q.Get("error"), q.Get("error_description"))
		case subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(state)) != 1:
			res.err = errors.New("the login redirect carried the wrong state (a stale or forged redirect); run 'broker login' again")
		default:
			res.code = q.Get("code")
		}
		if res.err != nil {
			http.Error(w, res.err.Error(), http.StatusBadRequest)
		} else {
			fmt.Fprintln(w, "Signed in. You can close this tab and return to the terminal.")
		}
		select {
		case got <- res:
		default:
		}
	})}
	go srv.Serve(ln)
	defer srv.Close()
	fmt.Fprintf(stderr, "To sign in, open this URL in a browser on this machine:\n\n    %s\n\n", authURL)
	tok, err := waitWithProgress(ctx, stderr, true, func(ctx context.Context) (*oauth2.Token, error) {
		select {
		case <-ctx.Done():
			return nil, errors.New("timed out waiting for the sign-in: run 'broker login' again (or raise --timeout)")
		case r := <-got:
			if r.err != nil {
				return nil, r.err
			}
			return cfg.Exchange(ctx, r.code, oauth2.VerifierOption(verifier))
		}
	})
	if err != nil {
		return nil, err
	}
	idTok, _ := tok.Extra("id_token").(string)
	if claimString(idTok, "nonce") != nonce {
		return nil, errors.New("the ID token does not carry this login's nonce (a replayed token?); run 'broker login' again")
	}
	return tok, nil
}

func randomString() string {
	var b [32]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// jwtClaims reads the claims of a JWT without verifying it; the broker
// verifies every token it is sent. A malformed token has no claims.
func jwtClaims(jwt string) map[string]any {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return nil
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil
	}
	var claims map[string]any
	if json.Unmarshal(payload, &claims) != nil {
		return nil
	}
	return claims
}

// claimString reads a string claim of a JWT without verifying it.
func claimString(jwt, name string) string {
	s, _ := jwtClaims(jwt)[name].(string)
	return s
}

// tokenExpiry reads the exp claim of a JWT without verifying it.
func tokenExpiry(jwt string) time.Time {
	exp, ok := jwtClaims(jwt)["exp"].(float64)
	if !ok {
		return time.Time{}
	}
	return time.Unix(int64(exp), 0)
}

// refreshLogin renews the login's ID token when it expires within a
// minute, and saves the result.
func refreshLogin(ctx context.Context, path string, cfg *config.CLI) error {
	l := cfg.Login
	if l == nil || time.Until(l.Expiry) > time.Minute {
		return nil
	}
	if l.RefreshToken == "" {
		return fmt.Errorf("your login (%s at %s) expired at %s and the issuer gave no refresh token: run 'broker login' again", l.Email, l.Issuer, l.Expiry.Local().Format(time.RFC3339))
	}
	octx, _, oc, err := oauthClient(ctx, brokerapi.AuthIssuer{Name: l.Issuer, IssuerURL: l.IssuerURL, ClientID: l.ClientID})
	if err != nil {
		return fmt.Errorf("renew your login: %w", err)
	}
	tok, err := oc.TokenSource(octx, &oauth2.Token{RefreshToken: l.RefreshToken, Expiry: time.Unix(1, 0)}).Token()
	if err != nil {
		return fmt.Errorf("your login expired and could not be renewed (%v): run 'broker login' again", err)
	}
	idTok, _ := tok.Extra("id_token").(string)
	if idTok == "" {
		return errors.New("the issuer renewed the login without an ID token: run 'broker login' again")
	}
	l.IDToken, l.Expiry = idTok, tokenExpiry(idTok)
	if tok.RefreshToken != "" {
		l.RefreshToken = tok.RefreshToken
	}
	return saveCLIConfig(path, *cfg)
}

type logoutCmd struct {
	clientFlags
}

func (logoutCmd) Help() string {
	return `Removes your login's tokens from the CLI config. (On a dev broker the CLI
then falls back to the bootstrap admin token in the same file.)`
}

func (c *logoutCmd) Run(e *env) error {
	stdout := e.stdout
	path := configPath(c.Config)
	var cfg config.CLI
	if err := loadCLIConfigFile(path, &cfg); err != nil {
		return err
	}
	if cfg.Login == nil {
		fmt.Fprintf(stdout, "Not logged in (%s holds no login).\n", path)
		return nil
	}
	who := cfg.Login.Email
	if who == "" {
		who = cfg.Login.Subject
	}
	cfg.Login = nil
	if err := saveCLIConfig(path, cfg); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Logged out %s: removed the tokens from %s.\n", who, path)
	return nil
}

type whoamiCmd struct {
	clientFlags
	outputFlag
}

func (whoamiCmd) Help() string {
	return "Shows who the broker takes you for: subject, issuer, tenant and roles."
}

func (cmd *whoamiCmd) Run(e *env) error {
	ctx, stdout := e.ctx, e.stdout
	if err := cmd.check(); err != nil {
		return err
	}
	c, err := cmd.client(ctx)
	if err != nil {
		return err
	}
	w, err := c.Whoami(ctx)
	if err != nil {
		return err
	}
	if cmd.json() {
		return printJSON(stdout, w)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "Subject:\t%s\n", w.Subject)
	if w.Email != "" {
		fmt.Fprintf(tw, "Email:\t%s\n", w.Email)
	}
	fmt.Fprintf(tw, "Issuer:\t%s\n", strings.TrimSpace(w.IssuerName+" "+parenthesised(w.Issuer)))
	fmt.Fprintf(tw, "Tenant:\t%s\n", orDash(w.Tenant))
	fmt.Fprintf(tw, "Roles:\t%s\n", strings.Join(w.Roles, ", "))
	if len(w.Groups) > 0 {
		fmt.Fprintf(tw, "Groups:\t%s\n", strings.Join(w.Groups, ", "))
	}
	if w.GitHubLogin != "" {
		fmt.Fprintf(tw, "GitHub:\t%s\n", w.GitHubLogin)
	}
	if len(w.GitHubTeams) > 0 {
		fmt.Fprintf(tw, "GitHub teams:\t%s\n", strings.Join(w.GitHubTeams, ", "))
	}
	if w.GitHubError != "" {
		fmt.Fprintf(tw, "GitHub teams:\tunknown (%s)\n", w.GitHubError)
	}
	if !w.Expiry.IsZero() {
		fmt.Fprintf(tw, "Token expires:\t%s\n", w.Expiry.Local().Format(time.RFC3339))
	}
	return tw.Flush()
}

func parenthesised(s string) string {
	if s == "" {
		return ""
	}
	return "(" + s + ")"
}

// configPath is --config, else $TETHER_CONFIG, else the user's
// ~/.config/tether/cli.json.
func configPath(flagVal string) string {
	if flagVal != "" {
		return flagVal
	}
	if p := os.Getenv("TETHER_CONFIG"); p != "" {
		return p
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return "cli.json"
	}
	return filepath.Join(dir, "tether", "cli.json")
}

// loadCLIConfigFile reads the CLI config at path; a missing file is an
// error wrapping os.ErrNotExist.
func loadCLIConfigFile(path string, cfg *config.CLI) error {
	return config.Load(path, cfg)
}

func saveCLIConfig(path string, cfg config.CLI) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(path), err)
	}
	return config.Write(path, cfg, 0o600)
}
