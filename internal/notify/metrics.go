package notify

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Values of the result label of tether_webhook_deliveries_total. ok,
// failed and dropped count deliveries (one message to one webhook) by how
// they ended; retry counts failed attempts that were retried.
const (
	resultOK      = "ok"
	resultRetry   = "retry"
	resultFailed  = "failed"
	resultDropped = "dropped"
)

var results = []string{resultOK, resultRetry, resultFailed, resultDropped}

type metrics struct {
	deliveries *prometheus.CounterVec
	queue      prometheus.Gauge
	fallbacks  prometheus.Counter
}

// newMetrics registers the metrics with reg, if set. The tenant label
// takes only configured tenants, so its cardinality is bounded by the
// configuration; every series starts at zero so that rates and alerts
// work from the first scrape.
func newMetrics(reg prometheus.Registerer, tenants []string) (*metrics, error) {
	m := &metrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_webhook_deliveries_total",
			Help: "Webhook deliveries by tenant and result: ok, failed and dropped count deliveries by how they ended, retry counts attempts that failed and were retried.",
		}, []string{"tenant", "result"}),
		queue: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tether_webhook_queue_length",
			Help: "Webhook deliveries waiting for an attempt: those held in memory and, with deliveries kept in the store, those of this broker's webhooks the store held at its last poll.",
		}),
		fallbacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tether_webhook_store_fallbacks_total",
			Help: "Webhook deliveries held in this broker's memory only because the store failed to keep them: a restart loses them.",
		}),
	}
	for _, t := range tenants {
		for _, r := range results {
			m.deliveries.WithLabelValues(t, r)
		}
	}
	if reg != nil {
		cs := []prometheus.Collector{m.deliveries, m.queue, m.fallbacks}
		for i, c := range cs {
			if err := reg.Register(c); err != nil {
				for _, done := range cs[:i] {
					reg.Unregister(done)
				}
				return nil, fmt.Errorf("register webhook metrics: %w", err)
			}
		}
	}
	return m, nil
}

func (m *metrics) forTenant(tenant string) map[string]prometheus.Counter {
	c := make(map[string]prometheus.Counter, len(results))
	for _, r := range results {
		c[r] = m.deliveries.WithLabelValues(tenant, r)
	}
	return c
}
