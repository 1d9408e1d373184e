package notify_test

import (
	"strings"
	"testing"

	"github.com/tetherhq/tether/internal/notify"
	"github.com/tetherhq/tether/internal/notify/smtptest"
)

// TestEmail: each tenant's notifications go by SMTP to its own
// recipients only, link the request's page, keep a hostile summary out
// of the headers, and a temporary refusal is retried.
func TestEmail(t *testing.T) {
	srv := smtptest.Start(t, 1)
	n, _, sl := newNotifier(t, notify.Config{Email: &notify.Email{
		Server: srv.Addr(), From: "tether@vendor.example",
		Recipients: map[string][]string{"acme": {"sec@acme.example", "ops@acme.example"}, "globex": {"it@globex.example"}},
	}})
	run(t, n)
	m := msg("acme", notify.RequestCreated)
	m.Summary = "alice asks for access\r\nBcc: thief@evil.example"
	m.URL = "https://tether.example/ui/requests/req-1"
	n.Notify(m)
	flush(t, n)
	got := srv.Mails()
	if len(got) != 1 {
		t.Fatalf("SMTP server got %d mails, want 1 (after one retry)", len(got))
	}
	if len(sl.all()) != 1 {
		t.Errorf("waits before retries = %v, want one retry after the 451", sl.all())
	}
	mail := got[0]
	if !strings.HasPrefix(mail.From, "<tether@vendor.example>") || strings.Join(mail.To, ",") != "sec@acme.example,ops@acme.example" {
		t.Errorf("envelope = from %s to %v, want tether@ to acme's two", mail.From, mail.To)
	}
	head, body, _ := strings.Cut(mail.Data, "\r\n\r\n")
	for _, l := range strings.Split(head, "\r\n") {
		if strings.HasPrefix(strings.ToLower(l), "bcc:") {
			t.Errorf("the summary added a header: %q", l)
		}
	}
	if !strings.Contains(head, "Subject: [Tether] alice asks for access Bcc: thief@evil.example") {
		t.Errorf("headers = %q, want the summary on the subject line, in one line", head)
	}
	if !strings.Contains(body, "Open it in Tether: https://tether.example/ui/requests/req-1") {
		t.Errorf("body = %q, want the request's page linked", body)
	}
	if err := (notify.Config{Email: &notify.Email{Server: "nohost", From: "x", Recipients: map[string][]string{"acme": {"Sec <sec@acme.example>"}}}}).Validate(); err == nil ||
		!strings.Contains(err.Error(), "email.server") || !strings.Contains(err.Error(), "email.from") || !strings.Contains(err.Error(), "not a bare e-mail address") {
		t.Errorf("Validate(bad email) = %v, want the server, from and recipient named", err)
	}
}
