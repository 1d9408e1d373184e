package agent

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"unicode/utf8"

	"golang.org/x/mod/sumdb/note"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/config"
	"github.com/tetherhq/tether/internal/protocol"
)

// The agent is the customer's witness of the broker's audit log: it
// cosigns a checkpoint only if it is consistent with the last one it
// cosigned, so a broker that rewrites history can no longer get the
// customer's signature. A broker whose log is smaller than the one the
// agent cosigned, or forks from it, has lost or rewritten history: the
// agent then refuses every data-plane call (fail closed), says why in
// every heartbeat, and keeps refusing across restarts (the refusal is in
// witness.json) until the customer's operator decides otherwise.

const witnessFile = "witness.json"

// witnessState is the last checkpoint the agent cosigned and, once the
// broker's log was found rewritten, why the agent refuses.
type witnessState struct {
	Size uint64 `json:"size"`
	Root string `json:"root"` // hex
	// Refused, when set, is why the witness refuses the broker. It stays
	// until the operator removes it (after the broker's log was restored)
	// or pairs the agent again.
	Refused string `json:"refused,omitempty"`
}

func (witnessState) Validate() error { return nil }

// ErrHistoryRewritten reports a checkpoint inconsistent with one the agent
// cosigned before. The agent refuses to cosign, and to serve, from then on.
var ErrHistoryRewritten = errors.New("the broker's audit history changed since this agent cosigned it")

// ErrWitnessRefuses reports a data-plane call refused because the witness
// found the broker's audit log rewritten.
var ErrWitnessRefuses = errors.New("this agent refuses all access: the broker's audit log was rewritten after this agent cosigned it")

// witnessGuard is the witness's verdict, read from witness.json at first
// use and kept in memory.
type witnessGuard struct {
	mu        sync.Mutex
	loaded    bool
	refused   string // why the agent refuses; "" while it does not
	confirmed string // the session token under which the cosigned checkpoint was seen again
}

// WitnessRefusal says why the agent refuses the broker ("log rewritten:
// …"), or "" when it does not. A witness state that cannot be read is a
// refusal too: the agent cannot tell what it cosigned.
func (a *Agent) WitnessRefusal() string {
	g := &a.witness
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.loaded {
		w, _, err := a.loadWitness()
		switch {
		case err != nil:
			return capReason("witness state unreadable: " + err.Error())
		default:
			g.refused, g.loaded = w.Refused, true
		}
	}
	return g.refused
}

// capReason bounds a refusal's reason to what a heartbeat may carry.
func capReason(s string) string {
	n := protocol.MaxWitnessRefusal - len("…")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// checkWitness refuses a data-plane call while the witness refuses the
// broker.
func (a *Agent) checkWitness() error {
	if reason := a.WitnessRefusal(); reason != "" {
		return fmt.Errorf("%w (witness refuses: %s)", ErrWitnessRefuses, reason)
	}
	return nil
}

func (a *Agent) loadWitness() (witnessState, [32]byte, error) {
	var w witnessState
	var root [32]byte
	path := filepath.Join(a.cfg.StateDir, witnessFile)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return w, root, nil
	}
	if err := config.LoadWith(path, &w, (*witnessState).Validate); err != nil {
		return w, root, fmt.Errorf("witness state: %w", err)
	}
	b, err := hex.DecodeString(w.Root)
	if err != nil || len(b) != 32 {
		return w, root, fmt.Errorf("witness state %s: root is not 32 hex-encoded bytes", path)
	}
	copy(root[:], b)
	return w, root, nil
}

// logVerifier verifies the broker's checkpoints with the pinned broker key.
func (a *Agent) logVerifier() (note.Verifier, error) {
	pub, err := protocol.ParsePublicKey(a.state.BrokerKey)
	if err != nil {
		return nil, err
	}
	vkey, err := audit.VerifierKey(audit.OriginFor(pub), pub)
	if err != nil {
		return nil, err
	}
	return audit.NewVerifier(vkey)
}

// WitnessKey returns the note verifier key of this agent's cosignatures,
// for `broker audit verify --witness-key`.
func (a *Agent) WitnessKey() (string, error) {
	return audit.VerifierKey(protocol.WitnessName(a.state.AgentID), a.key.Public().(ed25519.PublicKey))
}

// WitnessKeyOf returns the witness key of the agent paired in stateDir.
func WitnessKeyOf(stateDir string) (string, error) {
	if stateDir == "" {
		return "", errors.New("state dir is not set: want --state-dir DIR")
	}
	st, key, ok, err := loadState(stateDir)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", fmt.Errorf("no paired agent in %s", stateDir)
	}
	return audit.VerifierKey(protocol.WitnessName(st.AgentID), key.Public().(ed25519.PublicKey))
}

