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
// # Tables
//
// Every table read at any depth (FROM, JOIN, subqueries in any expression,
// WITH, ARRAY JOIN, set operations, IN table) must be system.<name> with
// the database written out. Database names are case-sensitive, so
// SYSTEM.tables is denied, and system table names must be lowercase ASCII.
// A bare name is denied ("the current database is unknown") unless it names
// a common table expression (WITH t AS (SELECT …)) visible at that point. A
// CTE is visible in the SELECT that defines it, after its definition, and
// in that SELECT's subqueries. It is not visible in the other branches of
// a UNION, where some ClickHouse versions read the name as a table.
//
// "x IN name" reads table name unless name is such a CTE. Parentheses and
// aliases do not change that: x IN (name AS n) is the same. A WITH
// expression alias (WITH [1] AS a … x IN a) is read as a table by
// ClickHouse and is denied. "x IN system.t" compares against every column
// of system.t, so it follows the rules for *.
//
// Table functions: only [AllowedTableFunctions], with exact names. numbers,
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
// [DeniedColumns] lists, per system table, the columns that can hold
// customer data or secrets: query text, exception and log messages (they
// quote values), DDL (it can carry credentials), mutation commands
// (literals), ZooKeeper node data, trace attributes. Beyond the issue's
// list it adds:
//   - query_thread_log.{exception, stack_trace, log_comment};
//   - query_views_log.{view_query, exception, stack_trace};
//   - part_log.exception and replication_queue.last_exception;
//   - text_log.value1…value10, the arguments of the log message;
//   - databases.engine_full and functions.create_query;
//   - zookeeper.value and zookeeper_log.data (Keeper holds DDL and mutation
//     text);
//   - distributed_ddl_queue.{query, exception_text};
//   - the query text of asynchronous inserts and the query cache;
//   - opentelemetry_span_log.attribute (it carries db.statement);
//   - named_collections.collection, users.auth_params and
//     row_policies.select_filter;
//   - the errors of backups, view refreshes, Kafka consumers and part moves.
//
// A log table renamed by a schema upgrade (system.query_log_0) gets the
// rules of its base name. A table not in [ReviewedTables] or DeniedColumns
// (added by a newer ClickHouse, or a log table renamed in the server's
// configuration) is unreviewed: the names in [UnreviewedDeniedColumns] are
// denied for it, and * over it is denied.
//
// A denied column may not be read anywhere. The check is by name and is
// deliberately wider than ClickHouse's name resolution. An identifier in
// any expression of the statement is denied if any of its dot-separated
// parts, compared case-insensitively, is a denied column of any system
// table read anywhere in the statement. That covers the select list,
// WHERE, JOIN ON, USING, ORDER BY, LIMIT BY, window specs, function and
// lambda arguments, and WITH expressions, which ClickHouse substitutes into
// subqueries. So SELECT x FROM (SELECT query AS x FROM system.query_log) is
// denied, and so is a lambda parameter named query used in a statement that
// reads system.query_log. An identifier that names a whole table with
// denied columns (SELECT q FROM system.query_log AS q) is denied.
//
// *, t.* and COLUMNS(…) over a table with denied columns are allowed only
// when all of these hold:
//   - an EXCEPT that comes before any APPLY (APPLY renames the columns)
//     names every denied column of that table, exactly;
//   - the table is the only one in its FROM, because joined column names get
//     qualified and may escape EXCEPT (use a subquery instead).
//
// COLUMNS('regex') is allowed only when such an EXCEPT covers every denied
// column. REPLACE does not count as removing a column. * over an
// unreviewed table is denied. count(*) reads no column.
//
// # Functions
//
// [DeniedFunctions] and [DeniedFunctionPrefixes] are matched
// case-insensitively against every function call, including quoted names,
// parametric aggregates, window functions and APPLY(f). exists(…) must
// take a subquery.
//
// # Settings and formats
//
// SETTINGS, wherever they appear (any SELECT, after FORMAT, after
// DESCRIBE), must be in [AllowedSettings] with a literal value within its
// limits. The settings the agent forces ([ForcedSettings]) are denied with
// their own reason, and so is everything else (readonly, log_queries,
// allow_introspection_functions, send_logs_level, max_rows_to_read,
// format_display_secrets_in_show_and_select, output_format_schema, …).
// Setting names are case-sensitive. FORMAT must be in [AllowedFormats],
// compared case-insensitively. Formats that read schema or template files
// (Template, CustomSeparated, Protobuf, CapnProto, Regexp, …) are denied.
//
// The policy variables are documentation and a read-only view: Check uses
// copies taken when the package is initialised, so changing them has no
// effect.
package sqlguard
