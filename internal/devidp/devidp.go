// Package devidp is an OpenID Connect issuer for development. `broker
// serve --dev` embeds it so that dev users log in through the exact
// verification real users go through: discovery, a JWKS and ES256-signed
// ID tokens, checked by go-oidc like any other issuer's.
//
// It is a DEV issuer and nothing else. It has no passwords: anyone who
// can reach its handler can sign in as any of its dev users, by design.
// Never serve it where anyone but the developer can reach it, and never
// list it among the issuers of a production broker.
//
// One [IdP] serves several issuers (say the vendor's and a customer's),
// each under [IdP.IssuerURL] with its own P-256 signing key, clients and
// users. Each issuer offers the authorization code flow with PKCE (S256
// only), refresh tokens that rotate on every use, and the device
// authorization grant (RFC 8628). Clients are public: they send client_id
// in the form and no secret, and a token request with an Authorization
// header is refused with invalid_client before it is looked at (so the
// auth-style autodetection of golang.org/x/oauth2, which then retries
// with the form, spends no code and makes no device poll). Everything
// lives in memory, bounded, and is lost when the process stops.
//
// The handler must be served at [Options.BaseURL], which must be known
// before [New]; with httptest, create the server unstarted and read its
// listener's address first (see the package example).
package devidp

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"
	"sync"
	"time"
)

// Defaults and limits.
const (
	// DefaultIDTokenTTL is the lifetime of ID and access tokens when
	// [Options.IDTokenTTL] is zero.
	DefaultIDTokenTTL = 15 * time.Minute
	// DefaultDeviceInterval is the device-flow polling interval when
	// [Options.DeviceInterval] is zero.
	DefaultDeviceInterval = time.Second

	codeTTL         = 60 * time.Second
	deviceTTL       = 10 * time.Minute
	refreshTokenTTL = 24 * time.Hour
	// deviceGrace keeps an expired device request long enough to answer
	// its late polls with expired_token rather than invalid_grant.
	deviceGrace = 10 * time.Minute
	// slowDownStep is what RFC 8628 §3.5 makes a client add to its
	// interval after slow_down; the issuer adds it to the interval it
	// expects too.
	slowDownStep = 5 * time.Second

	// maxPending bounds each issuer's codes, device requests and refresh
	// tokens; past it the oldest entry is dropped.
	maxPending = 10_000
	// maxKeys bounds an issuer's JWKS; RotateKey drops the oldest key
	// past it.
	maxKeys = 16
	// maxFormBytes bounds every request body.
	maxFormBytes = 64 << 10
	// maxQueryBytes bounds the query of GET /authorize and GET /device.
	maxQueryBytes = 16 << 10
	// maxParamBytes bounds any single parameter.
	maxParamBytes = 2048
)

// User is a dev user of one issuer.
type User struct {
	Email   string         // login name; unique within its issuer
	Subject string         // sub claim; defaults to "dev|" + Email
	Name    string         // name claim, omitted when empty
	Groups  []string       // "groups" claim
	Claims  map[string]any // extra claims (e.g. "github_login"); may not set a claim the issuer sets itself
}

// IssuerSpec is one issuer served under Options.BaseURL + "/" + Name.
type IssuerSpec struct {
	Name      string   // URL path segment, a DNS label
	ClientIDs []string // accepted client_ids (public clients, no secret)
	Users     []User
}

// Options configures an [IdP]. BaseURL and Issuers are required; every
// other field has a useful zero value.
type Options struct {
	// BaseURL is the absolute URL the handler is served under, e.g.
	// "http://127.0.0.1:8080/dev/idp". Its path may hold only letters,
	// digits and "-._~/".
	BaseURL string
	Issuers []IssuerSpec
	// Now is the clock; it defaults to time.Now.
	Now func() time.Time
	// IDTokenTTL is the lifetime of ID and access tokens; it defaults to
	// [DefaultIDTokenTTL].
	IDTokenTTL time.Duration
	// DeviceInterval is the polling interval announced for the device
	// flow, in whole seconds; it defaults to [DefaultDeviceInterval].
	DeviceInterval time.Duration
	// RedirectURIs are accepted exactly, besides any http loopback
	// redirect (127.0.0.1, [::1] or localhost, any port; RFC 8252 §7.3).
	RedirectURIs []string
}

