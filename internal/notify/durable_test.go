package notify_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/notify"
	"github.com/tetherhq/tether/internal/store"
	"github.com/tetherhq/tether/internal/store/sqlitestore"
)

// openQueue opens a store on a new SQLite database and returns it with
// its path.
func openQueue(t *testing.T) (store.Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tether.db")
	return reopenQueue(t, path), path
}

func reopenQueue(t *testing.T, path string) store.Store {
	t.Helper()
	s, err := sqlitestore.Open(t.Context(), path)
	if err != nil {
		t.Fatalf("sqlitestore.Open() = %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// durable is a notifier config on q with a real clock, short leases and
// polls, and retries at their ceiling.
func durable(q store.Store, hooks ...notify.Webhook) notify.Config {
	return notify.Config{
		Webhooks:     hooks,
		Queue:        q,
		Now:          time.Now,
		Timeout:      time.Second,
		Lease:        3 * time.Second,
		PollInterval: 20 * time.Millisecond,
		BaseBackoff:  50 * time.Millisecond,
		MaxBackoff:   50 * time.Millisecond,
		Jitter:       func(ceiling time.Duration) time.Duration { return ceiling },
	}
}

// TestDurableHandover: a broker accepts a notification while the receiver
// is down, makes an attempt and stops; another broker on the same store
// (with the webhook in its own configuration) delivers it, once, signed
// with the webhook's secret, which the store never held.
func TestDurableHandover(t *testing.T) {
	q, path := openQueue(t)
	const token = "T0KEN-in-the-path"
	// The receiver answers 503 until it is back: down without giving up
	// its port, which another process could take meanwhile.
	var up atomic.Bool
	rc := newReceiver(t, func(int, *http.Request) (int, http.Header) {
		if !up.Load() {
			return http.StatusServiceUnavailable, nil
		}
		return http.StatusNoContent, nil
	})
	hook := hookFor("acme", rc.URL+"/hook/"+token, acmeSecret)

	sleeping := make(chan struct{}, 1)
	cfgA := durable(q, hook)
	cfgA.Sleep = func(ctx context.Context, d time.Duration) error {
		sleeping <- struct{}{}
		<-ctx.Done() // the backoff outlasts the broker
		return ctx.Err()
	}
	a, regA, _ := newNotifier(t, cfgA)
	stopA := run(t, a)
	m := msg("acme", notify.RequestApproved)
	m.ID = "handed-over"
	a.Notify(m)
	<-sleeping // attempt 1 refused: the receiver is down (503)
	stopA()
	wantCounts(t, regA, "acme", 0, 1, 0, 0)

	// What the store holds: the message, neither the secret nor the URL
	// (whose path carries a token).
	var files []byte
	for _, p := range []string{path, path + "-wal"} {
		b, err := os.ReadFile(p)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		files = append(files, b...)
	}
	if !bytes.Contains(files, []byte("handed-over")) {
		t.Fatalf("the store's files lack the pending message: it was not stored")
	}
	for _, secret := range []string{acmeSecret, token} {
		if bytes.Contains(files, []byte(secret)) {
			t.Errorf("the store's files contain %q", secret)
		}
	}

	up.Store(true)
	before := len(rc.got())
	b, regB, _ := newNotifier(t, durable(reopenQueue(t, path), hook))
	stopB := run(t, b)
	flush(t, b)
	stopB()

	got := rc.got()[before:]
	if len(got) != 1 {
		t.Fatalf("receiver got %d requests, want exactly 1", len(got))
	}
	r := got[0]
	if r.msg.ID != "handed-over" || r.header.Get(notify.DeliveryHeader) != "handed-over" {
		t.Errorf("delivered message ID %q (header %q), want %q", r.msg.ID, r.header.Get(notify.DeliveryHeader), "handed-over")
	}
	if err := notify.Verify([]byte(acmeSecret), r.header.Get(notify.SignatureHeader), r.body, time.Now(), time.Minute); err != nil {
		t.Errorf("Verify(delivery by the second broker) = %v, want signed with the webhook's secret", err)
	}
	wantCounts(t, regB, "acme", 1, 0, 0, 0)
}

// TestDurableTakeoverAfterLease: a broker that accepted a notification
// and claimed it dies (SIGKILL: nothing handed back); another broker
// takes it over once the lease passes, not before, and delivers it once.
func TestDurableTakeoverAfterLease(t *testing.T) {
	q, _ := openQueue(t)
	rc := newReceiver(t, nil)
	hook := hookFor("acme", rc.URL, acmeSecret)
	dead, _, _ := newNotifier(t, durable(q, hook))
	m := msg("acme", notify.RequestRevoked)
	m.ID = "taken-over"
	dead.Notify(m) // accepted, never run

	// The dead broker had claimed it: its lease runs on.
	lanes, err := q.WebhookLanes(t.Context(), time.Now())
	if err != nil || len(lanes) != 1 {
		t.Fatalf("WebhookLanes() = %v, %v, want one lane", lanes, err)
	}
	const lease = 500 * time.Millisecond
	claimed := time.Now()
	if _, ok, err := q.ClaimWebhookDelivery(t.Context(), lanes[0].Lane, "dead-broker", claimed, claimed.Add(lease)); !ok || err != nil {
		t.Fatalf("ClaimWebhookDelivery() = %v, %v", ok, err)
	}

	cfg := durable(q, hook)
	cfg.Lease = lease + time.Second
	b, reg, _ := newNotifier(t, cfg)
	run(t, b)
	flush(t, b)
	got := rc.got()
	if len(got) != 1 || got[0].msg.ID != "taken-over" {
		t.Fatalf("receiver got %q, want [taken-over] once", rc.ids())
	}
	if got := time.Since(claimed); got < lease {
		t.Errorf("delivered %v after the dead broker's claim, within its lease of %v", got, lease)
	}
	wantCounts(t, reg, "acme", 1, 0, 0, 0)
}

// TestDurableAttemptsCarryOver: attempts made by a broker that stopped
// count towards MaxAttempts at the broker that takes over, which gives
// up (and forgets the delivery) once they are spent.
func TestDurableAttemptsCarryOver(t *testing.T) {
	q, path := openQueue(t)
	rc := newReceiver(t, statuses(503))
	hook := hookFor("acme", rc.URL, acmeSecret)

	sleeps := 0
	cfgA := durable(q, hook)
	cfgA.MaxAttempts = 3
	stopped := make(chan struct{})
	cfgA.Sleep = func(ctx context.Context, d time.Duration) error {
		if sleeps++; sleeps == 2 {
			close(stopped)
			<-ctx.Done()
			return ctx.Err()
		}
		return nil
	}
	a, _, _ := newNotifier(t, cfgA)
	stopA := run(t, a)
	a.Notify(msg("acme", notify.RequestExpired))
	<-stopped
	stopA()

	cfgB := durable(reopenQueue(t, path), hook)
	cfgB.MaxAttempts = 3
	b, reg, _ := newNotifier(t, cfgB)
	run(t, b)
	flush(t, b)
	if got := len(rc.got()); got != 3 {
		t.Errorf("receiver got %d attempts across two brokers, want MaxAttempts = 3", got)
	}
	wantCounts(t, reg, "acme", 0, 0, 1, 0)
}

// TestDurableQueueBounded: each webhook's deliveries in the store are
// bounded: past QueueSize the oldest is dropped, logged and counted.
func TestDurableQueueBounded(t *testing.T) {
	q, _ := openQueue(t)
	rc := newReceiver(t, nil)
	cfg := durable(q, hookFor("acme", rc.URL, acmeSecret))
	cfg.QueueSize = 2
	var logs syncBuffer
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	n, reg, _ := newNotifier(t, cfg)
	for _, id := range []string{"m1", "m2", "m3"} {
		m := msg("acme", notify.RequestCreated)
		m.ID = id
		n.Notify(m) // not running: all wait in the store
	}
	wantCounts(t, reg, "acme", 0, 0, 0, 1)
	if out := logs.String(); !strings.Contains(out, `reason="queue full"`) || !strings.Contains(out, "id=m1") {
		t.Errorf("logs lack the drop of m1:\n%s", out)
	}
	run(t, n)
	flush(t, n)
	if got := rc.ids(); !slices.Equal(got, []string{"m2", "m3"}) {
		t.Errorf("receiver got %q, want [m2 m3]", got)
	}
}

// TestDurableStoreDown: a store that fails does not stop notifications:
// the delivery is held in memory, logged and counted.
func TestDurableStoreDown(t *testing.T) {
	q, _ := openQueue(t)
	q.Close()
	delivered := make(chan struct{}, 1)
	rc := newReceiver(t, func(int, *http.Request) (int, http.Header) {
		delivered <- struct{}{}
		return http.StatusOK, nil
	})
	var logs syncBuffer
	cfg := durable(q, hookFor("acme", rc.URL, acmeSecret))
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	n, reg, _ := newNotifier(t, cfg)
	run(t, n)
	done := make(chan struct{})
	go func() {
		defer close(done)
		n.Notify(msg("acme", notify.RequestCreated))
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Notify blocked on a failed store")
	}
	// Flush cannot see the store; wait for the delivery itself.
	select {
	case <-delivered:
	case <-time.After(10 * time.Second):
	}
	if got := len(rc.got()); got != 1 {
		t.Fatalf("receiver got %d requests with the store down, want 1 (from memory)", got)
	}
	if got := gather(t, reg, "tether_webhook_store_fallbacks_total", nil); got != 1 {
		t.Errorf("tether_webhook_store_fallbacks_total = %v, want 1", got)
	}
	if out := logs.String(); !strings.Contains(out, "memory only") {
		t.Errorf("logs do not say the delivery is held in memory only:\n%s", out)
	}
}
