package broker_test

import (
	"context"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/approval"
	"github.com/tetherhq/tether/internal/brokerapi"
)

// auditCount counts the audit events of typ.
func auditCount(t *testing.T, f *consoleFixture, typ string) int {
	t.Helper()
	n := 0
	for _, e := range auditEvents(t, f.b, 1000) {
		if string(e.Type) == typ {
			n++
		}
	}
	return n
}

var (
	pairingTokenRE = regexp.MustCompile(`<code id="pairing-token">([^<]+)</code>`)
	versionRE      = regexp.MustCompile(`name="version" value="([^"]+)"`)
)

// TestWebConsoleAdmin walks the admin's pages: the deployments with
// their agents' status, creating a deployment, a new pairing token shown
// once, and revoking an agent; each as the API authorizes it (an
// approver sees and acts on its own tenant only, and gets no admin
// forms), each form refused without the session's CSRF token.
func TestWebConsoleAdmin(t *testing.T) {
	f := newConsoleFixture(t)
	admin := newBrowser(t, f.b)
	admin.signIn("admin@vendor.test")

	t.Run("deployments with agent status", func(t *testing.T) {
		res, body := admin.do(http.MethodGet, "/ui/deployments", nil)
		checkPageHeaders(t, "/ui/deployments", res)
		for _, want := range []string{`data-deployment="acme/prod"`, `data-deployment="globex/prod"`, `class="agent-status status-online">online`, "customer approval", `id="create-deployment-form"`, `href="/ui/deployments/acme/prod"`} {
			if !strings.Contains(body, want) {
				t.Errorf("admin's /ui/deployments (%d) lacks %q", res.StatusCode, want)
			}
		}
		_, body = f.acme.do(http.MethodGet, "/ui/deployments", nil)
		if !strings.Contains(body, `data-deployment="acme/prod"`) || strings.Contains(body, "globex") || strings.Contains(body, `id="create-deployment-form"`) {
			t.Errorf("acme's approver's /ui/deployments should list acme's only, without the create form: %s", body)
		}
		res, body = admin.do(http.MethodGet, "/ui/deployments/acme/prod", nil)
		for _, want := range []string{`id="agent-status" class="agent-status status-online">online`, `id="agent"`, "agent-prod", `id="pairing-form"`, `id="revoke-agent-form"`, `id="witness" class="text">ok`} {
			if !strings.Contains(body, want) {
				t.Errorf("admin's deployment page (%d) lacks %q", res.StatusCode, want)
			}
		}
	})

	t.Run("globex cannot see acme's deployment", func(t *testing.T) {
		res, body := f.globex.do(http.MethodGet, "/ui/deployments/acme/prod", nil)
		if res.StatusCode != http.StatusForbidden || strings.Contains(body, "agent-prod") {
			t.Errorf("globex's approver on acme's deployment page = %d, want 403 without its content", res.StatusCode)
		}
		if !auditHas(t, f.b, "auth.failed", "wrong_tenant", "/ui/deployments/acme/prod") {
			t.Error("the refused page view is not audited as auth.failed wrong_tenant")
		}
		res, _ = f.globex.do(http.MethodPost, "/ui/deployments/acme/prod/revoke-agent", url.Values{"csrf": {f.globex.csrf()}, "reason": {"not mine"}})
		if res.StatusCode != http.StatusForbidden {
			t.Errorf("globex's approver revoking acme's agent = %d, want 403", res.StatusCode)
		}
	})

	t.Run("pairing token", func(t *testing.T) {
		path := "/ui/deployments/acme/prod/pairing-tokens"
		before := auditCount(t, f, "deployment.pairing_token_issued")
		if res, body := admin.do(http.MethodPost, path, url.Values{}); res.StatusCode != http.StatusForbidden || !strings.Contains(body, "csrf_invalid") {
			t.Errorf("pairing token without CSRF token = %d, want 403 csrf_invalid", res.StatusCode)
		}
		if res, _ := f.acme.do(http.MethodPost, path, url.Values{"csrf": {f.acme.csrf()}}); res.StatusCode != http.StatusForbidden {
			t.Errorf("acme's approver asking for a pairing token = %d, want 403 (admins only, as the API)", res.StatusCode)
		}
		if n := auditCount(t, f, "deployment.pairing_token_issued"); n != before {
			t.Fatalf("refused forms issued %d pairing tokens", n-before)
		}
		res, body := admin.do(http.MethodPost, path, url.Values{"csrf": {admin.csrf()}})
		checkPageHeaders(t, "pairing token page", res)
		m := pairingTokenRE.FindStringSubmatch(body)
		if res.StatusCode != http.StatusCreated || m == nil || len(m[1]) < 20 || !strings.Contains(body, "agent run --join JOIN.json --pairing-token file:TOKEN_FILE --state-dir DIR") {
			t.Fatalf("pairing token = %d, want the token with the agent run hint: %s", res.StatusCode, body)
		}
		if n := auditCount(t, f, "deployment.pairing_token_issued"); n != before+1 {
			t.Errorf("pairing_token.issued events: %d new, want 1", n-before)
		}
		// Shown once: the deployment page does not hold it.
		if _, page := admin.do(http.MethodGet, "/ui/deployments/acme/prod", nil); strings.Contains(page, m[1]) {
			t.Error("the deployment page shows the pairing token again")
		}
	})

	t.Run("create a deployment", func(t *testing.T) {
		form := url.Values{"tenant": {"initech"}, "name": {"reports"}, "region": {"eu-central-1"}}
		if res, _ := admin.do(http.MethodPost, "/ui/deployments", form); res.StatusCode != http.StatusForbidden {
			t.Errorf("create without CSRF token = %d, want 403", res.StatusCode)
		}
		form.Set("csrf", f.acme.csrf())
		if res, _ := f.acme.do(http.MethodPost, "/ui/deployments", form); res.StatusCode != http.StatusForbidden {
			t.Errorf("acme's approver creating a deployment = %d, want 403", res.StatusCode)
		}
		form.Set("csrf", admin.csrf())
		res, body := admin.do(http.MethodPost, "/ui/deployments", form)
		if res.StatusCode != http.StatusCreated || pairingTokenRE.FindStringSubmatch(body) == nil {
			t.Fatalf("create = %d, want the new deployment's pairing token: %s", res.StatusCode, body)
		}
		d, err := f.b.Client.GetDeployment(context.Background(), "initech/reports")
		if err != nil || d.Region != "eu-central-1" {
			t.Fatalf("created deployment = %+v, %v", d, err)
		}
		if !auditHas(t, f.b, "deployment.created", "", "") {
			t.Error("no deployment.created event")
		}
		res, body = admin.do(http.MethodPost, "/ui/deployments", form)
		if res.StatusCode != http.StatusConflict || !strings.Contains(body, "deployment_exists") {
			t.Errorf("creating it again = %d, want 409 deployment_exists", res.StatusCode)
		}
		form.Set("name", "Not A Label")
		if res, _ := admin.do(http.MethodPost, "/ui/deployments", form); res.StatusCode != http.StatusBadRequest {
			t.Errorf("create with an invalid name = %d, want 400", res.StatusCode)
		}
	})

	t.Run("revoke the agent", func(t *testing.T) {
		path := "/ui/deployments/acme/prod/revoke-agent"
		if res, _ := f.acme.do(http.MethodPost, path, url.Values{"reason": {"lost laptop"}}); res.StatusCode != http.StatusForbidden {
			t.Errorf("revoke-agent without CSRF token = %d, want 403", res.StatusCode)
		}
		if res, body := f.acme.do(http.MethodPost, path, url.Values{"csrf": {f.acme.csrf()}, "reason": {" "}}); res.StatusCode != http.StatusBadRequest || !strings.Contains(body, "reason_required") {
			t.Errorf("revoke-agent without a reason = %d, want 400 reason_required", res.StatusCode)
		}
		// The customer's approver may revoke its own agent, as with the API.
		res, body, at := f.acme.follow(http.MethodPost, path, url.Values{"csrf": {f.acme.csrf()}, "reason": {"rotating the node"}})
		if res.StatusCode != http.StatusOK || !strings.HasSuffix(at, "/ui/deployments/acme/prod?done=agent-revoked") || !strings.Contains(body, "status-unpaired") {
			t.Fatalf("revoke-agent = %d at %s, want the deployment page saying unpaired: %s", res.StatusCode, at, body)
		}
		if !auditHas(t, f.b, "agent.revoked", "rotating the node", "") {
			t.Error("no agent.revoked event with the reason")
		}
	})
}

