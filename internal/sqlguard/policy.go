package sqlguard

import "strings"

// MaxQueryBytes is the largest statement Check accepts.
const MaxQueryBytes = 64 << 10

// MaxNesting is the deepest nesting of brackets, function calls,
// subqueries and operators Check accepts.
const MaxNesting = 128

// AllowedTableFunctions are the only table functions a statement may use.
// numbers, numbers_mt, zeros and zeros_mt take integer literals only;
// cluster and clusterAllReplicas must target a system table. Names are
// case-sensitive.
var AllowedTableFunctions = []string{"numbers", "numbers_mt", "zeros", "zeros_mt", "cluster", "clusterAllReplicas"}

// DeniedFunctions are functions no statement may call, matched
// case-insensitively: they read data outside system tables (dictionaries,
// Join tables, files, models), reveal secrets (HTTP headers of the request,
// which carry the agent's credentials), reach the network, write somewhere
// (the server log, Keeper) or stall the server.
var DeniedFunctions = []string{
	// Dictionaries and Join tables hold customer data.
	"dictGet", "dictGetOrDefault", "dictGetOrNull", "dictHas", "dictIsIn",
	"dictGetHierarchy", "dictGetChildren", "dictGetDescendants", "dictGetAll",
	"joinGet", "joinGetOrNull",
	// Files, models and external programs.
	"file", "evalMLMethod", "modelEvaluate", "catboostEvaluate",
	// Table metadata probing outside the system database.
	"hasColumnInTable",
	// Stalls.
	"sleep", "sleepEachRow",
	// Introspection: reads the server binary, needs a denied setting.
	"addressToLine", "addressToLineWithInlines", "addressToSymbol", "demangle",
	// Secrets and the network.
	"getClientHTTPHeader", "reverseDNSQuery",
	// Side effects.
	"logTrace", "generateSerialID",
	// Formatting with arbitrary formats can need schema or template files.
	"formatRow", "formatRowNoNewline",
	// The functional forms of IN: the second argument may name a table.
	"in", "notIn", "globalIn", "globalNotIn", "nullIn", "notNullIn",
	"globalNullIn", "globalNotNullIn", "inIgnoreSet", "notInIgnoreSet",
	"nullInIgnoreSet", "notNullInIgnoreSet", "globalInIgnoreSet", "globalNotInIgnoreSet",
}

// DeniedFunctionPrefixes deny every function whose name starts with one of
// them, case-insensitively: all dictionary functions (dictGet*, dictHas…),
// all joinGet variants, naiveBayesClassifier* (ClickHouse resolves its
// first argument like a dictionary name), and internal functions (names
// starting with '_', such as __getScalar).
var DeniedFunctionPrefixes = []string{"dict", "joinget", "naivebayesclassifier", "_"}

// DeniedColumns lists, per system table, the columns that can hold
// customer data or secrets: query text, exception and log messages (they
// quote values), DDL (it can carry credentials), mutation commands
// (literals), ZooKeeper node data, trace attributes. Column names are
// compared case-insensitively.
var DeniedColumns = map[string][]string{
	"system.query_log":                 {"query", "formatted_query", "exception", "stack_trace", "log_comment"},
	"system.query_thread_log":          {"query", "exception", "stack_trace", "log_comment"},
	"system.query_views_log":           {"view_query", "exception", "stack_trace"},
	"system.processes":                 {"query"},
	"system.text_log":                  {"message", "value1", "value2", "value3", "value4", "value5", "value6", "value7", "value8", "value9", "value10"},
	"system.errors":                    {"last_error_message"},
	"system.mutations":                 {"command", "latest_fail_reason"},
	"system.distribution_queue":        {"last_exception"},
	"system.replication_queue":         {"last_exception"},
	"system.part_log":                  {"exception"},
	"system.tables":                    {"create_table_query", "engine_full", "as_select"},
	"system.databases":                 {"engine_full"},
	"system.dictionaries":              {"source"},
	"system.functions":                 {"create_query"},
	"system.zookeeper":                 {"value"},
	"system.zookeeper_log":             {"data"},
	"system.distributed_ddl_queue":     {"query", "exception_text"},
	"system.asynchronous_inserts":      {"query"},
	"system.asynchronous_insert_log":   {"query", "exception"},
	"system.query_cache":               {"query"},
	"system.opentelemetry_span_log":    {"attribute"},
	"system.named_collections":         {"collection"},
	"system.users":                     {"auth_params"},
	"system.row_policies":              {"select_filter"},
	"system.session_log":               {"failure_reason"},
	"system.backups":                   {"name", "base_backup_name", "error"},
	"system.backup_log":                {"name", "base_backup_name", "error"},
	"system.blob_storage_log":          {"error"},
	"system.view_refreshes":            {"exception"},
	"system.kafka_consumers":           {"exceptions", "last_exception"},
	"system.part_moves_between_shards": {"last_exception"},
}

