package broker_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/broker"
	"github.com/tetherhq/tether/internal/broker/openapigen"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/names"
	"github.com/tetherhq/tether/internal/protocol"
	"github.com/tetherhq/tether/internal/source/registry"
	"github.com/tetherhq/tether/internal/sqlguard"
)

// This file is the hand-written half of the API's OpenAPI document: what
// each operation is for, its parameters and the bounds the handler
// enforces, its request and answer types, and the error statuses it can
// answer. Roles and tenant scoping come from broker.Endpoints; schemas
// from the brokerapi types (openapigen). TestOpenAPIUpToDate writes the
// result to openapi.json.

// apiOp is one operation of the document.
type apiOp struct {
	route   string // the authorization table's pattern
	method  string // for a route that takes every method (a Rest data source)
	path    string // the document's path, when it is not the route's
	id      string // operationId
	tag     string
	summary string
	desc    string
	params  []apiParam // query and header parameters; path parameters are added
	body    any        // a request body: its Go type is the schema, the value the example
	form    bool       // the body may also be form-encoded (Prometheus POST)
	status  int        // the success status
	out     any        // the answer's Go type (a zero value); nil with media
	media   map[string]openapigen.Schema
	errs    []int // error statuses beyond those every operation of its kind has
}

type apiParam struct {
	name, in, desc string
	required       bool
	schema         openapigen.Schema
}

func query(name, desc string, schema openapigen.Schema) apiParam {
	return apiParam{name: name, in: "query", desc: desc, schema: schema}
}

var (
	labelPattern   = `^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`
	depRefPattern  = `^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?/[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`
	labelSchema    = openapigen.Schema{"type": "string", "pattern": labelPattern, "maxLength": 63}
	uuidSchema     = openapigen.Schema{"type": "string", "format": "uuid"}
	timeParam      = openapigen.Schema{"type": "string", "format": "date-time"}
	requestStates  = []any{brokerapi.StatePending, brokerapi.StateApproved, brokerapi.StateActive, brokerapi.StateExpired, brokerapi.StateRevoked, brokerapi.StateDenied, brokerapi.StateCancelled, brokerapi.StateTimedOut}
	exampleTime    = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	anyJSON        = openapigen.Schema{}
	ndjsonMedia    = map[string]openapigen.Schema{"application/x-ndjson": {"type": "string", "description": "one JSON object a line"}}
	promParamsNote = "Parameters as Prometheus's HTTP API documents them; the agent's guard parses each and sends Prometheus a call rebuilt from them, refusing any other parameter."
)

func anyOf(items ...any) []any { return items }

// scopeValues are the scopes a request may ask for.
func scopeValues() []any {
	var out []any
	for _, s := range append(registry.Scopes(), names.ScopePeering) {
		out = append(out, s)
	}
	return out
}

func eventTypeValues() []any {
	var out []any
	for _, t := range audit.Types {
		out = append(out, string(t))
	}
	return out
}

// overlay is what reflection cannot know about the brokerapi types.
func overlay() map[string]openapigen.Schema {
	label := func(desc string) openapigen.Schema {
		return openapigen.Schema{"pattern": labelPattern, "maxLength": 63, "description": desc}
	}
	return map[string]openapigen.Schema{
		"ErrorBody.code":                   {"pattern": "^[a-z][a-z0-9_]*$", "description": "Stable, for programs: what went wrong (docs/api.md lists the common ones). New codes may be added."},
		"ErrorBody.message":                {"description": "For people: what went wrong and what to do about it."},
		"CreateDeploymentRequest.tenant":   label("The customer's tenant: a DNS label."),
		"CreateDeploymentRequest.name":     label("The deployment's name within its tenant: a DNS label."),
		"CreateDeploymentRequest.region":   {"pattern": `^[a-z]{2,}(-[a-z0-9]+)*-[0-9]+$`, "maxLength": 32, "description": "A cloud region, such as us-east-1."},
		"Deployment.id":                    {"format": "uuid"},
		"Deployment.agent_status":          {"enum": anyOf(brokerapi.StatusUnpaired, brokerapi.StatusOnline, brokerapi.StatusOffline), "description": "unpaired: no agent paired yet; online: a heartbeat within three intervals; offline: three or more missed."},
		"PairingToken.token":               {"pattern": "^" + protocol.PairingTokenPrefix, "description": "The one-time pairing token, shown only in this answer; 'agent run --pairing-token' takes it."},
		"AgentClock.status":                {"enum": anyOf(brokerapi.ClockOK, brokerapi.ClockWarn, brokerapi.ClockRefused)},
		"AgentApproval.break_glass":        {"enum": anyOf("deny", "allow")},
		"PingResponse.rtts":                {"items": openapigen.Schema{"description": "A Go duration, such as 1.2ms."}},
		"CreateAccessRequest.deployment":   {"pattern": depRefPattern, "description": "TENANT/NAME."},
		"CreateAccessRequest.scopes":       {"minItems": 1, "items": openapigen.Schema{"enum": scopeValues()}},
		"CreateAccessRequest.duration":     {"description": "A Go duration from 1m to 12h, such as 30m; the policy may allow less."},
		"CreateAccessRequest.reason":       {"minLength": 1, "maxLength": 1000},
		"CreateAccessRequest.ticket":       {"pattern": `^[^/#\s]+/[^/#\s]+#[0-9]+$`, "description": "A GitHub issue, owner/repo#N; the policy may require one."},
		"AccessRequest.id":                 {"format": "uuid"},
		"AccessRequest.state":              {"enum": requestStates},
		"PeeringSpec.kind":                 {"enum": anyOf("peering", "ingress")},
		"RequiredReview.role":              {"enum": anyOf("approver", "internal"), "description": "approver: an approver of the tenant; internal: a vendor reviewer or admin."},
		"ReviewBody.comment":               {"maxLength": 2000, "description": "Why; a denial needs one."},
		"RevokeBody.reason":                {"minLength": 1, "maxLength": 2000},
		"RevokeAgentRequest.reason":        {"minLength": 1, "maxLength": 2000},
		"DeploymentSettings.approval_mode": {"enum": anyOf("customer"), "deprecated": true, "description": "Removed: left out or customer changes nothing, anything else is refused (400 invalid_approval_mode)."},
		"DeploymentSettings.labels":        {"maxProperties": 64},
		"PermitStatementBody.windows":      {"maxItems": 2, "description": "One or two windows, each at most 30 days, ending within 30 days."},
		"PermitStatementBody.max_grant":    {"description": "A Go duration: the longest grant the permit covers, such as 1h."},
		"NetworkRegistration.state":        {"enum": anyOf(brokerapi.RegistrationPending, brokerapi.RegistrationActive)},
		"Event.type":                       {"enum": eventTypeValues()},
		"Event.outcome":                    {"enum": anyOf(string(audit.Success), string(audit.Failure))},
		"Event.details":                    {"description": "Sensitive: may quote what a caller sent."},
		"ClickHouseQuery.sql":              {"minLength": 1, "description": "One SELECT (or SHOW, DESCRIBE, EXISTS) over permitted system tables; the agent's guard checks every table, column, function, setting and clause."},
		"ClickHouseQuery.format":           {"description": "The output format when the SQL names none (default TabSeparatedWithNames), compared case-insensitively; one of " + strings.Join(sqlguard.Formats(), ", ") + "."},
	}
}

