package notify_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tetherhq/tether/internal/notify"
)

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, nil))
}

// received is one request a receiver got.
type received struct {
	header http.Header
	body   []byte
	msg    notify.Message
}

// receiver is a webhook endpoint that records every request and answers
// with reply(i, r), i counting requests from 0.
type receiver struct {
	*httptest.Server
	mu    sync.Mutex
	reqs  []received
	reply func(i int, r *http.Request) (int, http.Header)
}

func newReceiver(t *testing.T, reply func(i int, r *http.Request) (int, http.Header)) *receiver {
	t.Helper()
	rc := &receiver{reply: reply}
	if rc.reply == nil {
		rc.reply = func(int, *http.Request) (int, http.Header) { return http.StatusNoContent, nil }
	}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var m notify.Message
		if err := json.Unmarshal(body, &m); err != nil {
			t.Errorf("receiver: body %q is not a message: %v", body, err)
		}
		rc.mu.Lock()
		i := len(rc.reqs)
		rc.reqs = append(rc.reqs, received{header: r.Header.Clone(), body: body, msg: m})
		rc.mu.Unlock()
		status, h := rc.reply(i, r)
		for k, v := range h {
			w.Header()[k] = v
		}
		w.WriteHeader(status)
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) got() []received {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.reqs)
}

func (rc *receiver) ids() []string {
	var ids []string
	for _, r := range rc.got() {
		ids = append(ids, r.msg.ID)
	}
	return ids
}

// statuses answers the i-th request with the i-th status, and later
// requests with the last.
func statuses(codes ...int) func(int, *http.Request) (int, http.Header) {
	return func(i int, _ *http.Request) (int, http.Header) {
		return codes[min(i, len(codes)-1)], nil
	}
}

// sleeps records the waits between attempts without waiting.
type sleeps struct {
	mu    sync.Mutex
	waits []time.Duration
}

func (s *sleeps) sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.waits = append(s.waits, d)
	return ctx.Err()
}

func (s *sleeps) all() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.waits)
}

func clock() time.Time { return epoch }

// newNotifier fills in the test's logger, clock, registry and a Sleep that
// records, unless cfg sets them.
func newNotifier(t *testing.T, cfg notify.Config) (*notify.Notifier, *prometheus.Registry, *sleeps) {
	t.Helper()
	reg := prometheus.NewRegistry()
	s := &sleeps{}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	if cfg.Now == nil {
		cfg.Now = clock
	}
	if cfg.Sleep == nil {
		cfg.Sleep = s.sleep
	}
	cfg.Registerer = reg
	n, err := notify.New(cfg)
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	return n, reg, s
}

// run starts n's workers; stop ends them and waits for Run to return. It
// is called at cleanup too.
func run(t *testing.T, n *notify.Notifier) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		n.Run(ctx)
	}()
	stop = func() {
		cancel()
		<-done
	}
	t.Cleanup(stop)
	return stop
}

func flush(t *testing.T, n *notify.Notifier) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Flush(ctx); err != nil {
		t.Fatalf("Flush() = %v", err)
	}
}

// count reads tether_webhook_deliveries_total{tenant,result}.
func count(t *testing.T, reg *prometheus.Registry, tenant, result string) float64 {
	t.Helper()
	return gather(t, reg, "tether_webhook_deliveries_total", map[string]string{"tenant": tenant, "result": result})
}

func gather(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if labels[lp.GetName()] != lp.GetValue() {
					continue metrics
				}
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s%v not found", name, labels)
	return 0
}

func wantCounts(t *testing.T, reg *prometheus.Registry, tenant string, ok, retry, failed, dropped float64) {
	t.Helper()
	for _, c := range []struct {
		result string
		want   float64
	}{{"ok", ok}, {"retry", retry}, {"failed", failed}, {"dropped", dropped}} {
		if got := count(t, reg, tenant, c.result); got != c.want {
			t.Errorf("tether_webhook_deliveries_total{tenant=%q,result=%q} = %v, want %v", tenant, c.result, got, c.want)
		}
	}
}

