package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/config"
)

// TestLoginTenantIsolation is the identity issue's "done when", through the
// binaries: on a dev broker, 'broker login --dev-user' as each tenant's
// approver, 'whoami' shows tenant and role, and 'deployment list' shows
// only that tenant's deployments; logout removes the tokens.
func TestLoginTenantIsolation(t *testing.T) {
	b := startBroker(t)
	b.createDeployment(t, "acme", "prod")
	b.createDeployment(t, "acme", "staging")
	b.createDeployment(t, "globex", "prod")

	// Each user gets their own CLI config, made from the dev broker's.
	var dev config.CLI
	if err := config.Load(b.cliJSON, &dev); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		user, tenant, role string
		want               []string
	}{
		{"approver@acme.test", "acme", "approver", []string{"acme/prod", "acme/staging"}},
		{"approver@globex.test", "globex", "approver", []string{"globex/prod"}},
		{"engineer@vendor.test", "", "engineer", []string{"acme/prod", "acme/staging", "globex/prod"}},
	} {
		t.Run(tt.user, func(t *testing.T) {
			cfg := filepath.Join(t.TempDir(), "cli.json")
			env := []string{"TETHER_CONFIG=" + cfg}
			out, errOut, code := runBin(t, env, "broker", "login", "--api-url", dev.APIURL, "--dev-user", tt.user)
			if code != 0 {
				t.Fatalf("broker login --dev-user %s: exit %d: %s", tt.user, code, errOut)
			}
			if !strings.Contains(out, "Logged in as "+tt.user) {
				t.Errorf("login printed %q, want it to name %s", out, tt.user)
			}
			if fi, err := os.Stat(cfg); err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("CLI config after login: %v, %v; want mode 0600", fi.Mode(), err)
			}

			out, errOut, code = runBin(t, env, "broker", "whoami")
			if code != 0 {
				t.Fatalf("whoami: %s", errOut)
			}
			wantTenant := tt.tenant
			if wantTenant == "" {
				wantTenant = "-"
			}
			for _, want := range []string{"Email:", tt.user, "Tenant:", wantTenant, "Roles:", tt.role} {
				if !strings.Contains(out, want) {
					t.Errorf("whoami = %q, want it to contain %q", out, want)
				}
			}
			out, errOut, code = runBin(t, env, "broker", "whoami", "--output", "json")
			var w brokerapi.Whoami
			if code != 0 || json.Unmarshal([]byte(out), &w) != nil || w.Tenant != tt.tenant || strings.Join(w.Roles, ",") != tt.role {
				t.Errorf("whoami --output json = %s (%s), want tenant %q role %s", out, errOut, tt.tenant, tt.role)
			}

			out, errOut, code = runBin(t, env, "broker", "deployment", "list", "--output", "json")
			if code != 0 {
				t.Fatalf("deployment list: %s", errOut)
			}
			var list brokerapi.ListDeploymentsResponse
			if err := json.Unmarshal([]byte(out), &list); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, d := range list.Deployments {
				got = append(got, d.Tenant+"/"+d.Name)
			}
			if strings.Join(got, " ") != strings.Join(tt.want, " ") {
				t.Errorf("deployment list as %s = %q, want %q", tt.user, got, tt.want)
			}

			if tt.tenant != "" {
				other := "globex/prod"
				if tt.tenant == "globex" {
					other = "acme/prod"
				}
				_, errOut, code = runBin(t, env, "broker", "deployment", "show", other)
				if code == 0 || !strings.Contains(errOut, "may not act on tenant") {
					t.Errorf("deployment show %s as %s: exit %d %q, want a tenant refusal", other, tt.user, code, errOut)
				}
			}

			out, _, code = runBin(t, env, "broker", "logout")
			if code != 0 || !strings.Contains(out, "Logged out "+tt.user) {
				t.Errorf("logout = %d %q", code, out)
			}
			raw, _ := os.ReadFile(cfg)
			if strings.Contains(string(raw), "id_token") || strings.Contains(string(raw), "refresh_token") {
				t.Errorf("CLI config after logout still holds tokens: %s", raw)
			}
			if _, errOut, code := runBin(t, env, "broker", "whoami"); code != 2 || !strings.Contains(errOut, "not logged in") {
				t.Errorf("whoami after logout: exit %d %q, want 'not logged in'", code, errOut)
			}
		})
	}

	// The dev broker's own cli.json: a login there takes precedence over
	// the bootstrap token, and logout falls back to it.
	if _, errOut, code := b.cli(t, "login", "--dev-user", "reviewer@vendor.test"); code != 0 {
		t.Fatalf("login into the dev cli.json: %s", errOut)
	}
	if out, _, _ := b.cli(t, "whoami"); !strings.Contains(out, "reviewer@vendor.test") {
		t.Errorf("whoami after login = %q, want reviewer@vendor.test", out)
	}
	if _, errOut, code := b.cli(t, "deployment", "create", "--tenant", "acme", "--name", "nope"); code == 0 || !strings.Contains(errOut, "needs the role admin") {
		t.Errorf("deployment create as reviewer: exit %d %q, want a role refusal", code, errOut)
	}
	b.cli(t, "logout")
	if out, _, _ := b.cli(t, "whoami"); !strings.Contains(out, "admin:bootstrap") {
		t.Errorf("whoami after logout from the dev cli.json = %q, want the bootstrap admin", out)
	}
}
