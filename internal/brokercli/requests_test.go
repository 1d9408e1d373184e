package brokercli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/names"

	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/cli"
)

const testID = "3f2b8c1e-5d4a-4e6f-9a7b-0c1d2e3f4a5b"

// testConfig writes a CLI config for a broker at apiURL with the static
// token "t" and returns its path.
func testConfig(t *testing.T, apiURL string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cli.json")
	if err := os.WriteFile(path, fmt.Appendf(nil, `{"api_url": %q, "token": "t"}`, apiURL), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// writeAPIError answers as the broker does on an error.
func writeAPIError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

// TestLocalValidation: mistakes are caught before anything is sent (the
// config named does not exist, so reaching the broker would be another
// error), as usage errors saying what is accepted.
func TestLocalValidation(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "missing.json")
	create := func(extra ...string) []string {
		args := map[string]string{"--deployment": "acme/prod", "--scope": "clickhouse:system", "--duration": "30m", "--reason": "disk full"}
		for i := 0; i+1 < len(extra); i += 2 {
			args[extra[i]] = extra[i+1]
		}
		out := []string{"request", "create", "--config", cfg}
		for k, v := range args {
			if v != "\x00" {
				out = append(out, k+"="+v)
			}
		}
		return out
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"bad scope", create("--scope", "clickhouse"), `unknown scope "clickhouse": want clickhouse:system or prometheus:read`},
		{"scope twice", create("--scope", "prometheus:read,prometheus:read"), "given twice"},
		{"no scope", create("--scope", "\x00"), "--scope is required"},
		{"duration not a duration", create("--duration", "30"), `--duration "30": want a duration such as 30m`},
		{"duration too long", create("--duration", "13h"), "want from 1m to 12h"},
		{"duration too short", create("--duration", "30s"), "want from 1m to 12h"},
		{"no duration", create("--duration", "\x00"), "--duration is required"},
		{"missing reason", create("--reason", "\x00"), "--reason is required"},
		{"blank reason", create("--reason", "  "), "--reason is required"},
		{"long reason", create("--reason", strings.Repeat("x", 1001)), "at most 1000"},
		{"ticket without number", create("--ticket", "acme/incidents"), "--ticket: "},
		{"ticket without owner", create("--ticket", "incidents#4"), "--ticket: "},
		{"ticket URL", create("--ticket", "https://github.com/acme/x/issues/4"), "--ticket: "},
		{"break-glass without ticket", create("--break-glass", "true"), "--break-glass needs --ticket"},
		{"deployment without name", create("--deployment", "acme"), `--deployment "acme": want TENANT/NAME`},
		{"deployment upper case", create("--deployment", "Acme/prod"), "want TENANT/NAME"},
		{"deployment three parts", create("--deployment", "acme/prod/x"), "want TENANT/NAME"},
		{"no deployment", create("--deployment", "\x00"), "--deployment is required"},
		{"bad output", create("--output", "yaml"), `--output "yaml"`},
		{"show bad ID", []string{"request", "show", "--config", cfg, "42"}, `"42" is not a request ID: want a UUID`},
		{"approve bad ID", []string{"request", "approve", "--config", cfg, testID + "x"}, "is not a request ID"},
		{"cancel no ID", []string{"request", "cancel", "--config", cfg}, "want exactly one request ID"},
		{"deny without comment", []string{"request", "deny", "--config", cfg, testID}, "--comment is required"},
		{"revoke without reason", []string{"request", "revoke", "--config", cfg, testID}, "--reason is required"},
		{"list bad state", []string{"request", "list", "--config", cfg, "--state", "done"}, `--state "done": want one of pending`},
		{"list bad deployment", []string{"request", "list", "--config", cfg, "--deployment", "x"}, "want TENANT/NAME"},
		{"unknown subcommand", []string{"request", "renew"}, "unknown command 'request renew'"},
		{"query no deployment", []string{"query", "--config", cfg, "SELECT 1"}, "--deployment is required"},
		{"query no SQL", []string{"query", "--config", cfg, "--deployment", "acme/prod"}, "want the SQL as exactly one argument"},
		{"query format and output", []string{"query", "--config", cfg, "--deployment", "acme/prod", "--output", "json", "--format", "CSV", "SELECT 1"}, "not both"},
		{"query unknown format", []string{"query", "--config", cfg, "--deployment", "acme/prod", "--format", "Parquet", "SELECT 1"}, `--format "Parquet"`},
		{"query bad output", []string{"query", "--config", cfg, "--deployment", "acme/prod", "--output", "xml", "SELECT 1"}, "want one of table, json, csv"},
		{"prom step without range", []string{"prom", "--config", cfg, "--deployment", "acme/prod", "--step", "1m", "up"}, "--step needs --range"},
		{"prom too many points", []string{"prom", "--config", cfg, "--deployment", "acme/prod", "--range", "24h", "--step", "1s", "up"}, "give a larger --step"},
		{"prom bad time", []string{"prom", "--config", cfg, "--deployment", "acme/prod", "--time", "yesterday", "up"}, `--time "yesterday"`},
		{"proxy any address", []string{"proxy", "clickhouse", "--config", cfg, "--deployment", "acme/prod", "--listen", "0.0.0.0:8123"}, "loopback address only"},
		{"proxy no host", []string{"proxy", "prometheus", "--config", cfg, "--deployment", "acme/prod", "--listen", ":9090"}, "loopback address only"},
		{"proxy LAN address", []string{"proxy", "clickhouse", "--config", cfg, "--deployment", "acme/prod", "--listen", "192.168.1.10:8123"}, "loopback address only"},
		{"proxy no port", []string{"proxy", "clickhouse", "--config", cfg, "--deployment", "acme/prod", "--listen", "127.0.0.1"}, "want 127.0.0.1:PORT"},
		{"proxy unknown service", []string{"proxy", "postgres"}, "unknown command 'proxy postgres': want clickhouse or prometheus"},
		{"set nothing", []string{"deployment", "set", "--config", cfg, "acme/prod"}, "nothing to change"},
		{"set bad label", []string{"deployment", "set", "--config", cfg, "acme/prod", "--label", "Env=prod"}, `--label "Env=prod": want KEY=VALUE`},
		{"set approval mode removed", []string{"deployment", "set", "--config", cfg, "acme/prod", "--approval-mode", "auto_prometheus"}, "was removed: every request needs the customer's approval, unless the customer's approvers sign a standing permit for it ('broker permit create')"},
		{"set approval mode removed, customer too", []string{"deployment", "set", "--config", cfg, "acme/prod", "--approval-mode", "customer", "--label", "env=prod"}, "--approval-mode was removed"},
		{"set bad ref", []string{"deployment", "set", "--config", cfg, "prod", "--clear-labels"}, "want TENANT/NAME"},
		{"policy no input", []string{"policy", "eval"}, "--input FILE is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Run(context.Background(), tt.args, &bytes.Buffer{}, &bytes.Buffer{})
			var ue *cli.UsageError
			if !errors.As(err, &ue) || cli.ExitCode(err) != 2 || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Run(%q) = %v, want a usage error containing %q", tt.args, err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("Run(%q) error spans lines: %q", tt.args, err)
			}
		})
	}
}

