// Package notify tells customers, at once, what happens on their
// deployments: an engineer asks for access, the request is approved,
// denied, revoked or expires, or a vendor uses break-glass. Each event is
// POSTed as JSON to the webhooks the customer's tenant configured, signed
// with the webhook's secret (see [Sign] and [Verify]) and retried with
// backoff until the receiver accepts it.
//
// Delivery is at least once: a receiver may see a message twice (after a
// timeout, a retry or a restart) and deduplicates on [Message.ID], which
// is also sent as the Tether-Delivery header. A bounded queue drops the
// oldest pending delivery when it is full, so that a broken receiver
// cannot make the broker run out of memory.
//
// Without a [Queue] deliveries are held in memory only. With one (the
// broker's store), every delivery is written there before
// [Notifier.Notify] returns and deleted once made or given up, so that a
// delivery one broker accepted is made even if it dies: by it after a
// restart, or by any other broker sharing the store (see [Queue]). Should
// the store fail, Notify keeps the delivery in memory instead, logs it and
// counts it in tether_webhook_store_fallbacks_total: a notification never
// holds up the action it reports.
package notify

import (
	"container/list"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Event types sent.
const (
	RequestCreated  = "request.created"
	RequestApproved = "request.approved"
	RequestDenied   = "request.denied"
	RequestRevoked  = "request.revoked"
	RequestExpired  = "request.expired"
	BreakGlassUsed  = "breakglass.used"
)

var eventTypes = []string{RequestCreated, RequestApproved, RequestDenied, RequestRevoked, RequestExpired, BreakGlassUsed}

// EventTypes returns every event type a webhook may subscribe to.
func EventTypes() []string { return slices.Clone(eventTypes) }

// Headers sent with every delivery besides [SignatureHeader].
const (
	// EventHeader carries [Message.Type].
	EventHeader = "Tether-Event"
	// DeliveryHeader carries [Message.ID], the same on every attempt and
	// every webhook, for the receiver to deduplicate on.
	DeliveryHeader = "Tether-Delivery"
	// UserAgent is the User-Agent of every delivery.
	UserAgent = "tether-webhook/1"
)

// Defaults for the zero fields of [Config].
const (
	DefaultTimeout         = 5 * time.Second
	DefaultMaxAttempts     = 6
	DefaultBaseBackoff     = time.Second
	DefaultMaxBackoff      = time.Minute
	DefaultQueueSize       = 1000
	DefaultShutdownTimeout = 10 * time.Second
	DefaultLease           = 30 * time.Second
	DefaultPollInterval    = 2 * time.Second
)

// MinSecretLen is the shortest [Webhook.Secret] accepted, in bytes.
const MinSecretLen = 32

// maxResponseBody bounds how much of a receiver's response is read (and
// discarded) so that a hostile receiver cannot make us read forever.
const maxResponseBody = 4 << 10

// Webhook is one tenant's endpoint.
type Webhook struct {
	// Tenant is the customer tenant whose events this endpoint receives,
	// and only those.
	Tenant string `json:"tenant"`
	// URL receives the POSTs. It must be https, except for loopback hosts
	// used in development. Redirects are not followed: give the final URL.
	URL string `json:"url"`
	// Secret is the resolved secret value (the caller resolves env:/file:
	// references), at least [MinSecretLen] bytes. It keys the HMAC in
	// [SignatureHeader] and is never logged.
	Secret string `json:"secret"`
	// Events lists the event types delivered here; empty means all.
	Events []string `json:"events,omitempty"`
	// Format is the body's shape: "tether" (the default, a [Message]) or
	// "slack", a Slack-compatible incoming-webhook body ({"text": …}) that
	// links to the request's page. Both are signed alike.
	Format string `json:"format,omitempty"`
}

// Body formats of [Webhook.Format].
const (
	FormatTether = "tether"
	FormatSlack  = "slack"
)

// String describes w without its secret or its URL's path and query
// (which may hold a token), so that printing a Webhook, or a [Config],
// cannot leak them.
func (w Webhook) String() string {
	return fmt.Sprintf("webhook of tenant %q to host %q, events %q", w.Tenant, hostOf(w.URL), w.Events)
}

// LogValue logs w as [Webhook.String] does: without secrets.
func (w Webhook) LogValue() slog.Value {
	return slog.GroupValue(slog.String("tenant", w.Tenant), slog.String("host", hostOf(w.URL)), slog.Any("events", w.Events))
}

func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(invalid URL)"
	}
	return u.Host
}