func hookFor(tenant, url, secret string, events ...string) notify.Webhook {
	return notify.Webhook{Tenant: tenant, URL: url, Secret: secret, Events: events}
}

func msg(tenant, typ string) notify.Message {
	return notify.Message{
		Type:       typ,
		Tenant:     tenant,
		Deployment: tenant + "/prod-db",
		RequestID:  "req-1",
		Actor:      "alice@vendor.example",
		Summary:    "alice asked for access to " + tenant + "/prod-db.",
	}
}

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestDelivery(t *testing.T) {
	rc := newReceiver(t, nil)
	n, reg, _ := newNotifier(t, notify.Config{Webhooks: []notify.Webhook{hookFor("acme", rc.URL+"/hook", acmeSecret)}})
	run(t, n)

	m := msg("acme", notify.RequestCreated)
	m.Details = map[string]any{"duration": "1h", "reason": "INC-42"}
	n.Notify(m)
	flush(t, n)

	got := rc.got()
	if len(got) != 1 {
		t.Fatalf("receiver got %d requests, want 1", len(got))
	}
	r := got[0]
	for k, want := range map[string]string{
		"Content-Type":     "application/json",
		"Tether-Event":     "request.created",
		"Tether-Delivery":  r.msg.ID,
		"User-Agent":       "tether-webhook/1",
		"Tether-Signature": independentSign([]byte(acmeSecret), epoch, r.body),
	} {
		if g := r.header.Get(k); g != want {
			t.Errorf("header %s = %q, want %q", k, g, want)
		}
	}
	if err := notify.Verify([]byte(acmeSecret), r.header.Get(notify.SignatureHeader), r.body, epoch.Add(time.Second), time.Minute); err != nil {
		t.Errorf("Verify(delivered signature) = %v, want nil", err)
	}
	if !uuidRE.MatchString(r.msg.ID) {
		t.Errorf("message ID = %q, want a random UUID", r.msg.ID)
	}
	want := m
	want.ID, want.Time = r.msg.ID, epoch
	want.Details = map[string]any{"duration": "1h", "reason": "INC-42"}
	gotJSON, _ := json.Marshal(r.msg)
	wantJSON, _ := json.Marshal(want)
	if !bytes.Equal(gotJSON, wantJSON) {
		t.Errorf("delivered message = %s, want %s", gotJSON, wantJSON)
	}
	wantCounts(t, reg, "acme", 1, 0, 0, 0)
}

func TestMessageIDsAreUniqueAndKept(t *testing.T) {
	rc := newReceiver(t, nil)
	n, _, _ := newNotifier(t, notify.Config{Webhooks: []notify.Webhook{hookFor("acme", rc.URL, acmeSecret)}})
	run(t, n)
	for range 50 {
		n.Notify(msg("acme", notify.RequestCreated))
	}
	given := msg("acme", notify.RequestApproved)
	given.ID = "caller-chosen"
	n.Notify(given)
	flush(t, n)
	ids := rc.ids()
	if len(ids) != 51 || ids[50] != "caller-chosen" {
		t.Fatalf("ids = %q, want 50 random then %q", ids, "caller-chosen")
	}
	seen := map[string]bool{}
	for _, id := range ids {
		if seen[id] {
			t.Errorf("message ID %q sent twice", id)
		}
		seen[id] = true
	}
}

func TestDetailsEncodedAtNotify(t *testing.T) {
	rc := newReceiver(t, nil)
	n, _, _ := newNotifier(t, notify.Config{Webhooks: []notify.Webhook{hookFor("acme", rc.URL, acmeSecret)}})
	m := msg("acme", notify.RequestDenied)
	m.Details = map[string]any{"reason": "original"}
	n.Notify(m)
	m.Details["reason"] = "changed after Notify"
	run(t, n)
	flush(t, n)
	if got := rc.got(); len(got) != 1 || got[0].msg.Details["reason"] != "original" {
		t.Errorf("delivered details = %v, want reason %q", got, "original")
	}
}

