package devnet_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/devnet"
	"github.com/tetherhq/tether/internal/tailnet"
)

// TestStateSurvivesRestart: a dev tailnet restarted on the same state
// file gives a node that joins again (same node state) its node ID and
// address back, and another node still finds it under them. Without the
// state file the restarted control server hands IDs out anew, in
// registration order, so a node joining in another order gets another
// node's old ID.
func TestStateSurvivesRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	state := filepath.Join(dir, "devnet-nodes.json")
	start := func(port int, key string) *devnet.Tailnet {
		t.Helper()
		dn, err := devnet.Start(ctx, devnet.Config{StateFile: state, ControlPort: port, AuthKey: key})
		if err != nil {
			t.Fatal(err)
		}
		return dn
	}
	join := func(dn *devnet.Tailnet, name string) *tailnet.Node {
		t.Helper()
		n, err := tailnet.New(tailnet.Config{Hostname: name, StateDir: filepath.Join(dir, name), ControlURL: dn.ControlURL, AuthKey: dn.AuthKey})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := n.Up(ctx); err != nil {
			t.Fatal(err)
		}
		return n
	}
	dn := start(0, "")
	a, b := join(dn, "alpha"), join(dn, "beta")
	ids := map[string]string{"alpha": string(a.SelfID()), "beta": string(b.SelfID())}
	ips := map[string]string{"alpha": a.IPv4().String(), "beta": b.IPv4().String()}
	if _, err := a.WaitPeer(ctx, "beta"); err != nil {
		t.Fatal(err)
	}
	a.Close()
	b.Close()
	port, key := dn.ControlPort(), dn.AuthKey
	dn.Close()

	// Restarted: the nodes join again in the other order.
	dn = start(port, key)
	defer dn.Close()
	b, a = join(dn, "beta"), join(dn, "alpha")
	defer a.Close()
	defer b.Close()
	for name, n := range map[string]*tailnet.Node{"alpha": a, "beta": b} {
		if got := string(n.SelfID()); got != ids[name] {
			t.Errorf("%s has node ID %s after the restart, want %s", name, got, ids[name])
		}
		if got := n.IPv4().String(); got != ips[name] {
			t.Errorf("%s has address %s after the restart, want %s", name, got, ips[name])
		}
	}
	p, err := a.WaitPeer(ctx, "beta")
	if err != nil {
		t.Fatal(err)
	}
	if string(p.ID) != ids["beta"] || p.IP.String() != ips["beta"] {
		t.Errorf("alpha sees beta as %s at %s, want %s at %s", p.ID, p.IP, ids["beta"], ips["beta"])
	}
}
