package weblogin

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/oauth2"

	"github.com/tetherhq/tether/internal/identity"
)

// maxFormSize bounds the logout form.
const maxFormSize = 64 << 10

// handleLogin starts a login: GET /auth/login?issuer=NAME&next=/ui/...
func (m *Manager) handleLogin(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	next := q.Get("next")
	if next == "" {
		next = DefaultNext
	} else if !safeNext(next) {
		writePage(w, http.StatusBadRequest, page{
			Title:   "Sign-in refused",
			Message: "The page to return to after signing in must be a path on this site, such as /ui/.",
			Links:   []link{{URL: loginURL(q.Get("issuer"), ""), Text: "Sign in and go to the start page"}},
		})
		return
	}
	name := q.Get("issuer")
	p, ok := m.byName[name]
	if name == "" && len(m.providers) == 1 {
		p, ok = m.providers[0], true
	}
	if !ok {
		m.writeChooser(w, name, next)
		return
	}
	ep, err := m.endpoint(r.Context(), p)
	if err != nil {
		m.log.Warn("identity provider discovery failed", "provider", p.cfg.Name, "err", truncate(err.Error(), 500))
		writePage(w, http.StatusBadGateway, page{
			Title:   "Identity provider unreachable",
			Message: fmt.Sprintf("Tether could not reach the identity provider %q to sign you in. It may be down or misconfigured; try again in a moment, and tell your Tether administrator if it persists.", p.cfg.Name),
			Links:   []link{{URL: loginURL(p.cfg.Name, next), Text: "Try again"}},
		})
		return
	}

	state, nonce := randomToken(), randomToken()
	pl := &pendingLogin{
		Provider:  p.cfg.Name,
		StateHash: hash(state),
		NonceHash: hash(nonce),
		Verifier:  oauth2.GenerateVerifier(),
		Next:      next,
	}
	id, err := m.putPending(r.Context(), pl)
	if err != nil {
		m.log.Error("store pending login", "provider", p.cfg.Name, "err", err)
		writePage(w, http.StatusServiceUnavailable, page{
			Title:   "Sign-in not started",
			Message: "Tether could not record the sign-in in its database. Try again in a moment, and tell your Tether administrator if it persists.",
			Links:   []link{{URL: loginURL(p.cfg.Name, next), Text: "Try again"}},
		})
		return
	}

	http.SetCookie(w, loginCookie(id, int(PendingLoginLifetime/time.Second)))
	authURL := m.oauth2Config(p, ep).AuthCodeURL(state,
		oauth2.SetAuthURLParam("nonce", nonce),
		oauth2.S256ChallengeOption(pl.Verifier))
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, authURL, http.StatusFound)
}

// writeChooser answers a login whose issuer parameter is missing (where
// several providers exist: 200) or names no provider (400) with links to
// the accepted ones.
func (m *Manager) writeChooser(w http.ResponseWriter, name, next string) {
	names := make([]string, len(m.providers))
	links := make([]link, len(m.providers))
	for i, p := range m.providers {
		names[i] = p.cfg.Name
		links[i] = link{URL: loginURL(p.cfg.Name, next), Text: "Sign in with " + p.cfg.Name}
	}
	status, msg := http.StatusOK, fmt.Sprintf("Choose an identity provider to sign in with; accepted issuers: %s.", strings.Join(names, ", "))
	if name != "" {
		status, msg = http.StatusBadRequest, fmt.Sprintf("Unknown issuer %q; accepted issuers: %s.", truncate(name, 100), strings.Join(names, ", "))
	}
	writePage(w, status, page{Title: "Choose how to sign in", Message: msg, Links: links})
}

func (m *Manager) oauth2Config(p *provider, ep endpoint) *oauth2.Config {
	style := oauth2.AuthStyleAutoDetect
	if p.cfg.ClientSecret == "" {
		// A public client authenticates with PKCE alone and names itself
		// in the body.
		style = oauth2.AuthStyleInParams
	}
	return &oauth2.Config{
		ClientID:     p.cfg.ClientID,
		ClientSecret: p.cfg.ClientSecret,
		Endpoint:     oauth2.Endpoint{AuthURL: ep.AuthURL, TokenURL: ep.TokenURL, AuthStyle: style},
		RedirectURL:  m.redirectURL,
		Scopes:       p.cfg.Scopes,
	}
}

