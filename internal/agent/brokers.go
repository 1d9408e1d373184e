package agent

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"time"

	"tailscale.com/tailcfg"

	"github.com/tetherhq/tether/internal/protocol"
	"github.com/tetherhq/tether/internal/tailnet"
)

// Several brokers may share one key and one store. The agent looks for
// broker nodes by the names and the tag its join file or flags give, uses
// one of them, and fails over to another when that one stops answering.
// A node is trusted — sent a pairing or session token, or allowed to call
// the agent — only once it has proved the broker's key to this agent's
// node (prove), and only for provenFor: a restarted control server may
// hand a node ID out again.

// provenFor is how long a broker node's proof is trusted before the node
// is asked again.
const provenFor = 10 * time.Minute

// maxProven bounds the broker nodes remembered as proven.
const maxProven = 64

// proveCandidatesEvery is how often the agent proves the broker nodes it
// does not use, so that their first call to it does not wait for a proof.
const proveCandidatesEvery = time.Minute

// provenNodes are the broker nodes that proved the broker's key, and
// until when the proof is trusted.
type provenNodes struct {
	mu    sync.Mutex
	until map[tailcfg.StableNodeID]time.Time
}

func (p *provenNodes) has(id tailcfg.StableNodeID, now time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	u, ok := p.until[id]
	return ok && now.Before(u)
}

func (p *provenNodes) add(id tailcfg.StableNodeID, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.until == nil {
		p.until = make(map[tailcfg.StableNodeID]time.Time)
	}
	if len(p.until) >= maxProven {
		for k, u := range p.until {
			if !now.Before(u) {
				delete(p.until, k)
			}
		}
		if len(p.until) >= maxProven {
			clear(p.until) // they are proved again on their next call
		}
	}
	p.until[id] = now.Add(provenFor)
}

func (p *provenNodes) drop(id tailcfg.StableNodeID) {
	p.mu.Lock()
	delete(p.until, id)
	p.mu.Unlock()
}

func (p *provenNodes) reset() {
	p.mu.Lock()
	clear(p.until)
	p.mu.Unlock()
}

// prove asks broker node peer to prove that it holds the broker's key, for
// this agent's node, and remembers it if it does. The proof names both
// nodes as the tailnet identifies them, so another node cannot relay a
// broker node's proof as its own.
func (a *Agent) prove(ctx context.Context, l *tailnetLink, peer tailnet.Peer) error {
	key, err := a.brokerKey()
	if err != nil {
		return err
	}
	self := l.node.SelfID()
	if self == "" {
		return errors.New("prove the broker node: this agent's tailnet node is not up")
	}
	nonce := make([]byte, protocol.ProveNonceLen)
	rand.Read(nonce)
	var res protocol.ProveResponse
	if err := a.callNode(ctx, l, peer.ID, protocol.PathProve, "", protocol.ProveRequest{Nonce: nonce}, &res); err != nil {
		return fmt.Errorf("ask broker node %s to prove the broker key: %w", peer.Name, err)
	}
	if res.BrokerNodeID != string(peer.ID) || !ed25519.Verify(key, protocol.ProveTranscript(nonce, string(peer.ID), string(self)), res.Signature) {
		if a.paired && string(peer.ID) == a.state.BrokerNodeID && res.BrokerNodeID == string(peer.ID) {
			// The very node this agent paired with now proves another
			// key: the broker's key was replaced, or the pinned one
			// tampered with. Never talk to it; the agent stops.
			return fmt.Errorf("%w: the broker at %s, the node this agent paired with, signed its proof with a key other than the pinned %s", ErrBrokerKeyMismatch, peer.Name, protocol.EncodePublicKey(key))
		}
		a.log.Error("a tailnet node named or tagged as a broker did not prove the broker's key: not talking to it",
			"node", peer.Name, "node_id", peer.ID, "claimed_node_id", res.BrokerNodeID)
		return fmt.Errorf("%w: node %s (%s) did not prove it holds the broker key %s", errWrongBrokerNode, peer.Name, peer.ID, protocol.EncodePublicKey(key))
	}
	a.proven.add(peer.ID, a.now())
	a.log.Debug("broker node proved the broker key", "node", peer.Name, "node_id", peer.ID)
	return nil
}

// checkBrokerNode reports whether the tailnet caller id may call the
// agent: a broker node that proved the broker's key, or one the control
// server names or tags as a broker that proves it now.
func (a *Agent) checkBrokerNode(ctx context.Context, id tailnet.Identity) error {
	if a.proven.has(id.NodeID, a.now()) {
		return nil
	}
	m := a.brokerMatch()
	if !m.Matches(id.Name, id.Tags) {
		return fmt.Errorf("caller %s is not a broker node (want a node %s that proves the broker key)", id.Name, m)
	}
	l := a.link()
	if l == nil {
		return errors.New("caller could not be checked: the agent is not on the tailnet")
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := a.prove(ctx, l, tailnet.Peer{ID: id.NodeID, Name: id.Name}); err != nil {
		return fmt.Errorf("caller %s did not prove the broker key: %w", id.Name, err)
	}
	return nil
}

// failover moves the agent to another broker node that answers on the
// tailnet, when the one it uses stopped answering; it reports whether it
// did. The next call proves the new node's key first, and the session
// goes on there: sessions live in the brokers' shared store.
func (a *Agent) failover(ctx context.Context) bool {
	l := a.link()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	peers, err := l.node.FindPeers(ctx, a.brokerMatch())
	if err != nil || len(peers) < 2 {
		return false
	}
	p, err := l.node.WaitAnyPeer(ctx, a.brokerMatch(), l.broker.ID)
	if err != nil || p.ID == l.broker.ID {
		return false
	}
	a.log.Warn("the broker node stopped answering; failing over to another broker node", "from", l.broker.Name, "to", p.Name)
	next := *l
	next.broker = p
	a.tl.Store(&next)
	return true
}

// proveCandidates proves, at most every proveCandidatesEvery, the broker
// nodes on the tailnet that have not proved the key lately, so that they
// can call the agent at once.
func (a *Agent) proveCandidates(ctx context.Context) {
	now := a.now()
	if last := a.provingAt.Load(); last != 0 && now.Sub(time.UnixMilli(last)) < proveCandidatesEvery {
		return
	}
	a.provingAt.Store(now.UnixMilli())
	l := a.link()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	peers, err := l.node.FindPeers(ctx, a.brokerMatch())
	if err != nil {
		return
	}
	for _, p := range peers {
		if a.proven.has(p.ID, now) {
			continue
		}
		if err := a.prove(ctx, l, p); err != nil {
			a.log.Debug("a broker node did not prove the broker key", "node", p.Name, "err", err)
		}
	}
}
