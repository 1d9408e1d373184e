package broker_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/tetherhq/tether/internal/approval"
	"github.com/tetherhq/tether/internal/broker"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/brokertest"
	"github.com/tetherhq/tether/internal/names"
	"github.com/tetherhq/tether/internal/store"
	"github.com/tetherhq/tether/internal/webui"
)

// browser is a test's web browser: it carries the broker's cookies by
// hand (they are Secure, and the test speaks http on loopback, which
// browsers treat as secure) and follows no redirect on its own.
type browser struct {
	t       *testing.T
	base    string
	cookies map[string]string
	hc      *http.Client
}

func newBrowser(t *testing.T, b *brokertest.Broker) *browser {
	return &browser{t: t, base: b.APIURL(), cookies: map[string]string{},
		hc: &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// do sends one request (a form when form is not nil) and returns the
// response with its body read.
func (br *browser) do(method, u string, form url.Values) (*http.Response, string) {
	br.t.Helper()
	if strings.HasPrefix(u, "/") {
		u = br.base + u
	}
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		br.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if strings.HasPrefix(u, br.base) {
		for k, v := range br.cookies {
			req.AddCookie(&http.Cookie{Name: k, Value: v})
		}
	}
	res, err := br.hc.Do(req)
	if err != nil {
		br.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	for _, c := range res.Cookies() {
		if c.MaxAge < 0 {
			delete(br.cookies, c.Name)
		} else {
			br.cookies[c.Name] = c.Value
		}
	}
	return res, string(raw)
}

// follow sends a request and follows redirects (as GETs) to the page
// they end at; it returns that page and its URL.
func (br *browser) follow(method, u string, form url.Values) (*http.Response, string, string) {
	br.t.Helper()
	for range 10 {
		res, body := br.do(method, u, form)
		loc := res.Header.Get("Location")
		if res.StatusCode < 300 || res.StatusCode >= 400 || loc == "" {
			return res, body, u
		}
		base, _ := url.Parse(u)
		if strings.HasPrefix(u, "/") {
			base, _ = url.Parse(br.base + u)
		}
		next, err := base.Parse(loc)
		if err != nil {
			br.t.Fatalf("redirect to %q: %v", loc, err)
		}
		method, form, u = http.MethodGet, nil, next.String()
	}
	br.t.Fatalf("more than 10 redirects from %s", u)
	return nil, "", ""
}

var (
	formAction  = regexp.MustCompile(`<form method="post" action="([^"]+)"`)
	hiddenInput = regexp.MustCompile(`<input type="hidden" name="([^"]+)" value="([^"]*)">`)
)

// pickDevUser answers the dev identity provider's sign-in page (body,
// at pageURL) by choosing email, as its button would.
func (br *browser) pickDevUser(pageURL, body, email string) (*http.Response, string, string) {
	br.t.Helper()
	m := formAction.FindStringSubmatch(body)
	if m == nil {
		br.t.Fatalf("identity provider page %s has no form: %s", pageURL, body)
	}
	form := url.Values{"email": {email}}
	for _, h := range hiddenInput.FindAllStringSubmatch(body, -1) {
		form.Set(html.UnescapeString(h[1]), html.UnescapeString(h[2]))
	}
	base, _ := url.Parse(pageURL)
	action, _ := base.Parse(html.UnescapeString(m[1]))
	return br.follow(http.MethodPost, action.String(), form)
}

// signIn signs in as email through the dev identity provider's page.
func (br *browser) signIn(email string) {
	br.t.Helper()
	_, body, at := br.follow(http.MethodGet, "/auth/login?issuer="+brokertest.IssuerOf(email)+"&next=/ui/", nil)
	res, body, at := br.pickDevUser(at, body, email)
	if res.StatusCode != http.StatusOK || !strings.HasSuffix(at, "/ui/") || !strings.Contains(body, email) {
		br.t.Fatalf("sign-in as %s ended at %s with %d: %s", email, at, res.StatusCode, body)
	}
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf is the session's CSRF token, read from a page.
func (br *browser) csrf() string {
	br.t.Helper()
	_, body := br.do(http.MethodGet, "/ui/", nil)
	m := csrfField.FindStringSubmatch(body)
	if m == nil {
		br.t.Fatalf("no CSRF token on /ui/: %s", body)
	}
	return m[1]
}

// checkPageHeaders fails unless res carries every page's security
// headers, the CSP exactly.
func checkPageHeaders(t *testing.T, what string, res *http.Response) {
	t.Helper()
	want := map[string]string{
		"Content-Security-Policy": "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
		"X-Content-Type-Options":  "nosniff",
		"Referrer-Policy":         "no-referrer",
		"Cache-Control":           "no-store",
		"Content-Type":            "text/html; charset=utf-8",
	}
	for k, v := range want {
		if got := res.Header.Values(k); len(got) != 1 || got[0] != v {
			t.Errorf("%s: %s = %q, want exactly %q", what, k, got, v)
		}
	}
}

// consoleFixture is a dev broker with acme/prod and globex/prod paired,
// a pending request on each, and browsers signed in as each tenant's
// approver.
type consoleFixture struct {
	b            *brokertest.Broker
	acme, globex *browser
	acmeReq      string // pending, its reason holds markup
	globexReq    string
}

const hostileReason = `<script>alert("x")</script> & "quotes"`

func newConsoleFixture(t *testing.T) *consoleFixture {
	b := brokertest.Start(t, nil)
	b.Pair(t, "acme", "prod")
	b.Pair(t, "globex", "prod")
	ctx := context.Background()
	eng := asUser(t, b, "engineer@vendor.test")
	f := &consoleFixture{b: b}
	for _, x := range []struct {
		dep, reason string
		id          *string
	}{{"acme/prod", hostileReason, &f.acmeReq}, {"globex/prod", "globex's secret incident", &f.globexReq}} {
		ar, err := eng.CreateRequest(ctx, brokerapi.CreateAccessRequest{Deployment: x.dep, Scopes: []string{"clickhouse:system", "prometheus:read"}, Duration: "1h", Reason: x.reason})
		if err != nil {
			t.Fatal(err)
		}
		if ar.State != brokerapi.StatePending {
			t.Fatalf("request on %s is %s, want pending", x.dep, ar.State)
		}
		*x.id = ar.ID
	}
	f.acme, f.globex = newBrowser(t, b), newBrowser(t, b)
	f.acme.signIn("approver@acme.test")
	f.globex.signIn("approver@globex.test")
	return f
}

// auditHas reports whether the audit log holds an event of typ with
// reason code and, when path is set, that details path.
func auditHas(t *testing.T, b *brokertest.Broker, typ, code, path string) bool {
	t.Helper()
	for _, e := range auditEvents(t, b, 1000) {
		if string(e.Type) == typ && e.Reason == code && (path == "" || e.Details["path"] == path) {
			return true
		}
	}
	return false
}

// TestWebConsoleApprover walks the approver's part of the console: the
// inbox shows the own tenant's pending requests only, another tenant's
// request page is refused, forms without the session's CSRF token are
// refused, untrusted strings are escaped, and every page carries the
// strict headers.
func TestWebConsoleApprover(t *testing.T) {
	f := newConsoleFixture(t)
	b := f.b

	t.Run("inbox is the tenant's", func(t *testing.T) {
		res, body := f.acme.do(http.MethodGet, "/ui/inbox", nil)
		if res.StatusCode != http.StatusOK || !strings.Contains(body, f.acmeReq) || strings.Contains(body, f.globexReq) || strings.Contains(body, "globex&#39;s secret") {
			t.Errorf("acme's inbox = %d, want acme's request %s and not globex's %s: %s", res.StatusCode, f.acmeReq, f.globexReq, body)
		}
		for _, want := range []string{"engineer@vendor.test", "acme/prod", "clickhouse:system, prometheus:read", "1h0m0s", "1 more approval from an approver of tenant acme"} {
			if !strings.Contains(body, want) {
				t.Errorf("acme's inbox lacks %q", want)
			}
		}
		_, body = f.globex.do(http.MethodGet, "/ui/inbox", nil)
		if !strings.Contains(body, f.globexReq) || strings.Contains(body, f.acmeReq) {
			t.Errorf("globex's inbox shows acme's request or lacks its own: %s", body)
		}
	})

	t.Run("another tenant's request is refused", func(t *testing.T) {
		res, body := f.globex.do(http.MethodGet, "/ui/requests/"+f.acmeReq, nil)
		if res.StatusCode != http.StatusForbidden || strings.Contains(body, "script") {
			t.Errorf("globex's approver on acme's request page = %d, want 403 without its content: %s", res.StatusCode, body)
		}
		checkPageHeaders(t, "refusal page", res)
		if !auditHas(t, b, "auth.failed", "wrong_tenant", "/ui/requests/"+f.acmeReq) {
			t.Error("the refused page view is not audited as auth.failed wrong_tenant")
		}
		res, _ = f.globex.do(http.MethodPost, "/ui/requests/"+f.acmeReq+"/deny", url.Values{"csrf": {f.globex.csrf()}, "comment": {"not mine"}})
		if res.StatusCode != http.StatusForbidden {
			t.Errorf("globex's approver denying acme's request = %d, want 403", res.StatusCode)
		}
	})

	t.Run("untrusted strings are escaped", func(t *testing.T) {
		_, body := f.acme.do(http.MethodGet, "/ui/requests/"+f.acmeReq, nil)
		if strings.Contains(body, "<script>") || !strings.Contains(body, "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &#34;quotes&#34;") {
			t.Errorf("the request page does not escape the reason: %s", body)
		}
		_, body = f.acme.do(http.MethodGet, "/ui/inbox", nil)
		if strings.Contains(body, "<script") || !strings.Contains(body, "&lt;script&gt;") {
			t.Errorf("the inbox does not escape the reason: %s", body)
		}
	})

	t.Run("forms need the session's CSRF token", func(t *testing.T) {
		path := "/ui/requests/" + f.acmeReq + "/deny"
		for name, form := range map[string]url.Values{
			"none":            {"comment": {"forged"}},
			"wrong":           {"comment": {"forged"}, "csrf": {"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}},
			"another session": {"comment": {"forged"}, "csrf": {f.globex.csrf()}},
		} {
			res, body := f.acme.do(http.MethodPost, path, form)
			if res.StatusCode != http.StatusForbidden || !strings.Contains(body, "csrf_invalid") {
				t.Errorf("deny with %s CSRF token = %d, want 403 csrf_invalid: %s", name, res.StatusCode, body)
			}
		}
		if !auditHas(t, b, "auth.failed", "csrf_invalid", path) {
			t.Error("the refused form is not audited as auth.failed csrf_invalid")
		}
		ar, err := b.Client.GetRequest(context.Background(), f.acmeReq)
		if err != nil || ar.State != brokerapi.StatePending {
			t.Fatalf("after forged denials the request is %s (%v), want pending", ar.State, err)
		}
	})

	t.Run("headers", func(t *testing.T) {
		anon := newBrowser(t, b)
		pages := []struct {
			who  *browser
			path string
		}{
			{anon, "/ui/"}, {anon, "/ui/inbox"}, {f.acme, "/ui/"}, {f.acme, "/ui/inbox"},
			{f.acme, "/ui/requests/" + f.acmeReq}, {f.acme, "/ui/nothing-here"}, {f.acme, "/ui/inbox?page=0"},
		}
		for _, p := range pages {
			res, body := p.who.do(http.MethodGet, p.path, nil)
			checkPageHeaders(t, p.path, res)
			if !strings.Contains(body, `<link rel="stylesheet" href="`+webui.CSSPath()+`">`) {
				t.Errorf("%s does not link the stylesheet %s", p.path, webui.CSSPath())
			}
			if strings.Contains(strings.ReplaceAll(body, `<script src="`+webui.JSPath()+`" defer></script>`, ""), "<script") || strings.Contains(body, " style=") {
				t.Errorf("%s has a script or an inline style", p.path)
			}
		}
		res, body := anon.do(http.MethodGet, webui.CSSPath(), nil)
		if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "text/css; charset=utf-8" || !strings.Contains(res.Header.Get("Cache-Control"), "max-age=31536000") || !strings.Contains(body, "body{") {
			t.Errorf("stylesheet = %d %q %q", res.StatusCode, res.Header.Get("Content-Type"), res.Header.Get("Cache-Control"))
		}
		if res, _ := anon.do(http.MethodGet, webui.StaticPrefix+"app.css", nil); res.StatusCode != http.StatusNotFound {
			t.Errorf("an unhashed stylesheet name = %d, want 404", res.StatusCode)
		}
	})

	t.Run("signed out", func(t *testing.T) {
		anon := newBrowser(t, b)
		res, body := anon.do(http.MethodGet, "/ui/requests/"+f.acmeReq, nil)
		if res.StatusCode != http.StatusUnauthorized || strings.Contains(body, "script") || !strings.Contains(body, "next=%2Fui%2Frequests%2F"+f.acmeReq) {
			t.Errorf("signed-out request page = %d, want 401 with sign-in links back to it: %s", res.StatusCode, body)
		}
		res, _ = anon.do(http.MethodPost, "/ui/requests/"+f.acmeReq+"/deny", url.Values{"comment": {"x"}})
		if res.StatusCode != http.StatusUnauthorized {
			t.Errorf("signed-out deny = %d, want 401", res.StatusCode)
		}
	})

	t.Run("deny", func(t *testing.T) {
		path := "/ui/requests/" + f.globexReq + "/deny"
		res, body := f.globex.do(http.MethodPost, path, url.Values{"csrf": {f.globex.csrf()}, "comment": {" "}})
		if res.StatusCode != http.StatusBadRequest || !strings.Contains(body, "comment_required") {
			t.Errorf("deny without comment = %d, want 400 comment_required", res.StatusCode)
		}
		res, body, _ = f.globex.follow(http.MethodPost, path, url.Values{"csrf": {f.globex.csrf()}, "comment": {"not during the freeze"}})
		if res.StatusCode != http.StatusOK || !strings.Contains(body, `id="state" class="state-denied">denied`) || !strings.Contains(body, "Your denial is recorded.") {
			t.Errorf("deny = %d, want the request page saying denied: %s", res.StatusCode, body)
		}
	})
}

// TestWebConsoleApproveCeremony approves from the request page: the
// approver narrows duration and scopes, is shown the statement and sent
// to their own identity provider with the statement's digest as nonce,
// picks themselves there, and lands on the request, now active, whose
// stored review carries an ID token with that nonce. Then revokes it.
func TestWebConsoleApproveCeremony(t *testing.T) {
	f := newConsoleFixture(t)
	b, br := f.b, f.acme
	page := "/ui/requests/" + f.acmeReq
	res, body := br.do(http.MethodGet, page, nil)
	for _, want := range []string{`id="approve-form"`, `id="deny-form"`, `name="scope" value="prometheus:read" checked`, `<option value="30m0s">`} {
		if !strings.Contains(body, want) {
			t.Errorf("request page (%d) lacks %q", res.StatusCode, want)
		}
	}
	// The approve form without the token is refused like every form.
	if res, _ := br.do(http.MethodPost, page+"/approve", url.Values{"duration": {"30m"}, "scope": {"clickhouse:system"}}); res.StatusCode != http.StatusForbidden {
		t.Errorf("approve without CSRF token = %d, want 403", res.StatusCode)
	}

	res, body = br.do(http.MethodPost, page+"/approve", url.Values{"csrf": {br.csrf()}, "duration": {"30m"}, "scope": {"clickhouse:system"}, "comment": {"ok for the incident"}})
	checkPageHeaders(t, "sign page", res)
	digest := regexp.MustCompile(`<code id="digest">([^<]+)</code>`).FindStringSubmatch(body)
	link := regexp.MustCompile(`id="sign" href="([^"]+)"`).FindStringSubmatch(body)
	if res.StatusCode != http.StatusOK || digest == nil || link == nil {
		t.Fatalf("approve = %d, want the statement with a link to sign: %s", res.StatusCode, body)
	}
	authz, err := url.Parse(html.UnescapeString(link[1]))
	if err != nil {
		t.Fatal(err)
	}
	q := authz.Query()
	if q.Get("nonce") != digest[1] || !strings.Contains(authz.Path, "/dev/idp/acme/authorize") || q.Get("code_challenge") == "" || q.Get("prompt") != "login" {
		t.Fatalf("signing link = %s, want acme's authorize endpoint with nonce %s, PKCE and prompt=login", authz, digest[1])
	}
	res, body, at := br.follow(http.MethodGet, authz.String(), nil)
	if res.StatusCode != http.StatusOK || !strings.Contains(body, "Pick a dev user") {
		t.Fatalf("identity provider = %d at %s, want its sign-in page: %s", res.StatusCode, at, body)
	}
	// Keep the callback to replay it.
	var callback string
	br.hc.CheckRedirect = func(req *http.Request, _ []*http.Request) error { return http.ErrUseLastResponse }
	{
		m := formAction.FindStringSubmatch(body)
		form := url.Values{"email": {"approver@acme.test"}}
		for _, h := range hiddenInput.FindAllStringSubmatch(body, -1) {
			form.Set(html.UnescapeString(h[1]), html.UnescapeString(h[2]))
		}
		base, _ := url.Parse(at)
		action, _ := base.Parse(html.UnescapeString(m[1]))
		res, _ := br.do(http.MethodPost, action.String(), form)
		callback = res.Header.Get("Location")
	}
	if !strings.Contains(callback, "/auth/callback?") {
		t.Fatalf("identity provider redirected to %q, want the broker's callback", callback)
	}
	res, body, at = br.follow(http.MethodGet, callback, nil)
	if res.StatusCode != http.StatusOK || !strings.HasSuffix(at, page+"?done=approved") || !strings.Contains(body, `id="state" class="state-active">active`) || !strings.Contains(body, "Your approval is recorded.") {
		t.Fatalf("after signing: %d at %s, want the request page saying active: %s", res.StatusCode, at, body)
	}
	if !strings.Contains(body, `id="revoke-form"`) || strings.Contains(body, `id="approve-form"`) {
		t.Errorf("the active request's page should offer revoke and no approval")
	}
	// The code and the pending ceremony are single use.
	if res, _ := br.do(http.MethodGet, callback, nil); res.StatusCode < 400 {
		t.Errorf("replayed callback = %d, want refused", res.StatusCode)
	}

	ar, err := b.Store().GetRequest(context.Background(), f.acmeReq)
	if err != nil {
		t.Fatal(err)
	}
	if ar.State != "active" || ar.Grant == nil {
		t.Fatalf("request is %s, want active with a grant", ar.State)
	}
	if got := ar.Grant.Expiry.Sub(ar.Grant.NotBefore); got > 30*60e9 {
		t.Errorf("grant lasts %s, want the 30m the approver narrowed it to", got)
	}
	if !slices.Equal(ar.Grant.Scopes, []string{"clickhouse:system"}) {
		t.Errorf("grant scopes = %q, want the one the approver ticked", ar.Grant.Scopes)
	}
	i := slices.IndexFunc(ar.Reviews, func(x store.Review) bool { return x.Approve && x.Role == names.ReviewApprover })
	if i < 0 {
		t.Fatalf("no customer approval among %d reviews", len(ar.Reviews))
	}
	rv := ar.Reviews[i]
	if approval.Digest([]byte(rv.Statement)) != digest[1] || rv.Comment != "ok for the incident" {
		t.Errorf("stored statement's digest = %s, want the one shown %s", approval.Digest([]byte(rv.Statement)), digest[1])
	}
	if nonce := jwtClaim(t, rv.Proof, "nonce"); nonce != digest[1] {
		t.Errorf("proof's nonce = %q, want the statement's digest %s", nonce, digest[1])
	}
	if !auditHas(t, b, "review.approved", "ok for the incident", "") {
		t.Error("no review.approved event for the console's approval")
	}

	// Revoke needs a reason, then ends access.
	res, _ = br.do(http.MethodPost, page+"/revoke", url.Values{"csrf": {br.csrf()}, "reason": {""}})
	if res.StatusCode != http.StatusBadRequest {
		t.Errorf("revoke without a reason = %d, want 400", res.StatusCode)
	}
	res, body, _ = br.follow(http.MethodPost, page+"/revoke", url.Values{"csrf": {br.csrf()}, "reason": {"incident over"}})
	if res.StatusCode != http.StatusOK || !strings.Contains(body, `class="state-revoked">revoked`) {
		t.Errorf("revoke = %d, want the page saying revoked: %s", res.StatusCode, body)
	}
}

// jwtClaim reads one string claim of a compact JWS without verifying it.
func jwtClaim(t *testing.T, raw, name string) string {
	t.Helper()
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		t.Fatalf("proof is not a compact JWS")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprint(claims[name])
}

// TestWebConsoleInboxPages: the inbox lists 50 requests a page, links
// the next, and refuses pages past its bound.
func TestWebConsoleInboxPages(t *testing.T) {
	b := brokertest.Start(t, nil)
	b.Pair(t, "acme", "prod")
	eng := asUser(t, b, "engineer@vendor.test")
	var ids []string
	for i := range 53 {
		ar, err := eng.CreateRequest(context.Background(), brokerapi.CreateAccessRequest{Deployment: "acme/prod", Scopes: []string{"clickhouse:system"}, Duration: "30m", Reason: fmt.Sprintf("load %d", i)})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, ar.ID)
	}
	br := newBrowser(t, b)
	br.signIn("approver@acme.test")
	rows := regexp.MustCompile(`<tr data-request="([^"]+)">`)
	_, body := br.do(http.MethodGet, "/ui/inbox", nil)
	first := rows.FindAllStringSubmatch(body, -1)
	if len(first) != 50 || !strings.Contains(body, `href="/ui/inbox?page=2" rel="next"`) {
		t.Fatalf("inbox page 1 lists %d requests (want 50) with a link to page 2: %v", len(first), strings.Contains(body, "page=2"))
	}
	_, body = br.do(http.MethodGet, "/ui/inbox?page=2", nil)
	second := rows.FindAllStringSubmatch(body, -1)
	if len(second) != 3 || strings.Contains(body, `rel="next"`) || !strings.Contains(body, `rel="prev"`) {
		t.Errorf("inbox page 2 lists %d requests, want the last 3 and no next page", len(second))
	}
	seen := map[string]bool{}
	for _, m := range append(first, second...) {
		seen[m[1]] = true
	}
	for _, id := range ids {
		if !seen[id] {
			t.Errorf("request %s is on no inbox page", id)
		}
	}
	for _, p := range []string{"0", "-1", "21", "x", "99999999999999999999"} {
		if res, _ := br.do(http.MethodGet, "/ui/inbox?page="+url.QueryEscape(p), nil); res.StatusCode != http.StatusBadRequest {
			t.Errorf("inbox page %q = %d, want 400", p, res.StatusCode)
		}
	}
}

// TestUIRoutesFollowTheTable holds every console route to a row of the
// API's authorization table.
func TestUIRoutesFollowTheTable(t *testing.T) {
	api := map[string]broker.Endpoint{}
	for _, e := range broker.Endpoints() {
		api[e.Pattern] = e
	}
	seen := map[string]bool{}
	for _, rt := range broker.UIRoutes() {
		if rt.Follows == "" {
			t.Errorf("console route %q names no API endpoint whose authorization it follows", rt.Pattern)
			continue
		}
		if _, ok := api[rt.Follows]; !ok {
			t.Errorf("console route %q follows %q, which is not in broker.Endpoints()", rt.Pattern, rt.Follows)
		}
		method, path, _ := strings.Cut(rt.Pattern, " ")
		if !strings.HasPrefix(path, "/ui/") || seen[rt.Pattern] {
			t.Errorf("console route %q: want a unique pattern under /ui/", rt.Pattern)
		}
		seen[rt.Pattern] = true
		// A route that changes something follows an endpoint that does.
		if method != http.MethodGet && strings.HasPrefix(rt.Follows, "GET ") {
			t.Errorf("console route %q changes state but follows the read-only %q", rt.Pattern, rt.Follows)
		}
	}
}

// TestWebConsoleReplayLinks holds the request page's and the grants
// pages' links to a request's session replay to the replay routes' own
// authorization: the vendor's reviewers and admins get the vendor log's
// replay, the tenant's approver the tenant trail's, an engineer none; and
// every link shown opens (200), while for a caller shown none both
// replays are refused, so nobody is linked to a 403.
func TestWebConsoleReplayLinks(t *testing.T) {
	b := brokertest.Start(t, nil)
	b.Pair(t, "acme", "prod")
	ctx := context.Background()
	active := func(engineer string) string {
		t.Helper()
		ar, err := asUser(t, b, engineer).CreateRequest(ctx, brokerapi.CreateAccessRequest{Deployment: "acme/prod", Scopes: []string{"clickhouse:system"}, Duration: "1h", Reason: "replay links"})
		if err != nil {
			t.Fatal(err)
		}
		if ar, err = asUser(t, b, "approver@acme.test").Approve(ctx, ar.ID, "ok"); err != nil || ar.State != brokerapi.StateActive {
			t.Fatalf("approve = %s, %v", ar.State, err)
		}
		return ar.ID
	}
	engReq, leadReq := active("engineer@vendor.test"), active("lead@vendor.test")
	vendor := func(id string) string { return "/ui/audit/sessions/" + id }
	tenant := func(id string) string { return "/ui/tenants/acme/audit/sessions/" + id }
	link := regexp.MustCompile(`<a href="([^"]*)" (?:id="replay-link"|class="replay-link")`)

	for _, c := range []struct {
		who            string
		replay         func(string) string // nil: no replay for this caller
		grants         string              // the caller's grants page
		grantsRequests []string            // the requests it lists with a replay link
	}{
		{"engineer@vendor.test", nil, "/ui/grants", nil},
		{"lead@vendor.test", vendor, "/ui/grants", []string{leadReq}},
		{"reviewer@vendor.test", vendor, "/ui/tenant-grants", []string{engReq, leadReq}},
		{"admin@vendor.test", vendor, "/ui/tenant-grants", []string{engReq, leadReq}},
		{"approver@acme.test", tenant, "/ui/tenant-grants", []string{engReq, leadReq}},
	} {
		t.Run(c.who, func(t *testing.T) {
			br := newBrowser(t, b)
			br.signIn(c.who)
			res, body := br.do(http.MethodGet, "/ui/requests/"+engReq, nil)
			got := link.FindAllStringSubmatch(body, -1)
			if res.StatusCode != http.StatusOK {
				t.Fatalf("request page = %d", res.StatusCode)
			}
			if c.replay == nil {
				if got != nil {
					t.Errorf("request page links %q, want no replay", got)
				}
				for _, p := range []string{vendor(engReq), tenant(engReq)} {
					if res, _ := br.do(http.MethodGet, p, nil); res.StatusCode != http.StatusForbidden {
						t.Errorf("%s = %d, want 403 for a caller shown no link", p, res.StatusCode)
					}
				}
			} else if len(got) != 1 || got[0][1] != c.replay(engReq) {
				t.Errorf("request page links %q, want %s", got, c.replay(engReq))
			}

			res, body = br.do(http.MethodGet, c.grants, nil)
			var want []string
			for _, id := range c.grantsRequests {
				want = append(want, c.replay(id))
			}
			var links []string
			for _, m := range link.FindAllStringSubmatch(body, -1) {
				links = append(links, m[1])
			}
			slices.Sort(want)
			slices.Sort(links)
			if res.StatusCode != http.StatusOK || !slices.Equal(links, want) {
				t.Errorf("%s = %d, links %q, want %q", c.grants, res.StatusCode, links, want)
			}
			if c.replay != nil {
				links = append(links, c.replay(engReq))
			}
			for _, p := range links {
				if res, body := br.do(http.MethodGet, p, nil); res.StatusCode != http.StatusOK || !strings.Contains(body, "request.created") {
					t.Errorf("the link %s = %d, want the replay", p, res.StatusCode)
				}
			}
		})
	}
}