func TestRouting(t *testing.T) {
	acmeAll := newReceiver(t, nil)
	acmeSome := newReceiver(t, nil)
	globex := newReceiver(t, nil)
	n, reg, _ := newNotifier(t, notify.Config{Webhooks: []notify.Webhook{
		hookFor("acme", acmeAll.URL, acmeSecret),
		hookFor("acme", acmeSome.URL, acmeSecret, notify.RequestApproved, notify.BreakGlassUsed),
		hookFor("globex", globex.URL, globexSecret),
	}})
	run(t, n)

	for _, typ := range notify.EventTypes() {
		n.Notify(msg("acme", typ))
	}
	n.Notify(msg("globex", notify.RequestRevoked))
	n.Notify(msg("initech", notify.RequestCreated)) // no webhook
	wrong := msg("acme", notify.RequestApproved)
	wrong.Deployment = "globex/prod-db" // a routing bug upstream
	n.Notify(wrong)
	flush(t, n)

	types := func(rc *receiver) (ts []string) {
		for _, r := range rc.got() {
			ts = append(ts, r.msg.Tenant+" "+r.msg.Type)
			if r.msg.Tenant == "acme" && !strings.HasPrefix(r.msg.Deployment, "acme/") {
				t.Errorf("acme's webhook got deployment %q", r.msg.Deployment)
			}
		}
		return ts
	}
	for _, c := range []struct {
		name string
		rc   *receiver
		want []string
	}{
		{"acme, all events", acmeAll, []string{"acme request.created", "acme request.approved", "acme request.denied", "acme request.revoked", "acme request.expired", "acme breakglass.used"}},
		{"acme, approved and break-glass", acmeSome, []string{"acme request.approved", "acme breakglass.used"}},
		{"globex", globex, []string{"globex request.revoked"}},
	} {
		if got := types(c.rc); !slices.Equal(got, c.want) {
			t.Errorf("%s received %q, want %q", c.name, got, c.want)
		}
	}
	// Each webhook verifies with its own tenant's secret only.
	for _, r := range globex.got() {
		if err := notify.Verify([]byte(acmeSecret), r.header.Get(notify.SignatureHeader), r.body, epoch, time.Minute); !errors.Is(err, notify.ErrSignatureMismatch) {
			t.Errorf("globex delivery verified with acme's secret: %v", err)
		}
	}
	wantCounts(t, reg, "acme", 8, 0, 0, 2)
	wantCounts(t, reg, "globex", 1, 0, 0, 0)
}