// Validate reports every problem in o, each naming the field to fix,
// joined into one error; it returns nil if o is usable.
func (o Options) Validate() error {
	var errs []error
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("devidp options: "+format, args...))
	}
	if _, err := parseBaseURL(o.BaseURL); err != nil {
		fail("base_url: %v", err)
	}
	if o.IDTokenTTL < 0 {
		fail("id token ttl %v is negative; leave it zero for %v", o.IDTokenTTL, DefaultIDTokenTTL)
	}
	if o.DeviceInterval < 0 || o.DeviceInterval%time.Second != 0 {
		fail("device interval %v is not a whole, positive number of seconds", o.DeviceInterval)
	}
	for i, raw := range o.RedirectURIs {
		if err := checkRedirectURI(raw); err != nil {
			fail("redirect_uris[%d]: %v", i, err)
		}
	}
	if len(o.Issuers) == 0 {
		fail("no issuers; add at least one")
	}
	names := map[string]int{}
	for i, spec := range o.Issuers {
		where := fmt.Sprintf("issuers[%d]", i)
		if spec.Name != "" {
			where = fmt.Sprintf("issuers[%d] (%q)", i, spec.Name)
		}
		if !isDNSLabel(spec.Name) {
			fail("%s: name %q is not a lowercase DNS label (a-z, 0-9 and inner dashes, at most 63)", where, spec.Name)
		} else if j, dup := names[spec.Name]; dup {
			fail("%s: name is already used by issuers[%d]", where, j)
		} else {
			names[spec.Name] = i
		}
		if len(spec.ClientIDs) == 0 {
			fail("%s: no client_ids; list the clients that may log in", where)
		}
		for k, id := range spec.ClientIDs {
			switch {
			case id == "" || len(id) > maxParamBytes:
				fail("%s: client_ids[%d] is empty or longer than %d bytes", where, k, maxParamBytes)
			case slices.Index(spec.ClientIDs, id) < k:
				fail("%s: client_ids[%d] %q is listed twice", where, k, id)
			}
		}
		if len(spec.Users) == 0 {
			fail("%s: no users; add at least one dev user", where)
		}
		emails := map[string]int{}
		subjects := map[string]int{}
		for k, u := range spec.Users {
			uwhere := fmt.Sprintf("%s: users[%d]", where, k)
			if !isEmail(u.Email) {
				fail("%s: email %q is not an address like ada@vendor.test", uwhere, u.Email)
			} else if j, dup := emails[u.Email]; dup {
				fail("%s: email %q is already used by users[%d]", uwhere, u.Email, j)
			} else {
				emails[u.Email] = k
			}
			sub := u.subject()
			if j, dup := subjects[sub]; dup {
				fail("%s: subject %q is already used by users[%d]", uwhere, sub, j)
			} else {
				subjects[sub] = k
			}
			for name, v := range u.Claims {
				if reservedClaims[name] {
					fail("%s: claims[%q] is set by the issuer itself; use the User field or another name", uwhere, name)
				} else if _, err := json.Marshal(v); err != nil {
					fail("%s: claims[%q] is not JSON: %v", uwhere, name, err)
				}
			}
		}
	}
	return errors.Join(errs...)
}

// reservedClaims are set by the issuer on every ID token.
var reservedClaims = map[string]bool{
	"iss": true, "sub": true, "aud": true, "exp": true, "iat": true, "nbf": true,
	"auth_time": true, "nonce": true, "at_hash": true, "azp": true, "jti": true,
	"email": true, "email_verified": true, "name": true, "groups": true,
}

func (u User) subject() string {
	if u.Subject != "" {
		return u.Subject
	}
	return "dev|" + u.Email
}

// IdP serves the issuers of its [Options]. It is safe for concurrent use.
type IdP struct {
	base     string // BaseURL without a trailing slash
	now      func() time.Time
	ttl      time.Duration
	interval time.Duration
	redirect map[string]bool
	issuers  map[string]*issuer
	mux      *http.ServeMux
}

// issuer is one issuer's configuration and state. mu guards keys and
// the tables.
type issuer struct {
	p       *IdP
	name    string
	url     string
	path    string // url's path
	clients map[string]bool
	users   []*user // in the order of IssuerSpec.Users, for the login page
	byEmail map[string]*user
	claims  []string // claims_supported

	mu        sync.Mutex
	keys      []*signingKey // oldest first; the last one signs
	codes     *table[*authCode]
	refresh   *table[*grant]
	devices   *table[*deviceRequest]
	userCodes *table[string] // normalised user code → device table key
}

// user is a [User] copied at New, with its extra claims already JSON.
type user struct {
	email   string
	subject string
	name    string
	groups  []string
	extra   map[string]json.RawMessage
}

