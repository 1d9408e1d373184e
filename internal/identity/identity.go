// Package identity verifies OpenID Connect ID tokens presented to the
// broker and turns them into a [Principal]: who the user is, which issuer
// vouched for them, which tenant that issuer is bound to and which roles
// their groups give them.
//
// The vendor issuer grants vendor roles (engineer, reviewer, admin) that
// act on any tenant; each customer issuer grants only approver, bound to
// its configured tenant ([Principal.CanActOnTenant]). A token is routed to
// an issuer by its unverified iss claim and then fully verified by
// go-oidc against that issuer alone: signature (RS256, ES256 or EdDSA
// only, keys from the issuer's JWKS, refetched once for an unknown kid),
// issuer, audience and expiry with a bounded clock skew.
package identity

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetherhq/tether/internal/names"

	"github.com/coreos/go-oidc/v3/oidc"
)

// Sentinel errors callers branch on.
var (
	// ErrUnknownIssuer means the token's iss claim names no configured issuer.
	ErrUnknownIssuer = errors.New("unknown issuer")
	// ErrInvalidToken means the token failed verification; it wraps the
	// underlying go-oidc error (for example *oidc.TokenExpiredError).
	ErrInvalidToken = errors.New("invalid id token")
	// ErrNoRole means the token was valid but none of the user's groups
	// maps to a role.
	ErrNoRole = errors.New("no role")
)

// SigningAlgs are the only JWS algorithms accepted on ID tokens.
var SigningAlgs = []string{oidc.RS256, oidc.ES256, oidc.EdDSA}

const (
	// DefaultClockSkew is how long past exp a token is still accepted.
	DefaultClockSkew = 60 * time.Second
	// MaxClockSkew bounds [WithClockSkew].
	MaxClockSkew = 5 * time.Minute
	// defaultHTTPTimeout bounds each discovery and JWKS request made with
	// the default client.
	defaultHTTPTimeout = 10 * time.Second
	// discoveryTimeout bounds discovery even if the caller's ctx does not.
	discoveryTimeout = 15 * time.Second
	// maxTokenSize refuses absurd inputs before any parsing.
	maxTokenSize = 64 << 10
)

// Option configures a [Verifier].
type Option func(*Verifier)

// WithHTTPClient sets the client used for discovery and JWKS requests.
// It should have a Timeout; the default client times out after 10s.
func WithHTTPClient(c *http.Client) Option { return func(v *Verifier) { v.client = c } }

// WithClock sets the clock used for expiry checks.
func WithClock(now func() time.Time) Option { return func(v *Verifier) { v.now = now } }

// WithClockSkew sets how long past exp a token is still accepted; it is
// clamped to [0, MaxClockSkew].
func WithClockSkew(d time.Duration) Option {
	return func(v *Verifier) { v.skew = min(max(d, 0), MaxClockSkew) }
}

// Principal is a verified user.
type Principal struct {
	Subject    string
	Email      string
	Issuer     string // issuer URL
	IssuerName string // [IssuerConfig.Name]
	Tenant     string // empty for the vendor issuer
	Roles      []string
	Groups     []string
	// GitHubLogin is the user's GitHub login, from the vendor issuer's
	// [IssuerConfig.GitHubLoginClaim]; empty when not configured or absent.
	GitHubLogin string
	Expiry      time.Time
	// IssuedAt and Nonce are the token's iat and nonce claims: an
	// approval proof's nonce is the digest of what it approves.
	IssuedAt time.Time
	Nonce    string
}

// HasRole reports whether p holds role.
func (p Principal) HasRole(role string) bool { return slices.Contains(p.Roles, role) }

// CanActOnTenant reports whether p may act on tenant. A vendor principal
// holding a vendor role may act on any tenant; a customer principal may
// act only on its own issuer's tenant, and only as an approver.
func (p Principal) CanActOnTenant(tenant string) bool {
	if tenant == "" {
		return false
	}
	if p.Tenant == "" {
		return p.HasRole(names.RoleEngineer) || p.HasRole(names.RoleReviewer) || p.HasRole(names.RoleAdmin)
	}
	return p.Tenant == tenant && p.HasRole(names.RoleApprover)
}

// Verifier verifies ID tokens from the issuers of a [Config]. It is safe
// for concurrent use. Each issuer is discovered on its first token, so the
// broker starts even while an issuer is unreachable.
type Verifier struct {
	issuers map[string]*issuer // by issuer URL
	client  *http.Client
	now     func() time.Time
	skew    time.Duration

	// verified caches the principals of tokens that passed verification,
	// by SHA-256 of the raw token, until they expire. The CLI sends the
	// same ID token with every call, and a signature check alone costs
	// 35-85 µs here; a hit costs a hash.
	// Any fetch of discovery or keys bumps keysGen and so empties the
	// cache: go-oidc refetches the JWKS only for an unknown kid, and a
	// key the refetch retires must stop vouching for its tokens at once.
	mu       sync.Mutex
	verified map[[32]byte]cachedPrincipal
	keysGen  atomic.Uint64
}

