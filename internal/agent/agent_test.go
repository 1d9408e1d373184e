package agent

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tetherhq/tether/internal/config"
	"github.com/tetherhq/tether/internal/protocol"
)

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, nil))
}

func TestNewRejects(t *testing.T) {
	good := config.Join{ControlURL: "http://127.0.0.1:1", AuthKey: "k", BrokerName: "b", BrokerKey: protocol.EncodePublicKey(make([]byte, 32))}
	tok, _ := protocol.NewPairingToken()
	damaged := t.TempDir()
	os.WriteFile(filepath.Join(damaged, stateFile), []byte(`{"agent_id":`), 0o600)
	noKey := t.TempDir()
	config.Write(filepath.Join(noKey, stateFile), State{AgentID: "a", DeploymentID: "d", ControlURL: "http://x", BrokerName: "b", BrokerNodeID: "n", BrokerKey: good.BrokerKey}, 0o600)

	paired := t.TempDir()
	config.Write(filepath.Join(paired, stateFile), State{AgentID: "a", DeploymentID: "d", ControlURL: "http://x", BrokerName: "b", BrokerNodeID: "n", BrokerKey: good.BrokerKey}, 0o600)
	os.WriteFile(filepath.Join(paired, keyFile), []byte(strings.Repeat("ab", 32)+"\n"), 0o600)

	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no state dir", Config{Join: good, PairingToken: tok}, "state dir is not set"},
		{"bad hostname", Config{StateDir: t.TempDir(), Hostname: "Agent_1", Join: good, PairingToken: tok}, "want a DNS label"},
		{"no token", Config{StateDir: t.TempDir(), Join: good}, "not paired yet"},
		{"bad token", Config{StateDir: t.TempDir(), Join: good, PairingToken: "tpt_short"}, "malformed pairing token"},
		{"incomplete join", Config{StateDir: t.TempDir(), Join: config.Join{ControlURL: "http://x"}, PairingToken: tok}, `"auth_key" is empty`},
		{"bad broker key", Config{StateDir: t.TempDir(), Join: func() config.Join { j := good; j.BrokerKey = "ed25519:xyz"; return j }(), PairingToken: tok}, "broker key"},
		{"public health", Config{StateDir: t.TempDir(), Join: good, PairingToken: tok, HealthAddr: "10.0.0.1:80"}, "want a loopback HOST:PORT"},
		{"damaged state", Config{StateDir: damaged}, "agent state is damaged"},
		{"missing key", Config{StateDir: noKey}, "agent key"},
		{"paired, bad broker tag", Config{StateDir: paired, Join: config.Join{BrokerTag: "tether-broker"}}, `"broker_tag" is "tether-broker"`},
		{"paired, bad broker name", Config{StateDir: paired, Join: config.Join{BrokerName: "a", BrokerNames: []string{"b c"}}}, `"broker_names" holds "b c"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New(%s) = %v, want error containing %q", tt.name, err, tt.want)
			}
		})
	}
}