// ReviewedTables are the system tables whose columns have been reviewed:
// * over them is allowed (with EXCEPT covering their [DeniedColumns], if
// any). Tables in DeniedColumns are reviewed too.
var ReviewedTables = []string{
	"system.aggregate_function_combinators", "system.asynchronous_loader",
	"system.asynchronous_metric_log", "system.asynchronous_metrics",
	"system.build_options", "system.certificates", "system.clusters",
	"system.collations", "system.columns", "system.contributors",
	"system.crash_log", "system.current_roles", "system.dashboards",
	"system.data_skipping_indices", "system.data_type_families",
	"system.database_engines", "system.detached_parts", "system.detached_tables",
	"system.disks", "system.dns_cache", "system.dropped_tables",
	"system.dropped_tables_parts", "system.enabled_roles", "system.error_log",
	"system.events", "system.filesystem_cache", "system.formats", "system.grants",
	"system.graphite_retentions", "system.jemalloc_bins", "system.keywords",
	"system.licenses", "system.macros", "system.merge_tree_settings",
	"system.merges", "system.metric_log", "system.metrics", "system.moves",
	"system.numbers", "system.numbers_mt", "system.one", "system.parts",
	"system.parts_columns", "system.privileges", "system.processors_profile_log",
	"system.projection_parts", "system.projection_parts_columns",
	"system.quota_limits", "system.quota_usage", "system.quotas",
	"system.quotas_usage", "system.remote_data_paths",
	"system.replicated_fetches", "system.replicated_merge_tree_settings",
	"system.replicas", "system.role_grants", "system.roles",
	"system.server_settings", "system.settings", "system.settings_changes",
	"system.settings_profile_elements", "system.settings_profiles",
	"system.stack_trace", "system.storage_policies", "system.symbols",
	"system.table_engines", "system.table_functions", "system.time_zones",
	"system.trace_log", "system.transactions", "system.user_directories",
	"system.user_processes", "system.warnings", "system.zeros",
	"system.zeros_mt", "system.zookeeper_connection", "system.query_metric_log",
	"system.histogram_metrics", "system.dimensional_metrics", "system.latency_log",
	"system.scheduler",
}

// UnreviewedDeniedColumns are denied in every system table that is not in
// [ReviewedTables] or [DeniedColumns]: a table added by a newer ClickHouse,
// or a log table renamed in the server's configuration, may hold query text
// or messages under these common names.
var UnreviewedDeniedColumns = []string{
	"query", "formatted_query", "view_query", "create_query", "create_table_query",
	"as_select", "engine_full", "exception", "exception_text", "exceptions",
	"last_exception", "latest_fail_reason", "last_error_message", "error",
	"error_message", "failure_reason", "stack_trace", "log_comment", "message",
	"command", "source", "value", "data", "attribute", "collection",
	"auth_params", "select_filter", "http_referer", "settings", "statement",
}

// SettingKind says what values a setting in [AllowedSettings] takes.
type SettingKind int

const (
	// SettingBool takes 0, 1, true or false.
	SettingBool SettingKind = iota
	// SettingUint takes an integer in [SettingRule.Min, SettingRule.Max].
	SettingUint
	// SettingEnum takes one of [SettingRule.Values] as a string literal.
	SettingEnum
	// SettingChar takes a one-character string of printable ASCII other
	// than quotes and backslash.
	SettingChar
	// SettingTimeZone takes a time zone name such as 'UTC' or
	// 'Europe/Berlin'.
	SettingTimeZone
)

// SettingRule bounds the value of one allowed setting.
type SettingRule struct {
	Kind     SettingKind
	Min, Max uint64
	Values   []string
}

