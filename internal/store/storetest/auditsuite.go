package storetest

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/store"
)

// auditTests are the conformance tests of the audit log's storage, which
// [Run] runs with the others.
var auditTests = []struct {
	name string
	test func(t *testing.T, s store.Store)
}{
	{"AuditEmpty", testAuditEmpty},
	{"AuditAppendAndRead", testAuditAppendAndRead},
	{"AuditAppendNotContinuing", testAuditAppendNotContinuing},
	{"AuditAppendDuplicateID", testAuditAppendDuplicateID},
	{"AuditConcurrentAppends", testAuditConcurrentAppends},
	{"AuditRecordsFilter", testAuditRecordsFilter},
	{"AuditExistingIDs", testAuditExistingIDs},
	{"AuditLeafHashes", testAuditLeafHashes},
	{"AuditNodeHashes", testAuditNodeHashes},
	{"AuditCheckpoints", testAuditCheckpoints},
	{"AuditCosignatures", testAuditCosignatures},
}

// auditZone is a zone other than UTC for the records' times, which stores
// return in UTC.
var auditZone = time.FixedZone("UTC+5:30", 5*3600+1800)

// auditRecord returns the suite's record i, with index i and every field
// set from i. Its time has sub-millisecond precision, which stores may
// drop, and its data holds bytes that are not UTF-8.
func auditRecord(i uint64) audit.Record {
	id := fmt.Sprintf("evt-%06d", i)
	r := audit.Record{
		Index:      i,
		ID:         id,
		Time:       t0.Add(time.Duration(i)*1500*time.Microsecond + 123*time.Nanosecond).In(auditZone),
		Type:       []audit.Type{"query.allowed", "query.denied", "grant.issued", "auth.failed"}[i%4],
		Subject:    []string{"alice@vendor.test", "bob@vendor.test", "agent:7"}[i%3],
		Deployment: []string{"dep-a", "dep-b"}[i%2],
		Data:       fmt.Appendf(nil, "{\"id\":%q,\"seq\":%d,\"raw\":\"\x00\xff\xfe\n\"}", id, i),
	}
	// Every fifth is about no deployment, by an actor of a tenant.
	if i%5 == 0 {
		r.Deployment, r.ActorTenant = "", []string{"acme", "globex"}[i/5%2]
	}
	// Most events belong to no request and no grant.
	if i%3 != 0 {
		r.RequestID = fmt.Sprintf("req-%d", i/4)
	}
	if i%4 == 0 {
		r.GrantID = fmt.Sprintf("grant-%d", i/8)
	}
	r.LeafHash = sha256.Sum256(append([]byte{0}, r.Data...))
	return r
}

// auditRecords returns the suite's records [from, to).
func auditRecords(from, to uint64) []audit.Record {
	var recs []audit.Record
	for i := from; i < to; i++ {
		recs = append(recs, auditRecord(i))
	}
	return recs
}

// asStored returns recs as a store returns them: times truncated to the
// millisecond, in UTC.
func asStored(recs []audit.Record) []audit.Record {
	out := make([]audit.Record, len(recs))
	for i, r := range recs {
		r.Time = r.Time.Truncate(time.Millisecond).UTC()
		out[i] = r
	}
	return out
}

// appendAudit appends recs, which must succeed.
func appendAudit(t *testing.T, s store.Store, recs []audit.Record) {
	t.Helper()
	if err := s.AppendRecords(t.Context(), recs); err != nil {
		t.Fatalf("AppendRecords(%s) error = %v", describeRecords(recs), err)
	}
}

// describeRecords names a batch of records in failure messages.
func describeRecords(recs []audit.Record) string {
	if len(recs) == 0 {
		return "no records"
	}
	return fmt.Sprintf("%d records from index %d", len(recs), recs[0].Index)
}

// checkAuditSize checks that the log's size is want.
func checkAuditSize(t *testing.T, s store.Store, want uint64) {
	t.Helper()
	if got, err := s.AuditSize(t.Context()); err != nil || got != want {
		t.Errorf("AuditSize() = %d, %v, want %d, nil", got, err, want)
	}
}

// checkAuditRecords checks that Records(f) returns want.
func checkAuditRecords(t *testing.T, s store.Store, f audit.Filter, want []audit.Record) {
	t.Helper()
	got, err := s.Records(t.Context(), f)
	if err != nil {
		t.Errorf("Records(%+v) error = %v", f, err)
		return
	}
	if len(got) == 0 && len(want) == 0 {
		return
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Records(%+v) = %s, want %s", f, formatRecords(got), formatRecords(want))
	}
}

// formatRecords shows records in failure messages: in full if there are
// few, by index otherwise.
func formatRecords(recs []audit.Record) string {
	if len(recs) <= 3 {
		return fmt.Sprintf("%+v", recs)
	}
	idx := make([]uint64, len(recs))
	for i, r := range recs {
		idx[i] = r.Index
	}
	return fmt.Sprintf("records %v", idx)
}

