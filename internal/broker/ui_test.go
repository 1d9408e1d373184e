package broker_test

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/brokertest"
)

// TestWebLogin signs in to the broker's page through its dev identity
// provider as acme's approver (the test is the browser), sees only acme's
// deployments, and signs out; both ends are audited.
func TestWebLogin(t *testing.T) {
	b := brokertest.Start(t, nil)
	ctx := context.Background()
	for _, d := range []brokerapi.CreateDeploymentRequest{{Tenant: "acme", Name: "prod"}, {Tenant: "globex", Name: "secret-prod"}} {
		if _, err := b.Client.CreateDeployment(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	// Cookies are Secure, and this is http on loopback (which browsers
	// treat as secure): carry them by hand.
	cookies := map[string]string{}
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	do := func(method, u string, form url.Values) *http.Response {
		t.Helper()
		var body io.Reader
		if form != nil {
			body = strings.NewReader(form.Encode())
		}
		req, _ := http.NewRequest(method, u, body)
		if form != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		if strings.HasPrefix(u, b.APIURL()) {
			for k, v := range cookies {
				req.AddCookie(&http.Cookie{Name: k, Value: v})
			}
		}
		res, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range res.Cookies() {
			if c.MaxAge < 0 {
				delete(cookies, c.Name)
			} else {
				cookies[c.Name] = c.Value
				if !c.HttpOnly || !c.Secure || c.SameSite != http.SameSiteLaxMode {
					t.Errorf("cookie %s: HttpOnly=%v Secure=%v SameSite=%v, want HttpOnly, Secure, Lax", c.Name, c.HttpOnly, c.Secure, c.SameSite)
				}
			}
		}
		return res
	}
	page := func() string {
		res := do(http.MethodGet, b.APIURL()+"/ui/", nil)
		defer res.Body.Close()
		raw, _ := io.ReadAll(res.Body)
		return string(raw)
	}
	if p := page(); !strings.Contains(p, "Sign in with") || !strings.Contains(p, "issuer=acme") {
		t.Fatalf("signed-out page lacks the issuers: %s", p)
	}

	res := do(http.MethodGet, b.APIURL()+"/auth/login?issuer=acme&next=/ui/", nil)
	authz, _ := url.Parse(res.Header.Get("Location"))
	if res.StatusCode != http.StatusFound || !strings.Contains(authz.Path, "/dev/idp/acme/authorize") {
		t.Fatalf("login = %d to %s, want a redirect to acme's authorize endpoint", res.StatusCode, authz)
	}
	q := authz.Query()
	q.Set("login_hint", "approver@acme.test")
	authz.RawQuery = q.Encode()
	res = do(http.MethodGet, authz.String(), nil)
	callback := res.Header.Get("Location")
	if !strings.HasPrefix(callback, b.APIURL()+"/auth/callback?") {
		t.Fatalf("identity provider redirected to %q, want the broker's callback", callback)
	}
	res = do(http.MethodGet, callback, nil)
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/ui/" || cookies["tether_session"] == "" {
		t.Fatalf("callback = %d to %q (session cookie %v), want 303 to /ui/ with a session", res.StatusCode, res.Header.Get("Location"), cookies["tether_session"] != "")
	}
	p := page()
	if !strings.Contains(p, "approver@acme.test") || !strings.Contains(p, "prod") || strings.Contains(p, "secret-prod") {
		t.Errorf("signed-in page = %s, want acme's approver and acme's deployment only", p)
	}
	csrf := regexpFind(p, `name="csrf" value="([^"]+)"`)
	if res := do(http.MethodPost, b.APIURL()+"/auth/logout", url.Values{"csrf": {"forged"}}); res.StatusCode < 400 {
		t.Errorf("logout with a forged CSRF token = %d, want refused", res.StatusCode)
	}
	if res := do(http.MethodPost, b.APIURL()+"/auth/logout", url.Values{"csrf": {csrf}}); res.StatusCode != http.StatusSeeOther {
		t.Errorf("logout = %d, want 303", res.StatusCode)
	}
	if p := page(); !strings.Contains(p, "Sign in with") {
		t.Errorf("page after logout is still signed in")
	}
	// The session cookie does not authenticate API calls (no CSRF
	// exposure): the API wants a bearer token.
	types := auditTypes(t, b)
	for _, want := range []string{"auth.login: ", "auth.logout: "} {
		if !slices.Contains(types, want) {
			t.Errorf("audit log lacks %q: %q", want, types)
		}
	}
}

func regexpFind(s, expr string) string {
	m := regexp.MustCompile(expr).FindStringSubmatch(s)
	if m == nil {
		return ""
	}
	return m[1]
}