// loginFailure is why a callback did not sign the user in.
type loginFailure struct {
	status    int
	reason    string // for the audit event and the log; no secrets
	page      page
	principal identity.Principal // zero before verification
}

// handleCallback completes a login: GET /auth/callback?code=…&state=…
func (m *Manager) handleCallback(w http.ResponseWriter, r *http.Request) {
	// The pending login is single use whatever happens next.
	pl, ok, err := m.takePending(r)
	http.SetCookie(w, loginCookie("", -1))
	if err != nil {
		m.log.Error("read pending login from the store", "err", err)
		writePage(w, http.StatusServiceUnavailable, page{
			Title:   "Sign-in not completed",
			Message: "Tether could not read the sign-in from its database. Try again in a moment, and tell your Tether administrator if it persists.",
			Links:   []link{{URL: LoginPath, Text: "Sign in again"}},
		})
		return
	}
	if !ok {
		m.fail(w, r, "", loginFailure{
			status: http.StatusBadRequest,
			reason: "no pending login: login cookie missing, expired or already used",
			page: page{
				Title:   "Sign-in expired",
				Message: "This sign-in was not started here, took longer than 10 minutes, or was already completed. Sign-in needs cookies enabled for this site.",
				Links:   []link{{URL: LoginPath, Text: "Sign in again"}},
			},
		})
		return
	}
	if pl.Ceremony != nil {
		m.finishCeremony(w, r, pl)
		return
	}
	name := pl.provider.cfg.Name
	p, f := m.complete(r, pl)
	if f != nil {
		f.page.Links = append(f.page.Links, link{URL: loginURL(name, pl.Next), Text: "Try again"})
		m.fail(w, r, name, *f)
		return
	}
	if err := m.emit(r, Event{Kind: EventLogin, Principal: p, Provider: name}); err != nil {
		m.log.Error("audit of login failed; login aborted", "provider", name, "subject", p.Subject, "err", err)
		writePage(w, http.StatusInternalServerError, page{
			Title:   "Sign-in not completed",
			Message: "Your identity was verified, but Tether could not record the sign-in in its audit log, so it did not sign you in. Try again in a moment, and tell your Tether administrator if it persists.",
			Links:   []link{{URL: loginURL(name, pl.Next), Text: "Try again"}},
		})
		return
	}
	// A previous session in this browser ends with the new one.
	if _, _, err := m.endSession(r); err != nil {
		m.log.Warn("end the browser's previous session", "err", err)
	}
	id, err := m.newSession(r.Context(), p, name)
	if err != nil {
		m.log.Error("store session; login not completed", "provider", name, "subject", p.Subject, "err", err)
		writePage(w, http.StatusServiceUnavailable, page{
			Title:   "Sign-in not completed",
			Message: "Your identity was verified, but Tether could not store your session in its database. Try again in a moment, and tell your Tether administrator if it persists.",
			Links:   []link{{URL: loginURL(name, pl.Next), Text: "Try again"}},
		})
		return
	}
	http.SetCookie(w, sessionCookie(id, 0))
	m.log.Info("login", "provider", name, "subject", p.Subject, "email", p.Email, "roles", p.Roles, "remote_addr", r.RemoteAddr)
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Location", pl.Next)
	w.WriteHeader(http.StatusSeeOther)
}