func TestRetries(t *testing.T) {
	h := func(kv ...string) http.Header {
		hd := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			hd.Set(kv[i], kv[i+1])
		}
		return hd
	}
	type resp struct {
		status int
		header http.Header
	}
	const s = time.Second
	tests := []struct {
		name                string
		replies             []resp // the last repeats
		wantWaits           []time.Duration
		ok, retries, failed float64
	}{
		{"200", []resp{{200, nil}}, nil, 1, 0, 0},
		{"500 then success", []resp{{500, nil}, {500, nil}, {200, nil}}, []time.Duration{1 * s, 2 * s}, 1, 2, 0},
		{"doubling capped, exhausted", []resp{{500, nil}}, []time.Duration{1 * s, 2 * s, 4 * s, 5 * s, 5 * s}, 0, 5, 1},
		{"502 503 504 retried", []resp{{502, nil}, {503, nil}, {504, nil}, {202, nil}}, []time.Duration{1 * s, 2 * s, 4 * s}, 1, 3, 0},
		{"408 retried", []resp{{408, nil}, {200, nil}}, []time.Duration{1 * s}, 1, 1, 0},
		{"429 without Retry-After", []resp{{429, nil}, {200, nil}}, []time.Duration{1 * s}, 1, 1, 0},
		{"429 Retry-After seconds honoured", []resp{{429, h("Retry-After", "3")}, {200, nil}}, []time.Duration{3 * s}, 1, 1, 0},
		{"429 Retry-After capped", []resp{{429, h("Retry-After", "3600")}, {200, nil}}, []time.Duration{5 * s}, 1, 1, 0},
		{"429 Retry-After zero", []resp{{429, h("Retry-After", "0")}, {200, nil}}, []time.Duration{0}, 1, 1, 0},
		{"429 Retry-After date", []resp{{429, h("Retry-After", epoch.Add(4*s).Format(http.TimeFormat))}, {200, nil}}, []time.Duration{4 * s}, 1, 1, 0},
		{"429 Retry-After garbage", []resp{{500, nil}, {429, h("Retry-After", "soon")}, {200, nil}}, []time.Duration{1 * s, 2 * s}, 1, 2, 0},
		{"503 Retry-After honoured", []resp{{503, h("Retry-After", "2")}, {200, nil}}, []time.Duration{2 * s}, 1, 1, 0},
		{"400 not retried", []resp{{400, nil}}, nil, 0, 0, 1},
		{"401 not retried", []resp{{401, nil}}, nil, 0, 0, 1},
		{"404 not retried", []resp{{404, nil}}, nil, 0, 0, 1},
		{"410 not retried", []resp{{410, nil}}, nil, 0, 0, 1},
		{"413 not retried", []resp{{413, nil}}, nil, 0, 0, 1},
		{"500 then 422", []resp{{500, nil}, {422, nil}}, []time.Duration{1 * s}, 0, 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := newReceiver(t, func(i int, _ *http.Request) (int, http.Header) {
				r := tt.replies[min(i, len(tt.replies)-1)]
				return r.status, r.header
			})
			n, reg, sl := newNotifier(t, notify.Config{
				Webhooks:    []notify.Webhook{hookFor("acme", rc.URL, acmeSecret)},
				BaseBackoff: time.Second,
				MaxBackoff:  5 * time.Second,
				MaxAttempts: 6,
				Jitter:      func(ceiling time.Duration) time.Duration { return ceiling },
			})
			run(t, n)
			n.Notify(msg("acme", notify.RequestApproved))
			flush(t, n)

			if got := sl.all(); !slices.Equal(got, tt.wantWaits) {
				t.Errorf("waits = %v, want %v", got, tt.wantWaits)
			}
			got := rc.got()
			if len(got) != len(tt.wantWaits)+1 {
				t.Errorf("receiver got %d attempts, want %d", len(got), len(tt.wantWaits)+1)
			}
			for i, r := range got {
				if r.msg.ID != got[0].msg.ID || r.header.Get(notify.DeliveryHeader) != got[0].msg.ID {
					t.Errorf("attempt %d has ID %q, want the first attempt's %q", i, r.msg.ID, got[0].msg.ID)
				}
			}
			wantCounts(t, reg, "acme", tt.ok, tt.retries, tt.failed, 0)
		})
	}
}

func TestJitterBounds(t *testing.T) {
	rc := newReceiver(t, statuses(500))
	const base, maxBackoff, attempts = 100 * time.Millisecond, time.Second, 10
	n, reg, sl := newNotifier(t, notify.Config{
		Webhooks:    []notify.Webhook{hookFor("acme", rc.URL, acmeSecret)},
		BaseBackoff: base,
		MaxBackoff:  maxBackoff,
		MaxAttempts: attempts,
	})
	run(t, n)
	for range 20 {
		n.Notify(msg("acme", notify.RequestExpired))
	}
	flush(t, n)

	waits := sl.all()
	if len(waits) != 20*(attempts-1) {
		t.Fatalf("got %d waits, want %d", len(waits), 20*(attempts-1))
	}
	atCeiling := 0
	for i, w := range waits {
		retry := i % (attempts - 1) // 0 for the first retry of a delivery
		ceiling := min(maxBackoff, base<<retry)
		if w < 0 || w > ceiling {
			t.Errorf("wait before retry %d = %v, want within [0, %v]", retry+1, w, ceiling)
		}
		if w == ceiling {
			atCeiling++
		}
	}
	if atCeiling == len(waits) {
		t.Errorf("every wait is at its ceiling: no jitter")
	}
	wantCounts(t, reg, "acme", 0, 20*(attempts-1), 20, 0)
}