type cachedPrincipal struct {
	p   Principal
	gen uint64
}

// genTransport counts the requests of a Verifier's HTTP client.
type genTransport struct {
	base http.RoundTripper
	gen  *atomic.Uint64
}

func (t genTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	res, err := t.base.RoundTrip(r)
	t.gen.Add(1)
	return res, err
}

// maxVerified bounds the verified-token cache.
const maxVerified = 4096

type issuer struct {
	cfg       IssuerConfig
	audiences []string

	mu       sync.Mutex
	verifier *oidc.IDTokenVerifier // nil until discovered
}

// New validates cfg and returns a Verifier for it. It does not contact
// the issuers.
func New(ctx context.Context, cfg Config, opts ...Option) (*Verifier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	v := &Verifier{
		issuers:  make(map[string]*issuer, len(cfg.Issuers)),
		client:   &http.Client{Timeout: defaultHTTPTimeout},
		now:      time.Now,
		skew:     DefaultClockSkew,
		verified: make(map[[32]byte]cachedPrincipal),
	}
	for _, o := range opts {
		o(v)
	}
	hc := *v.client
	if hc.Transport == nil {
		hc.Transport = http.DefaultTransport
	}
	hc.Transport = genTransport{base: hc.Transport, gen: &v.keysGen}
	v.client = &hc
	for _, ic := range cfg.Issuers {
		ic.RoleMap = cloneMap(ic.RoleMap)
		v.issuers[ic.IssuerURL] = &issuer{
			cfg:       ic,
			audiences: append([]string{ic.ClientID, ic.CLIClient()}, ic.Audiences...),
		}
	}
	return v, nil
}

func cloneMap(m map[string]string) map[string]string {
	c := make(map[string]string, len(m))
	for k, val := range m {
		c[k] = val
	}
	return c
}

// Verify verifies rawIDToken and returns its principal. It returns an
// error wrapping [ErrUnknownIssuer], [ErrInvalidToken] or [ErrNoRole]
// when the token is refused, and an error wrapping none of them when the
// issuer could not be discovered (the token may be fine; retry later).
func (v *Verifier) Verify(ctx context.Context, rawIDToken string) (Principal, error) {
	if len(rawIDToken) > maxTokenSize {
		return Principal{}, fmt.Errorf("verify id token: %w: token is %d bytes, over %d", ErrInvalidToken, len(rawIDToken), maxTokenSize)
	}
	key := sha256.Sum256([]byte(rawIDToken))
	if p, ok := v.cached(key); ok {
		return p, nil
	}
	gen := v.keysGen.Load()
	p, err := v.verify(ctx, rawIDToken)
	if err != nil {
		return Principal{}, err
	}
	v.remember(key, p, gen)
	return p, nil
}

// cached returns the principal of a token verified before, unless it has
// expired since.
func (v *Verifier) cached(key [32]byte) (Principal, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	c, ok := v.verified[key]
	if !ok {
		return Principal{}, false
	}
	p := c.p
	if c.gen != v.keysGen.Load() || !v.now().Add(-v.skew).Before(p.Expiry) {
		delete(v.verified, key)
		return Principal{}, false
	}
	p.Roles = slices.Clone(p.Roles)
	p.Groups = slices.Clone(p.Groups)
	return p, true
}

// remember caches p, verified with the keys of generation gen.
func (v *Verifier) remember(key [32]byte, p Principal, gen uint64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.verified) >= maxVerified {
		cutoff := v.now().Add(-v.skew)
		for k, q := range v.verified {
			if !cutoff.Before(q.p.Expiry) {
				delete(v.verified, k)
			}
		}
		// Still full: drop an arbitrary entry; it is only a cache.
		for k := range v.verified {
			if len(v.verified) < maxVerified {
				break
			}
			delete(v.verified, k)
		}
	}
	p.Roles = slices.Clone(p.Roles)
	p.Groups = slices.Clone(p.Groups)
	v.verified[key] = cachedPrincipal{p: p, gen: gen}
}

