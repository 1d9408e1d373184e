// Package weblogin signs people in to Tether's few web pages with an
// OpenID Connect authorization-code login (PKCE, state and nonce) and
// keeps them signed in with a server-side session behind an HttpOnly
// cookie.
//
// The broker's HTTP API does not use it: API clients present bearer ID
// tokens verified by [identity.Verifier]. A browser cannot, so
// [Manager] runs the login, verifies the ID token it receives with the
// same verifier ([Config.Verify]) and remembers the resulting
// [identity.Principal] for the session.
//
// Session lifetime is governed by [Config.IdleTimeout] and
// [Config.AbsoluteTimeout] alone, not by the ID token's exp: ID tokens
// are typically valid for minutes to an hour and this package keeps no
// refresh token, so tying the session to exp would sign people out
// mid-task for no security gain (the token is proof of authentication
// at login, not a credential the session replays). The token's expiry is
// recorded in the session and stays visible as [identity.Principal.Expiry];
// callers must not treat it as the session's expiry.
//
// Sessions and pending logins live in a [Store] ([Config.Store]): the
// broker's database, so that several brokers behind a load balancer
// share them and a restart signs nobody out. Entries are keyed by the
// SHA-256 of their cookie; a session stores the principal and its times,
// not the cookie, the ID token or the CSRF token (derived from the
// cookie); a pending login stores hashes of its state and nonce and the
// PKCE verifier, which the callback needs and deletes with the entry.
//
// Nothing secret is ever logged: not cookies, authorization codes,
// tokens, state, nonce, PKCE verifiers or the client secret.
package weblogin

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tetherhq/tether/internal/identity"
)

// Cookie names.
const (
	// SessionCookie holds the session ID; it is sent on every path.
	SessionCookie = "tether_session"
	// LoginCookie holds the ID of a pending login; it is sent only to
	// /auth/ and lives no longer than [PendingLoginLifetime].
	LoginCookie = "tether_login"
)

// Paths served by [Manager.Register].
const (
	LoginPath    = "/auth/login"
	CallbackPath = "/auth/callback"
	LogoutPath   = "/auth/logout"
	// DefaultNext is where a login without a next parameter lands.
	DefaultNext = "/ui/"
)

// Event kinds passed to [Config.OnEvent].
const (
	EventLogin       = "login"
	EventLoginFailed = "login_failed"
	EventLogout      = "logout"
)

// Defaults for zero [Config] fields.
const (
	DefaultIdleTimeout      = 30 * time.Minute
	DefaultAbsoluteTimeout  = 12 * time.Hour
	DefaultMaxSessions      = 10000
	DefaultMaxPendingLogins = 10000
	// PendingLoginLifetime is how long a user has to complete a login at
	// the identity provider.
	PendingLoginLifetime = 10 * time.Minute

	defaultHTTPTimeout = 10 * time.Second
	// upstreamTimeout bounds discovery and the code exchange even when
	// the caller's HTTP client has no timeout.
	upstreamTimeout = 15 * time.Second
	// sweepBatch is how many stored entries each insertion examines for
	// expiry, so expired entries go away without a background goroutine
	// and without a full scan under the lock.
	sweepBatch = 32
)

var defaultScopes = []string{"openid", "email", "profile"}

// Provider is an OpenID Connect provider people may sign in with.
type Provider struct {
	// Name is the issuer's name as in [identity.IssuerConfig.Name]; it is
	// the value of the issuer parameter of the login URL.
	Name string
	// IssuerURL must equal the issuer's discovery document and the iss
	// claim of its ID tokens.
	IssuerURL string
	// ClientID is Tether's client ID at this provider.
	ClientID string
	// ClientSecret is set for a confidential client and empty for a
	// public one (PKCE only). It is never logged.
	ClientSecret string
	// Scopes requested; empty means openid, email and profile.
	Scopes []string
}

