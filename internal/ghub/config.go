package ghub

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"
)

const (
	// DefaultCacheTTL is how long a GitHub response is served without
	// asking GitHub again when [Config.CacheTTL] is zero.
	DefaultCacheTTL = 30 * time.Second
	// MaxCacheTTL bounds [Config.CacheTTL]: a closed ticket or a removed
	// team member must stop counting within minutes.
	MaxCacheTTL = 5 * time.Minute
	// MaxTeams bounds how many teams are checked: the configured list, or
	// the first teams of the org when none are configured.
	MaxTeams = 200
	// minAppKeyBits is the smallest RSA key accepted for app JWTs.
	minAppKeyBits = 2048
)

// Config configures a [Client]. Set Org and exactly one of Token or App;
// every other field has a useful zero value.
type Config struct {
	// BaseURL is the GitHub Enterprise Server API base URL, such as
	// https://ghe.example.com/api/v3/ (go-github appends /api/v3/ when
	// missing). Empty means https://api.github.com/. It must be https,
	// except http on a loopback host for tests. Credentials are sent to
	// this origin only.
	BaseURL string `json:"base_url,omitempty"`
	// Token is a GitHub token (fine-grained or classic personal access
	// token, or an OAuth token), already resolved from its env:/file:
	// reference. It is never logged: [Config.String] redacts it.
	Token string `json:"token,omitempty"`
	// App authenticates as a GitHub App installation instead of Token.
	App *AppConfig `json:"app,omitempty"`
	// Org is the vendor's GitHub organization whose teams count.
	Org string `json:"org"`
	// Teams are the slugs of the Org teams whose membership is checked.
	// Empty means every team of the org, up to the first [MaxTeams].
	Teams []string `json:"teams,omitempty"`
	// CacheTTL is how long a GitHub response is reused without asking
	// GitHub; after it, the response is revalidated with its ETag. Zero
	// means [DefaultCacheTTL]; at most [MaxCacheTTL]. In JSON it is a
	// count of nanoseconds, as encoding/json encodes a time.Duration.
	CacheTTL time.Duration `json:"cache_ttl,omitempty"`
	// Comment enables [Client.Comment]; when false it does nothing.
	Comment bool `json:"comment,omitempty"`
}

// AppConfig authenticates as one installation of a GitHub App.
type AppConfig struct {
	// AppID is the app's numeric ID, from its settings page.
	AppID int64 `json:"app_id"`
	// InstallationID is the installation's numeric ID, from the URL of
	// the installation's settings page in the org.
	InstallationID int64 `json:"installation_id"`
	// PrivateKeyPEM is the app's RSA private key as GitHub generated it
	// (PKCS #1 or PKCS #8 PEM), already resolved from its env:/file:
	// reference. It is never logged: [AppConfig.String] redacts it.
	PrivateKeyPEM string `json:"private_key_pem,omitempty"`
}

func (c Config) cacheTTL() time.Duration {
	if c.CacheTTL == 0 {
		return DefaultCacheTTL
	}
	return c.CacheTTL
}

// String describes c for logs and errors with the token and private key
// redacted.
func (c Config) String() string {
	return fmt.Sprintf("github{base_url=%q auth=%s org=%q teams=%q cache_ttl=%s comment=%t}",
		c.BaseURL, c.authString(), c.Org, c.Teams, c.CacheTTL, c.Comment)
}

// GoString is [Config.String], so %#v redacts secrets too.
func (c Config) GoString() string { return c.String() }

// LogValue logs c with the token and private key redacted.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("base_url", c.BaseURL),
		slog.String("auth", c.authString()),
		slog.String("org", c.Org),
		slog.Any("teams", c.Teams),
		slog.Duration("cache_ttl", c.CacheTTL),
		slog.Bool("comment", c.Comment),
	)
}

func (c Config) authString() string {
	switch {
	case c.Token != "" && c.App != nil:
		return "token(redacted)+" + c.App.String()
	case c.Token != "":
		return "token(redacted)"
	case c.App != nil:
		return c.App.String()
	default:
		return "none"
	}
}

// String describes a with the private key redacted.
func (a AppConfig) String() string {
	key := "none"
	if a.PrivateKeyPEM != "" {
		key = "redacted"
	}
	return fmt.Sprintf("app{app_id=%d installation_id=%d private_key=%s}", a.AppID, a.InstallationID, key)
}

// GoString is [AppConfig.String], so %#v redacts the key too.
func (a AppConfig) GoString() string { return a.String() }

