package broker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/broker"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/brokertest"
	"github.com/tetherhq/tether/internal/devbroker"
)

// statusByName maps the net/http constants the broker answers with.
var statusByName = map[string]int{
	"StatusBadRequest": 400, "StatusUnauthorized": 401, "StatusForbidden": 403, "StatusNotFound": 404,
	"StatusConflict": 409, "StatusRequestEntityTooLarge": 413, "StatusUnsupportedMediaType": 415,
	"StatusUnprocessableEntity": 422, "StatusTooManyRequests": 429, "StatusInternalServerError": 500,
	"StatusNotImplemented": 501, "StatusBadGateway": 502, "StatusServiceUnavailable": 503,
	"StatusGatewayTimeout": 504, "StatusGone": 410, "StatusLocked": 423, "StatusInsufficientStorage": 507,
}

var (
	errorfLiteral = regexp.MustCompile(`errorf\(\s*http\.(\w+),\s*"([a-z0-9_]+)"(\s*\+\s*\w+)?\s*,`)
	errorfAny     = regexp.MustCompile(`errorf\(`)
	errorfDecl    = regexp.MustCompile(`func errorf\(`)
	// refuseReview(ctx, r, ar, "code", …) passes its code on to errorf.
	refuseReviewCall = regexp.MustCompile(`refuseReview\([^"\n]*"([a-z0-9_]+)"`)
	refuseReviewBody = regexp.MustCompile(`errorf\(http\.StatusForbidden, code,`)
	writeErrorCall   = regexp.MustCompile(`\bwriteError\(`)
)

// answerKey is one error code with one status it is answered with.
type answerKey struct {
	code   string
	status int
}

// sourceCodes reads the package's sources and returns every error code an
// errorf call can answer, with each status it comes with. A code built as
// "prefix_"+name is returned as "prefix_*".
func sourceCodes(t *testing.T) map[answerKey]bool {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	codes := map[answerKey]bool{}
	add := func(file, code, status string) {
		n, ok := statusByName[status]
		if !ok {
			t.Errorf("%s answers %s with http.%s: add it to statusByName", file, code, status)
		}
		codes[answerKey{code, n}] = true
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		src := string(raw)
		lits := errorfLiteral.FindAllStringSubmatch(src, -1)
		variable := len(refuseReviewBody.FindAllString(src, -1))
		if n := len(errorfAny.FindAllString(src, -1)) - len(errorfDecl.FindAllString(src, -1)); n != len(lits)+variable {
			t.Errorf("%s has %d errorf calls, of which %d have a literal code: give every errorf a literal code (\"code\" or \"prefix_\"+name) so this test sees what the API answers", f, n, len(lits)+variable)
		}
		for _, m := range lits {
			code := m[2]
			if m[3] != "" {
				code += "*"
			}
			add(f, code, m[1])
		}
		if variable > 0 {
			for _, m := range refuseReviewCall.FindAllStringSubmatch(src, -1) {
				add(f, m[1], "StatusForbidden")
			}
		}
	}
	return codes
}

// TestAnswersGoThroughTheEdge: API errors are answered only by the edge
// that records refusals (Broker.answer), so no handler can forget to.
func TestAnswersGoThroughTheEdge(t *testing.T) {
	allowed := map[string]bool{"http.go": true}
	files, _ := filepath.Glob("*.go")
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		raw, _ := os.ReadFile(f)
		n := len(writeErrorCall.FindAllString(string(raw), -1))
		if strings.Contains(string(raw), "func writeError(") {
			n--
		}
		if n > 0 && !allowed[f] {
			t.Errorf("%s calls writeError %d times: answer API errors with b.answer, which records refusals", f, n)
		}
	}
}

// refusalFixture is a dev broker with one paired and one unpaired
// deployment, its dev users and a pending request of each kind the
// table's rows need.
type refusalFixture struct {
	t       *testing.T
	b       *brokertest.Broker
	tokens  map[string]string
	pending string // engineer's pending request on acme/prod
	lead    string // lead's pending request on acme/prod
	active  string // engineer's active request on acme/prod (clickhouse:system)
	ip      atomic.Int32
}

