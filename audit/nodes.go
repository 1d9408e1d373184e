package audit

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
)

// Proofs from stored interior hashes. A proof in a tree of n leaves is
// O(log n) hashes, each the root of a range of leaves; every such range
// is a few perfect subtrees (at most one per level), whose roots the
// store keeps as the log grows, as Trillian and Tessera keep tiles. A
// proof is thus one read of O(log n) stored hashes instead of every leaf
// hash. The ranges are worked out by the same recursion as the all-leaves
// prover (path, subproof), so the proofs are byte for byte the same.
//
// Nothing signs the stored interior hashes: the log checks every proof it
// builds from them, with transparency-dev/merkle's verifier, against its
// latest signed checkpoint before it hands the proof out (see
// [Log.ConsistencyProof]).

// NodeID names a perfect subtree of the log's Merkle tree: the node Level
// levels above the leaves (0 for a leaf) covering leaves
// [Index<<Level, (Index+1)<<Level).
type NodeID struct {
	Level uint8
	Index uint64
}

// ErrNodesMissing reports that a store does not hold some of the node
// hashes asked for (yet): the log then proves from the leaf hashes.
var ErrNodesMissing = errors.New("audit tree nodes are not stored")

// PrefixNodes returns the perfect subtrees covering leaves [0, size),
// largest first: the compact range of the tree of that size.
func PrefixNodes(size uint64) []NodeID {
	return spanNodes(nil, 0, size)
}

// AppendNodes calls visit with every node above the leaves (Level >= 1)
// that appending leaves to the tree of the given size completes, lowest
// first within each leaf. prefix holds the hashes of [PrefixNodes](size).
func AppendNodes(size uint64, prefix [][32]byte, leaves [][32]byte, visit func(NodeID, [32]byte) error) error {
	ids := PrefixNodes(size)
	if len(ids) != len(prefix) {
		return fmt.Errorf("tree prefix for size %d: got %d hashes, want %d", size, len(prefix), len(ids))
	}
	type entry struct {
		id NodeID
		h  [32]byte
	}
	stack := make([]entry, len(ids), len(ids)+1+len(leaves))
	for i := range ids {
		stack[i] = entry{ids[i], prefix[i]}
	}
	for i, leaf := range leaves {
		stack = append(stack, entry{NodeID{0, size + uint64(i)}, leaf})
		for len(stack) >= 2 {
			l, r := &stack[len(stack)-2], &stack[len(stack)-1]
			if l.id.Level != r.id.Level {
				break
			}
			p := entry{NodeID{l.id.Level + 1, l.id.Index >> 1}, nodeHash(&l.h, &r.h)}
			stack = append(stack[:len(stack)-2], p)
			if err := visit(p.id, p.h); err != nil {
				return err
			}
		}
	}
	return nil
}

// span is a range [lo, hi) of leaves whose Merkle tree hash a proof holds.
type span struct{ lo, hi uint64 }

// inclusionSpans appends the ranges whose hashes make PATH(m, D[lo:hi])
// (RFC 6962 §2.1.1), in the order of [path].
func inclusionSpans(out []span, m, lo, hi uint64) []span {
	n := hi - lo
	if n <= 1 {
		return out
	}
	k := split(n)
	if m < k {
		out = inclusionSpans(out, m, lo, lo+k)
		return append(out, span{lo + k, hi})
	}
	out = inclusionSpans(out, m-k, lo+k, hi)
	return append(out, span{lo, lo + k})
}

// consistencySpans appends the ranges whose hashes make
// SUBPROOF(m, D[lo:hi], b) (RFC 6962 §2.1.2), in the order of [subproof].
func consistencySpans(out []span, m, lo, hi uint64, b bool) []span {
	n := hi - lo
	if m == n {
		if b {
			return out
		}
		return append(out, span{lo, hi})
	}
	k := split(n)
	if m <= k {
		out = consistencySpans(out, m, lo, lo+k, b)
		return append(out, span{lo + k, hi})
	}
	out = consistencySpans(out, m-k, lo+k, hi, false)
	return append(out, span{lo, lo + k})
}

// spanNodes appends the perfect subtrees covering [lo, hi), largest
// first: each the largest aligned at its start that fits.
func spanNodes(out []NodeID, lo, hi uint64) []NodeID {
	for lo < hi {
		k := bits.Len64(hi-lo) - 1
		if lo != 0 {
			k = min(k, bits.TrailingZeros64(lo))
		}
		out = append(out, NodeID{uint8(k), lo >> k})
		lo += 1 << k
	}
	return out
}

// nodeSource returns the hashes of ids, in order.
type nodeSource func(ctx context.Context, ids []NodeID) ([][32]byte, error)

// leafSource computes node hashes from all the leaf hashes of a tree.
func leafSource(leaves [][32]byte) nodeSource {
	var all nodes
	return func(_ context.Context, ids []NodeID) ([][32]byte, error) {
		if all == nil && len(leaves) > 0 {
			all = newNodes(leaves)
		}
		out := make([][32]byte, len(ids))
		for i, id := range ids {
			if int(id.Level) >= len(all) || id.Index >= uint64(len(all[id.Level])) {
				return nil, fmt.Errorf("node %d/%d is beyond the %d leaves read: %w", id.Level, id.Index, len(leaves), ErrNodesMissing)
			}
			out[i] = all[id.Level][id.Index]
		}
		return out, nil
	}
}

// spanHashes fetches the nodes of a set of spans in one read.
type spanHashes map[NodeID][32]byte