// Witness fetches the broker's latest checkpoint if it is larger than the
// last one cosigned, checks it is signed by the pinned broker key and
// consistent with the last cosigned one, then cosigns it and hands the
// cosignature to the broker.
//
// It also asks when the broker announces a smaller checkpoint than the
// one cosigned, and once per session when it announces the same size:
// a smaller log, or another root at the same size, is history rewritten,
// and the agent refuses from then on.
func (a *Agent) Witness(ctx context.Context) error {
	if a.WitnessRefusal() != "" {
		return ErrHistoryRewritten
	}
	a.mu.Lock()
	tok, latest := a.token, a.checkpointSize
	a.mu.Unlock()
	w, prevRoot, err := a.loadWitness()
	if err != nil {
		return err
	}
	a.witness.mu.Lock()
	confirmed := a.witness.confirmed == tok
	a.witness.mu.Unlock()
	if tok == "" || (latest == w.Size && (w.Size == 0 || confirmed)) {
		return nil
	}
	var res protocol.CheckpointResponse
	if err := a.call(ctx, protocol.PathCheckpoint, tok, protocol.CheckpointRequest{SinceSize: w.Size}, &res); err != nil {
		var be *brokerError
		if w.Size > 0 && errors.As(err, &be) && (be.code == "invalid_size" || be.code == "no_checkpoint") {
			// The broker says its latest checkpoint is smaller than
			// the one this agent cosigned, or that it has none.
			return a.refuseHistory(w, fmt.Errorf("%w: the broker has no checkpoint of %d events, cosigned before (it said: %s)", ErrHistoryRewritten, w.Size, be.message))
		}
		return fmt.Errorf("fetch checkpoint: %w", err)
	}
	lv, err := a.logVerifier()
	if err != nil {
		return err
	}
	cp, err := checkCheckpoint(w.Size, prevRoot, res, lv)
	if errors.Is(err, ErrHistoryRewritten) {
		return a.refuseHistory(w, err)
	}
	if err != nil {
		return err
	}
	if cp.Size == w.Size {
		a.witness.mu.Lock()
		a.witness.confirmed = tok
		a.witness.mu.Unlock()
		return nil
	}
	ws, err := audit.NewSigner(protocol.WitnessName(a.state.AgentID), a.key)
	if err != nil {
		return err
	}
	cosigned, err := audit.Cosign(res.Note, lv, ws)
	if err != nil {
		return fmt.Errorf("cosign: %w", err)
	}
	// Remember before telling: the agent must never cosign an
	// inconsistent checkpoint later, even if this delivery fails.
	if err := config.Write(filepath.Join(a.cfg.StateDir, witnessFile), witnessState{Size: cp.Size, Root: hex.EncodeToString(cp.Root[:])}, 0o600); err != nil {
		return err
	}
	var ack struct{}
	if err := a.call(ctx, protocol.PathCosign, tok, protocol.CosignRequest{Size: cp.Size, Note: cosigned}, &ack); err != nil {
		return fmt.Errorf("deliver cosignature: %w", err)
	}
	a.log.Debug("cosigned audit checkpoint", "size", cp.Size)
	return nil
}

// checkCheckpoint checks a checkpoint from the broker against the last one
// this agent cosigned (size prevSize, root prevRoot): signed by the log
// key, not smaller, and proven consistent. A failure of consistency is
// ErrHistoryRewritten.
func checkCheckpoint(prevSize uint64, prevRoot [32]byte, res protocol.CheckpointResponse, lv note.Verifier) (audit.Checkpoint, error) {
	cp, err := audit.OpenCheckpoint(res.Note, lv)
	if err != nil {
		return cp, fmt.Errorf("checkpoint from the broker: %w", err)
	}
	switch {
	case cp.Size < prevSize:
		return cp, fmt.Errorf("%w: checkpoint size %d is smaller than %d, cosigned before", ErrHistoryRewritten, cp.Size, prevSize)
	case cp.Size == prevSize:
		if cp.Root != prevRoot {
			return cp, fmt.Errorf("%w: checkpoint %d has another root than the one cosigned", ErrHistoryRewritten, cp.Size)
		}
		return cp, nil
	case prevSize == 0:
		return cp, nil
	}
	proof := make([][32]byte, len(res.Proof))
	for i, p := range res.Proof {
		if len(p) != 32 {
			return cp, fmt.Errorf("%w: consistency proof hash %d is %d bytes, want 32", ErrHistoryRewritten, i, len(p))
		}
		copy(proof[i][:], p)
	}
	if err := audit.VerifyConsistency(prevSize, cp.Size, prevRoot, cp.Root, proof); err != nil {
		return cp, fmt.Errorf("%w: checkpoint %d is not consistent with checkpoint %d: %v", ErrHistoryRewritten, cp.Size, prevSize, err)
	}
	return cp, nil
}

// refuseHistory makes the witness refuse the broker from now on, in
// memory and in witness.json (w, the state last read), so that a restart
// does not forget it.
func (a *Agent) refuseHistory(w witnessState, err error) error {
	reason := capReason("log rewritten: " + err.Error())
	g := &a.witness
	g.mu.Lock()
	first := g.refused == ""
	g.refused, g.loaded = reason, true
	g.mu.Unlock()
	if !first {
		return err
	}
	a.log.Error("the broker's audit log was rewritten: refusing every data-plane call and every cosignature from now on; to serve again, restore the broker's log, or pair this agent again",
		"err", err, "cosigned_size", w.Size)
	w.Refused = reason
	if werr := config.Write(filepath.Join(a.cfg.StateDir, witnessFile), w, 0o600); werr != nil {
		// Refusing in memory still holds until a restart.
		a.log.Error("could not record the witness's refusal in the state dir", "err", werr)
	}
	return err
}
