package weblogin

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"time"

	"golang.org/x/oauth2"

	"github.com/tetherhq/tether/internal/identity"
)

// A signing ceremony asks the signed-in user to sign in again at their
// own identity provider, with an OIDC nonce the caller chose (the digest
// of what they approve): the ID token the provider returns is their
// signature. It runs through the login's callback and pending-login
// store, so the redirect URI registered at each provider serves both.

// maxNonceLen bounds a ceremony's nonce (a digest is far shorter).
const maxNonceLen = 256

// ErrNoSession is returned by [Manager.BeginCeremony] for a request
// without a live session.
var ErrNoSession = errors.New("not signed in")

// Ceremony is what [Manager.BeginCeremony] asks the identity provider to
// sign.
type Ceremony struct {
	// Nonce is the nonce the ID token must carry.
	Nonce string
	// Data is handed back, untouched, in [CeremonyResult.Data].
	Data any
}

// CeremonyResult is a completed ceremony, given to [Config.OnCeremony]
// once the ID token is verified ([Config.Verify]), issued by the
// session's own provider for this client, about the session's user,
// with the ceremony's nonce, and the session that began it is still
// live.
type CeremonyResult struct {
	// Principal is the session's user (and the ID token's).
	Principal identity.Principal
	// IDToken is the verified ID token whose nonce is the ceremony's.
	IDToken string
	// Data is [Ceremony.Data].
	Data any
}

// pendingCeremony binds a pending ceremony to the session that began it.
type pendingCeremony struct {
	sessionKey string // storeKey of the session cookie
	principal  identity.Principal
	data       any
}

// BeginCeremony starts a signing ceremony for r's signed-in user at the
// provider they signed in with: it stores a pending ceremony (single
// use, [PendingLoginLifetime], bound to the session; state, PKCE and the
// nonce as for a login), sets the login cookie on w, and returns the
// provider's authorization URL, which asks the user to sign in again
// (prompt=login). The caller sends the browser there.
func (m *Manager) BeginCeremony(w http.ResponseWriter, r *http.Request, c Ceremony) (string, error) {
	if m.onCeremony == nil {
		return "", errors.New("signing ceremonies are not configured")
	}
	if c.Nonce == "" || len(c.Nonce) > maxNonceLen {
		return "", fmt.Errorf("ceremony nonce: want 1 to %d bytes", maxNonceLen)
	}
	key, s, ok := m.liveSession(r)
	if !ok {
		return "", ErrNoSession
	}
	p, ok := m.byName[s.provider]
	if !ok {
		return "", fmt.Errorf("the session's identity provider %q is no longer configured", s.provider)
	}
	ep, err := m.endpoint(r.Context(), p)
	if err != nil {
		return "", fmt.Errorf("identity provider %s: %w", p.cfg.Name, err)
	}
	now := m.now()
	pl := &pendingLogin{
		provider: p,
		state:    randomToken(),
		nonce:    c.Nonce,
		verifier: oauth2.GenerateVerifier(),
		expires:  now.Add(PendingLoginLifetime),
		ceremony: &pendingCeremony{sessionKey: key, principal: s.principal, data: c.Data},
	}
	id := randomToken()
	pkey, _ := storeKey(id)
	m.pendingMu.Lock()
	evicted := m.pending.put(pkey, pl, now)
	m.pendingMu.Unlock()
	if evicted > 0 {
		m.log.Debug("pending login store full; dropped the oldest", "dropped", evicted)
	}
	http.SetCookie(w, loginCookie(id, int(PendingLoginLifetime/time.Second)))
	// No login_hint: the approver signs in deliberately, as themselves;
	// signing as anyone else is refused at the callback.
	return m.oauth2Config(p, ep).AuthCodeURL(pl.state,
		oauth2.SetAuthURLParam("nonce", pl.nonce),
		oauth2.SetAuthURLParam("prompt", "login"),
		oauth2.S256ChallengeOption(pl.verifier)), nil
}

// liveSession returns the storage key and a copy of r's live session.
func (m *Manager) liveSession(r *http.Request) (string, session, bool) {
	now := m.now()
	m.sessionsMu.Lock()
	defer m.sessionsMu.Unlock()
	for _, c := range r.CookiesNamed(SessionCookie) {
		key, ok := storeKey(c.Value)
		if !ok {
			continue
		}
		s, ok := m.sessions.get(key)
		if !ok || !now.Before(s.expiry(m.idle)) {
			continue
		}
		s.lastSeen = now
		return key, *s, true
	}
	return "", session{}, false
}

// finishCeremony completes a ceremony's callback: the checks of a login
// (state, issuer, code exchange with PKCE, ID token, nonce, audience),
// then that the session which began it is still this browser's and the
// token is about its user. It never creates or changes a session.
func (m *Manager) finishCeremony(w http.ResponseWriter, r *http.Request, pl *pendingLogin) {
	name := pl.provider.cfg.Name
	back := link{URL: DefaultNext, Text: "Back to Tether"}
	p, f := m.complete(r, pl)
	if f != nil {
		f.reason = "approval signing: " + f.reason
		f.page.Links = append(f.page.Links, back)
		m.fail(w, r, name, *f)
		return
	}
	key, s, ok := m.liveSession(r)
	refuse := func(reason, msg string) {
		m.fail(w, r, name, loginFailure{
			status: http.StatusForbidden, reason: "approval signing: " + reason, principal: p,
			page: page{Title: "Signature refused", Message: msg, Links: []link{back}},
		})
	}
	switch {
	case !ok || subtle.ConstantTimeCompare([]byte(key), []byte(pl.ceremony.sessionKey)) != 1:
		refuse("the session that began the signing ended or is not this browser's",
			"You signed at your identity provider, but the Tether session that asked for the signature has ended. Sign in again and approve again.")
		return
	case p.Issuer != s.principal.Issuer || p.Subject != s.principal.Subject:
		refuse(fmt.Sprintf("signed as %s at %s, but the session is %s's", p.Subject, p.Issuer, s.principal.Subject),
			"You signed at your identity provider as someone else than the person signed in to Tether. Sign the approval as yourself.")
		return
	}
	m.log.Info("approval signed", "provider", name, "subject", p.Subject, "remote_addr", r.RemoteAddr)
	m.onCeremony(w, r, CeremonyResult{Principal: s.principal, IDToken: pl.idToken, Data: pl.ceremony.data})
}
