package agent

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/devnet"
	"github.com/tetherhq/tether/internal/protocol"
	"github.com/tetherhq/tether/internal/tailnet"
)

// brokerRig is an agent serving its tailnet API on a dev tailnet, with a
// broker node and another node to call it from.
type brokerRig struct {
	a                   *Agent
	brokerNode, other   *tailnet.Node
	brokerKey, otherKey ed25519.PrivateKey
	base                string // the agent API's base URL
	extra               map[string]*tailnet.Node
}

// newBrokerRig starts a dev tailnet with three nodes and serves the agent
// API of an agent paired with the "broker" node, whose clock is now, and
// nodes named extra besides.
func newBrokerRig(t *testing.T, ctx context.Context, now func() time.Time, extra ...string) *brokerRig {
	t.Helper()
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
	extraNodes := map[string]*tailnet.Node{}
	for _, name := range extra {
		extraNodes[name] = up(name)
		if _, err := agentNode.WaitPeer(ctx, name); err != nil {
			t.Fatal(err)
		}
	}

	brokerPub, brokerKey, _ := ed25519.GenerateKey(rand.Reader)
	_, otherKey, _ := ed25519.GenerateKey(rand.Reader)
	dir := t.TempDir()
	revoked, err := loadRevocations(revocationsPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	a := &Agent{
		cfg:    Config{Version: "test", StateDir: dir},
		now:    now,
		start:  now(),
		nonces: map[string]time.Time{},
		state: State{
			AgentID:      "0190aaaa-0000-7000-8000-000000000001",
			BrokerNodeID: string(brokerPeer.ID),
			BrokerKey:    protocol.EncodePublicKey(brokerPub),
		},
		data: newDataPlane(Upstreams{}, revoked),
	}
	a.log = testLogger(t)
	a.proven.add(brokerPeer.ID, now())
	a.tl.Store(&tailnetLink{node: agentNode, hc: &http.Client{Transport: agentNode.HTTPTransport(), CheckRedirect: tailnet.NoRedirects}})
	ln, err := agentNode.Listen(protocol.AgentPort)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: a.handler()}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return &brokerRig{a: a, brokerNode: brokerNode, other: otherNode, brokerKey: brokerKey, otherKey: otherKey,
		base: "http://" + net.JoinHostPort(agentNode.IPv4().String(), strconv.Itoa(protocol.AgentPort)), extra: extraNodes}
}

// brokerCall is one call to the agent API.
type brokerCall struct {
	from     *tailnet.Node
	key      ed25519.PrivateKey
	at       time.Time
	nonce    string
	audience string
	unsigned bool
	method   string // default GET
	path     string // default protocol.PathAgentPing
	body     []byte
	signed   []byte // the body the signature covers; nil: body
}

func freshNonce() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// do makes call c and returns its status and error message.
func (rig *brokerRig) do(t *testing.T, c brokerCall) (int, string) {
	t.Helper()
	if c.method == "" {
		c.method = http.MethodGet
	}
	if c.path == "" {
		c.path = protocol.PathAgentPing
	}
	hc := &http.Client{Transport: &http.Transport{DialContext: c.from.Dial}, Timeout: 30 * time.Second}
	req, _ := http.NewRequest(c.method, rig.base+c.path, bytes.NewReader(c.body))
	if !c.unsigned {
		aud := c.audience
		if aud == "" {
			aud = rig.a.state.AgentID
		}
		signed := c.body
		if c.signed != nil {
			signed = c.signed
		}
		sig := ed25519.Sign(c.key, protocol.CallTranscript(aud, c.method, c.path, c.at, c.nonce, signed))
		req.Header.Set(protocol.HeaderBrokerTime, strconv.FormatInt(c.at.UnixMilli(), 10))
		req.Header.Set(protocol.HeaderBrokerNonce, c.nonce)
		req.Header.Set(protocol.HeaderBrokerSignature, base64.RawURLEncoding.EncodeToString(sig))
	}
	res, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	var e brokerapi.ErrorEnvelope
	json.Unmarshal(raw, &e)
	return res.StatusCode, e.Error.Message
}

// TestVerifyBroker exercises both identity layers of the agent's tailnet
// API: the caller's node must be the pinned broker node, and each call
// must carry a fresh, unreplayed signature by the pinned broker key.
func TestVerifyBroker(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	now := time.Now()
	rig := newBrokerRig(t, ctx, func() time.Time { return now })
	brokerNode, otherNode, brokerKey, otherKey := rig.brokerNode, rig.other, rig.brokerKey, rig.otherKey

	replayed := freshNonce()
	tests := []struct {
		name string
		c    brokerCall
		want int
	}{
		{"broker node, broker key", brokerCall{from: brokerNode, key: brokerKey, at: now, nonce: replayed}, http.StatusOK},
		{"replayed nonce", brokerCall{from: brokerNode, key: brokerKey, at: now, nonce: replayed}, http.StatusForbidden},
		{"unsigned", brokerCall{from: brokerNode, unsigned: true}, http.StatusForbidden},
		{"other key", brokerCall{from: brokerNode, key: otherKey, at: now, nonce: freshNonce()}, http.StatusForbidden},
		{"stale", brokerCall{from: brokerNode, key: brokerKey, at: now.Add(-2 * time.Minute), nonce: freshNonce()}, http.StatusForbidden},
		{"future", brokerCall{from: brokerNode, key: brokerKey, at: now.Add(2 * time.Minute), nonce: freshNonce()}, http.StatusForbidden},
		{"for another agent", brokerCall{from: brokerNode, key: brokerKey, at: now, nonce: freshNonce(), audience: "someone-else"}, http.StatusForbidden},
		{"other node, broker key", brokerCall{from: otherNode, key: brokerKey, at: now, nonce: freshNonce()}, http.StatusForbidden},
		{"broker node, fresh call", brokerCall{from: brokerNode, key: brokerKey, at: now.Add(-30 * time.Second), nonce: freshNonce()}, http.StatusOK},
	}
	for _, tt := range tests {
		if got, msg := rig.do(t, tt.c); got != tt.want {
			t.Errorf("%s: status %d (%s), want %d", tt.name, got, msg, tt.want)
		}
	}
}