func TestRedirectNotFollowed(t *testing.T) {
	for _, code := range []int{301, 302, 303, 307, 308} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			target := newReceiver(t, nil)
			rc := newReceiver(t, func(int, *http.Request) (int, http.Header) {
				return code, http.Header{"Location": {target.URL + "/elsewhere"}}
			})
			n, reg, sl := newNotifier(t, notify.Config{Webhooks: []notify.Webhook{hookFor("acme", rc.URL, acmeSecret)}})
			run(t, n)
			n.Notify(msg("acme", notify.BreakGlassUsed))
			flush(t, n)
			if got := len(target.got()); got != 0 {
				t.Errorf("redirect target got %d requests, want 0", got)
			}
			if got := len(rc.got()); got != 1 {
				t.Errorf("receiver got %d requests, want 1 (a redirect is not retried)", got)
			}
			if got := sl.all(); len(got) != 0 {
				t.Errorf("waits = %v, want none", got)
			}
			wantCounts(t, reg, "acme", 0, 0, 1, 0)
		})
	}
}

func TestReceiverDown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + l.Addr().String() + "/hook"
	l.Close()

	n, reg, sl := newNotifier(t, notify.Config{
		Webhooks:    []notify.Webhook{hookFor("acme", url, acmeSecret)},
		MaxAttempts: 4,
	})
	run(t, n)
	n.Notify(msg("acme", notify.RequestRevoked))
	flush(t, n)
	if got := len(sl.all()); got != 3 {
		t.Errorf("waited %d times, want 3 (4 attempts)", got)
	}
	wantCounts(t, reg, "acme", 0, 3, 1, 0)
}

func TestQueueOverflowDropsOldest(t *testing.T) {
	acme := newReceiver(t, nil)
	globex := newReceiver(t, nil)
	n, reg, _ := newNotifier(t, notify.Config{
		Webhooks:  []notify.Webhook{hookFor("acme", acme.URL, acmeSecret), hookFor("globex", globex.URL, globexSecret)},
		QueueSize: 3,
	})
	// Not running yet: everything stays queued.
	for _, id := range []string{"a1", "a2", "a3"} {
		m := msg("acme", notify.RequestCreated)
		m.ID = id
		n.Notify(m)
	}
	for _, id := range []string{"g1", "g2"} {
		m := msg("globex", notify.RequestCreated)
		m.ID = id
		n.Notify(m)
	}
	if got := gather(t, reg, "tether_webhook_queue_length", nil); got != 3 {
		t.Errorf("tether_webhook_queue_length = %v, want 3", got)
	}
	wantCounts(t, reg, "acme", 0, 0, 0, 2)
	wantCounts(t, reg, "globex", 0, 0, 0, 0)

	run(t, n)
	flush(t, n)
	if got, want := acme.ids(), []string{"a3"}; !slices.Equal(got, want) {
		t.Errorf("acme received %q, want %q", got, want)
	}
	if got, want := globex.ids(), []string{"g1", "g2"}; !slices.Equal(got, want) {
		t.Errorf("globex received %q, want %q", got, want)
	}
	if got := gather(t, reg, "tether_webhook_queue_length", nil); got != 0 {
		t.Errorf("tether_webhook_queue_length = %v, want 0", got)
	}
}

// blockingReceiver holds every request until release is closed (or the
// client gives up), telling started about each.
func blockingReceiver(t *testing.T) (rc *receiver, started chan struct{}, release func()) {
	started = make(chan struct{}, 1000)
	unblock := make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(unblock) }) }
	rc = newReceiver(t, func(_ int, r *http.Request) (int, http.Header) {
		started <- struct{}{}
		select {
		case <-unblock:
		case <-r.Context().Done():
		}
		return http.StatusOK, nil
	})
	t.Cleanup(release) // before the server closes, which waits for handlers
	return rc, started, release
}

