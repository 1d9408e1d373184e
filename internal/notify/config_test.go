package notify_test

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tetherhq/tether/internal/notify"
)

const (
	acmeSecret   = "acme-secret-acme-secret-acme-secret-0001"
	globexSecret = "globex-secret-globex-secret-globex-0002"
)

func TestValidate(t *testing.T) {
	hook := func(tenant, url, secret string, events ...string) notify.Webhook {
		return notify.Webhook{Tenant: tenant, URL: url, Secret: secret, Events: events}
	}
	tests := []struct {
		name string
		cfg  notify.Config
		want []string // substrings, all expected; none means valid
	}{
		{"zero value", notify.Config{}, nil},
		{"https", notify.Config{Webhooks: []notify.Webhook{hook("acme", "https://hooks.acme.example/tether?k=v", acmeSecret)}}, nil},
		{"http loopback", notify.Config{Webhooks: []notify.Webhook{
			hook("acme", "http://127.0.0.1:8080/hook", acmeSecret),
			hook("acme", "http://localhost/hook", acmeSecret),
			hook("acme", "http://[::1]:9/hook", acmeSecret, notify.RequestApproved, notify.BreakGlassUsed),
		}}, nil},
		{"same url, two tenants", notify.Config{Webhooks: []notify.Webhook{
			hook("acme", "https://siem.example/in", acmeSecret),
			hook("globex", "https://siem.example/in", globexSecret),
		}}, nil},
		{"http non-loopback", notify.Config{Webhooks: []notify.Webhook{hook("acme", "http://hooks.acme.example/x", acmeSecret)}},
			[]string{`webhooks[0] (tenant "acme"): url: for host "hooks.acme.example" uses http; use https`}},
		{"http lookalike loopback", notify.Config{Webhooks: []notify.Webhook{hook("acme", "http://127.0.0.1.nip.io/x", acmeSecret)}},
			[]string{"uses http; use https"}},
		{"short secret", notify.Config{Webhooks: []notify.Webhook{hook("acme", "https://a.example/", "too-short")}},
			[]string{`webhooks[0] (tenant "acme"): secret is 9 bytes; use at least 32 random bytes`}},
		{"empty secret", notify.Config{Webhooks: []notify.Webhook{hook("acme", "https://a.example/", "")}},
			[]string{"secret is empty"}},
		{"unresolved secret", notify.Config{Webhooks: []notify.Webhook{hook("acme", "https://a.example/", "env:TETHER_ACME_WEBHOOK_SECRET_VALUE")}},
			[]string{"unresolved env:/file: reference"}},
		{"unknown event", notify.Config{Webhooks: []notify.Webhook{hook("acme", "https://a.example/", acmeSecret, notify.RequestCreated, "request.approve")}},
			[]string{`events[1] "request.approve" is not an event type; use one of request.created, request.approved`}},
		{"duplicate event", notify.Config{Webhooks: []notify.Webhook{hook("acme", "https://a.example/", acmeSecret, notify.RequestDenied, notify.RequestDenied)}},
			[]string{`events[1] "request.denied" is listed twice`}},
		{"empty tenant", notify.Config{Webhooks: []notify.Webhook{hook("", "https://a.example/", acmeSecret)}},
			[]string{"webhooks[0]: tenant is empty"}},
		{"spaced tenant", notify.Config{Webhooks: []notify.Webhook{hook(" acme", "https://a.example/", acmeSecret)}},
			[]string{"tenant has surrounding spaces"}},
		{"no url", notify.Config{Webhooks: []notify.Webhook{hook("acme", "", acmeSecret)}},
			[]string{"url: empty"}},
		{"relative url", notify.Config{Webhooks: []notify.Webhook{hook("acme", "/hook", acmeSecret)}},
			[]string{"url: has no host"}},
		{"bad url", notify.Config{Webhooks: []notify.Webhook{hook("acme", "https://a b.example/", acmeSecret)}},
			[]string{"url: does not parse"}},
		{"user info", notify.Config{Webhooks: []notify.Webhook{hook("acme", "https://user:pw@a.example/", acmeSecret)}},
			[]string{"carries user info"}},
		{"ftp", notify.Config{Webhooks: []notify.Webhook{hook("acme", "ftp://a.example/", acmeSecret)}},
			[]string{`has scheme "ftp"; use https`}},
		{"duplicate endpoint", notify.Config{Webhooks: []notify.Webhook{
			hook("acme", "https://a.example/", acmeSecret),
			hook("acme", "https://a.example/", acmeSecret),
		}}, []string{"webhooks[1] (tenant \"acme\"): url is already configured for this tenant by webhooks[0]"}},
		{"secret shared across tenants", notify.Config{Webhooks: []notify.Webhook{
			hook("acme", "https://a.example/", acmeSecret),
			hook("globex", "https://g.example/", acmeSecret),
		}}, []string{`webhooks[1] (tenant "globex"): secret is also the secret of webhooks[0] (tenant "acme")`}},
		{"negative settings", notify.Config{Timeout: -1, MaxAttempts: -1, BaseBackoff: -1, MaxBackoff: -1, QueueSize: -1, ShutdownTimeout: -1},
			[]string{"timeout is negative", "max_attempts is negative", "base_backoff is negative", "max_backoff is negative", "queue_size is negative", "shutdown_timeout is negative"}},
		{"base above max backoff", notify.Config{BaseBackoff: 2 * time.Minute},
			[]string{"base_backoff 2m0s is longer than max_backoff 1m0s"}},
		{"every problem listed", notify.Config{Webhooks: []notify.Webhook{
			hook("", "http://a.example/", "short", "nope"),
			hook("globex", "https://g.example/", globexSecret),
		}}, []string{"tenant is empty", "uses http", "secret is 5 bytes", `"nope" is not an event type`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want errors containing %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %v, want it to contain %q", err, w)
				}
			}
			for _, s := range []string{acmeSecret, globexSecret, "/tether", "pw"} {
				if strings.Contains(err.Error(), s) {
					t.Errorf("Validate() = %v, which repeats %q (a secret or URL path)", err, s)
				}
			}
		})
	}
}