// apiOps lists every operation of the document. Each route of
// broker.Endpoints is here exactly once, but for a source that takes the
// rest of the path, which has one operation per path its guard serves.
func apiOps() []apiOp {
	var (
		now    = exampleTime
		window = []brokerapi.Window{{Start: now, End: now.Add(4 * time.Hour), Reason: "quarter-end close"}}
	)
	ops := []apiOp{
		{route: "GET /api/v1/auth/config", id: "getAuthConfig", tag: "identity", summary: "How to sign in",
			desc:   "The identity provider to sign in with, named by issuer, or the vendor's; on a dev broker, its dev users. It names no other issuer. Needs no credentials.",
			params: []apiParam{query("issuer", "The sign-in name of a tenant's identity provider.", openapigen.Schema{"type": "string", "maxLength": 64})},
			status: 200, out: brokerapi.AuthConfig{}},
		{route: "GET /api/v1/openapi.json", id: "getOpenAPI", tag: "identity", summary: "This document",
			desc:   "The API's OpenAPI 3.1 document, with info.version the broker's build. Needs no credentials: it holds no secret, tenant or deployment, only routes, roles and types.",
			status: 200, media: map[string]openapigen.Schema{"application/json": {"type": "object", "required": []any{"openapi", "info", "paths"}}}},
		{route: "GET /api/v1/whoami", id: "whoami", tag: "identity", summary: "Who the broker takes you for",
			status: 200, out: brokerapi.Whoami{}},
		{route: "GET /api/v1/broker", id: "getBroker", tag: "identity", summary: "The broker's version, tailnet name, key and control URL",
			status: 200, out: brokerapi.BrokerInfo{}},
		{route: "GET /api/v1/tickets/{owner}/{repo}/{number}", id: "getTicket", tag: "requests", summary: "A GitHub ticket as a request would see it",
			status: 200, out: brokerapi.Ticket{}, errs: []int{409, 422, 501, 502}},

		{route: "POST /api/v1/deployments", id: "createDeployment", tag: "deployments", summary: "Create a deployment",
			desc: "The answer holds the deployment's first pairing token, shown only here.",
			body: brokerapi.CreateDeploymentRequest{Tenant: "acme", Name: "staging", Region: "eu-central-1"}, status: 201, out: brokerapi.CreateDeploymentResponse{}, errs: []int{409}},
		{route: "GET /api/v1/deployments", id: "listDeployments", tag: "deployments", summary: "Deployments and their agents",
			desc: "Filtered to the tenants the caller may act on.", status: 200, out: brokerapi.ListDeploymentsResponse{}},
		{route: "GET /api/v1/deployments/{id}", id: "getDeploymentByID", tag: "deployments", summary: "One deployment, by ID", status: 200, out: brokerapi.Deployment{}},
		{route: "GET /api/v1/deployments/{tenant}/{name}", id: "getDeployment", tag: "deployments", summary: "One deployment", status: 200, out: brokerapi.Deployment{}},
		{route: "POST /api/v1/deployments/{id}/pairing-tokens", id: "newPairingTokenByID", tag: "deployments", summary: "A new pairing token, by deployment ID",
			desc: "No body. To pair a replacement agent.", status: 201, out: brokerapi.PairingToken{}},
		{route: "POST /api/v1/deployments/{tenant}/{name}/pairing-tokens", id: "newPairingToken", tag: "deployments", summary: "A new pairing token",
			desc: "No body. To pair a replacement agent.", status: 201, out: brokerapi.PairingToken{}},
		{route: "POST /api/v1/deployments/{id}/ping", id: "pingByID", tag: "deployments", summary: "Signed calls to the agent, by deployment ID",
			desc: "No body. Each call goes broker → tailnet → agent, which verifies the broker's signature.", params: pingParams(), status: 200, out: brokerapi.PingResponse{}, errs: []int{409, 502}},
		{route: "POST /api/v1/deployments/{tenant}/{name}/ping", id: "ping", tag: "deployments", summary: "Signed calls to the agent",
			desc: "No body. Each call goes broker → tailnet → agent, which verifies the broker's signature.", params: pingParams(), status: 200, out: brokerapi.PingResponse{}, errs: []int{409, 502}},
		{route: "PUT /api/v1/deployments/{tenant}/{name}/settings", id: "setSettings", tag: "deployments", summary: "The vendor's settings: labels, network",
			desc: "Freeze and maintenance windows are the customer's: left out they are kept, and refused (403 customer_owned) if they differ from the stored ones.",
			body: brokerapi.DeploymentSettings{Labels: map[string]string{"team": "databases"}}, status: 200, out: brokerapi.Deployment{}},
		{route: "GET /api/v1/deployments/{tenant}/{name}/customer-settings", id: "getCustomerSettings", tag: "deployments", summary: "The customer's settings and their version",
			status: 200, out: brokerapi.CustomerSettings{}},
		{route: "PUT /api/v1/deployments/{tenant}/{name}/customer-settings", id: "setCustomerSettings", tag: "deployments", summary: "Replace the customer's settings",
			desc: "The body carries the version read; 409 settings_changed if they changed since. Audited deployment.settings_changed.",
			body: brokerapi.CustomerSettings{FreezeWindows: window, MaintenanceWindows: []brokerapi.Window{}, Version: "1"}, status: 200, out: brokerapi.CustomerSettings{}, errs: []int{409}},
		{route: "POST /api/v1/deployments/{tenant}/{name}/revoke-agent", id: "revokeAgent", tag: "deployments", summary: "Cut the agent off at once",
			desc: "Ends its sessions and in-flight calls; the deployment needs a new pairing.",
			body: brokerapi.RevokeAgentRequest{Reason: "host compromised"}, status: 200, out: brokerapi.RevokeAgentResponse{}, errs: []int{409}},

		{route: "GET /api/v1/deployments/{tenant}/{name}/permits", id: "listPermits", tag: "permits", summary: "The customer's standing permits",
			status: 200, out: []brokerapi.Permit{}},
		{route: "POST /api/v1/deployments/{tenant}/{name}/permits/statement", id: "permitStatement", tag: "permits", summary: "The permit to sign",
			desc:   "A new permit from its terms, or an existing one (id) to co-sign: its canonical text and digest, the nonce of the signing ceremony at the approver's identity provider.",
			body:   brokerapi.PermitStatementBody{Scopes: []string{names.ScopePrometheus}, Windows: []brokerapi.PermitWindow{{Start: now, End: now.Add(7 * 24 * time.Hour)}}, MaxGrant: "1h"},
			status: 200, out: brokerapi.PermitStatement{}},
		{route: "POST /api/v1/deployments/{tenant}/{name}/permits", id: "signPermit", tag: "permits", summary: "Store a signed permit, or add a signature",
			desc: "proof is an ID token from the approver's identity provider whose nonce is the permit's digest. Audited permit.signed.",
			body: brokerapi.SignPermitBody{Permit: "<permit from permitStatement>", Proof: "<ID token>"}, status: 200, out: brokerapi.Permit{}, errs: []int{409}},
		{route: "DELETE /api/v1/deployments/{tenant}/{name}/permits/{permit}", id: "revokePermit", tag: "permits", summary: "Revoke a permit",
			desc: "No new grant under it. Audited permit.revoked.", status: 200, out: brokerapi.Permit{}},

		{route: "POST /api/v1/requests", id: "createRequest", tag: "requests", summary: "Ask for access, or for a network change",
			desc:   "The policy decides at once: denied requests are answered 403 policy_denied with its reasons.",
			body:   brokerapi.CreateAccessRequest{Deployment: "acme/prod", Scopes: []string{names.ScopeClickHouse, names.ScopePrometheus}, Duration: "30m", Reason: "merges are slow since 09:00"},
			status: 201, out: brokerapi.AccessRequest{}, errs: []int{404, 409, 502}},
		{route: "GET /api/v1/requests", id: "listRequests", tag: "requests", summary: "Requests",
			desc: "Filtered to the tenants the caller may act on; at most 500, newest first.",
			params: []apiParam{
				query("state", "Only requests in this state.", openapigen.Schema{"type": "string", "enum": requestStates}),
				query("mine", "Only the caller's own.", openapigen.Schema{"type": "boolean"}),
				query("deployment", "Only this deployment's, TENANT/NAME.", openapigen.Schema{"type": "string", "pattern": depRefPattern}),
			}, status: 200, out: brokerapi.ListAccessRequests{}, errs: []int{404}},
		{route: "GET /api/v1/requests/{id}", id: "getRequest", tag: "requests", summary: "One request",
			desc: "With wait and version, a long poll: answered once the request's version differs from version, or when wait (at most 60s; longer is shortened) has passed.",
			params: []apiParam{
				query("version", "The version last seen; needed with wait.", openapigen.Schema{"type": "integer", "format": "int64"}),
				query("wait", "How long to wait for a change, a Go duration such as 30s.", openapigen.Schema{"type": "string"}),
			}, status: 200, out: brokerapi.AccessRequest{}},
		{route: "POST /api/v1/requests/{id}/approve", id: "approveRequest", tag: "requests", summary: "Approve",
			desc: "A customer approver sends the signed statement (approvalStatement) and its proof, an ID token from their identity provider whose nonce is the statement's digest (403 approval_proof_required without); a network change names its plan_digest.",
			body: brokerapi.ReviewBody{Comment: "ok for the incident", Statement: "<statement from approvalStatement>", Proof: "<ID token>"}, status: 200, out: brokerapi.AccessRequest{}, errs: []int{409}},
		{route: "POST /api/v1/requests/{id}/approval-statement", id: "approvalStatement", tag: "requests", summary: "The statement a customer approver signs",
			desc: "duration and scopes narrow it. Its canonical text, its digest (the nonce of the signing ceremony), the approver's issuer and client_id.",
			body: brokerapi.ApprovalStatementBody{Duration: "30m"}, status: 200, out: brokerapi.ApprovalStatement{}, errs: []int{409}},
		{route: "POST /api/v1/requests/{id}/deny", id: "denyRequest", tag: "requests", summary: "Deny, with a comment",
			body: brokerapi.ReviewBody{Comment: "use the staging deployment"}, status: 200, out: brokerapi.AccessRequest{}, errs: []int{409}},
		{route: "POST /api/v1/requests/{id}/cancel", id: "cancelRequest", tag: "requests", summary: "Withdraw a pending request",
			desc: "No body.", status: 200, out: brokerapi.AccessRequest{}, errs: []int{409}},
		{route: "POST /api/v1/requests/{id}/revoke", id: "revokeRequest", tag: "requests", summary: "End access now",
			desc: "The agent stops the grant's calls in flight.", body: brokerapi.RevokeBody{Reason: "incident closed"}, status: 200, out: brokerapi.AccessRequest{}, errs: []int{409}},

		{route: "POST /api/v1/deployments/{tenant}/{name}/network/plan", id: "planNetwork", tag: "network", summary: "What a network change would do",
			desc: "Nothing changes.", body: brokerapi.PeeringSpec{Kind: "peering", AccountID: "123456789012", Region: "eu-central-1", VPCID: "vpc-0a1b2c3d", RoleARN: "arn:aws:iam::123456789012:role/tether-peering"},
			status: 200, out: brokerapi.NetworkPlan{}, errs: []int{409, 501, 502}},
		{route: "POST /api/v1/requests/{id}/network/apply", id: "applyNetwork", tag: "network", summary: "Carry out an approved network change",
			desc: "No body.", status: 200, out: brokerapi.NetworkPlan{}, errs: []int{409, 501, 502}},
		{route: "POST /api/v1/requests/{id}/network/teardown", id: "teardownNetwork", tag: "network", summary: "Remove what a network change created",
			desc: "No body.", status: 200, out: brokerapi.NetworkPlan{}, errs: []int{409, 501, 502}},
		{route: "GET /api/v1/requests/{id}/network/status", id: "networkStatus", tag: "network", summary: "ok / missing / drifted, per piece",
			status: 200, out: brokerapi.NetworkStatus{}, errs: []int{409, 501, 502}},
		{route: "GET /api/v1/network/registrations", id: "listRegistrations", tag: "network", summary: "Registered AWS accounts",
			params: []apiParam{query("tenant", "Only this tenant's.", labelSchema)}, status: 200, out: brokerapi.ListNetworkRegistrationsResponse{}},
		{route: "POST /api/v1/tenants/{tenant}/network/registrations", id: "registerNetwork", tag: "network", summary: "Register an account, its role and VPCs",
			desc:   "An admin's registration waits for an approver of the tenant to confirm it. The answer carries the role's external ID, once.",
			body:   brokerapi.RegisterNetwork{AccountID: "123456789012", RoleARN: "arn:aws:iam::123456789012:role/tether-peering", VPCIDs: []string{"vpc-0a1b2c3d"}},
			status: 201, out: brokerapi.RegistrationResult{}, errs: []int{409, 501, 502}},
		{route: "POST /api/v1/tenants/{tenant}/network/registrations/{id}/confirm", id: "confirmRegistration", tag: "network", summary: "Confirm an admin's registration",
			desc: "No body. The answer carries the new external ID, once.", status: 200, out: brokerapi.RegistrationResult{}, errs: []int{409, 501}},
		{route: "DELETE /api/v1/tenants/{tenant}/network/registrations/{id}", id: "unregisterNetwork", tag: "network", summary: "Remove a registration",
			status: 200, out: brokerapi.NetworkRegistration{}, errs: []int{409, 501}},

		{route: "GET /api/v1/audit/events", id: "searchAudit", tag: "audit", summary: "Search the audit log", params: auditSearchParams(),
			status: 200, out: brokerapi.AuditEvents{}},
		{route: "GET /api/v1/audit/checkpoint", id: "auditCheckpoint", tag: "audit", summary: "The latest signed checkpoint and its witnesses",
			status: 200, out: brokerapi.AuditCheckpoint{}},
		{route: "GET /api/v1/audit/proof/inclusion", id: "inclusionProof", tag: "audit", summary: "RFC 6962 inclusion proof",
			params: []apiParam{
				{name: "index", in: "query", required: true, desc: "The event's index in the log.", schema: openapigen.Schema{"type": "integer", "minimum": 0}},
				query("size", "The tree size, at most the latest checkpoint's; 0 or left out: the latest.", openapigen.Schema{"type": "integer", "minimum": 0}),
			}, status: 200, out: brokerapi.InclusionProof{}},
		{route: "GET /api/v1/audit/proof/consistency", id: "consistencyProof", tag: "audit", summary: "RFC 6962 consistency proof",
			params: []apiParam{
				{name: "from", in: "query", required: true, desc: "The older tree size.", schema: openapigen.Schema{"type": "integer", "minimum": 1}},
				query("to", "The newer tree size, at most the latest checkpoint's; 0 or left out: the latest.", openapigen.Schema{"type": "integer", "minimum": 0}),
			}, status: 200, out: brokerapi.ConsistencyProof{}},
		{route: "GET /api/v1/audit/export", id: "exportAudit", tag: "audit", summary: "The export, JSON lines",
			desc:   "Streamed, one JSON object a line, ending with a signed line; an export cut short lacks it, which 'broker audit verify' reports as truncated (no HTTP trailer).",
			params: sinceUntil(), status: 200, media: ndjsonMedia},
		{route: "GET /api/v1/audit/public-key", id: "auditPublicKey", tag: "audit", summary: "The log's verifier key", status: 200, out: brokerapi.AuditPublicKey{}},
		{route: "GET /api/v1/tenants/{tenant}/audit/events", id: "searchTenantAudit", tag: "audit", summary: "The tenant's own events",
			desc:   "Those about its deployments, and those about no deployment whose actor is of the tenant; a deployment, request or grant of another tenant is refused (403 wrong_tenant).",
			params: auditSearchParams(), status: 200, out: brokerapi.AuditEvents{}},
		{route: "GET /api/v1/tenants/{tenant}/audit/export", id: "exportTenantAudit", tag: "audit", summary: "A tenant export, streamed",
			desc:   "The tenant's events, each with an inclusion proof against a checkpoint one of its agents cosigned; JSON lines ending with a signed line (no HTTP trailer). 404 nothing_to_export until an agent of the tenant has cosigned a checkpoint.",
			params: sinceUntil(), status: 200, media: ndjsonMedia},
		{route: "GET /api/v1/tenants/{tenant}/audit/public-key", id: "tenantAuditPublicKey", tag: "audit", summary: "The log's verifier key, for a tenant export",
			status: 200, out: brokerapi.AuditPublicKey{}},

		{route: "POST /api/v1/deployments/{tenant}/{name}/clickhouse/query", id: "clickhouseQuery", tag: "data plane", summary: "Run SQL on the deployment's ClickHouse system tables",
			desc:   dataDesc("The answer streams in the format asked for (Content-Type as ClickHouse sets it) and carries the Tether-Query-Id header."),
			params: grantHeader(), body: protocol.ClickHouseQuery{SQL: "SELECT metric, value FROM system.metrics LIMIT 3", Format: "JSONEachRow"},
			status: 200, media: map[string]openapigen.Schema{
				"text/tab-separated-values": {"type": "string"}, "application/json": anyJSON, "text/csv": {"type": "string"},
				"text/plain": {"type": "string"}, "application/octet-stream": {"type": "string", "contentMediaType": "application/octet-stream"},
			}, errs: []int{404, 409, 502, 504}},
	}
	return append(ops, prometheusOps()...)
}