// Event describes a login, failed login or logout, for the caller's
// audit log. No field holds a secret.
type Event struct {
	// Kind is [EventLogin], [EventLoginFailed] or [EventLogout].
	Kind string
	// Principal is the user; zero for a failure before the ID token was
	// verified.
	Principal identity.Principal
	// Provider is the [Provider.Name] used, empty if it is not known.
	Provider string
	// Reason says why a login failed; empty otherwise.
	Reason string
	// RemoteAddr is the request's RemoteAddr.
	RemoteAddr string
}

// Config configures a [Manager].
type Config struct {
	// Providers people may sign in with; names must be unique.
	Providers []Provider
	// RedirectURL is the absolute URL of the callback as registered at
	// every provider, e.g. "https://broker.example.com/auth/callback".
	// Its path must be [CallbackPath].
	RedirectURL string
	// Verify verifies an ID token; normally [identity.Verifier.Verify].
	Verify func(ctx context.Context, rawIDToken string) (identity.Principal, error)
	// IdleTimeout ends a session not used for this long; default 30m.
	IdleTimeout time.Duration
	// AbsoluteTimeout ends a session this long after login, however
	// active; default 12h.
	AbsoluteTimeout time.Duration
	// MaxSessions bounds the stored sessions, all users together; past
	// it the oldest session is evicted. Default 10000.
	MaxSessions int
	// MaxPendingLogins bounds logins and ceremonies started but not
	// completed; past it the oldest is dropped. Default 10000.
	MaxPendingLogins int
	// Store keeps sessions and pending logins; nil keeps them in this
	// process's memory, where they end with it.
	Store Store
	// HTTPClient is used for discovery and the token endpoint; default a
	// client with a 10s timeout.
	HTTPClient *http.Client
	// Now is the clock; default time.Now.
	Now func() time.Time
	// OnEvent receives audit events. An error from it for a login aborts
	// that login: a sign-in that cannot be audited does not happen. Errors
	// for failed logins and logouts are logged (a logout still happens).
	OnEvent func(ctx context.Context, e Event) error
	// Logger receives operational logs; default discards them.
	Logger *slog.Logger
	// OnCeremony receives the verified outcome of a signing ceremony
	// ([Manager.BeginCeremony]) and answers the browser. Nil disables
	// ceremonies.
	OnCeremony func(w http.ResponseWriter, r *http.Request, c CeremonyResult)
	// CeremonyData lists a value of each type a [Ceremony.Data] may have.
	// A pending ceremony is stored as JSON, so that another broker may
	// complete it, and its Data is decoded into a new value of the same
	// type for [CeremonyResult.Data]; a type not listed is refused.
	CeremonyData []any
}

// Validate reports every problem in c joined into one error, or nil.
func (c Config) Validate() error {
	var errs []error
	if len(c.Providers) == 0 {
		errs = append(errs, errors.New("weblogin config: no providers"))
	}
	seen := map[string]bool{}
	for i, p := range c.Providers {
		where := fmt.Sprintf("providers[%d] (%q)", i, p.Name)
		switch {
		case p.Name == "":
			errs = append(errs, fmt.Errorf("weblogin config: providers[%d]: name is empty", i))
		case seen[p.Name]:
			errs = append(errs, fmt.Errorf("weblogin config: %s: name is already used; names must be unique", where))
		}
		seen[p.Name] = true
		if _, err := checkURL(p.IssuerURL); err != nil {
			errs = append(errs, fmt.Errorf("weblogin config: %s: issuer URL: %w", where, err))
		}
		if p.ClientID == "" {
			errs = append(errs, fmt.Errorf("weblogin config: %s: client ID is empty", where))
		}
	}
	if u, err := checkURL(c.RedirectURL); err != nil {
		errs = append(errs, fmt.Errorf("weblogin config: redirect URL: %w", err))
	} else if u.Path != CallbackPath || u.RawQuery != "" || u.Fragment != "" {
		errs = append(errs, fmt.Errorf("weblogin config: redirect URL %q must have path %s and no query or fragment", c.RedirectURL, CallbackPath))
	}
	if c.Verify == nil {
		errs = append(errs, errors.New("weblogin config: verify func is nil"))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"idle timeout", c.IdleTimeout}, {"absolute timeout", c.AbsoluteTimeout}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("weblogin config: %s %v is negative", d.name, d.v))
		}
	}
	if c.MaxSessions < 0 || c.MaxPendingLogins < 0 {
		errs = append(errs, errors.New("weblogin config: max sessions and max pending logins must not be negative"))
	}
	return errors.Join(errs...)
}

