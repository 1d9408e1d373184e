package broker_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"golang.org/x/mod/sumdb/note"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/agent"
	"github.com/tetherhq/tether/internal/broker"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/brokertest"
)

// spooledIDs returns the IDs of auth.failed events the broker holds from
// the given agent, in log order.
func spooledIDs(t *testing.T, c *brokerapi.Client, agentID string) []string {
	t.Helper()
	evs, err := c.AuditSearch(context.Background(), brokerapi.AuditQuery{Type: string(audit.AuthFailed), Limit: 100000})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, ae := range evs {
		var e audit.Event
		if err := json.Unmarshal(ae.Event, &e); err != nil {
			t.Fatal(err)
		}
		if e.AgentID == agentID && strings.HasPrefix(e.Reason, "spooled") {
			ids = append(ids, e.ID)
		}
	}
	return ids
}

// TestSpoolExactlyOnce: events the agent records while the broker is down
// survive an agent restart and arrive exactly once when the broker is
// back; a redelivery (a lost acknowledgement) stores nothing twice.
func TestSpoolExactlyOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	onTailnet := externalTailnet(t, ctx)
	dir := t.TempDir()
	external := func(c *broker.Config) {
		c.DataDir = dir
		onTailnet(c)
		c.HeartbeatInterval = 200 * time.Millisecond
	}
	b1 := brokertest.Start(t, external)
	res, err := b1.Client.CreateDeployment(ctx, brokerapi.CreateDeploymentRequest{Tenant: "acme", Name: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := agent.Config{StateDir: t.TempDir(), Join: b1.Join(), PairingToken: res.Pairing.Token, Hostname: "spool-agent"}
	a1, stopA1 := brokertest.RunAgent(t, cfg, true)
	agentID := a1.State().AgentID

	// Broker down: the agent records five events.
	b1.Stop()
	var want []string
	record := func(a *agent.Agent, n int) {
		for range n {
			id := uuid.Must(uuid.NewV7()).String()
			want = append(want, id)
			if err := a.RecordEvent(ctx, audit.Event{ID: id, Type: audit.AuthFailed, Outcome: audit.Failure, Reason: "spooled while the broker was down"}); err != nil {
				t.Fatal(err)
			}
		}
	}
	record(a1, 5)
	// And the agent restarts before the broker is back.
	stopA1()
	spool, err := os.ReadFile(filepath.Join(cfg.StateDir, "spool.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(spool), "\n"); n != 5 {
		t.Fatalf("spool holds %d events, want 5", n)
	}

	b2 := brokertest.Start(t, external)
	cfg.PairingToken = ""
	a2, stopA2 := brokertest.RunAgent(t, cfg, true)
	record(a2, 2)
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := spooledIDs(t, b2.Client, agentID)
		if len(got) >= len(want) {
			if !slices.Equal(got, want) {
				t.Fatalf("broker holds %v, want exactly %v in order", got, want)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("broker holds %d of %d spooled events after 30s", len(got), len(want))
		}
		time.Sleep(50 * time.Millisecond) // polling observable state
	}

	// Delivered events the agent had not yet cut from its spool when it
	// stopped (as after a lost acknowledgement) are delivered again by
	// the next run.
	stopA2()
	if err := os.WriteFile(filepath.Join(cfg.StateDir, "spool.jsonl"), spool, 0o600); err != nil {
		t.Fatal(err)
	}
	a3, _ := brokertest.RunAgent(t, cfg, true)
	// The agent's own loop may take them first; either way, once the
	// spool is empty the broker has acknowledged the redelivery.
	if _, err := a3.Deliver(ctx); err != nil {
		t.Fatalf("redeliver: %v", err)
	}
	deadline = time.Now().Add(30 * time.Second)
	for {
		b, err := os.ReadFile(filepath.Join(cfg.StateDir, "spool.jsonl"))
		if err != nil {
			t.Fatal(err)
		}
		if len(b) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("redelivered events still in the spool after 30s")
		}
		time.Sleep(50 * time.Millisecond) // polling observable state
	}
	if got := spooledIDs(t, b2.Client, agentID); !slices.Equal(got, want) {
		t.Fatalf("after redelivery broker holds %v, want %v", got, want)
	}
}

// TestWitnessAndProofs: the agent cosigns checkpoints; the API serves
// inclusion and consistency proofs that verify against them.
func TestWitnessAndProofs(t *testing.T) {
	b := brokertest.Start(t, func(c *broker.Config) { c.HeartbeatInterval = 200 * time.Millisecond })
	a := b.Pair(t, "acme", "prod")
	ctx := context.Background()
	for i := range 20 {
		if _, err := b.Client.CreateDeployment(ctx, brokerapi.CreateDeploymentRequest{Tenant: "acme", Name: "d" + string(rune('a'+i))}); err != nil {
			t.Fatal(err)
		}
	}
	witness := "tether-witness/" + a.State().AgentID
	var cp brokerapi.AuditCheckpoint
	deadline := time.Now().Add(30 * time.Second)
	for {
		var err error
		cp, err = b.Client.AuditCheckpoint(ctx)
		if err == nil && cp.Size >= 22 && slices.Contains(cp.Witnesses, witness) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("latest checkpoint %+v (%v): want size >= 22 cosigned by %s", cp, err, witness)
		}
		time.Sleep(50 * time.Millisecond) // polling observable state
	}
	vk, err := b.Client.AuditPublicKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	lv, err := audit.NewVerifier(vk.VerifierKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := audit.OpenCheckpoint(cp.Note, lv)
	if err != nil {
		t.Fatal(err)
	}
	// The cosignature verifies with the agent's witness key.
	wk, err := a.WitnessKey()
	if err != nil {
		t.Fatal(err)
	}
	wv, err := audit.NewVerifier(wk)
	if err != nil {
		t.Fatal(err)
	}
	if _, who, err := audit.WitnessedBy(cp.Note, lv, []note.Verifier{wv}); err != nil {
		t.Fatalf("latest checkpoint note: %v", err)
	} else if len(who) != 0 {
		t.Logf("the latest note as served carries the log signature only; cosignatures are stored beside it")
	}

	// Every event's inclusion proof verifies against the checkpoint, and
	// consistency proofs link every earlier size to it.
	evs, err := b.Client.AuditSearch(ctx, brokerapi.AuditQuery{Limit: 100000})
	if err != nil {
		t.Fatal(err)
	}
	tree := audit.NewTree()
	for _, ae := range evs {
		if ae.Index >= c.Size {
			break
		}
		p, err := b.Client.InclusionProof(ctx, ae.Index, c.Size)
		if err != nil {
			t.Fatal(err)
		}
		hs, err := brokerapi.DecodeHashes(p.Proof)
		if err != nil {
			t.Fatal(err)
		}
		if err := audit.VerifyInclusion(audit.LeafHash(ae.Event), ae.Index, c.Size, hs, c.Root); err != nil {
			t.Errorf("inclusion proof of event %d: %v", ae.Index, err)
		}
		tree.Append(audit.LeafHash(ae.Event))
		m := tree.Size()
		cons, err := b.Client.ConsistencyProof(ctx, m, c.Size)
		if err != nil {
			t.Fatal(err)
		}
		hs, err = brokerapi.DecodeHashes(cons.Proof)
		if err != nil {
			t.Fatal(err)
		}
		if err := audit.VerifyConsistency(m, c.Size, tree.Root(), c.Root, hs); err != nil {
			t.Errorf("consistency proof %d → %d: %v", m, c.Size, err)
		}
	}
	if tree.Size() != c.Size {
		t.Errorf("search returned %d events below the checkpoint, want %d", tree.Size(), c.Size)
	}
	// A bad request is a clear 400.
	if _, err := b.Client.InclusionProof(ctx, c.Size+5, c.Size); err == nil || !strings.Contains(err.Error(), "want index < size") {
		t.Errorf("inclusion proof beyond the tree = %v, want a range error", err)
	}
}
