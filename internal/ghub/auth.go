package ghub

import (
	"context"
	"crypto/rsa"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/go-github/v60/github"
)

const (
	// appJWTBackdate and appJWTLifetime follow GitHub's advice for app
	// JWTs: issued a minute in the past against clock drift, and valid
	// for under the 10 minutes GitHub allows.
	appJWTBackdate = 60 * time.Second
	appJWTLifetime = 9 * time.Minute
	// installationTokenMargin is how long before its expiry an
	// installation token is replaced, so no request carries a token that
	// expires in flight.
	installationTokenMargin = time.Minute
)

// tokenSource returns the credential for the next request.
type tokenSource interface {
	token(ctx context.Context) (string, error)
}

// authTransport adds an Authorization header to requests for the GitHub
// API origin, and to no other: a redirect elsewhere goes without it.
type authTransport struct {
	next   http.RoundTripper
	src    tokenSource
	scheme string // "token" or "Bearer"
	origin *url.URL
}

var _ http.RoundTripper = (*authTransport)(nil)

func (t *authTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != t.origin.Scheme || !strings.EqualFold(req.URL.Host, t.origin.Host) {
		return t.next.RoundTrip(req)
	}
	tok, err := t.src.token(req.Context())
	if err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	r := req.Clone(req.Context())
	r.Header.Set("Authorization", t.scheme+" "+tok)
	return t.next.RoundTrip(r)
}

// staticToken is a token given in the configuration.
type staticToken string

func (s staticToken) token(context.Context) (string, error) { return string(s), nil }

// appJWT signs the short-lived JWTs a GitHub App authenticates with.
type appJWT struct {
	issuer string // the app ID
	signer jose.Signer
	now    func() time.Time
}

func newAppJWT(appID int64, key *rsa.PrivateKey, now func() time.Time) (*appJWT, error) {
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return nil, fmt.Errorf("github app %d: set up JWT signing: %w", appID, err)
	}
	return &appJWT{issuer: strconv.FormatInt(appID, 10), signer: signer, now: now}, nil
}

func (a *appJWT) token(context.Context) (string, error) {
	now := a.now()
	s, err := jwt.Signed(a.signer).Claims(jwt.Claims{
		Issuer:   a.issuer,
		IssuedAt: jwt.NewNumericDate(now.Add(-appJWTBackdate)),
		Expiry:   jwt.NewNumericDate(now.Add(appJWTLifetime)),
	}).Serialize()
	if err != nil {
		return "", fmt.Errorf("github app %s: sign JWT: %w", a.issuer, err)
	}
	return s, nil
}

// installationTokens exchanges app JWTs for installation tokens and
// keeps each until a minute before it expires.
type installationTokens struct {
	appID, installationID int64
	apps                  *github.AppsService // authenticated with app JWTs
	now                   func() time.Time

	// exchange admits one exchange at a time, so a burst of requests
	// after expiry makes one exchange, not one each.
	exchange chan struct{}

	mu        sync.Mutex
	tok       string
	refreshAt time.Time
}

func (s *installationTokens) cached() (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tok, s.tok != "" && s.now().Before(s.refreshAt)
}

func (s *installationTokens) token(ctx context.Context) (string, error) {
	if tok, ok := s.cached(); ok {
		return tok, nil
	}
	select {
	case s.exchange <- struct{}{}:
		defer func() { <-s.exchange }()
	case <-ctx.Done():
		return "", ctx.Err()
	}
	if tok, ok := s.cached(); ok { // refreshed while we waited
		return tok, nil
	}

	op := fmt.Sprintf("get an installation token for github app %d installation %d", s.appID, s.installationID)
	it, _, err := s.apps.CreateInstallationToken(ctx, s.installationID, nil)
	switch status := statusOf(err); {
	case err == nil:
	case status == http.StatusUnauthorized:
		return "", fmt.Errorf("%s: github refused the app JWT; check app_id and that private_key_pem is a current key of the app: %w: %w", op, ErrUnauthorized, err)
	case status == http.StatusNotFound:
		return "", fmt.Errorf("%s: no such installation of the app; check installation_id: %w: %w", op, ErrUnauthorized, err)
	default:
		return "", classify(ctx, s.now, op, err)
	}
	if it.GetToken() == "" {
		return "", fmt.Errorf("%s: the response holds no token; try again later: %w", op, ErrUnavailable)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.tok = it.GetToken()
	// Without an expiry the token serves this request only.
	s.refreshAt = time.Time{}
	if exp := it.GetExpiresAt(); !exp.IsZero() {
		s.refreshAt = exp.Add(-installationTokenMargin)
	}
	return s.tok, nil
}
