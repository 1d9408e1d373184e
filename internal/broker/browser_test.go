package broker_test

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/brokertest"
	"github.com/tetherhq/tether/internal/weblogin"
	"github.com/tetherhq/tether/internal/webtest"
)

// TestBrowserConsole signs acme's approver in to the web console in a real
// browser, through the real login flow at the dev identity provider, and
// checks what the signed-in page shows (acme's deployments, not globex's),
// the page's security headers and DOM (no inline script, no violation of
// its own policy), and that sign-out takes the page's CSRF token: a forged
// POST with the session cookie but without the token is refused.
func TestBrowserConsole(t *testing.T) {
	start := time.Now()
	b := brokertest.Start(t, nil)
	ctx := context.Background()
	for _, d := range []brokerapi.CreateDeploymentRequest{{Tenant: "acme", Name: "acme-orders"}, {Tenant: "globex", Name: "globex-payroll"}} {
		if _, err := b.Client.CreateDeployment(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("broker up with two deployments in %s", time.Since(start).Round(time.Millisecond))
	tab := webtest.Browser(t)
	ui := b.APIURL() + "/ui/"

	var page string // the signed-in page's text
	var csp, xfo string
	signedIn := t.Run("approver signs in", func(t *testing.T) {
		webtest.Open(t, tab, ui, `a[href*="issuer=acme"]`)
		if text := webtest.Text(t, tab, "body"); strings.Contains(text, "Signed in as") {
			t.Fatalf("a new browser is signed in already: %q", text)
		}
		webtest.ClickNavigate(t, tab, `a[href*="issuer=acme"]`)
		if loc := webtest.Location(t, tab); !strings.Contains(loc, "/dev/idp/acme/authorize") {
			t.Fatalf("the acme link led to %s, want acme's authorize page", loc)
		}
		res := webtest.ClickNavigate(t, tab, `button[name="email"][value="approver@acme.test"]`)
		if loc := webtest.Location(t, tab); loc != ui {
			t.Fatalf("after signing in at the identity provider the browser is at %s, want %s", loc, ui)
		}
		if res.Status != http.StatusOK {
			t.Fatalf("the signed-in page answered %d, want 200", res.Status)
		}
		csp, xfo = webtest.Header(res, "Content-Security-Policy"), webtest.Header(res, "X-Frame-Options")
		page = webtest.Text(t, tab, "body")
		if !strings.Contains(page, "Signed in as approver@acme.test") {
			t.Errorf("signed-in page says %q, want \"Signed in as approver@acme.test\"", page)
		}
		if !strings.Contains(page, "acme-orders") {
			t.Errorf("signed-in page lacks acme's deployment acme-orders: %q", page)
		}
		if strings.Contains(page, "globex") {
			t.Errorf("acme's approver sees globex: %q", page)
		}
	})
	if !signedIn {
		return
	}

	t.Run("security headers and DOM", func(t *testing.T) {
		checkCSP(t, csp)
		if xfo != "DENY" {
			t.Errorf("X-Frame-Options = %q, want DENY", xfo)
		}
		if n := webtest.Count(t, tab, "script:not([src])"); n != 0 {
			t.Errorf("the page has %d inline <script> elements, want none:\n%s", n, webtest.HTML(t, tab, "html"))
		}
		if bad := scriptable(t, tab); len(bad) != 0 {
			t.Errorf("the page has script outside same-origin files: %q", bad)
		}
		if v := webtest.CSPViolations(t, tab); len(v) != 0 {
			t.Errorf("the page breaks its own Content-Security-Policy (%s): %q", csp, v)
		}
	})

	t.Run("sign-out needs the page's CSRF token", func(t *testing.T) {
		const form = `form[action="/auth/logout"]`
		if n := webtest.Count(t, tab, form); n != 1 {
			t.Fatalf("the page has %d sign-out forms, want 1", n)
		}
		if m := webtest.Attr(t, tab, form, "method"); !strings.EqualFold(m, "post") {
			t.Errorf("sign-out form method %q, want post", m)
		}
		token := webtest.Attr(t, tab, form+` input[type="hidden"][name="csrf"]`, "value")
		if len(token) < 16 {
			t.Errorf("sign-out form's CSRF token %q, want an unguessable one", token)
		}
		session := webtest.Cookie(t, tab, weblogin.SessionCookie)
		if session == "" {
			t.Fatalf("the browser holds no %s cookie", weblogin.SessionCookie)
		}
		// A forged cross-site form: the browser sends the session cookie
		// (SameSite=Lax does not stop every such POST; a sibling subdomain
		// is same-site), but the attacker cannot read the page's token.
		for _, forged := range []url.Values{{}, {"csrf": {""}}, {"csrf": {"forged"}}, {"csrf": {token + "x"}}} {
			if status, cleared := postLogout(t, b.APIURL(), session, forged); status != http.StatusForbidden || cleared {
				t.Errorf("forged sign-out with form %q = %d (session cookie cleared: %v), want 403 and the session kept", forged.Encode(), status, cleared)
			}
		}
		webtest.Open(t, tab, ui, "body")
		if text := webtest.Text(t, tab, "body"); !strings.Contains(text, "Signed in as approver@acme.test") {
			t.Fatalf("after forged sign-outs the page says %q, want still signed in", text)
		}

		// The real button signs out: the refusals above were the token's.
		webtest.ClickNavigate(t, tab, form+` button`)
		webtest.Open(t, tab, ui, `a[href*="issuer=acme"]`)
		if text := webtest.Text(t, tab, "body"); strings.Contains(text, "Signed in as") {
			t.Errorf("after signing out the page says %q", text)
		}
		if c := webtest.Cookie(t, tab, weblogin.SessionCookie); c != "" {
			t.Errorf("after signing out the browser still holds a session cookie")
		}
		if res := pageAs(t, ui, session); strings.Contains(res, "Signed in as") {
			t.Errorf("the signed-out session's cookie still signs the page in")
		}
	})
	types := auditTypes(t, b)
	for _, want := range []string{"auth.login: ", "auth.logout: "} {
		if !slices.Contains(types, want) {
			t.Errorf("audit log lacks %q: %q", want, types)
		}
	}
	t.Logf("whole browser test in %s", time.Since(start).Round(time.Millisecond))
}

// checkCSP holds a page's Content-Security-Policy to the web console's
// rules: scripts only from files of the broker's own origin — no inline
// script, eval, or other origin — no inline styles, no framing, and forms
// posting only where the policy says.
func checkCSP(t *testing.T, csp string) {
	t.Helper()
	if csp == "" {
		t.Fatal("no Content-Security-Policy header")
	}
	dirs := map[string][]string{}
	for d := range strings.SplitSeq(csp, ";") {
		f := strings.Fields(strings.ToLower(d))
		if len(f) > 0 {
			dirs[f[0]] = f[1:]
		}
	}
	// effective returns the sources that apply to kind, following CSP's
	// fallbacks.
	effective := func(kinds ...string) (string, []string) {
		for _, k := range kinds {
			if v, ok := dirs[k]; ok {
				return k, v
			}
		}
		return "", nil
	}
	loose := []string{"'unsafe-inline'", "'unsafe-eval'", "'unsafe-hashes'", "'wasm-unsafe-eval'", "*", "data:", "blob:", "http:", "https:"}
	checked := map[string]bool{}
	for _, kinds := range [][]string{
		{"script-src-elem", "script-src", "default-src"},
		{"script-src-attr", "script-src", "default-src"},
		{"object-src", "default-src"},
	} {
		name, srcs := effective(kinds...)
		if name == "" {
			t.Errorf("Content-Security-Policy %q sets none of %v: anything goes for %s", csp, kinds, kinds[0])
			continue
		}
		if checked[name] {
			continue
		}
		checked[name] = true
		for _, s := range srcs {
			if slices.Contains(loose, s) {
				t.Errorf("Content-Security-Policy %q: %s allows %s, want same-origin files only", csp, name, s)
			}
		}
	}
	if _, ok := dirs["form-action"]; !ok {
		t.Errorf("Content-Security-Policy %q has no form-action", csp)
	}
	for _, kinds := range [][]string{{"style-src-elem", "style-src", "default-src"}, {"style-src-attr", "style-src", "default-src"}} {
		if name, srcs := effective(kinds...); !checked[name] && slices.Contains(srcs, "'unsafe-inline'") {
			checked[name] = true
			t.Errorf("Content-Security-Policy %q: %s allows 'unsafe-inline'", csp, name)
		}
	}
	if fa := dirs["frame-ancestors"]; !slices.Equal(fa, []string{"'none'"}) {
		t.Errorf("Content-Security-Policy %q: frame-ancestors %q, want 'none'", csp, fa)
	}
}

// scriptable lists what in tab's page runs script other than a file of the
// page's own origin: script elements from elsewhere, event-handler
// attributes and javascript: URLs.
func scriptable(t *testing.T, tab context.Context) []string {
	t.Helper()
	return webtest.Eval[[]string](t, tab, `(() => {
		const bad = [];
		for (const s of document.scripts) {
			if (s.src && new URL(s.src).origin !== location.origin) bad.push("script from " + s.src);
		}
		for (const e of document.querySelectorAll("*")) {
			for (const a of e.attributes) {
				if (a.name.startsWith("on")) bad.push("<" + e.localName + " " + a.name + ">");
				if (["href", "src", "action", "formaction"].includes(a.name) && a.value.trim().toLowerCase().startsWith("javascript:")) bad.push("<" + e.localName + " " + a.name + "=javascript:>");
			}
		}
		return bad;
	})()`)
}

// noRedirects is a client that shows redirects instead of following them.
var noRedirects = &http.Client{
	Timeout:       10 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// postLogout posts a sign-out form with the session cookie, as a forged
// cross-site form would, and reports the status and whether the answer
// clears the session cookie.
func postLogout(t *testing.T, base, session string, form url.Values) (status int, cleared bool) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+"/auth/logout", strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "http://attacker.example")
	req.AddCookie(&http.Cookie{Name: weblogin.SessionCookie, Value: session})
	res, err := noRedirects.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	for _, c := range res.Cookies() {
		if c.Name == weblogin.SessionCookie && c.MaxAge < 0 {
			cleared = true
		}
	}
	return res.StatusCode, cleared
}

// pageAs fetches url with only the session cookie and returns the body.
func pageAs(t *testing.T, u, session string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.AddCookie(&http.Cookie{Name: weblogin.SessionCookie, Value: session})
	res, err := noRedirects.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}