func TestCreateFlagsValid(t *testing.T) {
	f := createFlags{Deployment: "acme/prod", Scope: "clickhouse:system, prometheus:read", Duration: "90m", Reason: "  disk full  ", Ticket: "acme/incidents#42", BreakGlass: true}
	r, err := f.request()
	if err != nil {
		t.Fatal(err)
	}
	want := brokerapi.CreateAccessRequest{Deployment: "acme/prod", Scopes: []string{"clickhouse:system", "prometheus:read"}, Duration: "90m", Reason: "disk full", Ticket: "acme/incidents#42", BreakGlass: true}
	if fmt.Sprint(r) != fmt.Sprint(want) {
		t.Errorf("request() = %+v, want %+v", r, want)
	}
}

// fakeRequests is a broker answering the request API; its long polls
// block until the test sends the next state.
type fakeRequests struct {
	created brokerapi.CreateAccessRequest
	polls   chan int64                   // the version each long poll names
	answers chan brokerapi.AccessRequest // what it answers
	mu      sync.Mutex
	actions []string
}

func newFakeRequests(t *testing.T) (*fakeRequests, *httptest.Server) {
	f := &fakeRequests{polls: make(chan int64), answers: make(chan brokerapi.AccessRequest)}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/requests", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer t" {
			writeAPIError(w, http.StatusUnauthorized, "unauthenticated", "no token")
			return
		}
		json.NewDecoder(r.Body).Decode(&f.created)
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(pendingRequest(1, "an approval from an approver of tenant acme"))
	})
	mux.HandleFunc("GET /api/v1/requests/{id}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("id") != testID || r.URL.Query().Get("wait") == "" {
			writeAPIError(w, http.StatusBadRequest, "bad", "want a long poll of "+testID)
			return
		}
		var v int64
		fmt.Sscan(r.URL.Query().Get("version"), &v)
		select {
		case f.polls <- v:
		case <-r.Context().Done():
			return
		}
		select {
		case a := <-f.answers:
			json.NewEncoder(w).Encode(a)
		case <-r.Context().Done():
		}
	})
	mux.HandleFunc("POST /api/v1/requests/{id}/{action}", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.actions = append(f.actions, r.PathValue("action"))
		f.mu.Unlock()
		writeAPIError(w, http.StatusConflict, "unexpected", "the test did not expect "+r.PathValue("action"))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return f, srv
}