func pingParams() []apiParam {
	return []apiParam{query("count", "How many calls.", openapigen.Schema{"type": "integer", "minimum": 1, "maximum": 100, "default": 1})}
}

func sinceUntil() []apiParam {
	return []apiParam{
		query("since", "Events recorded at or after, RFC 3339.", timeParam),
		query("until", "Events recorded before, RFC 3339.", timeParam),
	}
}

func auditSearchParams() []apiParam {
	return append([]apiParam{
		query("actor", "The actor's subject or email.", openapigen.Schema{"type": "string"}),
		query("deployment", "TENANT/NAME or a deployment ID.", openapigen.Schema{"type": "string"}),
		query("type", "One event type.", openapigen.Schema{"type": "string", "enum": eventTypeValues()}),
		query("grant", "A grant ID.", openapigen.Schema{"type": "string"}),
		query("request", "An access request ID.", openapigen.Schema{"type": "string"}),
		query("limit", "At most this many events.", openapigen.Schema{"type": "integer", "minimum": 1, "maximum": 100000, "default": 1000}),
	}, sinceUntil()...)
}

func grantHeader() []apiParam {
	return []apiParam{{name: protocol.HeaderGrant, in: "header", desc: "A grant token of the caller's; left out, the broker attaches the caller's live grant for the deployment.", schema: openapigen.Schema{"type": "string"}}}
}

