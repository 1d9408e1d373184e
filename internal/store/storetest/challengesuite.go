package storetest

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/store"
)

// challengeTests check [store.ChallengeStore].
var challengeTests = []struct {
	name string
	test func(t *testing.T, s store.Store)
}{
	{"AgentChallenges", testAgentChallenges},
	{"AgentChallengesBounded", testAgentChallengesBounded},
	{"AgentChallengeConcurrentTakes", func(t *testing.T, s store.Store) { testChallengeRacingTakes(t, s, s) }},
}

func challenge(name, agent, node string, expires time.Time) store.AgentChallenge {
	return store.AgentChallenge{Hash: sha256.Sum256([]byte(name)), AgentID: agent, NodeID: node, Expires: expires}
}

func putChallenge(t *testing.T, s store.ChallengeStore, c store.AgentChallenge, max int, now time.Time) bool {
	t.Helper()
	ok, err := s.PutAgentChallenge(t.Context(), c, max, now)
	if err != nil {
		t.Fatalf("PutAgentChallenge(%s, %s) error = %v", c.AgentID, c.NodeID, err)
	}
	return ok
}

// takeChallenge takes the challenge named name: its agent and node, or
// "" if there is none live.
func takeChallenge(t *testing.T, s store.ChallengeStore, name string, now time.Time) string {
	t.Helper()
	c, err := s.TakeAgentChallenge(t.Context(), sha256.Sum256([]byte(name)), now)
	if errors.Is(err, store.ErrNotFound) {
		return ""
	}
	if err != nil {
		t.Fatalf("TakeAgentChallenge(%s) error = %v", name, err)
	}
	return c.AgentID + "@" + c.NodeID
}

func countChallenges(t *testing.T, s store.ChallengeStore, now time.Time) int {
	t.Helper()
	n, err := s.AgentChallenges(t.Context(), now)
	if err != nil {
		t.Fatalf("AgentChallenges() error = %v", err)
	}
	return n
}

func testAgentChallenges(t *testing.T, s store.Store) {
	t0 := hookT0
	exp := t0.Add(30 * time.Second)
	putChallenge(t, s, challenge("c1", "agent1", "node1", exp), 10, t0)
	putChallenge(t, s, challenge("c2", "agent1", "node2", exp), 10, t0)
	putChallenge(t, s, challenge("c3", "agent2", "node1", exp), 10, t0)
	if n := countChallenges(t, s, t0); n != 3 {
		t.Errorf("AgentChallenges() = %d, want 3", n)
	}
	// A node's new challenge for an agent replaces its earlier one.
	putChallenge(t, s, challenge("c1b", "agent1", "node1", exp), 10, t0)
	if got := takeChallenge(t, s, "c1", t0); got != "" {
		t.Errorf("take of a replaced challenge = %q, want none", got)
	}
	if n := countChallenges(t, s, t0); n != 3 {
		t.Errorf("AgentChallenges() after a replacement = %d, want 3", n)
	}

	// Taken once: the second take finds nothing.
	if got := takeChallenge(t, s, "c1b", t0); got != "agent1@node1" {
		t.Errorf("take c1b = %q, want agent1@node1", got)
	}
	if got := takeChallenge(t, s, "c1b", t0); got != "" {
		t.Errorf("second take of c1b = %q, want none", got)
	}
	// Expired: not returned, and gone.
	if got := takeChallenge(t, s, "c2", exp); got != "" {
		t.Errorf("take of c2 at its expiry = %q, want none", got)
	}
	if got := takeChallenge(t, s, "c2", t0); got != "" {
		t.Errorf("take of c2 after an expired take = %q, want none (taken)", got)
	}
	if n := countChallenges(t, s, exp); n != 0 {
		t.Errorf("AgentChallenges() at the expiry = %d, want 0", n)
	}
	// A put sweeps the expired.
	putChallenge(t, s, challenge("c4", "agent3", "node3", exp.Add(time.Minute)), 10, exp)
	if got := takeChallenge(t, s, "c3", t0); got != "" {
		t.Errorf("take of c3 after a put swept it = %q, want none", got)
	}
}

// testAgentChallengesBounded: past max outstanding challenges a put
// stores nothing, unless it replaces its pair's own challenge or expired
// ones make room.
func testAgentChallengesBounded(t *testing.T, s store.Store) {
	t0 := hookT0
	exp := t0.Add(30 * time.Second)
	for i := range 3 {
		if !putChallenge(t, s, challenge(fmt.Sprint("c", i), fmt.Sprint("agent", i), "node", exp), 3, t0) {
			t.Fatalf("put #%d of 3 refused", i)
		}
	}
	if putChallenge(t, s, challenge("c3", "agent3", "node", exp), 3, t0) {
		t.Errorf("put past max = true, want refused")
	}
	if !putChallenge(t, s, challenge("c0b", "agent0", "node", exp), 3, t0) {
		t.Errorf("put replacing the pair's own challenge at max = false, want stored")
	}
	if !putChallenge(t, s, challenge("c3", "agent3", "node", exp.Add(time.Minute)), 3, exp) {
		t.Errorf("put once the others expired = false, want stored")
	}
}

// testChallengeRacingTakes: takers on two store handles (two brokers
// sharing one database) race for each of 20 challenges; each is taken
// exactly once.
func testChallengeRacingTakes(t *testing.T, s1, s2 store.ChallengeStore) {
	t0 := hookT0
	const n = 20
	for i := range n {
		putChallenge(t, s1, challenge(fmt.Sprint("race", i), fmt.Sprint("agent", i), "node", t0.Add(time.Minute)), 1000, t0)
	}
	for i := range n {
		var taken atomic.Int32
		var wg sync.WaitGroup
		for _, s := range []store.ChallengeStore{s1, s2, s1, s2} {
			wg.Go(func() {
				c, err := s.TakeAgentChallenge(t.Context(), sha256.Sum256(fmt.Append(nil, "race", i)), t0)
				switch {
				case err == nil && c.AgentID == fmt.Sprint("agent", i):
					taken.Add(1)
				case err != nil && !errors.Is(err, store.ErrNotFound):
					t.Errorf("TakeAgentChallenge(race%d) error = %v", i, err)
				}
			})
		}
		wg.Wait()
		if got := taken.Load(); got != 1 {
			t.Errorf("challenge race%d taken %d times by four racing takers, want exactly once", i, got)
		}
	}
}
