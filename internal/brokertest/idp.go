package brokertest

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/devbroker"
	"github.com/tetherhq/tether/internal/devidp"
	"github.com/tetherhq/tether/internal/identity"
)

// IdP is an OpenID Connect provider run by the test, standing in for the
// vendor's and two customers' identity providers: issuers vendor, acme
// and globex with the dev users of [devbroker.Identity]. Each issuer has
// its own signing key.
type IdP struct {
	*devidp.IdP
	// Config trusts the three issuers; give it to a broker.
	Config identity.Config
	URL    string

	mu  sync.Mutex
	now time.Time // zero: the real clock
}

// NewIdP starts an identity provider on loopback until the test ends.
func NewIdP(t testing.TB) *IdP {
	t.Helper()
	p := &IdP{}
	var h http.Handler
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(w, r) }))
	t.Cleanup(srv.Close)
	idp, cfg, err := devbroker.Identity(srv.URL+"/idp", p.clock)
	if err != nil {
		t.Fatal(err)
	}
	h = idp.Handler()
	p.IdP, p.Config, p.URL = idp, cfg, srv.URL
	return p
}

func (p *IdP) clock() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.now.IsZero() {
		return time.Now()
	}
	return p.now
}

// IssuerOf names the issuer of a dev user: vendor.test users are the
// vendor's, acme.test users acme's, globex.test users globex's.
func IssuerOf(email string) string {
	_, domain, _ := strings.Cut(email, "@")
	name, _, _ := strings.Cut(domain, ".")
	if name == "vendor" {
		return "vendor"
	}
	return name
}

// Token mints a valid ID token for a dev user, as its issuer would after
// a login.
func (p *IdP) Token(t testing.TB, email string) string {
	t.Helper()
	tok, err := p.IdP.Token(IssuerOf(email), email, devbroker.ClientID, "")
	if err != nil {
		t.Fatalf("mint ID token for %s: %v", email, err)
	}
	return tok
}

// TokenAt mints an ID token for a dev user as if issued at when; one
// issued an hour ago has expired.
func (p *IdP) TokenAt(t testing.TB, email string, when time.Time) string {
	t.Helper()
	p.mu.Lock()
	p.now = when
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.now = time.Time{}
		p.mu.Unlock()
	}()
	return p.Token(t, email)
}