func dataDesc(s string) string {
	return "Under the caller's live grant for the deployment, which the agent verifies again before its guard runs the call. " + s +
		" A successful (2xx) answer ends with the HTTP trailer " + protocol.TrailerResult + ": \"complete\", or \"incomplete; reason=…\" when the answer stopped early (revocation, expiry, the agent's bounds); an answer without it must be taken as incomplete. " +
		"Refusals by the broker or the agent's guard use the error envelope."
}

// promEndpoint is one Prometheus API path the agent's guard serves
// (internal/promguard's table), with the parameters it takes.
type promEndpoint struct {
	path, summary string
	post          bool
	params        []apiParam
}

func prometheusOps() []apiOp {
	var (
		text    = openapigen.Schema{"type": "string"}
		tm      = openapigen.Schema{"type": "string", "description": "RFC 3339 or Unix seconds."}
		count   = openapigen.Schema{"type": "integer", "minimum": 0}
		multi   = openapigen.Schema{"type": "array", "items": text}
		expr    = apiParam{name: "query", in: "query", required: true, desc: "A PromQL expression.", schema: text}
		labels  = []apiParam{{name: "match[]", in: "query", desc: "Series selectors.", schema: multi}, query("start", "", tm), query("end", "", tm), query("limit", "", count)}
		stats   = query("stats", "", openapigen.Schema{"type": "string", "enum": anyOf("all", "true", "1")})
		timeout = query("timeout", "A duration or seconds; the agent bounds it.", text)
	)
	eps := []promEndpoint{
		{"api/v1/query", "Instant query", true, []apiParam{expr, query("time", "", tm), timeout, query("limit", "", count), stats}},
		{"api/v1/query_range", "Range query", true, []apiParam{expr,
			{name: "start", in: "query", required: true, schema: tm}, {name: "end", in: "query", required: true, schema: tm},
			{name: "step", in: "query", required: true, desc: "A duration or seconds, > 0.", schema: text}, timeout, query("limit", "", count), stats}},
		{"api/v1/query_exemplars", "Exemplars", true, []apiParam{expr, query("start", "", tm), query("end", "", tm)}},
		{"api/v1/series", "Series", true, append([]apiParam{{name: "match[]", in: "query", required: true, desc: "Series selectors.", schema: multi}}, labels[1:]...)},
		{"api/v1/labels", "Label names", true, labels},
		{"api/v1/label/{label}/values", "Label values", false, labels},
		{"api/v1/metadata", "Metric metadata", false, []apiParam{query("limit", "", count), query("limit_per_metric", "", count), query("metric", "", text)}},
		{"api/v1/targets", "Targets, discovered labels and scrape URLs withheld", false, []apiParam{query("state", "", openapigen.Schema{"type": "string", "enum": anyOf("active", "dropped", "any")}), query("scrapePool", "", text)}},
		{"api/v1/targets/metadata", "Target metadata, labels cleaned", false, []apiParam{query("match_target", "", text), query("metric", "", text), query("limit", "", count)}},
		{"api/v1/rules", "Rules, annotation values withheld", false, []apiParam{query("type", "", openapigen.Schema{"type": "string", "enum": anyOf("alert", "record")}),
			{name: "rule_name[]", in: "query", schema: multi}, {name: "rule_group[]", in: "query", schema: multi}, {name: "file[]", in: "query", schema: multi},
			query("exclude_alerts", "", openapigen.Schema{"type": "string", "enum": anyOf("true", "false")}), {name: "match[]", in: "query", schema: multi},
			query("group_limit", "", count), query("group_next_token", "", text)}},
		{"api/v1/alerts", "Alerts, annotation values withheld", false, nil},
		{"api/v1/status/buildinfo", "Build information", false, nil},
		{"api/v1/status/runtimeinfo", "Runtime information", false, nil},
		{"api/v1/status/tsdb", "TSDB statistics", false, []apiParam{query("limit", "", count)}},
	}
	route := registry.All()
	var pattern string
	for _, s := range route {
		if s.Route.Rest {
			pattern = s.BrokerPattern()
		}
	}
	prefix := strings.TrimSuffix(pattern, "{rest...}")
	var ops []apiOp
	for _, ep := range eps {
		id := "prometheus" + idOf(strings.TrimPrefix(ep.path, "api/v1/"))
		methods := []string{http.MethodGet}
		if ep.post {
			methods = append(methods, http.MethodPost)
		}
		for _, m := range methods {
			o := apiOp{route: pattern, method: m, path: prefix + ep.path, id: id, tag: "data plane", summary: "Prometheus: " + ep.summary,
				desc:   dataDesc(promParamsNote + " Every other Prometheus path is refused."),
				params: append(grantHeader(), ep.params...), status: 200, media: map[string]openapigen.Schema{"application/json": {"$ref": "#/components/schemas/PrometheusResponse"}},
				errs: []int{404, 409, 422, 502, 503, 504}}
			if m == http.MethodPost {
				o.id += "Post"
				o.form = true
				o.params = grantHeader()
				o.body = ep.params
			}
			ops = append(ops, o)
		}
	}
	return ops
}

