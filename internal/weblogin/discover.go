package weblogin

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/coreos/go-oidc/v3/oidc"
)

// endpoint is what a login needs from a provider's discovery document.
type endpoint struct {
	AuthURL  string
	TokenURL string
}

// discoverFunc fetches and checks an issuer's discovery document.
type discoverFunc func(ctx context.Context, issuerURL string) (endpoint, error)

// oidcDiscover discovers issuers with go-oidc, which also checks that
// the document names the issuer it was fetched for.
func oidcDiscover(client *http.Client) discoverFunc {
	return func(ctx context.Context, issuerURL string) (endpoint, error) {
		ctx, cancel := context.WithTimeout(oidc.ClientContext(ctx, client), upstreamTimeout)
		defer cancel()
		p, err := oidc.NewProvider(ctx, issuerURL)
		if err != nil {
			return endpoint{}, err
		}
		e := p.Endpoint()
		if e.AuthURL == "" || e.TokenURL == "" {
			return endpoint{}, errors.New("discovery document lacks authorization_endpoint or token_endpoint")
		}
		return endpoint{AuthURL: e.AuthURL, TokenURL: e.TokenURL}, nil
	}
}

// endpoint returns p's endpoints, discovering them on first use. A failed
// discovery is not cached: the next login retries it.
func (m *Manager) endpoint(ctx context.Context, p *provider) (endpoint, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.endpoint != nil {
		return *p.endpoint, nil
	}
	e, err := m.discover(ctx, p.cfg.IssuerURL)
	if err != nil {
		return endpoint{}, fmt.Errorf("discover %s: %w", p.cfg.IssuerURL, err)
	}
	p.endpoint = &e
	return e, nil
}
