package devidp

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// grant is what tokens are issued for: who logged in, to which client,
// with which scopes.
type grant struct {
	clientID string
	email    string
	scope    string // granted scopes, space separated
	nonce    string // echoed in the first ID token only
	authTime time.Time
}

// authCode is a pending authorization code.
type authCode struct {
	grant
	redirectURI string
	challenge   string // S256 code_challenge
}

// authRequest holds the parameters of an authorization request.
type authRequest struct {
	clientID     string
	redirectURI  string
	responseType string
	scope        string
	state        string
	challenge    string
	method       string
	nonce        string
	loginHint    string
	prompt       string
}

// authParams are the parameters an authorization request carries from
// the login page's GET to its POST.
var authParams = []string{"client_id", "redirect_uri", "response_type", "scope", "state",
	"code_challenge", "code_challenge_method", "nonce"}

func (is *issuer) serveAuthorize(w http.ResponseWriter, r *http.Request) {
	var vals url.Values
	var err error
	if r.Method == http.MethodPost {
		vals, err = readForm(w, r)
	} else {
		vals, err = readQuery(r)
	}
	if err != nil {
		is.errorPage(w, http.StatusBadRequest, "Bad authorization request", err.Error())
		return
	}

	// Until client_id and redirect_uri are known good, errors go to a
	// page: redirecting to an unvalidated URI would make this an open
	// redirector.
	ps := params{v: vals}
	ar := authRequest{clientID: ps.get("client_id"), redirectURI: ps.get("redirect_uri")}
	if ps.err == nil {
		ps.err = is.checkClient(ar.clientID, ar.redirectURI)
	}
	if ps.err != nil {
		is.errorPage(w, http.StatusBadRequest, "Bad authorization request", ps.err.Error())
		return
	}

	// state first, so that it is echoed even if a later parameter is bad.
	ar.state = ps.get("state")
	ar.responseType = ps.get("response_type")
	ar.scope = ps.get("scope")
	ar.challenge = ps.get("code_challenge")
	ar.method = ps.get("code_challenge_method")
	ar.nonce = ps.get("nonce")
	ar.loginHint = ps.get("login_hint")
	ar.prompt = ps.get("prompt")
	action := ps.get("action")
	email := ps.get("email")
	if ps.err != nil {
		is.redirectError(w, r, ar, "invalid_request", ps.err.Error())
		return
	}
	if code, desc := ar.check(); code != "" {
		is.redirectError(w, r, ar, code, desc)
		return
	}

	switch {
	case r.Method == http.MethodPost && action == "deny":
		is.redirectError(w, r, ar, "access_denied", "the dev user cancelled the login")
	case r.Method == http.MethodPost:
		u, ok := is.byEmail[email]
		if !ok {
			is.loginPage(w, http.StatusBadRequest, ar, fmt.Sprintf("There is no dev user %q; pick one below.", email))
			return
		}
		is.issueCode(w, r, ar, u)
	case ar.loginHint != "":
		u, ok := is.byEmail[ar.loginHint]
		if !ok {
			is.redirectError(w, r, ar, "access_denied", fmt.Sprintf("login_hint %q names no dev user of issuer %q", ar.loginHint, is.name))
			return
		}
		is.issueCode(w, r, ar, u)
	case slices.Contains(strings.Fields(ar.prompt), "none"):
		is.redirectError(w, r, ar, "login_required", "prompt=none needs a login_hint naming a dev user")
	default:
		is.loginPage(w, http.StatusOK, ar, "")
	}
}

// checkClient reports whether clientID is one of the issuer's clients
// and redirectURI one it may redirect to.
func (is *issuer) checkClient(clientID, redirectURI string) error {
	switch {
	case clientID == "":
		return errors.New("client_id is missing")
	case !is.clients[clientID]:
		return fmt.Errorf("client_id %q is not a client of issuer %q", clientID, is.name)
	case redirectURI == "":
		return errors.New("redirect_uri is missing")
	case !is.p.redirect[redirectURI] && !isLoopbackRedirect(redirectURI):
		return fmt.Errorf("redirect_uri %q is neither an http loopback URI nor one of the configured redirect URIs", redirectURI)
	}
	return nil
}

// check validates what is left of an authorization request once its
// client and redirect URI are known good, returning an RFC 6749
// §4.1.2.1 error code and description.
func (ar authRequest) check() (code, desc string) {
	switch {
	case ar.responseType != "code":
		return "unsupported_response_type", "response_type must be code"
	case !slices.Contains(strings.Fields(ar.scope), "openid"):
		return "invalid_scope", "scope must include openid"
	case ar.state == "":
		return "invalid_request", "state is required"
	case ar.challenge == "":
		return "invalid_request", "code_challenge is required (PKCE with S256)"
	case ar.method != "S256":
		return "invalid_request", fmt.Sprintf("code_challenge_method %q is not supported; use S256", ar.method)
	case !isS256Challenge(ar.challenge):
		return "invalid_request", "code_challenge must be the 43-character base64url SHA-256 of the code_verifier"
	}
	return "", ""
}