// idOf makes "query_range" or "label/{label}/values" an identifier part.
func idOf(p string) string {
	var b strings.Builder
	up, param := true, false
	for _, r := range p {
		switch {
		case r == '{' || r == '}':
			param = r == '{'
		case param:
		case r == '_' || r == '/':
			up = true
		case up:
			b.WriteString(strings.ToUpper(string(r)))
			up = false
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

var statusText = map[int]string{
	400: "The request is malformed: a parameter or body field is invalid (the message names it), or the body is not the JSON expected (bad_json, unknown fields refused).",
	401: "No, malformed, expired or untrusted token (unauthenticated, invalid_token, unknown_issuer). Recorded as auth.failed.",
	403: "The caller's role or tenant does not fit (forbidden, wrong_tenant, no_role), or the handler refuses (the code says why). Recorded.",
	404: "What the path or a parameter names does not exist.",
	405: "The method is not one this path takes.",
	409: "The state does not allow it (the code says which state).",
	413: "The body is larger than the bound (body_too_large).",
	415: "The body is not application/json (bad_content_type).",
	422: "The upstream could not process the call.",
	429: "Too many failed authentications from the caller's address (too_many_failures, with Retry-After), or too many calls in flight for one grant (too_many_calls).",
	500: "The broker failed: audit_unavailable (the audit log could not be written, so the action was not taken), audit_tampered, internal.",
	501: "The broker is not configured for it (github_not_configured, network_not_configured).",
	502: "An upstream the broker called failed: the agent, GitHub or AWS.",
	503: "The caller's identity provider could not be reached (idp_unavailable), or the agent is not on the tailnet (agent_offline).",
	504: "The upstream took too long.",
	507: "The broker's disk is full, so the action was not taken (store_full); revocations and expiry still take effect.",
}

// buildOpenAPI builds the document from the authorization table and the
// operations above.
func buildOpenAPI(docs openapigen.Docs) (map[string]any, error) {
	g := &openapigen.Generator{
		Docs:    docs,
		Names:   map[string]string{"audit.Event": "Event", "audit.Actor": "EventActor", "audit.Source": "EventSource", "protocol.ClickHouseQuery": "ClickHouseQuery"},
		Overlay: overlay(),
	}
	errRef := g.Ref(reflect.TypeFor[brokerapi.ErrorEnvelope]())
	g.Ref(reflect.TypeFor[audit.Event]())

	endpoints := map[string]broker.Endpoint{}
	for _, e := range broker.Endpoints() {
		endpoints[e.Pattern] = e
	}
	covered := map[string]bool{}
	paths := map[string]any{}
	ids := map[string]bool{}
	errResponses := map[string]any{}
	for _, o := range apiOps() {
		e, ok := endpoints[o.route]
		if !ok {
			return nil, fmt.Errorf("operation %s: route %q is not in broker.Endpoints", o.id, o.route)
		}
		covered[o.route] = true
		if ids[o.id] {
			return nil, fmt.Errorf("operationId %s is used twice", o.id)
		}
		ids[o.id] = true
		method, path := o.method, o.path
		if m, p, ok := strings.Cut(o.route, " "); ok {
			method = m
			if path == "" {
				path = p
			}
		}
		op := map[string]any{
			"operationId":    o.id,
			"summary":        o.summary,
			"tags":           []any{o.tag},
			"x-tether-route": o.route,
			"x-tether-scope": e.Scope.String(),
			"x-tether-roles": rolesOf(e),
		}
		if o.desc != "" {
			op["description"] = o.desc
		}
		if e.Scope == broker.ScopeTenant || e.Scope == broker.ScopeRequest {
			op["x-tether-tenant-scoped"] = true
		}
		if e.Scope == broker.ScopePublic {
			op["security"] = []any{}
		}
		var params []any
		for _, name := range pathParams(path) {
			params = append(params, map[string]any{"name": name, "in": "path", "required": true, "description": pathParamDesc(path, name), "schema": pathParamSchema(path, name)})
		}
		for _, p := range o.params {
			pm := map[string]any{"name": p.name, "in": p.in, "schema": p.schema}
			if p.desc != "" {
				pm["description"] = p.desc
			}
			if p.required {
				pm["required"] = true
			}
			if t, _ := p.schema["type"].(string); t == "array" {
				pm["style"], pm["explode"] = "form", true
			}
			params = append(params, pm)
		}
		if len(params) > 0 {
			op["parameters"] = params
		}
		if o.body != nil {
			if o.form {
				props := map[string]any{}
				var req []any
				for _, p := range o.body.([]apiParam) {
					props[p.name] = p.schema
					if p.required {
						req = append(req, p.name)
					}
				}
				fs := map[string]any{"type": "object", "properties": props}
				if len(req) > 0 {
					fs["required"] = req
				}
				op["requestBody"] = map[string]any{"required": true, "content": map[string]any{"application/x-www-form-urlencoded": map[string]any{"schema": fs}}}
			} else {
				ex, err := toJSONValue(o.body)
				if err != nil {
					return nil, err
				}
				op["requestBody"] = map[string]any{"required": true, "content": map[string]any{"application/json": map[string]any{
					"schema":   g.Ref(reflect.TypeOf(o.body)),
					"examples": map[string]any{"default": map[string]any{"value": ex}},
				}}}
			}
		}
		responses := map[string]any{}
		ok2 := map[string]any{"description": "Success."}
		switch {
		case o.media != nil:
			content := map[string]any{}
			for mt, s := range o.media {
				content[mt] = map[string]any{"schema": s}
			}
			ok2["content"] = content
		case o.out != nil:
			ok2["content"] = map[string]any{"application/json": map[string]any{"schema": g.Ref(reflect.TypeOf(o.out))}}
		}
		if o.tag == "data plane" {
			ok2["headers"] = map[string]any{"Trailer": map[string]any{"description": "Announces the " + protocol.TrailerStopped + " and " + protocol.TrailerResult + " trailers.", "schema": map[string]any{"type": "string"}}}
		}
		responses[fmt.Sprint(o.status)] = ok2
		for _, st := range errorStatuses(o, e, method, path) {
			name := fmt.Sprintf("Error%d", st)
			schema := map[string]any(errRef)
			if strings.HasPrefix(o.id, "prometheus") && st != 401 && st != 403 && st != 429 {
				// Prometheus's own errors pass through in its format.
				name = fmt.Sprintf("PrometheusError%d", st)
				schema = map[string]any{"anyOf": []any{errRef, map[string]any{"$ref": "#/components/schemas/PrometheusResponse"}}}
			}
			if _, ok := errResponses[name]; !ok {
				r := map[string]any{"description": statusText[st], "content": map[string]any{"application/json": map[string]any{"schema": schema}}}
				if st == 429 {
					r["headers"] = map[string]any{"Retry-After": map[string]any{"description": "Seconds to wait, when too many authentications failed.", "schema": map[string]any{"type": "integer"}}}
				}
				errResponses[name] = r
			}
			responses[fmt.Sprint(st)] = map[string]any{"$ref": "#/components/responses/" + name}
		}
		op["responses"] = responses
		item, _ := paths[path].(map[string]any)
		if item == nil {
			item = map[string]any{}
			paths[path] = item
		}
		item[strings.ToLower(method)] = op
	}
	for _, e := range broker.Endpoints() {
		if !covered[e.Pattern] {
			return nil, fmt.Errorf("route %q of broker.Endpoints has no operation in apiOps: describe it", e.Pattern)
		}
	}
	if un := g.Unused(); len(un) > 0 {
		slices.Sort(un)
		return nil, fmt.Errorf("overlay keys %q match no property: fix or remove them", un)
	}
	schemas := map[string]any{}
	for k, v := range g.Schemas() {
		schemas[k] = v
	}
	schemas["PrometheusResponse"] = map[string]any{
		"type":        "object",
		"description": "Prometheus's HTTP API envelope, passed through (or rewritten where it echoes configuration: targets, rules, alerts).",
		"required":    []any{"status"},
		"properties": map[string]any{
			"status": map[string]any{"enum": []any{"success", "error"}}, "data": map[string]any{},
			"errorType": map[string]any{"type": "string"}, "error": map[string]any{"type": "string"},
			"warnings": map[string]any{"type": "array", "items": map[string]any{"type": "string"}},
			"infos":    map[string]any{"type": "array", "items": map[string]any{"type": "string"}},
		},
	}
	tags := []any{}
	for _, t := range []struct{ name, desc string }{
		{"identity", "Who is calling, how to sign in, what this broker is."},
		{"deployments", "Customer deployments, their agents and settings."},
		{"permits", "The customer's standing permits."},
		{"requests", "Access requests: ask, review, revoke."},
		{"network", "VPC peering and private ingress."},
		{"audit", "The tamper-evident audit log."},
		{"data plane", "ClickHouse and Prometheus through the tailnet and the agent's guard."},
	} {
		tags = append(tags, map[string]any{"name": t.name, "description": t.desc})
	}
	return map[string]any{
		"openapi":           "3.1.0",
		"jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
		"info": map[string]any{
			"title":   "Tether broker API",
			"version": "dev",
			"description": "The broker's HTTP API: what the CLI calls. Roles and tenant scoping of each operation are in x-tether-roles, x-tether-scope and x-tether-tenant-scoped, " +
				"taken from the broker's authorization table (internal/broker/authz.go). Request bodies are JSON, bounded, and refused with unknown fields. " +
				"Every error is the envelope {\"error\": {\"code\", \"message\"}}, and every refusal is recorded in the audit log. " +
				"The web console (/ui/, a cookie session with CSRF tokens) and the agent API (tailnet only) are not part of this API. " +
				"info.version is the serving broker's build.",
			"license": map[string]any{"name": "See the repository's LICENSE"},
		},
		"servers":  []any{map[string]any{"url": "/", "description": "The broker's API address (the CLI config's api_url)."}},
		"security": []any{map[string]any{"bearer": []any{}}},
		"tags":     tags,
		"paths":    paths,
		"components": map[string]any{
			"securitySchemes": map[string]any{"bearer": map[string]any{
				"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
				"description": "An OpenID Connect ID token from an identity provider the broker trusts ('broker login' keeps one in the CLI config), checked for signature, issuer, audience and expiry; a dev broker also takes its bootstrap token (tat_…).",
			}},
			"schemas":   schemas,
			"responses": errResponses,
		},
	}, nil
}

func rolesOf(e broker.Endpoint) []any {
	out := []any{}
	for _, r := range e.Roles {
		out = append(out, r)
	}
	return out
}

func pathParams(path string) []string {
	var out []string
	for _, seg := range strings.Split(path, "/") {
		if strings.HasPrefix(seg, "{") && strings.HasSuffix(seg, "}") {
			out = append(out, strings.Trim(seg, "{}"))
		}
	}
	return out
}

func pathParamDesc(path, name string) string {
	switch {
	case name == "tenant":
		return "A tenant: a DNS label."
	case name == "name":
		return "A deployment's name in its tenant: a DNS label."
	case name == "id" && strings.HasPrefix(path, "/api/v1/deployments/"):
		return "A deployment ID, as 'deployment create' prints it."
	case name == "id" && strings.HasPrefix(path, "/api/v1/requests/"):
		return "An access request ID."
	case name == "id":
		return "A network registration ID."
	case name == "permit":
		return "A permit ID."
	case name == "number":
		return "The issue number."
	case name == "label":
		return "A label name."
	}
	return "The GitHub " + name + "."
}

func pathParamSchema(path, name string) map[string]any {
	switch {
	case name == "tenant" || name == "name":
		return labelSchema
	case name == "id" && (strings.HasPrefix(path, "/api/v1/deployments/") || strings.HasPrefix(path, "/api/v1/requests/")):
		return uuidSchema
	case name == "number":
		return map[string]any{"type": "integer", "minimum": 1}
	}
	return map[string]any{"type": "string"}
}

// errorStatuses are the error answers an operation documents: those of
// every operation of its kind, and its own.
func errorStatuses(o apiOp, e broker.Endpoint, method, path string) []int {
	st := []int{500}
	if e.Scope != broker.ScopePublic {
		st = append(st, 401, 403, 429, 503)
	} else {
		st = append(st, 400, 404)
	}
	if o.body != nil {
		st = append(st, 400, 413, 415)
	}
	if len(pathParams(path)) > 0 || len(o.params) > 0 {
		st = append(st, 400, 404)
	}
	if method != http.MethodGet && e.Scope != broker.ScopePublic {
		st = append(st, 507)
	}
	st = append(st, o.errs...)
	slices.Sort(st)
	return slices.Compact(st)
}

// toJSONValue turns a Go value into its JSON form as a document value.
func toJSONValue(v any) (any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var out any
	err = json.Unmarshal(b, &out)
	return out, err
}