// Config configures a [Notifier]. The zero value of every field but
// Webhooks is usable.
type Config struct {
	// Webhooks are the endpoints, any number per tenant. None, and no
	// Email, means notifications are off: [Notifier.Notify] does nothing.
	Webhooks []Webhook
	// Email, if set, also sends each tenant's notifications to its
	// recipients by e-mail, with the same retries and bounds.
	Email *Email
	// Timeout bounds one attempt, response included; default
	// [DefaultTimeout].
	Timeout time.Duration
	// MaxAttempts bounds the attempts of one delivery, the first included;
	// default [DefaultMaxAttempts].
	MaxAttempts int
	// BaseBackoff is the longest wait before the first retry; it doubles on
	// each later retry, with full jitter, up to MaxBackoff. Default
	// [DefaultBaseBackoff].
	BaseBackoff time.Duration
	// MaxBackoff caps the wait between attempts, a receiver's Retry-After
	// included; default [DefaultMaxBackoff].
	MaxBackoff time.Duration
	// QueueSize bounds the deliveries waiting for an attempt, across all
	// webhooks; when it is full the oldest pending delivery is dropped
	// (logged and counted). Default [DefaultQueueSize].
	QueueSize int
	// ShutdownTimeout bounds how long [Notifier.Run] keeps going after its
	// context ends, to finish attempts in flight and try each pending
	// delivery once more; default [DefaultShutdownTimeout].
	ShutdownTimeout time.Duration
	// HTTPClient sends the requests; nil means a client with the default
	// transport. It is copied, and the copy never follows redirects and
	// keeps no cookies.
	HTTPClient *http.Client
	// Now is the clock for message times, signatures and Retry-After
	// dates; nil means time.Now.
	Now func() time.Time
	// Logger receives delivery logs; nil discards them.
	Logger *slog.Logger
	// Registerer, if set, receives
	// tether_webhook_deliveries_total{tenant,result="ok|retry|failed|dropped"}
	// and tether_webhook_queue_length.
	Registerer prometheus.Registerer
	// Sleep waits between attempts and returns early, with an error, when
	// ctx ends; nil means a timer. Tests replace it.
	Sleep func(ctx context.Context, d time.Duration) error
	// Jitter picks the wait before a retry in [0, ceiling]; nil means
	// uniformly at random ("full jitter"). Tests replace it.
	Jitter func(ceiling time.Duration) time.Duration

	// Queue, if set, keeps pending deliveries in a store that outlives
	// this Notifier and that other brokers' Notifiers may share; nil
	// keeps them in memory. With a Queue, QueueSize bounds each
	// webhook's deliveries in the store (the oldest dropped, logged and
	// counted), besides those held in memory when the store fails.
	Queue Queue
	// Lease is how long a delivery a Notifier took from the Queue stays
	// its own, beyond any wait before a retry, before another may take
	// it: how soon the deliveries of a broker that died are taken over.
	// It must be longer than Timeout; default [DefaultLease], or twice
	// Timeout if that is longer.
	Lease time.Duration
	// PollInterval is how often the Queue is read for deliveries other
	// brokers left or retries come due; default [DefaultPollInterval].
	PollInterval time.Duration
}

