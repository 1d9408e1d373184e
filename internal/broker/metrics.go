package broker

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The broker's metrics beyond those of the audit log, the policy and the
// webhooks: each deployment's agent status, read from the store at
// scrape time, and the API's requests by route. Labels stay bounded: a
// deployment's tenant and tenant/name (as tether_agent_clock_skew_seconds
// has it), a route is a pattern of the API's mux, a code an HTTP status.

// agentStatusCollector exports each deployment's agent status from the
// store, with one ListDeployments per scrape: every broker sharing the
// store exports the same values, whichever broker the agent last reached.
type agentStatusCollector struct {
	b                                           *Broker
	paired, online, lastHeartbeat, witnessRefus *prometheus.Desc
}

func newAgentStatusCollector(b *Broker) *agentStatusCollector {
	labels := []string{"tenant", "deployment"}
	return &agentStatusCollector{
		b: b,
		paired: prometheus.NewDesc("tether_deployment_agent_paired",
			"1 when the deployment has a paired agent (not revoked), 0 when none: 'broker deployment create' made it and no agent redeemed its pairing token yet, or its agent was revoked.",
			labels, nil),
		online: prometheus.NewDesc("tether_deployment_agent_online",
			"1 while the deployment's paired agent is online (its latest heartbeat within three heartbeat intervals), 0 when it is offline; absent for a deployment with no paired agent.",
			labels, nil),
		lastHeartbeat: prometheus.NewDesc("tether_deployment_agent_last_heartbeat_timestamp_seconds",
			"Unix time the broker received the deployment's agent's latest heartbeat; absent before the first.",
			labels, nil),
		witnessRefus: prometheus.NewDesc("tether_deployment_agent_witness_refusing",
			"1 when the deployment's agent said in its latest heartbeat that, as the customer's witness, it found the broker's audit log rewritten and refuses every data-plane call; 0 otherwise.",
			labels, nil),
	}
}

// Describe implements [prometheus.Collector].
func (c *agentStatusCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.paired
	ch <- c.online
	ch <- c.lastHeartbeat
	ch <- c.witnessRefus
}

// Collect implements [prometheus.Collector]: one store read per scrape.
func (c *agentStatusCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ds, err := c.b.store.ListDeployments(ctx)
	if err != nil {
		c.b.log.Warn("metrics: could not list deployments for their agents' status", "err", err)
		return
	}
	now := c.b.now()
	gauge := func(d *prometheus.Desc, v float64, tenant, name string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, tenant, name)
	}
	for _, d := range ds {
		name := d.Tenant + "/" + d.Name
		a := d.Agent
		if a == nil || !a.RevokedAt.IsZero() {
			gauge(c.paired, 0, d.Tenant, name)
			continue
		}
		gauge(c.paired, 1, d.Tenant, name)
		online := !a.Last.At.IsZero() && now.Sub(a.Last.At) < 3*c.b.cfg.HeartbeatInterval
		gauge(c.online, b2f(online), d.Tenant, name)
		if !a.Last.At.IsZero() {
			gauge(c.lastHeartbeat, float64(a.Last.At.UnixNano())/1e9, d.Tenant, name)
		}
		gauge(c.witnessRefus, b2f(a.Last.WitnessRefusal != ""), d.Tenant, name)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// httpMetrics count the API's requests by route (the mux pattern that
// matched, such as "GET /api/v1/deployments/{tenant}/{name}") and status.
type httpMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inFlight prometheus.Gauge
}

// requestBuckets suit API calls from a cached lookup (about a
// millisecond) to a data-plane call at the query time limit (60 s).
var requestBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

// instrumentHTTP counts the requests h answers, on the broker's registry.
func (b *Broker) instrumentHTTP(h http.Handler) http.Handler {
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_http_requests_total",
			Help: "Requests the broker's API answered, by route (the pattern that matched; \"/\" for no endpoint) and HTTP status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tether_http_request_duration_seconds",
			Help:    "How long the broker's API took to answer a request, by route, to the end of the answer (a data-plane answer's streaming included).",
			Buckets: requestBuckets,
		}, []string{"route"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tether_http_requests_in_flight",
			Help: "Requests the broker's API is answering.",
		}),
	}
	m.requests = registerOrExisting(b.reg, m.requests)
	m.duration = registerOrExisting(b.reg, m.duration)
	m.inFlight = registerOrExisting(b.reg, m.inFlight)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		m.inFlight.Inc()
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			m.inFlight.Dec()
			// The mux set the pattern on r as it routed it.
			route := r.Pattern
			if route == "" {
				route = "/"
			}
			status := sw.status
			if status == 0 {
				status = http.StatusOK // nothing written: net/http answers 200
			}
			m.requests.WithLabelValues(route, strconv.Itoa(status)).Inc()
			m.duration.WithLabelValues(route).Observe(time.Since(start).Seconds())
		}()
		h.ServeHTTP(sw, r)
	})
}

// registerOrExisting registers c on reg, or returns the collector already
// registered in its place (a broker's Run called again).
func registerOrExisting[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		if are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); ok {
			if old, ok := are.ExistingCollector.(C); ok {
				return old
			}
		}
		panic(err)
	}
	return c
}

// statusWriter remembers the status of an answer.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the connection (flushes,
// deadlines).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
