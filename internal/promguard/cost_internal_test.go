package promguard

import (
	"testing"
	"time"
)

// TestEstimateCost pins the estimate of Check's total-work bound: steps
// times samples, multiplied through nested subqueries.
func TestEstimateCost(t *testing.T) {
	const month = 31 * 24 * time.Hour
	const n = int64(month / (5 * time.Minute)) // points of [31d:5m]
	tests := []struct {
		q     string
		evals int64
		want  int64
	}{
		{"1", 1, 0},
		{"up", 1, 1},
		{"up", 241, 241},
		{"up + up", 10, 20},
		{"rate(up[5m])", 1, 20},
		{"rate(up[5m])", 241, 241 * 20},
		{"rate(up[10s])", 1, 1},
		{"rate(up[16s])", 1, 2},
		{"max_over_time(up[31d])", 1, int64(month / AssumedScrapeInterval)},
		{`sum by (code) (rate(http_requests_total{job="api"}[5m]))`, 1, 20},
		{"topk(5, rate(up[5m]))", 1, 20},
		// Subquery: 60 points read by max_over_time, and rate(up[5m])
		// evaluated at each of them.
		{"max_over_time(rate(up[5m])[1h:1m])", 1, 60 + 60*20},
		{"max_over_time(rate(up[5m])[1h:1m])", 241, 241 * (60 + 60*20)},
		{"max_over_time(up[1h:])", 1, 240 + 240},
		{"max_over_time(max_over_time(rate(up[5m])[1d:1h])[1d:1h])", 1, 24 + 24*24 + 24*24*20},
		// The review's attack, 8928³×20 ≈ 1.4e13.
		{"max_over_time(max_over_time(max_over_time(rate(up[5m])[31d:5m])[31d:5m])[31d:5m])", 1, n + n*n + n*n*n + n*n*n*20},
		{"histogram_quantile(0.9, rate(x_bucket[5m])) / rate(y[1m])", 2, 2*20 + 2*4},
	}
	for _, tt := range tests {
		expr, reason := parseExpr(tt.q)
		if reason != "" {
			t.Fatalf("parseExpr(%q): %s", tt.q, reason)
		}
		got := estimateCost(expr, tt.evals).total
		if got != tt.want {
			t.Errorf("estimateCost(%q, %d) = %d, want %d", tt.q, tt.evals, got, tt.want)
		}
	}
}

func TestSaturatingArithmetic(t *testing.T) {
	if got := satMul(costLimit, 2); got != costLimit {
		t.Errorf("satMul(costLimit, 2) = %d, want costLimit", got)
	}
	if got := satAdd(costLimit, costLimit); got != costLimit {
		t.Errorf("satAdd(costLimit, costLimit) = %d, want costLimit", got)
	}
	// Deep nesting saturates rather than overflows.
	q := "up"
	for range 20 {
		q = "max_over_time((" + q + ")[31d:5m])"
	}
	expr, reason := parseExpr(q)
	if reason != "" {
		t.Fatal(reason)
	}
	if got := estimateCost(expr, MaxPoints).total; got != costLimit {
		t.Errorf("estimate of 20 nested month-long subqueries = %d, want the saturated %d", got, int64(costLimit))
	}
}

// BenchmarkEstimateCost measures the whole-expression estimate alone, on
// a typical dashboard query.
func BenchmarkEstimateCost(b *testing.B) {
	expr, reason := parseExpr(`histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{job="api"}[5m])))`)
	if reason != "" {
		b.Fatal(reason)
	}
	b.ReportAllocs()
	for b.Loop() {
		if e := estimateCost(expr, MaxPoints); e.total > MaxSamples {
			b.Fatal(e.total)
		}
	}
}
