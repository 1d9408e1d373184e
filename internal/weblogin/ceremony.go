package weblogin

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
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
	// Data is handed back in [CeremonyResult.Data]: stored as JSON and
	// decoded into a new value of its type, which must be one of
	// [Config.CeremonyData]'s.
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
	// Data is a copy of [Ceremony.Data], of the same type.
	Data any
}

// pendingCeremony binds a pending ceremony to the session that began it,
// as stored (JSON).
type pendingCeremony struct {
	SessionKey []byte             `json:"session_key"` // storeKey of the session cookie
	Principal  identity.Principal `json:"principal"`
	DataType   string             `json:"data_type,omitempty"` // typeName of Data's type; empty for nil
	Data       json.RawMessage    `json:"data,omitempty"`
}

// encodeData encodes a ceremony's data and names its type, which must be
// one of [Config.CeremonyData]'s.
func (m *Manager) encodeData(v any) (typ string, raw json.RawMessage, err error) {
	if v == nil {
		return "", nil, nil
	}
	typ = typeName(reflect.TypeOf(v))
	if _, ok := m.ceremonyTypes[typ]; !ok {
		return "", nil, fmt.Errorf("ceremony data of type %s is not one of the configured ceremony data types", typ)
	}
	raw, err = json.Marshal(v)
	if err != nil {
		return "", nil, fmt.Errorf("encode ceremony data: %w", err)
	}
	return typ, raw, nil
}

// decodeData decodes a stored ceremony's data into a new value of its
// type.
func (m *Manager) decodeData(c *pendingCeremony) (any, error) {
	if c.DataType == "" {
		return nil, nil
	}
	t, ok := m.ceremonyTypes[c.DataType]
	if !ok {
		return nil, fmt.Errorf("ceremony data of type %s is not one of the configured ceremony data types", c.DataType)
	}
	v := reflect.New(t)
	if err := json.Unmarshal(c.Data, v.Interface()); err != nil {
		return nil, fmt.Errorf("decode ceremony data: %w", err)
	}
	return v.Elem().Interface(), nil
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
	p, ok := m.byName[s.Provider]
	if !ok {
		return "", fmt.Errorf("the session's identity provider %q is no longer configured", s.Provider)
	}
	ep, err := m.endpoint(r.Context(), p)
	if err != nil {
		return "", fmt.Errorf("identity provider %s: %w", p.cfg.Name, err)
	}
	typ, data, err := m.encodeData(c.Data)
	if err != nil {
		return "", err
	}
	state := randomToken()
	pl := &pendingLogin{
		Provider:  p.cfg.Name,
		StateHash: hash(state),
		NonceHash: hash(c.Nonce),
		Verifier:  oauth2.GenerateVerifier(),
		Ceremony:  &pendingCeremony{SessionKey: key, Principal: s.Principal, DataType: typ, Data: data},
	}
	id, err := m.putPending(r.Context(), pl)
	if err != nil {
		return "", fmt.Errorf("store pending ceremony: %w", err)
	}
	http.SetCookie(w, loginCookie(id, int(PendingLoginLifetime/time.Second)))
	// No login_hint: the approver signs in deliberately, as themselves;
	// signing as anyone else is refused at the callback.
	return m.oauth2Config(p, ep).AuthCodeURL(state,
		oauth2.SetAuthURLParam("nonce", c.Nonce),
		oauth2.SetAuthURLParam("prompt", "login"),
		oauth2.S256ChallengeOption(pl.Verifier)), nil
}

// liveSession returns the storage key and a copy of r's live session,
// and records its use.
func (m *Manager) liveSession(r *http.Request) ([]byte, session, bool) {
	key, s, ok, _ := m.session(r, true)
	return key, s, ok
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
	case !ok || subtle.ConstantTimeCompare(key, pl.Ceremony.SessionKey) != 1:
		refuse("the session that began the signing ended or is not this browser's",
			"You signed at your identity provider, but the Tether session that asked for the signature has ended. Sign in again and approve again.")
		return
	case p.Issuer != s.Principal.Issuer || p.Subject != s.Principal.Subject:
		refuse(fmt.Sprintf("signed as %s at %s, but the session is %s's", p.Subject, p.Issuer, s.Principal.Subject),
			"You signed at your identity provider as someone else than the person signed in to Tether. Sign the approval as yourself.")
		return
	}
	data, err := m.decodeData(pl.Ceremony)
	if err != nil {
		m.log.Error("stored ceremony data", "provider", name, "err", err)
		writePage(w, http.StatusInternalServerError, page{
			Title:   "Signature not used",
			Message: "You signed at your identity provider, but Tether could not read what the signature was for. Start again from the page you were on.",
			Links:   []link{back},
		})
		return
	}
	m.log.Info("approval signed", "provider", name, "subject", p.Subject, "remote_addr", r.RemoteAddr)
	m.onCeremony(w, r, CeremonyResult{Principal: s.Principal, IDToken: pl.idToken, Data: data})
}
