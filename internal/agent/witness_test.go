package agent

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"golang.org/x/mod/sumdb/note"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/config"
	"github.com/tetherhq/tether/internal/protocol"
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
	resp := func(text string, all [][32]byte, from uint64) protocol.CheckpointResponse {
		r := protocol.CheckpointResponse{Note: text, Size: uint64(len(all))}
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
		res  protocol.CheckpointResponse
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

// TestWitnessRefusalPersists: once the witness refuses, every data-plane
// call is refused, the refusal is in witness.json and a restarted agent
// refuses too; a witness state it cannot read is a refusal as well.
func TestWitnessRefusalPersists(t *testing.T) {
	good := config.Join{ControlURL: "http://127.0.0.1:1", AuthKey: "k", BrokerName: "b", BrokerKey: protocol.EncodePublicKey(make([]byte, 32))}
	tok, _ := protocol.NewPairingToken()
	dir := t.TempDir()
	a, err := New(Config{StateDir: dir, Join: good, PairingToken: tok, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if r := a.WitnessRefusal(); r != "" {
		t.Fatalf("WitnessRefusal() before anything was cosigned = %q, want none", r)
	}
	if err := a.checkWitness(); err != nil {
		t.Fatalf("checkWitness() = %v, want nil", err)
	}
	cause := fmt.Errorf("%w: checkpoint size 5 is smaller than 12, cosigned before", ErrHistoryRewritten)
	if err := a.refuseHistory(witnessState{Size: 12, Root: strings.Repeat("ab", 32)}, cause); !errors.Is(err, ErrHistoryRewritten) {
		t.Fatalf("refuseHistory = %v", err)
	}
	if err := a.checkWitness(); !errors.Is(err, ErrWitnessRefuses) || !strings.Contains(err.Error(), "smaller than 12") {
		t.Errorf("checkWitness() after the refusal = %v, want ErrWitnessRefuses with the reason", err)
	}

	// The agent restarts on the same state dir.
	b, err := New(Config{StateDir: dir, Join: good, PairingToken: tok, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if r := b.WitnessRefusal(); !strings.HasPrefix(r, "log rewritten: ") || !strings.Contains(r, "smaller than 12") {
		t.Errorf("WitnessRefusal() after a restart = %q, want the refusal kept", r)
	}
	w, _, err := b.loadWitness()
	if err != nil || w.Size != 12 {
		t.Errorf("witness state after the refusal = %+v, %v; want the cosigned size kept", w, err)
	}

	// A damaged witness state fails closed.
	if err := os.WriteFile(filepath.Join(dir, witnessFile), []byte(`{"size":`), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{StateDir: dir, Join: good, PairingToken: tok, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.checkWitness(); !errors.Is(err, ErrWitnessRefuses) || !strings.Contains(err.Error(), "unreadable") {
		t.Errorf("checkWitness() with a damaged witness.json = %v, want a refusal", err)
	}
	// A reason never exceeds what a heartbeat may carry.
	if r := capReason(strings.Repeat("é", 2000)); len(r) > protocol.MaxWitnessRefusal || !utf8.ValidString(r) {
		t.Errorf("capReason(4000 bytes) = %d bytes, valid UTF-8 %v", len(r), utf8.ValidString(r))
	}
}