// checkURL parses an absolute https URL, or an http URL on a loopback
// host for development: the code and the cookies must not cross a
// network in clear.
func checkURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%q does not parse: %w", raw, err)
	}
	if u.Host == "" || u.User != nil {
		return nil, fmt.Errorf("%q is not an absolute URL without user info", raw)
	}
	switch h := u.Hostname(); {
	case u.Scheme == "https":
	case u.Scheme == "http" && (h == "localhost" || h == "127.0.0.1" || h == "::1"):
	default:
		return nil, fmt.Errorf("%q must use https (http only for localhost, 127.0.0.1 and ::1)", raw)
	}
	return u, nil
}

// Manager runs browser logins and keeps their sessions in its [Store].
// It is safe for concurrent use.
type Manager struct {
	providers   []*provider // in config order
	byName      map[string]*provider
	redirectURL string
	verify      func(ctx context.Context, rawIDToken string) (identity.Principal, error)
	idle        time.Duration
	absolute    time.Duration
	client      *http.Client
	now         func() time.Time
	onEvent     func(ctx context.Context, e Event) error
	onCeremony  func(w http.ResponseWriter, r *http.Request, c CeremonyResult)
	log         *slog.Logger
	discover    discoverFunc

	// store holds sessions and pending logins by the SHA-256 of their
	// cookie, at most maxSessions and maxPending of each.
	store       Store
	maxSessions int
	maxPending  int
	// ceremonyTypes are the types of [Config.CeremonyData] by
	// [typeName].
	ceremonyTypes map[string]reflect.Type
}

// provider is a configured [Provider] and its lazily discovered
// endpoints.
type provider struct {
	cfg Provider

	mu       sync.Mutex
	endpoint *endpoint // nil until discovered
}

// pendingLogin is a login sent to the identity provider and not yet
// back, as stored (JSON).
type pendingLogin struct {
	Provider string `json:"provider"` // [Provider.Name]
	// StateHash and NonceHash are the SHA-256 of the state and nonce
	// sent: the callback's are compared to them.
	StateHash []byte `json:"state_hash"`
	NonceHash []byte `json:"nonce_hash"`
	// Verifier is the PKCE verifier, which the code exchange needs; it is
	// deleted with the entry when the callback takes it.
	Verifier string    `json:"verifier"`
	Next     string    `json:"next,omitempty"`
	Expires  time.Time `json:"expires"`
	// Ceremony is set for a signing ceremony ([Manager.BeginCeremony]),
	// nil for a login.
	Ceremony *pendingCeremony `json:"ceremony,omitempty"`

	// provider is Provider's configuration, once loaded.
	provider *provider
	// idToken is the verified ID token, once [Manager.complete] accepted
	// it; never stored.
	idToken string
}

// session is a signed-in browser's session as stored (JSON): nothing in
// it can be used to act as the user.
type session struct {
	Principal   identity.Principal `json:"principal"`
	Provider    string             `json:"provider"`
	Created     time.Time          `json:"created"`
	LastSeen    time.Time          `json:"last_seen"` // written back at most every touchEvery
	Absolute    time.Time          `json:"absolute"`  // Created + AbsoluteTimeout
	TokenExpiry time.Time          `json:"token_exp"` // the ID token's exp, recorded only

	// csrf is the session's CSRF token, derived from its cookie
	// ([csrfToken]); never stored.
	csrf string
}

// expiry is when s ends unless it is used again.
func (s *session) expiry(idle time.Duration) time.Time {
	if e := s.LastSeen.Add(idle); e.Before(s.Absolute) {
		return e
	}
	return s.Absolute
}

