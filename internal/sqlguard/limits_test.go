package sqlguard

import (
	"strings"
	"testing"
	"time"
)

// TestWorstCaseInputs: statements at the size limit built to stress
// the lexer, the parser and name resolution finish quickly. The bound is
// loose (each takes tens of milliseconds; the bound is 5 s) so that a loaded machine does not
// fail it; a quadratic path would take seconds.
func TestWorstCaseInputs(t *testing.T) {
	fill := func(unit string, n int) string {
		return strings.TrimSuffix(strings.Repeat(unit, n), ",")
	}
	sources := fill("system.one,", maxSources)
	cases := map[string]string{
		"columns × tables":   "SELECT " + fill("a,", MaxQueryBytes/2-400) + " FROM " + sources,
		"qualified × tables": "SELECT " + fill("x.a,", MaxQueryBytes/4-400) + " FROM " + sources,
		"stars × tables":     "SELECT " + fill("*,", MaxQueryBytes/2-400) + " FROM " + sources,
		"excepts × tables":   "SELECT " + fill("* EXCEPT (x),", MaxQueryBytes/13-100) + " FROM " + sources,
		"tuple":              "SELECT (" + fill("a,", MaxQueryBytes/2-20) + ")",
		"nested tuples":      "SELECT " + strings.Repeat("(", 127) + fill("a,", MaxQueryBytes/2-400) + strings.Repeat(")", 127),
		"or chain":           "SELECT 1 WHERE " + strings.Repeat("1 OR ", MaxQueryBytes/5-10) + "1",
		"plus chain":         "SELECT " + strings.Repeat("1+", MaxQueryBytes/2-10) + "1",
		"unions":             strings.Repeat("SELECT 1 UNION ALL ", MaxQueryBytes/19-1) + "SELECT 1",
		"ctes":               "WITH " + strings.Repeat("t AS (SELECT 1),", MaxQueryBytes/16-10) + "u AS (SELECT 1) SELECT * FROM t",
		"with aliases":       "WITH " + fill("1 AS a,", MaxQueryBytes/7-10) + " SELECT a",
		"denied-name scan":   "SELECT " + fill("a.b.c.d,", MaxQueryBytes/8-10) + " FROM system.query_log",
		"comments":           "SELECT 1" + strings.Repeat("/**/", MaxQueryBytes/4-4),
		"escaped string":     "SELECT '" + strings.Repeat("\\'", MaxQueryBytes/2-10) + "'",
		"number list":        "SELECT 1 IN (" + fill("1,", MaxQueryBytes/2-20) + ")",
		"deep scopes":        "SELECT " + strings.Repeat("(SELECT ", 60) + strings.Repeat("x,", 20000) + "1" + strings.Repeat(")", 60),
		"open parens":        strings.Repeat("(", MaxQueryBytes),
		"lambda lookahead":   "SELECT " + strings.Repeat("(a,", 120) + fill("a,", MaxQueryBytes/2-400) + strings.Repeat(")", 120),
	}
	for name, sql := range cases {
		if len(sql) > MaxQueryBytes {
			t.Fatalf("%s: %d bytes, over the limit", name, len(sql))
		}
		start := time.Now()
		v, err := Check(sql)
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%s: Check took %v", name, d)
		}
		if err != nil {
			t.Errorf("%s: internal error %v", name, err)
		}
		t.Logf("%-18s %6d bytes %12v allow=%v %.60s", name, len(sql), time.Since(start), v.Allow, v.Reason)
	}
}
