package weblogin

import (
	"context"
	"crypto/sha256"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/identity"
)

// recordingStore is an in-memory store that records every key and value
// written, counts session updates and can be made to fail.
type recordingStore struct {
	*memStore
	down atomic.Bool

	mu      sync.Mutex
	keys    [][]byte
	values  []string
	updates int // of sessions
}

func newRecordingStore() *recordingStore { return &recordingStore{memStore: newMemStore()} }

var errStoreDown = errors.New("test: store is down")

func (s *recordingStore) PutWeb(ctx context.Context, kind string, key, value []byte, expires time.Time, max int, now time.Time) (int, error) {
	if s.down.Load() {
		return 0, errStoreDown
	}
	s.mu.Lock()
	s.keys, s.values = append(s.keys, key), append(s.values, string(value))
	s.mu.Unlock()
	return s.memStore.PutWeb(ctx, kind, key, value, expires, max, now)
}

func (s *recordingStore) GetWeb(ctx context.Context, kind string, key []byte, now time.Time) ([]byte, bool, error) {
	if s.down.Load() {
		return nil, false, errStoreDown
	}
	return s.memStore.GetWeb(ctx, kind, key, now)
}

func (s *recordingStore) TakeWeb(ctx context.Context, kind string, key []byte, now time.Time) ([]byte, bool, error) {
	if s.down.Load() {
		return nil, false, errStoreDown
	}
	return s.memStore.TakeWeb(ctx, kind, key, now)
}

func (s *recordingStore) UpdateWeb(ctx context.Context, kind string, key, value []byte, expires, now time.Time) (bool, error) {
	if s.down.Load() {
		return false, errStoreDown
	}
	s.mu.Lock()
	s.keys, s.values = append(s.keys, key), append(s.values, string(value))
	if kind == kindSession {
		s.updates++
	}
	s.mu.Unlock()
	return s.memStore.UpdateWeb(ctx, kind, key, value, expires, now)
}

func (s *recordingStore) sessionUpdates() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.updates
}

// signedData is a ceremony's data of a named struct type.
type signedData struct {
	RequestID string
	Statement string
}

// TestSharedStore: two managers on one store stand for two brokers on
// one database behind a load balancer. A login begun at one completes at
// the other, the session works at both, a sign-out at one ends it at the
// other, and a signing ceremony begun at one completes at the other with
// its data of the same type. Without the shared store the second
// manager knows nothing of the first's login.
func TestSharedStore(t *testing.T) {
	shared := newRecordingStore()
	ce := newCeremonyEnv(t, func(c *Config) {
		c.Store = shared
		c.CeremonyData = append(c.CeremonyData, signedData{})
	})
	muxA := ce.served.Load()
	mB, muxB := ce.newManager()
	b := newBrowser(t)

	// Login at A, callback at B.
	authURL := ce.startLogin(b, "acme", "/ui/x")
	callback := ce.authorize(b, authURL, acmeEmail)
	ce.served.Store(muxB)
	if resp := b.get(callback); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/x" {
		t.Fatalf("callback at B of a login begun at A = %d %q, want 303 to /ui/x", resp.StatusCode, resp.body)
	}
	for _, at := range []struct {
		name string
		mux  *http.ServeMux
	}{{"B", muxB}, {"A", muxA}} {
		ce.served.Store(at.mux)
		if resp := ce.ui(b); resp.StatusCode != http.StatusOK || !strings.Contains(resp.body, "email="+acmeEmail) {
			t.Fatalf("GET /ui/ at %s = %d %q, want the session", at.name, resp.StatusCode, resp.body)
		}
	}

	// A ceremony begun at A (from this session) completes at B.
	ce.served.Store(muxA)
	want := signedData{RequestID: "r-1", Statement: `{"a":"b"}`}
	authURL, err := ce.beginWith(b, ce.m, Ceremony{Nonce: "digest-x", Data: want})
	if err != nil {
		t.Fatal(err)
	}
	callback = ce.authorize(b, authURL, acmeEmail)
	ce.served.Store(muxB)
	if resp := b.get(callback); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("ceremony callback at B = %d %q, want OnCeremony's 204", resp.StatusCode, resp.body)
	}
	ce.mu.Lock()
	results := ce.results
	ce.mu.Unlock()
	if len(results) != 1 || results[0].Data != any(want) || nonceOf(t, results[0].IDToken) != "digest-x" {
		t.Fatalf("ceremony results = %+v, want one with data %+v", results, want)
	}

	// Sign out at B; A refuses the session (the browser dropped the
	// cookie; an attacker who copied it still has it).
	cookie := b.cookie(ce.host(), SessionCookie)
	if resp := b.do(http.MethodPost, ce.broker.URL+LogoutPath, url.Values{"csrf": {ce.csrf(b)}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("logout at B = %d %q", resp.StatusCode, resp.body)
	}
	for name, m := range map[string]*Manager{"A": ce.m, "B": mB} {
		if _, ok := m.Principal(withSession(cookie)); ok {
			t.Errorf("%s honours a session signed out at B", name)
		}
	}
}

