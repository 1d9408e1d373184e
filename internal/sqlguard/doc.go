// Package sqlguard decides whether a SQL statement sent by a vendor's
// engineer may run against a customer's ClickHouse. It is the security
// heart of the agent: the statement may read ClickHouse's own system
// tables, never the customer's data. [Check] lexes the statement the way
// ClickHouse does, parses it to a syntax tree with a recursive-descent
// parser (no regular expressions run over the SQL) and walks the tree.
// Anything it does not fully parse and understand is denied, with a reason
// a person can act on. The agent's ClickHouse user (readonly=2,
// allow_databases=system) is the second lock behind it.
//
// # Statements
//
// Allowed: SELECT (with WITH, subqueries, joins, set operations, window
// functions, FORMAT and SETTINGS), DESCRIBE [TABLE] system.x,
// EXISTS [TABLE] system.x, SHOW TABLES FROM|IN system [[NOT] LIKE|ILIKE '…']
// [LIMIT n], SHOW CREATE [TABLE] system.x. Every other statement is denied
// with a reason naming it: INSERT, CREATE, ALTER, DROP, TRUNCATE, KILL (a
// read-only user can KILL QUERY), SYSTEM, SET, USE, EXPLAIN, FROM-first
// queries, and every other SHOW (SHOW PROCESSLIST reads
// system.processes.query; the others are better served by a SELECT from the
// system table). Exactly one statement: one trailing ';' and trailing
// comments are accepted.
//
// # Input
//
//   - At most [MaxQueryBytes] bytes of valid UTF-8. Empty, blank and
//     comment-only input is denied.
//   - At most [MaxNesting] levels of nesting: brackets, function calls,
//     subqueries, unary operators, CASE, INTERVAL, lambdas, ternaries, and
//     chains of postfix and comparison operators. Deep input cannot exhaust
//     the stack. At most 64 tables in one FROM clause.
//   - No control characters other than tab, CR and LF, anywhere, string
//     literals included. No invisible or direction-changing characters
//     (U+00AD, U+200B–U+200F, U+202A–U+202E, U+2060–U+2064, U+2066–U+2069,
//     U+FEFF) anywhere, so that the audit log shows what runs.
//   - Outside string literals and comments only ASCII is accepted, and quoted
//     identifiers must be ASCII too. Look-alike letters (Cyrillic ѕ in
//     ѕystem) and Unicode spaces are denied.
//   - Comments: -- and "# " or "#!" run to LF only, as in ClickHouse (a CR
//     does not end them). A '#' not followed by a space or '!' is denied:
//     ClickHouse does not read it as a comment. Block comments must be
//     closed and may not nest: ClickHouse 18 ends /* a /* b */ at the first
//     */, newer versions nest, so a nested "/*" would be read two ways. '//'
//     is denied for the same reason. A ';' inside a comment is denied: tools
//     that split statements disagree about it.
//   - Qualified names are written without whitespace or comments around the
//     dots: system.tables, not system . tables or system/**/.tables.
//   - Denied: backslash escapes in quoted identifiers; numbers that run into
//     letters (1_000, 0b1, 1abc) and hexadecimal floats; '$' (heredocs,
//     $-identifiers); query parameters ({name:Type}); '?' placeholders; '@';
//     '\G'; pipe syntax (|>); INTO OUTFILE.
//
// # The catalog: deny by default
//
// The guard allows only what it has reviewed. Three embedded data files
// under catalog/ hold the review:
//
//   - catalog/columns.tsv lists every system table and every column of
//     ClickHouse 18.16 (the Debian package the tests run) through the
//     24.x and 25.x releases, built from ClickHouse's own source
//     (src/Storages/System/StorageSystem*.cpp, src/Interpreters/*Log.cpp)
//     and documentation, each column "safe" or "sensitive" with a
//     one-line reason. Safe: counters, sizes, timings, names of schema and
//     system objects, identifiers, settings names and values. Sensitive:
//     query text, exception and error messages, log lines, paths, URLs,
//     partition and key values, DDL and SQL expressions, dictionary
//     sources, anything that can quote a value or hold a secret. A column
//     name ending in * stands for every column with that prefix
//     (system.metric_log's ProfileEvent_*).
//   - catalog/functions.tsv lists the functions a statement may call
//     (allow, with a category) and the ones it may not (refuse, with the
//     reason); catalog/combinators.tsv the aggregate function combinators.
//
// [CatalogTables], [CatalogColumns], [CatalogFunctions] and
// [CatalogCombinators] return copies; `agent guard catalog` and `agent
// guard functions` print them.
//
// # Tables
//
// Every table read at any depth (FROM, JOIN, subqueries in any expression,
// WITH, ARRAY JOIN, set operations, IN table) must be system.<name> with
// the database written out, and in the catalog: a table the catalog does
// not cover (added by a newer ClickHouse, or a log table renamed in the
// server's configuration) is refused, naming it. A log table renamed by a
// schema upgrade (system.query_log_0) gets the entry of its base name.
// Database names are case-sensitive, so SYSTEM.tables is denied, and
// system table names must be lowercase ASCII. A bare name is denied ("the
// current database is unknown") unless it names a common table expression
// (WITH t AS (SELECT …)) visible at that point. A CTE is visible in the
// SELECT that defines it, after its definition, and in that SELECT's
// subqueries. It is not visible in the other branches of a UNION, where
// some ClickHouse versions read the name as a table.
//
// "x IN name" reads table name unless name is such a CTE. Parentheses and
// aliases do not change that: x IN (name AS n) is the same. A WITH
// expression alias (WITH [1] AS a … x IN a) is read as a table by
// ClickHouse and is denied. "x IN system.t" compares against every column
// of system.t, so it follows the rules for *.
//
// Table functions: only numbers, numbers_mt, zeros, zeros_mt, cluster and
// clusterAllReplicas ([TableFunctions]), with exact names. numbers,
// numbers_mt, zeros and zeros_mt take integer literals. cluster and
// clusterAllReplicas take a cluster name (a word or a string) and a system
// table (system.t or 'system', 't'), then follow the column rules of that
// table. A statement that uses cluster() may not reference a CTE: remote
// servers can receive the CTE name unsubstituted and read it as a table of
// their own current database, as their interserver user (ClickHouse issue
// 23865). A function call in an expression whose name is a table function
// (url, file, s3, …) is denied.
//
// # Columns
//
// Every identifier must be one of:
//   - a safe catalog column of a system table the SELECT reads (or a
//     subcolumn of one: ProfileEvents.keys, a tuple's element);
//   - an alias of the same SELECT, a lambda parameter, a CTE, or a column
//     of a subquery, CTE or table function, whose own columns are checked
//     where they are defined;
//   - an alias or column of an enclosing SELECT, only when no system table
//     of the inner SELECT may have a column of that name.
//
// Anything else is refused: a sensitive column with its reason, a column
// the catalog does not cover "not in the guard's catalog", an unknown name
// "not a column of any table the query reads".
//
// On top of that a check by name, deliberately wider than ClickHouse's
// name resolution, refuses every identifier with a dot-separated part
// that, compared case-insensitively, is an unsafe column of any system
// table read anywhere in the statement. That covers the select list,
// WHERE, JOIN ON, USING, ORDER BY, LIMIT BY, window specs, function and
// lambda arguments, and WITH expressions, which ClickHouse substitutes into
// subqueries. So SELECT x FROM (SELECT query AS x FROM system.query_log) is
// denied, and so is a lambda parameter named query used in a statement that
// reads system.query_log. An identifier that names a whole table with
// unsafe columns (SELECT q FROM system.query_log AS q) is denied; an
// expression alias of the same SELECT exempts the implicit name of a table
// read without AS (count() AS parts FROM system.parts … ORDER BY parts).
//
// # The server's columns
//
// [Check] assumes the server has exactly the catalog's columns. The agent
// uses a [Guard] made with [NewGuard] from the server's own list
// (system.columns, re-read every 30 s): then a column the server has and
// the catalog does not cover is unsafe too, so neither * nor a name nor an
// alias can reach it, and * over a table whose server columns the agent
// has not read yet is refused.
//
// # *
//
// *, t.* and COLUMNS(…) expand to every column the server has, so they are
// allowed only when all of these hold, and refused otherwise with the list
// of the columns to drop and of the safe columns to name instead:
//   - every unsafe column of the table (sensitive in the catalog, or on the
//     server and not in it; ALIAS columns, which * does not expand to,
//     excepted) is named, exactly, by an EXCEPT that comes before any APPLY
//     (APPLY renames the columns);
//   - the table is the only one in its FROM, because joined column names
//     get qualified and may escape EXCEPT (use a subquery instead).
//
// COLUMNS('regex') is allowed only when such an EXCEPT covers every unsafe
// column. REPLACE does not count as removing a column. count(*) reads no
// column. ClickHouse 18.16 has no EXCEPT: there, name the columns.
//
// # Functions
//
// Every function call, including quoted names, parametric aggregates,
// window functions and APPLY(f), must name an allowed function of the
// catalog: exactly, or in any case for the ones ClickHouse matches
// case-insensitively. An aggregate function followed by allowed
// combinators (countIf, sumArrayIf, uniqExactState) is allowed when its
// base is. Refused, with the catalog's reason: dictionaries and Join
// tables (dict*, joinGet*), settings (getSetting, getServerSetting),
// files, URLs, models and the network, introspection, side effects and
// stalls (sleep, logTrace), the functional forms of IN, internal functions
// (names starting with '_'). Any other name is refused as not in the
// catalog. exists(…) must take a subquery. arrayReduce,
// arrayReduceInRanges and initializeAggregation must name their aggregate
// function with a string literal that passes the same catalog.
//
// # Extending the catalog for a new ClickHouse release
//
//  1. Run TestCatalogAgainstClickHouse against the new server (it reads
//     the running server's system.columns; point internal/chtest at the
//     new clickhouse-server binary). It logs every table and column the
//     catalog does not cover; the guard refuses them until reviewed.
//  2. For each, read its definition in ClickHouse's source for that
//     release (getColumnsDescription of the StorageSystem class or the log
//     element) and add a line to catalog/columns.tsv: safe only if it
//     cannot quote a value from customer rows and holds no secret; when in
//     doubt, sensitive. TestCatalogWellFormed refuses a safe column whose
//     name looks like text, a path or an expression unless it is added to
//     reviewedSafe with why.
//  3. New functions: add them to catalog/functions.tsv as allow (with a
//     category) only if they compute from their arguments alone; refuse
//     with a reason anything that reads outside the query's own tables.
//  4. Add the statements engineers will run to the allowed corpus, and the
//     new columns' leaks to the denied corpus.
//
// # Settings and formats
//
// SETTINGS, wherever they appear (any SELECT, after FORMAT, after
// DESCRIBE), must be in [Settings] with a literal value within its
// limits. The settings the agent forces ([ForcedSettings]) are denied with
// their own reason, and so is everything else (readonly, log_queries,
// allow_introspection_functions, send_logs_level, max_rows_to_read,
// format_display_secrets_in_show_and_select, output_format_schema, …).
// Setting names are case-sensitive. FORMAT must be in [Formats],
// compared case-insensitively. Formats that read schema or template files
// (Template, CustomSeparated, Protobuf, CapnProto, Regexp, …) are denied.
//
// [Settings], [Formats] and [ForcedSettings], like the catalog functions,
// return copies: the guard's rules cannot be changed at run time.
package sqlguard
