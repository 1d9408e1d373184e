package broker

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/protocol"
	"github.com/tetherhq/tether/internal/store"
)

// An agent's clock is measured against the broker's at every heartbeat.
// The agent, which alone knows all four times of an exchange (its send
// and receive times, the broker's receive and answer times in the
// heartbeat's answer), makes the NTP estimate (protocol.EstimateClock) and
// reports it in its next heartbeat; on its first heartbeat the broker
// makes a one-way estimate from the heartbeat's send time. The latest is
// stored with the heartbeat, shown by 'broker deployment show', exported
// as tether_agent_clock_skew_seconds, and warned about beyond
// protocol.ClockSkewWarn (15 s), well before the agent refuses the
// broker's signed calls beyond protocol.MaxCallSkew (60 s).

// clockOfHeartbeat is the agent's clock skew a heartbeat received at t1
// (the broker's clock) tells: the agent's estimate when it sent one, else
// the one-way estimate from its send time, else nil.
func clockOfHeartbeat(hb protocol.Heartbeat, t1 time.Time) (*store.ClockSkew, error) {
	if c := hb.Clock; c != nil {
		if c.Offset().Abs() > protocol.MaxClockOffset || c.RTTUS < 0 || c.RTT() > protocol.MaxClockRTT {
			return nil, errorf(http.StatusBadRequest, "bad_heartbeat", "heartbeat clock offset %d µs, round trip %d µs: want at most %v either way and a round trip of 0 to %v",
				c.OffsetUS, c.RTTUS, protocol.MaxClockOffset, protocol.MaxClockRTT)
		}
		return &store.ClockSkew{Offset: c.Offset(), RTT: c.RTT()}, nil
	}
	if hb.SentAt.IsZero() {
		return nil, nil
	}
	d := min(max(hb.SentAt.Sub(t1), -protocol.MaxClockOffset), protocol.MaxClockOffset)
	return &store.ClockSkew{Offset: d.Truncate(time.Microsecond), OneWay: true}, nil
}

// clockStatus grades an offset: ok, warn beyond protocol.ClockSkewWarn,
// refused beyond protocol.MaxCallSkew.
func clockStatus(offset time.Duration) string {
	switch d := offset.Abs(); {
	case d > protocol.MaxCallSkew:
		return brokerapi.ClockRefused
	case d > protocol.ClockSkewWarn:
		return brokerapi.ClockWarn
	}
	return brokerapi.ClockOK
}

// clockView is an agent's clock skew in its API form; nil when unmeasured.
func clockView(c *store.ClockSkew) *brokerapi.AgentClock {
	if c == nil {
		return nil
	}
	v := &brokerapi.AgentClock{
		AheadSeconds: c.Offset.Seconds(), UncertaintySeconds: (c.RTT / 2).Seconds(), OneWay: c.OneWay,
		Status: clockStatus(c.Offset),
	}
	v.Summary = brokerapi.DescribeClock(v.AheadSeconds, v.UncertaintySeconds, v.OneWay)
	way := "ahead of"
	if c.Offset < 0 {
		way = "behind"
	}
	off := c.Offset.Abs().Round(100 * time.Millisecond)
	switch v.Status {
	case brokerapi.ClockWarn:
		v.Warning = fmt.Sprintf("the agent's clock is %v %s the broker's, more than %v: beyond %v the agent refuses the broker's queries; fix the clock (NTP) of the agent's host or the broker's",
			off, way, protocol.ClockSkewWarn, protocol.MaxCallSkew)
	case brokerapi.ClockRefused:
		v.Warning = fmt.Sprintf("the agent's clock is %v %s the broker's, more than the %v the agent allows a signed call: it refuses every query (revocations still pass); fix the clock (NTP) of the agent's host or the broker's",
			off, way, protocol.MaxCallSkew)
	}
	return v
}

// noteClock logs an agent's clock skew when its status changes from the
// previous heartbeat's: a warning beyond protocol.ClockSkewWarn, an error
// beyond protocol.MaxCallSkew.
func (b *Broker) noteClock(a store.Agent, c *store.ClockSkew) {
	if c == nil {
		return
	}
	was := brokerapi.ClockOK
	if a.Last.Clock != nil {
		was = clockStatus(a.Last.Clock.Offset)
	}
	v := clockView(c)
	if v.Status == was {
		return
	}
	attrs := []any{"agent_id", a.ID, "deployment", a.DeploymentID, "clock", v.Summary}
	switch v.Status {
	case brokerapi.ClockRefused:
		b.log.Error(v.Warning, attrs...)
	case brokerapi.ClockWarn:
		b.log.Warn(v.Warning, attrs...)
	default:
		b.log.Info("the agent's clock agrees with the broker's again", attrs...)
	}
}

// clockCollector exports each paired agent's clock skew, as of its latest
// heartbeat, from the store: every broker sharing the store exports the
// same values, whichever broker the agent last reached.
type clockCollector struct {
	b           *Broker
	skew, bound *prometheus.Desc
}

func newClockCollector(b *Broker) *clockCollector {
	return &clockCollector{
		b: b,
		skew: prometheus.NewDesc("tether_agent_clock_skew_seconds",
			"How far the deployment's agent's clock is ahead of the broker's (negative: behind), as of its latest heartbeat. The agent warns beyond 15 s and refuses the broker's queries beyond 60 s.",
			[]string{"deployment"}, nil),
		bound: prometheus.NewDesc("tether_agent_clock_skew_uncertainty_seconds",
			"The error bound of tether_agent_clock_skew_seconds: half the round trip of the heartbeat that measured it (0 for a one-way estimate).",
			[]string{"deployment"}, nil),
	}
}

// Describe implements [prometheus.Collector].
func (c *clockCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.skew
	ch <- c.bound
}

// Collect implements [prometheus.Collector]: one store read per scrape.
func (c *clockCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ds, err := c.b.store.ListDeployments(ctx)
	if err != nil {
		c.b.log.Warn("metrics: could not list deployments for the agents' clock skew", "err", err)
		return
	}
	for _, d := range ds {
		if d.Agent == nil || d.Agent.Last.Clock == nil {
			continue
		}
		k := d.Agent.Last.Clock
		name := d.Tenant + "/" + d.Name
		ch <- prometheus.MustNewConstMetric(c.skew, prometheus.GaugeValue, k.Offset.Seconds(), name)
		ch <- prometheus.MustNewConstMetric(c.bound, prometheus.GaugeValue, (k.RTT / 2).Seconds(), name)
	}
}
