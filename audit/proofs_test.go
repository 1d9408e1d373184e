package audit_test

import (
	"context"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/store"
)

// seedLog appends n records straight to st, in batches of 50,000, and
// signs a checkpoint over them: a big log, fast. The records' data are
// not events: open the log with StartupVerify < 0 and no verifier sweep.
func seedLog(tb testing.TB, env logEnv, n uint64) {
	tb.Helper()
	ctx := context.Background()
	tree := audit.NewTree()
	at := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	const batch = 50_000
	recs := make([]audit.Record, 0, batch)
	for from := uint64(0); from < n; from += batch {
		recs = recs[:0]
		for i := from; i < min(from+batch, n); i++ {
			data := fmt.Appendf(nil, `{"id":"evt-%09d","type":"query.allowed","i":%d}`, i, i)
			r := audit.Record{Index: i, ID: fmt.Sprintf("evt-%09d", i), Time: at, Type: "query.allowed", Data: data, LeafHash: audit.LeafHash(data)}
			recs = append(recs, r)
			tree.Append(r.LeafHash)
		}
		if err := env.st.AppendRecords(ctx, recs); err != nil {
			tb.Fatal(err)
		}
	}
	c := audit.Checkpoint{Origin: env.signer.Name(), Size: n, Root: tree.Root(), Time: at}
	text, err := audit.SignCheckpoint(c, env.signer)
	if err != nil {
		tb.Fatal(err)
	}
	if err := env.st.AddCheckpoint(ctx, audit.StoredCheckpoint{Size: n, Root: c.Root, Time: at, Note: text}); err != nil {
		tb.Fatal(err)
	}
}

// countingStore counts the hashes a log reads to make its proofs.
type countingStore struct {
	store.Store
	hashes atomic.Int64
}

func (s *countingStore) LeafHashes(ctx context.Context, from, to uint64) ([][32]byte, error) {
	hs, err := s.Store.LeafHashes(ctx, from, to)
	s.hashes.Add(int64(len(hs)))
	return hs, err
}

func (s *countingStore) NodeHashes(ctx context.Context, ids []audit.NodeID) ([][32]byte, error) {
	hs, err := s.Store.NodeHashes(ctx, ids)
	s.hashes.Add(int64(len(hs)))
	return hs, err
}

