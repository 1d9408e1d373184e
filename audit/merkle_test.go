package audit

import (
	"encoding/hex"
	"math/rand/v2"
	"slices"
	"testing"
)

// RFC 6962 test vectors, as used by Certificate Transparency and by
// transparency-dev/merkle (testonly/constants.go, proof/verify_test.go).
var (
	rfcLeaves = []string{
		"",
		"00",
		"10",
		"2021",
		"3031",
		"40414243",
		"5051525354555657",
		"606162636465666768696a6b6c6d6e6f",
	}
	// rfcRoots[n] is the root of the tree of the first n leaves.
	rfcRoots = []string{
		"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
		"6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
		"fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
		"aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
		"d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
		"4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
		"76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
		"ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
		"5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
	}
	// rfcLeafHashes are the leaves' hashes (level 0 of the tree).
	rfcLeafHashes = []string{
		"6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
		"96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
		"0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
		"07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
		"bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
		"4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
		"b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
		"46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
	}
	// Inclusion proofs; indices are 0-based here (the source lists them
	// 1-based).
	rfcInclusion = []struct {
		index, size uint64
		proof       []string
	}{
		{0, 1, nil},
		{0, 8, []string{
			"96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
			"5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
			"6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
		}},
		{5, 8, []string{
			"bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
			"ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
			"d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
		}},
		{2, 3, []string{
			"fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
		}},
		{1, 5, []string{
			"6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
			"5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
			"bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
		}},
	}
	rfcConsistency = []struct {
		m, n  uint64
		proof []string
	}{
		{1, 1, nil},
		{1, 8, []string{
			"96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
			"5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
			"6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
		}},
		{6, 8, []string{
			"0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
			"ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
			"d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
		}},
		{2, 5, []string{
			"5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
			"bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
		}},
		{6, 7, []string{
			"0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
			"b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
			"d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
		}},
	}
)

func mustHash(t testing.TB, s string) [32]byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 32 {
		t.Fatalf("bad test hash %q", s)
	}
	return [32]byte(b)
}

func mustHashes(t testing.TB, ss []string) [][32]byte {
	t.Helper()
	out := make([][32]byte, len(ss))
	for i, s := range ss {
		out[i] = mustHash(t, s)
	}
	return out
}

// rfcLeafHashList returns LeafHash of each RFC 6962 test leaf.
func rfcLeafHashList(t *testing.T) [][32]byte {
	t.Helper()
	var hs [][32]byte
	for _, l := range rfcLeaves {
		b, err := hex.DecodeString(l)
		if err != nil {
			t.Fatal(err)
		}
		hs = append(hs, LeafHash(b))
	}
	return hs
}

func TestLeafHash(t *testing.T) {
	for i, l := range rfcLeaves {
		b, _ := hex.DecodeString(l)
		if got, want := LeafHash(b), mustHash(t, rfcLeafHashes[i]); got != want {
			t.Errorf("LeafHash(%q) = %x, want %x", l, got, want)
		}
	}
}

func TestTreeRoots(t *testing.T) {
	leaves := rfcLeafHashList(t)
	tr := NewTree()
	for n := range len(rfcRoots) {
		if n > 0 {
			tr.Append(leaves[n-1])
		}
		want := mustHash(t, rfcRoots[n])
		if got := tr.Root(); got != want {
			t.Errorf("Tree.Root() at size %d = %x, want %x", n, got, want)
		}
		if got := tr.Size(); got != uint64(n) {
			t.Errorf("Tree.Size() = %d, want %d", got, n)
		}
		if got := mth(leaves[:n]); got != want {
			t.Errorf("mth(leaves[:%d]) = %x, want %x", n, got, want)
		}
	}
}

func TestTreeFromPrefix(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	leaves := randomLeaves(rng, 70)
	full := NewTree()
	for i := range leaves {
		// Resume a tree from full's prefix at every size and check that
		// it carries on with the same roots.
		resumed, err := NewTreeFromPrefix(full.Size(), full.Prefix())
		if err != nil {
			t.Fatalf("NewTreeFromPrefix(%d, ...) = %v", full.Size(), err)
		}
		for _, l := range leaves[i:] {
			resumed.Append(l)
		}
		if got, want := resumed.Root(), mth(leaves); got != want {
			t.Errorf("tree resumed at %d: Root() = %x, want %x", i, got, want)
		}
		full.Append(leaves[i])
	}
	if _, err := NewTreeFromPrefix(5, make([][32]byte, 1)); err == nil {
		t.Errorf("NewTreeFromPrefix(5, 1 hash) = nil error, want one (size 5 needs 2)")
	}
}

