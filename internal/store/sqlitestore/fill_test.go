package sqlitestore_test

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/tetherhq/tether/audit"
)

// TestFillTreeNodes: a log whose tree nodes are missing (written before
// the store kept them, or by a fill killed part way, which leaves
// tree_size where its last transaction ended) gets them on opening, 65,536
// events a transaction.
func TestFillTreeNodes(t *testing.T) {
	const n = 70_000
	path := filepath.Join(t.TempDir(), "tether.db")
	s := open(t, path)
	tree := audit.NewTree()
	var recs []audit.Record
	for i := uint64(0); i < n; i++ {
		data := fmt.Appendf(nil, `{"i":%d}`, i)
		recs = append(recs, audit.Record{Index: i, ID: fmt.Sprint("e", i), Time: time.Unix(0, 0), Type: "t", Data: data, LeafHash: audit.LeafHash(data)})
		tree.Append(recs[i].LeafHash)
	}
	if err := s.AppendRecords(t.Context(), recs); err != nil {
		t.Fatal(err)
	}
	want := tree.Prefix()
	s.Close()

	for _, tt := range []struct{ name, sql string }{
		{"none", `DELETE FROM audit_nodes; UPDATE audit_lock SET tree_size = 0`},
		// Nodes above 65,536 events: the fill stopped after its first
		// transaction.
		{"resumed", `DELETE FROM audit_nodes WHERE id >= 131071; UPDATE audit_lock SET tree_size = 65536`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			db, err := sql.Open("sqlite", path)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := db.Exec(tt.sql); err != nil {
				t.Fatal(err)
			}
			db.Close()
			s := open(t, path)
			defer s.Close()
			got, err := s.NodeHashes(context.Background(), audit.PrefixNodes(n))
			if err != nil {
				t.Fatalf("NodeHashes(prefix of %d) after opening = %v", n, err)
			}
			for i := range want {
				if got[i] != want[i] {
					t.Errorf("node %+v = %x, want %x", audit.PrefixNodes(n)[i], got[i], want[i])
				}
			}
			// And appends carry on from there.
			data := []byte(`{"i":"next"}`)
			next := audit.Record{Index: n, ID: "next", Time: time.Unix(0, 0), Type: "t", Data: data, LeafHash: audit.LeafHash(data)}
			if err := s.AppendRecords(t.Context(), []audit.Record{next}); err != nil {
				t.Fatal(err)
			}
			if _, err := s.NodeHashes(t.Context(), audit.PrefixNodes(n+1)); err != nil {
				t.Errorf("NodeHashes(prefix of %d) after an append = %v", n+1, err)
			}
		})
		// Undo the append for the next case.
		db, _ := sql.Open("sqlite", path)
		db.Exec(`DELETE FROM audit_events WHERE id = 'next'`)
		db.Close()
	}
}

// TestTreeNodesAfterTruncation: events deleted behind the store's back
// and others appended in their place get nodes of their own: the nodes
// follow the leaves the store holds (the checkpoints and the agents'
// witnessing tell of the deletion, not stale nodes).
func TestTreeNodesAfterTruncation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tether.db")
	s := open(t, path)
	defer s.Close()
	rec := func(i uint64, tag string) audit.Record {
		data := fmt.Appendf(nil, `{"i":%d,"tag":%q}`, i, tag)
		return audit.Record{Index: i, ID: fmt.Sprint(tag, i), Time: time.Unix(0, 0), Type: "t", Data: data, LeafHash: audit.LeafHash(data)}
	}
	var first, second []audit.Record
	for i := range uint64(100) {
		first = append(first, rec(i, "a"))
	}
	if err := s.AppendRecords(t.Context(), first); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`DELETE FROM audit_events WHERE idx >= 40`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	tree := audit.NewTree()
	for i := range uint64(70) {
		r := first[min(i, 39)]
		if i >= 40 {
			r = rec(i, "b")
			second = append(second, r)
		}
		tree.Append(r.LeafHash)
	}
	if err := s.AppendRecords(t.Context(), second); err != nil {
		t.Fatal(err)
	}
	got, err := s.NodeHashes(t.Context(), audit.PrefixNodes(70))
	if err != nil {
		t.Fatal(err)
	}
	if want := tree.Prefix(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("NodeHashes(prefix of 70) after truncation to 40 and regrowth = %x, want %x", got, want)
	}
}
