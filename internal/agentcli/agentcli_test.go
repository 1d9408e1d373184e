package agentcli

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tetherhq/tether/internal/protocol"
)

// TestRunPairingTokenReference: the pairing token may be given as
// file:PATH or env:NAME, so that it stays off the command line (and out
// of ps): the reference is resolved before the token is checked. Each
// run here stops before the network, at the missing tailnet details that
// come after the token's check.
func TestRunPairingTokenReference(t *testing.T) {
	token, _ := protocol.NewPairingToken()
	dir := t.TempDir()
	file := filepath.Join(dir, "pairing-token")
	if err := os.WriteFile(file, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TEST_TETHER_PAIRING_TOKEN", token)
	const joinMissing = "to pair, the agent needs the broker's tailnet details"
	for _, tt := range []struct{ name, ref, want string }{
		{"literal", token, joinMissing},
		{"file", "file:" + file, joinMissing},
		{"env", "env:TEST_TETHER_PAIRING_TOKEN", joinMissing},
		{"missing file", "file:" + filepath.Join(dir, "nope"), "pairing token: secret reference file:"},
		{"unset env", "env:TEST_TETHER_NO_SUCH_VAR", "environment variable TEST_TETHER_NO_SUCH_VAR is not set"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := Run(context.Background(), []string{"run", "--state-dir", t.TempDir(), "--pairing-token", tt.ref, "--memory-limit", "0"}, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("agent run --pairing-token %s = %v, want an error containing %q", tt.name, err, tt.want)
			}
			if strings.Contains(err.Error(), token) {
				t.Errorf("the error %q shows the token", err)
			}
		})
	}
}
