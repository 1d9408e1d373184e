package agent

import (
	"log/slog"
	"sync"
	"time"

	"github.com/tetherhq/tether/internal/protocol"
)

// The agent measures its clock against the broker's at every heartbeat,
// NTP-style: it knows its own send and receive times and the broker's
// receive and answer times (protocol.EstimateClock), reports the estimate
// in its next heartbeat, and warns in its log well before the skew makes
// it refuse the broker's calls (protocol.ClockSkewWarn against
// protocol.MaxCallSkew).

// clockWarnEvery is how often a skew beyond protocol.ClockSkewWarn is
// logged again while it lasts.
const clockWarnEvery = 10 * time.Minute

// clockWatch holds the agent's latest clock estimate and what it last
// logged about it. It is safe for concurrent use.
type clockWatch struct {
	mu       sync.Mutex
	last     *protocol.ClockOffset // from the latest heartbeat exchange; nil before one
	level    skewLevel             // of the latest estimate
	loggedAt time.Time             // when a skew was last logged
}

// skewLevel grades a clock offset.
type skewLevel int

const (
	skewOK      skewLevel = iota // within protocol.ClockSkewWarn
	skewWarn                     // beyond it: warn
	skewRefused                  // beyond protocol.MaxCallSkew: the broker's calls are refused
)

func levelOf(offset time.Duration) skewLevel {
	switch d := offset.Abs(); {
	case d > protocol.MaxCallSkew:
		return skewRefused
	case d > protocol.ClockSkewWarn:
		return skewWarn
	}
	return skewOK
}

// latest returns the latest estimate, for the next heartbeat.
func (c *clockWatch) latest() *protocol.ClockOffset {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

// observe records the estimate o made at now and logs a skew beyond
// protocol.ClockSkewWarn when it first appears, when it grows beyond
// protocol.MaxCallSkew, and every clockWarnEvery while it lasts; and the
// clock's return within bounds.
func (c *clockWatch) observe(log *slog.Logger, o protocol.ClockOffset, now time.Time) {
	lvl := levelOf(o.Offset())
	c.mu.Lock()
	prev := c.level
	c.last, c.level = &o, lvl
	due := lvl != prev || (lvl != skewOK && now.Sub(c.loggedAt) >= clockWarnEvery)
	if due {
		c.loggedAt = now
	}
	c.mu.Unlock()
	if !due {
		return
	}
	attrs := []any{"offset", o.Offset().Round(time.Millisecond), "uncertainty", (o.RTT() / 2).Round(time.Microsecond),
		"warn_at", protocol.ClockSkewWarn, "refused_at", protocol.MaxCallSkew}
	switch lvl {
	case skewRefused:
		log.Error("the agent's clock is "+aheadOrBehind(o.Offset())+" the broker's by more than "+protocol.MaxCallSkew.String()+
			": the agent refuses the broker's signed calls (queries, pings), though it still takes revocations; fix the clock (NTP) of the agent's host or the broker's", attrs...)
	case skewWarn:
		log.Warn("the agent's clock is "+aheadOrBehind(o.Offset())+" the broker's by more than "+protocol.ClockSkewWarn.String()+
			": beyond "+protocol.MaxCallSkew.String()+" the agent refuses the broker's signed calls (queries); fix the clock (NTP) of the agent's host or the broker's", attrs...)
	default:
		log.Info("the agent's clock agrees with the broker's again", attrs...)
	}
}

// aheadOrBehind says which way the agent's clock is off.
func aheadOrBehind(offset time.Duration) string {
	if offset < 0 {
		return "behind"
	}
	return "ahead of"
}