// complete checks the callback against pl, exchanges the code and
// verifies the ID token.
func (m *Manager) complete(r *http.Request, pl *pendingLogin) (identity.Principal, *loginFailure) {
	ctx := r.Context()
	q := r.URL.Query()
	name := pl.provider.cfg.Name
	if subtle.ConstantTimeCompare(hash(q.Get("state")), pl.StateHash) != 1 {
		return identity.Principal{}, &loginFailure{
			status: http.StatusBadRequest,
			reason: "state mismatch",
			page: page{
				Title:   "Sign-in refused",
				Message: "The answer from the identity provider does not belong to the sign-in this browser started. This happens when signing in from two tabs at once, or when someone else's sign-in link was followed.",
			},
		}
	}
	// RFC 9207: a provider that names itself must be the one this login
	// went to (a mix-up defence; the ID token's issuer is checked too).
	if iss, ok := q["iss"]; ok && (len(iss) != 1 || iss[0] != pl.provider.cfg.IssuerURL) {
		return identity.Principal{}, &loginFailure{
			status: http.StatusBadRequest,
			reason: fmt.Sprintf("authorization response iss %q is not the login's issuer %q", truncate(strings.Join(iss, ","), 200), pl.provider.cfg.IssuerURL),
			page: page{
				Title:   "Sign-in refused",
				Message: fmt.Sprintf("The answer came from another identity provider than %q, where this sign-in was sent.", name),
			},
		}
	}
	if idpErr := q.Get("error"); idpErr != "" {
		desc := truncate(q.Get("error_description"), 200)
		return identity.Principal{}, &loginFailure{
			status: http.StatusUnauthorized,
			reason: fmt.Sprintf("identity provider returned error %q: %q", truncate(idpErr, 100), desc),
			page: page{
				Title:   "Sign-in refused by the identity provider",
				Message: fmt.Sprintf("The identity provider %q did not sign you in (%s).", name, truncate(idpErr, 100)),
				Detail:  desc,
			},
		}
	}
	code := q.Get("code")
	if code == "" {
		return identity.Principal{}, &loginFailure{
			status: http.StatusBadRequest,
			reason: "callback without code",
			page:   page{Title: "Sign-in failed", Message: "The identity provider sent no authorization code."},
		}
	}
	unreachable := func(reason string) *loginFailure {
		return &loginFailure{
			status: http.StatusBadGateway,
			reason: reason,
			page: page{
				Title:   "Identity provider unreachable",
				Message: fmt.Sprintf("Tether could not complete the sign-in with the identity provider %q. Try again in a moment, and tell your Tether administrator if it persists.", name),
			},
		}
	}
	ep, err := m.endpoint(ctx, pl.provider)
	if err != nil {
		return identity.Principal{}, unreachable(truncate(err.Error(), 300))
	}
	ctx, cancel := context.WithTimeout(context.WithValue(ctx, oauth2.HTTPClient, m.client), upstreamTimeout)
	defer cancel()
	tok, err := m.oauth2Config(pl.provider, ep).Exchange(ctx, code, oauth2.VerifierOption(pl.Verifier))
	if err != nil {
		if re, ok := errors.AsType[*oauth2.RetrieveError](err); ok {
			// Only the error code: the body is the provider's to word.
			status := 0
			if re.Response != nil {
				status = re.Response.StatusCode
			}
			return identity.Principal{}, &loginFailure{
				status: http.StatusUnauthorized,
				reason: fmt.Sprintf("token endpoint refused the code: status %d, error %q", status, truncate(re.ErrorCode, 100)),
				page: page{
					Title:   "Sign-in failed",
					Message: fmt.Sprintf("The identity provider %q refused to complete the sign-in (%s). The sign-in may have taken too long.", name, truncate(re.ErrorCode, 100)),
				},
			}
		}
		return identity.Principal{}, unreachable(fmt.Sprintf("exchange code: %v", truncate(err.Error(), 300)))
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return identity.Principal{}, unreachable("token response has no id_token")
	}

	p, err := m.verify(ctx, raw)
	if err != nil {
		f := &loginFailure{
			status: http.StatusUnauthorized,
			reason: truncate(err.Error(), 500),
			page: page{
				Title:   "Sign-in refused",
				Message: fmt.Sprintf("The identity token from %q was not accepted.", name),
			},
		}
		switch {
		case errors.Is(err, identity.ErrNoRole):
			f.status = http.StatusForbidden
			f.page.Message = "You are signed in at the identity provider, but none of your groups gives you a role in Tether. Ask your administrator to add you to a group mapped to a Tether role."
		case errors.Is(err, identity.ErrInvalidToken), errors.Is(err, identity.ErrUnknownIssuer):
		default:
			// The verifier could not reach the issuer's keys; the token
			// may be fine.
			f.status = http.StatusBadGateway
			f.page.Message = fmt.Sprintf("Tether could not verify the identity token from %q: the identity provider's keys are unreachable. Try again in a moment.", name)
		}
		return identity.Principal{}, f
	}
	refuse := func(reason string) *loginFailure {
		return &loginFailure{
			status:    http.StatusUnauthorized,
			reason:    reason,
			principal: p,
			page: page{
				Title:   "Sign-in refused",
				Message: fmt.Sprintf("The identity token from %q does not belong to this sign-in.", name),
			},
		}
	}
	// The verifier accepts any configured issuer; this login accepts only
	// the one it was sent to.
	if p.Issuer != pl.provider.cfg.IssuerURL {
		return p, refuse(fmt.Sprintf("id token issuer %q is not the login's issuer %q", p.Issuer, pl.provider.cfg.IssuerURL))
	}
	c, err := decodeLoginClaims(raw)
	if err != nil {
		return p, refuse(fmt.Sprintf("id token claims: %v", err))
	}
	if c.Nonce == "" || subtle.ConstantTimeCompare(hash(c.Nonce), pl.NonceHash) != 1 {
		return p, refuse("id token nonce does not match the login")
	}
	if !slices.Contains(c.Aud, pl.provider.cfg.ClientID) || (c.Azp != "" && c.Azp != pl.provider.cfg.ClientID) {
		return p, refuse(fmt.Sprintf("id token audience %q (azp %q) is not client %q", c.Aud, c.Azp, pl.provider.cfg.ClientID))
	}
	pl.idToken = raw
	return p, nil
}

