package agentload

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"tailscale.com/tailcfg"

	"github.com/tetherhq/tether/internal/broker"
	"github.com/tetherhq/tether/internal/tailnet"
)

// LoopbackPeers is the load test's stand-in for the tailnet under the
// broker's agent API: the API is served on a loopback listener, and each
// simulated agent calls from its own loopback source address
// ([SourceAddr]), which names its node. A caller from any other address,
// 127.0.0.1 included, is not a peer, as an off-tailnet caller is not.
type LoopbackPeers struct {
	// Listener is where the agent API is served: a loopback listener.
	Listener net.Listener
}

var _ broker.AgentTransport = LoopbackPeers{}

// Listen returns p.Listener.
func (p LoopbackPeers) Listen() (net.Listener, error) {
	if p.Listener == nil {
		return nil, errors.New("loopback peers: no listener")
	}
	return p.Listener, nil
}

// WhoIs names the node of the simulated agent calling from remoteAddr.
func (LoopbackPeers) WhoIs(_ context.Context, remoteAddr string) (tailnet.Identity, error) {
	ap, err := netip.ParseAddrPort(remoteAddr)
	if err != nil {
		return tailnet.Identity{}, fmt.Errorf("whois %s: %w", remoteAddr, err)
	}
	ip := ap.Addr().Unmap()
	if !ip.Is4() || !ip.IsLoopback() || ip.As4()[1] == 0 {
		return tailnet.Identity{}, fmt.Errorf("whois %s: not a simulated agent's address (127.1.0.0 and above)", remoteAddr)
	}
	b := ip.As4()
	return tailnet.Identity{
		NodeID: tailcfg.StableNodeID("nload" + hex.EncodeToString(b[1:])),
		Name:   fmt.Sprintf("agent-%d-%d-%d.load.test", b[1], b[2], b[3]),
	}, nil
}

// MaxAgents is how many distinct source addresses [SourceAddr] gives.
const MaxAgents = 250 * 250 * 100

// SourceAddr is the loopback address the i-th simulated agent calls from:
// 127.1.0.1 onwards, one node each. Linux routes all of 127.0.0.0/8 to the
// loopback interface, so no set-up is needed.
func SourceAddr(i int) netip.Addr {
	if i < 0 || i >= MaxAgents {
		panic(fmt.Sprintf("agentload: agent %d: want 0 to %d", i, MaxAgents-1))
	}
	return netip.AddrFrom4([4]byte{127, byte(1 + i/(250*250)), byte(i / 250 % 250), byte(i%250 + 1)})
}