func (is *issuer) issueCode(w http.ResponseWriter, r *http.Request, ar authRequest, u *user) {
	now := is.p.now()
	code := rand.Text()
	ac := &authCode{
		grant: grant{
			clientID: ar.clientID,
			email:    u.email,
			scope:    grantedScope(ar.scope),
			nonce:    ar.nonce,
			authTime: now,
		},
		redirectURI: ar.redirectURI,
		challenge:   ar.challenge,
	}
	is.mu.Lock()
	is.codes.put(now, secretKey(code), ac)
	is.mu.Unlock()
	is.redirect(w, r, ar, url.Values{"code": {code}})
}

// redirectError sends an RFC 6749 §4.1.2.1 error response to the
// request's validated redirect URI.
func (is *issuer) redirectError(w http.ResponseWriter, r *http.Request, ar authRequest, code, desc string) {
	is.redirect(w, r, ar, url.Values{"error": {code}, "error_description": {desc}})
}

// redirect sends the user agent back to ar.redirectURI with params,
// state and iss (RFC 9207) added to its query.
func (is *issuer) redirect(w http.ResponseWriter, r *http.Request, ar authRequest, params url.Values) {
	u, err := url.Parse(ar.redirectURI)
	if err != nil { // checked by checkClient
		is.errorPage(w, http.StatusBadRequest, "Bad authorization request", "redirect_uri does not parse")
		return
	}
	q := u.Query()
	for k, v := range params {
		q[k] = v
	}
	if ar.state != "" {
		q.Set("state", ar.state)
	}
	q.Set("iss", is.url)
	u.RawQuery = q.Encode()
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	http.Redirect(w, r, u.String(), http.StatusSeeOther)
}

// grantedScope returns the supported scopes of a requested scope
// string, in request order without repeats.
func grantedScope(requested string) string {
	var out []string
	for _, s := range strings.Fields(requested) {
		if slices.Contains(supportedScopes, s) && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return strings.Join(out, " ")
}

// checkRedirectURI validates a configured redirect URI.
func checkRedirectURI(raw string) error {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return fmt.Errorf("%q does not parse: %w", raw, err)
	case !u.IsAbs():
		return fmt.Errorf("%q is not an absolute URI", raw)
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return fmt.Errorf("%q has a fragment (RFC 6749 §3.1.2)", raw)
	case u.User != nil:
		return fmt.Errorf("%q carries user info", raw)
	}
	return nil
}

// isLoopbackRedirect reports whether raw is an http redirect URI to a
// loopback host on any port (RFC 8252 §7.3, plus localhost).
func isLoopbackRedirect(raw string) bool {
	if len(raw) > maxParamBytes {
		return false
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "http" || u.User != nil || u.Fragment != "" || strings.Contains(raw, "#") || u.Opaque != "" {
		return false
	}
	host, port := u.Hostname(), u.Port()
	if port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || strings.TrimLeft(port, "0123456789") != "" {
			return false
		}
	}
	// u.Host must be exactly host[:port]: no empty port, no zone.
	want := host
	if strings.Contains(host, ":") {
		want = "[" + host + "]"
	}
	if port != "" {
		want += ":" + port
	}
	if u.Host != want {
		return false
	}
	return host == "127.0.0.1" || host == "::1" || host == "localhost"
}

// isS256Challenge reports whether s looks like base64url(SHA-256(x)).
func isS256Challenge(s string) bool {
	if len(s) != 43 {
		return false
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	return err == nil && len(b) == sha256.Size
}

// isCodeVerifier reports whether s is an RFC 7636 §4.1 code_verifier.
func isCodeVerifier(s string) bool {
	if len(s) < 43 || len(s) > 128 {
		return false
	}
	for _, c := range s {
		if !isUnreserved(c) {
			return false
		}
	}
	return true
}

// verifierMatches reports, in constant time, whether verifier hashes to
// the S256 challenge.
func verifierMatches(verifier, challenge string) bool {
	h := sha256.Sum256([]byte(verifier))
	got := base64.RawURLEncoding.EncodeToString(h[:])
	return subtle.ConstantTimeCompare([]byte(got), []byte(challenge)) == 1
}

// params reads request parameters, refusing repeated (RFC 6749 §3.1)
// and oversized ones; the first problem sticks in err.
type params struct {
	v   url.Values
	err error
}

func (p *params) get(name string) string {
	vs := p.v[name]
	switch {
	case p.err != nil || len(vs) == 0:
		return ""
	case len(vs) > 1:
		p.err = fmt.Errorf("parameter %s is repeated", name)
		return ""
	case len(vs[0]) > maxParamBytes:
		p.err = fmt.Errorf("parameter %s is longer than %d bytes", name, maxParamBytes)
		return ""
	}
	return vs[0]
}

// readForm parses a bounded, url-encoded POST body.
func readForm(w http.ResponseWriter, r *http.Request) (url.Values, error) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	ct := r.Header.Get("Content-Type")
	if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/x-www-form-urlencoded" {
		return nil, fmt.Errorf("content type %q is not application/x-www-form-urlencoded", ct)
	}
	if err := r.ParseForm(); err != nil {
		return nil, fmt.Errorf("read form: %w", err)
	}
	return r.PostForm, nil
}

// readQuery parses a bounded query.
func readQuery(r *http.Request) (url.Values, error) {
	if len(r.URL.RawQuery) > maxQueryBytes {
		return nil, fmt.Errorf("query is longer than %d bytes", maxQueryBytes)
	}
	v, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, fmt.Errorf("read query: %w", err)
	}
	return v, nil
}
