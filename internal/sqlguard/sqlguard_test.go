package sqlguard

import (
	"reflect"
	"strings"
	"testing"
)

func TestAllowedCorpus(t *testing.T) {
	for _, sql := range allowedCorpus {
		v, err := Check(sql)
		if err != nil || !v.Allow {
			t.Errorf("Check(%q) = deny %q (err %v), want allow", sql, v.Reason, err)
			continue
		}
		checkInvariants(t, sql, v)
	}
}

func TestDeniedCorpus(t *testing.T) {
	for _, d := range deniedCorpus {
		v, err := Check(d.sql)
		if err != nil {
			t.Errorf("Check(%.200q) error %v, want a denial", d.sql, err)
			continue
		}
		if v.Allow {
			t.Errorf("Check(%.200q) = allow (tables %v, columns %v), want deny", d.sql, v.Tables, v.Columns)
			continue
		}
		if v.Reason == "" {
			t.Errorf("Check(%.200q) denied without a reason", d.sql)
		}
		if !strings.Contains(v.Reason, d.reason) {
			t.Errorf("Check(%.200q) reason = %q, want it to contain %q", d.sql, v.Reason, d.reason)
		}
	}
}

func TestCorpusSizes(t *testing.T) {
	if len(allowedCorpus) < 150 || len(deniedCorpus) < 250 {
		t.Errorf("corpus has %d allowed and %d denied statements, want at least 150 and 250", len(allowedCorpus), len(deniedCorpus))
	}
	seen := map[string]bool{}
	for _, s := range allowedCorpus {
		if seen[s] {
			t.Errorf("duplicate allowed statement %q", s)
		}
		seen[s] = true
	}
	for _, d := range deniedCorpus {
		if seen[d.sql] {
			t.Errorf("duplicate statement %.200q", d.sql)
		}
		seen[d.sql] = true
	}
}

// checkInvariants holds for every allowed verdict.
func checkInvariants(t *testing.T, sql string, v Verdict) {
	t.Helper()
	for _, tb := range v.Tables {
		if !strings.HasPrefix(tb, "system.") {
			t.Errorf("Check(%q): table %q is not in system", sql, tb)
		}
	}
	for _, c := range v.Columns {
		if !strings.HasPrefix(c, "system.") {
			continue
		}
		rest := strings.TrimPrefix(c, "system.")
		i := strings.IndexByte(rest, '.')
		if i < 0 {
			t.Errorf("Check(%q): column %q has no table", sql, c)
			continue
		}
		table, col := "system."+rest[:i], rest[i+1:]
		if col == "*" {
			continue // * is checked against the table's unsafe columns
		}
		tb := lookupTable(table)
		if tb == nil {
			t.Errorf("Check(%q) allowed column %q of a table the catalog does not cover", sql, c)
			continue
		}
		if _, safe := tb.safeColumn(strings.Split(col, ".")); !safe {
			t.Errorf("Check(%q) allowed column %q, which is not safe in the catalog", sql, c)
		}
	}
	if v.Reason != "" {
		t.Errorf("Check(%q) allowed with reason %q", sql, v.Reason)
	}
	for k := range v.Settings {
		if _, ok := allowedSettings[k]; !ok {
			t.Errorf("Check(%q) allowed setting %q", sql, k)
		}
	}
}