// withSession is a request carrying a session cookie.
func withSession(cookie string) *http.Request {
	req := httptest.NewRequest(http.MethodGet, "/ui/", nil)
	req.AddCookie(&http.Cookie{Name: SessionCookie, Value: cookie})
	return req
}

// TestSessionTouchThrottled: using a session extends it, but writes to
// the store at most once a minute, not on every request.
func TestSessionTouchThrottled(t *testing.T) {
	st := newRecordingStore()
	e := newEnv(t, func(c *Config) { c.Store = st })
	b := newBrowser(t)
	e.mustLogin(b, "vendor", vendorEmail)
	for range 59 {
		e.clock.Advance(time.Second)
		if resp := e.ui(b); resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /ui/ = %d", resp.StatusCode)
		}
	}
	if n := st.sessionUpdates(); n != 0 {
		t.Errorf("59 requests within a minute of login wrote the session %d times, want 0", n)
	}
	e.clock.Advance(time.Second)
	for range 10 {
		e.ui(b)
	}
	if n := st.sessionUpdates(); n != 1 {
		t.Errorf("10 requests a minute after login wrote the session %d times, want 1", n)
	}
	// The write moved the idle expiry: idle timeout after the last write
	// the session is over, a second before it is not.
	e.clock.Advance(DefaultIdleTimeout - time.Second)
	if _, ok := e.m.Principal(withSession(b.cookie(e.host(), SessionCookie))); !ok {
		t.Fatalf("session ended before its idle timeout")
	}
}

// TestStoreHoldsNoSecrets: what reaches the store is keyed by cookie
// hashes and holds neither cookie, state, nonce, code, ID token nor CSRF
// token; the PKCE verifier, which the callback needs, goes with the
// pending login when the callback takes it.
func TestStoreHoldsNoSecrets(t *testing.T) {
	st := newRecordingStore()
	var idTokens []string
	var mu sync.Mutex
	e := newEnv(t, func(c *Config) {
		c.Store = st
		verify := c.Verify
		c.Verify = func(ctx context.Context, raw string) (identity.Principal, error) {
			mu.Lock()
			idTokens = append(idTokens, raw)
			mu.Unlock()
			return verify(ctx, raw)
		}
	})
	b := newBrowser(t)
	authURL := e.startLogin(b, "vendor", "")
	loginCookie := b.cookie(e.host(), LoginCookie)
	q := authURL.Query()
	state, nonce := q.Get("state"), q.Get("nonce")
	if st.len(kindPending) != 1 {
		t.Fatalf("%d pending logins stored, want 1", st.len(kindPending))
	}
	callback := e.authorize(b, authURL, vendorEmail)
	cu, _ := url.Parse(callback)
	code := cu.Query().Get("code")
	if resp := b.get(callback); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("callback = %d %q", resp.StatusCode, resp.body)
	}
	if n := st.len(kindPending); n != 0 {
		t.Errorf("%d pending logins stored after the callback, want 0 (the verifier with them)", n)
	}
	sessionCookie := b.cookie(e.host(), SessionCookie)
	csrf := e.csrf(b)
	e.clock.Advance(2 * touchEvery)
	e.ui(b) // a write-back

	secrets := map[string]string{"login cookie": loginCookie, "state": state, "nonce": nonce, "code": code, "session cookie": sessionCookie, "csrf token": csrf}
	for i, tok := range idTokens {
		secrets["id token "+string(rune('0'+i))] = tok
		// Its signature alone would do as well.
		secrets["id token signature"] = tok[strings.LastIndex(tok, ".")+1:]
	}
	for name, v := range secrets {
		if v == "" {
			t.Fatalf("test captured no %s", name)
		}
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.values) < 3 {
		t.Fatalf("%d writes recorded, want the pending login, the session and its update", len(st.values))
	}
	for i, v := range st.values {
		for name, secret := range secrets {
			if strings.Contains(v, secret) {
				t.Errorf("stored value #%d holds the %s: %s", i, name, v)
			}
		}
	}
	wantKeys := map[[32]byte]bool{sha256.Sum256([]byte(loginCookie)): true, sha256.Sum256([]byte(sessionCookie)): true}
	for i, k := range st.keys {
		if len(k) != 32 || !wantKeys[[32]byte(k)] {
			t.Errorf("stored key #%d = %x, want the SHA-256 of a cookie", i, k)
		}
	}
}

