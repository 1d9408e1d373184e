package broker

import (
	"crypto/ed25519"
	"net/http"

	"github.com/tetherhq/tether/internal/protocol"
	"github.com/tetherhq/tether/internal/tailnet"
)

// handleProve proves to the calling tailnet node that this broker node
// holds the broker's key. Agents ask each broker node before they trust
// it — before they send it a pairing token or a session token, and before
// they take its calls — so that several brokers may share the key and an
// agent may fail over between them. The proof names this node and the
// caller as the tailnet identifies them, so a node that relays another
// broker node's proof cannot pass it off as its own. It is a signature
// over 32 bytes of the caller's choosing under a transcript of its own
// kind, so it signs nothing else; it changes no state and is not audited.
func (b *Broker) handleProve(w http.ResponseWriter, r *http.Request, id tailnet.Identity) error {
	var req protocol.ProveRequest
	if err := decodeJSON(w, r, protocol.MaxBody, &req); err != nil {
		return err
	}
	if len(req.Nonce) != protocol.ProveNonceLen {
		return errorf(http.StatusBadRequest, "bad_nonce", "nonce must be %d random bytes", protocol.ProveNonceLen)
	}
	writeJSON(w, http.StatusOK, protocol.ProveResponse{
		BrokerNodeID: string(b.self.NodeID),
		Signature:    ed25519.Sign(b.key, protocol.ProveTranscript(req.Nonce, string(b.self.NodeID), string(id.NodeID))),
	})
	return nil
}
