package storetest

import (
	"errors"
	"testing"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/store"
)

// subtreeRoot returns the Merkle tree hash of recs[lo:hi], computed with
// [audit.Tree], not with the code the store uses.
func subtreeRoot(recs []audit.Record, lo, hi uint64) [32]byte {
	t := audit.NewTree()
	for _, r := range recs[lo:hi] {
		t.Append(r.LeafHash)
	}
	return t.Root()
}

// testAuditNodeHashes: the store keeps the root of every perfect subtree
// as records are appended, in batches of any size, and answers for every
// node the records complete, leaves included; a node the records do not
// complete yet is missing (audit.ErrNodesMissing).
func testAuditNodeHashes(t *testing.T, s store.Store) {
	ctx := t.Context()
	if _, err := s.NodeHashes(ctx, []audit.NodeID{{Level: 1, Index: 0}}); !errors.Is(err, audit.ErrNodesMissing) {
		t.Errorf("NodeHashes(1/0) of an empty log error = %v, want ErrNodesMissing", err)
	}
	var recs []audit.Record
	for _, batch := range []uint64{1, 1, 3, 1, 7, 20, 2, 64, 1, 100} {
		from := uint64(len(recs))
		more := auditRecords(from, from+batch)
		appendAudit(t, s, more)
		recs = append(recs, more...)
		size := uint64(len(recs))
		var ids []audit.NodeID
		var want [][32]byte
		for level := uint8(0); 1<<level <= size; level++ {
			for i := uint64(0); (i+1)<<level <= size; i++ {
				ids = append(ids, audit.NodeID{Level: level, Index: i})
				want = append(want, subtreeRoot(recs, i<<level, (i+1)<<level))
			}
		}
		got, err := s.NodeHashes(ctx, ids)
		if err != nil {
			t.Fatalf("after %d records: NodeHashes(all %d complete nodes) error = %v", size, len(ids), err)
		}
		for i := range ids {
			if got[i] != want[i] {
				t.Errorf("after %d records: node %d/%d = %x, want %x", size, ids[i].Level, ids[i].Index, got[i], want[i])
			}
		}
		// The next node of level 1 and above is not complete yet.
		for level := uint8(1); level < 10; level++ {
			next := audit.NodeID{Level: level, Index: size >> level}
			if _, err := s.NodeHashes(ctx, []audit.NodeID{{Level: 0, Index: 0}, next}); !errors.Is(err, audit.ErrNodesMissing) {
				t.Errorf("after %d records: NodeHashes(incomplete node %d/%d) error = %v, want ErrNodesMissing", size, level, next.Index, err)
			}
		}
	}
}
