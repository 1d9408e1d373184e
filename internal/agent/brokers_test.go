package agent

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/protocol"
	"github.com/tetherhq/tether/internal/tailnet"
)

// serveProve serves the broker's prove endpoint on node n with answer,
// which gets the request's nonce and the caller's node ID.
func serveProve(t *testing.T, n *tailnet.Node, answer func(nonce []byte, caller string) protocol.ProveResponse) {
	t.Helper()
	ln, err := n.Listen(protocol.BrokerPort)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req protocol.ProveRequest
		if r.URL.Path != protocol.PathProve || json.NewDecoder(r.Body).Decode(&req) != nil {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		id, err := n.WhoIs(r.Context(), r.RemoteAddr)
		if err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		json.NewEncoder(w).Encode(answer(req.Nonce, string(id.NodeID)))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

// TestBrokerNodesProveTheKey: besides the broker node it paired with, the
// agent takes calls from another node the control server names as a
// broker, once that node proves the broker's key to it — and not from a
// named node that cannot, nor from one that relays a real broker node's
// proof, even when the call itself carries a valid signature.
func TestBrokerNodesProveTheKey(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rig := newBrokerRig(t, ctx, time.Now, "broker-b", "impostor", "relay", "stranger")
	rig.a.paired = true
	rig.a.cfg.Join.BrokerName = "broker"
	rig.a.cfg.Join.BrokerNames = []string{"broker-b", "impostor", "relay"}
	b, impostor, relay := rig.extra["broker-b"], rig.extra["impostor"], rig.extra["relay"]

	serveProve(t, b, func(nonce []byte, caller string) protocol.ProveResponse {
		self := string(b.SelfID())
		return protocol.ProveResponse{BrokerNodeID: self, Signature: ed25519.Sign(rig.brokerKey, protocol.ProveTranscript(nonce, self, caller))}
	})
	serveProve(t, impostor, func(nonce []byte, caller string) protocol.ProveResponse {
		self := string(impostor.SelfID())
		return protocol.ProveResponse{BrokerNodeID: self, Signature: ed25519.Sign(rig.otherKey, protocol.ProveTranscript(nonce, self, caller))}
	})
	// The relay asks broker-b for a proof with the agent's nonce and
	// passes it on, once as it came and once claiming it for itself.
	relayed := 0
	serveProve(t, relay, func(nonce []byte, caller string) protocol.ProveResponse {
		bip := b.IPv4()
		hc := &http.Client{Transport: &http.Transport{DialContext: relay.Dial}}
		body, _ := json.Marshal(protocol.ProveRequest{Nonce: nonce})
		res, err := hc.Post("http://"+net.JoinHostPort(bip.String(), strconv.Itoa(protocol.BrokerPort))+protocol.PathProve, "application/json", bytes.NewReader(body))
		if err != nil {
			t.Error(err)
			return protocol.ProveResponse{}
		}
		defer res.Body.Close()
		var p protocol.ProveResponse
		raw, _ := io.ReadAll(res.Body)
		json.Unmarshal(raw, &p)
		relayed++
		if relayed%2 == 0 {
			p.BrokerNodeID = string(relay.SelfID())
		}
		return p
	})

	call := func(from *tailnet.Node) (int, string) {
		return rig.do(t, brokerCall{from: from, key: rig.brokerKey, at: time.Now(), nonce: freshNonce()})
	}
	for _, tc := range []struct {
		name string
		from *tailnet.Node
		want int
	}{
		{"paired broker node", rig.brokerNode, http.StatusOK},
		{"other broker node, proves the key", b, http.StatusOK},
		{"other broker node again, proven", b, http.StatusOK},
		{"named node with another key", impostor, http.StatusForbidden},
		{"named node relaying a proof", relay, http.StatusForbidden},
		{"named node relaying a proof as its own", relay, http.StatusForbidden},
		{"node not named a broker", rig.extra["stranger"], http.StatusForbidden},
		{"node not named a broker, other key", rig.other, http.StatusForbidden},
	} {
		if status, msg := call(tc.from); status != tc.want {
			t.Errorf("%s: status %d (%s), want %d", tc.name, status, msg, tc.want)
		}
	}
	if relayed != 2 {
		t.Errorf("the relay was asked for %d proofs, want 2", relayed)
	}
	for name, n := range map[string]*tailnet.Node{"impostor": impostor, "relay": relay} {
		if rig.a.proven.has(n.SelfID(), time.Now()) {
			t.Errorf("%s is remembered as a proven broker node", name)
		}
	}
}