// New validates cfg and returns a Manager. It does not contact the
// providers: each is discovered on its first login.
func New(cfg Config) (*Manager, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m := &Manager{
		byName:      make(map[string]*provider, len(cfg.Providers)),
		redirectURL: cfg.RedirectURL,
		verify:      cfg.Verify,
		idle:        orDefault(cfg.IdleTimeout, DefaultIdleTimeout),
		absolute:    orDefault(cfg.AbsoluteTimeout, DefaultAbsoluteTimeout),
		client:      cfg.HTTPClient,
		now:         cfg.Now,
		onEvent:     cfg.OnEvent,
		onCeremony:  cfg.OnCeremony,
		log:         cfg.Logger,
	}
	if m.client == nil {
		m.client = &http.Client{Timeout: defaultHTTPTimeout}
	}
	if m.now == nil {
		m.now = time.Now
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	m.log = m.log.With("component", "weblogin")
	m.discover = oidcDiscover(m.client)
	for _, p := range cfg.Providers {
		p.Scopes = slices.Clone(p.Scopes)
		if len(p.Scopes) == 0 {
			p.Scopes = slices.Clone(defaultScopes)
		}
		pp := &provider{cfg: p}
		m.providers = append(m.providers, pp)
		m.byName[p.Name] = pp
	}
	m.store = cfg.Store
	if m.store == nil {
		m.store = newMemStore()
	}
	m.maxSessions = orDefault(cfg.MaxSessions, DefaultMaxSessions)
	m.maxPending = orDefault(cfg.MaxPendingLogins, DefaultMaxPendingLogins)
	m.ceremonyTypes = map[string]reflect.Type{}
	for _, v := range cfg.CeremonyData {
		t := reflect.TypeOf(v)
		if t == nil {
			return nil, errors.New("weblogin config: ceremony data types: nil is not a type")
		}
		m.ceremonyTypes[typeName(t)] = t
	}
	return m, nil
}

// typeName names t for a stored ceremony: its package path and name.
func typeName(t reflect.Type) string {
	if t.Name() == "" {
		return t.String()
	}
	return t.PkgPath() + "." + t.Name()
}

// orDefault returns v, or def if v is zero.
func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Register adds the login, callback and logout handlers to mux.
func (m *Manager) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET "+LoginPath, m.handleLogin)
	mux.HandleFunc("GET "+CallbackPath, m.handleCallback)
	mux.HandleFunc("POST "+LogoutPath, m.handleLogout)
}

// Principal returns the signed-in user of r's session cookie, and
// extends the session's idle expiry (never past its absolute expiry).
// It reports false when r has no live session, or the store cannot be
// read (logged): a session that cannot be checked is not honoured.
func (m *Manager) Principal(r *http.Request) (identity.Principal, bool) {
	_, s, ok, _ := m.session(r, true)
	if !ok {
		return identity.Principal{}, false
	}
	return s.Principal, true
}

// CSRFToken returns the session's token for forms that change state
// (the logout form posts it as the field "csrf"), or "" when r has no
// live session. It does not extend the session.
func (m *Manager) CSRFToken(r *http.Request) string {
	_, s, ok, _ := m.session(r, false)
	if !ok {
		return ""
	}
	return s.csrf
}

// session returns the key and a copy of r's live session. With touch,
// it records the use, writing it back at most every [touchEvery]. When
// no live session was found and the store failed, err says so (and was
// logged).
func (m *Manager) session(r *http.Request, touch bool) (key []byte, s session, ok bool, err error) {
	ctx, cancel := context.WithTimeout(r.Context(), storeTimeout)
	defer cancel()
	now := m.now()
	// Try every cookie of that name: a sibling subdomain may have planted
	// one ahead of ours.
	var errs []error
	for _, c := range r.CookiesNamed(SessionCookie) {
		key, ok := storeKey(c.Value)
		if !ok {
			continue
		}
		raw, ok, err := m.store.GetWeb(ctx, kindSession, key, now)
		if err != nil {
			m.log.Error("read session from the store; the request is treated as signed out", "err", err)
			errs = append(errs, err)
			continue
		}
		if !ok {
			continue
		}
		var s session
		if err := json.Unmarshal(raw, &s); err != nil {
			m.log.Error("stored session does not decode; the request is treated as signed out", "err", err)
			continue
		}
		if !now.Before(s.expiry(m.idle)) {
			continue
		}
		if touch && now.Sub(s.LastSeen) >= touchEvery {
			s.LastSeen = now
			if err := m.updateSession(ctx, key, s, now); err != nil {
				// This request is served; the session ends earlier.
				m.log.Warn("record session use in the store", "err", err)
			}
		}
		s.csrf = csrfToken(c.Value)
		return key, s, true, nil
	}
	return nil, session{}, false, errors.Join(errs...)
}