func testAuditEmpty(t *testing.T, s store.Store) {
	ctx := t.Context()
	checkAuditSize(t, s, 0)
	checkAuditRecords(t, s, audit.Filter{}, nil)
	if got, err := s.LeafHashes(ctx, 0, 10); err != nil || len(got) != 0 {
		t.Errorf("LeafHashes(0, 10) = %x, %v, want none, nil", got, err)
	}
	if c, ok, err := s.LatestCheckpoint(ctx); err != nil || ok {
		t.Errorf("LatestCheckpoint() = %+v, %v, %v, want false, nil", c, ok, err)
	}
	if got, err := s.Checkpoints(ctx, 0, math.MaxUint64); err != nil || len(got) != 0 {
		t.Errorf("Checkpoints(0, max) = %+v, %v, want none, nil", got, err)
	}
	if got, err := s.Cosignatures(ctx, 0, math.MaxUint64); err != nil || len(got) != 0 {
		t.Errorf("Cosignatures(0, max) = %+v, %v, want none, nil", got, err)
	}
	if got, err := s.ExistingIDs(ctx, nil); err != nil || len(got) != 0 {
		t.Errorf("ExistingIDs(nil) = %v, %v, want none, nil", got, err)
	}
	// Appending nothing is allowed and appends nothing.
	if err := s.AppendRecords(ctx, nil); err != nil {
		t.Errorf("AppendRecords(nil) error = %v", err)
	}
	checkAuditSize(t, s, 0)
}

func testAuditAppendAndRead(t *testing.T, s store.Store) {
	// Batches of one record, of a few, and of more than a store may put
	// in one statement.
	var n uint64
	for _, size := range []uint64{1, 7, 250, 1} {
		appendAudit(t, s, auditRecords(n, n+size))
		n += size
		checkAuditSize(t, s, n)
	}

	want := asStored(auditRecords(0, n))
	checkAuditRecords(t, s, audit.Filter{}, want)
	for i, r := range want {
		if orig := auditRecord(uint64(i)); !r.Time.Equal(orig.Time.Truncate(time.Millisecond)) {
			t.Fatalf("suite error: record %d's time %v is not %v truncated", i, r.Time, orig.Time)
		}
	}
	hashes, err := s.LeafHashes(t.Context(), 0, n)
	if err != nil || len(hashes) != int(n) {
		t.Fatalf("LeafHashes(0, %d) = %d hashes, %v, want %d, nil", n, len(hashes), err, n)
	}
	for i, h := range hashes {
		if h != want[i].LeafHash {
			t.Errorf("LeafHashes(0, %d)[%d] = %x, want %x", n, i, h, want[i].LeafHash)
		}
	}
	// A record with empty optional fields, at the zero time.
	bare := audit.Record{Index: n, ID: "evt-bare", Data: []byte("{}")}
	bare.LeafHash = sha256.Sum256([]byte("\x00{}"))
	appendAudit(t, s, []audit.Record{bare})
	checkAuditRecords(t, s, audit.Filter{FromIndex: n}, []audit.Record{bare})
}

func testAuditAppendNotContinuing(t *testing.T, s store.Store) {
	ctx := t.Context()
	appendAudit(t, s, auditRecords(0, 5))

	gap := auditRecords(5, 9)
	gap[3].Index = 9 // 5, 6, 7, 9
	repeat := auditRecords(5, 8)
	repeat[2].Index = 6 // 5, 6, 6
	noID := auditRecords(5, 7)
	noID[1].ID = ""
	tests := []struct {
		name string
		recs []audit.Record
	}{
		{"overlapping the log", auditRecords(4, 8)},
		{"from 0 again", auditRecords(0, 3)},
		{"leaving a gap", auditRecords(6, 8)},
		{"far beyond the log", auditRecords(1000, 1001)},
		{"with a gap inside", gap},
		{"with an index twice", repeat},
		{"with an empty ID", noID},
	}
	for _, tt := range tests {
		if err := s.AppendRecords(ctx, tt.recs); err == nil {
			t.Errorf("%s: AppendRecords(indexes %v) error = nil, want an error", tt.name, indexes(tt.recs))
		} else if errors.Is(err, store.ErrConflict) {
			t.Errorf("%s: AppendRecords(indexes %v) error = %v, want one not wrapping %v", tt.name, indexes(tt.recs), err, store.ErrConflict)
		}
	}
	checkAuditSize(t, s, 5)
	checkAuditRecords(t, s, audit.Filter{}, asStored(auditRecords(0, 5)))
	// The log goes on where it ended.
	appendAudit(t, s, auditRecords(5, 9))
	checkAuditRecords(t, s, audit.Filter{}, asStored(auditRecords(0, 9)))
}

