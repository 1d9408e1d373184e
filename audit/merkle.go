package audit

import (
	"crypto/sha256"
	"fmt"
	"math/bits"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
)

// The audit log is an RFC 6962 Merkle tree whose leaves are events' stored
// bytes. Proofs are made here (from a slice of leaf hashes, or from the
// node hashes the store keeps, see [NodeID]) and checked with
// transparency-dev/merkle's verifier, so the two sides never share code
// that could hide a common mistake.

// emptyRoot is the root of the empty tree: SHA-256 of the empty string
// (RFC 6962 §2.1).
var emptyRoot = sha256.Sum256(nil)

// LeafHash returns the RFC 6962 hash of a leaf holding data:
// SHA-256(0x00 || data).
func LeafHash(data []byte) [32]byte {
	h := sha256.New()
	h.Write([]byte{rfc6962.RFC6962LeafHashPrefix})
	h.Write(data)
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// nodeHash returns the RFC 6962 hash of an interior node:
// SHA-256(0x01 || left || right).
func nodeHash(left, right *[32]byte) [32]byte {
	var b [1 + 2*32]byte
	b[0] = rfc6962.RFC6962NodeHashPrefix
	copy(b[1:], left[:])
	copy(b[33:], right[:])
	return sha256.Sum256(b[:])
}

// rangeFactory builds compact ranges with the RFC 6962 node hash. It hashes
// like rfc6962.DefaultHasher.HashChildren with one allocation instead of
// four, which matters when an export of millions of events is verified.
var rangeFactory = &compact.RangeFactory{Hash: func(left, right []byte) []byte {
	var l, r [32]byte
	copy(l[:], left)
	copy(r[:], right)
	h := nodeHash(&l, &r)
	return h[:]
}}

// Tree is an append-only RFC 6962 Merkle tree held as a compact range: the
// roots of the perfect subtrees covering its leaves, at most one per bit of
// its size. Append is O(log n) and memory is O(log n); a Tree can be resumed
// from the hashes [Tree.Prefix] returns. The zero value is not usable: use
// [NewTree] or [NewTreeFromPrefix]. A Tree is not safe for concurrent use.
type Tree struct {
	r *compact.Range
}

// NewTree returns an empty tree.
func NewTree() *Tree {
	return &Tree{r: rangeFactory.NewEmptyRange(0)}
}

// NewTreeFromPrefix returns the tree of the given size whose compact range
// is hashes, as returned by [Tree.Prefix]: one hash per set bit of size,
// largest subtree first.
func NewTreeFromPrefix(size uint64, hashes [][32]byte) (*Tree, error) {
	if got, want := len(hashes), bits.OnesCount64(size); got != want {
		return nil, fmt.Errorf("tree prefix for size %d: got %d hashes, want %d", size, got, want)
	}
	hs := make([][]byte, len(hashes))
	for i := range hashes {
		h := hashes[i]
		hs[i] = h[:]
	}
	r, err := rangeFactory.NewRange(0, size, hs)
	if err != nil {
		return nil, fmt.Errorf("tree prefix for size %d: %w", size, err)
	}
	return &Tree{r: r}, nil
}

// Append adds a leaf, given by its [LeafHash], to the right of the tree.
func (t *Tree) Append(leaf [32]byte) {
	// Append fails only on a corrupted range, and the range is only ever
	// built by this type with the right number of hashes.
	if err := t.r.Append(leaf[:], nil); err != nil {
		panic(fmt.Sprintf("audit: corrupted compact range: %v", err))
	}
}

// Size returns the number of leaves in the tree.
func (t *Tree) Size() uint64 {
	return t.r.End()
}

// Root returns the tree's root hash. The root of the empty tree is the
// SHA-256 of the empty string.
func (t *Tree) Root() [32]byte {
	h, err := t.r.GetRootHash(nil)
	if err != nil {
		panic(fmt.Sprintf("audit: compact range does not start at 0: %v", err))
	}
	if h == nil {
		return emptyRoot
	}
	return [32]byte(h)
}

// Prefix returns the tree's compact range: the roots of the perfect subtrees
// covering its leaves, largest first. With the size, it is all that is
// needed to carry on appending ([NewTreeFromPrefix]), so an export that
// starts mid-log carries it in its header.
func (t *Tree) Prefix() [][32]byte {
	hs := t.r.Hashes()
	out := make([][32]byte, len(hs))
	for i, h := range hs {
		out[i] = [32]byte(h)
	}
	return out
}

// InclusionProof returns the RFC 6962 §2.1.1 audit path for the leaf at
// index in the tree made of the first size of leaves.
func InclusionProof(leaves [][32]byte, index, size uint64) ([][32]byte, error) {
	if size > uint64(len(leaves)) {
		return nil, fmt.Errorf("inclusion proof: tree size %d exceeds the %d leaves given", size, len(leaves))
	}
	if index >= size {
		return nil, fmt.Errorf("inclusion proof: index %d is not in a tree of size %d", index, size)
	}
	return path(nil, index, leaves[:size]), nil
}

// path appends PATH(m, D[n]) (RFC 6962 §2.1.1) to p. Each level computes
// the root of the sibling subtree once, so the total work is O(n).
func path(p [][32]byte, m uint64, d [][32]byte) [][32]byte {
	n := uint64(len(d))
	if n <= 1 {
		return p
	}
	k := split(n)
	if m < k {
		p = path(p, m, d[:k])
		return append(p, mth(d[k:]))
	}
	p = path(p, m-k, d[k:])
	return append(p, mth(d[:k]))
}

// ConsistencyProof returns the RFC 6962 §2.1.2 proof that the tree of the
// first m leaves is a prefix of the tree of the first n. The proof is empty
// when m is 0 or m == n.
func ConsistencyProof(leaves [][32]byte, m, n uint64) ([][32]byte, error) {
	if n > uint64(len(leaves)) {
		return nil, fmt.Errorf("consistency proof: tree size %d exceeds the %d leaves given", n, len(leaves))
	}
	if m > n {
		return nil, fmt.Errorf("consistency proof: size %d is larger than size %d", m, n)
	}
	if m == 0 || m == n {
		return [][32]byte{}, nil
	}
	return subproof(nil, m, leaves[:n], true), nil
}

// subproof appends SUBPROOF(m, D[n], b) (RFC 6962 §2.1.2) to p.
func subproof(p [][32]byte, m uint64, d [][32]byte, b bool) [][32]byte {
	n := uint64(len(d))
	if m == n {
		if b {
			return p
		}
		return append(p, mth(d))
	}
	k := split(n)
	if m <= k {
		p = subproof(p, m, d[:k], b)
		return append(p, mth(d[k:]))
	}
	p = subproof(p, m-k, d[k:], false)
	return append(p, mth(d[:k]))
}

// mth returns MTH(D[n]), the Merkle tree hash of leaf hashes d.
func mth(d [][32]byte) [32]byte {
	switch len(d) {
	case 0:
		return emptyRoot
	case 1:
		return d[0]
	}
	k := split(uint64(len(d)))
	l, r := mth(d[:k]), mth(d[k:])
	return nodeHash(&l, &r)
}

// split returns the largest power of two smaller than n, for n > 1.
func split(n uint64) uint64 {
	return 1 << (bits.Len64(n-1) - 1)
}

// VerifyInclusion checks that proof shows the leaf with hash leaf at index
// to be in the tree of the given size and root.
func VerifyInclusion(leaf [32]byte, index, size uint64, proofHashes [][32]byte, root [32]byte) error {
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, index, size, leaf[:], slices32(proofHashes), root[:]); err != nil {
		return fmt.Errorf("verify inclusion of leaf %d in tree of size %d: %w", index, size, err)
	}
	return nil
}

// VerifyConsistency checks that proof shows the tree of size m and root
// rootM to be a prefix of the tree of size n and root rootN.
func VerifyConsistency(m, n uint64, rootM, rootN [32]byte, proofHashes [][32]byte) error {
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, m, n, slices32(proofHashes), rootM[:], rootN[:]); err != nil {
		return fmt.Errorf("verify consistency of tree size %d with %d: %w", m, n, err)
	}
	return nil
}

// slices32 converts hashes to the [][]byte the proof package takes.
func slices32(hs [][32]byte) [][]byte {
	out := make([][]byte, len(hs))
	for i := range hs {
		out[i] = hs[i][:]
	}
	return out
}
