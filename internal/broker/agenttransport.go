package broker

import (
	"context"
	"fmt"
	"net"

	"github.com/tetherhq/tether/internal/protocol"
	"github.com/tetherhq/tether/internal/tailnet"
)

// AgentTransport carries the agent API in place of the broker's tailnet
// node: the broker serves the API on the transport's listener and takes
// each caller's identity from the transport instead of the tailnet's
// WhoIs. Everything above the transport — pairing, challenges, sessions
// bound to the caller's node ID, heartbeats, cosignatures, the store — is
// the broker's own code.
//
// It exists for the agent load test (package agentload), which holds
// thousands of simulated agents against one broker on one machine, where
// as many tailnet nodes could not run. No binary sets it: the broker
// defines the hook and implements none of it, and only that package's
// tests do. A transport decides who an agent is, so it must be as strict
// as the tailnet: an address it cannot identify is an error.
type AgentTransport interface {
	// Listen returns the listener the agent API is served on.
	Listen() (net.Listener, error)
	// WhoIs identifies the caller at remoteAddr ("ip:port"), as
	// [tailnet.Node.WhoIs] does, and fails for a caller it does not know.
	WhoIs(ctx context.Context, remoteAddr string) (tailnet.Identity, error)
}

// listenAgents returns the agent API's listener: the broker's tailnet
// node's, or the configured transport's.
func (b *Broker) listenAgents() (net.Listener, error) {
	if t := b.cfg.AgentTransport; t != nil {
		ln, err := t.Listen()
		if err != nil {
			return nil, fmt.Errorf("listen for agents: %w", err)
		}
		return ln, nil
	}
	ln, err := b.node.Listen(protocol.BrokerPort)
	if err != nil {
		return nil, fmt.Errorf("listen on the tailnet: %w", err)
	}
	return ln, nil
}

// whoIs identifies a caller of the agent API: by the tailnet, or by the
// configured transport.
func (b *Broker) whoIs(ctx context.Context, remoteAddr string) (tailnet.Identity, error) {
	if t := b.cfg.AgentTransport; t != nil {
		return t.WhoIs(ctx, remoteAddr)
	}
	return b.node.WhoIs(ctx, remoteAddr)
}