func TestInclusionProofVectors(t *testing.T) {
	leaves := rfcLeafHashList(t)
	for _, tc := range rfcInclusion {
		want := mustHashes(t, tc.proof)
		got, err := InclusionProof(leaves, tc.index, tc.size)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("InclusionProof(leaves, %d, %d) = %x, %v, want %x", tc.index, tc.size, got, err, want)
		}
		root := mustHash(t, rfcRoots[tc.size])
		if err := VerifyInclusion(leaves[tc.index], tc.index, tc.size, want, root); err != nil {
			t.Errorf("VerifyInclusion(leaf %d, size %d) = %v, want nil", tc.index, tc.size, err)
		}
	}
}

func TestConsistencyProofVectors(t *testing.T) {
	leaves := rfcLeafHashList(t)
	for _, tc := range rfcConsistency {
		want := mustHashes(t, tc.proof)
		got, err := ConsistencyProof(leaves, tc.m, tc.n)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("ConsistencyProof(leaves, %d, %d) = %x, %v, want %x", tc.m, tc.n, got, err, want)
		}
		rootM, rootN := mustHash(t, rfcRoots[tc.m]), mustHash(t, rfcRoots[tc.n])
		if err := VerifyConsistency(tc.m, tc.n, rootM, rootN, want); err != nil {
			t.Errorf("VerifyConsistency(%d, %d) = %v, want nil", tc.m, tc.n, err)
		}
	}
}

func TestProofErrors(t *testing.T) {
	leaves := make([][32]byte, 5)
	for _, tc := range []struct{ index, size uint64 }{{0, 0}, {5, 5}, {0, 6}, {7, 3}} {
		if _, err := InclusionProof(leaves, tc.index, tc.size); err == nil {
			t.Errorf("InclusionProof(5 leaves, %d, %d) = nil error, want one", tc.index, tc.size)
		}
	}
	for _, tc := range []struct{ m, n uint64 }{{3, 2}, {1, 6}} {
		if _, err := ConsistencyProof(leaves, tc.m, tc.n); err == nil {
			t.Errorf("ConsistencyProof(5 leaves, %d, %d) = nil error, want one", tc.m, tc.n)
		}
	}
}

func randomLeaves(rng *rand.Rand, n int) [][32]byte {
	leaves := make([][32]byte, n)
	for i := range leaves {
		var b [8]byte
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		leaves[i] = LeafHash(b[:])
	}
	return leaves
}

// TestProofsProperty checks, for trees of many sizes, that every proof
// this package makes verifies with transparency-dev/merkle's verifier, and
// that none verifies for a wrong leaf or root.
func TestProofsProperty(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
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
	sizes := []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 127, 128, 129, 255, 256, 257, maxSize}
	for range 12 {
		sizes = append(sizes, 1+rng.Uint64N(maxSize))
	}
	wrong := LeafHash([]byte("wrong"))
	for _, size := range sizes {
		if got, want := mth(leaves[:size]), roots[size]; got != want {
			t.Fatalf("mth(%d leaves) = %x, Tree root %x", size, got, want)
		}
		for i := range size {
			p, err := InclusionProof(leaves, i, size)
			if err != nil {
				t.Fatalf("InclusionProof(leaves, %d, %d) = %v", i, size, err)
			}
			if err := VerifyInclusion(leaves[i], i, size, p, roots[size]); err != nil {
				t.Errorf("VerifyInclusion(leaf %d, size %d) = %v, want nil", i, size, err)
			}
			if err := VerifyInclusion(wrong, i, size, p, roots[size]); err == nil {
				t.Errorf("VerifyInclusion(wrong leaf at %d, size %d) = nil, want error", i, size)
			}
			if err := VerifyInclusion(leaves[i], i, size, p, wrong); err == nil {
				t.Errorf("VerifyInclusion(leaf %d, size %d, wrong root) = nil, want error", i, size)
			}
		}
		for m := uint64(1); m <= size; m++ {
			p, err := ConsistencyProof(leaves, m, size)
			if err != nil {
				t.Fatalf("ConsistencyProof(leaves, %d, %d) = %v", m, size, err)
			}
			if err := VerifyConsistency(m, size, roots[m], roots[size], p); err != nil {
				t.Errorf("VerifyConsistency(%d, %d) = %v, want nil", m, size, err)
			}
			if err := VerifyConsistency(m, size, wrong, roots[size], p); err == nil {
				t.Errorf("VerifyConsistency(%d, %d, wrong old root) = nil, want error", m, size)
			}
			if m < size {
				if err := VerifyConsistency(m, size, roots[m], wrong, p); err == nil {
					t.Errorf("VerifyConsistency(%d, %d, wrong new root) = nil, want error", m, size)
				}
			}
		}
	}
}
