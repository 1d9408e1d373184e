package broker_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/broker"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/brokertest"
	"github.com/tetherhq/tether/internal/config"
	"github.com/tetherhq/tether/internal/ghub"
	"github.com/tetherhq/tether/internal/ghub/ghubtest"
)

// allowed states, independently of broker.Endpoints, who may call each
// endpoint about tenant acme. Callers: engineer, reviewer, admin (vendor
// staff), acme and globex (the tenants' approvers).
var allowed = map[string][]string{
	"GET /api/v1/auth/config":                                          {"public"},
	"GET /api/v1/openapi.json":                                         {"public"},
	"GET /api/v1/whoami":                                               {"engineer", "reviewer", "admin", "acme", "globex"},
	"GET /api/v1/broker":                                               {"engineer", "reviewer", "admin"},
	"GET /api/v1/tickets/{owner}/{repo}/{number}":                      {"engineer", "reviewer", "admin"},
	"POST /api/v1/deployments":                                         {"admin"},
	"GET /api/v1/deployments":                                          {"engineer", "reviewer", "admin", "acme", "globex"},
	"GET /api/v1/deployments/{id}":                                     {"engineer", "reviewer", "admin", "acme"},
	"GET /api/v1/deployments/{tenant}/{name}":                          {"engineer", "reviewer", "admin", "acme"},
	"POST /api/v1/deployments/{id}/pairing-tokens":                     {"admin"},
	"POST /api/v1/deployments/{tenant}/{name}/pairing-tokens":          {"admin"},
	"POST /api/v1/deployments/{id}/ping":                               {"admin"},
	"PUT /api/v1/deployments/{tenant}/{name}/settings":                 {"admin"},
	"GET /api/v1/deployments/{tenant}/{name}/customer-settings":        {"engineer", "reviewer", "admin", "acme"},
	"PUT /api/v1/deployments/{tenant}/{name}/customer-settings":        {"acme"},
	"POST /api/v1/deployments/{tenant}/{name}/revoke-agent":            {"admin", "acme"},
	"POST /api/v1/requests":                                            {"engineer"},
	"GET /api/v1/requests":                                             {"engineer", "reviewer", "admin", "acme", "globex"},
	"GET /api/v1/requests/{id}":                                        {"engineer", "reviewer", "admin", "acme"},
	"POST /api/v1/requests/{id}/approve":                               {"reviewer", "admin", "acme"},
	"POST /api/v1/requests/{id}/approval-statement":                    {"acme"},
	"GET /api/v1/deployments/{tenant}/{name}/permits":                  {"engineer", "reviewer", "admin", "acme"},
	"POST /api/v1/deployments/{tenant}/{name}/permits/statement":       {"acme"},
	"POST /api/v1/deployments/{tenant}/{name}/permits":                 {"acme"},
	"DELETE /api/v1/deployments/{tenant}/{name}/permits/{permit}":      {"acme"},
	"POST /api/v1/requests/{id}/deny":                                  {"reviewer", "admin", "acme"},
	"POST /api/v1/requests/{id}/cancel":                                {"engineer"},
	"POST /api/v1/requests/{id}/revoke":                                {"engineer", "reviewer", "admin", "acme"},
	"POST /api/v1/deployments/{tenant}/{name}/network/plan":            {"engineer", "admin", "acme"},
	"POST /api/v1/requests/{id}/network/apply":                         {"engineer", "admin"},
	"POST /api/v1/requests/{id}/network/teardown":                      {"engineer", "admin"},
	"GET /api/v1/requests/{id}/network/status":                         {"engineer", "reviewer", "admin", "acme"},
	"POST /api/v1/deployments/{tenant}/{name}/ping":                    {"admin"},
	"GET /api/v1/network/registrations":                                {"engineer", "reviewer", "admin", "acme", "globex"},
	"POST /api/v1/tenants/{tenant}/network/registrations":              {"admin", "acme"},
	"POST /api/v1/tenants/{tenant}/network/registrations/{id}/confirm": {"acme"},
	"DELETE /api/v1/tenants/{tenant}/network/registrations/{id}":       {"admin", "acme"},
	"GET /api/v1/audit/events":                                         {"reviewer", "admin"},
	"GET /api/v1/audit/checkpoint":                                     {"reviewer", "admin"},
	"GET /api/v1/audit/proof/inclusion":                                {"reviewer", "admin"},
	"GET /api/v1/audit/proof/consistency":                              {"reviewer", "admin"},
	"GET /api/v1/audit/export":                                         {"reviewer", "admin"},
	"GET /api/v1/audit/public-key":                                     {"reviewer", "admin"},
	"GET /api/v1/tenants/{tenant}/audit/events":                        {"reviewer", "admin", "acme"},
	"GET /api/v1/tenants/{tenant}/audit/export":                        {"reviewer", "admin", "acme"},
	"GET /api/v1/tenants/{tenant}/audit/public-key":                    {"reviewer", "admin", "acme"},
	"POST /api/v1/deployments/{tenant}/{name}/clickhouse/query":        {"engineer"},
	"/api/v1/deployments/{tenant}/{name}/prometheus/{rest...}":         {"engineer"},
}

