package agent

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/chtest"
)

// TestRestartQueryIDsAndOrphans: an agent started again under the same
// grant numbers its queries afresh, so ClickHouse does not refuse them as
// "already running" while the dead agent's query runs on; and an agent
// on start kills the tether-… queries its predecessor left running (the
// read-only tether user may KILL its own queries).
func TestRestartQueryIDsAndOrphans(t *testing.T) {
	ch := chtest.Start(t)
	up := Upstreams{ClickHouseURL: ch.URL, ClickHouseUser: "tether", ClickHousePassword: chtest.Password}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	running := func() string {
		return strings.TrimSpace(ch.Exec(t, "SELECT count() FROM system.processes WHERE query_id LIKE 'tether-%'"))
	}

	// The first agent's query runs (until its time limit) when the agent
	// "dies": its client is cut off without a word to ClickHouse.
	first := newLimitsAgent(t, up, 0)
	tok := first.grant(t, "grant-restart")
	qctx, qcancel := context.WithCancel(ctx)
	firstDone := make(chan answer, 1)
	defer func() { qcancel(); <-firstDone }()
	go func() {
		// Headers come only when the count ends: the call stays pending.
		firstDone <- first.do(qctx, t, call{tok: tok, sql: "SELECT count() FROM system.numbers"})
	}()
	for running() != "1" {
		select {
		case <-ctx.Done():
			t.Fatal("the first agent's query never showed in system.processes")
		case <-time.After(10 * time.Millisecond): // polling system.processes
		}
	}
	first.a.data.hc.CloseIdleConnections()

	// A second agent with the same grant: its query gets an ID of its
	// own. (Without its own numbering it would be tether-grant-restart-N
	// again, and ClickHouse answers code 216, "already running".)
	second := newLimitsAgent(t, up, 0)
	second.a.state.BrokerKey = first.a.state.BrokerKey
	ans := second.do(ctx, t, call{tok: tok, sql: "SELECT 1"})
	if ans.err != nil || ans.status != 200 || ans.body != "1\n1\n" {
		t.Errorf("the restarted agent's first query = %d %v %q %s; want it answered", ans.status, ans.err, ans.body, ans.msg)
	}
	if running() != "1" {
		t.Fatalf("the first agent's query is no longer running; the test needs it")
	}

	// On start, the agent stops what its predecessor left.
	second.a.stopOrphans(ctx)
	deadline := time.Now().Add(10 * time.Second)
	for running() != "0" {
		if time.Now().After(deadline) {
			t.Fatal("the predecessor's query still runs 10 s after the agent's start")
		}
		time.Sleep(10 * time.Millisecond) // polling system.processes
	}
}