func indexes(recs []audit.Record) []uint64 {
	idx := make([]uint64, len(recs))
	for i, r := range recs {
		idx[i] = r.Index
	}
	return idx
}

func testAuditAppendDuplicateID(t *testing.T, s store.Store) {
	ctx := t.Context()
	appendAudit(t, s, auditRecords(0, 10))

	storedLast := auditRecords(10, 20)
	storedLast[9].ID = "evt-000003"
	storedLate := auditRecords(10, 260) // its first statements' worth are fine
	storedLate[230].ID = "evt-000009"
	twice := auditRecords(10, 14)
	twice[3].ID = twice[0].ID
	tests := []struct {
		name string
		recs []audit.Record
	}{
		{"stored, in a small batch", storedLast},
		{"stored, late in a large batch", storedLate},
		{"twice in the batch", twice},
	}
	for _, tt := range tests {
		err := s.AppendRecords(ctx, tt.recs)
		if !errors.Is(err, store.ErrConflict) {
			t.Errorf("%s: AppendRecords(%s) error = %v, want %v", tt.name, describeRecords(tt.recs), err, store.ErrConflict)
		}
		// Nothing of the batch was stored.
		checkAuditSize(t, s, 10)
		ids := make([]string, len(tt.recs))
		for i, r := range tt.recs {
			ids[i] = r.ID
		}
		existing, err := s.ExistingIDs(ctx, ids)
		if err != nil {
			t.Fatalf("ExistingIDs(%d IDs) error = %v", len(ids), err)
		}
		for id := range existing {
			if id != "evt-000003" && id != "evt-000009" {
				t.Errorf("%s: after the failed append, event %s is stored", tt.name, id)
			}
		}
	}
	checkAuditRecords(t, s, audit.Filter{}, asStored(auditRecords(0, 10)))
}

func testAuditConcurrentAppends(t *testing.T, s store.Store) {
	ctx := t.Context()
	appendAudit(t, s, auditRecords(0, 3))

	// Racers each append batches at the end of the log as they find it,
	// and try again where another got there first: every batch is stored
	// once, whole, and no append reports a conflict of IDs, all new.
	const batch, rounds = 5, 6
	var start, wg sync.WaitGroup
	start.Add(1)
	for i := range racers {
		wg.Go(func() {
			start.Wait()
			for r, tries := 0, 0; r < rounds; tries++ {
				if tries == 100*racers*rounds {
					t.Errorf("racer %d: %d appends failed, with %d batches of %d stored", i, tries-r, r, rounds)
					return
				}
				size, err := s.AuditSize(ctx)
				if err != nil {
					t.Errorf("racer %d: AuditSize() error = %v", i, err)
					return
				}
				recs := auditRecords(size, size+batch)
				for j := range recs {
					recs[j].ID = fmt.Sprintf("racer-%d-%d-%d", i, r, j)
				}
				err = s.AppendRecords(ctx, recs)
				if errors.Is(err, store.ErrConflict) {
					t.Errorf("racer %d: AppendRecords(%s) error = %v, want nil or one not wrapping %v", i, describeRecords(recs), err, store.ErrConflict)
					return
				}
				if err == nil {
					r++
				}
			}
		})
	}
	start.Done()
	wg.Wait()
	if t.Failed() {
		return
	}

	const n = 3 + racers*rounds*batch
	checkAuditSize(t, s, n)
	recs, err := s.Records(ctx, audit.Filter{FromIndex: 3})
	if err != nil || len(recs) != n-3 {
		t.Fatalf("Records(from 3) = %d records, %v, want %d, nil", len(recs), err, n-3)
	}
	for k := 0; k < len(recs); k += batch {
		var i, r int
		if _, err := fmt.Sscanf(recs[k].ID, "racer-%d-%d-0", &i, &r); err != nil {
			t.Fatalf("Records(from 3)[%d].ID = %q, want the first of a racer's batch", k, recs[k].ID)
		}
		for j := range batch {
			if got, want := recs[k+j].ID, fmt.Sprintf("racer-%d-%d-%d", i, r, j); got != want {
				t.Errorf("Records(from 3)[%d].ID = %q, want %q: batches are stored whole", k+j, got, want)
			}
		}
	}
}

// matchesFilter is what a Filter means, for records whose times have
// millisecond precision and filters whose times do.
func matchesFilter(r audit.Record, f audit.Filter) bool {
	switch {
	case f.Subject != "" && r.Subject != f.Subject,
		f.Deployment != "" && r.Deployment != f.Deployment,
		f.Type != "" && r.Type != f.Type,
		f.GrantID != "" && r.GrantID != f.GrantID,
		f.RequestID != "" && r.RequestID != f.RequestID,
		!f.Since.IsZero() && r.Time.Before(f.Since),
		!f.Until.IsZero() && !r.Time.Before(f.Until),
		r.Index < f.FromIndex,
		f.ToIndex != 0 && r.Index >= f.ToIndex:
		return false
	}
	if f.Tenant != nil {
		if f.Tenant.Tenant == "" {
			return false
		}
		if r.Deployment != "" {
			return slices.Contains(f.Tenant.Deployments, r.Deployment)
		}
		return r.ActorTenant == f.Tenant.Tenant
	}
	return true
}