// TestAuthorizationTable calls every endpoint as every kind of caller —
// no token, garbage, an expired token, a token from an issuer the broker
// does not trust, each role, each tenant's approver — and checks who gets
// through, that refusals are 401/403 JSON errors, and that each refusal
// is an auth.failed audit event.
func TestAuthorizationTable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	onTailnet := externalTailnet(t, ctx)
	gh := ghubtest.NewServer(t)
	gh.AddToken("ghp_t")
	gh.AddIssue(ghubtest.Issue{Owner: "acme", Repo: "incidents", Number: 1, Title: "slow merges"})
	b := brokertest.Start(t, func(c *broker.Config) {
		onTailnet(c)
		c.GitHub = &ghub.Config{BaseURL: gh.URL(), Token: "ghp_t", Org: "vendor", Teams: []string{"sre"}}
	})
	b.Pair(t, "acme", "prod")
	acme, err := b.Client.GetDeployment(ctx, "acme/prod")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Client.CreateDeployment(ctx, brokerapi.CreateDeploymentRequest{Tenant: "globex", Name: "prod"}); err != nil {
		t.Fatal(err)
	}
	// An identity provider the broker does not trust, with the same users.
	stranger := brokertest.NewIdP(t)

	callers := []struct {
		name   string
		token  string
		status int    // for a refused call: 401 or 403
		code   string // error code of a refusal for want of authentication
	}{
		{"none", "", http.StatusUnauthorized, "unauthenticated"},
		{"garbage", "not-a-jwt", http.StatusUnauthorized, "invalid_token"},
		{"expired", b.IdP.TokenAt(t, "engineer@vendor.test", time.Now().Add(-time.Hour)), http.StatusUnauthorized, "invalid_token"},
		{"untrusted", stranger.Token(t, "admin@vendor.test"), http.StatusUnauthorized, "unknown_issuer"},
		{"dev bootstrap outside dev", "tat_whatever", http.StatusUnauthorized, "invalid_token"},
		{"engineer", b.IdP.Token(t, "engineer@vendor.test"), 0, ""},
		{"reviewer", b.IdP.Token(t, "reviewer@vendor.test"), 0, ""},
		{"admin", b.IdP.Token(t, "admin@vendor.test"), 0, ""},
		{"acme", b.IdP.Token(t, "approver@acme.test"), 0, ""},
		{"globex", b.IdP.Token(t, "approver@globex.test"), 0, ""},
	}

	eps := broker.Endpoints()
	for _, e := range eps {
		if _, ok := allowed[e.Pattern]; !ok {
			t.Errorf("endpoint %q is not in this test's table: add who may call it", e.Pattern)
		}
	}
	if len(eps) != len(allowed) {
		t.Errorf("broker has %d endpoints, this test's table %d", len(eps), len(allowed))
	}

	// A request of acme's for the request endpoints.
	eng, err := brokerapi.NewClient(config.CLI{APIURL: b.APIURL(), Token: b.IdP.Token(t, "engineer@vendor.test")})
	if err != nil {
		t.Fatal(err)
	}
	ar, err := eng.CreateRequest(ctx, brokerapi.CreateAccessRequest{Deployment: "acme/prod", Scopes: []string{"clickhouse:system"}, Duration: "30m", Reason: "authz table", Ticket: "acme/incidents#1"})
	if err != nil {
		t.Fatal(err)
	}

	// Refusals by the table carry these codes; the handlers' own refusals
	// (a review that does not count, …) others.
	authzCodes := []string{"unauthenticated", "invalid_token", "unknown_issuer", "no_role", "forbidden", "wrong_tenant"}
	audited := 0
	for _, e := range eps {
		method, path, ok := strings.Cut(e.Pattern, " ")
		if !ok {
			method, path = http.MethodGet, e.Pattern
		}
		id := acme.ID
		if strings.HasPrefix(path, "/api/v1/requests/") {
			id = ar.ID
		}
		path = strings.NewReplacer("{id}", id, "{tenant}", "acme", "{name}", "prod", "{owner}", "acme", "{repo}", "incidents", "{number}", "1", "{rest...}", "api/v1/query?query=up").Replace(path)
		for _, c := range callers {
			want := slices.Contains(allowed[e.Pattern], c.name) || slices.Contains(allowed[e.Pattern], "public")
			status, body := call(t, b.APIURL(), method, path, c.token)
			if (status == http.StatusUnauthorized || status == http.StatusForbidden) && !slices.Contains(authzCodes, body.Error.Code) {
				audited++ // a handler's refusal (a review that does not count, no grant, …), audited too
			}
			refused := (status == http.StatusUnauthorized || status == http.StatusForbidden) && slices.Contains(authzCodes, body.Error.Code)
			if refused == want {
				t.Errorf("%s %s as %s = %d %s, want allowed=%v", method, path, c.name, status, body.Error.Message, want)
				continue
			}
			if !refused {
				continue
			}
			audited++
			if body.Error.Code == "" || body.Error.Message == "" {
				t.Errorf("%s %s as %s: refusal body %+v, want a JSON error with code and message", method, path, c.name, body)
			}
			if c.status != 0 && (status != c.status || body.Error.Code != c.code) {
				t.Errorf("%s %s as %s = %d %s, want %d %s", method, path, c.name, status, body.Error.Code, c.status, c.code)
			}
			if c.status == 0 && status != http.StatusForbidden {
				t.Errorf("%s %s as %s = %d, want 403 (authenticated but not allowed)", method, path, c.name, status)
			}
		}
	}

	// Every refusal is in the audit log.
	evs, err := b.Client.AuditSearch(ctx, brokerapi.AuditQuery{Type: string(audit.AuthFailed), Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != audited {
		t.Errorf("audit has %d auth.failed events, want %d (one per refusal)", len(evs), audited)
	}

	// Listing is filtered to the tenants a caller may act on.
	for _, c := range []struct {
		who  string
		want []string
	}{
		{"approver@acme.test", []string{"acme"}},
		{"approver@globex.test", []string{"globex"}},
		{"engineer@vendor.test", []string{"acme", "globex"}},
	} {
		status, raw := get(t, b.APIURL()+"/api/v1/deployments", b.IdP.Token(t, c.who))
		var list brokerapi.ListDeploymentsResponse
		if status != http.StatusOK || json.Unmarshal(raw, &list) != nil {
			t.Fatalf("list deployments as %s = %d %s", c.who, status, raw)
		}
		var tenants []string
		for _, d := range list.Deployments {
			tenants = append(tenants, d.Tenant)
		}
		slices.Sort(tenants)
		if !slices.Equal(tenants, c.want) {
			t.Errorf("list deployments as %s = tenants %q, want %q", c.who, tenants, c.want)
		}
	}
}

// callSource numbers the loopback addresses call uses: refusals from one
// source are aggregated and its failed authentications limited, so each
// call of the table comes from its own address (127.0.0.0/8 is loopback).
var callSource atomic.Int32

func call(t *testing.T, base, method, path, token string) (int, brokerapi.ErrorEnvelope) {
	t.Helper()
	n := callSource.Add(1)
	hc := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{
		LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 1, byte(n>>8), byte(n))},
	}).DialContext}}
	defer hc.CloseIdleConnections()
	var body io.Reader
	if method == http.MethodPost {
		body = strings.NewReader("{}")
	}
	req, err := http.NewRequest(method, base+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	var e brokerapi.ErrorEnvelope
	json.Unmarshal(raw, &e)
	return res.StatusCode, e
}

func get(t *testing.T, url, token string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	return res.StatusCode, raw
}
