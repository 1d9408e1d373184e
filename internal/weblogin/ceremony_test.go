package weblogin

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
)

// ceremonyEnv is an env whose broker begins a ceremony on POST /sign
// (nonce from the form) and records what OnCeremony receives.
type ceremonyEnv struct {
	*env
	mu      sync.Mutex
	results []CeremonyResult
}

func newCeremonyEnv(t *testing.T, edits ...func(*Config)) *ceremonyEnv {
	ce := &ceremonyEnv{}
	ce.env = newEnv(t, func(c *Config) {
		for _, edit := range edits {
			edit(c)
		}
		c.OnCeremony = func(w http.ResponseWriter, r *http.Request, res CeremonyResult) {
			ce.mu.Lock()
			ce.results = append(ce.results, res)
			ce.mu.Unlock()
			w.WriteHeader(http.StatusNoContent)
		}
		c.CeremonyData = append(c.CeremonyData, "")
	})
	return ce
}

// begin asks the broker to begin a ceremony with nonce in browser b and
// returns the authorization URL, or the error BeginCeremony returned.
func (ce *ceremonyEnv) begin(b *browser, nonce string) (*url.URL, error) {
	ce.t.Helper()
	return ce.beginWith(b, ce.m, Ceremony{Nonce: nonce, Data: "request-1"})
}

// beginWith asks m to begin ceremony c in browser b.
func (ce *ceremonyEnv) beginWith(b *browser, m *Manager, c Ceremony) (*url.URL, error) {
	ce.t.Helper()
	rec := &cookieRecorder{header: http.Header{}}
	req, _ := http.NewRequest(http.MethodPost, ce.broker.URL+"/sign", nil)
	for _, c := range b.cookies[ce.host()] {
		req.AddCookie(&http.Cookie{Name: c.Name, Value: c.Value})
	}
	raw, err := m.BeginCeremony(rec, req, c)
	if err != nil {
		return nil, err
	}
	// The login cookie BeginCeremony set goes to the browser.
	for _, c := range (&http.Response{Header: rec.header}).Cookies() {
		if c.Path == "" {
			c.Path = "/"
		}
		b.cookies[ce.host()][c.Name] = c
	}
	return url.Parse(raw)
}

type cookieRecorder struct{ header http.Header }

func (r *cookieRecorder) Header() http.Header         { return r.header }
func (r *cookieRecorder) Write(p []byte) (int, error) { return len(p), nil }
func (r *cookieRecorder) WriteHeader(int)             {}

func nonceOf(t *testing.T, idToken string) string {
	t.Helper()
	parts := strings.Split(idToken, ".")
	if len(parts) != 3 {
		t.Fatalf("not a compact JWS: %q", idToken)
	}
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var c struct {
		Nonce string `json:"nonce"`
	}
	if err := json.Unmarshal(payload, &c); err != nil {
		t.Fatal(err)
	}
	return c.Nonce
}

// TestCeremony signs a nonce at the signed-in user's own provider: the
// result carries a verified ID token with that nonce and the session's
// user, and the session stays as it was.
func TestCeremony(t *testing.T) {
	ce := newCeremonyEnv(t)
	b := newBrowser(t)
	if _, err := ce.begin(b, "digest-1"); !errors.Is(err, ErrNoSession) {
		t.Fatalf("BeginCeremony signed out = %v, want ErrNoSession", err)
	}
	ce.mustLogin(b, "acme", acmeEmail)
	session := b.cookie(ce.host(), SessionCookie)
	authURL, err := ce.begin(b, "digest-1")
	if err != nil {
		t.Fatal(err)
	}
	q := authURL.Query()
	if !strings.HasPrefix(authURL.String(), ce.idp.IssuerURL("acme")) || q.Get("nonce") != "digest-1" || q.Get("prompt") != "login" || q.Get("code_challenge") == "" {
		t.Fatalf("ceremony sends the browser to %s, want acme's provider with nonce digest-1, prompt=login and PKCE", authURL)
	}
	events := len(ce.Events())
	callback := ce.authorize(b, authURL, acmeEmail)
	if resp := b.get(callback); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("callback = %d, want OnCeremony's 204: %s", resp.StatusCode, resp.body)
	}
	if len(ce.results) != 1 {
		t.Fatalf("OnCeremony called %d times, want once", len(ce.results))
	}
	res := ce.results[0]
	if res.Principal.Email != acmeEmail || res.Data != "request-1" || nonceOf(t, res.IDToken) != "digest-1" {
		t.Errorf("ceremony result = %s %v nonce %q, want %s, request-1, digest-1", res.Principal.Email, res.Data, nonceOf(t, res.IDToken), acmeEmail)
	}
	if b.cookie(ce.host(), SessionCookie) != session || len(ce.Events()) != events {
		t.Errorf("a ceremony changed the session or recorded a login")
	}
	// The pending ceremony is single use.
	if resp := b.get(callback); resp.StatusCode != http.StatusBadRequest || len(ce.results) != 1 {
		t.Errorf("replayed ceremony callback = %d (%d results), want 400 and no second result", resp.StatusCode, len(ce.results))
	}
}

// TestCeremonyBoundToSession: a ceremony completes only in the session
// that began it — not after that session ended, and not in another
// browser's session that got hold of its cookie.
func TestCeremonyBoundToSession(t *testing.T) {
	t.Run("session ended", func(t *testing.T) {
		ce := newCeremonyEnv(t)
		b := newBrowser(t)
		ce.mustLogin(b, "acme", acmeEmail)
		authURL, err := ce.begin(b, "digest-2")
		if err != nil {
			t.Fatal(err)
		}
		callback := ce.authorize(b, authURL, acmeEmail)
		if resp := b.do(http.MethodPost, ce.broker.URL+LogoutPath, url.Values{"csrf": {ce.csrf(b)}}); resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("logout = %d", resp.StatusCode)
		}
		if resp := b.get(callback); resp.StatusCode != http.StatusForbidden || len(ce.results) != 0 {
			t.Errorf("ceremony after logout = %d with %d results, want 403 and none", resp.StatusCode, len(ce.results))
		}
		if ev := ce.lastEvent(); ev.Kind != EventLoginFailed || !strings.Contains(ev.Reason, "approval signing") {
			t.Errorf("last event = %+v, want a failed approval signing", ev)
		}
	})
	t.Run("another session", func(t *testing.T) {
		ce := newCeremonyEnv(t)
		victim, attacker := newBrowser(t), newBrowser(t)
		ce.mustLogin(victim, "acme", acmeEmail)
		ce.mustLogin(attacker, "acme", acmeEmail)
		authURL, err := ce.begin(victim, "digest-3")
		if err != nil {
			t.Fatal(err)
		}
		callback := ce.authorize(victim, authURL, acmeEmail)
		attacker.cookies[ce.host()][LoginCookie] = victim.cookies[ce.host()][LoginCookie]
		if resp := attacker.get(callback); resp.StatusCode != http.StatusForbidden || len(ce.results) != 0 {
			t.Errorf("ceremony completed in another session = %d with %d results, want 403 and none", resp.StatusCode, len(ce.results))
		}
	})
}
