package clickhouse

import (
	"net/url"
	"strings"
	"testing"

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