// TestStoreDownFailsClosed: while the store cannot be reached nobody is
// signed in or out as if it could: a session is not honoured, a login
// does not start, a sign-out says it did not happen; all work again once
// the store is back, the session included.
func TestStoreDownFailsClosed(t *testing.T) {
	st := newRecordingStore()
	e := newEnv(t, func(c *Config) { c.Store = st })
	b := newBrowser(t)
	e.mustLogin(b, "vendor", vendorEmail)
	csrf := e.csrf(b)

	st.down.Store(true)
	if resp := e.ui(b); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /ui/ with the store down = %d, want 401", resp.StatusCode)
	}
	if resp := b.get(e.broker.URL + LoginPath + "?issuer=vendor"); resp.StatusCode != http.StatusServiceUnavailable || b.cookie(e.host(), LoginCookie) != "" {
		t.Errorf("login with the store down = %d (login cookie %v), want 503 and no cookie", resp.StatusCode, b.cookie(e.host(), LoginCookie) != "")
	}
	if resp := b.do(http.MethodPost, e.broker.URL+LogoutPath, url.Values{"csrf": {csrf}}); resp.StatusCode != http.StatusServiceUnavailable || b.cookie(e.host(), SessionCookie) == "" {
		t.Errorf("logout with the store down = %d, want 503 keeping the cookie to try again", resp.StatusCode)
	}
	for _, ev := range e.Events() {
		if ev.Kind == EventLogout {
			t.Errorf("a logout that did not happen was reported: %+v", ev)
		}
	}
	if !strings.Contains(e.logs.String(), "store") {
		t.Errorf("no log says the store failed")
	}

	st.down.Store(false)
	if resp := e.ui(b); resp.StatusCode != http.StatusOK {
		t.Errorf("GET /ui/ with the store back = %d, want 200", resp.StatusCode)
	}
	if resp := b.do(http.MethodPost, e.broker.URL+LogoutPath, url.Values{"csrf": {csrf}}); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("logout with the store back = %d, want 303", resp.StatusCode)
	}
}

// TestCeremonyDataTypeListed: a ceremony whose data is of a type not in
// Config.CeremonyData is refused when it begins, not lost at its end.
func TestCeremonyDataTypeListed(t *testing.T) {
	ce := newCeremonyEnv(t)
	b := newBrowser(t)
	ce.mustLogin(b, "acme", acmeEmail)
	if _, err := ce.beginWith(b, ce.m, Ceremony{Nonce: "d", Data: signedData{RequestID: "r"}}); err == nil || !strings.Contains(err.Error(), "signedData") {
		t.Errorf("BeginCeremony with data of an unlisted type = %v, want an error naming it", err)
	}
}