// TestLogProofsReadLogN: the log's proofs read O(log n) stored hashes, not
// every leaf hash, and are the all-leaves prover's, byte for byte, for
// sizes with and without a checkpoint of their own (a log of 20,000).
func TestLogProofsReadLogN(t *testing.T) {
	const n = 20_000
	st := &countingStore{Store: openSQLite(t, filepath.Join(t.TempDir(), "a.db"))}
	env := newEnv(t, st)
	seedLog(t, env, n)
	l, err := audit.OpenLog(context.Background(), audit.LogConfig{Storage: env.st, Signer: env.signer, StartupVerify: -1, VerifyInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	leaves, err := st.Store.LeafHashes(ctx, 0, n)
	if err != nil {
		t.Fatal(err)
	}
	bound := int64(8 * bits.Len64(n))
	rng := rand.New(rand.NewPCG(1, 2))
	sizes := []uint64{1, 2, 3, 1024, 4095, 4096, 4097, n - 1, n}
	for range 20 {
		sizes = append(sizes, 1+rng.Uint64N(n))
	}
	for _, size := range sizes {
		for _, i := range []uint64{0, size / 2, size - 1, rng.Uint64N(size)} {
			st.hashes.Store(0)
			got, err := l.InclusionProof(ctx, i, size)
			read := st.hashes.Load()
			want, _ := audit.InclusionProof(leaves, i, size)
			if err != nil || !slices.Equal(got, want) {
				t.Errorf("InclusionProof(%d, %d) = %x, %v, want %x", i, size, got, err, want)
			}
			if read > bound {
				t.Errorf("InclusionProof(%d, %d) read %d hashes, want at most %d (O(log n))", i, size, read, bound)
			}
		}
		for _, m := range []uint64{0, 1, size / 2, size - 1, size, rng.Uint64N(size + 1)} {
			st.hashes.Store(0)
			got, err := l.ConsistencyProof(ctx, m, size)
			read := st.hashes.Load()
			want, _ := audit.ConsistencyProof(leaves, m, size)
			if err != nil || !slices.Equal(got, want) {
				t.Errorf("ConsistencyProof(%d, %d) = %x, %v, want %x", m, size, got, err, want)
			}
			if read > bound {
				t.Errorf("ConsistencyProof(%d, %d) read %d hashes, want at most %d (O(log n))", m, size, read, bound)
			}
		}
	}
	if _, err := l.ConsistencyProof(ctx, 1, n+1); err == nil {
		t.Errorf("ConsistencyProof(1, %d), beyond the latest checkpoint = nil error, want one", n+1)
	}
}

// TestLogProofTamperedNode: someone with write access to the database
// changes the stored interior hashes. The log does not hand out a proof
// made from them (it would not verify against the signed checkpoints,
// and an agent would take the log for forked): it notices, reports it
// (metric, audit.verify_failed found by "proof") and proves from the
// leaf hashes instead, which the signed checkpoint covers.
func TestLogProofTamperedNode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.db")
	env := newEnv(t, openSQLite(t, path))
	reg := prometheus.NewRegistry()
	lv, _ := audit.NewVerifier(env.vkey)
	l, err := audit.OpenLog(context.Background(), audit.LogConfig{Storage: env.st, Signer: env.signer, Verifier: lv, Registerer: reg, VerifyInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	runOpened(t, l)
	ctx := context.Background()
	for i := range 37 {
		if err := l.Record(ctx, event(i)); err != nil {
			t.Fatal(err)
		}
		if i == 20 {
			if _, _, err := l.Checkpoint(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	old, _ := env.st.Checkpoints(ctx, 21, 21)
	latest, _, err := l.Checkpoint(ctx)
	if err != nil || len(old) != 1 {
		t.Fatalf("checkpoints: %v, %v", old, err)
	}
	editSQL(t, path, `UPDATE audit_nodes SET hash = randomblob(32)`)

	proof, err := l.ConsistencyProof(ctx, 21, latest.Size)
	if err != nil {
		t.Fatalf("ConsistencyProof(21, %d) with tampered nodes: %v", latest.Size, err)
	}
	if err := audit.VerifyConsistency(21, latest.Size, old[0].Root, latest.Root, proof); err != nil {
		t.Errorf("the proof served with tampered nodes does not verify against the signed checkpoints: %v", err)
	}
	incl, err := l.InclusionProof(ctx, 5, latest.Size)
	if err != nil {
		t.Fatalf("InclusionProof(5, %d) with tampered nodes: %v", latest.Size, err)
	}
	recs, _ := env.st.Records(ctx, audit.Filter{FromIndex: 5, ToIndex: 6})
	if err := audit.VerifyInclusion(recs[0].LeafHash, 5, latest.Size, incl, latest.Root); err != nil {
		t.Errorf("the inclusion proof served with tampered nodes does not verify: %v", err)
	}
	if got := counter(t, reg, "tether_audit_verify_failures_total"); got < 1 {
		t.Errorf("tether_audit_verify_failures_total = %v, want at least 1", got)
	}
	evs, err := l.Records(ctx, audit.Filter{Type: audit.VerifyFailed})
	if err != nil || len(evs) == 0 || !strings.Contains(string(evs[0].Data), `"found_by":"proof"`) {
		t.Errorf("audit.verify_failed events = %d, %v, want one found by the proof check", len(evs), err)
	}
}

// BenchmarkProofs1M measures a consistency and an inclusion proof in a log
// of 1,000,000 events in SQLite (make bench). Seeding takes some 20 s.
func BenchmarkProofs1M(b *testing.B) {
	if testing.Short() {
		b.Skip("seeds 1,000,000 events")
	}
	const n = 1_000_000
	env := newEnv(b, openSQLite(b, filepath.Join(b.TempDir(), "a.db")))
	seedLog(b, env, n)
	l, err := audit.OpenLog(context.Background(), audit.LogConfig{Storage: env.st, Signer: env.signer, StartupVerify: -1, VerifyInterval: -1})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	b.Run("consistency", func(b *testing.B) {
		for b.Loop() {
			if _, err := l.ConsistencyProof(ctx, 1+rng.Uint64N(n-1), n); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("inclusion", func(b *testing.B) {
		for b.Loop() {
			if _, err := l.InclusionProof(ctx, rng.Uint64N(n), n); err != nil {
				b.Fatal(err)
			}
		}
	})
}