// TestWebConsoleCustomerSettings: an approver lists, adds and removes
// its deployment's freeze and maintenance windows, version-checked;
// vendor admins read them and get no forms, and their forged forms are
// refused as the API refuses them.
func TestWebConsoleCustomerSettings(t *testing.T) {
	f := newConsoleFixture(t)
	admin := newBrowser(t, f.b)
	admin.signIn("admin@vendor.test")
	page := "/ui/deployments/acme/prod"
	ctx := context.Background()

	_, body := f.acme.do(http.MethodGet, page, nil)
	v := versionRE.FindStringSubmatch(body)
	if v == nil || !strings.Contains(body, `id="add-window-form"`) || !strings.Contains(body, `id="permit-form"`) || !strings.Contains(body, `id="freeze-windows-empty"`) {
		t.Fatalf("acme's approver's deployment page lacks the settings forms: %s", body)
	}
	if strings.Contains(body, `id="pairing-form"`) {
		t.Error("an approver is offered the admin's pairing form")
	}
	start := time.Now().UTC().Add(24 * time.Hour).Truncate(time.Minute)
	add := url.Values{"kind": {"freeze"}, "start": {start.Format("2006-01-02T15:04")}, "end": {start.Add(2 * time.Hour).Format("2006-01-02T15:04")}, "reason": {`<b>year-end</b> freeze`}, "version": {v[1]}}

	// The vendor's admin: no forms, and forged ones are refused.
	_, adminPage := admin.do(http.MethodGet, page, nil)
	if strings.Contains(adminPage, `id="add-window-form"`) || strings.Contains(adminPage, `id="permit-form"`) || strings.Contains(adminPage, "window-remove") {
		t.Error("a vendor admin is offered forms to change the customer's settings")
	}
	add.Set("csrf", admin.csrf())
	if res, body := admin.do(http.MethodPost, page+"/windows", add); res.StatusCode != http.StatusForbidden || !strings.Contains(body, "customer") {
		t.Errorf("admin adding a freeze window = %d, want 403 saying the windows are the customer's: %s", res.StatusCode, body)
	}
	add.Set("csrf", f.globex.csrf())
	if res, _ := f.globex.do(http.MethodPost, page+"/windows", add); res.StatusCode != http.StatusForbidden {
		t.Errorf("globex adding acme's freeze window = %d, want 403", res.StatusCode)
	}
	add.Del("csrf")
	if res, _ := f.acme.do(http.MethodPost, page+"/windows", add); res.StatusCode != http.StatusForbidden {
		t.Errorf("adding a window without CSRF token = %d, want 403", res.StatusCode)
	}
	if cs, err := f.b.Client.CustomerSettings(ctx, "acme/prod"); err != nil || len(cs.FreezeWindows) != 0 {
		t.Fatalf("after refused forms the freeze windows are %+v (%v), want none", cs.FreezeWindows, err)
	}

	add.Set("csrf", f.acme.csrf())
	res, body, at := f.acme.follow(http.MethodPost, page+"/windows", add)
	if res.StatusCode != http.StatusOK || !strings.HasSuffix(at, page+"?done=window-added") || !strings.Contains(body, `<table id="freeze-windows">`) || !strings.Contains(body, "&lt;b&gt;year-end&lt;/b&gt; freeze") {
		t.Fatalf("add window = %d at %s, want the page listing it, escaped: %s", res.StatusCode, at, body)
	}
	cs, err := f.b.Client.CustomerSettings(ctx, "acme/prod")
	if err != nil || len(cs.FreezeWindows) != 1 || !cs.FreezeWindows[0].Start.Equal(start) {
		t.Fatalf("freeze windows after adding = %+v (%v), want the one added starting %s", cs.FreezeWindows, err, start)
	}
	if !auditHas(t, f.b, "deployment.settings_changed", "", "") {
		t.Error("no deployment.settings_changed event")
	}
	// The admin reads it.
	if _, adminPage := admin.do(http.MethodGet, page, nil); !strings.Contains(adminPage, "year-end") {
		t.Error("the vendor admin does not see the customer's freeze window")
	}

	// A form from before the change is refused: it would lose it.
	if res, body := f.acme.do(http.MethodPost, page+"/windows", add); res.StatusCode != http.StatusConflict || !strings.Contains(body, "settings_changed") {
		t.Errorf("add with a stale version = %d, want 409 settings_changed", res.StatusCode)
	}
	if res, _ := f.acme.do(http.MethodPost, page+"/windows/remove", url.Values{"csrf": {f.acme.csrf()}, "kind": {"freeze"}, "index": {"0"}, "version": {v[1]}}); res.StatusCode != http.StatusConflict {
		t.Errorf("remove with a stale version = %d, want 409", res.StatusCode)
	}
	if res, _ := f.acme.do(http.MethodPost, page+"/windows", url.Values{"csrf": {f.acme.csrf()}, "kind": {"freeze"}, "start": {"tomorrow"}, "end": {"later"}, "version": {cs.Version}}); res.StatusCode != http.StatusBadRequest {
		t.Errorf("add with unreadable times = %d, want 400", res.StatusCode)
	}

	_, body = f.acme.do(http.MethodGet, page, nil)
	v = versionRE.FindStringSubmatch(body)
	res, body, _ = f.acme.follow(http.MethodPost, page+"/windows/remove", url.Values{"csrf": {f.acme.csrf()}, "kind": {"freeze"}, "index": {"0"}, "version": {v[1]}})
	if res.StatusCode != http.StatusOK || !strings.Contains(body, `id="freeze-windows-empty"`) || !strings.Contains(body, "The window is removed.") {
		t.Errorf("remove = %d, want the page without windows: %s", res.StatusCode, body)
	}
	if cs, err := f.b.Client.CustomerSettings(ctx, "acme/prod"); err != nil || len(cs.FreezeWindows) != 0 {
		t.Errorf("freeze windows after removing = %+v (%v), want none", cs.FreezeWindows, err)
	}
}

