package policy

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	reloads   *prometheus.CounterVec
	decisions *prometheus.HistogramVec
}

// newMetrics creates the engine's collectors and registers them with reg,
// when non-nil. A second engine on the same registry shares the first
// one's collectors.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_policy_reloads_total",
			Help: "Policy reload attempts, by result (ok or error; an error keeps the last good policy).",
		}, []string{"result"}),
		decisions: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tether_policy_decision_duration_seconds",
			Help:    "Time to evaluate the access policy, by result (allow, deny or error).",
			Buckets: []float64{50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 50e-3},
		}, []string{"result"}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	if m.reloads, err = register(reg, m.reloads); err != nil {
		return nil, err
	}
	if m.decisions, err = register(reg, m.decisions); err != nil {
		return nil, err
	}
	return m, nil
}

func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, err
	}
	return c, nil
}
