package audit

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
)

// storedNodes is what a store keeps: the leaf hashes and the nodes
// AppendNodes reports, appended in uneven batches.
func storedNodes(t *testing.T, leaves [][32]byte) nodeSource {
	t.Helper()
	got := map[NodeID][32]byte{}
	rng := rand.New(rand.NewPCG(5, 6))
	for size := uint64(0); size < uint64(len(leaves)); {
		n := min(1+rng.Uint64N(9), uint64(len(leaves))-size)
		var prefix [][32]byte
		for _, id := range PrefixNodes(size) {
			h, ok := got[id]
			if !ok && id.Level == 0 {
				h, ok = leaves[id.Index], true
			}
			if !ok {
				t.Fatalf("node %d/%d of the prefix of size %d was not reported", id.Level, id.Index, size)
			}
			prefix = append(prefix, h)
		}
		err := AppendNodes(size, prefix, leaves[size:size+n], func(id NodeID, h [32]byte) error {
			if _, dup := got[id]; dup {
				t.Errorf("node %d/%d reported twice", id.Level, id.Index)
			}
			got[id] = h
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		size += n
	}
	return func(_ context.Context, ids []NodeID) ([][32]byte, error) {
		out := make([][32]byte, len(ids))
		for i, id := range ids {
			if id.Level == 0 && id.Index < uint64(len(leaves)) {
				out[i] = leaves[id.Index]
				continue
			}
			h, ok := got[id]
			if !ok {
				return nil, ErrNodesMissing
			}
			out[i] = h
		}
		return out, nil
	}
}

// TestNodeProofsMatchLeafProofs: proofs built from stored node hashes
// are byte for byte those of the all-leaves prover (InclusionProof,
// ConsistencyProof), for every index and size up to 70 and samples of
// larger, non-power-of-two trees, checked against heads of every size at
// or above the proof's.
func TestNodeProofsMatchLeafProofs(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	const maxSize = 1100
	leaves := randomLeaves(rng, maxSize)
	src := storedNodes(t, leaves)
	ctx := context.Background()
	head := func(size uint64) treeHead { return treeHead{size: size, root: mth(leaves[:size])} }
	check := func(r proofRequest, h treeHead) {
		t.Helper()
		var want [][32]byte
		var err error
		if r.inclusion {
			want, err = InclusionProof(leaves, r.a, r.b)
		} else {
			want, err = ConsistencyProof(leaves, r.a, r.b)
		}
		if err != nil {
			t.Fatal(err)
		}
		got, err := proveChecked(ctx, src, h, r)
		if err != nil {
			t.Fatalf("%s, head %d: error = %v", r, h.size, err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s, head %d = %x, all-leaves prover %x", r, h.size, got, want)
		}
	}
	for size := uint64(1); size <= 70; size++ {
		heads := []treeHead{head(size), head(size + 1 + rng.Uint64N(maxSize-size))}
		for _, h := range heads {
			for i := range size {
				check(proofRequest{inclusion: true, a: i, b: size}, h)
			}
			for m := uint64(1); m < size; m++ {
				check(proofRequest{a: m, b: size}, h)
			}
		}
	}
	for _, size := range []uint64{127, 128, 129, 255, 256, 257, 511, 1000, 1023, 1024, 1025, maxSize} {
		h := head(maxSize)
		for _, i := range []uint64{0, 1, size / 3, size / 2, size - 2, size - 1} {
			check(proofRequest{inclusion: true, a: i, b: size}, h)
			check(proofRequest{inclusion: true, a: i, b: size}, head(size))
		}
		for _, m := range []uint64{1, 2, 3, size / 3, size / 2, size - 1} {
			check(proofRequest{a: m, b: size}, h)
			check(proofRequest{a: m, b: size}, head(size))
		}
	}
}

// TestNodeProofsCheckedAgainstHead: a wrong stored node, anywhere a proof
// reads, makes proveChecked fail with a TamperError instead of returning
// a proof that does not verify.
func TestNodeProofsCheckedAgainstHead(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	leaves := randomLeaves(rng, 100)
	good := storedNodes(t, leaves)
	h := treeHead{size: 100, root: mth(leaves)}
	ctx := context.Background()
	for _, r := range []proofRequest{{inclusion: true, a: 37, b: 90}, {inclusion: true, a: 99, b: 100}, {a: 37, b: 90}, {a: 64, b: 100}} {
		var spans []span
		if r.inclusion {
			spans = inclusionSpans(nil, r.a, 0, r.b)
		} else {
			spans = consistencySpans(nil, r.a, 0, r.b, true)
		}
		for _, s := range spans {
			bad := spanNodes(nil, s.lo, s.hi)[0]
			src := func(ctx context.Context, ids []NodeID) ([][32]byte, error) {
				hs, err := good(ctx, ids)
				for i, id := range ids {
					if id == bad {
						hs[i][0] ^= 1
					}
				}
				return hs, err
			}
			if p, err := proveChecked(ctx, src, h, r); !errors.Is(err, ErrTampered) {
				t.Errorf("%s with node %d/%d changed = %x, %v, want a TamperError", r, bad.Level, bad.Index, p, err)
			}
		}
	}
}

// TestAppendNodesPrefix: a prefix of the wrong length is refused.
func TestAppendNodesPrefix(t *testing.T) {
	err := AppendNodes(3, make([][32]byte, 1), nil, func(NodeID, [32]byte) error { return nil })
	if err == nil {
		t.Error("AppendNodes(size 3, 1 prefix hash) = nil, want an error (size 3 has 2 perfect subtrees)")
	}
}