// Validate reports every problem in c, each naming the field and saying
// what to set, joined into one error; it returns nil if c is usable. It
// never quotes the token or the private key.
func (c Config) Validate() error {
	var errs []error
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("github config: "+format, args...))
	}

	if c.BaseURL != "" {
		if err := checkBaseURL(c.BaseURL); err != nil {
			fail("base_url: %v", err)
		}
	}

	switch {
	case c.Token == "" && c.App == nil:
		fail("no credentials; set token (a GitHub token) or app (a GitHub App installation)")
	case c.Token != "" && c.App != nil:
		fail("both token and app are set; keep exactly one of them")
	case c.Token != "":
		if strings.TrimSpace(c.Token) != c.Token {
			fail("token has leading or trailing whitespace; remove it (a file: reference keeps everything but the final newline)")
		} else if strings.ContainsFunc(c.Token, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
			fail("token holds spaces or control characters; set the token value alone")
		}
	case c.App != nil:
		if c.App.AppID <= 0 {
			fail("app.app_id is %d; set the app's numeric ID from its settings page", c.App.AppID)
		}
		if c.App.InstallationID <= 0 {
			fail("app.installation_id is %d; set the ID at the end of the installation's settings URL", c.App.InstallationID)
		}
		if _, err := parseAppKey(c.App.PrivateKeyPEM); err != nil {
			fail("app.private_key_pem: %v", err)
		}
	}

	if c.Org == "" {
		fail("org is empty; set the vendor's GitHub organization whose teams count")
	} else if !validLogin(c.Org) {
		fail("org %q is not a GitHub organization name (1-39 letters, digits or single hyphens, not starting or ending with a hyphen)", truncate(c.Org, 64))
	}

	if len(c.Teams) > MaxTeams {
		fail("teams lists %d teams, over %d; list only the teams whose members may request access", len(c.Teams), MaxTeams)
	}
	seen := map[string]int{}
	for i, slug := range c.Teams {
		switch j, dup := seen[slug]; {
		case !validSlug(slug):
			fail("teams[%d] %q is not a team slug; use the lowercase slug from the team's URL, e.g. platform-oncall", i, truncate(slug, 64))
		case dup:
			fail("teams[%d] %q repeats teams[%d]; remove it", i, slug, j)
		default:
			seen[slug] = i
		}
	}

	switch {
	case c.CacheTTL < 0:
		fail("cache_ttl is %s; set a positive duration up to %s, or 0 for %s", c.CacheTTL, MaxCacheTTL, DefaultCacheTTL)
	case c.CacheTTL > MaxCacheTTL:
		fail("cache_ttl is %s, over %s; a closed ticket must stop counting sooner, lower it", c.CacheTTL, MaxCacheTTL)
	}
	return errors.Join(errs...)
}

func checkBaseURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("does not parse; set the API URL, e.g. https://ghe.example.com/api/v3/: %w", err)
	}
	if u.Host == "" {
		return fmt.Errorf("%q has no host; set the API URL, e.g. https://ghe.example.com/api/v3/", truncate(raw, 200))
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		// u.Redacted keeps user info out of the message.
		return fmt.Errorf("%q must not carry user info, a query or a fragment", u.Redacted())
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if isLoopback(u.Hostname()) {
			return nil
		}
		return fmt.Errorf("%q uses http; use https (http is allowed only for loopback hosts in tests)", raw)
	default:
		return fmt.Errorf("%q has scheme %q; use https", raw, u.Scheme)
	}
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// parseAppKey parses a GitHub App private key. Its errors never quote
// the key.
func parseAppKey(pemText string) (*rsa.PrivateKey, error) {
	if pemText == "" {
		return nil, errors.New("empty; set the app's private key (the .pem file GitHub generated), usually as a file: reference")
	}
	block, _ := pem.Decode([]byte(pemText))
	if block == nil {
		return nil, errors.New("holds no PEM block; set the whole .pem file GitHub generated, including the BEGIN and END lines")
	}
	if _, ok := block.Headers["Proc-Type"]; ok {
		return nil, errors.New("the key is encrypted; set the unencrypted key GitHub generated")
	}
	var key *rsa.PrivateKey
	switch block.Type {
	case "RSA PRIVATE KEY":
		k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("RSA PRIVATE KEY block does not parse; set the .pem file GitHub generated: %w", err)
		}
		key = k
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PRIVATE KEY block does not parse; set the .pem file GitHub generated: %w", err)
		}
		rk, ok := k.(*rsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("holds a %T key; GitHub App keys are RSA", k)
		}
		key = rk
	default:
		return nil, fmt.Errorf("holds a %q PEM block; want the app's RSA PRIVATE KEY", block.Type)
	}
	if bits := key.N.BitLen(); bits < minAppKeyBits {
		return nil, fmt.Errorf("RSA key has %d bits, under %d; generate a new private key for the app", bits, minAppKeyBits)
	}
	return key, nil
}