func (c Config) withDefaults() Config {
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.BaseBackoff == 0 {
		c.BaseBackoff = DefaultBaseBackoff
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = DefaultMaxBackoff
	}
	if c.QueueSize == 0 {
		c.QueueSize = DefaultQueueSize
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.Lease == 0 {
		c.Lease = max(DefaultLease, 2*c.Timeout)
	}
	if c.PollInterval == 0 {
		c.PollInterval = DefaultPollInterval
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Sleep == nil {
		c.Sleep = sleep
	}
	if c.Jitter == nil {
		c.Jitter = fullJitter
	}
	return c
}

// Message is what is delivered, as the JSON body.
type Message struct {
	// ID is unique per message (UUID-like random hex), the same on every
	// attempt and webhook; the receiver deduplicates on it. Notify sets it
	// if empty.
	ID string `json:"id"`
	// Type is one of the event type constants.
	Type string `json:"type"`
	// Time is when the event happened; Notify sets it from the clock if
	// zero.
	Time time.Time `json:"time"`
	// Tenant is the customer tenant the event belongs to; it selects the
	// webhooks.
	Tenant string `json:"tenant"`
	// Deployment is "tenant/name"; its tenant must be Tenant.
	Deployment string `json:"deployment"`
	// RequestID is the access request concerned, if any.
	RequestID string `json:"request_id,omitempty"`
	// Actor is who did it: the engineer, approver or vendor.
	Actor string `json:"actor,omitempty"`
	// Summary is one human sentence.
	Summary string `json:"summary"`
	// URL is the page where a person acts on it (the request's page in
	// the web console), if any.
	URL string `json:"url,omitempty"`
	// Details holds event-specific fields. It is encoded when Notify is
	// called, so the caller may reuse the map afterwards.
	Details map[string]any `json:"details,omitempty"`
}

// Notifier delivers messages to the tenants' webhooks. Create it with
// [New], start its workers with [Notifier.Run] and hand it messages with
// [Notifier.Notify]; its methods are safe for concurrent use.
//
// Each webhook has its own worker, so a slow or broken receiver delays
// only its own deliveries, which it receives in order.
type Notifier struct {
	cfg      Config
	log      *slog.Logger
	client   *http.Client
	m        *metrics
	lanes    []*lane
	byTenant map[string][]*lane

	// queue is cfg.Queue; claimer names this Notifier in its leases.
	queue   Queue
	claimer string
	byKey   map[string]*lane // by lane key, for deliveries from the queue

	mu          sync.Mutex
	stored      int           // deliveries of our lanes in the queue, at the last poll
	pending     list.List     // *delivery waiting for an attempt, oldest first, across lanes
	outstanding int           // pending plus in flight
	idle        chan struct{} // closed while outstanding is 0
	running     bool
	closed      bool // Run has returned: no worker will take deliveries
}

// lane is one webhook and its queue.
type lane struct {
	hook    Webhook
	secret  []byte
	host    string          // for logs: the URL may carry a token in its path
	events  map[string]bool // nil means all
	queue   list.List       // *delivery, oldest first; guarded by Notifier.mu
	wake    chan struct{}   // signalled when queue grows, or the store may hold a due delivery
	key     string          // names the lane in the Queue: a digest of tenant, URL and format
	counter map[string]prometheus.Counter
	mail    *mailLane // set for an e-mail lane, which sends by SMTP
}

func (l *lane) wants(typ string) bool { return l.events == nil || l.events[typ] }

// eventSet is a lane's events: nil, meaning all, when none are listed.
func eventSet(events []string) map[string]bool {
	if len(events) == 0 {
		return nil
	}
	m := make(map[string]bool, len(events))
	for _, e := range events {
		m[e] = true
	}
	return m
}

// delivery is one message to one webhook.
type delivery struct {
	lane    *lane
	id, typ string
	body    []byte
	inAll   *list.Element // in Notifier.pending
	inLane  *list.Element // in lane.queue
	// seq is the delivery's row in the Queue, which this Notifier has
	// claimed; 0 for a delivery held in memory only. attempts counts
	// those made before the claim, by any broker.
	seq      int64
	attempts int
	next     time.Time // when the next attempt is due, as recorded in the Queue
}

// New checks cfg and returns a Notifier that queues messages; call Run to
// deliver them.
func New(cfg Config) (*Notifier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()

	client := &http.Client{}
	if cfg.HTTPClient != nil {
		c := *cfg.HTTPClient
		client = &c
	}
	// A redirect would send the tenant's events, signed, wherever the
	// receiver points: the configured URL must be the final one.
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	client.Jar = nil

	n := &Notifier{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "notify"),
		client:   client,
		byTenant: map[string][]*lane{},
		idle:     make(chan struct{}),
		queue:    cfg.Queue,
		claimer:  "notify-" + newID(),
		byKey:    map[string]*lane{},
	}
	close(n.idle)
	var tenants []string
	for _, w := range cfg.Webhooks {
		l := &lane{
			hook:   Webhook{Tenant: w.Tenant, URL: w.URL, Secret: w.Secret, Events: slices.Clone(w.Events), Format: w.Format},
			secret: []byte(w.Secret),
			host:   hostOf(w.URL),
			wake:   make(chan struct{}, 1),
			events: eventSet(w.Events),
		}
		n.lanes = append(n.lanes, l)
		if _, ok := n.byTenant[w.Tenant]; !ok {
			tenants = append(tenants, w.Tenant)
		}
		n.byTenant[w.Tenant] = append(n.byTenant[w.Tenant], l)
	}
	if e := cfg.Email; e != nil {
		ec := *e
		for _, tenant := range slices.Sorted(maps.Keys(e.Recipients)) {
			l := &lane{
				hook:   Webhook{Tenant: tenant, URL: "smtp://" + e.Server, Events: slices.Clone(e.Events)},
				host:   e.Server,
				wake:   make(chan struct{}, 1),
				mail:   &mailLane{cfg: &ec, to: slices.Clone(e.Recipients[tenant])},
				events: eventSet(e.Events),
			}
			n.lanes = append(n.lanes, l)
			if _, ok := n.byTenant[tenant]; !ok {
				tenants = append(tenants, tenant)
			}
			n.byTenant[tenant] = append(n.byTenant[tenant], l)
		}
	}
	m, err := newMetrics(cfg.Registerer, tenants)
	if err != nil {
		return nil, err
	}
	n.m = m
	for _, l := range n.lanes {
		l.counter = m.forTenant(l.hook.Tenant)
		l.key = laneKey(l.hook)
		n.byKey[l.key] = l
	}
	return n, nil
}

// Notify queues m for every webhook of m.Tenant subscribed to m.Type. It
// never blocks on the network or on a full queue: when the queue is full
// the oldest pending delivery is dropped. A message whose Deployment
// belongs to another tenant is refused, never delivered.
func (n *Notifier) Notify(m Message) {
	var targets []*lane
	for _, l := range n.byTenant[m.Tenant] {
		if l.wants(m.Type) {
			targets = append(targets, l)
		}
	}
	if len(targets) == 0 {
		return
	}
	if !slices.Contains(eventTypes, m.Type) {
		n.log.Warn("notify: unknown event type; delivered to webhooks subscribed to all events", "tenant", m.Tenant, "type", m.Type)
	}
	if m.Deployment != "" && !strings.HasPrefix(m.Deployment, m.Tenant+"/") {
		// A routing bug upstream must not show one customer another's
		// deployment.
		n.log.Error("notify: message refused: its deployment is not in its tenant", "tenant", m.Tenant, "deployment", m.Deployment, "type", m.Type)
		for _, l := range targets {
			l.counter[resultDropped].Inc()
		}
		return
	}
	if m.ID == "" {
		m.ID = newID()
	}
	if m.Time.IsZero() {
		m.Time = n.cfg.Now()
	}
	m.Time = m.Time.UTC()
	body, err := json.Marshal(m)
	var slack []byte
	if err == nil {
		slack, err = json.Marshal(slackBody(m))
	}
	if err != nil {
		n.log.Error("notify: message refused: encode", "tenant", m.Tenant, "type", m.Type, "id", m.ID, "error", err)
		for _, l := range targets {
			l.counter[resultDropped].Inc()
		}
		return
	}

	ds := make([]*delivery, len(targets))
	for i, l := range targets {
		d := &delivery{lane: l, id: m.ID, typ: m.Type, body: body}
		switch {
		case l.mail != nil:
			d.body = renderMail(m, l.mail.cfg.From, l.mail.to, n.cfg.Now())
		case l.hook.Format == FormatSlack:
			d.body = slack
		}
		ds[i] = d
	}
	if n.queue != nil && n.persist(ds) {
		return
	}

	var dropped []*delivery
	var stopped bool
	n.mu.Lock()
	for _, d := range ds {
		l := d.lane
		if n.closed {
			dropped = append(dropped, d)
			stopped = true
			continue
		}
		if n.pending.Len() >= n.cfg.QueueSize {
			old := n.pending.Front().Value.(*delivery)
			n.unqueueLocked(old)
			n.doneLocked()
			dropped = append(dropped, old)
		}
		d.inAll = n.pending.PushBack(d)
		d.inLane = l.queue.PushBack(d)
		n.startLocked()
		select {
		case l.wake <- struct{}{}:
		default:
		}
	}
	n.setQueueLocked()
	n.mu.Unlock()

	reason := "queue full"
	if stopped {
		reason = "notifier stopped"
	}
	for _, d := range dropped {
		n.drop(d, reason)
	}
}

// Flush waits until no delivery is pending or in flight, or ctx ends. It
// needs Run to be delivering. With a Queue it also waits until the Queue
// holds no delivery to this Notifier's webhooks, whoever holds it.
func (n *Notifier) Flush(ctx context.Context) error {
	for {
		n.mu.Lock()
		idle := n.idle
		n.mu.Unlock()
		select {
		case <-idle:
		case <-ctx.Done():
			return fmt.Errorf("flush webhook deliveries: %w", context.Cause(ctx))
		}
		if n.queue == nil {
			return nil
		}
		if pending, err := n.storedPending(ctx); err == nil && pending == 0 {
			return nil
		}
		select {
		case <-time.After(10 * time.Millisecond):
		case <-ctx.Done():
			return fmt.Errorf("flush webhook deliveries: %w", context.Cause(ctx))
		}
	}
}

// Run delivers queued messages until ctx ends, then finishes the attempts
// in flight and tries every pending delivery once more, for at most
// ShutdownTimeout; what is left is dropped. Call it once.
func (n *Notifier) Run(ctx context.Context) {
	n.mu.Lock()
	if n.running {
		n.mu.Unlock()
		n.log.Error("notify: Run called more than once; ignored")
		return
	}
	n.running = true
	n.mu.Unlock()

	// Attempts run under base rather than ctx so that shutdown finishes
	// them instead of cutting them off, but no longer than ShutdownTimeout.
	base, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	var wg sync.WaitGroup
	for _, l := range n.lanes {
		wg.Go(func() { n.work(ctx, base, l) })
	}
	if n.queue != nil {
		wg.Go(func() { n.poll(ctx) })
	}
	<-ctx.Done()
	deadline := time.AfterFunc(n.cfg.ShutdownTimeout, cancel)
	defer deadline.Stop()
	wg.Wait()

	// Deliveries queued after their worker finished draining.
	var left []*delivery
	n.mu.Lock()
	n.closed = true
	for e := n.pending.Front(); e != nil; e = n.pending.Front() {
		d := e.Value.(*delivery)
		n.unqueueLocked(d)
		n.doneLocked()
		left = append(left, d)
	}
	n.setQueueLocked()
	n.mu.Unlock()
	for _, d := range left {
		n.drop(d, "notifier stopped")
	}
}

// work delivers l's queue in order until ctx ends, then drains it.
func (n *Notifier) work(ctx, base context.Context, l *lane) {
	for {
		select {
		case <-ctx.Done():
			n.drain(ctx, base, l)
			return
		case <-l.wake:
		}
		for ctx.Err() == nil {
			d := n.take(l)
			if d == nil && n.queue != nil {
				d = n.claim(ctx, l)
			}
			if d == nil {
				break
			}
			n.deliver(ctx, base, d)
			n.done()
		}
	}
}

// drain tries each delivery left in l's queue once, while base lasts.
func (n *Notifier) drain(ctx, base context.Context, l *lane) {
	for {
		d := n.take(l)
		if d == nil {
			return
		}
		if base.Err() != nil {
			n.drop(d, "shutdown timeout passed")
		} else {
			n.deliver(ctx, base, d) // ctx has ended: one attempt
		}
		n.done()
	}
}

// take removes the oldest delivery of l from the queue; it stays
// outstanding until done.
func (n *Notifier) take(l *lane) *delivery {
	n.mu.Lock()
	defer n.mu.Unlock()
	e := l.queue.Front()
	if e == nil {
		return nil
	}
	d := e.Value.(*delivery)
	n.unqueueLocked(d)
	n.setQueueLocked()
	return d
}

func (n *Notifier) done() {
	n.mu.Lock()
	n.doneLocked()
	n.mu.Unlock()
}

func (n *Notifier) unqueueLocked(d *delivery) {
	n.pending.Remove(d.inAll)
	d.lane.queue.Remove(d.inLane)
	d.inAll, d.inLane = nil, nil
}

func (n *Notifier) startLocked() {
	if n.outstanding == 0 {
		n.idle = make(chan struct{})
	}
	n.outstanding++
}

func (n *Notifier) doneLocked() {
	n.outstanding--
	if n.outstanding == 0 {
		close(n.idle)
	}
}

func (n *Notifier) drop(d *delivery, reason string) {
	d.lane.counter[resultDropped].Inc()
	n.log.Error("webhook delivery dropped", "reason", reason, "tenant", d.lane.hook.Tenant, "host", d.lane.host, "type", d.typ, "id", d.id)
}

// newID returns a random UUID (version 4).
func newID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// slackMessage is a Slack-compatible incoming-webhook body.
type slackMessage struct {
	Text string `json:"text"`
}

// slackBody is m for a Slack-compatible receiver: its summary, with the
// request's page linked. Slack's own markup characters in the summary
// are escaped, so that a reason or a name cannot forge a link or a
// mention.
func slackBody(m Message) slackMessage {
	esc := strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")
	text := esc.Replace(m.Summary)
	if m.URL != "" {
		text += " <" + esc.Replace(m.URL) + "|Open in Tether>"
	}
	return slackMessage{Text: text}
}
