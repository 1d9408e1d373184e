package brokercli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/brokerapi"
)

// TestAgentDelivered: verify counts the events agents delivered by the
// source the broker stamped, not by anything an agent wrote in details.
func TestAgentDelivered(t *testing.T) {
	at := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	evs := []audit.Event{
		{Version: 1, ID: "1", Time: at, Type: audit.GrantIssued, Outcome: audit.Success},
		{Version: 1, ID: "2", Time: at, Type: audit.QueryAllowed, Outcome: audit.Success, AgentID: "a1",
			Source: audit.Source{Kind: audit.SourceAgent, ReceivedAt: at}},
		{Version: 1, ID: "3", Time: at, Type: audit.AuthFailed, Outcome: audit.Failure, AgentID: "a1",
			Source: audit.Source{Kind: audit.SourceAgent, ReceivedAt: at}},
		{Version: 1, ID: "4", Time: at, Type: audit.AuthFailed, Outcome: audit.Failure, AgentID: "a2",
			Details: map[string]any{"note": `"kind":"agent"`}},
	}
	var b strings.Builder
	for i, e := range evs {
		raw, _ := e.Marshal()
		fmt.Fprintf(&b, "{\"kind\":\"event\",\"index\":%d,\"leaf_hash\":\"%x\",\"event\":%s}\n", i, audit.LeafHash(raw), raw)
		if i == 1 {
			// An event line whose event is agent-delivered in words only.
			fmt.Fprintln(&b, `{"kind":"checkpoint","size":2,"note":"\"kind\":\"agent\""}`)
		}
	}
	path := filepath.Join(t.TempDir(), "export.jsonl")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := agentDelivered(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got["a1"] != 2 {
		t.Errorf("agentDelivered = %v, want map[a1:2]", got)
	}
	for e, want := range map[*audit.Event]string{&evs[0]: "broker", &evs[1]: "agent:a1", &evs[3]: "broker"} {
		if s := sourceOf(*e); s != want {
			t.Errorf("sourceOf(%s) = %q, want %q", e.ID, s, want)
		}
	}
}

// TestShowSessionTable: show-session's table shows each query's SQL and
// PromQL (on one line, cut short with a note) and the deployment as
// TENANT/NAME; --output json keeps the statement whole.
func TestShowSessionTable(t *testing.T) {
	const depID, grantID, reqID = "0190aaaa-0000-7000-8000-00000000000d", "0190bbbb-0000-7000-8000-00000000000b", "0190cccc-0000-7000-8000-00000000000c"
	long := "SELECT name, value\nFROM system.settings\nWHERE name LIKE 'max_%' AND changed = 1 ORDER BY name LIMIT 100 -- the end"
	at := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	evs := []audit.Event{
		{Type: audit.GrantIssued, Outcome: audit.Success},
		{Type: audit.QueryAllowed, Outcome: audit.Success, Details: map[string]any{"sql": "SELECT version()"}},
		{Type: audit.QueryDenied, Outcome: audit.Failure, Reason: "table default.secret is not allowed", Details: map[string]any{"sql": long}},
		{Type: audit.PromAllowed, Outcome: audit.Success, Details: map[string]any{"method": "GET", "endpoint": "/api/v1/query", "params": map[string]any{"query": []any{"rate(up[5m])"}}}},
		{Type: audit.PromDenied, Outcome: audit.Failure, Reason: "not allowed", Details: map[string]any{"method": "GET", "target": "/api/v1/admin/tsdb/snapshot"}},
	}
	var out brokerapi.AuditEvents
	for i, e := range evs {
		e.Version, e.ID, e.Time, e.Deployment, e.GrantID, e.RequestID = 1, fmt.Sprint(i), at.Add(time.Duration(i)*time.Second), depID, grantID, reqID
		e.Actor = audit.Actor{Subject: "engineer@vendor.test"}
		raw, err := e.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		out.Events = append(out.Events, brokerapi.AuditEvent{Index: uint64(i), Event: raw})
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/audit/events", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(out)
	})
	mux.HandleFunc("GET /api/v1/whoami", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(brokerapi.Whoami{Subject: "reviewer@vendor.test", Roles: []string{"reviewer"}})
	})
	mux.HandleFunc("GET /api/v1/deployments", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(brokerapi.ListDeploymentsResponse{Deployments: []brokerapi.Deployment{{ID: depID, Tenant: "acme", Name: "prod"}}})
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	cfg := testConfig(t, srv.URL)

	var table bytes.Buffer
	if err := Run(context.Background(), []string{"audit", "show-session", grantID, "--config", cfg}, &table, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	got := table.String()
	for _, want := range []string{
		"STATEMENT", "SELECT version()", "/api/v1/query rate(up[5m])", "/api/v1/admin/tsdb/snapshot",
		"SELECT name, value FROM system.settings WHERE name LIKE 'max_%' AND changed = 1…",
		"cut short at 80 characters",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("show-session table lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, depID) || strings.Count(got, "acme/prod") != len(evs) {
		t.Errorf("show-session table names the deployment by ID, want acme/prod on each of %d events:\n%s", len(evs), got)
	}

	var js bytes.Buffer
	if err := Run(context.Background(), []string{"audit", "show-session", grantID, "--config", cfg, "--output", "json"}, &js, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	var back brokerapi.AuditEvents
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	var e audit.Event
	if len(back.Events) != len(evs) || json.Unmarshal(back.Events[2].Event, &e) != nil || e.Details["sql"] != long {
		t.Errorf("show-session --output json does not hold the denied query whole:\n%s", js.String())
	}
}

// TestAuditSearchAsApprover: signed in as a customer's approver, search
// and show-session call their tenant's own audit routes (the vendor-wide
// route would refuse them); --tenant picks a tenant for vendor staff.
func TestAuditSearchAsApprover(t *testing.T) {
	var paths []string
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/whoami", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(brokerapi.Whoami{Subject: "approver@acme.test", Tenant: "acme", Roles: []string{"approver"}})
	})
	events := func(w http.ResponseWriter, r *http.Request) {
		paths = append(paths, r.URL.Path)
		raw, _ := audit.Event{Version: 1, ID: "1", Time: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC), Type: audit.GrantIssued,
			Outcome: audit.Success, RequestID: "r1", Actor: audit.Actor{Subject: "approver@acme.test", Tenant: "acme"}}.Marshal()
		json.NewEncoder(w).Encode(brokerapi.AuditEvents{Events: []brokerapi.AuditEvent{{Index: 3, Event: raw}}})
	}
	mux.HandleFunc("GET /api/v1/tenants/{tenant}/audit/events", events)
	mux.HandleFunc("GET /api/v1/audit/events", events)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	cfg := testConfig(t, srv.URL)
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"audit", "search"}, []string{"/api/v1/tenants/acme/audit/events"}},
		{[]string{"audit", "show-session", "r1"}, []string{"/api/v1/tenants/acme/audit/events", "/api/v1/tenants/acme/audit/events"}},
		{[]string{"audit", "search", "--tenant", "globex"}, []string{"/api/v1/tenants/globex/audit/events"}},
	} {
		paths = nil
		var stdout, stderr bytes.Buffer
		if err := Run(context.Background(), append(tc.args, "--config", cfg), &stdout, &stderr); err != nil {
			t.Fatalf("broker %s: %v\n%s", strings.Join(tc.args, " "), err, stderr.String())
		}
		if strings.Join(paths, " ") != strings.Join(tc.want, " ") {
			t.Errorf("broker %s called %v, want %v", strings.Join(tc.args, " "), paths, tc.want)
		}
	}
}
