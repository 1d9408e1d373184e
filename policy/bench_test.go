package policy

import (
	"slices"
	"testing"
	"time"
)

// BenchmarkDecide measures single decisions of the embedded policy and
// reports their p99 (p99-ns) next to the mean: a typical allowed request
// (a freeze window declared, not in effect) and a denied one (two
// problems to explain).
func BenchmarkDecide(b *testing.B) {
	e, err := New(b.Context(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	allowed := baseInput()
	allowed.Deployment.FreezeWindows = []Window{{Start: noon.Add(24 * time.Hour), End: noon.Add(48 * time.Hour), Reason: "next week"}}
	denied := allowed
	denied.Ticket = nil
	denied.Scopes = []string{"clickhouse:system", "clickhouse:admin"}

	for _, bc := range []struct {
		name  string
		in    Input
		allow bool
	}{{"allow", allowed, true}, {"deny", denied, false}} {
		b.Run(bc.name, func(b *testing.B) {
			ctx := b.Context()
			var lat []time.Duration
			b.ReportAllocs()
			for b.Loop() {
				start := time.Now()
				d, err := e.Decide(ctx, bc.in)
				lat = append(lat, time.Since(start))
				if err != nil || d.Allow != bc.allow {
					b.Fatalf("Decide() = %+v, %v; want allow %v", d, err, bc.allow)
				}
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
		})
	}
}