// AllowedSettings are the only settings a statement may give, with their
// limits: output formatting, date and time rendering, and a bounded amount
// of parallelism. Nothing that raises a limit, changes access or writes
// anywhere.
var AllowedSettings = map[string]SettingRule{
	"max_threads":                                      {Kind: SettingUint, Min: 1, Max: 16},
	"max_block_size":                                   {Kind: SettingUint, Min: 1, Max: 65536},
	"extremes":                                         {Kind: SettingBool},
	"join_use_nulls":                                   {Kind: SettingBool},
	"skip_unavailable_shards":                          {Kind: SettingBool},
	"describe_include_subcolumns":                      {Kind: SettingBool},
	"union_default_mode":                               {Kind: SettingEnum, Values: []string{"ALL", "DISTINCT"}},
	"date_time_output_format":                          {Kind: SettingEnum, Values: []string{"simple", "iso", "unix_timestamp"}},
	"date_time_input_format":                           {Kind: SettingEnum, Values: []string{"basic", "best_effort", "best_effort_us"}},
	"session_timezone":                                 {Kind: SettingTimeZone},
	"format_csv_delimiter":                             {Kind: SettingChar},
	"output_format_json_quote_64bit_integers":          {Kind: SettingBool},
	"output_format_json_quote_64bit_floats":            {Kind: SettingBool},
	"output_format_json_quote_denormals":               {Kind: SettingBool},
	"output_format_json_quote_decimals":                {Kind: SettingBool},
	"output_format_json_escape_forward_slashes":        {Kind: SettingBool},
	"output_format_json_named_tuples_as_objects":       {Kind: SettingBool},
	"output_format_json_array_of_rows":                 {Kind: SettingBool},
	"output_format_json_validate_utf8":                 {Kind: SettingBool},
	"output_format_json_pretty_print":                  {Kind: SettingBool},
	"output_format_write_statistics":                   {Kind: SettingBool},
	"output_format_decimal_trailing_zeros":             {Kind: SettingBool},
	"output_format_csv_crlf_end_of_line":               {Kind: SettingBool},
	"output_format_tsv_crlf_end_of_line":               {Kind: SettingBool},
	"output_format_pretty_color":                       {Kind: SettingBool},
	"output_format_pretty_row_numbers":                 {Kind: SettingBool},
	"output_format_markdown_escape_special_characters": {Kind: SettingBool},
	"output_format_pretty_max_rows":                    {Kind: SettingUint, Min: 1, Max: 10000},
	"output_format_pretty_max_column_pad_width":        {Kind: SettingUint, Min: 1, Max: 1000},
	"output_format_pretty_max_value_width":             {Kind: SettingUint, Min: 1, Max: 100000},
	"output_format_pretty_grid_charset":                {Kind: SettingEnum, Values: []string{"UTF-8", "ASCII"}},
}

// ForcedSettings are set by the agent on every query; a statement may not
// give them.
var ForcedSettings = []string{"max_execution_time", "max_result_rows", "max_result_bytes", "result_overflow_mode", "max_memory_usage"}

// AllowedFormats are the output formats a statement may name, compared
// case-insensitively. None reads a schema or template file.
var AllowedFormats = []string{
	"TabSeparated", "TabSeparatedRaw", "TabSeparatedWithNames", "TabSeparatedWithNamesAndTypes",
	"TabSeparatedRawWithNames", "TabSeparatedRawWithNamesAndTypes",
	"TSV", "TSVRaw", "TSVWithNames", "TSVWithNamesAndTypes", "TSVRawWithNames", "TSVRawWithNamesAndTypes",
	"CSV", "CSVWithNames", "CSVWithNamesAndTypes",
	"JSON", "JSONStrings", "JSONCompact", "JSONCompactStrings", "JSONColumns", "JSONCompactColumns",
	"JSONEachRow", "JSONStringsEachRow", "JSONCompactEachRow", "JSONCompactStringsEachRow",
	"JSONCompactEachRowWithNames", "JSONCompactEachRowWithNamesAndTypes",
	"JSONCompactStringsEachRowWithNames", "JSONCompactStringsEachRowWithNamesAndTypes",
	"JSONLines", "NDJSON", "JSONObjectEachRow", "PrettyJSONEachRow",
	"JSONEachRowWithProgress", "JSONStringsEachRowWithProgress", "JSONCompactEachRowWithProgress",
	"Pretty", "PrettyCompact", "PrettyCompactMonoBlock", "PrettyNoEscapes", "PrettyMonoBlock",
	"PrettyNoEscapesMonoBlock", "PrettyCompactNoEscapes", "PrettyCompactNoEscapesMonoBlock",
	"PrettySpace", "PrettySpaceMonoBlock", "PrettySpaceNoEscapes", "PrettySpaceNoEscapesMonoBlock",
	"Vertical", "VerticalRaw", "Markdown", "Values", "XML", "TSKV", "LineAsString", "Prometheus", "SQLInsert",
	"RowBinary", "RowBinaryWithNames", "RowBinaryWithNamesAndTypes", "Native", "Null",
}