func TestVerdictDetails(t *testing.T) {
	tests := []struct {
		sql  string
		want Verdict
	}{
		{
			"SELECT database, table, count() AS parts, sum(rows) FROM system.parts WHERE active GROUP BY database, table ORDER BY parts DESC LIMIT 10",
			Verdict{Allow: true, Kind: "select", Tables: []string{"system.parts"},
				Columns: []string{"system.parts.active", "system.parts.database", "system.parts.rows", "system.parts.table"}},
		},
		{
			"SELECT p.name, r.queue_size FROM system.parts AS p JOIN system.replicas AS r USING (database, table) SETTINGS max_threads = 2 FORMAT JSON",
			Verdict{Allow: true, Kind: "select", Tables: []string{"system.parts", "system.replicas"},
				Columns:  []string{"database", "system.parts.name", "system.replicas.queue_size", "table"},
				Settings: map[string]string{"max_threads": "2"}, Format: "JSON"},
		},
		{
			"SELECT * EXCEPT (query, formatted_query, exception, stack_trace, http_referer, forwarded_for, quota_key, http_request_url, log_comment, Settings, \"Settings.Names\", \"Settings.Values\") FROM system.query_log",
			Verdict{Allow: true, Kind: "select", Tables: []string{"system.query_log"}, Columns: []string{"system.query_log.*"}},
		},
		{
			"SELECT hostName(), value FROM clusterAllReplicas('default', 'system', 'metrics') WHERE metric = 'Query'",
			Verdict{Allow: true, Kind: "select", Tables: []string{"system.metrics"},
				Columns: []string{"system.metrics.metric", "system.metrics.value"}},
		},
		{
			"WITH t AS (SELECT name FROM system.tables) SELECT name FROM t WHERE name IN (SELECT table FROM system.parts)",
			Verdict{Allow: true, Kind: "select", Tables: []string{"system.parts", "system.tables"},
				Columns: []string{"system.parts.table", "system.tables.name"}},
		},
		{
			"SELECT sum(rows) AS rows FROM system.parts SETTINGS extremes = true",
			Verdict{Allow: true, Kind: "select", Tables: []string{"system.parts"}, Columns: []string{"system.parts.rows"},
				Settings: map[string]string{"extremes": "1"}},
		},
		{"DESCRIBE TABLE system.parts", Verdict{Allow: true, Kind: "describe", Tables: []string{"system.parts"}}},
		{"EXISTS system.parts", Verdict{Allow: true, Kind: "exists", Tables: []string{"system.parts"}}},
		{"SHOW TABLES FROM system LIKE '%log'", Verdict{Allow: true, Kind: "show_tables", Tables: []string{"system.tables"}, Columns: []string{"system.tables.name"}}},
		{"SHOW CREATE TABLE system.parts FORMAT TSVRaw", Verdict{Allow: true, Kind: "show_create", Tables: []string{"system.parts"}, Format: "TSVRaw"}},
		{"SELECT 1 FORMAT JSONEachRow;", Verdict{Allow: true, Kind: "select", Format: "JSONEachRow"}},
		{"SELECT x FROM numbers(3) ARRAY JOIN [1] AS x", Verdict{Allow: true, Kind: "select"}},
		{"DROP TABLE default.t", Verdict{Kind: "", Reason: "DROP statements are not allowed: they delete data"}},
		{"SELECT query FROM system.query_log", Verdict{Kind: "select", Reason: "column query of system.query_log is sensitive: query text; can contain literals from customer data (offset 7)"}},
		{"SELECT * FROM default.secret", Verdict{Kind: "select", Reason: "table default.secret is not a system table (offset 14)"}},
	}
	for _, tt := range tests {
		got, err := Check(tt.sql)
		if err != nil {
			t.Errorf("Check(%q) error %v", tt.sql, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Check(%q) = %+v, want %+v", tt.sql, got, tt.want)
		}
	}
}

// TestPolicyCopies: changing what the exported functions return does not
// change what Check allows.
func TestPolicyCopies(t *testing.T) {
	Settings()["readonly"] = SettingRule{Kind: SettingUint, Max: 10}
	cols := CatalogColumns("system.query_log")
	for i := range cols {
		cols[i].Safe = true
	}
	fns := CatalogFunctions()
	for i := range fns {
		fns[i].Allowed = true
	}
	for _, sql := range []string{"SELECT query FROM system.query_log", "SELECT 1 SETTINGS readonly = 0", "SELECT dictGet('d', 'v', 1)"} {
		if v, _ := Check(sql); v.Allow {
			t.Errorf("Check(%q) = allow after changing the exported values, want deny", sql)
		}
	}
}

func TestStable(t *testing.T) {
	for _, sql := range allowedCorpus {
		a, _ := Check(sql)
		b, _ := Check(sql)
		if !reflect.DeepEqual(a, b) {
			t.Errorf("Check(%q) is not stable: %+v then %+v", sql, a, b)
		}
	}
}

// TestFormatAllowed: a format given beside the SQL passes the same
// allowlist as FORMAT in it, whole names only.
func TestFormatAllowed(t *testing.T) {
	for name, want := range map[string]bool{
		"JSON": true, "json": true, "TabSeparatedWithNames": true, "RowBinary": true,
		"": false, "Template": false, "CustomSeparated": false, "JSON;": false,
		"JSON SETTINGS max_threads = 2": false, "JSON FORMAT CSV": false, " JSON": false,
	} {
		if got := FormatAllowed(name); got != want {
			t.Errorf("FormatAllowed(%q) = %v, want %v", name, got, want)
		}
	}
}