// TestSkewedAgentTakesRevocations: an agent whose clock is 5 minutes
// ahead of the broker's refuses the broker's queries, saying the skew,
// but still applies a revocation the broker pushes — which the node, the
// signature, the nonce and the body still bind.
func TestSkewedAgentTakesRevocations(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const skew = 5 * time.Minute
	rig := newBrokerRig(t, ctx, func() time.Time { return time.Now().Add(skew) })
	a := rig.a

	// A query: refused, naming the skew.
	q, _ := json.Marshal(protocol.ClickHouseQuery{SQL: "SELECT 1"})
	status, msg := rig.do(t, brokerCall{from: rig.brokerNode, key: rig.brokerKey, at: time.Now(), nonce: freshNonce(),
		method: http.MethodPost, path: protocol.PathClickHouseQuery, body: q})
	if status != http.StatusForbidden || !strings.Contains(msg, "clock skew") || !strings.Contains(msg, "5m0") || !strings.Contains(msg, "ahead of") {
		t.Errorf("query to an agent 5 min ahead = %d %q, want 403 naming the clock skew (5m0…s ahead of)", status, msg)
	}
	if status, msg := rig.do(t, brokerCall{from: rig.brokerNode, key: rig.brokerKey, at: time.Now(), nonce: freshNonce()}); status != http.StatusForbidden || !strings.Contains(msg, "clock skew") {
		t.Errorf("ping to an agent 5 min ahead = %d %q, want 403 naming the clock skew", status, msg)
	}

	revoke := func(grantID string) []byte {
		b, _ := json.Marshal(protocol.RevokeRequest{GrantID: grantID, Until: time.Now().Add(time.Hour)})
		return b
	}
	push := brokerCall{from: rig.brokerNode, key: rig.brokerKey, at: time.Now(), nonce: freshNonce(),
		method: http.MethodPost, path: protocol.PathRevoke, body: revoke("grant-1")}
	if status, msg := rig.do(t, push); status != http.StatusOK {
		t.Fatalf("revocation pushed to an agent 5 min ahead = %d %q, want 200", status, msg)
	}
	if !a.data.isRevoked("grant-1") {
		t.Fatal("the agent 5 min ahead answered the revocation but does not refuse the grant")
	}
	// Behind by hours as well: a revocation is accepted whatever the skew.
	if status, msg := rig.do(t, brokerCall{from: rig.brokerNode, key: rig.brokerKey, at: time.Now().Add(-3 * time.Hour), nonce: freshNonce(),
		method: http.MethodPost, path: protocol.PathRevoke, body: revoke("grant-2")}); status != http.StatusOK || !a.data.isRevoked("grant-2") {
		t.Errorf("revocation signed 3 h before the agent's clock = %d %q (revoked: %v), want 200 and the grant refused", status, msg, a.data.isRevoked("grant-2"))
	}

	// What still binds a revocation push.
	changed := push
	changed.nonce, changed.body, changed.signed = freshNonce(), revoke("grant-3"), push.body
	tests := []struct {
		name string
		c    brokerCall
	}{
		{"replayed nonce", push},
		{"body changed", changed},
		{"other key", brokerCall{from: rig.brokerNode, key: rig.otherKey, at: time.Now(), nonce: freshNonce(), method: http.MethodPost, path: protocol.PathRevoke, body: revoke("grant-4")}},
		{"other node", brokerCall{from: rig.other, key: rig.brokerKey, at: time.Now(), nonce: freshNonce(), method: http.MethodPost, path: protocol.PathRevoke, body: revoke("grant-5")}},
		{"for another agent", brokerCall{from: rig.brokerNode, key: rig.brokerKey, at: time.Now(), nonce: freshNonce(), audience: "someone-else", method: http.MethodPost, path: protocol.PathRevoke, body: revoke("grant-6")}},
		{"unsigned", brokerCall{from: rig.brokerNode, unsigned: true, method: http.MethodPost, path: protocol.PathRevoke, body: revoke("grant-7")}},
	}
	for _, tt := range tests {
		if status, msg := rig.do(t, tt.c); status != http.StatusForbidden {
			t.Errorf("%s: revocation push = %d %q, want 403", tt.name, status, msg)
		}
	}
	for _, g := range []string{"grant-3", "grant-4", "grant-5", "grant-6", "grant-7"} {
		if a.data.isRevoked(g) {
			t.Errorf("a refused push revoked %s", g)
		}
	}
}
