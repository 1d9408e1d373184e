package broker_test

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/broker"
	"github.com/tetherhq/tether/internal/brokertest"
	"github.com/tetherhq/tether/internal/store/sqlitestore"
)

// seedAudit appends n events of about 1 KB each to the broker store at
// path, as a broker would have recorded them (no checkpoint yet: the
// broker checks them in full when it opens and signs one).
func seedAudit(t *testing.T, path string, n int) {
	t.Helper()
	ctx := context.Background()
	st, err := sqlitestore.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	pad := strings.Repeat("x", 800)
	at := time.Now().Add(-time.Hour).UTC()
	const batch = 10_000
	recs := make([]audit.Record, 0, batch)
	for i := 0; i < n; {
		recs = recs[:0]
		for ; i < n && len(recs) < batch; i++ {
			e := audit.Event{Version: audit.SchemaVersion, ID: uuid.Must(uuid.NewV7()).String(), Time: at.Add(time.Duration(i) * time.Millisecond),
				Type: audit.QueryAllowed, Outcome: audit.Success, Deployment: "dep-1", GrantID: fmt.Sprint("g-", i/100),
				Actor: audit.Actor{Subject: "engineer@vendor.test", Role: "engineer"}, Details: map[string]any{"sql": pad, "i": i}}
			data, err := e.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			recs = append(recs, audit.Record{Index: uint64(i), ID: e.ID, Time: e.Time, Type: e.Type, Subject: e.Actor.Subject,
				Deployment: e.Deployment, GrantID: e.GrantID, Data: data, LeafHash: audit.LeafHash(data)})
		}
		if err := st.AppendRecords(ctx, recs); err != nil {
			t.Fatal(err)
		}
	}
}

// TestAuditExportConstantMemory: four concurrent exports of a log of
// 200,000 events of about 1 KB (some 210 MB each) stream from the store:
// the process's heap in use (broker and clients, sampled every 5 ms,
// with the collector set to run at 10% growth) grows by less than 64 MB,
// where an export built in memory took more than its own size; and each
// export verifies.
func TestAuditExportConstantMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("writes a 200 MB audit log")
	}
	const events, exports, bound = 200_000, 4, 64 << 20
	dir := t.TempDir()
	seedAudit(t, filepath.Join(dir, "tether.db"), events)
	b := brokertest.Start(t, func(c *broker.Config) { c.DataDir = dir })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	key, err := b.Client.AuditPublicKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	lv, err := audit.NewVerifier(key.VerifierKey)
	if err != nil {
		t.Fatal(err)
	}

	// Collect garbage often, so that heap in use follows what the
	// exports hold rather than how much garbage the collector lets pile
	// up (by default, as much again as the live heap).
	defer debug.SetGCPercent(debug.SetGCPercent(10))
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
		}
	}()
	var wg sync.WaitGroup
	reports := make([]audit.Report, exports)
	errs := make([]error, exports)
	for i := range exports {
		wg.Go(func() {
			pr, pw := io.Pipe()
			go func() { pw.CloseWithError(b.Client.AuditExport(ctx, pw, time.Time{}, time.Time{})) }()
			reports[i], errs[i] = audit.Verify(pr, audit.VerifyOptions{Log: lv})
			pr.CloseWithError(io.EOF)
		})
	}
	wg.Wait()
	close(stop)
	<-sampled
	for i := range exports {
		if errs[i] != nil {
			t.Fatalf("export %d: Verify = %v", i, errs[i])
		}
		if reports[i].Events < events {
			t.Errorf("export %d verified %d events, want at least %d", i, reports[i].Events, events)
		}
	}
	growth := int64(peak.Load()) - int64(base)
	t.Logf("%d concurrent exports of %d events: heap in use grew by %.1f MB at most (from %.1f MB)", exports, events, float64(growth)/(1<<20), float64(base)/(1<<20))
	if growth > bound {
		t.Errorf("heap in use grew by %.1f MB during %d concurrent exports, want under %d MB: the export is not streamed", float64(growth)/(1<<20), exports, bound>>20)
	}
}