// signAtIdP follows a signing link to the dev identity provider, picks
// email there and follows the callback to where the broker sends the
// browser.
func signAtIdP(t *testing.T, br *browser, link, email string) (*http.Response, string, string) {
	t.Helper()
	_, body, at := br.follow(http.MethodGet, link, nil)
	if !strings.Contains(body, "Pick a dev user") {
		t.Fatalf("signing link led to %s, not the identity provider's page: %s", at, body)
	}
	return br.pickDevUser(at, body, email)
}

var (
	digestRE   = regexp.MustCompile(`<code id="digest">([^<]+)</code>`)
	signLinkRE = regexp.MustCompile(`id="sign" href="([^"]+)"`)
)

// TestWebConsolePermitCeremony signs a standing permit in the browser as
// an approval is signed: the approver states the terms, is sent to their
// own identity provider with the permit's digest as nonce, and lands on
// the deployment's page listing the permit; the stored signature's nonce
// is that digest. A request the permit covers is then granted at once,
// shown on the approver's active grants, revoked from there, and found
// in the history. The permit is revoked last. Vendor admins cannot sign.
func TestWebConsolePermitCeremony(t *testing.T) {
	f := newConsoleFixture(t)
	br := f.acme
	ctx := context.Background()
	page := "/ui/deployments/acme/prod"
	now := time.Now().UTC()
	terms := url.Values{"scope": {"prometheus:read"}, "max_grant": {"1h"},
		"start": {now.Add(-time.Minute).Format("2006-01-02T15:04")}, "end": {now.Add(48 * time.Hour).Format("2006-01-02T15:04")}}

	admin := newBrowser(t, f.b)
	admin.signIn("admin@vendor.test")
	terms.Set("csrf", admin.csrf())
	if res, _ := admin.do(http.MethodPost, page+"/permits", terms); res.StatusCode != http.StatusForbidden {
		t.Errorf("a vendor admin signing a permit = %d, want 403", res.StatusCode)
	}
	terms.Del("csrf")
	if res, _ := br.do(http.MethodPost, page+"/permits", terms); res.StatusCode != http.StatusForbidden {
		t.Errorf("permit form without CSRF token = %d, want 403", res.StatusCode)
	}

	terms.Set("csrf", br.csrf())
	res, body := br.do(http.MethodPost, page+"/permits", terms)
	checkPageHeaders(t, "permit sign page", res)
	digest, link := digestRE.FindStringSubmatch(body), signLinkRE.FindStringSubmatch(body)
	if res.StatusCode != http.StatusOK || digest == nil || link == nil || !strings.Contains(body, "prometheus:read") {
		t.Fatalf("permit form = %d, want the permit with a link to sign: %s", res.StatusCode, body)
	}
	authz, err := url.Parse(html.UnescapeString(link[1]))
	if err != nil {
		t.Fatal(err)
	}
	if q := authz.Query(); q.Get("nonce") != digest[1] || !strings.Contains(authz.Path, "/dev/idp/acme/authorize") || q.Get("prompt") != "login" {
		t.Fatalf("signing link = %s, want acme's authorize endpoint with nonce %s and prompt=login", authz, digest[1])
	}
	res, body, at := signAtIdP(t, br, authz.String(), "approver@acme.test")
	if res.StatusCode != http.StatusOK || !strings.HasSuffix(at, page+"?done=permit-signed") || !strings.Contains(body, "Your signature on the permit is recorded.") || !strings.Contains(body, `<table id="permits">`) {
		t.Fatalf("after signing: %d at %s, want the deployment page listing the permit: %s", res.StatusCode, at, body)
	}
	d, err := f.b.Store().GetDeploymentByName(ctx, "acme", "prod")
	if err != nil || len(d.Settings.Permits) != 1 {
		t.Fatalf("stored permits = %d (%v), want 1", len(d.Settings.Permits), err)
	}
	sp := d.Settings.Permits[0]
	if approval.Digest([]byte(sp.Canonical)) != digest[1] || len(sp.Proofs) != 1 || jwtClaim(t, sp.Proofs[0], "nonce") != digest[1] {
		t.Fatalf("stored permit's digest %s / proofs %d, want the digest shown %s as the proof's nonce", approval.Digest([]byte(sp.Canonical)), len(sp.Proofs), digest[1])
	}
	if !auditHas(t, f.b, "permit.signed", "", "") {
		t.Error("no permit.signed event")
	}
	if !strings.Contains(body, `data-permit="`+sp.ID+`"`) || !strings.Contains(body, "approver@acme.test") {
		t.Errorf("the deployment page does not list permit %s with its signer", sp.ID)
	}
	// Co-signing it again is refused: a signer counts once.
	res, body = br.do(http.MethodPost, page+"/permits", url.Values{"csrf": {br.csrf()}, "id": {sp.ID}})
	if link := signLinkRE.FindStringSubmatch(body); res.StatusCode != http.StatusOK || link == nil {
		t.Fatalf("co-sign = %d, want a sign page", res.StatusCode)
	} else if res, body, _ := signAtIdP(t, br, html.UnescapeString(link[1]), "approver@acme.test"); res.StatusCode != http.StatusConflict || !strings.Contains(body, "already_signed") {
		t.Errorf("co-signing one's own permit = %d, want 409 already_signed", res.StatusCode)
	}

	// A covered request is granted at once; the approver revokes it from
	// the active grants page.
	eng := asUser(t, f.b, "engineer@vendor.test")
	ar, err := eng.CreateRequest(ctx, brokerapi.CreateAccessRequest{Deployment: "acme/prod", Scopes: []string{"prometheus:read"}, Duration: "30m", Reason: "latency graphs"})
	if err != nil || ar.State != brokerapi.StateActive {
		t.Fatalf("a request under the permit = %s (%v), want active", ar.State, err)
	}
	_, body = br.do(http.MethodGet, "/ui/tenant-grants", nil)
	if !strings.Contains(body, `<tr data-request="`+ar.ID+`">`) || !strings.Contains(body, `action="/ui/requests/`+ar.ID+`/revoke"`) {
		t.Fatalf("acme's active grants lack %s with a revoke form: %s", ar.ID, body)
	}
	if _, body := f.globex.do(http.MethodGet, "/ui/tenant-grants", nil); strings.Contains(body, ar.ID) {
		t.Error("globex's approver sees acme's grant")
	}
	res, body, _ = br.follow(http.MethodPost, "/ui/requests/"+ar.ID+"/revoke", url.Values{"csrf": {br.csrf()}, "reason": {"done with graphs"}})
	if res.StatusCode != http.StatusOK || !strings.Contains(body, `class="state-revoked">revoked`) {
		t.Errorf("revoke from the grants page = %d, want the request revoked", res.StatusCode)
	}
	_, body = br.do(http.MethodGet, "/ui/history", nil)
	if !strings.Contains(body, `<tr data-request="`+ar.ID+`">`) || strings.Contains(body, f.acmeReq) || strings.Contains(body, f.globexReq) {
		t.Errorf("acme's history should hold the revoked request and no pending one: %s", body)
	}
	if _, body := f.globex.do(http.MethodGet, "/ui/history", nil); strings.Contains(body, ar.ID) {
		t.Error("globex's history shows acme's request")
	}

	// Revoking the permit: the admin cannot, the approver can.
	rp := page + "/permits/" + sp.ID + "/revoke"
	if res, _ := admin.do(http.MethodPost, rp, url.Values{"csrf": {admin.csrf()}}); res.StatusCode != http.StatusForbidden {
		t.Errorf("admin revoking the permit = %d, want 403", res.StatusCode)
	}
	if res, _ := br.do(http.MethodPost, rp, url.Values{}); res.StatusCode != http.StatusForbidden {
		t.Errorf("permit revoke without CSRF token = %d, want 403", res.StatusCode)
	}
	res, body, _ = br.follow(http.MethodPost, rp, url.Values{"csrf": {br.csrf()}})
	if res.StatusCode != http.StatusOK || !strings.Contains(body, "The permit is revoked") || !strings.Contains(body, "state-revoked") {
		t.Errorf("revoke permit = %d, want the page saying revoked: %s", res.StatusCode, body)
	}
	if ar, err := eng.CreateRequest(ctx, brokerapi.CreateAccessRequest{Deployment: "acme/prod", Scopes: []string{"prometheus:read"}, Duration: "30m", Reason: "again"}); err != nil || ar.State != brokerapi.StatePending {
		t.Errorf("a request after the permit's revocation = %s (%v), want pending", ar.State, err)
	}
}