func (v *Verifier) verify(ctx context.Context, rawIDToken string) (Principal, error) {
	iss, err := unverifiedIssuer(rawIDToken)
	if err != nil {
		return Principal{}, fmt.Errorf("verify id token: %w: %w", ErrInvalidToken, err)
	}
	is, ok := v.issuers[iss]
	if !ok {
		return Principal{}, fmt.Errorf("verify id token: iss %q: %w", truncate(iss, 200), ErrUnknownIssuer)
	}
	ov, err := is.oidcVerifier(ctx, v)
	if err != nil {
		return Principal{}, fmt.Errorf("verify id token from %q: %w", is.cfg.Name, err)
	}
	tok, err := ov.Verify(ctx, rawIDToken)
	if err != nil {
		return Principal{}, fmt.Errorf("verify id token from %q: %w: %w", is.cfg.Name, ErrInvalidToken, err)
	}
	if !slices.ContainsFunc(tok.Audience, func(a string) bool { return slices.Contains(is.audiences, a) }) {
		return Principal{}, fmt.Errorf("verify id token from %q: %w: audience %q holds none of %q", is.cfg.Name, ErrInvalidToken, tok.Audience, is.audiences)
	}
	if tok.Subject == "" {
		return Principal{}, fmt.Errorf("verify id token from %q: %w: no sub claim", is.cfg.Name, ErrInvalidToken)
	}
	var claims map[string]json.RawMessage
	if err := tok.Claims(&claims); err != nil {
		return Principal{}, fmt.Errorf("verify id token from %q: %w: %w", is.cfg.Name, ErrInvalidToken, err)
	}
	groups, err := stringsClaim(claims[is.cfg.groupsClaim()])
	if err != nil {
		return Principal{}, fmt.Errorf("verify id token from %q: %w: claim %q: %w", is.cfg.Name, ErrInvalidToken, is.cfg.groupsClaim(), err)
	}
	var email string
	if raw, ok := claims["email"]; ok {
		// A malformed email is dropped rather than refusing the token:
		// authorization never depends on it.
		_ = json.Unmarshal(raw, &email)
	}
	var roles []string
	for _, g := range groups {
		if r, ok := is.cfg.RoleMap[g]; ok && !slices.Contains(roles, r) {
			roles = append(roles, r)
		}
	}
	if slices.Contains(is.cfg.Admins, tok.Subject) && !slices.Contains(roles, names.RoleAdmin) {
		roles = append(roles, names.RoleAdmin)
	}
	var ghLogin string
	if c := is.cfg.GitHubLoginClaim; c != "" {
		if raw, ok := claims[c]; ok {
			// Like email: a malformed login is dropped, and GitHub lookups
			// then find no teams.
			_ = json.Unmarshal(raw, &ghLogin)
		}
	}
	if len(roles) == 0 {
		return Principal{}, fmt.Errorf("verify id token from %q: subject %q in groups %q: %w", is.cfg.Name, tok.Subject, groups, ErrNoRole)
	}
	slices.Sort(roles)
	return Principal{
		Subject:     tok.Subject,
		Email:       email,
		Issuer:      is.cfg.IssuerURL,
		IssuerName:  is.cfg.Name,
		Tenant:      is.cfg.Tenant,
		Roles:       roles,
		Groups:      groups,
		GitHubLogin: ghLogin,
		Expiry:      tok.Expiry,
		IssuedAt:    tok.IssuedAt,
		Nonce:       tok.Nonce,
	}, nil
}

// oidcVerifier discovers the issuer on first use. A failed discovery is
// not cached, so the next token retries it.
func (is *issuer) oidcVerifier(ctx context.Context, v *Verifier) (*oidc.IDTokenVerifier, error) {
	is.mu.Lock()
	defer is.mu.Unlock()
	if is.verifier != nil {
		return is.verifier, nil
	}
	dctx, cancel := context.WithTimeout(oidc.ClientContext(ctx, v.client), discoveryTimeout)
	defer cancel()
	provider, err := oidc.NewProvider(dctx, is.cfg.IssuerURL)
	if err != nil {
		return nil, fmt.Errorf("discover issuer %s: %w", is.cfg.IssuerURL, err)
	}
	// The key set outlives this request: give it a context that carries
	// only the HTTP client.
	keysCtx := oidc.ClientContext(context.Background(), v.client)
	is.verifier = provider.VerifierContext(keysCtx, &oidc.Config{
		// Audience is checked by Verify against ClientID and Audiences.
		SkipClientIDCheck:    true,
		SupportedSigningAlgs: SigningAlgs,
		// Shifting the clock back by the skew accepts tokens up to skew
		// past exp.
		Now: func() time.Time { return v.now().Add(-v.skew) },
	})
	return is.verifier, nil
}

// unverifiedIssuer returns the iss claim of a compact JWS without
// verifying it; it is used only to pick the issuer to verify against.
func unverifiedIssuer(raw string) (string, error) {
	if len(raw) > maxTokenSize {
		return "", fmt.Errorf("token is %d bytes, over %d", len(raw), maxTokenSize)
	}
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return "", errors.New("not a compact JWS")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", fmt.Errorf("payload: %w", err)
	}
	var c struct {
		Iss string `json:"iss"`
	}
	if err := json.Unmarshal(payload, &c); err != nil {
		return "", fmt.Errorf("payload: %w", err)
	}
	if c.Iss == "" {
		return "", errors.New("no iss claim")
	}
	return c.Iss, nil
}

// stringsClaim decodes a claim that is absent, a string or a list of
// strings.
func stringsClaim(raw json.RawMessage) ([]string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err == nil {
		return list, nil
	}
	var one string
	if err := json.Unmarshal(raw, &one); err != nil {
		return nil, errors.New("want a string or a list of strings")
	}
	return []string{one}, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