func testAuditRecordsFilter(t *testing.T, s store.Store) {
	const n = 120
	acme := &audit.TenantScope{Tenant: "acme", Deployments: []string{"dep-a"}}
	manyDeployments := &audit.TenantScope{Tenant: "acme", Deployments: []string{"dep-a"}}
	for i := range 100 {
		manyDeployments.Deployments = append(manyDeployments.Deployments, fmt.Sprintf("dep-x%d", i))
	}
	appendAudit(t, s, auditRecords(0, n))
	all := asStored(auditRecords(0, n))
	at := func(i int) time.Time { return all[i].Time }

	tests := []struct {
		f    audit.Filter
		want []uint64 // nil: whatever matchesFilter says
	}{
		{f: audit.Filter{}},
		{f: audit.Filter{Subject: "bob@vendor.test"}},
		{f: audit.Filter{Subject: "nobody"}, want: []uint64{}},
		{f: audit.Filter{Deployment: "dep-b"}},
		{f: audit.Filter{Type: "grant.issued"}},
		{f: audit.Filter{GrantID: "grant-3"}, want: []uint64{24, 28}},
		{f: audit.Filter{RequestID: "req-5"}, want: []uint64{20, 22, 23}},
		{f: audit.Filter{RequestID: "req-7", GrantID: "grant-3"}, want: []uint64{28}},
		{f: audit.Filter{Since: at(100)}},
		{f: audit.Filter{Until: at(7)}, want: []uint64{0, 1, 2, 3, 4, 5, 6}},
		{f: audit.Filter{Since: at(10), Until: at(13)}, want: []uint64{10, 11, 12}},
		{f: audit.Filter{Since: at(10), Until: at(10)}, want: []uint64{}},
		{f: audit.Filter{Since: at(10).Add(time.Millisecond), Until: at(12).Add(time.Millisecond)}, want: []uint64{11, 12}},
		{f: audit.Filter{Since: at(n - 1).Add(time.Millisecond)}, want: []uint64{}},
		{f: audit.Filter{FromIndex: 115}, want: []uint64{115, 116, 117, 118, 119}},
		{f: audit.Filter{ToIndex: 3}, want: []uint64{0, 1, 2}},
		{f: audit.Filter{FromIndex: 50, ToIndex: 53}, want: []uint64{50, 51, 52}},
		{f: audit.Filter{FromIndex: 50, ToIndex: 50}, want: []uint64{}},
		{f: audit.Filter{FromIndex: n}, want: []uint64{}},
		{f: audit.Filter{FromIndex: math.MaxUint64}, want: []uint64{}},
		{f: audit.Filter{FromIndex: 118, ToIndex: math.MaxUint64}, want: []uint64{118, 119}},
		{f: audit.Filter{Limit: 3}, want: []uint64{0, 1, 2}},
		{f: audit.Filter{Limit: 2 * n}},
		{f: audit.Filter{Subject: "agent:7", Limit: 3}, want: []uint64{2, 5, 8}},
		{f: audit.Filter{FromIndex: 100, Subject: "agent:7", Limit: 2}, want: []uint64{101, 104}},
		{f: audit.Filter{Deployment: "dep-a", Type: "query.denied"}, want: []uint64{}},
		{f: audit.Filter{Deployment: "dep-a", Type: "grant.issued", Subject: "alice@vendor.test", Since: at(20), Until: at(80)}},
		{f: audit.Filter{Subject: "agent:7", Deployment: "dep-b", Type: "query.denied", RequestID: "req-10",
			Since: at(30), Until: at(90), FromIndex: 40, ToIndex: 60, Limit: 10}, want: []uint64{41}},
		// Newest first.
		{f: audit.Filter{Descending: true, Limit: 3}, want: []uint64{119, 118, 117}},
		{f: audit.Filter{Descending: true, ToIndex: 50, Subject: "agent:7", Limit: 2}, want: []uint64{47, 44}},
		{f: audit.Filter{Descending: true, Deployment: "dep-b"}},
		// A tenant's events: its deployments', and its actors' events
		// about no deployment.
		{f: audit.Filter{Tenant: acme}},
		{f: audit.Filter{Tenant: acme, Limit: 4}, want: []uint64{0, 2, 4, 6}},
		{f: audit.Filter{Tenant: acme, Limit: 4, FromIndex: 7}, want: []uint64{8, 10, 12, 14}},
		{f: audit.Filter{Tenant: acme, Limit: 4, Descending: true}, want: []uint64{118, 116, 114, 112}},
		{f: audit.Filter{Tenant: acme, Limit: 3, Descending: true, ToIndex: 101}, want: []uint64{100, 98, 96}},
		{f: audit.Filter{Tenant: &audit.TenantScope{Tenant: "globex", Deployments: []string{"dep-b"}}, Limit: 4}, want: []uint64{1, 3, 5, 7}},
		{f: audit.Filter{Tenant: &audit.TenantScope{Tenant: "globex", Deployments: []string{}}, Limit: 3}, want: []uint64{5, 15, 25}},
		{f: audit.Filter{Tenant: &audit.TenantScope{Tenant: "acme", Deployments: []string{"dep-a", "dep-b"}}, Type: "grant.issued"}},
		{f: audit.Filter{Tenant: acme, Deployment: "dep-a", Subject: "bob@vendor.test"}},
		{f: audit.Filter{Tenant: acme, Deployment: "dep-b"}, want: []uint64{}},
		{f: audit.Filter{Tenant: &audit.TenantScope{Deployments: []string{"dep-a"}}}, want: []uint64{}},
		{f: audit.Filter{Tenant: &audit.TenantScope{Tenant: "initech", Deployments: []string{"dep-c"}}}, want: []uint64{}},
		// More deployments than a search has branches.
		{f: audit.Filter{Tenant: manyDeployments, Limit: 5}, want: []uint64{0, 2, 4, 6, 8}},
		{f: audit.Filter{Tenant: manyDeployments, Limit: 5, Descending: true}, want: []uint64{118, 116, 114, 112, 110}},
	}
	for _, tt := range tests {
		var want []audit.Record
		if tt.want != nil {
			for _, i := range tt.want {
				want = append(want, all[i])
			}
		} else {
			for _, r := range all {
				if matchesFilter(r, tt.f) {
					want = append(want, r)
				}
			}
			if tt.f.Descending {
				slices.Reverse(want)
			}
			if tt.f.Limit > 0 && len(want) > tt.f.Limit {
				want = want[:tt.f.Limit]
			}
			if len(want) == 0 {
				t.Fatalf("suite error: nothing matches filter %+v: choose one that does", tt.f)
			}
		}
		// The expectations written out agree with the filter's meaning.
		for _, r := range want {
			if !matchesFilter(r, tt.f) {
				t.Fatalf("suite error: filter %+v does not match record %d", tt.f, r.Index)
			}
		}
		checkAuditRecords(t, s, tt.f, want)
	}
}

