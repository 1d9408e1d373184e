package notify

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

var errRedirect = errors.New("receiver answered with a redirect, which is not followed; configure the final URL")

// outcome is the result of one attempt.
type outcome struct {
	status     int   // 0 if no response
	err        error // nil if delivered
	retry      bool  // worth another attempt
	retryAfter time.Duration
	hasAfter   bool // the receiver sent a usable Retry-After
}

// deliver attempts d until it is accepted, refused, out of attempts or
// ctx has ended; once ctx has ended it makes one last attempt of a
// delivery held in memory, and hands one from the Queue back to it.
func (n *Notifier) deliver(ctx, base context.Context, d *delivery) {
	tenant, host := d.lane.hook.Tenant, d.lane.host
	for attempt := d.attempts + 1; ; attempt++ {
		attrs := []any{"tenant", tenant, "host", host, "type", d.typ, "id", d.id, "attempt", attempt}
		if attempt > n.cfg.MaxAttempts {
			// A broker made the last attempt and died before it could
			// forget the delivery.
			d.lane.counter[resultFailed].Inc()
			n.log.Error("notification delivery failed; attempts exhausted", attrs...)
			n.forget(base, d)
			return
		}
		o := n.attempt(base, d)
		attrs = append(attrs, "status", o.status)
		if o.err == nil {
			d.lane.counter[resultOK].Inc()
			n.log.Info("notification delivered", attrs...)
			n.forget(base, d)
			return
		}
		attrs = append(attrs, "error", o.err)
		switch {
		case !o.retry:
			d.lane.counter[resultFailed].Inc()
			n.log.Error("notification delivery failed; not retried", attrs...)
			n.forget(base, d)
			return
		case attempt >= n.cfg.MaxAttempts:
			d.lane.counter[resultFailed].Inc()
			n.log.Error("notification delivery failed; attempts exhausted", attrs...)
			n.forget(base, d)
			return
		case ctx.Err() != nil && d.seq != 0:
			n.handBack(base, d, attempt, n.cfg.Now().Add(n.backoff(attempt, o)), attrs)
			return
		case ctx.Err() != nil:
			d.lane.counter[resultFailed].Inc()
			n.log.Error("notification delivery failed; shutting down", attrs...)
			return
		}
		wait := n.backoff(attempt, o)
		d.lane.counter[resultRetry].Inc()
		n.log.Warn("notification delivery will be retried", append(attrs, "wait", wait)...)
		if d.seq != 0 && !n.reschedule(base, d, attempt, wait) {
			return
		}
		// An error means ctx ended: the next attempt is the last, or a
		// delivery from the Queue goes back to it.
		if err := n.cfg.Sleep(ctx, wait); err != nil && d.seq != 0 {
			n.handBack(base, d, attempt, d.next, attrs)
			return
		}
	}
}

// attempt POSTs d once, signed now.
func (n *Notifier) attempt(ctx context.Context, d *delivery) outcome {
	if err := ctx.Err(); err != nil {
		return outcome{err: err}
	}
	ctx, cancel := context.WithTimeout(ctx, n.cfg.Timeout)
	defer cancel()
	if d.lane.mail != nil {
		return n.sendMail(ctx, d)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.lane.hook.URL, bytes.NewReader(d.body))
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return outcome{err: fmt.Errorf("build request: %w", err)}
	}
	now := n.cfg.Now()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", UserAgent)
	req.Header.Set(EventHeader, d.typ)
	req.Header.Set(DeliveryHeader, d.id)
	req.Header.Set(SignatureHeader, Sign(d.lane.secret, now, d.body))
	resp, err := n.client.Do(req)
	if err != nil {
		// The url.Error repeats the URL, whose path or query may hold a
		// token: keep only the cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return outcome{err: err, retry: true}
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseBody))
	resp.Body.Close()

	o := outcome{status: resp.StatusCode}
	switch code := resp.StatusCode; {
	case code >= 200 && code < 300:
	case code >= 300 && code < 400:
		o.err = errRedirect
	case code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500:
		o.err = fmt.Errorf("receiver answered %d", code)
		o.retry = true
		if code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable {
			o.retryAfter, o.hasAfter = parseRetryAfter(resp.Header.Get("Retry-After"), now)
		}
	default:
		o.err = fmt.Errorf("receiver answered %d", code)
	}
	return o
}

// backoff is the wait after the given failed attempt (1 for the first):
// the receiver's Retry-After if it sent one, else a random wait up to
// BaseBackoff doubled attempt-1 times; both capped at MaxBackoff.
func (n *Notifier) backoff(attempt int, o outcome) time.Duration {
	if o.hasAfter {
		return min(o.retryAfter, n.cfg.MaxBackoff)
	}
	ceiling := min(n.cfg.BaseBackoff, n.cfg.MaxBackoff)
	for i := 1; i < attempt; i++ {
		if ceiling > n.cfg.MaxBackoff/2 {
			ceiling = n.cfg.MaxBackoff
			break
		}
		ceiling *= 2
	}
	return max(0, min(n.cfg.Jitter(ceiling), ceiling))
}

// parseRetryAfter reads a Retry-After header: delay seconds or an HTTP
// date.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseUint(v, 10, 64); err == nil {
		if secs > math.MaxInt64/uint64(time.Second) {
			return math.MaxInt64, true
		}
		return time.Duration(secs) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(0, t.Sub(now)), true
	}
	return 0, false
}

func fullJitter(ceiling time.Duration) time.Duration {
	if ceiling <= 0 {
		return 0
	}
	if ceiling == math.MaxInt64 {
		return rand.N(ceiling)
	}
	return rand.N(ceiling + 1)
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
