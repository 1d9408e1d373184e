package ghub_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/ghub"
	"github.com/tetherhq/tether/internal/ghub/ghubtest"
)

func pemOf(t *testing.T, typ string, der []byte) string {
	t.Helper()
	return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
}

func TestConfigValidate(t *testing.T) {
	keyPEM, _ := ghubtest.NewAppKey(t)
	block, _ := pem.Decode([]byte(keyPEM))
	rsaKey, err := x509.ParsePKCS1PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(rsaKey)
	if err != nil {
		t.Fatal(err)
	}
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalPKCS8PrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	app := func(mod func(*ghub.AppConfig)) *ghub.AppConfig {
		a := &ghub.AppConfig{AppID: 42, InstallationID: 4242, PrivateKeyPEM: keyPEM}
		if mod != nil {
			mod(a)
		}
		return a
	}
	token := ghub.Config{Token: "ghp_abc", Org: "acme-corp"}
	with := func(mod func(*ghub.Config)) ghub.Config {
		c := token
		mod(&c)
		return c
	}

	tests := []struct {
		name string
		cfg  ghub.Config
		want []string // substrings of the error; nil means valid
	}{
		{"token", token, nil},
		{"app", ghub.Config{App: app(nil), Org: "acme-corp"}, nil},
		{"app pkcs8", ghub.Config{App: app(func(a *ghub.AppConfig) { a.PrivateKeyPEM = pemOf(t, "PRIVATE KEY", pkcs8) }), Org: "acme"}, nil},
		{"full", with(func(c *ghub.Config) {
			c.BaseURL = "https://ghe.example.com/api/v3/"
			c.Teams = []string{"oncall", "platform-eng", "sre_team"}
			c.CacheTTL = 5 * time.Minute
			c.Comment = true
		}), nil},
		{"loopback http", with(func(c *ghub.Config) { c.BaseURL = "http://127.0.0.1:8080/api/v3/" }), nil},
		{"localhost http", with(func(c *ghub.Config) { c.BaseURL = "http://localhost:8080/" }), nil},
		{"ipv6 loopback http", with(func(c *ghub.Config) { c.BaseURL = "http://[::1]:8080/" }), nil},

		{"no credentials", ghub.Config{Org: "acme"}, []string{"no credentials; set token"}},
		{"both credentials", with(func(c *ghub.Config) { c.App = app(nil) }), []string{"both token and app are set"}},
		{"token newline", with(func(c *ghub.Config) { c.Token = "ghp_abc\n" }), []string{"token has leading or trailing whitespace"}},
		{"token space", with(func(c *ghub.Config) { c.Token = "Bearer ghp_abc" }), []string{"token holds spaces"}},
		{"http", with(func(c *ghub.Config) { c.BaseURL = "http://ghe.example.com/api/v3/" }), []string{"base_url", "use https"}},
		{"ftp", with(func(c *ghub.Config) { c.BaseURL = "ftp://ghe.example.com/" }), []string{"base_url", `scheme "ftp"`}},
		{"no host", with(func(c *ghub.Config) { c.BaseURL = "/api/v3/" }), []string{"base_url", "no host"}},
		{"user info", with(func(c *ghub.Config) { c.BaseURL = "https://user:hunter2@ghe.example.com/" }), []string{"base_url", "user info"}},
		{"query", with(func(c *ghub.Config) { c.BaseURL = "https://ghe.example.com/?x=1" }), []string{"base_url", "query"}},
		{"no org", with(func(c *ghub.Config) { c.Org = "" }), []string{"org is empty"}},
		{"bad org", with(func(c *ghub.Config) { c.Org = "Acme Corp" }), []string{`org "Acme Corp" is not`}},
		{"team name not slug", with(func(c *ghub.Config) { c.Teams = []string{"Platform Eng"} }), []string{`teams[0] "Platform Eng" is not a team slug`}},
		{"empty team", with(func(c *ghub.Config) { c.Teams = []string{"oncall", ""} }), []string{"teams[1]"}},
		{"duplicate team", with(func(c *ghub.Config) { c.Teams = []string{"oncall", "sre", "oncall"} }), []string{`teams[2] "oncall" repeats teams[0]`}},
		{"too many teams", with(func(c *ghub.Config) {
			for i := range ghub.MaxTeams + 1 {
				c.Teams = append(c.Teams, fmt.Sprintf("t%d", i))
			}
		}), []string{"201 teams, over 200"}},
		{"negative ttl", with(func(c *ghub.Config) { c.CacheTTL = -time.Second }), []string{"cache_ttl is -1s"}},
		{"long ttl", with(func(c *ghub.Config) { c.CacheTTL = 6 * time.Minute }), []string{"cache_ttl is 6m0s, over 5m0s"}},
		{"app ids", ghub.Config{App: app(func(a *ghub.AppConfig) { a.AppID, a.InstallationID = 0, -1 }), Org: "acme"},
			[]string{"app.app_id is 0", "app.installation_id is -1"}},
		{"app no key", ghub.Config{App: app(func(a *ghub.AppConfig) { a.PrivateKeyPEM = "" }), Org: "acme"}, []string{"app.private_key_pem: empty"}},
		{"app not pem", ghub.Config{App: app(func(a *ghub.AppConfig) { a.PrivateKeyPEM = "MIIEowIBAAKCAQEA" }), Org: "acme"}, []string{"holds no PEM block"}},
		{"app garbage key", ghub.Config{App: app(func(a *ghub.AppConfig) { a.PrivateKeyPEM = pemOf(t, "RSA PRIVATE KEY", []byte("nope")) }), Org: "acme"},
			[]string{"RSA PRIVATE KEY block does not parse"}},
		{"app cert", ghub.Config{App: app(func(a *ghub.AppConfig) { a.PrivateKeyPEM = pemOf(t, "CERTIFICATE", []byte("x")) }), Org: "acme"},
			[]string{`holds a "CERTIFICATE" PEM block`}},
		{"app ec key", ghub.Config{App: app(func(a *ghub.AppConfig) { a.PrivateKeyPEM = pemOf(t, "PRIVATE KEY", ecDER) }), Org: "acme"},
			[]string{"GitHub App keys are RSA"}},
		{"app small key", ghub.Config{App: app(func(a *ghub.AppConfig) {
			a.PrivateKeyPEM = pemOf(t, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(small))
		}), Org: "acme"}, []string{"1024 bits, under 2048"}},
		{"everything wrong", ghub.Config{
			BaseURL:  "http://ghe.example.com/",
			Org:      "-acme",
			Teams:    []string{"A Team"},
			CacheTTL: time.Hour,
		}, []string{"base_url", "no credentials", "org", "teams[0]", "cache_ttl"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.want == nil {
				if err != nil {
					t.Errorf("Validate(%v) = %v, want nil", tt.cfg, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate(%v) = nil, want an error mentioning %q", tt.cfg, tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate(%v) = %v, want it to mention %q", tt.cfg, err, w)
				}
			}
			if n := strings.Count(err.Error(), "github config: "); n != len(tt.want) && tt.name == "everything wrong" {
				t.Errorf("Validate(%v) reported %d problems, want %d: %v", tt.cfg, n, len(tt.want), err)
			}
			for _, secret := range []string{"ghp_abc", "hunter2", "PRIVATE KEY-----", "MIIEowIBAAKCAQEA"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("Validate error %q quotes the secret %q", err, secret)
				}
			}
		})
	}
}

func TestConfigRedacts(t *testing.T) {
	keyPEM, _ := ghubtest.NewAppKey(t)
	cfgs := []ghub.Config{
		{Token: "ghp_supersecret", Org: "acme"},
		{App: &ghub.AppConfig{AppID: 1, InstallationID: 2, PrivateKeyPEM: keyPEM}, Org: "acme"},
	}
	for _, cfg := range cfgs {
		var logged bytes.Buffer
		slog.New(slog.NewTextHandler(&logged, nil)).Info("config", "github", cfg)
		outs := []string{fmt.Sprint(cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg), logged.String()}
		if cfg.App != nil {
			outs = append(outs, fmt.Sprint(cfg.App), fmt.Sprintf("%#v", *cfg.App))
		}
		for _, out := range outs {
			if strings.Contains(out, "supersecret") || strings.Contains(out, "PRIVATE KEY") {
				t.Errorf("formatted config %q holds a secret", out)
			}
			if !strings.Contains(out, "redacted") {
				t.Errorf("formatted config %q does not say what was redacted", out)
			}
		}
	}
}