func testAuditExistingIDs(t *testing.T, s store.Store) {
	// More than a store may look up at once.
	const n = 1234
	appendAudit(t, s, auditRecords(0, 1000))
	appendAudit(t, s, auditRecords(1000, n))

	var ids []string
	want := map[string]bool{}
	for i := range uint64(n) {
		if i%5 == 0 {
			continue
		}
		id := auditRecord(i).ID
		ids = append(ids, id, "missing-"+id)
		want[id] = true
	}
	ids = append(ids, ids[0]) // asked twice
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
	got, err := s.ExistingIDs(t.Context(), ids)
	if err != nil {
		t.Fatalf("ExistingIDs(%d IDs) error = %v", len(ids), err)
	}
	if !reflect.DeepEqual(got, want) {
		var extra, missing []string
		for id := range got {
			if !want[id] {
				extra = append(extra, id)
			}
		}
		for id := range want {
			if !got[id] {
				missing = append(missing, id)
			}
		}
		slices.Sort(extra)
		slices.Sort(missing)
		t.Errorf("ExistingIDs(%d IDs) = %d IDs, want %d: unexpected %v, missing %v", len(ids), len(got), len(want), extra, missing)
	}
	if got, err := s.ExistingIDs(t.Context(), []string{}); err != nil || len(got) != 0 {
		t.Errorf("ExistingIDs([]) = %v, %v, want none, nil", got, err)
	}
}

func testAuditLeafHashes(t *testing.T, s store.Store) {
	const n = 300
	appendAudit(t, s, auditRecords(0, n))
	tests := []struct {
		from, to uint64
		want     [2]uint64 // the indexes [from, to) of the hashes returned
	}{
		{0, n, [2]uint64{0, n}},
		{3, 7, [2]uint64{3, 7}},
		{n - 1, n, [2]uint64{n - 1, n}},
		{0, 1, [2]uint64{0, 1}},
		{5, 5, [2]uint64{5, 5}},
		{7, 5, [2]uint64{7, 7}},
		// Beyond the log: what there is.
		{n - 2, n + 5, [2]uint64{n - 2, n}},
		{n, n + 5, [2]uint64{n, n}},
		{10, math.MaxUint64, [2]uint64{10, n}},
	}
	for _, tt := range tests {
		got, err := s.LeafHashes(t.Context(), tt.from, tt.to)
		if err != nil {
			t.Errorf("LeafHashes(%d, %d) error = %v", tt.from, tt.to, err)
			continue
		}
		var want [][32]byte
		for i := tt.want[0]; i < tt.want[1]; i++ {
			want = append(want, auditRecord(i).LeafHash)
		}
		if len(got) != 0 || len(want) != 0 {
			if !reflect.DeepEqual(got, want) {
				t.Errorf("LeafHashes(%d, %d) = %d hashes, want the %d of records [%d, %d)", tt.from, tt.to, len(got), len(want), tt.want[0], tt.want[1])
			}
		}
	}
}

