package identity

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/names"
)

func validConfig() Config {
	return Config{Issuers: []IssuerConfig{
		{Name: "vendor", IssuerURL: "https://login.vendor.example", ClientID: "broker",
			RoleMap: map[string]string{"eng": names.RoleEngineer, "rev": names.RoleReviewer, "ops": names.RoleAdmin}},
		{Name: "acme", IssuerURL: "https://acme.okta.example/oauth2/default", ClientID: "broker-acme", Tenant: "acme",
			RoleMap: map[string]string{"approvers": names.RoleApprover}},
	}}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		edit    func(c *Config)
		wantErr string // substring; empty means valid
	}{
		{"valid", func(c *Config) {}, ""},
		{"loopback http", func(c *Config) { c.Issuers[0].IssuerURL = "http://127.0.0.1:5556/dex" }, ""},
		{"localhost http", func(c *Config) { c.Issuers[0].IssuerURL = "http://localhost:5556" }, ""},
		{"no issuers", func(c *Config) { c.Issuers = nil }, "no issuers"},
		{"empty name", func(c *Config) { c.Issuers[1].Name = "" }, "name is empty"},
		{"duplicate name", func(c *Config) { c.Issuers[1].Name = "vendor" }, "name is already used by issuers[0]"},
		{"duplicate url", func(c *Config) { c.Issuers[1].IssuerURL = c.Issuers[0].IssuerURL }, "is already used by issuers[0]"},
		{"empty url", func(c *Config) { c.Issuers[0].IssuerURL = "" }, "issuer_url: empty"},
		{"http url", func(c *Config) { c.Issuers[0].IssuerURL = "http://login.vendor.example" }, "use https"},
		{"http lookalike host", func(c *Config) { c.Issuers[0].IssuerURL = "http://localhost.evil.example" }, "use https"},
		{"other scheme", func(c *Config) { c.Issuers[0].IssuerURL = "ftp://login.vendor.example" }, `scheme "ftp"`},
		{"no host", func(c *Config) { c.Issuers[0].IssuerURL = "https:///x" }, "no host"},
		{"query in url", func(c *Config) { c.Issuers[0].IssuerURL = "https://login.vendor.example?a=b" }, "query"},
		{"no client id", func(c *Config) { c.Issuers[0].ClientID = "" }, "client_id is empty"},
		{"empty audience", func(c *Config) { c.Issuers[0].Audiences = []string{""} }, "audiences[0] is empty"},
		{"empty role map", func(c *Config) { c.Issuers[0].RoleMap = nil }, "role_map is empty"},
		{"unknown role", func(c *Config) { c.Issuers[0].RoleMap["eng"] = "superuser" }, `unknown role`},
		{"empty group", func(c *Config) { c.Issuers[0].RoleMap[""] = names.RoleEngineer }, "empty group name"},
		{"approver on vendor", func(c *Config) { c.Issuers[0].RoleMap["x"] = names.RoleApprover }, "approver is a customer role"},
		{"engineer on customer", func(c *Config) { c.Issuers[1].RoleMap["x"] = names.RoleEngineer }, "engineer is a vendor role"},
		{"admin on customer", func(c *Config) { c.Issuers[1].RoleMap["x"] = names.RoleAdmin }, "admin is a vendor role"},
		{"no vendor issuer", func(c *Config) { c.Issuers = c.Issuers[1:] }, "no vendor issuer"},
		{"two vendor issuers", func(c *Config) {
			c.Issuers = append(c.Issuers, IssuerConfig{Name: "vendor2", IssuerURL: "https://b.example", ClientID: "x",
				RoleMap: map[string]string{"eng": names.RoleEngineer}})
		}, "2 vendor issuers"},
		{"admins only", func(c *Config) { c.Issuers[0].RoleMap = nil; c.Issuers[0].Admins = []string{"root"} }, ""},
		{"admins on customer", func(c *Config) { c.Issuers[1].Admins = []string{"x"} }, "only the vendor issuer may name admins"},
		{"empty admin", func(c *Config) { c.Issuers[0].Admins = []string{""} }, "admins[0] is empty"},
		{"github claim on customer", func(c *Config) { c.Issuers[1].GitHubLoginClaim = "gh" }, "github_login_claim"},
		{"spaced tenant", func(c *Config) { c.Issuers[1].Tenant = " acme" }, "surrounding spaces"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.edit(&c)
			err := c.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("Validate(%s) = %v, want nil", tt.name, err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("Validate(%s) = %v, want error containing %q", tt.name, err, tt.wantErr)
			}
			if _, nerr := New(context.Background(), c); (nerr == nil) != (err == nil) {
				t.Errorf("New(%s) = %v, want same outcome as Validate (%v)", tt.name, nerr, err)
			}
		})
	}
}

func TestConfigJSON(t *testing.T) {
	const in = `{"issuers":[
		{"name":"vendor","issuer_url":"https://login.vendor.example","client_id":"broker",
		 "audiences":["cli"],"groups_claim":"grp","role_map":{"eng":"engineer"}},
		{"name":"acme","issuer_url":"https://acme.example","client_id":"b","tenant":"acme",
		 "role_map":{"ok":"approver"}}]}`
	var c Config
	if err := json.Unmarshal([]byte(in), &c); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate(json) = %v, want nil", err)
	}
	if got := c.Issuers[0].groupsClaim(); got != "grp" {
		t.Errorf("groupsClaim(vendor) = %q, want %q", got, "grp")
	}
	if got := c.Issuers[1].groupsClaim(); got != DefaultGroupsClaim {
		t.Errorf("groupsClaim(acme) = %q, want %q", got, DefaultGroupsClaim)
	}
}

func TestWithClockSkew(t *testing.T) {
	f := newFixture(t)
	tok := f.vendor.token("v1", claims(f.vendor.URL, "tether-broker", "ada", map[string]any{
		"groups": []string{"eng"}, "exp": testNow.Add(-30 * time.Second).Unix(),
	}))
	tests := []struct {
		skew    time.Duration
		wantErr error
	}{
		{0, ErrInvalidToken},
		{20 * time.Second, ErrInvalidToken},
		{40 * time.Second, nil},
		{-time.Hour, ErrInvalidToken}, // clamped to 0
	}
	for _, tt := range tests {
		v, err := New(context.Background(), f.cfg, WithClock(func() time.Time { return testNow }), WithClockSkew(tt.skew))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.Verify(context.Background(), tok); !errors.Is(err, tt.wantErr) {
			t.Errorf("Verify(exp-30s, skew %v) = %v, want %v", tt.skew, err, tt.wantErr)
		}
	}
	// Skew is capped: a day-old token stays expired whatever is asked.
	old := f.vendor.token("v1", claims(f.vendor.URL, "tether-broker", "ada", map[string]any{
		"groups": []string{"eng"}, "exp": testNow.Add(-24 * time.Hour).Unix(),
	}))
	v, _ := New(context.Background(), f.cfg, WithClock(func() time.Time { return testNow }), WithClockSkew(48*time.Hour))
	if _, err := v.Verify(context.Background(), old); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("Verify(exp-24h, skew 48h) = %v, want %v", err, ErrInvalidToken)
	}
}
