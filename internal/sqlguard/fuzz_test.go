package sqlguard

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/tetherhq/tether/internal/chtest"
)

// FuzzCheck runs Check on arbitrary input: it must not panic or fail
// internally, must be deterministic, and an allowed verdict must read only
// system tables and no denied column.
func FuzzCheck(f *testing.F) {
	for _, s := range allowedCorpus {
		f.Add(s)
	}
	for _, d := range deniedCorpus {
		if len(d.sql) <= 4096 {
			f.Add(d.sql)
		}
	}
	for _, s := range fuzzFinds {
		f.Add(s)
	}
	// With SQLGUARD_FUZZ_CLICKHOUSE set, every allowed input also runs on a
	// real ClickHouse next to planted canaries (slow; for long runs).
	var ch *chtest.Server
	if os.Getenv("SQLGUARD_FUZZ_CLICKHOUSE") != "" {
		ch = plantCanaries(f)
	}
	f.Fuzz(func(t *testing.T, sql string) {
		v, err := Check(sql)
		if err != nil {
			t.Fatalf("Check(%q) internal error: %v", sql, err)
		}
		if !v.Allow {
			if v.Reason == "" {
				t.Fatalf("Check(%q) denied without a reason", sql)
			}
			return
		}
		checkInvariants(t, sql, v)
		if ch != nil {
			runAllowed(t, ch, sql)
		}
		again, err := Check(sql)
		if err != nil || !again.Allow || !reflect.DeepEqual(v.Tables, again.Tables) || !reflect.DeepEqual(v.Columns, again.Columns) {
			t.Fatalf("Check(%q) is not stable: %+v then %+v (%v)", sql, v, again, err)
		}
		// Whatever was allowed names only ASCII outside literals and holds
		// no NUL: a cheap cross-check of the lexer.
		if strings.IndexByte(sql, 0) >= 0 {
			t.Fatalf("Check(%q) allowed a NUL byte", sql)
		}
	})
}

// fuzzFinds are inputs the fuzzer found interesting; each is a regression
// seed.
var fuzzFinds = []string{
	// An unresolved name in a join was reported as if it were system.A.
	"SELECT system.A FROM system.a,system.a",
}