// auditCheckpoint returns the suite's checkpoint of the given size, its
// time with sub-millisecond precision.
func auditCheckpoint(size uint64) audit.StoredCheckpoint {
	return audit.StoredCheckpoint{
		Size: size,
		Root: sha256.Sum256(fmt.Appendf(nil, "root %d", size)),
		Time: t0.Add(time.Duration(size)*time.Second + 456*time.Microsecond).In(auditZone),
		Note: fmt.Sprintf("tether-audit/0123456789abcdef\n%d\nroot%d=\n\n— tether-audit/0123456789abcdef sig%d\n", size, size, size),
	}
}

// checkpointAsStored returns c as a store returns it.
func checkpointAsStored(c audit.StoredCheckpoint) audit.StoredCheckpoint {
	c.Time = c.Time.Truncate(time.Millisecond).UTC()
	return c
}

func testAuditCheckpoints(t *testing.T, s store.Store) {
	ctx := t.Context()
	for _, size := range []uint64{5, 10, 20} {
		if err := s.AddCheckpoint(ctx, auditCheckpoint(size)); err != nil {
			t.Fatalf("AddCheckpoint(size %d) error = %v", size, err)
		}
		want := checkpointAsStored(auditCheckpoint(size))
		if got, ok, err := s.LatestCheckpoint(ctx); err != nil || !ok || !reflect.DeepEqual(got, want) {
			t.Errorf("LatestCheckpoint() = %+v, %v, %v, want %+v, true, nil", got, ok, err, want)
		}
	}

	// Sizes only grow; storing one again is a no-op.
	other := auditCheckpoint(20)
	other.Root[0] ^= 1
	otherTime := auditCheckpoint(20)
	otherTime.Time = otherTime.Time.Add(time.Second)
	again := auditCheckpoint(20)
	again.Time = again.Time.Add(time.Microsecond) // the same to the millisecond
	tests := []struct {
		name    string
		c       audit.StoredCheckpoint
		wantErr bool
	}{
		{"smaller", auditCheckpoint(15), true},
		{"smallest", auditCheckpoint(0), true},
		{"latest again", auditCheckpoint(20), false},
		{"latest again, within the millisecond", again, false},
		{"earlier again", auditCheckpoint(10), false},
		{"latest with another root", other, true},
		{"latest at another time", otherTime, true},
	}
	for _, tt := range tests {
		if err := s.AddCheckpoint(ctx, tt.c); (err != nil) != tt.wantErr {
			t.Errorf("%s: AddCheckpoint(size %d) error = %v, want error: %t", tt.name, tt.c.Size, err, tt.wantErr)
		}
	}
	if err := s.AddCheckpoint(ctx, auditCheckpoint(25)); err != nil {
		t.Fatalf("AddCheckpoint(size 25) error = %v", err)
	}

	all := []audit.StoredCheckpoint{}
	for _, size := range []uint64{5, 10, 20, 25} {
		all = append(all, checkpointAsStored(auditCheckpoint(size)))
	}
	ranges := []struct {
		from, to uint64
		want     []audit.StoredCheckpoint
	}{
		{0, math.MaxUint64, all},
		{5, 25, all},
		{6, 20, all[1:3]},
		{10, 10, all[1:2]},
		{11, 19, nil},
		{26, math.MaxUint64, nil},
		{20, 10, nil},
	}
	for _, r := range ranges {
		got, err := s.Checkpoints(ctx, r.from, r.to)
		if err != nil || (len(got) != 0 || len(r.want) != 0) && !reflect.DeepEqual(got, r.want) {
			t.Errorf("Checkpoints(%d, %d) = %+v, %v, want %+v, nil", r.from, r.to, got, err, r.want)
		}
	}
	if got, ok, err := s.LatestCheckpoint(ctx); err != nil || !ok || !reflect.DeepEqual(got, all[3]) {
		t.Errorf("LatestCheckpoint() = %+v, %v, %v, want %+v, true, nil", got, ok, err, all[3])
	}
}

// auditCosignature returns the suite's cosignature of the checkpoint of
// the given size by witness.
func auditCosignature(size uint64, witness string) audit.Cosignature {
	return audit.Cosignature{
		Size:    size,
		Witness: witness,
		Note:    auditCheckpoint(size).Note + "— " + witness + " cosig\n",
		At:      t0.Add(time.Duration(size)*time.Second + 2*time.Second).In(auditZone),
	}
}

