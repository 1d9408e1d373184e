package broker_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/broker"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/brokertest"
	"github.com/tetherhq/tether/internal/pgtest"
	"github.com/tetherhq/tether/internal/protocol"
	"github.com/tetherhq/tether/internal/tailnet"
)

// TestChallengeAcrossBrokers: two brokers share one PostgreSQL database
// and one tailnet. An agent asks one broker for a challenge and opens its
// session at the other (a load balancer, or a broker that died between
// the two calls). A challenge is answered once across all brokers: the
// same answer replayed at the broker that gave it, or sent to both at
// once, opens at most one session; a node's newer challenge replaces its
// older one at every broker.
func TestChallengeAcrossBrokers(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.Start(t)
	onTailnet := externalTailnet(t, ctx)
	first, second := t.TempDir(), t.TempDir()
	a := brokertest.Start(t, func(c *broker.Config) {
		onTailnet(c)
		c.DataDir, c.Hostname, c.StoreDriver, c.StoreDSN = first, "broker-a", "postgres", dsn
	})
	key, err := os.ReadFile(filepath.Join(first, "broker.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(second, "broker.key"), key, 0o600); err != nil {
		t.Fatal(err)
	}
	b := brokertest.Start(t, func(c *broker.Config) {
		onTailnet(c)
		c.DataDir, c.Hostname, c.StoreDriver, c.StoreDSN = second, "broker-b", "postgres", dsn
	})

	// The agent's side, by hand: a tailnet node and a key.
	j := a.Join()
	node, err := tailnet.New(tailnet.Config{Hostname: "agent-prod", ControlURL: j.ControlURL, AuthKey: j.AuthKey})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { node.Close() })
	upCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if _, err := node.Up(upCtx); err != nil {
		t.Fatal(err)
	}
	base := map[string]string{}
	for name, bk := range map[string]*brokertest.Broker{"A": a, "B": b} {
		p, err := node.WaitPeer(upCtx, bk.Join().BrokerName)
		if err != nil {
			t.Fatal(err)
		}
		base[name] = "http://" + net.JoinHostPort(p.IP.String(), strconv.Itoa(protocol.BrokerPort))
	}
	hc := &http.Client{Transport: &http.Transport{DialContext: node.Dial}, Timeout: 30 * time.Second}
	call := func(at, path string, req, res any) int {
		t.Helper()
		body, _ := json.Marshal(req)
		r, err := hc.Post(base[at]+path, "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatalf("POST %s at %s: %v", path, at, err)
		}
		defer r.Body.Close()
		raw, _ := io.ReadAll(r.Body)
		if r.StatusCode == http.StatusOK && res != nil {
			if err := json.Unmarshal(raw, res); err != nil {
				t.Fatalf("POST %s at %s: decode %s: %v", path, at, raw, err)
			}
		}
		return r.StatusCode
	}

	dep, err := a.Client.CreateDeployment(ctx, brokerapi.CreateDeploymentRequest{Tenant: "acme", Name: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	nonce := make([]byte, 32)
	rand.Read(nonce)
	var paired protocol.PairResponse
	if s := call("A", protocol.PathPair, protocol.PairRequest{Token: dep.Pairing.Token, PublicKey: protocol.EncodePublicKey(pub), Nonce: nonce}, &paired); s != http.StatusOK {
		t.Fatalf("pair at A = %d, want 200", s)
	}
	challengeAt := func(at string) []byte {
		t.Helper()
		var res protocol.ChallengeResponse
		if s := call(at, protocol.PathChallenge, protocol.ChallengeRequest{AgentID: paired.AgentID}, &res); s != http.StatusOK {
			t.Fatalf("challenge at %s = %d, want 200", at, s)
		}
		return res.Challenge
	}
	sessionAt := func(at string, c []byte) int {
		t.Helper()
		return call(at, protocol.PathSession, protocol.SessionRequest{
			AgentID: paired.AgentID, Challenge: c, Signature: ed25519.Sign(priv, protocol.SessionTranscript(paired.AgentID, c)),
		}, nil)
	}

	for _, c := range []struct{ ask, answer string }{{"A", "B"}, {"B", "A"}} {
		ch := challengeAt(c.ask)
		if s := sessionAt(c.answer, ch); s != http.StatusOK {
			t.Errorf("challenge of %s answered at %s = %d, want 200 (a session)", c.ask, c.answer, s)
		}
		if s := sessionAt(c.ask, ch); s != http.StatusForbidden {
			t.Errorf("the same answer replayed at %s = %d, want 403 (used)", c.ask, s)
		}
	}

	// A newer challenge of the same node, from the other broker, replaces
	// the older at both.
	older := challengeAt("A")
	newer := challengeAt("B")
	if s := sessionAt("A", older); s != http.StatusForbidden {
		t.Errorf("replaced challenge answered = %d, want 403", s)
	}
	if s := sessionAt("A", newer); s != http.StatusOK {
		t.Errorf("newer challenge answered = %d, want 200", s)
	}

	// Answered at both brokers at once: one session, never two.
	for i := range 5 {
		ch := challengeAt([]string{"A", "B"}[i%2])
		var mu sync.Mutex
		var got []int
		var wg sync.WaitGroup
		for _, at := range []string{"A", "B"} {
			wg.Go(func() {
				s := sessionAt(at, ch)
				mu.Lock()
				got = append(got, s)
				mu.Unlock()
			})
		}
		wg.Wait()
		ok := 0
		for _, s := range got {
			if s == http.StatusOK {
				ok++
			}
		}
		if ok != 1 {
			t.Errorf("one challenge answered at A and B at once: statuses %v, want exactly one 200", got)
		}
	}
	if n := a.OutstandingChallenges(); n != 0 {
		t.Errorf("outstanding challenges after all were answered = %d, want 0", n)
	}
}
