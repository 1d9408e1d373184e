package audit

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestProverMatchesInclusionProof: the chunked prover of tenant exports
// makes, for every leaf of trees of many sizes and chunk sizes, exactly
// the proof InclusionProof makes from every leaf, and it verifies.
func TestProverMatchesInclusionProof(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	const maxSize = 300
	leaves := randomLeaves(rng, maxSize)
	roots := make([][32]byte, maxSize+1)
	tr := NewTree()
	for n := range maxSize + 1 {
		roots[n] = tr.Root()
		if n < maxSize {
			tr.Append(leaves[n])
		}
	}
	read := func(_ context.Context, from, to uint64) ([][32]byte, error) {
		return slices.Clone(leaves[from:to]), nil
	}
	for _, size := range []uint64{1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 31, 33, 64, 100, 129, 255, 256, 257, maxSize} {
		for _, chunkBits := range []int{0, 1, 2, 3, 5, 12} {
			t.Run(fmt.Sprintf("size %d chunk %d", size, 1<<chunkBits), func(t *testing.T) {
				p, err := newProver(context.Background(), size, chunkBits, read)
				if err != nil {
					t.Fatal(err)
				}
				for i := range size {
					got, err := p.proof(context.Background(), i)
					if err != nil {
						t.Fatalf("proof(%d) = %v", i, err)
					}
					want, _ := InclusionProof(leaves, i, size)
					if !slices.Equal(got, want) {
						t.Fatalf("proof(%d) in size %d = %x, want %x", i, size, got, want)
					}
					if err := VerifyInclusion(leaves[i], i, size, got, roots[size]); err != nil {
						t.Fatal(err)
					}
				}
				if _, err := p.proof(context.Background(), size); err == nil {
					t.Errorf("proof(%d) in a tree of size %d made no error", size, size)
				}
			})
		}
	}
}

// TestProverNoticesChangedLeaves: a leaf hash changed in the store
// between the prover's first pass and a proof is refused, not proven
// against a root it does not belong to.
func TestProverNoticesChangedLeaves(t *testing.T) {
	leaves := randomLeaves(rand.New(rand.NewPCG(7, 8)), 40)
	changed := false
	read := func(_ context.Context, from, to uint64) ([][32]byte, error) {
		out := slices.Clone(leaves[from:to])
		if changed && from <= 17 && 17 < to {
			out[17-from][0] ^= 1
		}
		return out, nil
	}
	p, err := newProver(context.Background(), 40, 3, read)
	if err != nil {
		t.Fatal(err)
	}
	changed = true
	if _, err := p.proof(context.Background(), 18); !isType[*TamperError](err) {
		t.Errorf("proof after a leaf hash changed = %v, want a *TamperError", err)
	}
}