func TestNotifyNeverBlocks(t *testing.T) {
	rc, started, release := blockingReceiver(t)
	const queue, flood = 10, 10000
	n, reg, _ := newNotifier(t, notify.Config{
		Webhooks:  []notify.Webhook{hookFor("acme", rc.URL, acmeSecret)},
		QueueSize: queue,
		Timeout:   time.Minute,
	})
	run(t, n)
	n.Notify(msg("acme", notify.RequestCreated))
	<-started // the worker is stuck on this one

	done := make(chan struct{})
	go func() {
		defer close(done)
		for range flood {
			n.Notify(msg("acme", notify.RequestCreated))
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Notify blocked while the receiver hung and the queue was full")
	}
	wantCounts(t, reg, "acme", 0, 0, 0, flood-queue)

	release()
	flush(t, n)
	wantCounts(t, reg, "acme", queue+1, 0, 0, flood-queue)
}

func TestFlush(t *testing.T) {
	rc, started, release := blockingReceiver(t)
	n, _, _ := newNotifier(t, notify.Config{
		Webhooks: []notify.Webhook{hookFor("acme", rc.URL, acmeSecret)},
		Timeout:  time.Minute,
	})
	flush(t, n) // nothing queued: returns at once, even before Run
	run(t, n)
	n.Notify(msg("acme", notify.RequestCreated))
	<-started

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := n.Flush(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Flush(cancelled ctx) with a delivery in flight = %v, want %v", err, context.Canceled)
	}
	release()
	flush(t, n)
	if got := len(rc.got()); got != 1 {
		t.Errorf("receiver got %d requests after Flush, want 1", got)
	}
}

func TestShutdownTriesPendingOnceMore(t *testing.T) {
	rc := newReceiver(t, statuses(500, 200))
	sleeping := make(chan struct{}, 1)
	n, reg, _ := newNotifier(t, notify.Config{
		Webhooks: []notify.Webhook{hookFor("acme", rc.URL, acmeSecret)},
		Sleep: func(ctx context.Context, d time.Duration) error {
			sleeping <- struct{}{}
			<-ctx.Done() // a long backoff, cut short by shutdown
			return ctx.Err()
		},
	})
	first, second := msg("acme", notify.RequestCreated), msg("acme", notify.RequestApproved)
	first.ID, second.ID = "first", "second"
	stop := run(t, n)
	n.Notify(first)
	n.Notify(second)
	<-sleeping
	stop()

	if got, want := rc.ids(), []string{"first", "first", "second"}; !slices.Equal(got, want) {
		t.Errorf("receiver got %q, want %q", got, want)
	}
	wantCounts(t, reg, "acme", 2, 1, 0, 0)

	n.Notify(msg("acme", notify.RequestDenied))
	wantCounts(t, reg, "acme", 2, 1, 0, 1)
	flush(t, n)
}

func TestShutdownIsBounded(t *testing.T) {
	rc, started, _ := blockingReceiver(t)
	n, reg, _ := newNotifier(t, notify.Config{
		Webhooks:        []notify.Webhook{hookFor("acme", rc.URL, acmeSecret)},
		Timeout:         time.Hour,
		ShutdownTimeout: 50 * time.Millisecond,
	})
	stop := run(t, n)
	n.Notify(msg("acme", notify.RequestCreated))
	<-started
	n.Notify(msg("acme", notify.RequestCreated))
	stop() // returns once ShutdownTimeout cuts the hung attempt off
	wantCounts(t, reg, "acme", 0, 0, 1, 1)
	flush(t, n)
}

func TestRunTwice(t *testing.T) {
	rc := newReceiver(t, nil)
	n, _, _ := newNotifier(t, notify.Config{Webhooks: []notify.Webhook{hookFor("acme", rc.URL, acmeSecret)}})
	run(t, n)
	n.Notify(msg("acme", notify.RequestCreated))
	flush(t, n) // delivered, so the first Run is running
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n.Run(ctx) // returns at once
}

// syncBuffer is a bytes.Buffer safe for the workers' logs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestLogsKeepSecrets(t *testing.T) {
	const token = "T0KEN-in-the-path"
	ok := newReceiver(t, nil)
	flaky := newReceiver(t, statuses(500, 403))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + l.Addr().String() + "/" + token
	l.Close()

	var logs syncBuffer
	n, _, _ := newNotifier(t, notify.Config{
		Webhooks: []notify.Webhook{
			hookFor("acme", ok.URL+"/"+token+"?key="+token, acmeSecret),
			hookFor("acme", flaky.URL+"/"+token, acmeSecret),
			hookFor("globex", down, globexSecret),
		},
		MaxAttempts: 2,
		QueueSize:   2,
		Logger:      slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	n.Notify(msg("acme", notify.RequestCreated))
	n.Notify(msg("globex", notify.RequestCreated)) // overflows: drops acme's first
	run(t, n)
	flush(t, n)
	n.Notify(msg("acme", notify.RequestApproved))
	flush(t, n)

	out := logs.String()
	t.Log(out)
	secrets := []string{acmeSecret, globexSecret, token}
	for _, rc := range []*receiver{ok, flaky} {
		for _, r := range rc.got() {
			sig := r.header.Get(notify.SignatureHeader)
			secrets = append(secrets, sig, sig[strings.Index(sig, "v1=")+3:])
		}
	}
	for _, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("logs contain %q", s)
		}
	}
	for _, want := range []string{
		"tenant=acme", "tenant=globex", "host=" + strings.TrimPrefix(ok.URL, "http://"),
		"type=request.created", "attempt=2", "status=500", "status=403", "status=204", "connection refused", "reason=\"queue full\"",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("logs lack %q", want)
		}
	}
}