func fetchSpans(ctx context.Context, src nodeSource, spans ...[]span) (spanHashes, error) {
	h := spanHashes{}
	var ids []NodeID
	for _, ss := range spans {
		for _, s := range ss {
			for _, id := range spanNodes(nil, s.lo, s.hi) {
				if _, ok := h[id]; !ok {
					h[id] = [32]byte{}
					ids = append(ids, id)
				}
			}
		}
	}
	hs, err := src(ctx, ids)
	if err != nil {
		return nil, err
	}
	if len(hs) != len(ids) {
		return nil, fmt.Errorf("asked for %d tree nodes, got %d", len(ids), len(hs))
	}
	for i, id := range ids {
		h[id] = hs[i]
	}
	return h, nil
}

// of returns the Merkle tree hash of s: its perfect subtrees folded from
// the right, as RFC 6962's MTH splits a range whose start is aligned.
func (h spanHashes) of(s span) [32]byte {
	if s.lo == s.hi {
		return emptyRoot
	}
	ids := spanNodes(nil, s.lo, s.hi)
	acc := h[ids[len(ids)-1]]
	for i := len(ids) - 2; i >= 0; i-- {
		l := h[ids[i]]
		acc = nodeHash(&l, &acc)
	}
	return acc
}

func (h spanHashes) proof(spans []span) [][32]byte {
	out := make([][32]byte, len(spans))
	for i, s := range spans {
		out[i] = h.of(s)
	}
	return out
}

// treeHead is a tree size and its root, trusted: the log's latest
// checkpoint, which it signed from its own tree or checked against a
// signed note when it opened.
type treeHead struct {
	size uint64
	root [32]byte
}

// proofRequest is an inclusion proof of leaf a (inclusion) or a
// consistency proof from size a, in the tree of size b.
type proofRequest struct {
	inclusion bool
	a, b      uint64
}

func (r proofRequest) String() string {
	if r.inclusion {
		return fmt.Sprintf("inclusion proof of event %d in the tree of size %d", r.a, r.b)
	}
	return fmt.Sprintf("consistency proof from size %d to %d", r.a, r.b)
}

// proveChecked builds the proof r asks for from src and checks it against
// head, which must be at least r.b: the root of size b is computed from
// src and proven consistent with head's root (unless b is head's size),
// then the proof is verified against it. A proof that does not verify is
// a [*TamperError] naming head's checkpoint.
func proveChecked(ctx context.Context, src nodeSource, head treeHead, r proofRequest) ([][32]byte, error) {
	var want []span
	if r.inclusion {
		want = inclusionSpans(nil, r.a, 0, r.b)
	} else {
		want = consistencySpans(nil, r.a, 0, r.b, true)
	}
	var toHead []span
	if r.b != head.size {
		toHead = consistencySpans(nil, r.b, 0, head.size, true)
	}
	// The root of size b, and the leaf (inclusion) or root of size a
	// (consistency) the proof starts from.
	extra := []span{{0, r.b}, {r.a, r.a + 1}}
	if !r.inclusion {
		extra[1] = span{0, r.a}
	}
	h, err := fetchSpans(ctx, src, want, toHead, extra)
	if err != nil {
		return nil, err
	}
	p := h.proof(want)
	tampered := func(err error) error {
		return &TamperError{Index: head.size, Checkpoint: true,
			What: fmt.Sprintf("the stored hashes of the tree's nodes do not make a %s that verifies against it (%v)", r, err)}
	}
	root := head.root
	if r.b != head.size {
		root = h.of(span{0, r.b})
		if err := VerifyConsistency(r.b, head.size, root, head.root, h.proof(toHead)); err != nil {
			return nil, tampered(err)
		}
	}
	if r.inclusion {
		err = VerifyInclusion(h.of(span{r.a, r.a + 1}), r.a, r.b, p, root)
	} else {
		err = VerifyConsistency(r.a, r.b, h.of(span{0, r.a}), root, p)
	}
	if err != nil {
		return nil, tampered(err)
	}
	return p, nil
}

// prove builds r's proof from the store's node hashes, checked against
// the log's latest checkpoint. Where the store lacks nodes (an old store
// still filling them in) or a stored hash is wrong (reported as tampering
// once), it proves from the leaf hashes instead, checked the same way, so
// that agents are never handed a proof that would make them think the log
// forked.
func (l *Log) prove(ctx context.Context, r proofRequest) ([][32]byte, error) {
	head := l.head.Load()
	if head == nil || r.b > head.size {
		return nil, fmt.Errorf("%s: beyond the latest checkpoint (%d)", r, l.lastSize.Load())
	}
	p, err := proveChecked(ctx, l.cfg.Storage.NodeHashes, *head, r)
	switch {
	case err == nil:
		return p, nil
	case errors.Is(err, ErrTampered):
		l.reportTamper(ctx, err, "proof")
	case errors.Is(err, ErrNodesMissing):
		l.log.Debug("audit tree nodes not stored yet; proving from the leaf hashes", "proof", r.String())
	default:
		return nil, fmt.Errorf("%s: %w", r, err)
	}
	leaves, err := l.cfg.Storage.LeafHashes(ctx, 0, head.size)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", r, err)
	}
	if uint64(len(leaves)) != head.size {
		return nil, fmt.Errorf("%s: the log has only %d events, not %d", r, len(leaves), head.size)
	}
	p, err = proveChecked(ctx, leafSource(leaves), *head, r)
	if errors.Is(err, ErrTampered) {
		l.reportTamper(ctx, err, "proof")
	}
	return p, err
}
