package approval

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// Bounds on what a [KeySet] fetches.
const (
	maxDocument = 1 << 20 // a discovery document or a JWKS
	maxKeys     = 64
	// fetchTimeout bounds one discovery and JWKS fetch.
	fetchTimeout = 10 * time.Second
	// minRefetch spaces fetches for an unknown kid, so a flood of tokens
	// naming made-up keys costs the provider one request a period.
	minRefetch = 30 * time.Second
	// keysTTL is how long fetched keys are used before they are fetched
	// again; a failed refresh keeps the old keys up to keysStale.
	keysTTL   = time.Hour
	keysStale = 24 * time.Hour
)

// KeySet holds an OpenID Connect issuer's signing keys, fetched from its
// discovery document's jwks_uri over HTTPS (http only on loopback). Keys
// are cached, fetched again for an unknown kid at most once every 30 s and
// refreshed hourly. It is safe for concurrent use.
type KeySet struct {
	issuer string
	client *http.Client
	now    func() time.Time

	mu      sync.Mutex
	keys    []jose.JSONWebKey
	fetched time.Time // when keys were last fetched
	tried   time.Time // when a fetch was last tried
}

// NewKeySet returns the key set of issuer; nil client means one with a
// 10 s timeout that follows no redirects.
func NewKeySet(issuer string, client *http.Client, now func() time.Time) (*KeySet, error) {
	if err := CheckIssuerURL(issuer); err != nil {
		return nil, err
	}
	if client == nil {
		client = &http.Client{
			Timeout:       fetchTimeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	if now == nil {
		now = time.Now
	}
	return &KeySet{issuer: issuer, client: client, now: now}, nil
}

// CheckIssuerURL refuses an issuer URL that is not https (http is allowed
// for loopback hosts, in development), or that carries a query, fragment
// or user info.
func CheckIssuerURL(raw string) error {
	u, err := url.Parse(raw)
	switch {
	case raw == "":
		return errors.New("no issuer URL: give the customer identity provider's issuer, exactly as its tokens' iss claim")
	case err != nil || u.Host == "":
		return fmt.Errorf("issuer %q is not an absolute URL", clip(raw))
	case u.User != nil || u.RawQuery != "" || u.Fragment != "":
		return fmt.Errorf("issuer %q must not carry user info, a query or a fragment", clip(raw))
	case u.Scheme == "https":
		return nil
	case u.Scheme == "http" && isLoopback(u.Hostname()):
		return nil
	case u.Scheme == "http":
		return fmt.Errorf("issuer %q uses http; use https (http is allowed only for 127.0.0.1, ::1 and localhost)", clip(raw))
	}
	return fmt.Errorf("issuer %q has scheme %q; use https", clip(raw), u.Scheme)
}

func isLoopback(host string) bool {
	return host == "localhost" || host == "127.0.0.1" || host == "::1"
}

// Issuer is the issuer URL whose keys these are.
func (k *KeySet) Issuer() string { return k.issuer }

// Prefetch fetches the keys now, to surface a misconfigured or
// unreachable provider at start rather than at the first grant.
func (k *KeySet) Prefetch(ctx context.Context) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.fetchLocked(ctx)
}

// key returns the key kid names (any key usable for alg when kid is
// empty), fetching the set when it is unknown, stale or not yet fetched.
func (k *KeySet) key(ctx context.Context, kid, alg string) ([]jose.JSONWebKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.now()
	if k.fetched.IsZero() || now.Sub(k.fetched) > keysTTL {
		if err := k.fetchLocked(ctx); err != nil && (k.fetched.IsZero() || now.Sub(k.fetched) > keysStale) {
			return nil, err
		}
	}
	if m := k.match(kid, alg); len(m) > 0 {
		return m, nil
	}
	if kid != "" && now.Sub(k.tried) >= minRefetch {
		if err := k.fetchLocked(ctx); err != nil {
			return nil, err
		}
		if m := k.match(kid, alg); len(m) > 0 {
			return m, nil
		}
	}
	if kid == "" {
		return nil, fmt.Errorf("issuer %s has no %s key", k.issuer, alg)
	}
	return nil, fmt.Errorf("issuer %s has no key %q", k.issuer, clip(kid))
}

func (k *KeySet) match(kid, alg string) []jose.JSONWebKey {
	var out []jose.JSONWebKey
	for _, key := range k.keys {
		if (kid == "" || key.KeyID == kid) && (key.Algorithm == "" || key.Algorithm == alg) && keyFits(key, alg) {
			out = append(out, key)
		}
	}
	return out
}

// keyFits reports whether key's type can verify alg.
func keyFits(key jose.JSONWebKey, alg string) bool {
	switch pk := key.Key.(type) {
	case *rsa.PublicKey:
		return alg == string(jose.RS256) && pk.N.BitLen() >= 2048
	case *ecdsa.PublicKey:
		return alg == string(jose.ES256)
	case ed25519.PublicKey:
		return alg == string(jose.EdDSA)
	}
	return false
}

// fetchLocked reads the discovery document and the JWKS; k.mu is held.
func (k *KeySet) fetchLocked(ctx context.Context) error {
	k.tried = k.now()
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	var disc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := k.get(ctx, strings.TrimSuffix(k.issuer, "/")+"/.well-known/openid-configuration", &disc); err != nil {
		return fmt.Errorf("discover issuer %s: %w", k.issuer, err)
	}
	if disc.Issuer != k.issuer {
		return fmt.Errorf("discover issuer %s: the document names issuer %q", k.issuer, clip(disc.Issuer))
	}
	if err := CheckIssuerURL(disc.JWKSURI); err != nil {
		return fmt.Errorf("discover issuer %s: jwks_uri: %w", k.issuer, err)
	}
	var set jose.JSONWebKeySet
	if err := k.get(ctx, disc.JWKSURI, &set); err != nil {
		return fmt.Errorf("fetch the keys of issuer %s: %w", k.issuer, err)
	}
	if len(set.Keys) > maxKeys {
		return fmt.Errorf("fetch the keys of issuer %s: %d keys, over the limit of %d", k.issuer, len(set.Keys), maxKeys)
	}
	var keys []jose.JSONWebKey
	for _, key := range set.Keys {
		if key.Use != "" && key.Use != "sig" || !key.IsPublic() {
			continue
		}
		keys = append(keys, key)
	}
	k.keys, k.fetched = keys, k.now()
	return nil
}

func (k *KeySet) get(ctx context.Context, u string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	res, err := k.client.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, res.Status)
	}
	b, err := io.ReadAll(io.LimitReader(res.Body, maxDocument+1))
	if err != nil {
		return fmt.Errorf("GET %s: %w", u, err)
	}
	if len(b) > maxDocument {
		return fmt.Errorf("GET %s: over the %d-byte limit", u, maxDocument)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("GET %s: %w", u, err)
	}
	return nil
}
