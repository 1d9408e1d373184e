package notify

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"mime"
	"net"
	"net/mail"
	"net/smtp"
	"net/textproto"
	"slices"
	"strings"
	"time"
)

// Email sends the notifications of each tenant to its recipients over
// SMTP, besides (or instead of) webhooks.
type Email struct {
	// Server is the SMTP server, host:port. Mail goes over TLS (STARTTLS)
	// unless the host is loopback, used in development and tests.
	Server string `json:"server"`
	// From is the sender address.
	From string `json:"from"`
	// Username and Password, when set, authenticate (PLAIN, over TLS
	// only). Password is the resolved secret and is never logged.
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`
	// Recipients are each tenant's addresses; a tenant without any gets
	// no e-mail.
	Recipients map[string][]string `json:"recipients"`
	// Events lists the event types sent; empty means all.
	Events []string `json:"events,omitempty"`
	// TLSConfig, if set, is used for STARTTLS (tests give their CA);
	// nil means the system roots and the server's host name.
	TLSConfig *tls.Config `json:"-"`
}

// String describes e without its password.
func (e Email) String() string {
	return fmt.Sprintf("e-mail via %q from %q to %d tenants", e.Server, e.From, len(e.Recipients))
}

// maxRecipients bounds one tenant's addresses.
const maxRecipients = 50

func (e Email) validate(fail func(format string, args ...any)) {
	host, port, err := net.SplitHostPort(e.Server)
	if err != nil || host == "" || port == "" {
		fail("email.server %q: want host:port, such as smtp.example.com:587", e.Server)
	}
	if _, err := mail.ParseAddress(e.From); err != nil || strings.ContainsAny(e.From, "\r\n") {
		fail("email.from %q: want an e-mail address", e.From)
	}
	if (e.Username == "") != (e.Password == "") {
		fail("email.username and email.password go together")
	}
	if len(e.Recipients) == 0 {
		fail("email.recipients is empty: name each tenant's addresses")
	}
	for tenant, addrs := range e.Recipients {
		if len(addrs) == 0 || len(addrs) > maxRecipients {
			fail("email.recipients[%q]: want 1 to %d addresses", tenant, maxRecipients)
		}
		for _, a := range addrs {
			if p, err := mail.ParseAddress(a); err != nil || p.Address != a {
				fail("email.recipients[%q]: %q is not a bare e-mail address", tenant, a)
			}
		}
	}
	for _, ev := range e.Events {
		if !slices.Contains(eventTypes, ev) {
			fail("email.events: unknown event type %q", ev)
		}
	}
}

// mailLane is what an e-mail lane sends to.
type mailLane struct {
	cfg *Email
	to  []string
}

// renderMail is m as a plain-text message to to. Header values come
// from the message's fields with every CR and LF removed, so that no
// field can add a header.
func renderMail(m Message, from string, to []string, now time.Time) []byte {
	oneLine := func(s string) string { return strings.Join(strings.Fields(s), " ") }
	subject := oneLine(m.Summary)
	if len(subject) > 180 {
		subject = subject[:180] + "…"
	}
	var b bytes.Buffer
	h := textproto.MIMEHeader{}
	h.Set("From", from)
	h.Set("To", strings.Join(to, ", "))
	h.Set("Subject", mime.QEncoding.Encode("utf-8", "[Tether] "+subject))
	h.Set("Date", now.UTC().Format(time.RFC1123Z))
	h.Set("Message-ID", "<"+oneLine(m.ID)+"@tether>")
	h.Set("MIME-Version", "1.0")
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Content-Transfer-Encoding", "8bit")
	h.Set("Tether-Event", oneLine(m.Type))
	for _, k := range []string{"From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type", "Content-Transfer-Encoding", "Tether-Event"} {
		fmt.Fprintf(&b, "%s: %s\r\n", k, h.Get(k))
	}
	b.WriteString("\r\n")
	body := m.Summary + "\n\n"
	if m.URL != "" {
		body += "Open it in Tether: " + m.URL + "\n\n"
	}
	body += "Deployment: " + m.Deployment + "\n"
	if m.RequestID != "" {
		body += "Request: " + m.RequestID + "\n"
	}
	if m.Actor != "" {
		body += "By: " + m.Actor + "\n"
	}
	body += "Event: " + m.Type + " at " + m.Time.UTC().Format(time.RFC3339) + "\n"
	// SMTP lines end in CRLF, and a line holding a lone dot ends DATA:
	// net/smtp's writer dot-stuffs; the line endings are ours.
	for _, line := range strings.Split(strings.ReplaceAll(body, "\r", ""), "\n") {
		b.WriteString(line + "\r\n")
	}
	return b.Bytes()
}

var errNoTLS = errors.New("the SMTP server offers no STARTTLS, and mail goes only over TLS to a server that is not on loopback")

// sendMail delivers d over SMTP once, within the attempt's deadline.
func (n *Notifier) sendMail(ctx context.Context, d *delivery) outcome {
	ml := d.lane.mail
	e := ml.cfg
	host, _, _ := net.SplitHostPort(e.Server)
	deadline := time.Now().Add(n.cfg.Timeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	var dialer net.Dialer
	conn, err := dialer.DialContext(ctx, "tcp", e.Server)
	if err != nil {
		return outcome{err: err, retry: true}
	}
	defer conn.Close()
	conn.SetDeadline(deadline)
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		return outcome{err: fmt.Errorf("smtp greeting: %w", err), retry: true}
	}
	defer c.Close()
	if ok, _ := c.Extension("STARTTLS"); ok {
		cfg := e.TLSConfig
		if cfg == nil {
			cfg = &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
		}
		if err := c.StartTLS(cfg); err != nil {
			return outcome{err: fmt.Errorf("starttls: %w", err), retry: true}
		}
	} else if !isLoopback(host) {
		return outcome{err: errNoTLS}
	}
	if e.Username != "" {
		if err := c.Auth(smtp.PlainAuth("", e.Username, e.Password, host)); err != nil {
			return outcome{err: fmt.Errorf("smtp auth: %w", err)}
		}
	}
	if err := c.Mail(e.From); err != nil {
		return smtpOutcome("MAIL FROM", err)
	}
	for _, to := range ml.to {
		if err := c.Rcpt(to); err != nil {
			return smtpOutcome("RCPT TO", err)
		}
	}
	w, err := c.Data()
	if err != nil {
		return smtpOutcome("DATA", err)
	}
	if _, err := w.Write(d.body); err != nil {
		return outcome{err: err, retry: true}
	}
	if err := w.Close(); err != nil {
		return smtpOutcome("end of DATA", err)
	}
	_ = c.Quit()
	return outcome{}
}

// smtpOutcome retries a temporary (4xx) refusal or a broken connection,
// not a permanent (5xx) one.
func smtpOutcome(step string, err error) outcome {
	var tp *textproto.Error
	if errors.As(err, &tp) {
		return outcome{status: tp.Code, err: fmt.Errorf("%s: %d %s", step, tp.Code, tp.Msg), retry: tp.Code < 500}
	}
	return outcome{err: fmt.Errorf("%s: %w", step, err), retry: true}
}
