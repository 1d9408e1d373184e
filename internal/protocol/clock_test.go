package protocol

import (
	"testing"
	"time"
)

// TestEstimateClock checks the NTP estimate of an agent's clock offset
// from one heartbeat exchange.
func TestEstimateClock(t *testing.T) {
	broker := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	ms := time.Millisecond
	tests := []struct {
		name           string
		t0, t1, t2, t3 time.Time
		want           ClockOffset
		wantOK         bool
	}{
		// Agent 2.4 s ahead, 1 ms each way, broker answers in 5 ms.
		{"ahead", broker.Add(2400*ms - ms), broker, broker.Add(5 * ms), broker.Add(2400*ms + 6*ms),
			ClockOffset{OffsetUS: 2_400_000, RTTUS: 2000}, true},
		// Agent 5 min behind, asymmetric path (1 ms there, 3 ms back):
		// the estimate is off by half the asymmetry, within ±RTT/2.
		{"behind, asymmetric", broker.Add(-5*time.Minute - ms), broker, broker.Add(ms), broker.Add(-5*time.Minute + 4*ms),
			ClockOffset{OffsetUS: -300_000_000 + 1000, RTTUS: 4000}, true},
		{"in step", broker.Add(-ms), broker, broker, broker.Add(ms), ClockOffset{RTTUS: 2000}, true},
		// An agent whose clock restarted at 1970 is measured, not overflowed.
		{"clock at 1970", time.Unix(0, 0), broker, broker, time.Unix(0, 0).Add(ms),
			ClockOffset{OffsetUS: -broker.Sub(time.Unix(0, 0)).Microseconds() + 500, RTTUS: 1000}, true},
		{"year 1", time.Time{}.Add(ms), broker, broker, time.Time{}.Add(2 * ms),
			ClockOffset{OffsetUS: -MaxClockOffset.Microseconds(), RTTUS: 1000}, true},
		{"no broker times", broker, time.Time{}, time.Time{}, broker, ClockOffset{}, false},
		{"answered before received", broker, broker.Add(ms), broker, broker, ClockOffset{}, false},
	}
	for _, tt := range tests {
		got, ok := EstimateClock(tt.t0, tt.t1, tt.t2, tt.t3)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("%s: EstimateClock = %+v, %v; want %+v, %v", tt.name, got, ok, tt.want, tt.wantOK)
		}
	}
}
