package brokercli

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/audit"
)

// TestAgentDelivered: verify counts the events agents delivered by the
// source the broker stamped, not by anything an agent wrote in details.
func TestAgentDelivered(t *testing.T) {
	at := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	evs := []audit.Event{
		{Version: 1, ID: "1", Time: at, Type: audit.GrantIssued, Outcome: audit.Success},
		{Version: 1, ID: "2", Time: at, Type: audit.QueryAllowed, Outcome: audit.Success, AgentID: "a1",
			Source: audit.Source{Kind: audit.SourceAgent, ReceivedAt: at}},
		{Version: 1, ID: "3", Time: at, Type: audit.AuthFailed, Outcome: audit.Failure, AgentID: "a1",
			Source: audit.Source{Kind: audit.SourceAgent, ReceivedAt: at}},
		{Version: 1, ID: "4", Time: at, Type: audit.AuthFailed, Outcome: audit.Failure, AgentID: "a2",
			Details: map[string]any{"note": `"kind":"agent"`}},
	}
	var b strings.Builder
	for i, e := range evs {
		raw, _ := e.Marshal()
		fmt.Fprintf(&b, "{\"kind\":\"event\",\"index\":%d,\"leaf_hash\":\"%x\",\"event\":%s}\n", i, audit.LeafHash(raw), raw)
		if i == 1 {
			// An event line whose event is agent-delivered in words only.
			fmt.Fprintln(&b, `{"kind":"checkpoint","size":2,"note":"\"kind\":\"agent\""}`)
		}
	}
	path := filepath.Join(t.TempDir(), "export.jsonl")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := agentDelivered(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got["a1"] != 2 {
		t.Errorf("agentDelivered = %v, want map[a1:2]", got)
	}
	for e, want := range map[*audit.Event]string{&evs[0]: "broker", &evs[1]: "agent:a1", &evs[3]: "broker"} {
		if s := sourceOf(*e); s != want {
			t.Errorf("sourceOf(%s) = %q, want %q", e.ID, s, want)
		}
	}
}