func newRefusalFixture(t *testing.T) *refusalFixture {
	b := brokertest.Start(t, func(c *broker.Config) { c.LifecycleInterval = 20 * time.Millisecond })
	b.Pair(t, "acme", "prod")
	ctx := context.Background()
	if _, err := b.Client.CreateDeployment(ctx, brokerapi.CreateDeploymentRequest{Tenant: "globex", Name: "prod"}); err != nil {
		t.Fatal(err)
	}
	f := &refusalFixture{t: t, b: b, tokens: map[string]string{}}
	for _, u := range []string{"engineer@vendor.test", "lead@vendor.test", "reviewer@vendor.test", "admin@vendor.test", "approver@acme.test", "approver@globex.test"} {
		tok, err := b.DevIdP().Token(brokertest.IssuerOf(u), u, devbroker.ClientID, "")
		if err != nil {
			t.Fatal(err)
		}
		f.tokens[strings.Split(u, "@")[0]+"@"+strings.Split(strings.Split(u, "@")[1], ".")[0]] = tok
	}
	ask := brokerapi.CreateAccessRequest{Deployment: "acme/prod", Scopes: []string{"clickhouse:system"}, Duration: "30m", Reason: "refusal table"}
	eng, lead, acme := asUser(t, b, "engineer@vendor.test"), asUser(t, b, "lead@vendor.test"), asUser(t, b, "approver@acme.test")
	for _, dst := range []*string{&f.pending, &f.active} {
		ar, err := eng.CreateRequest(ctx, ask)
		if err != nil {
			t.Fatal(err)
		}
		*dst = ar.ID
	}
	if _, err := acme.Approve(ctx, f.active, ""); err != nil {
		t.Fatal(err)
	}
	ar, err := lead.CreateRequest(ctx, ask)
	if err != nil {
		t.Fatal(err)
	}
	f.lead = ar.ID
	return f
}

// client is an HTTP client calling from its own loopback address, so that
// refusals from different rows are different sources.
func (f *refusalFixture) client() *http.Client {
	n := f.ip.Add(1)
	local := &net.TCPAddr{IP: net.IPv4(127, 0, 3, byte(n))}
	return &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: local}).DialContext}}
}

