package notify

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"strings"
)

// Validate reports every problem in c, each naming the webhook and field
// to fix, joined into one error; it returns nil if c is usable. Errors
// never contain a secret, nor a URL's path or query, which may hold a
// token.
func (c Config) Validate() error {
	var errs []error
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("notify config: "+format, args...))
	}

	for _, f := range []struct {
		name string
		v    int64
	}{
		{"timeout", int64(c.Timeout)},
		{"max_attempts", int64(c.MaxAttempts)},
		{"base_backoff", int64(c.BaseBackoff)},
		{"max_backoff", int64(c.MaxBackoff)},
		{"queue_size", int64(c.QueueSize)},
		{"shutdown_timeout", int64(c.ShutdownTimeout)},
		{"lease", int64(c.Lease)},
		{"poll_interval", int64(c.PollInterval)},
	} {
		if f.v < 0 {
			fail("%s is negative; leave it 0 for the default or set a positive value", f.name)
		}
	}
	d := c.withDefaults()
	if c.BaseBackoff >= 0 && c.MaxBackoff >= 0 && d.BaseBackoff > d.MaxBackoff {
		fail("base_backoff %v is longer than max_backoff %v; lower base_backoff or raise max_backoff", d.BaseBackoff, d.MaxBackoff)
	}
	if c.Timeout >= 0 && c.Lease > 0 && d.Lease <= d.Timeout {
		fail("lease %v is not longer than timeout %v: another broker could take a delivery while an attempt is still running; raise lease", d.Lease, d.Timeout)
	}

	if c.Email != nil {
		c.Email.validate(fail)
	}
	type endpoint struct{ tenant, url string }
	endpoints := map[endpoint]int{}
	secrets := map[string]int{}
	for i, w := range c.Webhooks {
		where := fmt.Sprintf("webhooks[%d]", i)
		if w.Tenant != "" {
			where = fmt.Sprintf("webhooks[%d] (tenant %q)", i, w.Tenant)
		}
		hook := func(format string, args ...any) {
			fail("%s: "+format, append([]any{where}, args...)...)
		}

		if w.Format != "" && w.Format != FormatTether && w.Format != FormatSlack {
			hook("format %q: want %s (the default) or %s", w.Format, FormatTether, FormatSlack)
		}
		switch {
		case w.Tenant == "":
			hook("tenant is empty; name the customer tenant whose events this webhook receives")
		case strings.TrimSpace(w.Tenant) != w.Tenant:
			hook("tenant has surrounding spaces; remove them")
		}

		if err := checkURL(w.URL); err != nil {
			hook("url: %w", err)
		} else if j, dup := endpoints[endpoint{w.Tenant, w.URL}]; dup {
			hook("url is already configured for this tenant by webhooks[%d]; list each endpoint once and merge their events", j)
		} else {
			endpoints[endpoint{w.Tenant, w.URL}] = i
		}

		switch {
		case w.Secret == "":
			hook("secret is empty; set at least %d random bytes (for example from 'openssl rand -hex 32'), by env: or file: reference", MinSecretLen)
		case strings.HasPrefix(w.Secret, "env:") || strings.HasPrefix(w.Secret, "file:"):
			hook("secret looks like an unresolved env:/file: reference; resolve it to the secret value before building the notifier")
		case len(w.Secret) < MinSecretLen:
			hook("secret is %d bytes; use at least %d random bytes (for example from 'openssl rand -hex 32')", len(w.Secret), MinSecretLen)
		}
		if w.Secret != "" && w.Tenant != "" {
			if j, dup := secrets[w.Secret]; dup && c.Webhooks[j].Tenant != w.Tenant {
				hook("secret is also the secret of webhooks[%d] (tenant %q); give each tenant its own secret, or one could forge the other's notifications", j, c.Webhooks[j].Tenant)
			} else if !dup {
				secrets[w.Secret] = i
			}
		}

		for k, e := range w.Events {
			switch {
			case e == "":
				hook("events[%d] is empty; remove it", k)
			case !slices.Contains(eventTypes, e):
				hook("events[%d] %q is not an event type; use one of %s, or leave events empty for all", k, e, strings.Join(eventTypes, ", "))
			case slices.Index(w.Events, e) < k:
				hook("events[%d] %q is listed twice; remove one", k, e)
			}
		}
	}
	return errors.Join(errs...)
}

// checkURL checks a webhook URL without repeating it: its path or query
// may carry a token.
func checkURL(raw string) error {
	if raw == "" {
		return errors.New("empty; set the receiver's https URL")
	}
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("does not parse: %w", err)
	}
	if u.Host == "" {
		return errors.New("has no host; give an absolute https URL")
	}
	if u.User != nil {
		return fmt.Errorf("for host %q carries user info; remove it (receivers authenticate deliveries by their signature)", u.Host)
	}
	if u.Fragment != "" {
		return fmt.Errorf("for host %q has a fragment; remove it", u.Host)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if isLoopback(u.Hostname()) {
			return nil
		}
		return fmt.Errorf("for host %q uses http; use https (http is allowed only for loopback hosts: localhost, 127.0.0.1, ::1)", u.Host)
	default:
		return fmt.Errorf("for host %q has scheme %q; use https", u.Host, u.Scheme)
	}
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}
