package sqlguard

import (
	"sort"
	"strings"
)

// MaxQueryBytes is the largest statement Check accepts.
const MaxQueryBytes = 64 << 10

// MaxNesting is the deepest nesting of brackets, function calls,
// subqueries and operators Check accepts.
const MaxNesting = 128

// allowedTableFunctions are the only table functions a statement may use.
// numbers, numbers_mt, zeros and zeros_mt take integer literals only;
// cluster and clusterAllReplicas must target a system table. Names are
// case-sensitive.
var allowedTableFunctions = []string{"numbers", "numbers_mt", "zeros", "zeros_mt", "cluster", "clusterAllReplicas"}

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

// allowedSettings are the only settings a statement may give, with their
// limits: output formatting, date and time rendering, and a bounded amount
// of parallelism. Nothing that raises a limit, changes access or writes
// anywhere.
var allowedSettings = map[string]SettingRule{
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

// forcedSettings are set by the agent on every query; a statement may not
// give them.
var forcedSettings = map[string]bool{"max_execution_time": true, "max_result_rows": true, "max_result_bytes": true, "result_overflow_mode": true, "max_memory_usage": true}

// allowedFormats are the output formats a statement may name, compared
// case-insensitively. None reads a schema or template file.
var allowedFormats = []string{
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

// The lookup tables Check uses.
var (
	tableFuncAllowed = setOf(allowedTableFunctions, false)
	formatsAllowed   = setOf(allowedFormats, true)
	tableFuncNames   = setOf(knownTableFunctions, true)
)

// Formats lists the output formats a statement may name (FORMAT, or the
// format asked beside the SQL), compared case-insensitively.
func Formats() []string { return append([]string(nil), allowedFormats...) }

// FormatAllowed reports whether name is an allowed output format, compared
// case-insensitively, as FORMAT in a statement is.
func FormatAllowed(name string) bool { return formatsAllowed[strings.ToLower(name)] }

// TableFunctions lists the table functions a statement may use.
func TableFunctions() []string { return append([]string(nil), allowedTableFunctions...) }

// Settings returns the settings a statement may give, with their limits.
func Settings() map[string]SettingRule {
	out := make(map[string]SettingRule, len(allowedSettings))
	for k, v := range allowedSettings {
		v.Values = append([]string(nil), v.Values...)
		out[k] = v
	}
	return out
}

// ForcedSettings lists the settings the agent sets on every query, which a
// statement may not give.
func ForcedSettings() []string {
	out := make([]string, 0, len(forcedSettings))
	for k := range forcedSettings {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

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
