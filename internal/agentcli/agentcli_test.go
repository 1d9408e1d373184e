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

// TestRunApprovalFlags: the customer's approval authority is checked
// before the agent touches the network, each mistake named by its flag.
func TestRunApprovalFlags(t *testing.T) {
	const iss = "https://idp.customer.example"
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"http issuer", []string{"--approver-issuer", "http://idp.customer.example", "--approver-audience", "tether", "--approver-group", "approvers"}, "--approver-issuer: issuer \"http://idp.customer.example\" uses http"},
		{"no audience", []string{"--approver-issuer", iss, "--approver-group", "approvers"}, "--approver-issuer also needs --approver-audience"},
		{"no group", []string{"--approver-issuer", iss, "--approver-audience", "tether"}, "--approver-issuer also needs --approver-group"},
		{"zero approvals", []string{"--approver-issuer", iss, "--approver-audience", "tether", "--approver-group", "approvers", "--approvals-required", "0"}, "--approvals-required 0: want 1 to 8"},
		{"too many approvals", []string{"--approver-issuer", iss, "--approver-audience", "tether", "--approver-group", "approvers", "--approvals-required", "9"}, "--approvals-required 9: want 1 to 8"},
		{"bad break-glass", []string{"--break-glass", "maybe"}, `--break-glass "maybe": want deny or allow`},
		{"group without issuer", []string{"--approver-group", "approvers"}, "need --approver-issuer"},
		{"approvals without issuer", []string{"--approvals-required", "2"}, "--approvals-required needs --approver-issuer"},
		// A valid authority gets as far as the missing tailnet details.
		{"valid", []string{"--approver-issuer", iss, "--approver-audience", "tether", "--approver-group", "approvers", "--approvals-required", "2", "--break-glass", "allow"}, "not paired yet"},
		{"loopback http", []string{"--approver-issuer", "http://127.0.0.1:5556/acme", "--approver-audience", "tether", "--approver-group", "approvers"}, "not paired yet"},
		{"deny without issuer", []string{"--break-glass", "deny"}, "not paired yet"},
		// The web console's and the CLI's clients, repeated or with commas.
		{"two audiences", []string{"--approver-issuer", iss, "--approver-audience", "tether-cli", "--approver-audience", "tether-web", "--approver-group", "approvers"}, "not paired yet"},
		{"audiences with commas", []string{"--approver-issuer", iss, "--approver-audience", "tether-cli,tether-web", "--approver-group", "approvers"}, "not paired yet"},
		{"audience with a space", []string{"--approver-issuer", iss, "--approver-audience", "tether-cli, tether-web", "--approver-group", "approvers"}, `--approver-audience " tether-web": want client IDs`},
		{"too many audiences", []string{"--approver-issuer", iss, "--approver-audience", "a,b,c,d,e,f,g,h,i", "--approver-group", "approvers"}, "9 client IDs, at most 8"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"run", "--state-dir", t.TempDir(), "--memory-limit", "0"}, tt.args...)
			err := Run(context.Background(), args, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("agent %s = %v, want an error containing %q", strings.Join(args, " "), err, tt.want)
			}
		})
	}
}