func pendingRequest(version int64, waiting ...string) brokerapi.AccessRequest {
	return brokerapi.AccessRequest{
		ID: testID, Deployment: "acme/prod", Tenant: "acme", Requester: "engineer@vendor.test",
		Scopes: []string{"clickhouse:system"}, Duration: "30m0s", Reason: "disk full", State: brokerapi.StatePending,
		Waiting: waiting, CreatedAt: time.Now(), Version: version,
	}
}

// TestCreateWait: --wait follows the request through a review to its
// grant, one status line per change, and prints what to run next.
func TestCreateWait(t *testing.T) {
	f, srv := newFakeRequests(t)
	cfg := testConfig(t, srv.URL)
	var stdout, stderr syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- Run(context.Background(), []string{"request", "create", "--config", cfg, "--deployment", "acme/prod",
			"--scope", "clickhouse:system", "--duration", "30m", "--reason", "disk full", "--ticket", "acme/incidents#42", "--wait"}, &stdout, &stderr)
	}()
	if v := <-f.polls; v != 1 {
		t.Errorf("first long poll names version %d, want 1", v)
	}
	f.answers <- pendingRequest(2, "an approval from a vendor reviewer or admin")
	if v := <-f.polls; v != 2 {
		t.Errorf("second long poll names version %d, want 2", v)
	}
	active := pendingRequest(3)
	active.State, active.Waiting = brokerapi.StateActive, nil
	active.Grant = &brokerapi.Grant{ID: "g-123", Scopes: []string{"clickhouse:system"}, NotBefore: time.Now(), Expiry: time.Now().Add(30 * time.Minute)}
	f.answers <- active
	if err := <-done; err != nil {
		t.Fatalf("request create --wait: %v\nstderr:\n%s", err, stderr.String())
	}
	if f.created.Ticket != "acme/incidents#42" || f.created.Duration != "30m" || f.created.Reason != "disk full" {
		t.Errorf("the broker got %+v", f.created)
	}
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	wantLines := []string{"pending: waiting for an approval from an approver of tenant acme", "pending: waiting for an approval from a vendor reviewer", "active"}
	if len(lines) != len(wantLines) {
		t.Fatalf("status lines = %q, want one per state change (%d)", lines, len(wantLines))
	}
	for i, w := range wantLines {
		if !strings.Contains(lines[i], w) || !strings.Contains(lines[i], testID[:8]) {
			t.Errorf("status line %d = %q, want it to say %q", i, lines[i], w)
		}
	}
	for _, w := range []string{"Access granted to acme/prod", "g-123", `broker query --deployment acme/prod "SELECT`, "broker proxy clickhouse --deployment acme/prod"} {
		if !strings.Contains(stdout.String(), w) {
			t.Errorf("stdout lacks %q:\n%s", w, stdout.String())
		}
	}
	if strings.Contains(stdout.String(), "broker prom") {
		t.Errorf("stdout suggests prom without the scope:\n%s", stdout.String())
	}
}

// TestCreateWaitDenied: a denial ends the wait with exit 1 and the
// reviewer's reason.
func TestCreateWaitDenied(t *testing.T) {
	f, srv := newFakeRequests(t)
	cfg := testConfig(t, srv.URL)
	done := make(chan error, 1)
	go func() {
		done <- Run(context.Background(), []string{"request", "create", "--config", cfg, "--deployment", "acme/prod",
			"--scope", "clickhouse:system", "--duration", "30m", "--reason", "disk full", "--wait"}, &syncBuffer{}, &syncBuffer{})
	}()
	<-f.polls
	denied := pendingRequest(2)
	denied.State, denied.Waiting = brokerapi.StateDenied, nil
	denied.Reviews = []brokerapi.Review{{Reviewer: "approver@acme.test", Tenant: "acme", Role: "approver", Comment: "not during\nthe freeze"}}
	f.answers <- denied
	err := <-done
	if err == nil || cli.ExitCode(err) != 1 || err.Error() != "request "+testID+" denied by approver@acme.test: not during the freeze" {
		t.Errorf("denied wait = %v (exit %d), want exit 1 naming the reviewer and reason on one line", err, cli.ExitCode(err))
	}
}