func testAuditCosignatures(t *testing.T, s store.Store) {
	ctx := t.Context()
	// Witnesses in byte order, which locale-aware collations do not keep:
	// upper before lower case, "-" before digits.
	w := []string{"tether-witness/B", "tether-witness/a-2", "tether-witness/a1", "tether-witness/b"}
	if !slices.IsSorted(w) {
		t.Fatalf("suite error: witnesses %q are not in byte order", w)
	}
	added := []audit.Cosignature{
		auditCosignature(10, w[3]), auditCosignature(10, w[0]), auditCosignature(5, w[2]),
		auditCosignature(20, w[1]), auditCosignature(10, w[2]), auditCosignature(10, w[1]),
	}
	// Some one at a time, the rest in one batch (as the broker
	// group-commits them).
	for _, c := range added[:2] {
		if err := s.AddCosignature(ctx, c); err != nil {
			t.Fatalf("AddCosignature(%d, %s) error = %v", c.Size, c.Witness, err)
		}
	}
	// Again, with another note: the first is kept, one at a time or in
	// a batch.
	again := auditCosignature(10, w[0])
	again.Note += "another\n"
	again.At = again.At.Add(time.Hour)
	if err := s.AddCosignature(ctx, again); err != nil {
		t.Errorf("AddCosignature(%d, %s) again error = %v, want nil", again.Size, again.Witness, err)
	}
	if err := s.AddCosignatures(ctx, append(slices.Clone(added[2:]), again)); err != nil {
		t.Fatalf("AddCosignatures(%d) error = %v", len(added)-1, err)
	}

	stored := func(size uint64, witness string) audit.Cosignature {
		c := auditCosignature(size, witness)
		c.At = c.At.UTC()
		return c
	}
	all := []audit.Cosignature{
		stored(5, w[2]), stored(10, w[0]), stored(10, w[1]), stored(10, w[2]), stored(10, w[3]), stored(20, w[1]),
	}
	ranges := []struct {
		from, to uint64
		want     []audit.Cosignature
	}{
		{0, math.MaxUint64, all},
		{10, 10, all[1:5]},
		{6, 19, all[1:5]},
		{10, 20, all[1:]},
		{21, 30, nil},
	}
	for _, r := range ranges {
		got, err := s.Cosignatures(ctx, r.from, r.to)
		if err != nil || (len(got) != 0 || len(r.want) != 0) && !reflect.DeepEqual(got, r.want) {
			t.Errorf("Cosignatures(%d, %d) = %+v, %v, want %+v, nil", r.from, r.to, got, err, r.want)
		}
	}
}

// checkAuditReopened checks that s holds the audit log writeAuditReopen
// wrote; when says which of [RunReopen]'s stores s is.
func checkAuditReopened(t *testing.T, s store.Store, want auditWritten, when string) {
	t.Helper()
	ctx := t.Context()
	if got, err := s.AuditSize(ctx); err != nil || got != uint64(len(want.records)) {
		t.Errorf("%s: AuditSize() = %d, %v, want %d, nil", when, got, err, len(want.records))
	}
	if got, err := s.Records(ctx, audit.Filter{}); err != nil || !reflect.DeepEqual(got, want.records) {
		t.Errorf("%s: Records() = %s, %v, want %s, nil", when, formatRecords(got), err, formatRecords(want.records))
	}
	hashes, err := s.LeafHashes(ctx, 0, uint64(len(want.records)))
	if err != nil || len(hashes) != len(want.records) {
		t.Errorf("%s: LeafHashes(0, %d) = %d hashes, %v, want %d, nil", when, len(want.records), len(hashes), err, len(want.records))
	}
	if got, ok, err := s.LatestCheckpoint(ctx); err != nil || !ok || !reflect.DeepEqual(got, want.checkpoint) {
		t.Errorf("%s: LatestCheckpoint() = %+v, %v, %v, want %+v, true, nil", when, got, ok, err, want.checkpoint)
	}
	if got, err := s.Cosignatures(ctx, 0, math.MaxUint64); err != nil || !reflect.DeepEqual(got, want.cosignatures) {
		t.Errorf("%s: Cosignatures(0, max) = %+v, %v, want %+v, nil", when, got, err, want.cosignatures)
	}
}

// auditWritten is what writeAuditReopen wrote, as stores return it.
type auditWritten struct {
	records      []audit.Record
	checkpoint   audit.StoredCheckpoint
	cosignatures []audit.Cosignature
}

