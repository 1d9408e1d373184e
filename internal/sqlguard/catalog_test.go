package sqlguard

import (
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/tetherhq/tether/internal/chtest"
)

// sensitiveName matches column names that hold text which can quote
// values, paths or secrets. A catalog line that marks such a name safe
// must be listed in reviewedSafe with why.
var sensitiveName = regexp.MustCompile(`(?i)(^|_)(query|formatted_query|exception|exceptions|stack_trace|message|error_message|error_text|exception_text|command|statement|create_query|create_table_query|engine_full|as_select|default_expression|path|paths|data_path|metadata_path|source|auth_params|password|secret|token|credentials|log_comment|http_referer|partition|select_filter|filter|expression|value1|value2|value3|value4|value5|value6|value7|value8|value9|value10)$`)

// reviewedSafe lists safe columns whose names look sensitive, each checked
// by hand.
var reviewedSafe = map[string]string{
	"system.replicas.zookeeper_path":                   "Keeper path built from schema names and macros",
	"system.replicas.replica_path":                     "Keeper path built from schema names and macros",
	"system.database_replicas.zookeeper_path":          "Keeper path built from schema names and macros",
	"system.database_replicas.replica_path":            "Keeper path built from schema names and macros",
	"system.replicated_fetches.source_replica_path":    "Keeper path built from schema names and macros",
	"system.zookeeper.path":                            "echo of the WHERE path = '…' the query gives",
	"system.zookeeper_watches.path":                    "ClickHouse's own Keeper metadata paths",
	"system.contribs.path":                             "path in ClickHouse's source repository",
	"system.licenses.license_path":                     "path in ClickHouse's source repository",
	"system.scheduler.path":                            "workload scheduler node path: workload names",
	"system.s3queue.zookeeper_path":                    "Keeper metadata path of the queue table",
	"system.azure_queue.zookeeper_path":                "Keeper metadata path of the queue table",
	"system.s3queue_metadata_cache.zookeeper_path":     "Keeper metadata path of the queue table",
	"system.azure_queue_metadata_cache.zookeeper_path": "Keeper metadata path of the queue table",
	"system.table_settings.source":                     "enum: where the setting's value came from",
	"system.named_collections.source":                  "enum: SQL or config",
	"system.documentation.source":                      "file in ClickHouse's repository the text comes from",
	"system.part_moves_between_shards.to_shard":        "Keeper path of the destination shard",
	"system.processes.is_initial_query":                "flag",
	"system.query_log.is_initial_query":                "flag",
	"system.query_thread_log.is_initial_query":         "flag",
	"system.dead_letter_queue.kafka_partition":         "Kafka partition number",
	"system.unicode.logical_order_exception":           "Unicode property of a code point",
}

func TestCatalogWellFormed(t *testing.T) {
	tables, safe, sensitive := 0, 0, 0
	for _, name := range CatalogTables() {
		tables++
		cols := CatalogColumns(name)
		if len(cols) == 0 {
			t.Errorf("%s has no columns", name)
		}
		for _, c := range cols {
			if len(c.Reason) < 3 || len(c.Reason) > 120 {
				t.Errorf("%s.%s: reason %q is not one short line", name, c.Name, c.Reason)
			}
			if !c.Safe {
				sensitive++
				continue
			}
			safe++
			key := name + "." + c.Name
			if sensitiveName.MatchString(c.Name) && reviewedSafe[key] == "" {
				t.Errorf("%s is safe in the catalog, but its name says it can hold text, paths or values: mark it sensitive or add it to reviewedSafe with why", key)
			}
		}
	}
	for key := range reviewedSafe {
		i := strings.LastIndexByte(key[len("system."):], '.') + len("system.")
		if c := lookupColumn(key[:i], key[i+1:]); c == nil || !c.Safe {
			t.Errorf("reviewedSafe lists %s, which is not a safe catalog column", key)
		}
	}
	t.Logf("catalog: %d tables, %d columns (%d safe, %d sensitive)", tables, safe+sensitive, safe, sensitive)
	if tables < 150 || safe+sensitive < 2000 {
		t.Errorf("catalog has %d tables and %d columns; it should cover ClickHouse 18.16 to 25.x (over 150 tables, 2,000 columns)", tables, safe+sensitive)
	}
	// The columns the security review got customer data out of.
	for _, key := range []string{
		"system.dictionaries.last_exception", "system.dictionaries.source", "system.crash_log.trace_full",
		"system.error_log.last_error_message", "system.asynchronous_loader.exception",
		"system.replicas.last_queue_update_exception", "system.replicas.zookeeper_exception",
		"system.parts.partition", "system.parts.min_date", "system.parts.max_time",
		"system.query_log.query", "system.query_log.exception", "system.processes.query",
		"system.mutations.command", "system.mutations.latest_fail_reason", "system.text_log.message",
		"system.tables.create_table_query", "system.users.auth_params", "system.named_collections.collection",
	} {
		i := strings.LastIndexByte(key[len("system."):], '.') + len("system.")
		c := lookupColumn(key[:i], key[i+1:])
		switch {
		case c == nil && key == "system.error_log.last_error_message":
			// error_log has no message column in the releases covered.
		case c == nil:
			t.Errorf("%s is not in the catalog", key)
		case c.Safe && key != "system.crash_log.trace_full":
			t.Errorf("%s is safe in the catalog", key)
		}
	}
}