// The lookup tables Check uses, copied from the exported variables at init.
var (
	tableFuncAllowed = setOf(AllowedTableFunctions, false)
	deniedFuncs      = setOf(DeniedFunctions, true)
	deniedFuncPrefix = append([]string(nil), DeniedFunctionPrefixes...)
	deniedCols       = map[string]map[string]string{} // table → lower(col) → col
	deniedOrder      = map[string][]string{}          // table → cols as declared
	reviewedTables   = setOf(ReviewedTables, false)
	unreviewedDenied = map[string]string{}
	settingRules     = map[string]SettingRule{}
	forcedSettings   = setOf(ForcedSettings, false)
	formatsAllowed   = setOf(AllowedFormats, true)
	tableFuncNames   = setOf(knownTableFunctions, true)
)

// knownTableFunctions are ClickHouse table functions: calling one of them
// in an expression is denied, whatever ClickHouse version might make of it.
var knownTableFunctions = []string{
	"azureBlobStorage", "azureBlobStorageCluster", "cluster", "clusterAllReplicas",
	"deltaLake", "deltaLakeCluster", "dictionary", "executable", "file", "fileCluster",
	"fuzzJSON", "fuzzQuery", "gcs", "generateRandom", "generateSeries", "generate_series",
	"hdfs", "hdfsCluster", "hudi", "hudiCluster", "iceberg", "icebergS3", "icebergAzure",
	"icebergHDFS", "icebergLocal", "icebergCluster", "input", "jdbc", "loop", "merge",
	"mergeTreeIndex", "mergeTreeProjection", "mongodb", "mysql", "null", "numbers",
	"numbers_mt", "odbc", "postgresql", "primes", "redis", "remote", "remoteSecure",
	"s3", "s3Cluster", "sqlite", "url", "urlCluster", "values", "view", "viewExplain",
	"viewIfPermitted", "zeros", "zeros_mt", "timeSeriesData", "timeSeriesMetrics",
	"timeSeriesTags", "ytsaurus", "paimon", "arrowFlight", "kql", "prometheusQuery",
}

func init() {
	for t, cols := range DeniedColumns {
		deniedOrder[t] = append([]string(nil), cols...)
		m := map[string]string{}
		for _, c := range cols {
			m[strings.ToLower(c)] = c
		}
		deniedCols[t] = m
	}
	for _, c := range UnreviewedDeniedColumns {
		unreviewedDenied[strings.ToLower(c)] = c
	}
	for k, v := range AllowedSettings {
		v.Values = append([]string(nil), v.Values...)
		settingRules[k] = v
	}
}

func setOf(list []string, fold bool) map[string]bool {
	m := make(map[string]bool, len(list))
	for _, s := range list {
		if fold {
			s = strings.ToLower(s)
		}
		m[s] = true
	}
	return m
}

// tablePolicy returns the denied columns of a system table (lowercased name
// → name) and whether its columns were reviewed. A log table renamed by a
// schema upgrade (query_log_0, query_log_1, …) gets the policy of its base.
func tablePolicy(table string) (denied map[string]string, reviewed bool) {
	if d, ok := deniedCols[table]; ok {
		return d, true
	}
	if reviewedTables[table] {
		return nil, true
	}
	if i := strings.LastIndexByte(table, '_'); i > 0 && i < len(table)-1 && allDigits(table[i+1:]) {
		if d, ok := deniedCols[table[:i]]; ok {
			return d, true
		}
		if reviewedTables[table[:i]] {
			return nil, true
		}
	}
	return unreviewedDenied, false
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// functionDenied reports why a function may not be called, or "".
func functionDenied(name string) string {
	l := strings.ToLower(name)
	if deniedFuncs[l] {
		switch l {
		case "sleep", "sleepeachrow":
			return "function " + name + " is not allowed: it stalls the server"
		case "in", "notin", "globalin", "globalnotin", "nullin", "notnullin", "globalnullin",
			"globalnotnullin", "iningnoreset", "notiningnoreset", "nulliningnoreset",
			"notnulliningnoreset", "globaliningnoreset", "globalnotiningnoreset":
			return "function " + name + " is not allowed: its second argument may name a table; use the IN operator"
		}
		return "function " + name + " is not allowed: it can reach data, secrets or resources outside the system tables"
	}
	for _, p := range deniedFuncPrefix {
		if strings.HasPrefix(l, p) {
			if p == "_" {
				return "function " + name + " is not allowed: internal functions (names starting with '_') are denied"
			}
			return "function " + name + " is not allowed: it reads dictionaries, Join tables or models, which hold customer data"
		}
	}
	return ""
}