// updateSession writes s back, unless it ended meanwhile.
func (m *Manager) updateSession(ctx context.Context, key []byte, s session, now time.Time) error {
	raw, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("encode session: %w", err)
	}
	_, err = m.store.UpdateWeb(ctx, kindSession, key, raw, s.expiry(m.idle), now)
	return err
}

// newSession stores a session for p and returns its cookie value.
func (m *Manager) newSession(ctx context.Context, p identity.Principal, providerName string) (string, error) {
	id := randomToken()
	key, _ := storeKey(id)
	now := m.now()
	// The nonce was this login's, checked already; the session needs it
	// no more.
	p.Nonce = ""
	s := session{
		Principal:   p,
		Provider:    providerName,
		Created:     now,
		LastSeen:    now,
		Absolute:    now.Add(m.absolute),
		TokenExpiry: p.Expiry,
	}
	raw, err := json.Marshal(s)
	if err != nil {
		return "", fmt.Errorf("encode session: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	evicted, err := m.store.PutWeb(ctx, kindSession, key, raw, s.expiry(m.idle), m.maxSessions, now)
	if err != nil {
		return "", fmt.Errorf("store session: %w", err)
	}
	if evicted > 0 {
		m.log.Warn("session store full; evicted the oldest sessions", "evicted", evicted)
	}
	return id, nil
}

// endSession removes the sessions named by r's cookies and returns the
// first live one removed.
func (m *Manager) endSession(r *http.Request) (session, bool, error) {
	ctx, cancel := context.WithTimeout(r.Context(), storeTimeout)
	defer cancel()
	now := m.now()
	var found session
	var ok bool
	var errs []error
	for _, c := range r.CookiesNamed(SessionCookie) {
		key, valid := storeKey(c.Value)
		if !valid {
			continue
		}
		raw, present, err := m.store.TakeWeb(ctx, kindSession, key, now)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var s session
		if present && !ok && json.Unmarshal(raw, &s) == nil && now.Before(s.expiry(m.idle)) {
			found, ok = s, true
		}
	}
	return found, ok, errors.Join(errs...)
}

// csrfToken derives a session's CSRF token from its cookie, so that the
// store holds neither: SHA-256 of a label and the cookie value.
func csrfToken(cookieValue string) string {
	sum := sha256.Sum256([]byte("tether weblogin csrf\x00" + cookieValue))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// randomToken returns 32 random bytes, base64url-encoded without
// padding.
func randomToken() string {
	b := make([]byte, 32)
	// crypto/rand.Read never fails; it crashes the program instead.
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// tokenLen is the length of a [randomToken].
var tokenLen = base64.RawURLEncoding.EncodedLen(32)

// storeKey returns the key a cookie value is stored under: its SHA-256,
// so a copy of the store (a heap dump) does not hold usable cookies. It
// reports false for a value that cannot be one of ours.
func storeKey(cookieValue string) ([]byte, bool) {
	if len(cookieValue) != tokenLen || strings.ContainsFunc(cookieValue, func(r rune) bool {
		return !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '-' || r == '_')
	}) {
		return nil, false
	}
	sum := sha256.Sum256([]byte(cookieValue))
	return sum[:], true
}

// hash is the SHA-256 of s, to store or compare instead of s.
func hash(s string) []byte {
	sum := sha256.Sum256([]byte(s))
	return sum[:]
}