func lookupColumn(table, name string) *Column {
	t := lookupTable(table)
	if t == nil {
		return nil
	}
	return t.column(name)
}

func TestFunctionCatalog(t *testing.T) {
	allowed, refused := 0, 0
	for _, f := range CatalogFunctions() {
		if f.Allowed {
			allowed++
		} else {
			refused++
		}
	}
	t.Logf("functions: %d allowed, %d refused; %d combinators", allowed, refused, len(CatalogCombinators()))
	for _, name := range []string{"count", "COUNT", "sum", "countIf", "sumIf", "uniqExactIf", "avgArray", "quantilesTiming", "quantileTDigestIf",
		"formatReadableSize", "toStartOfInterval", "now", "if", "multiIf", "arrayJoin", "lower", "LOWER", "toUInt64", "row_number", "lagInFrame"} {
		if r := functionRefused(name); r != "" {
			t.Errorf("function %s refused: %s", name, r)
		}
	}
	for _, name := range []string{"dictGet", "dictGetString", "joinGet", "file", "url", "getSetting", "sleep", "sleepEachRow",
		"getClientHTTPHeader", "addressToSymbol", "formatRow", "in", "globalNotIn", "__getScalar", "_internal", "noSuchFunction", "dictGetIf", "countNoSuchCombinator"} {
		if r := functionRefused(name); r == "" {
			t.Errorf("function %s allowed", name)
		}
	}
}

// TestCatalogAgainstClickHouse keeps the catalog honest against the
// installed ClickHouse: every system table and column the running server
// has is either a safe catalog column that the guard allows and the
// server reads, or refused by the guard, whether named or reached by *.
func TestCatalogAgainstClickHouse(t *testing.T) {
	if testing.Short() {
		t.Skip("starts ClickHouse")
	}
	s := plantCanaries(t)
	out, err := s.Query("default", "", "SELECT table, name, default_kind FROM system.columns WHERE database = 'system' FORMAT TabSeparated")
	if err != nil {
		t.Fatal(err)
	}
	schema := Schema{}
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		f := strings.Split(line, "\t")
		schema["system."+f[0]] = append(schema["system."+f[0]], SchemaColumn{Name: f[1], Alias: f[2] == "ALIAS"})
	}
	g := NewGuard(schema)
	var uncovered []string
	allowed, refused := 0, 0
	for table, cols := range schema {
		if lookupTable(table) == nil {
			uncovered = append(uncovered, table)
			if v, _ := g.Check("SELECT count() FROM " + table); v.Allow {
				t.Errorf("table %s is not in the catalog, and the guard allows reading it", table)
			}
			continue
		}
		for _, sc := range cols {
			col := sc.Name
			sql := "SELECT `" + col + "` FROM " + table + " LIMIT 1"
			v, _ := g.Check(sql)
			c := lookupColumn(table, col)
			switch {
			case c == nil:
				uncovered = append(uncovered, table+"."+col)
				if v.Allow {
					t.Errorf("%s.%s is not in the catalog, and the guard allows %q", table, col, sql)
				}
			case c.Safe && !v.Allow:
				t.Errorf("%s.%s is safe in the catalog, and the guard refuses %q: %s", table, col, sql, v.Reason)
			case !c.Safe && v.Allow:
				t.Errorf("%s.%s is sensitive, and the guard allows %q", table, col, sql)
			}
			if !v.Allow {
				refused++
				continue
			}
			allowed++
			if _, err := s.Query("tether", chtest.Password, sql); err != nil && !strings.Contains(err.Error(), "Code: 999") {
				// Keeper tables need a path and a configured Keeper.
				if table != "system.zookeeper" {
					t.Errorf("%q, allowed, fails on the server: %v", sql, err)
				}
			}
			// Every row of a safe column, read as the admin, which sees
			// everything: no planted value may be in it.
			all := "SELECT `" + col + "` FROM " + table + " LIMIT 100000" // numbers and zeros never end
			out, err := s.Query("default", "", all)
			for _, c := range canaries {
				if strings.Contains(out+fmt.Sprint(err), c) {
					t.Errorf("safe column %s.%s holds the planted value %s", table, col, c)
				}
			}
		}
		// * reaches every column the server has: allowed only when none
		// of them is unsafe, and then what comes back is only safe columns.
		v, _ := g.Check("SELECT * FROM " + table + " LIMIT 0 FORMAT TSVWithNames")
		if !v.Allow {
			continue
		}
		hdr, err := s.Query("default", "", "SELECT * FROM "+table+" LIMIT 0 FORMAT TSVWithNames")
		if err != nil {
			continue
		}
		rows, err := s.Query("default", "", "SELECT * FROM "+table+" LIMIT 100000")
		for _, c := range canaries {
			if strings.Contains(rows+fmt.Sprint(err), c) {
				t.Errorf("SELECT * FROM %s is allowed and returns the planted value %s", table, c)
			}
		}
		for _, name := range strings.Split(strings.TrimSpace(hdr), "\t") {
			if c := lookupColumn(table, name); name != "" && (c == nil || !c.Safe) {
				t.Errorf("SELECT * FROM %s is allowed and returns column %s, which is not a safe catalog column", table, name)
			}
		}
	}
	if len(uncovered) > 0 {
		t.Logf("ClickHouse has %d tables and columns the catalog does not cover; the guard refuses them: %s", len(uncovered), strings.Join(uncovered, ", "))
	}
	t.Logf("server columns: %d allowed, %d refused", allowed, refused)
}
