package broker_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/protocol"
)

// accessBench is a data plane with the dev users' clients.
type accessBench struct {
	*dataPlane
	eng, acme *brokerapi.Client
}

func startAccessBench(b *testing.B) *accessBench {
	d := startDataPlane(b)
	return &accessBench{dataPlane: d, eng: asUser(b, d.b, "engineer@vendor.test"), acme: asUser(b, d.b, "approver@acme.test")}
}

var benchAsk = brokerapi.CreateAccessRequest{Deployment: "acme/prod", Scopes: []string{"clickhouse:system"}, Duration: "30m", Reason: "bench"}

// BenchmarkApprovalToGrant: from the approver's call to a grant the
// engineer can use (the approve call returns once the grant is issued,
// audited and stored). Target ≤ 50 ms.
func BenchmarkApprovalToGrant(b *testing.B) {
	ab := startAccessBench(b)
	ctx := context.Background()
	var lat []time.Duration
	for b.Loop() {
		b.StopTimer()
		ar, err := ab.eng.CreateRequest(ctx, benchAsk)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		ar, err = ab.acme.Approve(ctx, ar.ID, "")
		if err != nil || ar.State != brokerapi.StateActive {
			b.Fatalf("approve = %v, %v", ar.State, err)
		}
		lat = append(lat, time.Since(start))
	}
	reportPercentiles(b, lat)
}

// BenchmarkGrantPlusFirstQuery: the last approval of a pending request
// (which issues, audits and stores its grant) and the engineer's first
// query under it, through broker → tailnet → agent → ClickHouse, many at
// once. The requests are made before the clock starts. Target ≥ 400 per
// second on one broker (SQLite).
func BenchmarkGrantPlusFirstQuery(b *testing.B) {
	ab := startAccessBench(b)
	ctx := context.Background()
	ids := make(chan string, b.N)
	for range b.N {
		ar, err := ab.eng.CreateRequest(ctx, benchAsk)
		if err != nil {
			b.Fatal(err)
		}
		ids <- ar.ID
	}
	b.SetParallelism(16)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := <-ids
			if _, err := ab.acme.Approve(ctx, id, ""); err != nil {
				b.Error(err)
				return
			}
			// The engineer holds many grants here; name this one.
			rc, err := queryWithGrant(ctx, ab, id, "SELECT 1 FROM system.one")
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, rc)
			rc.Close()
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "grants+query/s")
}

// queryWithGrant runs sql under the grant of request id.
func queryWithGrant(ctx context.Context, ab *accessBench, id, sql string) (io.ReadCloser, error) {
	tok := ab.tokenOf(id)
	body, _ := json.Marshal(protocol.ClickHouseQuery{SQL: sql})
	res, err := ab.eng.DataPlane(ctx, http.MethodPost, "acme/prod", "clickhouse/query", strings.NewReader(string(body)),
		http.Header{"Content-Type": {"application/json"}, protocol.HeaderGrant: {tok}})
	if err != nil {
		return nil, err
	}
	if res.StatusCode != http.StatusOK {
		defer res.Body.Close()
		return nil, brokerapi.ErrorFromResponse(res)
	}
	return res.Body, nil
}

var tokenMu sync.Mutex

// tokenOf reads a request's grant token from the broker's store (the API
// never shows it), standing in for an engineer holding several grants.
func (ab *accessBench) tokenOf(id string) string {
	tokenMu.Lock()
	defer tokenMu.Unlock()
	ar, err := ab.b.Store().GetRequest(context.Background(), id)
	if err != nil || ar.Grant == nil {
		return ""
	}
	return ar.Grant.Token
}

// BenchmarkSelect1Overhead measures SELECT 1 through broker → tailnet →
// agent → ClickHouse and directly to ClickHouse, side by side in one
// run, and reports the median latency each adds. Target: p50 added ≤ 1 ms.
func BenchmarkSelect1Overhead(b *testing.B) {
	ab := startAccessBench(b)
	ctx := context.Background()
	ar, err := ab.eng.CreateRequest(ctx, benchAsk)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := ab.acme.Approve(ctx, ar.ID, ""); err != nil {
		b.Fatal(err)
	}
	direct := func() {
		res, err := http.Post(ab.ch.URL+"/?"+url.Values{"user": {"tether"}, "password": {"tether-test"}}.Encode(), "text/plain", strings.NewReader("SELECT 1"))
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
	}
	through := func() {
		rc, err := ab.eng.QueryClickHouse(ctx, "acme/prod", "SELECT 1", "")
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, rc)
		rc.Close()
	}
	var dl, tl []time.Duration
	for b.Loop() {
		s := time.Now()
		direct()
		dl = append(dl, time.Since(s))
		s = time.Now()
		through()
		tl = append(tl, time.Since(s))
	}
	slices.Sort(dl)
	slices.Sort(tl)
	p50d, p50t := dl[len(dl)/2], tl[len(tl)/2]
	b.ReportMetric(float64(p50d.Microseconds())/1000, "direct-p50-ms")
	b.ReportMetric(float64(p50t.Microseconds())/1000, "through-p50-ms")
	b.ReportMetric(float64((p50t-p50d).Microseconds())/1000, "added-p50-ms")
}

// BenchmarkRevocationToRefusal: from the revoke call to the agent
// refusing the grant (the revoke call returns once the agent has it).
// Target ≤ 1 s.
func BenchmarkRevocationToRefusal(b *testing.B) {
	ab := startAccessBench(b)
	ctx := context.Background()
	var lat []time.Duration
	for b.Loop() {
		b.StopTimer()
		ar, err := ab.eng.CreateRequest(ctx, benchAsk)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := ab.acme.Approve(ctx, ar.ID, ""); err != nil {
			b.Fatal(err)
		}
		tok := ab.tokenOf(ar.ID)
		b.StartTimer()
		start := time.Now()
		if _, err := ab.acme.Revoke(ctx, ar.ID, "bench"); err != nil {
			b.Fatal(err)
		}
		// Straight to the agent, bypassing the broker's own check.
		status, _ := ab.sql(b, tok, "SELECT 1 FROM system.one")
		if status != http.StatusForbidden {
			b.Fatalf("agent after revocation = %d, want 403", status)
		}
		lat = append(lat, time.Since(start))
	}
	reportPercentiles(b, lat)
}
