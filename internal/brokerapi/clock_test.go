package brokerapi

import "testing"

func TestDescribeClock(t *testing.T) {
	tests := []struct {
		ahead, unc float64
		oneWay     bool
		want       string
	}{
		{2.4, 0.003, false, "agent 2.4 s ahead of the broker (±3 ms)"},
		{-300.2, 0.000247, false, "agent 5m0s behind the broker (±247 µs)"},
		{-299.99997, 0.0002, false, "agent 5m0s behind the broker (±200 µs)"},
		{20.04, 0.0012, false, "agent 20 s ahead of the broker (±1 ms)"},
		{-0.000069, 0.0003, false, "agent in step with the broker (±300 µs)"},
		{0.012, 0.002, false, "agent 12 ms ahead of the broker (±2 ms)"},
		{-3.5, 0, true, "agent 3.5 s behind the broker (one-way estimate)"},
	}
	for _, tt := range tests {
		if got := DescribeClock(tt.ahead, tt.unc, tt.oneWay); got != tt.want {
			t.Errorf("DescribeClock(%v, %v, %v) = %q, want %q", tt.ahead, tt.unc, tt.oneWay, got, tt.want)
		}
	}
}