// TestSlackFormat: a webhook in the slack format receives a
// Slack-compatible body, {"text": …}, linking the request's page, with
// Slack's markup in the summary escaped so that a reason cannot forge a
// link or a mention; it is signed like any other.
func TestSlackFormat(t *testing.T) {
	rc := newReceiver(t, nil)
	slack := hookFor("acme", rc.URL+"/slack", acmeSecret)
	slack.Format = notify.FormatSlack
	n, _, _ := newNotifier(t, notify.Config{Webhooks: []notify.Webhook{slack}})
	run(t, n)
	m := msg("acme", notify.RequestCreated)
	m.Summary = "eng asks: <!channel> see <https://evil.example|here> & more"
	m.URL = "https://tether.example/ui/requests/r-1"
	n.Notify(m)
	flush(t, n)
	got := rc.got()
	if len(got) != 1 {
		t.Fatalf("receiver got %d requests, want 1", len(got))
	}
	var body map[string]any
	if err := json.Unmarshal(got[0].body, &body); err != nil || len(body) != 1 {
		t.Fatalf("slack body = %s, %v; want one field", got[0].body, err)
	}
	want := "eng asks: &lt;!channel&gt; see &lt;https://evil.example|here&gt; &amp; more <https://tether.example/ui/requests/r-1|Open in Tether>"
	if body["text"] != want {
		t.Errorf("slack text = %q, want %q", body["text"], want)
	}
	if err := notify.Verify([]byte(acmeSecret), got[0].header.Get(notify.SignatureHeader), got[0].body, epoch.Add(time.Second), time.Minute); err != nil {
		t.Errorf("Verify(slack body) = %v, want it signed", err)
	}
	bad := hookFor("acme", rc.URL, acmeSecret)
	bad.Format = "teams"
	if err := (notify.Config{Webhooks: []notify.Webhook{bad}}).Validate(); err == nil || !strings.Contains(err.Error(), `format "teams"`) {
		t.Errorf("Validate(format teams) = %v, want it refused", err)
	}
}