// New validates opts and returns an IdP with a fresh P-256 (ES256)
// signing key for each issuer.
func New(opts Options) (*IdP, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	base, _ := parseBaseURL(opts.BaseURL)
	p := &IdP{
		base:     strings.TrimSuffix(base.String(), "/"),
		now:      opts.Now,
		ttl:      opts.IDTokenTTL,
		interval: opts.DeviceInterval,
		redirect: map[string]bool{},
		issuers:  map[string]*issuer{},
		mux:      http.NewServeMux(),
	}
	if p.now == nil {
		p.now = time.Now
	}
	if p.ttl == 0 {
		p.ttl = DefaultIDTokenTTL
	}
	if p.interval == 0 {
		p.interval = DefaultDeviceInterval
	}
	for _, u := range opts.RedirectURIs {
		p.redirect[u] = true
	}
	for _, spec := range opts.Issuers {
		is, err := p.newIssuer(spec)
		if err != nil {
			return nil, err
		}
		p.issuers[spec.Name] = is
		is.routes(p.mux)
	}
	return p, nil
}

func (p *IdP) newIssuer(spec IssuerSpec) (*issuer, error) {
	is := &issuer{
		p:         p,
		name:      spec.Name,
		url:       p.IssuerURL(spec.Name),
		clients:   map[string]bool{},
		byEmail:   map[string]*user{},
		codes:     newTable[*authCode](codeTTL),
		refresh:   newTable[*grant](refreshTokenTTL),
		devices:   newTable[*deviceRequest](deviceTTL + deviceGrace),
		userCodes: newTable[string](deviceTTL + deviceGrace),
	}
	u, _ := url.Parse(is.url)
	is.path = u.Path
	for _, id := range spec.ClientIDs {
		is.clients[id] = true
	}
	claims := map[string]bool{}
	for _, su := range spec.Users {
		u := &user{
			email:   su.Email,
			subject: su.subject(),
			name:    su.Name,
			groups:  slices.Clone(su.Groups),
			extra:   map[string]json.RawMessage{},
		}
		if u.groups == nil {
			u.groups = []string{}
		}
		for name, v := range su.Claims {
			raw, err := json.Marshal(v)
			if err != nil {
				return nil, fmt.Errorf("issuer %q: user %q: claim %q: %w", spec.Name, su.Email, name, err)
			}
			u.extra[name] = raw
			claims[name] = true
		}
		is.users = append(is.users, u)
		is.byEmail[u.email] = u
	}
	is.claims = []string{"iss", "sub", "aud", "exp", "iat", "nbf", "auth_time", "nonce", "at_hash",
		"email", "email_verified", "name", "groups"}
	extra := make([]string, 0, len(claims))
	for c := range claims {
		extra = append(extra, c)
	}
	slices.Sort(extra)
	is.claims = append(is.claims, extra...)
	k, err := newSigningKey()
	if err != nil {
		return nil, fmt.Errorf("issuer %q: %w", spec.Name, err)
	}
	is.keys = []*signingKey{k}
	return is, nil
}

// Handler serves every issuer. Request paths include BaseURL's path, so
// mount it on a mux without stripping the prefix, e.g.
// mux.Handle("/dev/idp/", idp.Handler()).
func (p *IdP) Handler() http.Handler { return p.mux }

// IssuerURL returns the issuer URL of the issuer called name: BaseURL +
// "/" + name, whether or not such an issuer exists.
func (p *IdP) IssuerURL(name string) string { return p.base + "/" + name }

// RotateKey gives issuer name a new signing key with a new kid. The old
// key stays in the JWKS, so tokens it signed still verify, until
// [IdP.RetireOldKeys]; past 16 keys the oldest is dropped.
func (p *IdP) RotateKey(name string) error {
	is, err := p.issuer(name)
	if err != nil {
		return fmt.Errorf("rotate key: %w", err)
	}
	k, err := newSigningKey()
	if err != nil {
		return fmt.Errorf("rotate key of issuer %q: %w", name, err)
	}
	is.mu.Lock()
	defer is.mu.Unlock()
	is.keys = append(is.keys, k)
	if len(is.keys) > maxKeys {
		is.keys = slices.Delete(is.keys, 0, len(is.keys)-maxKeys)
	}
	return nil
}

// RetireOldKeys removes every key but the current signing key from the
// JWKS of issuer name, so tokens signed before the last [IdP.RotateKey]
// no longer verify (once verifiers refetch the JWKS).
func (p *IdP) RetireOldKeys(name string) error {
	is, err := p.issuer(name)
	if err != nil {
		return fmt.Errorf("retire old keys: %w", err)
	}
	is.mu.Lock()
	defer is.mu.Unlock()
	is.keys = is.keys[len(is.keys)-1:]
	return nil
}

