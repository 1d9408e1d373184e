package broker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"mime"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/tetherhq/tether/internal/broker"
	"github.com/tetherhq/tether/internal/broker/openapigen"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/brokertest"
	"github.com/tetherhq/tether/internal/devbroker"
	"github.com/tetherhq/tether/internal/protocol"
)

var updateOpenAPI = flag.Bool("update", false, "rewrite openapi.json from the authorization table and the brokerapi types")

// generatedOpenAPI is the document as the sources say it should be, in
// the committed file's form.
func generatedOpenAPI(t *testing.T) []byte {
	t.Helper()
	docs := openapigen.Docs{}
	for _, dir := range []string{"../brokerapi", "../../audit", "../protocol"} {
		d, err := openapigen.ParseDocs(dir)
		if err != nil {
			t.Fatal(err)
		}
		maps.Copy(docs, d)
	}
	doc, err := buildOpenAPI(docs)
	if err != nil {
		t.Fatalf("build the OpenAPI document: %v", err)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(doc); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestOpenAPIUpToDate holds the committed openapi.json to what the
// authorization table, the operations of openapi_spec_test.go and the
// brokerapi types say; -update rewrites it.
func TestOpenAPIUpToDate(t *testing.T) {
	want := generatedOpenAPI(t)
	if *updateOpenAPI {
		if err := os.WriteFile("openapi.json", want, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if !bytes.Equal(broker.OpenAPIDocument(), want) {
		got := strings.Split(string(broker.OpenAPIDocument()), "\n")
		w := strings.Split(string(want), "\n")
		line := 0
		for line < len(got) && line < len(w) && got[line] == w[line] {
			line++
		}
		t.Fatalf("internal/broker/openapi.json is out of date (first difference at line %d): run 'go test ./internal/broker -run TestOpenAPIUpToDate -update' and commit it", line+1)
	}
}

// openAPI is the parsed committed document, with a schema compiler over
// it.
type openAPI struct {
	raw  map[string]any
	c    *jsonschema.Compiler
	seen map[string]*jsonschema.Schema
}

const docURL = "https://tether.invalid/openapi.json"

func loadOpenAPI(t *testing.T, raw []byte) *openAPI {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("openapi.json is not JSON: %v", err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	if err := c.AddResource(docURL, doc); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return &openAPI{raw: m, c: c, seen: map[string]*jsonschema.Schema{}}
}

// schema compiles the schema at a JSON pointer of the document, which
// resolves every $ref it holds.
func (d *openAPI) schema(t *testing.T, ptr string) *jsonschema.Schema {
	t.Helper()
	if s, ok := d.seen[ptr]; ok {
		return s
	}
	s, err := d.c.Compile(docURL + "#" + ptr)
	if err != nil {
		t.Fatalf("compile the schema at %s: %v", ptr, err)
	}
	d.seen[ptr] = s
	return s
}

func pointer(parts ...string) string {
	r := strings.NewReplacer("~", "~0", "/", "~1")
	var b strings.Builder
	for _, p := range parts {
		b.WriteString("/" + r.Replace(p))
	}
	return b.String()
}

// docOp is one operation of the document.
type docOp struct {
	method, path string
	op           map[string]any
}

func (d *openAPI) ops() []docOp {
	var out []docOp
	for path, item := range d.raw["paths"].(map[string]any) {
		for method, op := range item.(map[string]any) {
			out = append(out, docOp{strings.ToUpper(method), path, op.(map[string]any)})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].path+out[i].method < out[j].path+out[j].method })
	return out
}

func (o docOp) id() string { return o.op["operationId"].(string) }

// response returns the response an operation documents for code and the
// JSON pointer of its object, following a $ref to components/responses.
func (d *openAPI) response(o docOp, code string) (map[string]any, string) {
	r := asMap(asMap(o.op["responses"])[code])
	if r == nil {
		return nil, ""
	}
	if ref, ok := r["$ref"].(string); ok {
		name := strings.TrimPrefix(ref, "#/components/responses/")
		return asMap(asMap(asMap(d.raw["components"])["responses"])[name]), pointer("components", "responses", name)
	}
	return r, pointer("paths", o.path, strings.ToLower(o.method), "responses", code)
}

// TestOpenAPIDocumentValid checks the committed document is OpenAPI 3.1:
// against the specification's own schema (testdata/openapi-3.1-schema.json,
// src/schemas/validation/schema.yaml of OAI/OpenAPI-Specification's
// v3.1-dev branch at ddb29a7, as JSON), every schema in it a valid
// draft 2020-12 schema whose $refs resolve, and every example valid
// against its schema.
func TestOpenAPIDocumentValid(t *testing.T) {
	meta, err := os.ReadFile(filepath.Join("testdata", "openapi-3.1-schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	mc := jsonschema.NewCompiler()
	mv, err := jsonschema.UnmarshalJSON(bytes.NewReader(meta))
	if err != nil {
		t.Fatal(err)
	}
	if err := mc.AddResource("https://spec.openapis.org/oas/3.1/schema/WORK-IN-PROGRESS", mv); err != nil {
		t.Fatal(err)
	}
	ms, err := mc.Compile("https://spec.openapis.org/oas/3.1/schema/WORK-IN-PROGRESS")
	if err != nil {
		t.Fatalf("compile the OpenAPI 3.1 schema: %v", err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(broker.OpenAPIDocument()))
	if err != nil {
		t.Fatal(err)
	}
	if err := ms.Validate(inst); err != nil {
		t.Fatalf("openapi.json is not a valid OpenAPI 3.1 document: %v", err)
	}

	d := loadOpenAPI(t, broker.OpenAPIDocument())
	if d.raw["openapi"] != "3.1.0" {
		t.Errorf("openapi = %v, want 3.1.0", d.raw["openapi"])
	}
	for name := range d.raw["components"].(map[string]any)["schemas"].(map[string]any) {
		d.schema(t, pointer("components", "schemas", name))
	}
	ids := map[string]bool{}
	for _, o := range d.ops() {
		if ids[o.id()] {
			t.Errorf("operationId %s is used twice", o.id())
		}
		ids[o.id()] = true
		base := []string{"paths", o.path, strings.ToLower(o.method)}
		for code := range o.op["responses"].(map[string]any) {
			r, ptr := d.response(o, code)
			if r == nil {
				t.Errorf("%s: response %s does not resolve", o.id(), code)
			}
			for mt := range asMap(r["content"]) {
				d.schema(t, ptr+pointer("content", mt, "schema"))
			}
		}
		if rb, ok := o.op["requestBody"].(map[string]any); ok {
			for mt, m := range rb["content"].(map[string]any) {
				s := d.schema(t, pointer(append(base, "requestBody", "content", mt, "schema")...))
				for name, ex := range asMap(asMap(m)["examples"]) {
					if err := s.Validate(asMap(ex)["value"]); err != nil && !strings.Contains(fmt.Sprint(asMap(ex)["value"]), "<") {
						t.Errorf("%s: example %s does not validate against its schema: %v", o.id(), name, err)
					}
				}
			}
		}
		for i, p := range asSlice(o.op["parameters"]) {
			d.schema(t, pointer(append(base, "parameters", strconv.Itoa(i), "schema")...))
			if asMap(p)["in"] == "path" && !strings.Contains(o.path, "{"+asMap(p)["name"].(string)+"}") {
				t.Errorf("%s: path parameter %v is not in %s", o.id(), asMap(p)["name"], o.path)
			}
		}
	}
}

func asMap(v any) map[string]any { m, _ := v.(map[string]any); return m }
func asSlice(v any) []any        { s, _ := v.([]any); return s }

// TestOpenAPIServed fetches the document from a broker, without
// credentials, and holds it to the authorization table: every route with
// exactly its roles and scope, and nothing the table does not have.
func TestOpenAPIServed(t *testing.T) {
	b := brokertest.Start(t, nil)
	res, err := http.Get(b.APIURL() + "/api/v1/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "application/json" || !strings.Contains(res.Header.Get("Cache-Control"), "max-age") {
		t.Fatalf("GET /api/v1/openapi.json without credentials = %d, Content-Type %q, Cache-Control %q; want 200 application/json, cacheable",
			res.StatusCode, res.Header.Get("Content-Type"), res.Header.Get("Cache-Control"))
	}
	d := loadOpenAPI(t, raw)
	if v := asMap(d.raw["info"])["version"]; v != "dev" {
		t.Errorf("served info.version = %v, want the broker's build, dev", v)
	}
	// The served document is the committed one but for the version.
	var committed map[string]any
	json.Unmarshal(broker.OpenAPIDocument(), &committed)
	asMap(committed["info"])["version"] = asMap(d.raw["info"])["version"]
	a, _ := json.Marshal(committed)
	s, _ := json.Marshal(d.raw)
	if !bytes.Equal(a, s) {
		t.Error("the served document differs from the committed one beyond info.version")
	}

	byRoute := map[string][]docOp{}
	for _, o := range d.ops() {
		byRoute[o.op["x-tether-route"].(string)] = append(byRoute[o.op["x-tether-route"].(string)], o)
	}
	for _, e := range broker.Endpoints() {
		ops := byRoute[e.Pattern]
		if len(ops) == 0 {
			t.Errorf("route %q is in broker.Endpoints but not in the OpenAPI document", e.Pattern)
		}
		for _, o := range ops {
			var roles []string
			for _, r := range asSlice(o.op["x-tether-roles"]) {
				roles = append(roles, r.(string))
			}
			if !slices.Equal(roles, e.Roles) {
				t.Errorf("%s %s: x-tether-roles %q, broker.Endpoints says %q", o.method, o.path, roles, e.Roles)
			}
			if o.op["x-tether-scope"] != e.Scope.String() {
				t.Errorf("%s %s: x-tether-scope %v, broker.Endpoints says %s", o.method, o.path, o.op["x-tether-scope"], e.Scope)
			}
			scoped := e.Scope == broker.ScopeTenant || e.Scope == broker.ScopeRequest
			if o.op["x-tether-tenant-scoped"] == true != scoped {
				t.Errorf("%s %s: x-tether-tenant-scoped %v, want %v (scope %s)", o.method, o.path, o.op["x-tether-tenant-scoped"], scoped, e.Scope)
			}
			public := e.Scope == broker.ScopePublic
			if sec, ok := o.op["security"]; public != (ok && len(asSlice(sec)) == 0) {
				t.Errorf("%s %s: security %v, but the route is %s", o.method, o.path, sec, e.Scope)
			}
			if m, p, ok := strings.Cut(e.Pattern, " "); ok && (m != o.method || p != o.path) {
				t.Errorf("operation %s %s names route %q", o.method, o.path, e.Pattern)
			}
		}
		delete(byRoute, e.Pattern)
	}
	for route, ops := range byRoute {
		t.Errorf("the OpenAPI document has %d operations of route %q, which broker.Endpoints does not have", len(ops), route)
	}
}

// rtCaller is who calls an operation in the round trip.
type rtCaller struct {
	email string
	token string
}

// TestOpenAPIRoundTrip sends every operation of the committed document
// through a real broker (with an agent guarding a real ClickHouse and
// Prometheus), its body built from the document's example, and holds each
// answer to the document: its status is one the operation documents and
// its body validates against the schema documented for that status (a
// 2xx against the operation's type, an error against the envelope).
// Then every path answers each method it does not document 404 or 405.
func TestOpenAPIRoundTrip(t *testing.T) {
	ctx := context.Background()
	dp := startDataPlane(t)
	b := dp.b
	d := loadOpenAPI(t, broker.OpenAPIDocument())
	byID := map[string]docOp{}
	for _, o := range d.ops() {
		byID[o.id()] = o
	}
	token := func(email string) string {
		tok, err := b.DevIdP().Token(brokertest.IssuerOf(email), email, devbroker.ClientID, "")
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	var (
		engineer = rtCaller{"engineer@vendor.test", token("engineer@vendor.test")}
		reviewer = rtCaller{"reviewer@vendor.test", token("reviewer@vendor.test")}
		admin    = rtCaller{"admin@vendor.test", token("admin@vendor.test")}
		acme     = rtCaller{"approver@acme.test", token("approver@acme.test")}
		nobody   = rtCaller{}
	)
	proof := func(c rtCaller, digest string) string {
		tok, err := b.DevIdP().Token(brokertest.IssuerOf(c.email), c.email, devbroker.ClientID, digest)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}

	type answer struct {
		status int
		header http.Header
		body   []byte
		json   any
	}
	succeeded := map[string]bool{}
	invalidBody := false // the next call sends a body its schema refuses, on purpose
	answered := map[string][]int{}
	// call sends operation id as c, with path values, query and the
	// example body changed by patch, and checks the answer against the
	// document.
	call := func(id string, c rtCaller, pathVals map[string]string, q url.Values, patch func(map[string]any)) answer {
		t.Helper()
		o, ok := byID[id]
		if !ok {
			t.Fatalf("no operation %s in the document", id)
		}
		path := o.path
		for k, v := range pathVals {
			path = strings.ReplaceAll(path, "{"+k+"}", url.PathEscape(v))
		}
		if strings.Contains(path, "{") {
			t.Fatalf("%s: path %s still has parameters", id, path)
		}
		u := b.APIURL() + path
		if len(q) > 0 {
			u += "?" + q.Encode()
		}
		var body io.Reader
		ct := ""
		if rb := asMap(o.op["requestBody"]); rb != nil {
			content := asMap(rb["content"])
			if m := asMap(content["application/json"]); m != nil {
				ex := deepCopy(asMap(asMap(m["examples"])["default"])["value"])
				if patch != nil {
					patch(asMap(ex))
				}
				s := d.schema(t, pointer("paths", o.path, strings.ToLower(o.method), "requestBody", "content", "application/json", "schema"))
				if err := s.Validate(ex); (err != nil) != invalidBody {
					t.Errorf("%s: the request body sent validates against the documented schema: %v, want %v", id, err == nil, !invalidBody)
				}
				invalidBody = false
				raw, _ := json.Marshal(ex)
				body, ct = bytes.NewReader(raw), "application/json"
			} else {
				body, ct = strings.NewReader(q.Encode()), "application/x-www-form-urlencoded"
				u = b.APIURL() + path
			}
		}
		req, err := http.NewRequestWithContext(ctx, o.method, u, body)
		if err != nil {
			t.Fatal(err)
		}
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		raw, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil {
			t.Fatalf("%s: read the answer: %v", id, err)
		}
		a := answer{status: res.StatusCode, header: res.Header, body: raw}
		answered[id] = append(answered[id], res.StatusCode)
		code := strconv.Itoa(res.StatusCode)
		r, rptr := d.response(o, code)
		if r == nil {
			t.Errorf("%s %s as %s answered %d, which the document does not list for it: %.300s", o.method, path, c.email, res.StatusCode, raw)
			return a
		}
		content := asMap(r["content"])
		mt, _, _ := mime.ParseMediaType(res.Header.Get("Content-Type"))
		if _, ok := content[mt]; !ok && len(content) > 0 {
			t.Errorf("%s answered %d with Content-Type %q, which the document does not list (%v)", id, res.StatusCode, mt, slices.Collect(maps.Keys(content)))
			return a
		}
		if res.StatusCode < 300 {
			succeeded[id] = true
			if asSlice(asMap(o.op)["tags"])[0] == "data plane" {
				if got := res.Trailer.Get(protocol.TrailerResult); got != protocol.ResultComplete {
					t.Errorf("%s: trailer %s = %q, want %q", id, protocol.TrailerResult, got, protocol.ResultComplete)
				}
			}
		}
		if mt != "application/json" {
			return a
		}
		v, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
		if err != nil {
			t.Errorf("%s answered %d with a body that is not JSON: %v", id, res.StatusCode, err)
			return a
		}
		s := d.schema(t, rptr+pointer("content", mt, "schema"))
		if err := s.Validate(v); err != nil {
			t.Errorf("%s answered %d with a body that does not validate against the documented schema: %v\nbody: %.1000s", id, res.StatusCode, err, raw)
		}
		json.Unmarshal(raw, &a.json)
		return a
	}
	want2xx := func(id string, a answer) map[string]any {
		t.Helper()
		if a.status >= 300 {
			t.Fatalf("%s = %d %s, want success", id, a.status, a.body)
		}
		return asMap(a.json)
	}
	acmeProd := map[string]string{"tenant": "acme", "name": "prod"}
	ids := func(kv ...string) map[string]string {
		m := map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}

	// Identity.
	want2xx("getAuthConfig", call("getAuthConfig", nobody, nil, nil, nil))
	call("getAuthConfig", nobody, nil, url.Values{"issuer": {"no-such-issuer"}}, nil) // 404
	want2xx("getOpenAPI", call("getOpenAPI", nobody, nil, nil, nil))
	want2xx("whoami", call("whoami", engineer, nil, nil, nil))
	call("whoami", nobody, nil, nil, nil) // 401
	want2xx("getBroker", call("getBroker", admin, nil, nil, nil))
	call("getTicket", engineer, ids("owner", "acme", "repo", "incidents", "number", "1"), nil, nil)

	// Deployments.
	created := want2xx("createDeployment", call("createDeployment", admin, nil, nil, nil))
	call("createDeployment", admin, nil, nil, nil) // 409 deployment_exists
	invalidBody = true
	call("createDeployment", admin, nil, nil, func(m map[string]any) { m["tenant"] = "Not A Label" }) // 400
	staging := ids("tenant", "acme", "name", "staging")
	stagingID := asMap(created["deployment"])["id"].(string)
	want2xx("listDeployments", call("listDeployments", acme, nil, nil, nil))
	want2xx("getDeploymentByID", call("getDeploymentByID", engineer, ids("id", dp.depID), nil, nil))
	call("getDeploymentByID", engineer, ids("id", "not-a-uuid"), nil, nil) // 400
	want2xx("getDeployment", call("getDeployment", acme, acmeProd, nil, nil))
	call("getDeployment", acme, ids("tenant", "acme", "name", "nope"), nil, nil) // 404
	want2xx("newPairingTokenByID", call("newPairingTokenByID", admin, ids("id", stagingID), nil, nil))
	want2xx("newPairingToken", call("newPairingToken", admin, staging, nil, nil))
	want2xx("pingByID", call("pingByID", admin, ids("id", dp.depID), url.Values{"count": {"2"}}, nil))
	want2xx("ping", call("ping", admin, acmeProd, nil, nil))
	call("ping", admin, staging, nil, nil)                                // 409 agent_unpaired
	call("ping", admin, acmeProd, url.Values{"count": {"101"}}, nil)      // 400
	want2xx("setSettings", call("setSettings", admin, staging, nil, nil)) // labels
	cs := want2xx("getCustomerSettings", call("getCustomerSettings", engineer, staging, nil, nil))
	want2xx("setCustomerSettings", call("setCustomerSettings", acme, staging, nil, func(m map[string]any) {
		m["version"] = cs["version"]
		now := time.Now().UTC()
		m["freeze_windows"] = []any{map[string]any{"start": now.Add(24 * time.Hour).Format(time.RFC3339), "end": now.Add(28 * time.Hour).Format(time.RFC3339), "reason": "quarter-end close"}}
	}))
	call("setCustomerSettings", acme, staging, nil, nil)  // 409 settings_changed
	call("setCustomerSettings", admin, staging, nil, nil) // 403

	// Permits.
	want2xx("listPermits", call("listPermits", reviewer, acmeProd, nil, nil))
	window := func(m map[string]any) {
		now := time.Now().UTC()
		m["windows"] = []any{map[string]any{"start": now.Add(-time.Minute).Format(time.RFC3339), "end": now.Add(7 * 24 * time.Hour).Format(time.RFC3339)}}
	}
	ps := want2xx("permitStatement", call("permitStatement", acme, staging, nil, window))
	call("signPermit", acme, staging, nil, nil) // 400: the example's placeholders
	permit := want2xx("signPermit", call("signPermit", acme, staging, nil, func(m map[string]any) {
		m["permit"], m["proof"] = ps["permit"], proof(acme, ps["digest"].(string))
	}))
	want2xx("revokePermit", call("revokePermit", acme, ids("tenant", "acme", "name", "staging", "permit", permit["id"].(string)), nil, nil))
	call("revokePermit", acme, ids("tenant", "acme", "name", "staging", "permit", "nope"), nil, nil) // 404

	// Requests.
	ar := want2xx("createRequest", call("createRequest", engineer, nil, nil, nil))
	arID := ar["id"].(string)
	invalidBody = true
	call("createRequest", engineer, nil, nil, func(m map[string]any) { m["scopes"] = []any{} }) // 400
	want2xx("listRequests", call("listRequests", acme, nil, url.Values{"state": {"pending"}, "deployment": {"acme/prod"}}, nil))
	want2xx("getRequest", call("getRequest", engineer, ids("id", arID), url.Values{"version": {fmt.Sprint(ar["version"])}, "wait": {"10ms"}}, nil))
	st := want2xx("approvalStatement", call("approvalStatement", acme, ids("id", arID), nil, nil))
	call("approveRequest", acme, ids("id", arID), nil, func(m map[string]any) { delete(m, "statement"); delete(m, "proof") }) // 403 approval_proof_required
	want2xx("approveRequest", call("approveRequest", acme, ids("id", arID), nil, func(m map[string]any) {
		m["statement"], m["proof"] = st["statement"], proof(acme, st["digest"].(string))
	}))
	second := want2xx("createRequest", call("createRequest", engineer, nil, nil, func(m map[string]any) { m["reason"] = "a second look" }))
	want2xx("denyRequest", call("denyRequest", acme, ids("id", second["id"].(string)), nil, nil))
	call("denyRequest", acme, ids("id", second["id"].(string)), nil, nil) // 409 not_pending
	third := want2xx("createRequest", call("createRequest", engineer, nil, nil, func(m map[string]any) { m["reason"] = "a third look" }))
	want2xx("cancelRequest", call("cancelRequest", engineer, ids("id", third["id"].(string)), nil, nil))

	// The data plane, under the approved request's grant.
	waitActive(t, asUser(t, b, engineer.email), arID)
	want2xx("clickhouseQuery", call("clickhouseQuery", engineer, acmeProd, nil, nil))
	call("clickhouseQuery", engineer, acmeProd, nil, func(m map[string]any) { m["sql"] = "SELECT v FROM default.secret" }) // refused by the guard
	prom := map[string]url.Values{
		"prometheusQuery":             {"query": {"up"}},
		"prometheusQueryRange":        {"query": {"up"}, "start": {strconv.FormatInt(time.Now().Add(-time.Hour).Unix(), 10)}, "end": {strconv.FormatInt(time.Now().Unix(), 10)}, "step": {"60s"}},
		"prometheusQueryExemplars":    {"query": {"up"}},
		"prometheusSeries":            {"match[]": {"up"}},
		"prometheusLabels":            {},
		"prometheusLabelValues":       {},
		"prometheusMetadata":          {},
		"prometheusTargets":           {},
		"prometheusTargetsMetadata":   {"match_target": {`{job="prometheus"}`}},
		"prometheusRules":             {},
		"prometheusAlerts":            {},
		"prometheusStatusBuildinfo":   {},
		"prometheusStatusRuntimeinfo": {},
		"prometheusStatusTsdb":        {},
	}
	for id, q := range prom {
		pv := ids("tenant", "acme", "name", "prod", "label", "job")
		want2xx(id, call(id, engineer, pv, q, nil))
		if _, ok := byID[id+"Post"]; ok {
			want2xx(id+"Post", call(id+"Post", engineer, pv, q, nil))
		}
	}
	call("prometheusQuery", engineer, acmeProd, url.Values{"query": {"up["}}, nil) // a refusal

	// Network: this broker has no AWS configuration, so each is refused as such.
	call("planNetwork", engineer, acmeProd, nil, nil)
	call("applyNetwork", engineer, ids("id", arID), nil, nil)
	call("teardownNetwork", admin, ids("id", arID), nil, nil)
	call("networkStatus", reviewer, ids("id", arID), nil, nil)
	want2xx("listRegistrations", call("listRegistrations", acme, nil, url.Values{"tenant": {"acme"}}, nil))
	reg := want2xx("registerNetwork", call("registerNetwork", acme, ids("tenant", "acme"), nil, nil))
	pending := want2xx("registerNetwork", call("registerNetwork", admin, ids("tenant", "acme"), nil, func(m map[string]any) {
		m["account_id"] = "210987654321"
		m["role_arn"] = "arn:aws:iam::210987654321:role/tether-peering"
	}))
	call("confirmRegistration", acme, ids("tenant", "acme", "id", "no-such-registration"), nil, nil) // 404
	want2xx("confirmRegistration", call("confirmRegistration", acme, ids("tenant", "acme", "id", asMap(pending["registration"])["id"].(string)), nil, nil))
	want2xx("unregisterNetwork", call("unregisterNetwork", admin, ids("tenant", "acme", "id", asMap(reg["registration"])["id"].(string)), nil, nil))

	// Audit.
	want2xx("searchAudit", call("searchAudit", reviewer, nil, url.Values{"deployment": {"acme/prod"}, "limit": {"50"}}, nil))
	call("searchAudit", reviewer, nil, url.Values{"limit": {"0"}}, nil) // 400
	want2xx("searchTenantAudit", call("searchTenantAudit", acme, ids("tenant", "acme"), url.Values{"type": {"request.created"}}, nil))
	want2xx("auditPublicKey", call("auditPublicKey", admin, nil, nil, nil))
	want2xx("tenantAuditPublicKey", call("tenantAuditPublicKey", acme, ids("tenant", "acme"), nil, nil))
	size := waitCheckpoint(t, b)
	want2xx("auditCheckpoint", call("auditCheckpoint", reviewer, nil, nil, nil))
	want2xx("inclusionProof", call("inclusionProof", reviewer, nil, url.Values{"index": {"0"}, "size": {fmt.Sprint(size)}}, nil))
	call("inclusionProof", reviewer, nil, url.Values{"index": {fmt.Sprint(size)}}, nil) // 400
	want2xx("consistencyProof", call("consistencyProof", reviewer, nil, url.Values{"from": {"1"}}, nil))
	want2xx("exportAudit", call("exportAudit", admin, nil, nil, nil))
	// A tenant export needs a checkpoint the tenant's agent cosigned,
	// within a few heartbeats: until then it is 404 nothing_to_export.
	for deadline := time.Now().Add(30 * time.Second); ; {
		if a := call("exportTenantAudit", acme, ids("tenant", "acme"), nil, nil); a.status == http.StatusOK || time.Now().After(deadline) {
			want2xx("exportTenantAudit", a)
			break
		}
		time.Sleep(200 * time.Millisecond) // the agent cosigns on its heartbeat
	}

	// Every path answers the methods it does not document 404 or 405 —
	// but where the path with that method is another operation's (DELETE
	// …/permits/statement is revokePermit of permit "statement"). A data
	// source that takes every method leaves the method to the agent's
	// guard, which refuses it as it refuses any call it does not serve:
	// 403 prom_denied, audited.
	documented := http.NewServeMux()
	for _, o := range d.ops() {
		documented.HandleFunc(o.method+" "+o.path, func(http.ResponseWriter, *http.Request) {})
	}
	for path, item := range d.raw["paths"].(map[string]any) {
		concrete := strings.NewReplacer("{tenant}", "acme", "{name}", "prod", "{id}", arID, "{permit}", "p", "{owner}", "acme", "{repo}", "incidents", "{number}", "1", "{label}", "job").Replace(path)
		for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch} {
			if _, ok := asMap(item)[strings.ToLower(m)]; ok {
				continue
			}
			req, _ := http.NewRequest(m, b.APIURL()+concrete, nil)
			if _, pattern := documented.Handler(req); pattern != "" {
				continue
			}
			req.Header.Set("Authorization", "Bearer "+engineer.token)
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := io.ReadAll(res.Body)
			res.Body.Close()
			var e brokerapi.ErrorEnvelope
			json.Unmarshal(raw, &e)
			guarded := strings.Contains(path, "/prometheus/") && res.StatusCode == http.StatusForbidden && e.Error.Code == "prom_denied" && strings.Contains(e.Error.Message, "method "+m)
			if res.StatusCode != http.StatusNotFound && res.StatusCode != http.StatusMethodNotAllowed && !guarded {
				t.Errorf("%s %s (undocumented) = %d %s, want 404 or 405", m, concrete, res.StatusCode, raw)
			}
		}
	}

	// Last, what ends access.
	want2xx("revokeRequest", call("revokeRequest", engineer, ids("id", arID), nil, nil))
	invalidBody = true
	call("revokeRequest", engineer, ids("id", arID), nil, func(m map[string]any) { m["reason"] = "" }) // 400
	want2xx("revokeAgent", call("revokeAgent", admin, acmeProd, nil, nil))
	call("revokeAgent", admin, acmeProd, nil, nil) // 409 agent_unpaired
	_ = ctx

	var report []string
	for _, o := range d.ops() {
		st := answered[o.id()]
		if len(st) == 0 {
			t.Errorf("operation %s (%s %s) was never called", o.id(), o.method, o.path)
		}
		report = append(report, fmt.Sprintf("%-28s %v", o.id(), st))
	}
	t.Logf("answers by operation:\n%s", strings.Join(report, "\n"))
	t.Logf("%d of %d operations answered with success", len(succeeded), len(byID))
}

func deepCopy(v any) any {
	raw, _ := json.Marshal(v)
	var out any
	json.Unmarshal(raw, &out)
	return out
}

// waitActive waits until request id has its grant.
func waitActive(t *testing.T, c *brokerapi.Client, id string) {
	t.Helper()
	ar, err := c.GetRequest(context.Background(), id)
	for err == nil && ar.State != brokerapi.StateActive {
		if ar.State != brokerapi.StateApproved && ar.State != brokerapi.StatePending {
			t.Fatalf("request %s is %s, want active", id, ar.State)
		}
		ar, err = c.WaitRequest(context.Background(), id, ar.Version, 5*time.Second)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// waitCheckpoint waits for a signed checkpoint of the audit log, and
// returns its size.
func waitCheckpoint(t *testing.T, b *brokertest.Broker) uint64 {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		cp, err := b.Client.AuditCheckpoint(context.Background())
		if err == nil && cp.Size > 1 {
			return cp.Size
		}
		if time.Now().After(deadline) {
			t.Fatalf("no audit checkpoint within 30s: %v", err)
		}
		time.Sleep(100 * time.Millisecond) // the broker checkpoints on its own schedule
	}
}
