package sqlguard

import (
	"strings"
	"testing"
)

// TestGuardWithSchema: a column the server has and the catalog does not
// cover (a newer release's) is refused wherever * or a name could reach
// it, and a table whose columns the agent has not read yet cannot be
// expanded by *.
func TestGuardWithSchema(t *testing.T) {
	schema := Schema{
		"system.merges":  append(catalogNames("system.merges"), SchemaColumn{Name: "secret_new_column"}),
		"system.metrics": catalogNames("system.metrics"),
		"system.one":     {{Name: "dummy"}},
	}
	g := NewGuard(schema)
	for _, c := range []struct{ sql, reason string }{
		{"SELECT * FROM system.merges", "secret_new_column"},
		{"SELECT secret_new_column FROM system.merges", "not in the guard's catalog"},
		{"SELECT m.secret_new_column FROM system.merges AS m", "not in the guard's catalog"},
		{"SELECT 1 AS secret_new_column, secret_new_column + 1 FROM system.merges", "secret_new_column"},
		{"SELECT x FROM (SELECT * FROM system.merges)", "secret_new_column"},
		{"SELECT COLUMNS('^s') FROM system.merges", "secret_new_column"},
		// Not in the schema: the agent has not seen the server's columns.
		{"SELECT * FROM system.events", "does not know this server's columns"},
		// In the catalog, not on this server.
		{"SELECT description FROM system.one", "not a column of any table"},
		// An alias of an enclosing SELECT does not hide a column of an
		// inner one that the catalog does not cover.
		{"SELECT 1 AS secret_new_column FROM system.one WHERE 1 IN (SELECT secret_new_column FROM system.merges)", "secret_new_column"},
	} {
		v, err := g.Check(c.sql)
		if err != nil || v.Allow || !strings.Contains(v.Reason, c.reason) {
			t.Errorf("Check(%q) = %v %q (err %v), want a denial naming %q", c.sql, v.Allow, v.Reason, err, c.reason)
		}
	}
	for _, sql := range []string{
		"SELECT * EXCEPT (source_part_paths, result_part_path, partition, secret_new_column) FROM system.merges",
		"SELECT database, table, elapsed FROM system.merges",
		"SELECT * FROM system.metrics",
		"SELECT event, value FROM system.events", // named columns need no schema
		"WITH 'x' AS v SELECT count() FROM system.one WHERE dummy IN (SELECT 0 FROM system.merges WHERE database = v)",
	} {
		if v, err := g.Check(sql); err != nil || !v.Allow {
			t.Errorf("Check(%q) = deny %q (err %v), want allow", sql, v.Reason, err)
		}
	}
	// Offline, the guard assumes the catalog's columns: the same query
	// over a table whose catalog columns are all safe is allowed.
	if v, _ := Check("SELECT * FROM system.metrics"); !v.Allow {
		t.Errorf("offline Check(SELECT * FROM system.metrics) = deny %q", v.Reason)
	}
}

func catalogNames(table string) []SchemaColumn {
	var out []SchemaColumn
	for _, c := range CatalogColumns(table) {
		if !strings.HasSuffix(c.Name, "*") {
			out = append(out, SchemaColumn{Name: c.Name})
		}
	}
	return out
}

// TestStarRefusalExplains: * over a table with sensitive columns is refused
// with the columns to drop and the safe columns to read instead.
func TestStarRefusalExplains(t *testing.T) {
	v, _ := Check("SELECT * FROM system.dictionaries")
	for _, want := range []string{"last_exception", "source", "EXCEPT (", "its safe columns are", "bytes_allocated"} {
		if v.Allow || !strings.Contains(v.Reason, want) {
			t.Errorf("Check(SELECT * FROM system.dictionaries) = %q, want it to name %q", v.Reason, want)
		}
	}
}
