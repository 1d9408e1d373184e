package agent

import (
	"context"
	"testing"
	"time"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/chtest"
)

// TestQueryFinishedRows: query.finished says how many rows the result
// had, not how many lines the answer took (the papercut: a LIMIT 5 with
// its header line was 6 rows, a 3-row FORMAT JSON 33), and an answer
// ClickHouse cut short with an error after it began is a failure.
func TestQueryFinishedRows(t *testing.T) {
	ch := chtest.Start(t)
	la := newLimitsAgent(t, Upstreams{
		ClickHouseURL: ch.URL, ClickHouseUser: "tether", ClickHousePassword: chtest.Password,
		Limits: QueryLimits{MaxResultRows: 1_000_000},
	}, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tok := la.grant(t, "grant-rows")
	for _, tc := range []struct {
		sql     string
		rows    int64 // -1: no result_rows
		outcome audit.Outcome
	}{
		{"SELECT name FROM system.tables WHERE database = 'system' ORDER BY name LIMIT 5", 5, audit.Success},
		{"SELECT name FROM system.tables WHERE database = 'system' ORDER BY name LIMIT 3 FORMAT JSON", 3, audit.Success},
		{"SELECT name FROM system.tables WHERE database = 'system' ORDER BY name LIMIT 3 FORMAT PrettyCompact", -1, audit.Success},
		// Past max_result_rows once the answer has begun: ClickHouse
		// appends its exception to a 200 answer.
		{"SELECT number FROM system.numbers LIMIT 3000000", -1, audit.Failure},
	} {
		ans := la.do(ctx, t, call{tok: tok, sql: tc.sql})
		if ans.err != nil || ans.status != 200 {
			t.Fatalf("%q = %d %v %s", tc.sql, ans.status, ans.err, ans.msg)
		}
		la.a.finishing.wg.Wait()
		var fin *audit.Event
		for _, e := range la.events(t) {
			if e.Type == audit.QueryFinished {
				fin = &e
			}
		}
		if fin == nil {
			t.Fatalf("%q: no query.finished event", tc.sql)
		}
		got, ok := fin.Details["result_rows"].(float64)
		if !ok {
			got = -1
		}
		if int64(got) != tc.rows || fin.Outcome != tc.outcome {
			t.Errorf("%q: query.finished result_rows %v outcome %s, want %d %s (details %v, reason %q)", tc.sql, fin.Details["result_rows"], fin.Outcome, tc.rows, tc.outcome, fin.Details, fin.Reason)
		}
		if _, ok := fin.Details["rows"]; ok {
			t.Errorf("%q: query.finished still has rows (lines): %v", tc.sql, fin.Details)
		}
		if b, _ := fin.Details["bytes"].(float64); int(b) != len(ans.body) {
			t.Errorf("%q: query.finished bytes %v, the answer was %d", tc.sql, fin.Details["bytes"], len(ans.body))
		}
	}
}
