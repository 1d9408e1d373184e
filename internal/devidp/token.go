package devidp

import (
	"crypto/rand"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"
)

const deviceGrantType = "urn:ietf:params:oauth:grant-type:device_code"

// oauthError is an RFC 6749 §5.2 error response.
type oauthError struct {
	status int
	code   string
	desc   string
}

func (e *oauthError) Error() string { return e.code + ": " + e.desc }

func badRequest(code, format string, args ...any) *oauthError {
	return &oauthError{status: http.StatusBadRequest, code: code, desc: fmt.Sprintf(format, args...)}
}

func invalidClient(format string, args ...any) *oauthError {
	return &oauthError{status: http.StatusUnauthorized, code: "invalid_client", desc: fmt.Sprintf(format, args...)}
}

func (is *issuer) writeOAuthError(w http.ResponseWriter, e *oauthError) {
	if e.status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", fmt.Sprintf("Basic realm=%q", is.url))
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, e.status, map[string]string{"error": e.code, "error_description": e.desc})
}

// tokenResponse is an RFC 6749 §5.1 response with an OpenID Connect ID
// token.
type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	IDToken      string `json:"id_token"`
	RefreshToken string `json:"refresh_token"`
	Scope        string `json:"scope"`
}

func (is *issuer) serveToken(w http.ResponseWriter, r *http.Request) {
	resp, oe := is.token(w, r)
	if oe != nil {
		is.writeOAuthError(w, oe)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	writeJSON(w, http.StatusOK, resp)
}

// readClientForm reads a token or device authorization request: a
// bounded form from a known public client.
func (is *issuer) readClientForm(w http.ResponseWriter, r *http.Request) (*params, string, *oauthError) {
	// Clients here are public (token_endpoint_auth_method none), so
	// credentials in a header are refused before the request is looked
	// at. golang.org/x/oauth2's auth-style autodetection relies on this:
	// it retries at once with client_id in the form, and the refused
	// attempt must not count as a use of a code or as a device poll.
	if r.Header.Get("Authorization") != "" {
		return nil, "", invalidClient("clients of this issuer are public: send client_id in the form and no Authorization header")
	}
	vals, err := readForm(w, r)
	if err != nil {
		return nil, "", badRequest("invalid_request", "%v", err)
	}
	ps := &params{v: vals}
	clientID := ps.get("client_id")
	switch {
	case ps.err != nil:
		return nil, "", badRequest("invalid_request", "%v", ps.err)
	case clientID == "":
		return nil, "", badRequest("invalid_request", "client_id is missing")
	case !is.clients[clientID]:
		return nil, "", invalidClient("client_id %q is not a client of issuer %q", clientID, is.name)
	}
	return ps, clientID, nil
}

func (is *issuer) token(w http.ResponseWriter, r *http.Request) (*tokenResponse, *oauthError) {
	ps, clientID, oe := is.readClientForm(w, r)
	if oe != nil {
		return nil, oe
	}
	switch gt := ps.get("grant_type"); gt {
	case "authorization_code":
		return is.codeGrant(ps, clientID)
	case "refresh_token":
		return is.refreshGrant(ps, clientID)
	case deviceGrantType:
		return is.deviceGrant(ps, clientID)
	case "":
		if ps.err != nil {
			return nil, badRequest("invalid_request", "%v", ps.err)
		}
		return nil, badRequest("invalid_request", "grant_type is missing")
	default:
		return nil, badRequest("unsupported_grant_type", "grant_type %q is not supported; use authorization_code, refresh_token or %s", gt, deviceGrantType)
	}
}

func (is *issuer) codeGrant(ps *params, clientID string) (*tokenResponse, *oauthError) {
	code, redirectURI, verifier := ps.get("code"), ps.get("redirect_uri"), ps.get("code_verifier")
	switch {
	case ps.err != nil:
		return nil, badRequest("invalid_request", "%v", ps.err)
	case code == "":
		return nil, badRequest("invalid_request", "code is missing")
	}
	now := is.p.now()
	// The code is spent by any attempt that names it, good or bad.
	is.mu.Lock()
	ac, ok := is.codes.take(now, secretKey(code))
	is.mu.Unlock()
	switch {
	case !ok:
		return nil, badRequest("invalid_grant", "code is unknown, expired or already used")
	case ac.clientID != clientID:
		return nil, badRequest("invalid_grant", "code was issued to another client")
	case ac.redirectURI != redirectURI:
		return nil, badRequest("invalid_grant", "redirect_uri does not match the authorization request's")
	case verifier == "":
		return nil, badRequest("invalid_grant", "code_verifier is missing (PKCE is required)")
	case !isCodeVerifier(verifier) || !verifierMatches(verifier, ac.challenge):
		return nil, badRequest("invalid_grant", "code_verifier does not match the code_challenge")
	}
	return is.issueTokens(ac.grant, now)
}

func (is *issuer) refreshGrant(ps *params, clientID string) (*tokenResponse, *oauthError) {
	rt, scope := ps.get("refresh_token"), ps.get("scope")
	switch {
	case ps.err != nil:
		return nil, badRequest("invalid_request", "%v", ps.err)
	case rt == "":
		return nil, badRequest("invalid_request", "refresh_token is missing")
	}
	now := is.p.now()
	// Refresh tokens rotate: this one is spent whatever happens next.
	is.mu.Lock()
	g, ok := is.refresh.take(now, secretKey(rt))
	is.mu.Unlock()
	switch {
	case !ok:
		return nil, badRequest("invalid_grant", "refresh token is unknown, expired or already used")
	case g.clientID != clientID:
		return nil, badRequest("invalid_grant", "refresh token was issued to another client")
	}
	ng := *g
	ng.nonce = "" // OpenID Connect Core §12.2: no nonce on refresh
	if scope != "" {
		have := strings.Fields(g.scope)
		for _, s := range strings.Fields(scope) {
			if !slices.Contains(have, s) {
				return nil, badRequest("invalid_scope", "scope %q was not granted to this refresh token", s)
			}
		}
		ng.scope = grantedScope(scope)
	}
	return is.issueTokens(ng, now)
}

// issueTokens mints an ID token, an opaque access token and a new
// refresh token for g.
func (is *issuer) issueTokens(g grant, now time.Time) (*tokenResponse, *oauthError) {
	u, ok := is.byEmail[g.email]
	if !ok { // users never change after New
		return nil, &oauthError{status: http.StatusInternalServerError, code: "server_error", desc: "dev user vanished"}
	}
	access := rand.Text()
	idt, err := is.idToken(u, g.clientID, g.nonce, access, g.authTime, now)
	if err != nil {
		return nil, &oauthError{status: http.StatusInternalServerError, code: "server_error", desc: err.Error()}
	}
	refresh := rand.Text()
	rg := g
	rg.nonce = ""
	is.mu.Lock()
	is.refresh.put(now, secretKey(refresh), &rg)
	is.mu.Unlock()
	return &tokenResponse{
		AccessToken:  access,
		TokenType:    "Bearer",
		ExpiresIn:    int64(is.p.ttl / time.Second),
		IDToken:      idt,
		RefreshToken: refresh,
		Scope:        g.scope,
	}, nil
}