// TestWebConsoleHistoryPages: the history lists 50 decided requests a
// page and refuses pages past its bound.
func TestWebConsoleHistoryPages(t *testing.T) {
	f := newConsoleFixture(t)
	eng := asUser(t, f.b, "engineer@vendor.test")
	var ids []string
	for i := range 52 {
		ar, err := eng.CreateRequest(context.Background(), brokerapi.CreateAccessRequest{Deployment: "globex/prod", Scopes: []string{"clickhouse:system"}, Duration: "30m", Reason: "load"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := asUser(t, f.b, "approver@globex.test").Deny(context.Background(), ar.ID, "no"); err != nil {
			t.Fatalf("deny %d: %v", i, err)
		}
		ids = append(ids, ar.ID)
	}
	rows := regexp.MustCompile(`<tr data-request="([^"]+)">`)
	_, body := f.globex.do(http.MethodGet, "/ui/history", nil)
	first := rows.FindAllStringSubmatch(body, -1)
	if len(first) != 50 || !strings.Contains(body, `href="/ui/history?page=2" rel="next"`) || !strings.Contains(body, "state-denied") {
		t.Fatalf("history page 1 lists %d requests (want 50, denied) with a link to page 2", len(first))
	}
	_, body = f.globex.do(http.MethodGet, "/ui/history?page=2", nil)
	if second := rows.FindAllStringSubmatch(body, -1); len(second) != 2 || strings.Contains(body, `rel="next"`) {
		t.Errorf("history page 2 lists %d requests, want the last 2 and no next page", len(second))
	}
	if _, body := f.acme.do(http.MethodGet, "/ui/history", nil); strings.Contains(body, ids[0]) || !strings.Contains(body, `id="history-empty"`) {
		t.Error("acme's history shows globex's requests")
	}
	for _, p := range []string{"0", "21", "x"} {
		if res, _ := f.globex.do(http.MethodGet, "/ui/history?page="+p, nil); res.StatusCode != http.StatusBadRequest {
			t.Errorf("history page %q = %d, want 400", p, res.StatusCode)
		}
	}
}
