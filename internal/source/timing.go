package source

import (
	"context"
	"sync"
	"time"

	"github.com/tetherhq/tether/internal/protocol"
)

// Timings collects where one call's time went, hop by hop, for its
// answer's Server-Timing header: the agent's grant check, the guard, the
// audit event made durable, the upstream's time to first byte.
type Timings struct {
	mu sync.Mutex
	st protocol.ServerTiming
}

type timingsKey struct{}

// WithTimings returns ctx carrying a new collector, and the collector.
func WithTimings(ctx context.Context) (context.Context, *Timings) {
	t := new(Timings)
	return context.WithValue(ctx, timingsKey{}, t), t
}

// AddTiming adds d to hop name of the call in ctx (times of one hop add
// up); without a collector in ctx it does nothing.
func AddTiming(ctx context.Context, name string, d time.Duration) {
	t, _ := ctx.Value(timingsKey{}).(*Timings)
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := range t.st {
		if t.st[i].Name == name {
			t.st[i].Dur += max(d, 0)
			return
		}
	}
	t.st.Add(name, d)
}

// Snapshot returns the hops so far.
func (t *Timings) Snapshot() protocol.ServerTiming {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append(protocol.ServerTiming(nil), t.st...)
}
