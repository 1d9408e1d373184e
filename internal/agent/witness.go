package agent

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/mod/sumdb/note"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/agentapi"
	"github.com/tetherhq/tether/internal/config"
)

// The agent is the customer's witness of the broker's audit log: it
// cosigns a checkpoint only if it is consistent with the last one it
// cosigned, so a broker that rewrites history can no longer get the
// customer's signature.

const witnessFile = "witness.json"

// witnessState is the last checkpoint the agent cosigned.
type witnessState struct {
	Size uint64 `json:"size"`
	Root string `json:"root"` // hex
}

func (witnessState) Validate() error { return nil }

// ErrHistoryRewritten reports a checkpoint inconsistent with one the agent
// cosigned before. The agent refuses to cosign from then on.
var ErrHistoryRewritten = errors.New("the broker's audit history changed since this agent cosigned it")

func (a *Agent) loadWitness() (witnessState, [32]byte, error) {
	var w witnessState
	var root [32]byte
	path := filepath.Join(a.cfg.StateDir, witnessFile)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return w, root, nil
	}
	if err := config.Load(path, &w); err != nil {
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
	pub, err := agentapi.ParsePublicKey(a.state.BrokerKey)
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
	return audit.VerifierKey(agentapi.WitnessName(a.state.AgentID), a.key.Public().(ed25519.PublicKey))
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
	return audit.VerifierKey(agentapi.WitnessName(st.AgentID), key.Public().(ed25519.PublicKey))
}

// Witness fetches the broker's latest checkpoint if it is larger than the
// last one cosigned, checks it is signed by the pinned broker key and
// consistent with the last cosigned one, then cosigns it and hands the
// cosignature to the broker.
func (a *Agent) Witness(ctx context.Context) error {
	a.mu.Lock()
	tok, latest, refused := a.token, a.checkpointSize, a.historyRewritten
	a.mu.Unlock()
	if refused {
		return ErrHistoryRewritten
	}
	w, prevRoot, err := a.loadWitness()
	if err != nil {
		return err
	}
	if latest <= w.Size || tok == "" {
		return nil
	}
	var res agentapi.CheckpointResponse
	if err := a.call(ctx, agentapi.PathCheckpoint, tok, agentapi.CheckpointRequest{SinceSize: w.Size}, &res); err != nil {
		return fmt.Errorf("fetch checkpoint: %w", err)
	}
	lv, err := a.logVerifier()
	if err != nil {
		return err
	}
	cp, err := checkCheckpoint(w.Size, prevRoot, res, lv)
	if errors.Is(err, ErrHistoryRewritten) {
		return a.refuseHistory(err)
	}
	if err != nil {
		return err
	}
	if cp.Size == w.Size {
		return nil
	}
	ws, err := audit.NewSigner(agentapi.WitnessName(a.state.AgentID), a.key)
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
	if err := a.call(ctx, agentapi.PathCosign, tok, agentapi.CosignRequest{Size: cp.Size, Note: cosigned}, &ack); err != nil {
		return fmt.Errorf("deliver cosignature: %w", err)
	}
	a.log.Debug("cosigned audit checkpoint", "size", cp.Size)
	return nil
}

// checkCheckpoint checks a checkpoint from the broker against the last one
// this agent cosigned (size prevSize, root prevRoot): signed by the log
// key, not smaller, and proven consistent. A failure of consistency is
// ErrHistoryRewritten.
func checkCheckpoint(prevSize uint64, prevRoot [32]byte, res agentapi.CheckpointResponse, lv note.Verifier) (audit.Checkpoint, error) {
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

func (a *Agent) refuseHistory(err error) error {
	a.mu.Lock()
	first := !a.historyRewritten
	a.historyRewritten = true
	a.mu.Unlock()
	if first {
		a.log.Error("refusing to cosign the broker's audit log", "err", err)
	}
	return err
}
