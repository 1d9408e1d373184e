package broker_test

import (
	"strings"
	"testing"

	"github.com/tetherhq/tether/internal/broker"
	"github.com/tetherhq/tether/internal/devbroker"
)

// TestDevListensOnLoopbackOnly: a dev broker's identity provider signs
// anyone in as any user, admin included, so its API must not be reachable
// from other hosts. (Its tailnet may bind elsewhere with --dev-addr: that
// carries only agents' signed calls.)
func TestDevListensOnLoopbackOnly(t *testing.T) {
	for _, tt := range []struct {
		listen, devAddr string
		ok              bool
	}{
		{"127.0.0.1:8443", "", true},
		{"127.0.0.1:0", "", true},
		{"[::1]:8443", "", true},
		{"localhost:8443", "", true},
		{"127.0.0.1:0", "10.99.0.1", true}, // e2e TestAgentBehindInboundFirewall
		{"0.0.0.0:8443", "", false},
		{":8443", "", false},
		{"[::]:8443", "", false},
		{"10.0.0.5:8443", "", false},
		{"example.com:8443", "", false},
	} {
		err := broker.Config{Dev: devbroker.New(devbroker.Config{Addr: tt.devAddr}), DataDir: t.TempDir(), Listen: tt.listen}.Validate()
		if tt.ok && err != nil {
			t.Errorf("dev Validate() with --listen %s = %v, want nil", tt.listen, err)
		}
		if !tt.ok && (err == nil || !strings.Contains(err.Error(), "not loopback") || !strings.Contains(err.Error(), "signs anyone in")) {
			t.Errorf("dev Validate() with --listen %s = %v, want a refusal saying why", tt.listen, err)
		}
	}
}