// writeAuditReopen has each of stores, all on one database, append a batch
// of records in turn, the last sign a checkpoint and a witness cosign it.
func writeAuditReopen(t *testing.T, stores []store.Store) auditWritten {
	t.Helper()
	ctx := t.Context()
	const batch = 30
	var n uint64
	for i, s := range stores {
		if got, err := s.AuditSize(ctx); err != nil || got != n {
			t.Fatalf("store #%d: AuditSize() = %d, %v, want %d, nil: it does not see the others' records", i+1, got, err, n)
		}
		appendAudit(t, s, auditRecords(n, n+batch))
		n += batch
	}
	last := stores[len(stores)-1]
	c := auditCheckpoint(n)
	if err := last.AddCheckpoint(ctx, c); err != nil {
		t.Fatalf("AddCheckpoint(size %d) error = %v", n, err)
	}
	cs := auditCosignature(n, "tether-witness/agent-1")
	if err := stores[0].AddCosignature(ctx, cs); err != nil {
		t.Fatalf("AddCosignature(%d) error = %v", n, err)
	}
	cs.At = cs.At.UTC()
	return auditWritten{
		records:      asStored(auditRecords(0, n)),
		checkpoint:   checkpointAsStored(c),
		cosignatures: []audit.Cosignature{cs},
	}
}

// OldAuditInsert inserts an audit record into a store at
// 0002_audit.sql, before the actor_tenant column; its arguments are
// those of [OldAuditRows].
const OldAuditInsert = `INSERT INTO audit_events (idx, id, time_ms, type, subject, deployment, request_id, grant_id, data, leaf_hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`

// oldAuditEvents are the events [OldAuditRows] stores: one about a
// deployment, by an approver of its tenant; one about no deployment by
// an approver of acme; one about no deployment by an engineer (no
// tenant).
func oldAuditEvents() []audit.Event {
	at := t0.UTC()
	return []audit.Event{
		{Version: audit.SchemaVersion, ID: "0190a000-0000-7000-8000-000000000001", Time: at, Type: audit.RequestCancelled,
			Actor: audit.Actor{Subject: "approver@acme.test", Tenant: "acme", Role: "approver"}, Deployment: "dep-old", RequestID: "req-old", Outcome: audit.Success},
		{Version: audit.SchemaVersion, ID: "0190a000-0000-7000-8000-000000000002", Time: at.Add(time.Second), Type: audit.AuthLogin,
			Actor: audit.Actor{Subject: "approver@acme.test", Tenant: "acme", Role: "approver"}, Outcome: audit.Success},
		{Version: audit.SchemaVersion, ID: "0190a000-0000-7000-8000-000000000003", Time: at.Add(2 * time.Second), Type: audit.AuthLogin,
			Actor: audit.Actor{Subject: "engineer@vendor.test", Role: "engineer"}, Outcome: audit.Success},
	}
}

// OldAuditRows returns the arguments of [OldAuditInsert] for three
// records a store at 0002_audit.sql held.
func OldAuditRows(t *testing.T) [][]any {
	t.Helper()
	var rows [][]any
	for i, e := range oldAuditEvents() {
		data, err := e.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		h := audit.LeafHash(data)
		rows = append(rows, []any{int64(i), e.ID, e.Time.UnixMilli(), string(e.Type), e.Actor.Subject, e.Deployment, e.RequestID, e.GrantID, data, h[:]})
	}
	return rows
}

// CheckUpgradedAudit checks that a store upgraded from 0002_audit.sql
// with [OldAuditRows] in it reads them back whole (each passes
// [audit.CheckRecord], which holds the new actor_tenant column to the
// event) and selects acme's by its tenant scope.
func CheckUpgradedAudit(t *testing.T, s store.Store) {
	t.Helper()
	ctx := t.Context()
	recs, err := s.Records(ctx, audit.Filter{})
	if err != nil {
		t.Fatalf("Records() after upgrade: %v", err)
	}
	if len(recs) != len(oldAuditEvents()) {
		t.Fatalf("Records() after upgrade = %d records, want %d", len(recs), len(oldAuditEvents()))
	}
	for _, r := range recs {
		if err := audit.CheckRecord(r); err != nil {
			t.Errorf("record %d after upgrade: %v", r.Index, err)
		}
	}
	acme, err := s.Records(ctx, audit.Filter{Tenant: &audit.TenantScope{Tenant: "acme", Deployments: []string{"dep-old"}}})
	if err != nil {
		t.Fatalf("Records(acme) after upgrade: %v", err)
	}
	if got := indexes(acme); !slices.Equal(got, []uint64{0, 1}) {
		t.Errorf("acme's records after upgrade = %v, want [0 1] (its deployment's and its approver's sign-in)", got)
	}
	// The tree's node over the first two, filled in on opening.
	if got, err := s.NodeHashes(ctx, []audit.NodeID{{Level: 1, Index: 0}}); err != nil || got[0] != subtreeRoot(recs, 0, 2) {
		t.Errorf("NodeHashes(1/0) after upgrade = %x, %v, want %x", got, err, subtreeRoot(recs, 0, 2))
	}
}