// fail answers a failed callback and reports it.
func (m *Manager) fail(w http.ResponseWriter, r *http.Request, providerName string, f loginFailure) {
	m.log.Warn("login failed", "provider", providerName, "reason", f.reason, "status", f.status, "remote_addr", r.RemoteAddr)
	err := m.emit(r, Event{Kind: EventLoginFailed, Principal: f.principal, Provider: providerName, Reason: f.reason})
	if err != nil {
		m.log.Error("audit of failed login failed", "provider", providerName, "err", err)
	}
	writePage(w, f.status, f.page)
}

// handleLogout ends the session: POST /auth/logout with form field csrf.
func (m *Manager) handleLogout(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormSize)
	if err := r.ParseForm(); err != nil {
		writePage(w, http.StatusBadRequest, page{Title: "Sign-out failed", Message: "The sign-out form could not be read."})
		return
	}
	s, found, csrfOK, err := m.endSessionCSRF(r, r.PostForm.Get("csrf"))
	if err != nil {
		// The session may still be live: say so rather than pretend.
		m.log.Error("end session in the store", "err", err)
		writePage(w, http.StatusServiceUnavailable, page{
			Title:   "Sign-out not completed",
			Message: "Tether could not end your session in its database. Try again in a moment, and tell your Tether administrator if it persists.",
		})
		return
	}
	if found && !csrfOK {
		m.log.Warn("logout refused: csrf token missing or wrong", "provider", s.Provider, "subject", s.Principal.Subject, "remote_addr", r.RemoteAddr)
		writePage(w, http.StatusForbidden, page{
			Title:   "Sign-out refused",
			Message: "The sign-out form did not come from a current Tether page. Reload the page and sign out again.",
		})
		return
	}
	http.SetCookie(w, sessionCookie("", -1))
	if found {
		m.log.Info("logout", "provider", s.Provider, "subject", s.Principal.Subject, "remote_addr", r.RemoteAddr)
		// The session is gone either way: keeping it because the audit
		// log failed would be the less safe choice.
		if err := m.emit(r, Event{Kind: EventLogout, Principal: s.Principal, Provider: s.Provider}); err != nil {
			m.log.Error("audit of logout failed", "provider", s.Provider, "subject", s.Principal.Subject, "err", err)
		}
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Location", "/")
	w.WriteHeader(http.StatusSeeOther)
}

// endSessionCSRF ends r's live session if csrf is its token. found
// reports whether r had a live session, csrfOK whether it was ended.
func (m *Manager) endSessionCSRF(r *http.Request, csrf string) (s session, found, csrfOK bool, err error) {
	key, s, found, err := m.session(r, false)
	if !found {
		return session{}, false, false, err
	}
	if csrf == "" || subtle.ConstantTimeCompare([]byte(csrf), []byte(s.csrf)) != 1 {
		return s, true, false, nil
	}
	ctx, cancel := context.WithTimeout(r.Context(), storeTimeout)
	defer cancel()
	// Taken meanwhile (another tab or broker signed out): ended all the
	// same.
	if _, _, err := m.store.TakeWeb(ctx, kindSession, key, m.now()); err != nil {
		return s, true, false, err
	}
	return s, true, true, nil
}

