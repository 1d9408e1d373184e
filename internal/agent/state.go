package agent

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tetherhq/tether/internal/config"
	"github.com/tetherhq/tether/internal/protocol"
)

// State is what the agent keeps in its state directory after pairing:
// who it is, and which broker it trusts. state.json is written last, so
// its presence means pairing finished.
type State struct {
	AgentID      string    `json:"agent_id"`
	DeploymentID string    `json:"deployment_id"`
	Tenant       string    `json:"tenant"`
	Name         string    `json:"name"`
	ControlURL   string    `json:"control_url"`
	BrokerName   string    `json:"broker_name"`
	BrokerNodeID string    `json:"broker_node_id"`
	BrokerNames  []string  `json:"broker_names,omitempty"`
	BrokerTag    string    `json:"broker_tag,omitempty"`
	BrokerKey    string    `json:"broker_key"`
	PairedAt     time.Time `json:"paired_at"`
}

// Validate reports the first problem with s.
func (s State) Validate() error {
	switch {
	case s.AgentID == "" || s.DeploymentID == "":
		return errors.New("agent_id or deployment_id is missing")
	case s.BrokerName == "" || s.BrokerNodeID == "":
		return errors.New("broker_name or broker_node_id is missing")
	case s.ControlURL == "":
		return errors.New("control_url is missing")
	}
	if _, err := protocol.ParsePublicKey(s.BrokerKey); err != nil {
		return fmt.Errorf("broker_key: %w", err)
	}
	return nil
}

const (
	stateFile = "state.json"
	keyFile   = "agent.key"
)

// loadState reads the state in dir. It returns ok=false, and no error,
// when the agent has not paired yet.
func loadState(dir string) (s State, key ed25519.PrivateKey, ok bool, err error) {
	path := filepath.Join(dir, stateFile)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return s, nil, false, nil
	}
	if err := config.LoadWith(path, &s, (*State).Validate); err != nil {
		return s, nil, false, fmt.Errorf("agent state is damaged: %w (move the state dir aside and pair again with a new pairing token)", err)
	}
	kb, err := os.ReadFile(filepath.Join(dir, keyFile))
	if err != nil {
		return s, nil, false, fmt.Errorf("agent key: %w (move the state dir aside and pair again with a new pairing token)", err)
	}
	seed, err := hex.DecodeString(strings.TrimSpace(string(kb)))
	if err != nil || len(seed) != ed25519.SeedSize {
		return s, nil, false, fmt.Errorf("agent key %s is corrupt (move the state dir aside and pair again with a new pairing token)", filepath.Join(dir, keyFile))
	}
	return s, ed25519.NewKeyFromSeed(seed), true, nil
}

// newKey makes the agent's key pair.
func newKey() ed25519.PrivateKey {
	seed := make([]byte, ed25519.SeedSize)
	rand.Read(seed)
	return ed25519.NewKeyFromSeed(seed)
}

// saveState writes the key, then the state, each atomically.
func saveState(dir string, s State, key ed25519.PrivateKey) error {
	if err := config.WriteFile(filepath.Join(dir, keyFile), []byte(hex.EncodeToString(key.Seed())+"\n"), 0o600); err != nil {
		return err
	}
	return config.Write(filepath.Join(dir, stateFile), s, 0o600)
}