// do calls the API as who ("" for no token) with a raw body.
func (f *refusalFixture) do(who, method, path, body string, hdr ...string) (int, string) {
	f.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, f.b.APIURL()+path, rd)
	if err != nil {
		f.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	switch tok, ok := f.tokens[who]; {
	case ok:
		req.Header.Set("Authorization", "Bearer "+tok)
	case who != "":
		req.Header.Set("Authorization", "Bearer "+who)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := f.client().Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	var e struct {
		Error struct{ Code string } `json:"error"`
	}
	json.Unmarshal(raw, &e)
	return res.StatusCode, e.Error.Code
}

// eventsSince returns the audit events stored from index from on.
func eventsSince(t *testing.T, b *brokertest.Broker, from uint64) ([]audit.Event, int) {
	t.Helper()
	recs, err := b.Store().Records(context.Background(), audit.Filter{FromIndex: from})
	if err != nil {
		t.Fatal(err)
	}
	var out []audit.Event
	size := 0
	for _, r := range recs {
		var e audit.Event
		if err := json.Unmarshal(r.Data, &e); err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
		size += len(r.Data)
	}
	return out, size
}

func auditSize(t *testing.T, b *brokertest.Broker) uint64 {
	t.Helper()
	n, err := b.Store().AuditSize(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestEveryRefusalAudited lists every error code the broker's API can
// answer (the test fails when the source has one the table lacks) and,
// for each it can provoke against a dev broker, checks that the refusal
// writes exactly one audit event naming the code — and that a server
// error (5xx) writes none.
// regBody is a registration of account with its role and one VPC, plus
// extra JSON fields.
func regBody(account, extra string) string {
	return `{"account_id":"` + account + `","role_arn":"arn:aws:iam::` + account + `:role/TetherNetwork","vpc_ids":["vpc-0a1b2c3d"]` + extra + `}`
}

func TestEveryRefusalAudited(t *testing.T) {
	type provoke func(f *refusalFixture) (int, string)
	call := func(who, method, path, body string, hdr ...string) provoke {
		return func(f *refusalFixture) (int, string) { return f.do(who, method, path, body, hdr...) }
	}
	req := func(who, body string) provoke { return call(who, "POST", "/api/v1/requests", body) }
	ask := func(edit string) string {
		return `{"deployment":"acme/prod","scopes":["clickhouse:system"],"duration":"30m","reason":"r"` + edit + `}`
	}
	onReq := func(who, method, which, suffix, body string) provoke {
		return func(f *refusalFixture) (int, string) {
			id := map[string]string{"pending": f.pending, "lead": f.lead, "active": f.active}[which]
			return f.do(who, method, "/api/v1/requests/"+id+suffix, body)
		}
	}
	settings := func(body string) provoke {
		return call("admin@vendor", "PUT", "/api/v1/deployments/acme/prod/settings", body)
	}
	stranger := brokertest.NewIdP(t)

	const (
		agentAPI = "agent API (agentsrv.go and the agent handlers of auditapi.go): answered to tailnet peers through the same edge; TestAgentAPIRefusalsAudited provokes them"
		needsAWS = "needs a network configuration and AWS (moto): the network tests provoke it; answered through the same edge"
		needsGH  = "needs a GitHub fake: TestGitHub and TestBreakGlass provoke it; answered through the same edge"
	)
	rows := []struct {
		code   string
		status int
		run    provoke
		why    string // when run is nil: why it is not provoked here
		typ    audit.Type
	}{
		// Authentication and authorization (authz.go).
		{"unauthenticated", 401, call("", "GET", "/api/v1/whoami", ""), "", ""},
		{"invalid_token", 401, call("tat_wrong", "GET", "/api/v1/whoami", ""), "", ""},
		{"unknown_issuer", 401, func(f *refusalFixture) (int, string) {
			return f.do(stranger.Token(t, "admin@vendor.test"), "GET", "/api/v1/whoami", "")
		}, "", ""},
		{"too_many_failures", 429, nil, "TestAuthFailureFlood provokes it", ""},
		{"no_role", 403, nil, "needs a user the identity provider maps to no role; the dev provider has none", ""},
		{"idp_unavailable", 503, nil, "needs an unreachable identity provider", ""},
		{"forbidden", 403, call("engineer@vendor", "GET", "/api/v1/audit/events", ""), "", ""},
		{"wrong_tenant", 403, call("approver@globex", "GET", "/api/v1/deployments/acme/prod", ""), "", ""},
		{"invalid_issuer", 400, call("", "GET", "/api/v1/auth/config?issuer="+strings.Repeat("i", 65), ""), "", ""},
		{"unknown_issuer", 404, call("", "GET", "/api/v1/auth/config?issuer=nobody", ""), "", ""},
		{"not_found", 404, call("", "GET", "/api/v1/nothing-here", ""), "", ""},
		// The web console (ui.go, ui_requests.go): answered as pages through the same edge (recordRefusal).
		{"csrf_invalid", 403, nil, "a console form without the session's CSRF token: TestWebConsoleApprover provokes it and checks its auth.failed event", ""},
		{"invalid_query", 400, nil, "a console query form without a query: TestWebConsoleQuery provokes it and checks its api.refused event", ""},
		{"invalid_form", 400, nil, "a console form that cannot be parsed; answered through the same edge", ""},
		{"invalid_page", 400, nil, "an inbox page past its bound: TestWebConsoleInboxPages provokes it", ""},
		{"invalid_id", 400, nil, "a session replay of something that is not a request or grant ID: TestWebConsoleAudit provokes it", ""},
		{"session_not_found", 404, nil, "a session replay of an ID with no events: TestWebConsoleAudit provokes it", ""},
		// Bodies (http.go).
		{"bad_json", 400, req("engineer@vendor", `{"deployment":`), "", ""},
		{"bad_content_type", 415, call("engineer@vendor", "POST", "/api/v1/requests", ask(""), "Content-Type", "text/plain"), "", ""},
		{"body_too_large", 413, req("engineer@vendor", `{"reason":"`+strings.Repeat("x", brokerapi.MaxBody)+`"}`), "", ""},
		// Deployments (api.go).
		{"invalid_tenant", 400, call("admin@vendor", "POST", "/api/v1/deployments", `{"tenant":"Bad!","name":"x"}`), "", ""},
		{"invalid_name", 400, call("admin@vendor", "POST", "/api/v1/deployments", `{"tenant":"acme","name":"Bad!"}`), "", ""},
		{"invalid_region", 400, call("admin@vendor", "POST", "/api/v1/deployments", `{"tenant":"acme","name":"x","region":"nowhere"}`), "", ""},
		{"deployment_exists", 409, call("admin@vendor", "POST", "/api/v1/deployments", `{"tenant":"acme","name":"prod"}`), "", ""},
		{"deployment_not_found", 404, call("admin@vendor", "GET", "/api/v1/deployments/acme/nope", ""), "", ""},
		{"invalid_deployment", 400, req("engineer@vendor", `{"deployment":"nope","scopes":["clickhouse:system"],"duration":"30m","reason":"r"}`), "", ""},
		{"invalid_count", 400, call("admin@vendor", "POST", "/api/v1/deployments/acme/prod/ping?count=0", ""), "", ""},
		{"agent_unpaired", 409, call("admin@vendor", "POST", "/api/v1/deployments/globex/prod/ping", ""), "", ""},
		{"agent_unreachable", 502, nil, "the agent did not answer: a server-side failure, not a refusal", ""},
		{"audit_unavailable", 500, nil, "TestAuditBeforeAnswer provokes it; a server-side failure", ""},
		{"store_full", 507, nil, "TestRevocationOnFullDisk provokes it (the store on a full tmpfs); a server-side failure", ""},
		{"revocation_unrecorded", 500, nil, "TestRevocationOnFullDisk provokes it (the store on a full tmpfs, its reserve spent); a server-side failure", ""},
		// Requests (requests.go).
		{"invalid_scope", 400, req("engineer@vendor", `{"deployment":"acme/prod","scopes":["nope"],"duration":"30m","reason":"r"}`), "", ""},
		{"invalid_duration", 400, req("engineer@vendor", `{"deployment":"acme/prod","scopes":["clickhouse:system"],"duration":"1s","reason":"r"}`), "", ""},
		{"invalid_reason", 400, req("engineer@vendor", `{"deployment":"acme/prod","scopes":["clickhouse:system"],"duration":"30m","reason":" "}`), "", ""},
		{"invalid_ticket", 400, req("engineer@vendor", ask(`,"ticket":"not a ticket"`)), "", ""},
		{"unexpected_network", 400, req("engineer@vendor", ask(`,"network":{"kind":"peering"}`)), "", ""},
		{"no_network_config", 409, req("engineer@vendor", `{"deployment":"acme/prod","scopes":["network:peering"],"duration":"30m","reason":"r"}`), "", ""},
		{"policy_denied", 403, req("engineer@vendor", `{"deployment":"acme/prod","scopes":["clickhouse:system"],"duration":"5h","reason":"r"}`), "", audit.PolicyDecided},
		{"policy_error", 500, nil, "a broken policy: a server-side failure, recorded as policy.decided failure", ""},
		{"breakglass_needs_sev1", 403, nil, "the default policy refuses break-glass without a verified ticket first: " + needsGH, ""},
		{"duration_too_long", 403, nil, "the default policy refuses first (policy_denied); a policy allowing more than the hard cap would reach it", ""},
		{"no_scope", 403, nil, "needs a policy granting none of the scopes asked for", ""},
		{"invalid_request_id", 400, call("engineer@vendor", "GET", "/api/v1/requests/not-a-uuid", ""), "", ""},
		{"request_not_found", 404, call("engineer@vendor", "GET", "/api/v1/requests/0190aaaa-0000-7000-8000-000000000000", ""), "", ""},
		{"invalid_wait", 400, onReq("engineer@vendor", "GET", "pending", "?wait=soon", ""), "", ""},
		{"invalid_version", 400, onReq("engineer@vendor", "GET", "pending", "?wait=1s&version=x", ""), "", ""},
		{"invalid_state", 400, call("engineer@vendor", "GET", "/api/v1/requests?state=nope", ""), "", ""},
		{"invalid_mine", 400, call("engineer@vendor", "GET", "/api/v1/requests?mine=perhaps", ""), "", ""},
		{"comment_required", 400, onReq("approver@acme", "POST", "pending", "/deny", `{}`), "", ""},
		{"invalid_comment", 400, onReq("approver@acme", "POST", "pending", "/approve", `{"comment":"`+strings.Repeat("c", 2001)+`"}`), "", ""},
		{"self_review", 403, onReq("lead@vendor", "POST", "lead", "/approve", `{}`), "", ""},
		{"not_a_reviewer", 403, onReq("reviewer@vendor", "POST", "pending", "/approve", `{}`), "", ""},
		{"not_pending", 409, onReq("approver@acme", "POST", "active", "/approve", `{}`), "", ""},
		{"approval_proof_required", 403, onReq("approver@acme", "POST", "pending", "/approve", `{}`), "", ""},
		{"approval_proof_invalid", 403, onReq("approver@acme", "POST", "pending", "/approve", `{"statement":"{}","proof":"not.a.token"}`), "", ""},
		{"invalid_review", 400, onReq("approver@acme", "POST", "pending", "/deny", `{"comment":"no","statement":"{}"}`), "", ""},
		{"statement_mismatch", 409, onReq("approver@acme", "POST", "pending", "/approval-statement", `{"duration":"100h"}`), "", ""},
		{"approved_window_over", 409, nil, "needs a signed window that ended before the last approval: access.TestGrantForSignedTerms provokes it", ""},
		{"invalid_permit", 400, call("approver@acme", "POST", "/api/v1/deployments/acme/prod/permits/statement", `{"scopes":["prometheus:read"],"windows":[],"max_grant":"1h"}`), "", ""},
		{"permit_not_found", 404, call("approver@acme", "DELETE", "/api/v1/deployments/acme/prod/permits/nope", ""), "", ""},
		{"permit_changed", 409, nil, "needs a permit co-signed with other terms than stored: TestStandingPermit's flow, answered through the same edge", ""},
		{"permit_revoked", 409, nil, "needs a co-signature of a revoked permit; answered through the same edge", ""},
		{"already_signed", 409, nil, "needs a second signature by the same approver; answered through the same edge", ""},
		{"too_many_permits", 409, nil, "needs 50 permits on one deployment", ""},
		{"permit_gone", 409, nil, "needs a permit revoked between a request and its grant: access.TestCoveringPermit covers the rule", ""},
		{"already_reviewed", 409, nil, "needs a request still pending after one person's review: TestBreakGlass provokes it", ""},
		{"review_not_needed", 409, nil, "needs a request with two kinds of reviews; answered through the same edge", ""},
		{"not_requester", 403, onReq("lead@vendor", "POST", "pending", "/cancel", ""), "", ""},
		{"reason_required", 400, onReq("approver@acme", "POST", "active", "/revoke", `{"reason":""}`), "", ""},
		{"not_allowed_to_revoke", 403, onReq("engineer@vendor", "POST", "lead", "/revoke", `{"reason":"mine now"}`), "", ""},
		{"not_active", 409, onReq("approver@acme", "POST", "pending", "/revoke", `{"reason":"r"}`), "", ""},
		{"busy", 409, nil, "needs heavy contention on one request", ""},
		// Grants and the data plane (grants.go, dataapi.go).
		{"not_approved", 409, nil, "a request that changed while its grant was issued, or a network change not yet approved", ""},
		{"no_grant", 403, call("engineer@vendor", "GET", "/api/v1/deployments/acme/prod/prometheus/api/v1/query?query=up", ""), "", ""},
		{"grant_refused", 403, call("engineer@vendor", "POST", "/api/v1/deployments/acme/prod/clickhouse/query", "SELECT 1", "Tether-Grant", "made.up.grant"), "", ""},
		{"agent_revoked", 409, nil, "needs a revoked agent: the revoke-agent tests provoke it; answered through the same edge", ""},
		{"agent_offline", 503, nil, "the agent is not on the tailnet: a server-side state; TestCallToAgentOffTailnetSendsNothing (e2e) provokes it", ""},
		{"agent_refused_answer", 502, nil, "a hostile agent's redirect: TestHostileAgentCannotRedirectTheBroker provokes it and checks its agent.call_refused event", ""},
		{"bad_path", 400, nil, "unreachable through the router (the prefix always matches); kept as a guard", ""},
		// Settings (settings.go).
		{"invalid_approval_mode", 400, settings(`{"approval_mode":"anyone"}`), "", ""},
		{"invalid_labels", 400, settings(`{"labels":{` + manyLabels(65) + `}}`), "", ""},
		{"invalid_label", 400, settings(`{"labels":{"Bad Key":"v"}}`), "", ""},
		{"invalid_window", 400, settings(`{"freeze_windows":[{"start":"2030-01-02T00:00:00Z","end":"2030-01-01T00:00:00Z"}]}`), "", ""},
		{"customer_owned", 403, settings(`{"freeze_windows":[{"start":"2030-01-01T00:00:00Z","end":"2030-01-02T00:00:00Z"}]}`), "", ""},
		{"version_required", 400, call("approver@acme", "PUT", "/api/v1/deployments/acme/prod/customer-settings", `{"freeze_windows":[]}`), "", ""},
		{"settings_changed", 409, call("approver@acme", "PUT", "/api/v1/deployments/acme/prod/customer-settings", `{"freeze_windows":[],"version":"0123456789abcdef0123456789abcdef"}`), "", ""},
		// The audit API (auditapi.go).
		{"invalid_type", 400, call("reviewer@vendor", "GET", "/api/v1/audit/events?type=nope", ""), "", ""},
		{"invalid_limit", 400, call("reviewer@vendor", "GET", "/api/v1/audit/events?limit=0", ""), "", ""},
		{"invalid_order", 400, nil, "the console's audit search in an order other than newest or oldest: TestWebConsoleAudit provokes it and checks its api.refused event", ""},
		{"invalid_*", 400, call("reviewer@vendor", "GET", "/api/v1/audit/events?since=yesterday", ""), "", ""},
		{"missing_*", 400, call("reviewer@vendor", "GET", "/api/v1/audit/proof/inclusion", ""), "", ""},
		{"invalid_range", 400, call("reviewer@vendor", "GET", "/api/v1/audit/proof/consistency?from=5&to=2", ""), "", ""},
		{"invalid_size", 400, nil, "an audit size past the log's end; answered through the same edge", ""},
		{"no_checkpoint", 404, nil, "a log with no checkpoint yet", ""},
		{"nothing_to_export", 404, nil, "an empty export range", ""},
		{"audit_tampered", 500, nil, "a store edited behind the log's back: a server-side failure, recorded as audit.verify_failed", ""},
		// GitHub (github.go).
		{"github_not_configured", 501, call("engineer@vendor", "GET", "/api/v1/tickets/acme/ops/1", ""), "", ""},
		{"ticket_not_found", 404, nil, needsGH, ""},
		{"ticket_not_issue", 422, nil, needsGH, ""},
		{"ticket_closed", 409, nil, needsGH, ""},
		{"github_rate_limited", 429, nil, needsGH, ""},
		{"github_unauthorized", 502, nil, needsGH, ""},
		{"github_unavailable", 502, nil, needsGH, ""},
		// Network changes (netapi.go, network.go).
		{"network_not_configured", 501, nil, needsAWS, ""},
		{"network_spec_required", 400, nil, needsAWS, ""},
		{"invalid_kind", 400, nil, needsAWS, ""},
		{"invalid_network", 400, nil, needsAWS, ""},
		{"cidr_overlap", 409, nil, needsAWS, ""},
		{"aws_not_found", 404, nil, needsAWS, ""},
		{"aws_denied", 403, nil, needsAWS, ""},
		{"aws_error", 502, nil, needsAWS, ""},
		{"not_a_network_request", 400, nil, needsAWS, ""},
		{"window_over", 409, nil, needsAWS, ""},
		{"outside_maintenance_window", 409, nil, needsAWS, ""},
		// Network registrations (netreg.go).
		{"unknown_tenant", 404, call("admin@vendor", "POST", "/api/v1/tenants/initech/network/registrations", regBody("444444444444", "")), "", ""},
		{"invalid_route_table_ids", 400, call("approver@acme", "POST", "/api/v1/tenants/acme/network/registrations", regBody("444444444444", `,"route_table_ids":[`+strings.TrimSuffix(strings.Repeat(`"rtb-0a1b2c3d",`, 201), ",")+`]`)), "", ""},
		{"registration_not_found", 404, call("approver@acme", "POST", "/api/v1/tenants/acme/network/registrations/0190aaaa-0000-7000-8000-000000000000/confirm", ""), "", ""},
		{"account_registered", 409, func(f *refusalFixture) (int, string) {
			if _, err := asUser(t, f.b, "approver@acme.test").RegisterNetwork(context.Background(), "acme", brokerapi.RegisterNetwork{AccountID: "555555555555", RoleARN: "arn:aws:iam::555555555555:role/TetherNetwork", VPCIDs: []string{"vpc-0a1b2c3d"}}); err != nil {
				t.Fatal(err)
			}
			return f.do("approver@globex", "POST", "/api/v1/tenants/globex/network/registrations", regBody("555555555555", ""))
		}, "", audit.NetworkRegistered},
		{"already_confirmed", 409, func(f *refusalFixture) (int, string) {
			res, err := asUser(t, f.b, "approver@acme.test").RegisterNetwork(context.Background(), "acme", brokerapi.RegisterNetwork{AccountID: "666666666666", RoleARN: "arn:aws:iam::666666666666:role/TetherNetwork", VPCIDs: []string{"vpc-0a1b2c3d"}})
			if err != nil {
				t.Fatal(err)
			}
			return f.do("approver@acme", "POST", "/api/v1/tenants/acme/network/registrations/"+res.Registration.ID+"/confirm", "")
		}, "", ""},
		{"invalid_role_arn", 400, call("approver@acme", "POST", "/api/v1/tenants/acme/network/registrations", `{"account_id":"444444444444","role_arn":"arn:aws:iam::999999999999:role/TetherNetwork","vpc_ids":["vpc-0a1b2c3d"]}`), "", ""},
		{"invalid_vpc_ids", 400, call("approver@acme", "POST", "/api/v1/tenants/acme/network/registrations", `{"account_id":"444444444444","role_arn":"arn:aws:iam::444444444444:role/TetherNetwork","vpc_ids":[]}`), "", ""},
		{"invalid_peer_cidrs", 400, call("approver@acme", "POST", "/api/v1/tenants/acme/network/registrations", regBody("444444444444", `,"peer_cidrs":["10.1.2.3/16"]`)), "", ""},
		{"not_tenant_approver", 403, nil, "needs an admin's pending registration confirmed by a vendor user who passes the tenant scope (an admin): TestNetworkRegistration provokes it", ""},
		{"not_registered", 403, nil, needsAWS, ""},
		{"registration_pending", 403, nil, needsAWS, ""},
		{"no_approved_plan", 409, nil, needsAWS, ""},
		{"plan_digest_mismatch", 409, nil, needsAWS, ""},
		{"plan_changed", 409, nil, needsAWS, ""},
		{"plan_damaged", 500, nil, "a stored plan that no longer decodes: a server-side failure", ""},
		{"frozen", 409, nil, needsAWS, ""},
		{"network_conflict", 409, nil, needsAWS, ""},
		{"public_cidr", 403, nil, needsAWS, ""},
		{"not_applied", 409, nil, needsAWS, ""},
		{"registration_changed", 409, nil, "needs a registration changed between a confirmation's read and write (a race); answered through the same edge", ""},
		{"external_id_unreadable", 500, nil, "needs a seal key other than the one that sealed the ID: netaccess.TestSidesUseSealedExternalID provokes it; a server-side failure", ""},
		// The agent API.
		{"not_a_peer", 403, nil, agentAPI, ""},
		{"agent_refused", 403, nil, agentAPI, ""},
		{"bad_challenge", 403, nil, agentAPI, ""},
		{"bad_signature", 403, nil, agentAPI, ""},
		{"wrong_node", 403, nil, agentAPI, ""},
		{"no_session", 401, nil, agentAPI, ""},
		{"token_malformed", 400, nil, agentAPI, ""},
		{"token_unknown", 401, nil, agentAPI, ""},
		{"token_expired", 401, nil, agentAPI, ""},
		{"token_used", 401, nil, agentAPI, ""},
		{"bad_public_key", 400, nil, agentAPI, ""},
		{"bad_nonce", 400, nil, agentAPI, ""},
		{"bad_heartbeat", 400, nil, agentAPI, ""},
		{"busy", 503, nil, agentAPI, ""},
		{"audit_unavailable", 503, nil, agentAPI, ""},
		{"too_many_events", 413, nil, agentAPI, ""},
		{"bad_cosignature", 400, nil, agentAPI, ""},
		{"unknown_checkpoint", 400, nil, agentAPI, ""},
	}

	// The table and the source agree.
	src := sourceCodes(t)
	listed := map[answerKey]bool{}
	for _, row := range rows {
		k := answerKey{row.code, row.status}
		if listed[k] {
			t.Errorf("code %q with %d is in this test's table twice", row.code, row.status)
		}
		listed[k] = true
		if !src[k] {
			t.Errorf("code %q with %d is in this test's table but no errorf in the package answers it so: drop or fix the row", row.code, row.status)
		}
		if row.run == nil && row.why == "" {
			t.Errorf("code %q: provoke it here, or say why not", row.code)
		}
	}
	for k := range src {
		if !listed[k] {
			t.Errorf("the API answers code %q with %d but this test's table lacks it: add a row that provokes it and checks its audit event", k.code, k.status)
		}
	}
	if t.Failed() {
		return
	}

	f := newRefusalFixture(t)
	for _, row := range rows {
		if row.run == nil {
			continue
		}
		t.Run(row.code, func(t *testing.T) {
			before := auditSize(t, f.b)
			status, code := row.run(f)
			want := strings.TrimSuffix(row.code, "*")
			if status != row.status || !strings.HasPrefix(code, want) {
				t.Fatalf("answer = %d %q, want %d %q", status, code, row.status, row.code)
			}
			evs, _ := eventsSince(t, f.b, before)
			var failures []audit.Event
			for _, e := range evs {
				if e.Outcome == audit.Failure {
					failures = append(failures, e)
				}
			}
			if status >= 500 && status != 503 {
				if len(failures) != 0 {
					t.Errorf("a server error wrote %d failure events, want none: %+v", len(failures), failures)
				}
				return
			}
			if len(failures) != 1 {
				t.Fatalf("refusal wrote %d failure events, want exactly 1: %+v", len(failures), failures)
			}
			e := failures[0]
			wantType := row.typ
			if wantType == "" {
				wantType = audit.APIRefused
				if status == 401 || status == 403 || code == "too_many_failures" {
					wantType = audit.AuthFailed
				}
			}
			if e.Type != wantType {
				t.Errorf("event type = %s, want %s", e.Type, wantType)
			}
			if (wantType == audit.APIRefused || wantType == audit.AuthFailed) && e.Reason != code {
				t.Errorf("event reason = %q, want the code %q", e.Reason, code)
			}
			if path, _ := e.Details["path"].(string); len(path) > 300 {
				t.Errorf("event path is %d bytes, want it cut", len(path))
			}
		})
	}
}

func manyLabels(n int) string {
	var parts []string
	for i := range n {
		parts = append(parts, fmt.Sprintf(`"k%d":"v"`, i))
	}
	return strings.Join(parts, ",")
}

// TestAuthFailureFlood is the attack of issue 13: unauthenticated requests
// with long paths used to write one auth.failed each, with the full path
// (12 MB in 4 s). Now 1,000 of them grow the log by a bounded number of
// events and bytes, the flood is answered 429 with Retry-After once over
// its limit, every failure is still counted, and an authenticated user is
// served throughout.
func TestAuthFailureFlood(t *testing.T) {
	var clk clock
	b := brokertest.Start(t, func(c *broker.Config) { c.Now = clk.now; c.LifecycleInterval = 20 * time.Millisecond })
	before := auditSize(t, b)
	long := "/api/v1/deployments/acme/prod/prometheus/" + strings.Repeat("a", 60<<10)

	const flood, workers = 1000, 8
	var (
		wg              sync.WaitGroup
		unauth, limited atomic.Int32
		retryAfter      atomic.Value
		stop            = make(chan struct{})
		served, failed  atomic.Int32
	)
	// An authenticated user during the flood, from the same address.
	admin := b.Client
	userDone := make(chan struct{})
	go func() {
		defer close(userDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := admin.ListDeployments(context.Background()); err != nil {
				failed.Add(1)
				t.Errorf("authenticated call during the flood: %v", err)
				return
			}
			served.Add(1)
		}
	}()
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	var next atomic.Int32
	for range workers {
		wg.Go(func() {
			for next.Add(1) <= flood {
				req, _ := http.NewRequest("GET", b.APIURL()+long, nil)
				req.Header.Set("Authorization", "Bearer not-a-token-"+strings.Repeat("x", 1000))
				res, err := hc.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
				switch res.StatusCode {
				case http.StatusUnauthorized:
					unauth.Add(1)
				case http.StatusTooManyRequests:
					limited.Add(1)
					retryAfter.Store(res.Header.Get("Retry-After"))
				default:
					t.Errorf("flood request = %d, want 401 or 429", res.StatusCode)
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	<-userDone
	t.Logf("flood: %d answered 401, %d answered 429; the authenticated user was served %d times meanwhile", unauth.Load(), limited.Load(), served.Load())
	if failed.Load() > 0 || served.Load() == 0 {
		t.Errorf("the authenticated user was served %d times and failed %d times during the flood, want served and never failed", served.Load(), failed.Load())
	}
	if limited.Load() == 0 {
		t.Error("no flood request was answered 429")
	} else if ra, _ := retryAfter.Load().(string); ra == "" || ra == "0" {
		t.Errorf("429 Retry-After = %q, want whole seconds", ra)
	}

	// The windows end: the broker writes one aggregate per source, route
	// and code, counting every refusal.
	clk.advance(11 * time.Second)
	deadline := time.Now().Add(20 * time.Second)
	var evs []audit.Event
	var bytes int
	for {
		evs, bytes = eventsSince(t, b, before)
		total := 0
		for _, e := range evs {
			if e.Type != audit.AuthFailed {
				continue
			}
			n := 1
			if c, ok := e.Details["count"].(float64); ok {
				n = int(c)
			}
			total += n
		}
		if total == flood {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("audit counts %d refused requests, want %d: %d events", total, flood, len(evs))
		}
		time.Sleep(20 * time.Millisecond) // polling for the lifecycle loop's flush
	}
	t.Logf("1,000 refused requests wrote %d audit events, %d bytes", len(evs), bytes)
	if len(evs) > 6 || bytes > 8<<10 {
		t.Errorf("1,000 refused requests wrote %d audit events, %d bytes; want at most 6 events and 8 KiB", len(evs), bytes)
	}
	for _, e := range evs {
		if p, _ := e.Details["path"].(string); len(p) > 260 {
			t.Errorf("an event stores a %d-byte path, want at most 256 bytes", len(p))
		}
	}
	// The types read right in a search.
	if !slices.ContainsFunc(evs, func(e audit.Event) bool { return e.Reason == "too_many_failures" }) {
		t.Error("no auth.failed event records the 429s")
	}
}