// putPending stores pl, expiring [PendingLoginLifetime] from now, and
// returns the login cookie's value naming it.
func (m *Manager) putPending(ctx context.Context, pl *pendingLogin) (string, error) {
	now := m.now()
	pl.Expires = now.Add(PendingLoginLifetime)
	raw, err := json.Marshal(pl)
	if err != nil {
		return "", fmt.Errorf("encode pending login: %w", err)
	}
	id := randomToken()
	key, _ := storeKey(id)
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	evicted, err := m.store.PutWeb(ctx, kindPending, key, raw, pl.Expires, m.maxPending, now)
	if err != nil {
		return "", err
	}
	if evicted > 0 {
		// Debug: anyone can start logins, so this can be a flood.
		m.log.Debug("pending login store full; dropped the oldest", "dropped", evicted)
	}
	return id, nil
}

// takePending removes the pending logins named by r's login cookies and
// returns the first live one whose provider is still configured.
func (m *Manager) takePending(r *http.Request) (*pendingLogin, bool, error) {
	ctx, cancel := context.WithTimeout(r.Context(), storeTimeout)
	defer cancel()
	now := m.now()
	var found *pendingLogin
	var errs []error
	for _, c := range r.CookiesNamed(LoginCookie) {
		key, ok := storeKey(c.Value)
		if !ok {
			continue
		}
		raw, ok, err := m.store.TakeWeb(ctx, kindPending, key, now)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !ok || found != nil {
			continue
		}
		pl := new(pendingLogin)
		if err := json.Unmarshal(raw, pl); err != nil {
			m.log.Error("stored pending login does not decode", "err", err)
			continue
		}
		if pl.provider = m.byName[pl.Provider]; pl.provider != nil && now.Before(pl.Expires) {
			found = pl
		}
	}
	if found == nil && len(errs) > 0 {
		return nil, false, errors.Join(errs...)
	}
	return found, found != nil, nil
}

func (m *Manager) emit(r *http.Request, e Event) error {
	if m.onEvent == nil {
		return nil
	}
	e.RemoteAddr = r.RemoteAddr
	return m.onEvent(r.Context(), e)
}

// loginCookie is the pending-login cookie; maxAge -1 deletes it.
func loginCookie(value string, maxAge int) *http.Cookie {
	return &http.Cookie{Name: LoginCookie, Value: value, Path: "/auth/", MaxAge: maxAge, HttpOnly: true, Secure: true, SameSite: http.SameSiteLaxMode}
}

// sessionCookie is the session cookie; maxAge 0 makes it a browser
// session cookie, -1 deletes it.
func sessionCookie(value string, maxAge int) *http.Cookie {
	return &http.Cookie{Name: SessionCookie, Value: value, Path: "/", MaxAge: maxAge, HttpOnly: true, Secure: true, SameSite: http.SameSiteLaxMode}
}

// loginClaims are the claims checked against the pending login.
type loginClaims struct {
	Nonce string   `json:"nonce"`
	Aud   audience `json:"aud"`
	Azp   string   `json:"azp"`
}

// audience is an aud claim, a string or a list of strings.
type audience []string

func (a *audience) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*a = audience{one}
		return nil
	}
	var list []string
	if err := json.Unmarshal(b, &list); err != nil {
		return errors.New("aud is neither a string nor a list of strings")
	}
	*a = list
	return nil
}

// decodeLoginClaims reads the payload of a compact JWS. It does not
// verify it: call it only on a token [Config.Verify] accepted.
func decodeLoginClaims(raw string) (loginClaims, error) {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return loginClaims{}, errors.New("not a compact JWS")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return loginClaims{}, fmt.Errorf("decode payload: %w", err)
	}
	var c loginClaims
	if err := json.Unmarshal(payload, &c); err != nil {
		return loginClaims{}, fmt.Errorf("decode payload: %w", err)
	}
	return c, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
