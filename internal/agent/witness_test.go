package agent

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/agentapi"
)

// TestCheckCheckpoint: the witness accepts only checkpoints that extend the
// one it cosigned; a broker that rewrote an event cannot get a signature.
func TestCheckCheckpoint(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	origin := audit.OriginFor(pub)
	signer, err := audit.NewSigner(origin, priv)
	if err != nil {
		t.Fatal(err)
	}
	vkey, _ := audit.VerifierKey(origin, pub)
	lv, _ := audit.NewVerifier(vkey)
	_, otherPriv, _ := ed25519.GenerateKey(rand.Reader)
	forger, _ := audit.NewSigner(origin, otherPriv)

	leaves := func(n int, rewrite int) [][32]byte {
		var out [][32]byte
		for i := range n {
			data := fmt.Sprintf("event %d", i)
			if i == rewrite {
				data = "rewritten"
			}
			out = append(out, audit.LeafHash([]byte(data)))
		}
		return out
	}
	tree := func(ls [][32]byte) [32]byte {
		tr := audit.NewTree()
		for _, l := range ls {
			tr.Append(l)
		}
		return tr.Root()
	}
	sign := func(s note.Signer, ls [][32]byte) string {
		t.Helper()
		text, err := audit.SignCheckpoint(audit.Checkpoint{Origin: origin, Size: uint64(len(ls)), Root: tree(ls), Time: time.Now()}, s)
		if err != nil {
			t.Fatal(err)
		}
		return text
	}
	resp := func(text string, all [][32]byte, from uint64) agentapi.CheckpointResponse {
		r := agentapi.CheckpointResponse{Note: text, Size: uint64(len(all))}
		if from > 0 && from < uint64(len(all)) {
			p, err := audit.ConsistencyProof(all, from, uint64(len(all)))
			if err != nil {
				t.Fatal(err)
			}
			for _, h := range p {
				r.Proof = append(r.Proof, h[:])
			}
		}
		return r
	}

	honest := leaves(20, -1)
	prevRoot := tree(honest[:10])
	if _, err := checkCheckpoint(10, prevRoot, resp(sign(signer, honest), honest, 10), lv); err != nil {
		t.Fatalf("honest extension refused: %v", err)
	}
	if _, err := checkCheckpoint(0, [32]byte{}, resp(sign(signer, honest[:10]), honest[:10], 0), lv); err != nil {
		t.Fatalf("first checkpoint refused: %v", err)
	}

	rewritten := leaves(20, 3)
	tests := []struct {
		name string
		res  agentapi.CheckpointResponse
		want error
	}{
		{"rewritten history, its own proof", resp(sign(signer, rewritten), rewritten, 10), ErrHistoryRewritten},
		{"rewritten history, honest proof", resp(sign(signer, rewritten), honest, 10), ErrHistoryRewritten},
		{"smaller than cosigned", resp(sign(signer, honest[:5]), honest[:5], 0), ErrHistoryRewritten},
		{"same size, other root", resp(sign(signer, rewritten[:10]), rewritten[:10], 0), ErrHistoryRewritten},
		{"forged signature", resp(sign(forger, honest), honest, 10), nil},
	}
	for _, tt := range tests {
		_, err := checkCheckpoint(10, prevRoot, tt.res, lv)
		if err == nil {
			t.Errorf("%s: accepted, want refusal", tt.name)
			continue
		}
		if tt.want != nil && !errors.Is(err, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
	}
}