// Token mints an ID token for the dev user email of issuer, with aud
// clientID and, when not empty, nonce; auth_time and iat are now. It is
// for tests that need a token without a flow: clientID need not be one
// of the issuer's ClientIDs, so tests can mint tokens for the wrong
// audience too.
func (p *IdP) Token(issuer, email, clientID, nonce string) (string, error) {
	is, err := p.issuer(issuer)
	if err != nil {
		return "", fmt.Errorf("mint id token: %w", err)
	}
	u, ok := is.byEmail[email]
	if !ok {
		return "", fmt.Errorf("mint id token: issuer %q has no dev user %q", issuer, email)
	}
	if clientID == "" {
		return "", errors.New("mint id token: empty client id")
	}
	now := p.now()
	return is.idToken(u, clientID, nonce, "", now, now)
}

func (p *IdP) issuer(name string) (*issuer, error) {
	is, ok := p.issuers[name]
	if !ok {
		return nil, fmt.Errorf("no issuer %q", name)
	}
	return is, nil
}

// routes registers the issuer's endpoints on mux.
func (is *issuer) routes(mux *http.ServeMux) {
	b := is.path
	mux.HandleFunc("GET "+b+"/.well-known/openid-configuration", is.serveDiscovery)
	mux.HandleFunc("GET "+b+"/jwks", is.serveJWKS)
	mux.HandleFunc("GET "+b+"/authorize", is.serveAuthorize)
	mux.HandleFunc("POST "+b+"/authorize", is.serveAuthorize)
	mux.HandleFunc("POST "+b+"/token", is.serveToken)
	mux.HandleFunc("POST "+b+"/device/code", is.serveDeviceCode)
	mux.HandleFunc("GET "+b+"/device", is.serveDevicePage)
	mux.HandleFunc("POST "+b+"/device", is.serveDeviceDecision)
}

// supportedScopes are granted when asked for; others are ignored.
var supportedScopes = []string{"openid", "email", "profile", "groups", "offline_access"}

func (is *issuer) serveDiscovery(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                         is.url,
		"authorization_endpoint":                         is.url + "/authorize",
		"token_endpoint":                                 is.url + "/token",
		"jwks_uri":                                       is.url + "/jwks",
		"device_authorization_endpoint":                  is.url + "/device/code",
		"response_types_supported":                       []string{"code"},
		"response_modes_supported":                       []string{"query"},
		"grant_types_supported":                          []string{"authorization_code", "refresh_token", deviceGrantType},
		"subject_types_supported":                        []string{"public"},
		"id_token_signing_alg_values_supported":          []string{"ES256"},
		"code_challenge_methods_supported":               []string{"S256"},
		"token_endpoint_auth_methods_supported":          []string{"none"},
		"scopes_supported":                               supportedScopes,
		"claims_supported":                               is.claims,
		"authorization_response_iss_parameter_supported": true,
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client went away; nothing to do
}

// parseBaseURL checks that raw is an absolute http(s) URL whose path
// needs no escaping and is clean, so it can prefix ServeMux patterns.
func parseBaseURL(raw string) (*url.URL, error) {
	if raw == "" {
		return nil, errors.New("empty; set the absolute URL the handler is served under")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%q does not parse: %w", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("%q has scheme %q; use http or https", raw, u.Scheme)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("%q has no host", raw)
	}
	if u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.Opaque != "" {
		return nil, fmt.Errorf("%q must not carry user info, a query or a fragment", raw)
	}
	p := strings.TrimSuffix(u.Path, "/")
	for _, c := range p {
		if !isUnreserved(c) && c != '/' {
			return nil, fmt.Errorf("%q: path may hold only letters, digits and -._~/", raw)
		}
	}
	if p != "" && path.Clean(p) != p {
		return nil, fmt.Errorf("%q: path is not clean (no //, . or .. segments)", raw)
	}
	u.Path = p
	return u, nil
}

func isUnreserved(c rune) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

func isDNSLabel(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for _, c := range s {
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// isEmail is deliberately loose: one @ with something on each side and
// no spaces or control characters.
func isEmail(s string) bool {
	at := strings.IndexByte(s, '@')
	if at <= 0 || at == len(s)-1 || strings.Count(s, "@") != 1 || len(s) > 254 {
		return false
	}
	for _, c := range s {
		if c <= ' ' || c == 0x7f {
			return false
		}
	}
	return true
}
