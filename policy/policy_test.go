package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/names"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/prometheus/client_golang/prometheus"
)

// TestRego runs the Rego unit tests of the embedded policy, so that
// `go test ./policy` (and make test) fails when any of them does.
func TestRego(t *testing.T) {
	passed, failed, err := Test(t.Context(), "")
	t.Logf("rego tests: %d passed, %d failed", passed, failed)
	if err != nil {
		t.Fatal(err)
	}
	if passed < 40 {
		t.Fatalf("only %d rego tests ran; the test file is not being picked up", passed)
	}
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// noon is the time of baseInput.
var noon = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// baseInput is a request the default policy allows.
func baseInput() Input {
	return Input{
		Requester: Requester{
			Subject: "u-1", Email: "eve@vendor.example", Issuer: "https://idp.vendor.example",
			Roles: []string{"engineer"}, Groups: []string{"eng"}, GitHubLogin: "eve",
		},
		Deployment: Deployment{
			ID: "dep-1", Tenant: "acme", Name: "acme-prod", Region: "eu-west-1",
			Labels: map[string]string{"env": "prod"},
		},
		Ticket:          &Ticket{Ref: "acme/incidents#42", Verified: true, State: "open", Labels: []string{"bug"}},
		Scopes:          []string{"clickhouse:system", "prometheus:read"},
		DurationSeconds: 3600,
		Time:            noon,
		Action:          ActionAccess,
	}
}

// peerNetwork is the change of a network:peering request, inside the
// maintenance windows.
func peerNetwork() *Network {
	return &Network{
		Kind: NetworkPeering, AccountID: "222222222222", Region: "eu-west-1", VPCID: "vpc-0a1b2c3d4e5f67890",
		RoleARN: "arn:aws:iam::222222222222:role/tether-network", RouteTableIDs: []string{"rtb-0a1b2c3d4e5f67890"},
	}
}

func newEngine(t *testing.T, opts Options) *Engine {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	e, err := New(t.Context(), opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return e
}

var hexHash = regexp.MustCompile(`^[0-9a-f]{64}$`)

func TestDecide(t *testing.T) {
	e := newEngine(t, Options{Now: func() time.Time { return noon }})
	if !hexHash.MatchString(e.Hash()) {
		t.Fatalf("Hash() = %q, want 64 hex digits", e.Hash())
	}
	approver := func(n int) []Review { return []Review{{Tenant: "acme", Role: names.ReviewApprover, Count: n}} }
	internal2 := []Review{{Role: names.ReviewInternal, Count: 2}}
	freeze := Window{Start: noon.Add(-time.Hour), End: noon.Add(time.Hour), Reason: "quarter close"}

	tests := []struct {
		name    string
		modify  func(*Input)
		allow   bool
		reviews []Review // checked when allowed
		max     time.Duration
		scopes  []string
		reason  string // a substring of one of the reasons
	}{
		{name: "allowed", modify: func(*Input) {}, allow: true, reviews: approver(1), max: 4 * time.Hour,
			scopes: []string{"clickhouse:system", "prometheus:read"}, reason: "1 customer approver(s) of tenant acme must approve"},
		{name: "non-engineer", modify: func(in *Input) { in.Requester.Roles = []string{"reviewer"} },
			reason: "only engineers may request access: eve@vendor.example holds roles reviewer"},
		{name: "no ticket", modify: func(in *Input) { in.Ticket = nil },
			reason: "a ticket is required outside dev mode: cite one with --ticket owner/repo#N"},
		{name: "no ticket in dev mode", modify: func(in *Input) { in.Ticket, in.Dev = nil, true }, allow: true, reviews: approver(1)},
		{name: "unverified ticket", modify: func(in *Input) { in.Ticket.Verified = false }, reason: "could not be verified on GitHub"},
		{name: "closed ticket", modify: func(in *Input) { in.Ticket.State = "closed" }, reason: "is closed, not open"},
		{name: "unknown scope", modify: func(in *Input) { in.Scopes = append(in.Scopes, "clickhouse:admin") },
			scopes: []string{"clickhouse:system", "prometheus:read"}, reason: "unknown scope clickhouse:admin"},
		{name: "too long", modify: func(in *Input) { in.DurationSeconds = 5 * 3600 },
			reason: "requested duration 18000s exceeds the maximum of 14400s (4h)"},
		{name: "prometheus:read alone needs a customer approver", modify: func(in *Input) {
			in.Scopes = []string{"prometheus:read"}
		}, allow: true, reviews: approver(1), scopes: []string{"prometheus:read"}, reason: "1 customer approver(s) of tenant acme must approve"},
		{name: "freeze", modify: func(in *Input) { in.Deployment.FreezeWindows = []Window{freeze} },
			allow: true, reviews: approver(2), reason: `freeze window "quarter close"`},
		{name: "freeze over prometheus:read alone", modify: func(in *Input) {
			in.Scopes = []string{"prometheus:read"}
			in.Deployment.FreezeWindows = []Window{freeze}
		}, allow: true, reviews: approver(2), reason: "2 customer approvals are required"},
		{name: "freeze window open at the start", modify: func(in *Input) {
			in.Deployment.FreezeWindows = []Window{{End: noon.Add(time.Minute), Reason: "since ever"}}
		}, allow: true, reviews: approver(2)},
		{name: "freeze window over", modify: func(in *Input) {
			in.Deployment.FreezeWindows = []Window{{Start: noon.Add(-time.Hour), End: noon, Reason: "done"}}
		}, allow: true, reviews: approver(1)},
		{name: "zero time means Options.Now", modify: func(in *Input) {
			in.Time = time.Time{}
			in.Deployment.FreezeWindows = []Window{freeze}
		}, allow: true, reviews: approver(2)},
		{name: "break-glass with sev1", modify: func(in *Input) { in.BreakGlass, in.Ticket.Labels = true, []string{"sev1"} },
			allow: true, reviews: internal2, max: time.Hour, reason: "break-glass: two internal reviewers"},
		{name: "break-glass without sev1", modify: func(in *Input) { in.BreakGlass = true },
			reason: "break-glass requires a ticket labelled sev1"},
		{name: "break-glass too long", modify: func(in *Input) {
			in.BreakGlass, in.Ticket.Labels, in.DurationSeconds = true, []string{"sev1"}, 7200
		}, reason: "exceeds the maximum of 3600s (1h)"},
		{name: "network peering", modify: func(in *Input) {
			in.Action, in.Scopes, in.DurationSeconds = ActionPeering, nil, 86400
			in.Requester.Roles = []string{"admin"}
			in.Network = peerNetwork()
		}, allow: true, reviews: approver(1), max: 24 * time.Hour, scopes: []string{"network:peering"}},
		{name: "network peering outside the maintenance windows", modify: func(in *Input) {
			in.Action, in.Scopes, in.DurationSeconds = ActionPeering, nil, 86400
			in.Network = peerNetwork()
			in.Network.OutsideMaintenanceWindow = true
		}, allow: true, reviews: approver(2), reason: "outside the maintenance windows of deployment acme-prod: 2 customer approvals"},
		{name: "network peering without the change", modify: func(in *Input) {
			in.Action, in.Scopes, in.DurationSeconds = ActionPeering, nil, 86400
		}, reason: "a network:peering request must name its change"},
		{name: "network peering by a reviewer", modify: func(in *Input) {
			in.Action, in.Scopes = ActionPeering, nil
			in.Requester.Roles = []string{"reviewer"}
		}, reason: "only admins and engineers may request network peering"},
		{name: "unknown action", modify: func(in *Input) { in.Action = "drop" }, reason: `unknown action "drop"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := baseInput()
			tt.modify(&in)
			d, err := e.Decide(t.Context(), in)
			if err != nil {
				t.Fatalf("Decide: %v", err)
			}
			if d.Allow != tt.allow {
				t.Fatalf("Decide().Allow = %v, want %v; reasons %q", d.Allow, tt.allow, d.Reasons)
			}
			if len(d.Reasons) == 0 {
				t.Errorf("Decide().Reasons is empty")
			}
			if tt.reason != "" && !slices.ContainsFunc(d.Reasons, func(r string) bool { return strings.Contains(r, tt.reason) }) {
				t.Errorf("Decide().Reasons = %q, want one containing %q", d.Reasons, tt.reason)
			}
			if tt.allow && !slices.Equal(d.RequiredReviews, tt.reviews) {
				t.Errorf("Decide().RequiredReviews = %+v, want %+v", d.RequiredReviews, tt.reviews)
			}
			if tt.max != 0 && d.MaxDuration != tt.max {
				t.Errorf("Decide().MaxDuration = %v, want %v", d.MaxDuration, tt.max)
			}
			if d.MaxDuration != time.Duration(d.MaxDurationSeconds)*time.Second {
				t.Errorf("Decide().MaxDuration = %v, MaxDurationSeconds = %d: they disagree", d.MaxDuration, d.MaxDurationSeconds)
			}
			if tt.scopes != nil && !slices.Equal(d.Scopes, tt.scopes) {
				t.Errorf("Decide().Scopes = %q, want %q", d.Scopes, tt.scopes)
			}
			if d.PolicyHash != e.Hash() {
				t.Errorf("Decide().PolicyHash = %q, want %q", d.PolicyHash, e.Hash())
			}
		})
	}
}

// TestInputJSON pins the documented input names the policy reads.
func TestInputJSON(t *testing.T) {
	in := baseInput()
	in.Deployment.FreezeWindows = []Window{{Start: noon, End: noon.Add(time.Hour), Reason: "r"}}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	check := func(obj any, keys ...string) {
		t.Helper()
		o, ok := obj.(map[string]any)
		if !ok {
			t.Fatalf("%v is not an object", obj)
		}
		got := slices.Sorted(func(yield func(string) bool) {
			for k := range o {
				if !yield(k) {
					return
				}
			}
		})
		slices.Sort(keys)
		if !slices.Equal(got, keys) {
			t.Errorf("JSON keys = %q, want %q", got, keys)
		}
	}
	check(m, "requester", "deployment", "ticket", "scopes", "duration_seconds", "break_glass", "dev", "time", "action", "network")
	if m["network"] != nil {
		t.Errorf("JSON network = %v for an access request, want null", m["network"])
	}
	in.Network = peerNetwork()
	if b, err = json.Marshal(in); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	check(m["network"], "kind", "account_id", "region", "vpc_id", "role_arn", "route_table_ids", "outside_maintenance_window")
	check(m["requester"], "subject", "email", "issuer", "tenant", "roles", "groups", "github_login", "github_teams")
	check(m["deployment"], "id", "tenant", "name", "region", "labels", "freeze_windows", "maintenance_windows")
	check(m["deployment"].(map[string]any)["freeze_windows"].([]any)[0], "start", "end", "reason")
	check(m["ticket"], "ref", "verified", "state", "labels", "assignees")

	d, err := json.Marshal(Decision{Reasons: []string{}, RequiredReviews: []Review{{Role: names.ReviewInternal, Count: 2}}})
	if err != nil {
		t.Fatal(err)
	}
	m = nil
	if err := json.Unmarshal(d, &m); err != nil {
		t.Fatal(err)
	}
	check(m, "allow", "reasons", "required_reviews", "max_duration_seconds", "scopes", "policy_hash")
	check(m["required_reviews"].([]any)[0], "tenant", "role", "count")
}

// writePolicy writes files into dir, atomically each, so that a watcher
// never reads half a file.
func writePolicy(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, src := range files {
		tmp := filepath.Join(dir, ".tmp-"+name)
		if err := os.WriteFile(tmp, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
}

// fixedPolicy is a policy whose decision ignores its input.
func fixedPolicy(allow bool, reason string) string {
	return `package tether.access

decision := {
	"allow": ` + map[bool]string{true: "true", false: "false"}[allow] + `,
	"reasons": ["` + reason + `"],
	"required_reviews": [{"tenant": "acme", "role": "approver", "count": 1}],
	"max_duration_seconds": 600,
	"scopes": ["prometheus:read"],
}
`
}

func TestNewBrokenPolicy(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  string
	}{
		{"syntax error", map[string]string{"access.rego": "package tether.access\n\ndecision := [1, }\n\nallow := true\n"}, "access.rego:3"},
		{"compile error", map[string]string{"access.rego": "package tether.access\n\ndecision := x if {\n\ty := 1\n}\n"}, "access.rego:3"},
		{"no decision", map[string]string{"access.rego": "package tether.access\n\nallow := true\n"}, "defines no data.tether.access.decision"},
		{"only tests", map[string]string{"access_test.rego": "package tether.access_test\n\ntest_x if true\n"}, "no .rego files"},
		{"denied builtin", map[string]string{"access.rego": "package tether.access\n\ndecision := http.send({\"method\": \"get\", \"url\": \"http://x\"})\n"}, "access.rego:3"},
		{"rego v0", map[string]string{"access.rego": "package tether.access\n\ndecision = d { d := 1 }\n"}, "access.rego:3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writePolicy(t, dir, tt.files)
			_, err := New(t.Context(), Options{Dir: dir, Logger: testLogger(t)})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New() error = %v, want one containing %q", err, tt.want)
			}
		})
	}
	if _, err := New(t.Context(), Options{Dir: filepath.Join(t.TempDir(), "missing")}); err == nil {
		t.Errorf("New(missing dir) succeeded")
	}
}

// TestMalformedDecision: a decision that is not of the documented shape
// never reaches the caller.
func TestMalformedDecision(t *testing.T) {
	valid := `{"allow": true, "reasons": ["ok"], "required_reviews": [{"tenant": "acme", "role": "approver", "count": 1}], "max_duration_seconds": 600, "scopes": []}`
	tests := []struct {
		name, decision string
	}{
		{"count 0", `object.union(` + valid + `, {"required_reviews": [{"tenant": "acme", "role": "approver", "count": 0}]})`},
		{"count fractional", `object.union(` + valid + `, {"required_reviews": [{"tenant": "acme", "role": "approver", "count": 1.5}]})`},
		{"count a string", `object.union(` + valid + `, {"required_reviews": [{"tenant": "acme", "role": "approver", "count": "1"}]})`},
		{"unknown role", `object.union(` + valid + `, {"required_reviews": [{"tenant": "acme", "role": "customer", "count": 1}]})`},
		{"approver of no tenant", `object.union(` + valid + `, {"required_reviews": [{"tenant": "", "role": "approver", "count": 1}]})`},
		{"internal of a tenant", `object.union(` + valid + `, {"required_reviews": [{"tenant": "acme", "role": "internal", "count": 2}]})`},
		{"review missing count", `object.union(` + valid + `, {"required_reviews": [{"tenant": "acme", "role": "approver"}]})`},
		{"reviews not an array", `object.union(` + valid + `, {"required_reviews": {"tenant": "acme"}})`},
		{"missing max_duration_seconds", `object.remove(` + valid + `, {"max_duration_seconds"})`},
		{"max_duration_seconds 0", `object.union(` + valid + `, {"max_duration_seconds": 0})`},
		{"max_duration_seconds negative", `object.union(` + valid + `, {"max_duration_seconds": -60})`},
		{"max_duration_seconds a string", `object.union(` + valid + `, {"max_duration_seconds": "600"})`},
		{"max_duration_seconds huge", `object.union(` + valid + `, {"max_duration_seconds": 1e300})`},
		{"allow not boolean", `object.union(` + valid + `, {"allow": "yes"})`},
		{"missing allow", `object.remove(` + valid + `, {"allow"})`},
		{"reasons not an array", `object.union(` + valid + `, {"reasons": "ok"})`},
		{"reason not a string", `object.union(` + valid + `, {"reasons": [1]})`},
		{"denial without reasons", `object.union(` + valid + `, {"allow": false, "reasons": []})`},
		{"scope not a string", `object.union(` + valid + `, {"scopes": [{"prometheus": "read"}]})`},
		{"unknown key", `object.union(` + valid + `, {"allowed": true})`},
		{"not an object", `[true]`},
		{"undefined", `1 if false`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writePolicy(t, dir, map[string]string{"access.rego": "package tether.access\n\ndecision := " + tt.decision + "\n"})
			e := newEngine(t, Options{Dir: dir})
			d, err := e.Decide(t.Context(), baseInput())
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Decide() = %+v, %v; want an error wrapping ErrMalformed", d, err)
			}
			if d.Allow || d.Reasons != nil || d.PolicyHash != "" {
				t.Errorf("Decide() returned a partial decision %+v with its error", d)
			}
			t.Log(err)
		})
	}

	t.Run("valid", func(t *testing.T) {
		dir := t.TempDir()
		writePolicy(t, dir, map[string]string{"access.rego": "package tether.access\n\ndecision := " + valid + "\n"})
		d, err := newEngine(t, Options{Dir: dir}).Decide(t.Context(), baseInput())
		if err != nil || !d.Allow || d.MaxDuration != 10*time.Minute {
			t.Fatalf("Decide() = %+v, %v; want allowed for 10m", d, err)
		}
	})

	t.Run("conflict", func(t *testing.T) {
		dir := t.TempDir()
		writePolicy(t, dir, map[string]string{"access.rego": "package tether.access\n\ndecision := " + valid + " if input.dev == false\n\ndecision := {} if input.action == \"access\"\n"})
		d, err := newEngine(t, Options{Dir: dir}).Decide(t.Context(), baseInput())
		if err == nil {
			t.Fatalf("Decide() = %+v, nil; want an evaluation error", d)
		}
		t.Log(err)
	})
}

// TestHash: the hash covers the modules evaluated, by name and content,
// and nothing else.
func TestHash(t *testing.T) {
	embedded := newEngine(t, Options{}).Hash()
	src, err := os.ReadFile("access.rego")
	if err != nil {
		t.Fatal(err)
	}
	tests, err := os.ReadFile("access_test.rego")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	writePolicy(t, dir, map[string]string{"access.rego": string(src), "access_test.rego": string(tests), "README.md": "not policy"})
	if got := newEngine(t, Options{Dir: dir}).Hash(); got != embedded {
		t.Errorf("Hash() of a copy of the embedded policy = %s, want %s", got, embedded)
	}
	if n, _, err := Test(t.Context(), dir); err != nil || n == 0 {
		t.Errorf("Test(copy) = %d passed, %v; want the copy's tests to pass", n, err)
	}
	writePolicy(t, dir, map[string]string{"access.rego": string(src) + "\n# a comment\n"})
	if got := newEngine(t, Options{Dir: dir}).Hash(); got == embedded {
		t.Errorf("Hash() did not change with the content")
	}
}

func TestTestReportsFailures(t *testing.T) {
	dir := t.TempDir()
	writePolicy(t, dir, map[string]string{
		"access.rego": fixedPolicy(true, "ok"),
		"access_test.rego": `package tether.access_test

import data.tether.access

test_allows if access.decision.allow

test_denies if {
	print("allow is", access.decision.allow)
	not access.decision.allow
}

test_cases[note] if {
	some note in ["a", "b"]
}

todo_test_later if false
`,
	})
	passed, failed, err := Test(t.Context(), dir)
	t.Log(err)
	if passed != 1 || failed != 2 || !errors.Is(err, ErrTestsFailed) {
		t.Fatalf("Test() = %d, %d, %v; want 1 passed, 2 failed, ErrTestsFailed", passed, failed, err)
	}
	for _, want := range []string{
		"data.tether.access_test.test_denies (" + filepath.Join(dir, "access_test.rego") + ":7): undefined (printed: allow is true)",
		"data.tether.access_test.test_cases",
		"parametrized tests are not supported",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Test() error does not contain %q", want)
		}
	}

	writePolicy(t, dir, map[string]string{"access_test.rego": "package tether.access_test\n\ntest_x if { ] }\n"})
	if _, _, err := Test(t.Context(), dir); err == nil || !strings.Contains(err.Error(), "access_test.rego:3") {
		t.Fatalf("Test(broken) error = %v, want one naming access_test.rego:3", err)
	}
}

// metricValue returns the value of the counter or the count of the
// histogram name{result}.
func metricValue(t *testing.T, reg *prometheus.Registry, name, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					if h := m.GetHistogram(); h != nil {
						return float64(h.GetSampleCount())
					}
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEngine(t, Options{Registerer: reg})
	in := baseInput()
	if _, err := e.Decide(t.Context(), in); err != nil {
		t.Fatal(err)
	}
	in.Ticket = nil
	if _, err := e.Decide(t.Context(), in); err != nil {
		t.Fatal(err)
	}
	// A second engine on the same registry shares the collectors.
	e2 := newEngine(t, Options{Registerer: reg})
	if _, err := e2.Decide(t.Context(), in); err != nil {
		t.Fatal(err)
	}
	for result, want := range map[string]float64{"allow": 1, "deny": 2, "error": 0} {
		if got := metricValue(t, reg, "tether_policy_decision_duration_seconds", result); got != want {
			t.Errorf("decisions{result=%q} = %v, want %v", result, got, want)
		}
	}
	if err := e.Reload(t.Context()); err != nil {
		t.Errorf("Reload() of the embedded policy = %v, want nil", err)
	}
}

// TestInputValue: the input the policy sees is the JSON encoding of Input,
// so that a logged input replays to the same decision.
func TestInputValue(t *testing.T) {
	full := baseInput()
	full.Requester.GitHubTeams = []string{"sre", "oncall"}
	full.Ticket.Assignees = []string{}
	full.Deployment.FreezeWindows = []Window{{Start: noon, End: noon.Add(90 * time.Minute), Reason: "r"}, {}}
	full.Deployment.MaintenanceWindows = []Window{}
	full.Deployment.Labels = map[string]string{"env": "prod", "tier": "1"}
	full.Time = time.Date(2025, 6, 1, 12, 0, 0, 123456789, time.FixedZone("CEST", 2*3600))
	full.BreakGlass, full.Dev, full.DurationSeconds = true, true, -5
	full.Network = peerNetwork()
	full.Network.OutsideMaintenanceWindow = true
	noTables := baseInput()
	noTables.Network = &Network{Kind: NetworkIngress}
	for name, in := range map[string]Input{"zero": {}, "base": baseInput(), "full": full, "network without route tables": noTables} {
		b, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		want, err := ast.ValueFromReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if got := in.value(); got.Compare(want) != 0 {
			t.Errorf("%s: value() =\n%v\nwant (its JSON)\n%v", name, got, want)
		}
	}
}

// TestDirLayout: a Kubernetes ConfigMap volume (files are symbolic links
// into a hidden, versioned directory) loads as its files; hidden files are
// skipped; subdirectories load.
func TestDirLayout(t *testing.T) {
	plain := t.TempDir()
	writePolicy(t, plain, map[string]string{"access.rego": fixedPolicy(true, "ok")})
	want := newEngine(t, Options{Dir: plain}).Hash()

	cm := t.TempDir()
	if err := os.Mkdir(filepath.Join(cm, "..2025_06_01"), 0o755); err != nil {
		t.Fatal(err)
	}
	writePolicy(t, filepath.Join(cm, "..2025_06_01"), map[string]string{"access.rego": fixedPolicy(true, "ok")})
	for link, target := range map[string]string{"..data": "..2025_06_01", "access.rego": "..data/access.rego"} {
		if err := os.Symlink(target, filepath.Join(cm, link)); err != nil {
			t.Fatal(err)
		}
	}
	writePolicy(t, cm, map[string]string{".#access.rego": "not rego"})
	if got := newEngine(t, Options{Dir: cm}).Hash(); got != want {
		t.Errorf("Hash() of a ConfigMap layout = %s, want %s (its one file)", got, want)
	}

	nested := t.TempDir()
	if err := os.Mkdir(filepath.Join(nested, "lib"), 0o755); err != nil {
		t.Fatal(err)
	}
	writePolicy(t, nested, map[string]string{"access.rego": "package tether.access\n\nimport data.tether.lib\n\ndecision := lib.decision\n"})
	writePolicy(t, filepath.Join(nested, "lib"), map[string]string{"lib.rego": "package tether.lib\n\ndecision := " + strings.TrimPrefix(fixedPolicy(false, "from lib"), "package tether.access\n\ndecision := ")})
	d, err := newEngine(t, Options{Dir: nested}).Decide(t.Context(), baseInput())
	if err != nil || d.Reasons[0] != "from lib" {
		t.Errorf("Decide() with a policy in two directories = %+v, %v; want lib's decision", d, err)
	}
}
