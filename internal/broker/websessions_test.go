package broker_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/broker"
	"github.com/tetherhq/tether/internal/brokertest"
	"github.com/tetherhq/tether/internal/pgtest"
)

// loadBalancer is a reverse proxy on loopback in front of whichever
// broker the test points it at, as a vendor's load balancer in front of
// several: browsers and identity providers see its URL alone.
type loadBalancer struct {
	URL    string
	target atomic.Pointer[httputil.ReverseProxy]
}

func newLoadBalancer(t *testing.T) *loadBalancer {
	t.Helper()
	lb := &loadBalancer{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := lb.target.Load()
		if p == nil {
			http.Error(w, "no broker behind the load balancer", http.StatusBadGateway)
			return
		}
		p.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	lb.URL = srv.URL
	return lb
}

// to sends what follows to the broker at apiURL.
func (lb *loadBalancer) to(t *testing.T, apiURL string) {
	t.Helper()
	u, err := url.Parse(apiURL)
	if err != nil {
		t.Fatal(err)
	}
	lb.target.Store(httputil.NewSingleHostReverseProxy(u))
}

// runBroker runs a broker outside dev mode with cfg until the test ends
// or the returned stop is called.
func runBroker(t *testing.T, cfg broker.Config) (b *broker.Broker, stop func()) {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.HeartbeatInterval == 0 {
		cfg.HeartbeatInterval = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = brokertest.Logger(t, slog.LevelWarn)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b, err := broker.New(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatalf("broker.New: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-done; err != nil {
				t.Errorf("broker.Run: %v", err)
			}
		}
	}
	t.Cleanup(stop)
	return b, stop
}

// signedIn reports whether br's session cookie is honoured at the broker
// the load balancer points to.
func signedIn(br *browser, email string) bool {
	br.t.Helper()
	res, body := br.do(http.MethodGet, "/ui/", nil)
	return res.StatusCode == http.StatusOK && strings.Contains(body, email)
}

// TestWebSessionsAcrossBrokers: two brokers on one PostgreSQL database,
// with one key, behind one load balancer. A sign-in begun at broker A
// completes at broker B (the callback reaches B), the session is
// honoured by both, and a sign-out at B ends it at A too, even for a
// copy of the cookie. Before web sessions lived in the store, B knew
// nothing of A's pending login ("Sign-in expired"), and a session lived
// on the broker that made it alone.
func TestWebSessionsAcrossBrokers(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.Start(t)
	idp := brokertest.NewIdP(t)
	lb := newLoadBalancer(t)
	common := func(dir string, onTailnet func(*broker.Config)) broker.Config {
		c := broker.Config{DataDir: dir, StoreDriver: "postgres", StoreDSN: dsn, Identity: idp.Config, PublicURL: lb.URL}
		onTailnet(&c)
		return c
	}
	first, second := t.TempDir(), t.TempDir()
	a, _ := runBroker(t, common(first, externalTailnet(t, ctx)))
	// The second broker shares the first's key.
	key, err := os.ReadFile(filepath.Join(first, "broker.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(second, "broker.key"), key, 0o600); err != nil {
		t.Fatal(err)
	}
	b, _ := runBroker(t, common(second, externalTailnet(t, ctx)))

	const email = "engineer@vendor.test"
	br := &browser{t: t, base: lb.URL, cookies: map[string]string{},
		hc: &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}

	// A begins the sign-in and sends the browser to the identity
	// provider; the provider's redirect back reaches B.
	lb.to(t, a.APIURL())
	_, body, at := br.follow(http.MethodGet, "/auth/login?issuer="+brokertest.IssuerOf(email)+"&next=/ui/", nil)
	if !strings.HasPrefix(at, idp.URL) {
		t.Fatalf("sign-in at A ended at %s, want the identity provider: %s", at, body)
	}
	lb.to(t, b.APIURL())
	res, body, at := br.pickDevUser(at, body, email)
	if res.StatusCode != http.StatusOK || !strings.HasSuffix(at, "/ui/") || !strings.Contains(body, email) {
		t.Fatalf("sign-in begun at A, completed at B ended at %s with %d: %s", at, res.StatusCode, body)
	}

	// Both honour the session.
	for _, bk := range []struct {
		name string
		b    *broker.Broker
	}{{"B", b}, {"A", a}, {"B", b}} {
		lb.to(t, bk.b.APIURL())
		if !signedIn(br, email) {
			t.Fatalf("broker %s does not honour the session", bk.name)
		}
	}

	// Sign out at B; A refuses the session, even to someone who kept a
	// copy of the cookie.
	cookie := br.cookies["tether_session"]
	lb.to(t, b.APIURL())
	res, _ = br.do(http.MethodPost, "/auth/logout", url.Values{"csrf": {br.csrf()}})
	if res.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-out at B = %d, want 303", res.StatusCode)
	}
	br.cookies["tether_session"] = cookie
	lb.to(t, a.APIURL())
	if signedIn(br, email) {
		t.Errorf("broker A honours a session signed out at B")
	}
}

// TestWebSessionSurvivesRestart: a broker restarted on the same store
// honours the sessions made before; nobody is signed out by a restart.
// Before, sessions lived in the broker's memory and ended with it.
func TestWebSessionSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	idp := brokertest.NewIdP(t)
	lb := newLoadBalancer(t)
	cfg := broker.Config{DataDir: t.TempDir(), Identity: idp.Config, PublicURL: lb.URL}
	externalTailnet(t, ctx)(&cfg)
	b, stop := runBroker(t, cfg)
	lb.to(t, b.APIURL())

	const email = "approver@acme.test"
	br := &browser{t: t, base: lb.URL, cookies: map[string]string{},
		hc: &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	br.signIn(email)
	csrf := br.csrf()

	stop()
	b, _ = runBroker(t, cfg)
	lb.to(t, b.APIURL())
	if !signedIn(br, email) {
		t.Fatalf("the session made before the restart is not honoured after it")
	}
	if got := br.csrf(); got != csrf {
		t.Errorf("the session's CSRF token changed with the restart")
	}
	// And it ends as any other.
	res, _ := br.do(http.MethodPost, "/auth/logout", url.Values{"csrf": {csrf}})
	if res.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-out after the restart = %d, want 303", res.StatusCode)
	}
	if signedIn(br, email) {
		t.Errorf("signed in after signing out")
	}
}
