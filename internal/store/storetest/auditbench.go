package storetest

import (
	"crypto/sha256"
	"fmt"
	"testing"
	"time"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/store"
)

// BenchAppendRecords measures appending audit records to s, an empty
// store, in batches of the given size, as the audit log's group commit
// does, and reports records/s. The records are like the broker's: about
// 300 bytes of JSON each, with a UUID-like ID, and a request or grant ID
// on some.
func BenchAppendRecords(b *testing.B, s store.Store, batch int) {
	ctx := b.Context()
	recs := make([]audit.Record, batch)
	for i := range recs {
		r := &recs[i]
		r.Type = []audit.Type{"query.allowed", "query.finished", "prom.allowed", "grant.issued"}[i%4]
		r.Subject = fmt.Sprintf("user%d@vendor.test", i%50)
		r.Deployment = fmt.Sprintf("5f0c6a3e-8a8e-4f4e-9b9e-%012d", i%8)
		r.Data = fmt.Appendf(nil, `{"v":1,"id":"0190a1b2-c3d4-7e5f-8a9b-%012d","time":"2030-03-04T05:06:07.123456789Z","type":%q,`+
			`"actor":{"subject":%q,"issuer":"https://accounts.vendor.test","tenant":"acme","role":"sre"},"deployment":%q,`+
			`"source":{"tailnet_node":"laptop.tail1234.ts.net.","ip":"100.64.0.9"},"outcome":"success","details":{"rows":42}}`,
			i, r.Type, r.Subject, r.Deployment)
		r.LeafHash = sha256.Sum256(append([]byte{0}, r.Data...))
	}
	var size, bytes int
	for _, r := range recs {
		bytes += len(r.Data)
	}
	b.SetBytes(int64(bytes))
	now := time.Now()
	for b.Loop() {
		for i := range recs {
			r := &recs[i]
			r.Index = uint64(size + i)
			// A UUID-like ID in index order, like UUIDv7s.
			r.ID = "0190a1b2-c3d4-7e5f-8a9b-" + fmt.Sprintf("%012d", size+i)
			r.Time = now.Add(time.Duration(size+i) * time.Microsecond)
			// Half the events belong to a request, a quarter to a grant,
			// whose IDs are UUIDv7s too, in time order.
			if i%2 == 0 {
				r.RequestID = fmt.Sprintf("0190a1b2-c3d4-7e5f-8a9b-%012d", (size+i)/8)
			}
			if i%4 == 0 {
				r.GrantID = fmt.Sprintf("0190a1b2-c3d4-7e5f-9a9b-%012d", (size+i)/16)
			}
		}
		if err := s.AppendRecords(ctx, recs); err != nil {
			b.Fatalf("AppendRecords(%s) error = %v", describeRecords(recs), err)
		}
		size += batch
	}
	b.ReportMetric(float64(size)/b.Elapsed().Seconds(), "records/s")
}
