package agent

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/devnet"
	"github.com/tetherhq/tether/internal/protocol"
	"github.com/tetherhq/tether/internal/tailnet"
)

// TestVerifyBroker exercises both identity layers of the agent's tailnet
// API: the caller's node must be the pinned broker node, and each call
// must carry a fresh, unreplayed signature by the pinned broker key.
func TestVerifyBroker(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	dn, err := devnet.Start(ctx, devnet.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dn.Close() })
	up := func(name string) *tailnet.Node {
		n, err := tailnet.New(tailnet.Config{Hostname: name, ControlURL: dn.ControlURL, AuthKey: dn.AuthKey})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		if _, err := n.Up(ctx); err != nil {
			t.Fatal(err)
		}
		return n
	}
	agentNode, brokerNode, otherNode := up("agent"), up("broker"), up("other")
	brokerPeer, err := agentNode.WaitPeer(ctx, "broker")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := agentNode.WaitPeer(ctx, "other"); err != nil {
		t.Fatal(err)
	}

	brokerPub, brokerKey, _ := ed25519.GenerateKey(rand.Reader)
	_, otherKey, _ := ed25519.GenerateKey(rand.Reader)
	now := time.Now()
	a := &Agent{
		cfg:    Config{Version: "test"},
		now:    func() time.Time { return now },
		start:  now,
		nonces: map[string]time.Time{},
		state: State{
			AgentID:      "0190aaaa-0000-7000-8000-000000000001",
			BrokerNodeID: string(brokerPeer.ID),
			BrokerKey:    protocol.EncodePublicKey(brokerPub),
		},
	}
	a.log = testLogger(t)
	a.tl.Store(&tailnetLink{node: agentNode})
	ln, err := agentNode.Listen(protocol.AgentPort)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: a.handler()}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	url := "http://" + net.JoinHostPort(agentNode.IPv4().String(), strconv.Itoa(protocol.AgentPort)) + protocol.PathAgentPing

	type call struct {
		from     *tailnet.Node
		key      ed25519.PrivateKey
		at       time.Time
		nonce    string
		audience string
		unsigned bool
	}
	fresh := func() string {
		b := make([]byte, 16)
		rand.Read(b)
		return hex.EncodeToString(b)
	}
	do := func(c call) int {
		t.Helper()
		hc := &http.Client{Transport: &http.Transport{DialContext: c.from.Dial}, Timeout: 30 * time.Second}
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if !c.unsigned {
			aud := c.audience
			if aud == "" {
				aud = a.state.AgentID
			}
			sig := ed25519.Sign(c.key, protocol.CallTranscript(aud, http.MethodGet, protocol.PathAgentPing, c.at, c.nonce, nil))
			req.Header.Set(protocol.HeaderBrokerTime, strconv.FormatInt(c.at.UnixMilli(), 10))
			req.Header.Set(protocol.HeaderBrokerNonce, c.nonce)
			req.Header.Set(protocol.HeaderBrokerSignature, base64.RawURLEncoding.EncodeToString(sig))
		}
		res, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}

	replayed := fresh()
	tests := []struct {
		name string
		c    call
		want int
	}{
		{"broker node, broker key", call{from: brokerNode, key: brokerKey, at: now, nonce: replayed}, http.StatusOK},
		{"replayed nonce", call{from: brokerNode, key: brokerKey, at: now, nonce: replayed}, http.StatusForbidden},
		{"unsigned", call{from: brokerNode, unsigned: true}, http.StatusForbidden},
		{"other key", call{from: brokerNode, key: otherKey, at: now, nonce: fresh()}, http.StatusForbidden},
		{"stale", call{from: brokerNode, key: brokerKey, at: now.Add(-2 * time.Minute), nonce: fresh()}, http.StatusForbidden},
		{"future", call{from: brokerNode, key: brokerKey, at: now.Add(2 * time.Minute), nonce: fresh()}, http.StatusForbidden},
		{"for another agent", call{from: brokerNode, key: brokerKey, at: now, nonce: fresh(), audience: "someone-else"}, http.StatusForbidden},
		{"other node, broker key", call{from: otherNode, key: brokerKey, at: now, nonce: fresh()}, http.StatusForbidden},
		{"broker node, fresh call", call{from: brokerNode, key: brokerKey, at: now.Add(-30 * time.Second), nonce: fresh()}, http.StatusOK},
	}
	for _, tt := range tests {
		if got := do(tt.c); got != tt.want {
			t.Errorf("%s: status %d, want %d", tt.name, got, tt.want)
		}
	}
}
