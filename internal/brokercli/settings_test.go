package brokercli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/brokertest"
	"github.com/tetherhq/tether/internal/cli"
	"github.com/tetherhq/tether/internal/devbroker"
)

// TestWindowsUsageErrors: the window commands refuse what cannot be meant
// before they call the broker, and 'deployment set' points to them.
func TestWindowsUsageErrors(t *testing.T) {
	cfg := testConfig(t, "http://127.0.0.1:1")
	past := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"add without end", []string{"deployment", "freeze", "add", "--config", cfg, "acme/prod", "--reason", "r"}, "give --end TIME or --duration D"},
		{"add end and duration", []string{"deployment", "freeze", "add", "--config", cfg, "acme/prod", "--reason", "r", "--end", "2030-01-01T00:00:00Z", "--duration", "1h"}, "not both"},
		{"add bad start", []string{"deployment", "maintenance", "add", "--config", cfg, "acme/prod", "--start", "2026-12-20", "--duration", "1h"}, `--start "2026-12-20": want an RFC 3339 time`},
		{"add backwards", []string{"deployment", "maintenance", "add", "--config", cfg, "acme/prod", "--start", "2030-01-05T00:00:00Z", "--end", "2030-01-01T00:00:00Z"}, "before it starts"},
		{"add ended", []string{"deployment", "maintenance", "add", "--config", cfg, "acme/prod", "--start", "2020-01-01T00:00:00Z", "--end", past}, "ended already"},
		{"freeze without reason", []string{"deployment", "freeze", "add", "--config", cfg, "acme/prod", "--duration", "1h"}, "--reason is required"},
		{"remove nothing", []string{"deployment", "freeze", "remove", "--config", cfg, "acme/prod"}, "give the IDs of the windows to remove"},
		{"remove IDs and all", []string{"deployment", "freeze", "remove", "--config", cfg, "acme/prod", "--all", "0a1b2c3d"}, "not both"},
		{"list bad ref", []string{"deployment", "maintenance", "list", "--config", cfg, "prod"}, "want TENANT/NAME"},
		{"set --freeze moved", []string{"deployment", "set", "--config", cfg, "acme/prod", "--freeze", "2026-12-20T00:00:00Z/2027-01-05T00:00:00Z"}, "freeze windows are the customer's to set: an approver of tenant acme runs 'broker deployment freeze add acme/prod"},
		{"set --clear-maintenance moved", []string{"deployment", "set", "--config", cfg, "acme/prod", "--clear-maintenance"}, "maintenance windows are the customer's"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Run(context.Background(), tt.args, &bytes.Buffer{}, &bytes.Buffer{})
			var ue *cli.UsageError
			if !errors.As(err, &ue) || cli.ExitCode(err) != 2 || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Run(%q) = %v, want a usage error containing %q", tt.args, err, tt.want)
			}
		})
	}
}

// TestCustomerWindowsAgainstBroker runs the window commands against a dev
// broker: an approver of acme adds a freeze and a maintenance window one
// at a time (each keeps the other), lists and removes them by ID; a vendor
// admin lists them but is refused a change with a message saying whose
// they are; an approver of globex is refused acme's.
func TestCustomerWindowsAgainstBroker(t *testing.T) {
	b := brokertest.Start(t, nil)
	ctx := context.Background()
	if _, err := b.Client.CreateDeployment(ctx, brokerapi.CreateDeploymentRequest{Tenant: "acme", Name: "prod"}); err != nil {
		t.Fatal(err)
	}
	configOf := func(email string) string {
		t.Helper()
		tok, err := b.DevIdP().Token(brokertest.IssuerOf(email), email, devbroker.ClientID, "")
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "cli.json")
		if err := os.WriteFile(path, fmt.Appendf(nil, `{"api_url": %q, "token": %q}`, b.APIURL(), tok), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	acme, admin, globex := configOf("approver@acme.test"), configOf("admin@vendor.test"), configOf("approver@globex.test")
	run := func(cfg string, args ...string) (string, error) {
		var out bytes.Buffer
		err := Run(ctx, append(args, "--config", cfg), &out, &bytes.Buffer{})
		return out.String(), err
	}
	list := func(kind string) []map[string]any {
		t.Helper()
		out, err := run(admin, "deployment", kind, "list", "acme/prod", "-o", "json")
		if err != nil {
			t.Fatalf("admin lists %s windows: %v", kind, err)
		}
		var rows []map[string]any
		if err := json.Unmarshal([]byte(out), &rows); err != nil {
			t.Fatalf("list -o json = %s: %v", out, err)
		}
		return rows
	}

	out, err := run(acme, "deployment", "freeze", "add", "acme/prod", "--duration", "2h", "--reason", "quarter end")
	if err != nil || !strings.Contains(out, "Added freeze window") || !strings.Contains(out, "in effect") || !strings.Contains(out, "quarter end") {
		t.Fatalf("acme adds a freeze: %v\n%s", err, out)
	}
	if _, err := run(acme, "deployment", "maintenance", "add", "acme/prod", "--start", "2031-01-01T00:00:00Z", "--duration", "4h"); err != nil {
		t.Fatalf("acme adds a maintenance window: %v", err)
	}
	if _, err := run(acme, "deployment", "freeze", "add", "acme/prod", "--start", "2031-02-01T00:00:00Z", "--end", "2031-02-03T00:00:00Z", "--reason", "migration"); err != nil {
		t.Fatalf("acme adds a second freeze: %v", err)
	}
	freezes, maint := list("freeze"), list("maintenance")
	if len(freezes) != 2 || len(maint) != 1 || freezes[0]["reason"] != "quarter end" || freezes[1]["state"] != "upcoming" {
		t.Fatalf("after three additions: freezes %v, maintenance %v; want two freezes and one maintenance window", freezes, maint)
	}

	// The vendor's admin reads them but cannot change them.
	_, err = run(admin, "deployment", "freeze", "remove", "acme/prod", "--all")
	if err == nil || !strings.Contains(err.Error(), "customer's to set") {
		t.Errorf("admin removes acme's freezes: %v, want a refusal saying they are the customer's", err)
	}
	_, err = run(admin, "deployment", "set", "acme/prod", "--label", "env=prod")
	if err != nil {
		t.Errorf("admin sets a label: %v", err)
	}
	_, err = run(globex, "deployment", "freeze", "add", "acme/prod", "--duration", "1h", "--reason", "not yours")
	if err == nil || !strings.Contains(err.Error(), "may not act on tenant acme") {
		t.Errorf("globex adds a freeze to acme: %v, want refused", err)
	}
	if n := len(list("freeze")); n != 2 {
		t.Errorf("after the refused attempts acme/prod has %d freezes, want 2", n)
	}

	// Removal by ID keeps the others; an unknown ID changes nothing.
	id, _ := freezes[0]["id"].(string)
	_, err = run(acme, "deployment", "freeze", "remove", "acme/prod", "ffffffff")
	if err == nil || !strings.Contains(err.Error(), "has no freeze window ffffffff") {
		t.Errorf("remove an unknown ID: %v", err)
	}
	if out, err := run(acme, "deployment", "freeze", "remove", "acme/prod", id); err != nil || !strings.Contains(out, "Removed 1 freeze window(s)") || strings.Contains(out, "quarter end") {
		t.Errorf("acme removes the quarter-end freeze: %v\n%s", err, out)
	}
	if freezes, maint := list("freeze"), list("maintenance"); len(freezes) != 1 || freezes[0]["reason"] != "migration" || len(maint) != 1 {
		t.Errorf("after removing one freeze: freezes %v, maintenance %v", freezes, maint)
	}
}