func TestWebhookPrintsNoSecret(t *testing.T) {
	w := notify.Webhook{Tenant: "acme", URL: "https://hooks.acme.example/T0KEN?k=T0KEN", Secret: acmeSecret, Events: []string{notify.RequestApproved}}
	var logs strings.Builder
	slog.New(slog.NewTextHandler(&logs, nil)).Info("configured", "webhook", w)
	for _, out := range []string{
		fmt.Sprint(w), fmt.Sprintf("%+v", w), fmt.Sprintf("%v", notify.Config{Webhooks: []notify.Webhook{w}}),
		fmt.Sprintf("%+v", notify.Config{Webhooks: []notify.Webhook{w}}), logs.String(),
	} {
		if strings.Contains(out, acmeSecret) || strings.Contains(out, "T0KEN") {
			t.Errorf("printed webhook = %s, which holds its secret or URL token", out)
		}
		if !strings.Contains(out, "hooks.acme.example") || !strings.Contains(out, "acme") {
			t.Errorf("printed webhook = %s, want its tenant and host", out)
		}
	}
}

func TestNewRefusesInvalidConfig(t *testing.T) {
	_, err := notify.New(notify.Config{Webhooks: []notify.Webhook{{Tenant: "acme", URL: "http://a.example/", Secret: acmeSecret}}})
	if err == nil || !strings.Contains(err.Error(), "uses http") {
		t.Errorf("New(http URL) = %v, want the validation error", err)
	}
}

func TestNewRefusesDuplicateMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := notify.New(notify.Config{Registerer: reg}); err != nil {
		t.Fatalf("New() = %v, want nil", err)
	}
	if _, err := notify.New(notify.Config{Registerer: reg}); err == nil {
		t.Error("second New() on the same registerer = nil, want a registration error")
	}
}