// TestCreateWaitInterrupted: Ctrl-C stops waiting, leaves the request
// alone and says so.
func TestCreateWaitInterrupted(t *testing.T) {
	f, srv := newFakeRequests(t)
	cfg := testConfig(t, srv.URL)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, []string{"request", "create", "--config", cfg, "--deployment", "acme/prod",
			"--scope", "clickhouse:system", "--duration", "30m", "--reason", "disk full", "--wait"}, &syncBuffer{}, &syncBuffer{})
	}()
	<-f.polls // the long poll is in flight
	cancel()
	err := <-done
	if err == nil || !strings.Contains(err.Error(), "stopped waiting") || !strings.Contains(err.Error(), "was not cancelled") {
		t.Errorf("interrupted wait = %v, want it to say it stopped waiting and did not cancel", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.actions) > 0 {
		t.Errorf("interrupted wait called %v on the request", f.actions)
	}
}

// TestDeploymentSet: settings are read, changed as the flags say, and
// written back whole, less the customer's windows (which the broker keeps).
func TestDeploymentSet(t *testing.T) {
	freeze := brokerapi.Window{Start: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), End: time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)}
	var got brokerapi.DeploymentSettings
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/deployments/acme/prod", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(brokerapi.Deployment{Tenant: "acme", Name: "prod", Settings: brokerapi.DeploymentSettings{
			Labels: map[string]string{"env": "prod", "team": "db"}, FreezeWindows: []brokerapi.Window{freeze},
			MaintenanceWindows: []brokerapi.Window{freeze},
		}})
	})
	mux.HandleFunc("PUT /api/v1/deployments/acme/prod/settings", func(w http.ResponseWriter, r *http.Request) {
		json.NewDecoder(r.Body).Decode(&got)
		json.NewEncoder(w).Encode(brokerapi.Deployment{Tenant: "acme", Name: "prod", Settings: got})
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	var out bytes.Buffer
	err := Run(context.Background(), []string{"deployment", "set", "acme/prod", "--config", testConfig(t, srv.URL),
		"--label", "team=", "--label", "tier=gold"}, &out, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if got.ApprovalMode != "" || fmt.Sprint(got.Labels) != "map[env:prod tier:gold]" ||
		got.FreezeWindows != nil || got.MaintenanceWindows != nil {
		t.Errorf("PUT settings = %+v, want the new labels, no approval mode and no windows", got)
	}
	if !strings.Contains(out.String(), "tier=gold") {
		t.Errorf("output lacks the new settings:\n%s", out.String())
	}
}

// TestPolicyEval evaluates the embedded policy on an input file, and
// refuses an input with a misspelt field.
func TestPolicyEval(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in.json")
	os.WriteFile(in, []byte(`{"requester": {"subject": "e", "email": "engineer@vendor.test", "roles": ["engineer"]},
		"deployment": {"id": "d", "tenant": "acme", "name": "prod"},
		"scopes": ["clickhouse:system"], "duration_seconds": 1800, "action": "access"}`), 0o600)
	var out bytes.Buffer
	if err := Run(context.Background(), []string{"policy", "eval", "--input", in}, &out, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"Decision:", "Reasons:", "Policy hash:"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("policy eval output lacks %q:\n%s", w, out.String())
		}
	}
	out.Reset()
	if err := Run(context.Background(), []string{"policy", "eval", "--input", in, "--output", "json"}, &out, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	var d map[string]any
	if err := json.Unmarshal(out.Bytes(), &d); err != nil || d["policy_hash"] == "" {
		t.Errorf("policy eval --output json = %s (%v)", out.String(), err)
	}

	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"scopes": [], "durations": 5}`), 0o600)
	err := Run(context.Background(), []string{"policy", "eval", "--input", bad}, &bytes.Buffer{}, &bytes.Buffer{})
	if cli.ExitCode(err) != 2 || !strings.Contains(err.Error(), `unknown field "durations"`) {
		t.Errorf("policy eval of an input with an unknown field = %v, want a usage error naming it", err)
	}
}

func TestPrintRequests(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	r := pendingRequest(1)
	r.CreatedAt = now.Add(-5 * time.Minute)
	a := pendingRequest(4)
	a.State, a.CreatedAt = brokerapi.StateActive, now.Add(-time.Hour)
	a.Grant = &brokerapi.Grant{ID: "g", Expiry: now.Add(20 * time.Minute)}
	var out bytes.Buffer
	printRequests(&out, []brokerapi.AccessRequest{r, a}, now)
	want := "ID                                    DEPLOYMENT  REQUESTER             SCOPES             DURATION  STATE    AGE/EXPIRES\n" +
		testID + "  acme/prod   engineer@vendor.test  clickhouse:system  30m0s     pending  5m0s ago\n" +
		testID + "  acme/prod   engineer@vendor.test  clickhouse:system  30m0s     active   expires in 20m0s\n"
	if out.String() != want {
		t.Errorf("printRequests =\n%s\nwant\n%s", out.String(), want)
	}
}

// TestApprovePlanDigest: 'request approve --plan-digest' sends the digest
// the approver was shown, which the broker holds the approval to.
func TestApprovePlanDigest(t *testing.T) {
	var got []brokerapi.ReviewBody
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/v1/whoami" {
			json.NewEncoder(w).Encode(brokerapi.Whoami{Subject: "reviewer@vendor.test", Roles: []string{"reviewer"}})
			return
		}
		var b brokerapi.ReviewBody
		json.NewDecoder(r.Body).Decode(&b)
		got = append(got, b)
		json.NewEncoder(w).Encode(brokerapi.AccessRequest{ID: testID, State: brokerapi.StateActive})
	}))
	defer srv.Close()
	cfg := testConfig(t, srv.URL)
	for _, args := range [][]string{
		{"request", "approve", "--config", cfg, "--plan-digest", "abc123", testID},
		{"request", "approve", "--config", cfg, testID},
	} {
		if err := Run(context.Background(), args, io.Discard, io.Discard); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
	}
	if len(got) != 2 || got[0].PlanDigest != "abc123" || got[1].PlanDigest != "" {
		t.Errorf("approve bodies = %+v, want the digest in the first only", got)
	}
}

// TestShowNetworkRequest: 'request show' of a network change shows the
// approver the change: what was asked (peer VPC, account, route tables,
// outside the windows), and the plan they approve (digest, both VPCs,
// routes, security-group rules); a request without a plan says not to
// approve it.
func TestShowNetworkRequest(t *testing.T) {
	r := pendingRequest(2)
	r.Scopes = []string{names.ScopePeering}
	r.Network = &brokerapi.PeeringSpec{Kind: "peering", AccountID: "222233334444", Region: "eu-west-1", VPCID: "vpc-0peer",
		RoleARN: "arn:aws:iam::222233334444:role/TetherNetwork", RouteTableIDs: []string{"rtb-0peer"}, OutsideWindow: true}
	r.NetworkPlan = &brokerapi.ApprovedNetworkPlan{
		Digest: "sha256:0123abcd", PlannedAt: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC),
		Intent: brokerapi.NetworkIntent{
			Kind: "peering",
			BYOC: brokerapi.NetworkIntentSide{Account: "111122223333", Region: "eu-west-1", VPC: "vpc-0byoc", CIDRs: []string{"10.0.0.0/16"}, RouteTables: []string{"rtb-0byoc"}},
			Peer: brokerapi.NetworkIntentSide{Account: "222233334444", Region: "eu-west-1", VPC: "vpc-0peer", CIDRs: []string{"10.9.0.0/16"}, RouteTables: []string{"rtb-0peer"}},
			Routes: []brokerapi.NetworkRoute{
				{Account: "111122223333", RouteTable: "rtb-0byoc", Destination: "10.9.0.0/16"},
				{Account: "222233334444", RouteTable: "rtb-0peer", Destination: "10.0.0.0/16"},
			},
			SecurityGroup: "sg-0lb",
			Rules:         []brokerapi.NetworkRuleEntry{{CIDR: "10.9.0.0/16", Port: 8123}},
		},
	}
	var out bytes.Buffer
	printRequest(&out, r)
	got := out.String()
	for _, want := range []string{
		"Network change:", "peering with VPC vpc-0peer in account 222233334444, eu-west-1, role arn:aws:iam::222233334444:role/TetherNetwork",
		"peer route tables:", "rtb-0peer", "outside the deployment's maintenance windows",
		"Network plan:", "sha256:0123abcd", "peer:", "VPC vpc-0peer (10.9.0.0/16) in account 222233334444",
		"BYOC route tables:", "rtb-0byoc",
		"10.9.0.0/16 in rtb-0byoc (account 111122223333)", "10.0.0.0/16 in rtb-0peer (account 222233334444)",
		"tcp/8123 from 10.9.0.0/16 on sg-0lb",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("request show lacks %q:\n%s", want, got)
		}
	}
	r.NetworkPlan = nil
	out.Reset()
	printRequest(&out, r)
	if !strings.Contains(out.String(), "none stored") || !strings.Contains(out.String(), "do not approve it") {
		t.Errorf("request show of a network request without a plan does not say so:\n%s", out.String())
	}
}
