package agent

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/chtest"
)

// TestResultCounter reads real ClickHouse answers in every format it
// counts, fed in small pieces, and wants the result's rows — never the
// answer's lines — or no count where the format cannot tell.
func TestResultCounter(t *testing.T) {
	ch := chtest.Start(t)
	const three = "SELECT name AS rows, 'a\"b,c\\nd' AS note FROM system.tables WHERE database = 'system' ORDER BY name LIMIT 3"
	for _, tc := range []struct {
		format string
		sql    string
		want   int64 // -1: no count
	}{
		{"TabSeparated", three, 3},
		{"TSVWithNames", three, 3},
		{"TabSeparatedWithNamesAndTypes", three, 3},
		{"CSV", three, 3},
		{"CSVWithNames", three, 3},
		{"JSONEachRow", three, 3},
		{"TSKV", three, 3},
		{"JSON", three, 3},
		{"JSONCompact", three, 3},
		{"XML", three, 3},
		{"JSON", "SELECT number AS rows FROM system.numbers LIMIT 7", 7},
		{"XML", "SELECT number AS rows FROM system.numbers LIMIT 7", 7},
		{"TabSeparated", "SELECT 1 WHERE 0", 0},
		{"JSON", "SELECT 1 WHERE 0", 0},
		{"Pretty", three, -1},
		{"Vertical", three, -1},
		{"TabSeparatedRaw", three, -1},
		{"RowBinary", three, -1},
	} {
		body, err := ch.QueryWith("tether", chtest.Password, tc.sql, url.Values{"default_format": {tc.format}})
		if err != nil {
			t.Fatalf("%s: %v", tc.format, err)
		}
		for _, piece := range []int{1, 7, 1 << 20} {
			rc := newResultCounter(strings.ToLower(tc.format))
			for s := body; s != ""; {
				k := min(piece, len(s))
				rc.Write([]byte(s[:k]))
				s = s[k:]
			}
			got, ok := rc.rows()
			if !ok {
				got = -1
			}
			if got != tc.want {
				t.Errorf("%s of %q in pieces of %d: rows = %d, want %d; the answer:\n%s", tc.format, tc.sql, piece, got, tc.want, body)
			}
		}
	}
	// An answer ClickHouse stopped with its exception text has no count
	// (18.16 appends "Code: 396, e.displayText() = …" mid-row in JSON).
	for _, tail := range []string{
		"a\nb\nCode: 396, e.displayText() = DB::Exception: Limit for result exceeded, e.what() = DB::Exception\n",
		"\t\t{\"n\": 1}Code: 396. DB::Exception: Limit for result exceeded. (TOO_MANY_ROWS_OR_BYTES)\n",
	} {
		rc := newResultCounter("TabSeparated")
		rc.Write([]byte(tail))
		if n, ok := rc.rows(); ok {
			t.Errorf("rows of an answer ending %q = %d, want no count", tail, n)
		}
		if code, ok := rc.exception(); !ok || code != "396" {
			t.Errorf("exception of %q = %q %v, want 396", tail, code, ok)
		}
	}
}

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

// TestClickHouseSummary reads X-ClickHouse-Summary as newer ClickHouse
// releases send it (numbers as strings) and ignores what does not parse.
func TestClickHouseSummary(t *testing.T) {
	for h, want := range map[string]map[string]int64{
		`{"read_rows":"5","read_bytes":"126","written_rows":"0","result_rows":"5"}`: {"read_rows": 5, "read_bytes": 126},
		`{"read_rows":7}`:    {"read_rows": 7},
		`{"read_rows":"-1"}`: {},
		``:                   nil,
		`not json`:           nil,
	} {
		got := clickHouseSummary(h)
		if len(got) != len(want) || (want == nil) != (got == nil) {
			t.Errorf("clickHouseSummary(%q) = %v, want %v", h, got, want)
			continue
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("clickHouseSummary(%q)[%s] = %d, want %d", h, k, got[k], v)
			}
		}
	}
}
