package sqlguard

import (
	"strings"
	"testing"
)

func benchmarkCheck(b *testing.B, sql string) {
	b.Helper()
	b.SetBytes(int64(len(sql)))
	b.ReportAllocs()
	for b.Loop() {
		if v, err := Check(sql); err != nil || !v.Allow {
			b.Fatalf("Check(%q) = %+v, %v", sql, v, err)
		}
	}
}

func BenchmarkCheck(b *testing.B) {
	benchmarkCheck(b, "SELECT database, table, count() AS parts, sum(rows) FROM system.parts WHERE active GROUP BY database, table ORDER BY parts DESC LIMIT 10")
}

func BenchmarkCheckTiny(b *testing.B) {
	benchmarkCheck(b, "SELECT 1")
}

func BenchmarkCheckJoinCTE(b *testing.B) {
	benchmarkCheck(b, `WITH t AS (SELECT database, table, sum(bytes_on_disk) AS b FROM system.parts WHERE active GROUP BY database, table)
SELECT t.database, t.table, formatReadableSize(t.b) AS size, r.absolute_delay, r.queue_size,
       row_number() OVER (PARTITION BY t.database ORDER BY t.b DESC) AS rn
FROM t LEFT JOIN system.replicas AS r ON t.database = r.database AND t.table = r.table
WHERE t.b > 0 AND (r.is_readonly OR r.absolute_delay > 30 OR r.queue_size > 100)
ORDER BY t.b DESC LIMIT 50 SETTINGS max_threads = 4 FORMAT JSONEachRow`)
}

func BenchmarkCheckLarge(b *testing.B) {
	// About 60 KiB: a long IN list, near the size limit.
	var sb strings.Builder
	sb.WriteString("SELECT name FROM system.tables WHERE name IN (")
	for i := 0; sb.Len() < 60<<10; i++ {
		if i > 0 {
			sb.WriteString(", ")
		}
		sb.WriteString("'table_name_")
		sb.WriteString(strings.Repeat("x", i%7))
		sb.WriteString("'")
	}
	sb.WriteString(")")
	benchmarkCheck(b, sb.String())
}

func BenchmarkCheckNumberList(b *testing.B) {
	benchmarkCheck(b, "SELECT 1 IN ("+strings.TrimSuffix(strings.Repeat("1,", MaxQueryBytes/2-20), ",")+")")
}

// BenchmarkCheckWithSchema is the agent's case: a typical troubleshooting
// query checked against the server's column list and the catalog. The
// target is 20 µs.
func BenchmarkCheckWithSchema(b *testing.B) {
	schema := Schema{}
	for _, t := range CatalogTables() {
		schema[t] = catalogNames(t)
	}
	g := NewGuard(schema)
	sql := "SELECT database, table, count() AS parts, sum(rows) FROM system.parts WHERE active GROUP BY database, table ORDER BY parts DESC LIMIT 10"
	b.ReportAllocs()
	for b.Loop() {
		if v, err := g.Check(sql); err != nil || !v.Allow {
			b.Fatalf("Check(%q) = %+v, %v", sql, v, err)
		}
	}
}

// BenchmarkNewGuard is the cost of taking in a server's column list (once
// per schemaTTL at the agent).
func BenchmarkNewGuard(b *testing.B) {
	schema := Schema{}
	for _, t := range CatalogTables() {
		schema[t] = catalogNames(t)
	}
	b.ReportAllocs()
	for b.Loop() {
		NewGuard(schema)
	}
}
