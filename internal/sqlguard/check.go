package sqlguard

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Verdict is the guard's decision on one statement.
type Verdict struct {
	// Allow is true when the statement may run.
	Allow bool
	// Reason explains a denial to a person, e.g. "table default.secret is
	// not a system table"; empty when allowed.
	Reason string
	// Kind is select, describe, exists, show_tables or show_create for an
	// allowed statement; for a denied one it is set when known.
	Kind string
	// Tables lists every table read, as system.x, sorted and deduplicated.
	Tables []string
	// Columns lists every column read, as system.x.col where it resolves to
	// one table, as a bare name where it does not, and as system.x.* for
	// * and COLUMNS(…); sorted and deduplicated.
	Columns []string
	// Settings holds the SETTINGS given in the statement, wherever they
	// appear, with values as ClickHouse reads them (true is 1); nil if none.
	Settings map[string]string
	// Format is the FORMAT given, "" if none.
	Format string
}

// Check decides whether sql may run, assuming the server has exactly the
// catalog's columns (see [Guard] for a guard that knows the server). A
// denial is a Verdict with Allow false and a Reason, and a nil error; the
// error is only for internal failures, and then the verdict denies too.
func Check(sql string) (Verdict, error) { return offline.Check(sql) }

// offline is the guard for the catalog's columns; set once the catalog is
// loaded.
var offline *Guard

// Check decides whether sql may run against the server g knows. A denial
// is a Verdict with Allow false and a Reason, and a nil error; the error is
// only for internal failures, and then the verdict denies too.
func (g *Guard) Check(sql string) (v Verdict, err error) {
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		kind := v.Kind
		if d, ok := r.(*denial); ok {
			v, err = Verdict{Reason: d.reason, Kind: kind}, nil
			return
		}
		v = Verdict{Reason: "internal error in the SQL guard; the query is denied", Kind: kind}
		err = fmt.Errorf("sqlguard: check query: %v", r)
	}()
	if len(sql) > MaxQueryBytes {
		panic(deny("the query is %d bytes; the limit is %d", len(sql), MaxQueryBytes))
	}
	checkRunes(sql)
	toks := lex(sql)
	if toks[0].kind == tEOF {
		panic(deny("empty query"))
	}
	st := parseStatement(toks)
	v.Kind = st.kind
	a := &analyzer{
		g:          g,
		tables:     map[string]bool{},
		columns:    map[string]bool{},
		clusterPos: -1,
		ctePos:     -1,
	}
	a.statement(st)
	if a.clusterPos >= 0 && a.ctePos >= 0 {
		// Remote servers can receive a CTE name unsubstituted and read it
		// as a table of their current database (ClickHouse issue 23865).
		panic(deny("a CTE (offset %d) cannot be used together with cluster() or clusterAllReplicas() (offset %d): remote servers may read the CTE name as a table; repeat the subquery instead", a.ctePos, a.clusterPos))
	}
	a.checkIdents()
	v = Verdict{Allow: true, Kind: st.kind, Tables: sortedKeys(a.tables), Columns: sortedKeys(a.columns), Format: st.format}
	if len(a.settings) > 0 {
		v.Settings = a.settings
	}
	return v, nil
}

func sortedKeys(m map[string]bool) []string {
	if len(m) == 0 {
		return nil
	}
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// analyzer walks a parsed statement, resolving tables and recording every
// identifier. Denied columns are checked at the end, by name, against every
// system table the statement reads: see the package documentation.
type analyzer struct {
	g        *Guard
	tables   map[string]bool
	columns  map[string]bool
	settings map[string]string
	idents   []identUse
	// order lists the tables read in order of first read, so that reasons
	// are stable; unsafe holds their unsafe columns by lowercased name.
	order  []string
	unsafe []map[string]unsafeCol
	// clusterPos and ctePos are the offsets of the first cluster() table
	// function and the first CTE reference, or -1: the two are not combined.
	clusterPos, ctePos int
	lambdas            []string
	// inAlias holds the aliases whose expressions are being walked: in
	// "sum(rows) AS rows", rows inside sum is the column.
	inAlias []string
	depth   int
}

type identUse struct {
	parts []string
	pos   int
}

type scope struct {
	parent *scope
	ctes   map[string]*cte
	// cteLimit, when not negative, hides this scope's CTEs defined at or
	// after that position in WITH: while a WITH expression is analysed only
	// the CTEs before it are visible, as in ClickHouse, which otherwise reads
	// the name as a table.
	cteLimit int
	sources  []*source
	aliases  map[string]bool
	// plainStar is set once a * without modifiers has been checked over
	// these sources: the answer cannot change.
	plainStar bool
}

type cte struct {
	index int // position in the WITH list
	cols  []string
}

type source struct {
	starKey string // table + ".*", for Verdict.Columns
	alias   string
	table   string   // system.x for a system table (also through cluster()), "" otherwise
	name    string   // x, for a system table written without an alias
	cols    []string // output names of a subquery or CTE; nil when unknown
}

func (s *scope) lookupCTE(name string) *cte {
	for ; s != nil; s = s.parent {
		if c, ok := s.ctes[name]; ok && (s.cteLimit < 0 || c.index < s.cteLimit) {
			return c
		}
	}
	return nil
}

// lookupSource finds the source a qualifier names, in this scope or an
// enclosing one.
func (s *scope) lookupSource(qual []string) *source {
	for ; s != nil; s = s.parent {
		for _, src := range s.sources {
			switch len(qual) {
			case 1:
				if src.alias == qual[0] || (src.alias == "" && src.name == qual[0] && src.table != "") {
					return src
				}
			case 2:
				if qual[0] == "system" && src.table == "system."+qual[1] {
					return src
				}
			}
		}
	}
	return nil
}

func (s *scope) isAlias(name string) bool {
	for ; s != nil; s = s.parent {
		if s.aliases[name] {
			return true
		}
	}
	return false
}

// maxSources bounds the tables of one FROM clause, which keeps name
// resolution linear in the size of the statement.
const maxSources = 64

func (a *analyzer) enter(pos int) {
	a.depth++
	if a.depth > 4*MaxNesting {
		panic(deny("nesting deeper than %d levels at offset %d", MaxNesting, pos))
	}
}

func (a *analyzer) leave() { a.depth-- }

func (a *analyzer) statement(st *statement) {
	for _, s := range st.settings {
		a.setting(s)
	}
	if st.format != "" && !formatsAllowed[strings.ToLower(st.format)] {
		panic(deny("format %s is not allowed; allowed formats include TabSeparated, CSV, JSON, JSONEachRow, Pretty, Vertical, RowBinary and Native", st.format))
	}
	switch st.kind {
	case "select":
		a.union(st.query, nil)
	case "show_tables":
		a.readTable("system.tables")
		a.columns["system.tables.name"] = true
	default:
		table := a.systemTable(st.table, st.tablePos)
		a.readTable(table)
	}
}

func (a *analyzer) useCTE(pos int) {
	if a.ctePos < 0 {
		a.ctePos = pos
	}
}

func (a *analyzer) readTable(table string) {
	if !a.tables[table] {
		a.tables[table] = true
		a.order = append(a.order, table)
		_, d := a.g.unsafeOf(table)
		a.unsafe = append(a.unsafe, d)
	}
}

// systemTable validates a table name as written and returns system.x.
func (a *analyzer) systemTable(parts []string, pos int) string {
	switch len(parts) {
	case 1:
		panic(deny("table %s has no database: the current database is unknown; write system.%s (offset %d)", parts[0], parts[0], pos))
	case 2:
	default:
		panic(deny("table name %s has too many parts (offset %d)", strings.Join(parts, "."), pos))
	}
	db, t := parts[0], parts[1]
	if db != "system" {
		if strings.EqualFold(db, "system") {
			panic(deny("database %s is not system (database names are case-sensitive) (offset %d)", db, pos))
		}
		panic(deny("table %s.%s is not a system table (offset %d)", db, t, pos))
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			panic(deny("system table name %q is not lowercase ASCII letters, digits and '_' (offset %d)", t, pos))
		}
	}
	if t == "" {
		panic(deny("empty table name (offset %d)", pos))
	}
	if lookupTable("system."+t) == nil {
		panic(deny("table system.%s is not in the guard's catalog, which covers the system tables of ClickHouse 18.16 to 25.x: a table it has not reviewed is refused (offset %d)", t, pos))
	}
	return "system." + t
}

// union analyses each SELECT of a union and returns the output names of the
// first.
func (a *analyzer) union(u *selectUnion, parent *scope) []string {
	var cols []string
	for i, q := range u.selects {
		c := a.selectQuery(q, parent)
		if i == 0 {
			cols = c
		}
	}
	return cols
}

func (a *analyzer) selectQuery(q *selectQuery, parent *scope) []string {
	a.enter(0)
	defer a.leave()
	s := &scope{parent: parent, aliases: map[string]bool{}, cteLimit: -1}
	for i, w := range q.with {
		if w.sub != nil {
			cols := a.union(w.sub, s)
			if w.cols != nil {
				cols = w.cols
			}
			if s.ctes == nil {
				s.ctes = map[string]*cte{}
			}
			s.ctes[w.name] = &cte{index: i, cols: cols}
		} else {
			s.aliases[w.name] = true
		}
	}
	if len(q.from) > maxSources {
		panic(deny("more than %d tables in one FROM clause", maxSources))
	}
	for _, ref := range q.from {
		s.sources = append(s.sources, a.tableRef(ref, s))
	}
	for _, e := range q.list {
		collectAliases(e, s.aliases)
	}
	for _, e := range q.exprs {
		collectAliases(e, s.aliases)
	}
	for i, w := range q.with {
		if w.expr != nil {
			s.cteLimit = i
			a.expr(w.expr, s)
			s.cteLimit = -1
		}
	}
	for _, e := range q.list {
		a.expr(e, s)
	}
	for _, e := range q.exprs {
		a.expr(e, s)
	}
	for _, st := range q.settings {
		a.setting(st)
	}
	cols := make([]string, 0, len(q.list))
	for _, e := range q.list {
		switch e.kind {
		case nAlias:
			cols = append(cols, e.val)
		case nIdent:
			cols = append(cols, e.parts[len(e.parts)-1])
		case nStar:
			return nil // unknown
		default:
			cols = append(cols, "")
		}
	}
	return cols
}

// collectAliases records the aliases defined in e (not inside subqueries,
// which have their own scope).
func collectAliases(e *node, into map[string]bool) {
	if e == nil {
		return
	}
	// "name AS name" keeps the column's name; it is not a new alias.
	if e.kind == nAlias && !(e.args[0].kind == nIdent && e.args[0].parts[len(e.args[0].parts)-1] == e.val) {
		into[e.val] = true
	}
	if e.kind == nSubquery {
		return
	}
	for _, c := range e.args {
		collectAliases(c, into)
	}
	for _, c := range e.params {
		collectAliases(c, into)
	}
}

func (a *analyzer) tableRef(ref *tableRef, s *scope) *source {
	src := &source{alias: ref.alias}
	switch ref.kind {
	case refSubquery:
		src.cols = a.union(ref.sub, s)
	case refTable:
		if len(ref.parts) == 1 {
			if c := s.lookupCTE(ref.parts[0]); c != nil {
				a.useCTE(ref.pos)
				src.cols = c.cols
				if src.alias == "" {
					src.alias = ref.parts[0]
				}
				return src
			}
		}
		src.table = a.systemTable(ref.parts, ref.pos)
		src.name = ref.parts[1]
		src.starKey = src.table + ".*"
		a.readTable(src.table)
	case refFunc:
		a.tableFunction(ref, src)
	}
	return src
}

func (a *analyzer) tableFunction(ref *tableRef, src *source) {
	switch ref.fn {
	case "numbers", "numbers_mt", "zeros", "zeros_mt":
		max := 3
		if strings.HasPrefix(ref.fn, "zeros") {
			max = 1
		}
		if len(ref.args) == 0 || len(ref.args) > max {
			panic(deny("table function %s takes 1 to %d integer literals (offset %d)", ref.fn, max, ref.pos))
		}
		for _, arg := range ref.args {
			if arg.kind != nLiteral || !isUint(arg.val) {
				panic(deny("table function %s takes integer literals only (offset %d)", ref.fn, ref.pos))
			}
		}
		src.cols = []string{"number"}
		if ref.fn[0] == 'z' {
			src.cols = []string{"zero"}
		}
	case "cluster", "clusterAllReplicas":
		if a.clusterPos < 0 {
			a.clusterPos = ref.pos
		}
		args := ref.args
		if len(args) < 2 || len(args) > 3 || !constName(args[0]) {
			panic(deny("%s takes a cluster name and a system table: %s('cluster', system.table) (offset %d)", ref.fn, ref.fn, ref.pos))
		}
		var parts []string
		switch {
		case len(args) == 2 && args[1].kind == nIdent:
			parts = args[1].parts
		case len(args) == 3 && constName(args[1]) && constName(args[2]):
			parts = []string{nameOf(args[1]), nameOf(args[2])}
		default:
			panic(deny("%s takes a cluster name and a system table: %s('cluster', system.table); a sharding key or other arguments are not accepted (offset %d)", ref.fn, ref.fn, ref.pos))
		}
		src.table = a.systemTable(parts, ref.pos)
		src.name = parts[1]
		src.starKey = src.table + ".*"
		a.readTable(src.table)
	default:
		panic(deny("table function %s is not allowed (offset %d)", ref.fn, ref.pos))
	}
}

// constName reports whether n is a bare word or a string literal without
// escapes, as cluster names and table names in cluster(…) are written.
func constName(n *node) bool {
	if n.kind == nIdent && len(n.parts) == 1 {
		return true
	}
	return n.kind == nLiteral && n.val != "" && !strings.ContainsAny(n.val, "\\\x00") && n.val != "NULL" && n.val != "TRUE" && n.val != "FALSE" && !isNumberText(n.val)
}

func nameOf(n *node) string {
	if n.kind == nIdent {
		return n.parts[0]
	}
	return n.val
}

func isNumberText(s string) bool { return s != "" && (isDigit(s[0]) || s[0] == '.' || s[0] == '-') }

func isUint(s string) bool {
	if strings.HasPrefix(s, "0x") || strings.HasPrefix(s, "0X") {
		_, err := strconv.ParseUint(s[2:], 16, 64)
		return err == nil
	}
	_, err := strconv.ParseUint(s, 10, 64)
	return err == nil
}

func (a *analyzer) expr(n *node, s *scope) {
	if n == nil {
		return
	}
	a.enter(n.pos)
	defer a.leave()
	switch n.kind {
	case nIdent:
		a.ident(n, s)
		return
	case nStar:
		a.star(n, s)
		return
	case nSubquery:
		a.union(n.sub, s)
		return
	case nLambda:
		mark := len(a.lambdas)
		a.lambdas = append(a.lambdas, n.parts...)
		a.expr(n.args[0], s)
		a.lambdas = a.lambdas[:mark]
		return
	case nFunc:
		a.function(n, s)
		return
	case nAlias:
		a.inAlias = append(a.inAlias, n.val)
		a.expr(n.args[0], s)
		a.inAlias = a.inAlias[:len(a.inAlias)-1]
		return
	case nOp:
		switch n.val {
		case "in", "not in", "global in", "global not in":
			a.expr(n.args[0], s)
			a.inRight(n.args[1], s)
			return
		}
	}
	for _, c := range n.args {
		a.expr(c, s)
	}
}

// inRight analyses the right side of IN, where a name is a table.
func (a *analyzer) inRight(n *node, s *scope) {
	for n.kind == nAlias {
		n = n.args[0]
	}
	switch n.kind {
	case nIdent:
		if len(n.parts) == 1 && s.lookupCTE(n.parts[0]) != nil {
			a.useCTE(n.pos)
			return
		}
		if len(n.parts) == 1 {
			panic(deny("IN %s: %s is read as a table in the current database, which is unknown; use a subquery, a literal list or a CTE (offset %d)", n.parts[0], n.parts[0], n.pos))
		}
		table := a.systemTable(n.parts, n.pos)
		a.readTable(table)
		a.starOver(table, nil, false, 1, n.pos, "IN "+table)
		a.columns[table+".*"] = true
	case nFunc:
		// Newer ClickHouse may read a table function here; no list of their
		// names is complete, so only tuple(…) and array(…) are accepted.
		if !strings.EqualFold(n.val, "tuple") && !strings.EqualFold(n.val, "array") {
			panic(deny("IN %s(…): the right side of IN may be a subquery, a list or a CTE, not a function call, which may be a table function (offset %d)", n.val, n.pos))
		}
		a.expr(n, s)
	default:
		a.expr(n, s)
	}
}

func (a *analyzer) function(n *node, s *scope) {
	if tableFuncNames[strings.ToLower(n.val)] {
		panic(deny("%s is a table function and cannot be called in an expression (offset %d)", n.val, n.pos))
	}
	if r := functionRefused(n.val); r != "" {
		panic(deny("%s (offset %d)", r, n.pos))
	}
	if strings.EqualFold(n.val, "exists") && (len(n.args) != 1 || n.args[0].kind != nSubquery) {
		panic(deny("exists(…) takes a subquery (offset %d)", n.pos))
	}
	switch strings.ToLower(n.val) {
	case "arrayreduce", "arrayreduceinranges", "initializeaggregation":
		// The aggregate function is named by a string: it passes the
		// same catalog as a call.
		if len(n.args) == 0 || n.args[0].kind != nLiteral || isNumberText(n.args[0].val) {
			panic(deny("%s takes the name of an aggregate function as a string literal first (offset %d)", n.val, n.pos))
		}
		agg := n.args[0].val
		if i := strings.IndexByte(agg, '('); i > 0 {
			agg = agg[:i] // quantile(0.9): the parameters are literals
		}
		if r := aggregateRefused(agg); r != "" {
			panic(deny("%s('%s', …): %s (offset %d)", n.val, n.args[0].val, r, n.pos))
		}
	}
	for _, c := range n.params {
		a.expr(c, s)
	}
	count := strings.EqualFold(n.val, "count") && !n.distinct
	for _, c := range n.args {
		if count && c.kind == nStar && c.star.bare() {
			continue // count(*) reads no column
		}
		a.expr(c, s)
	}
	if n.over != nil {
		for _, c := range n.over.exprs {
			a.expr(c, s)
		}
	}
}

func (a *analyzer) ident(n *node, s *scope) {
	a.idents = append(a.idents, identUse{parts: n.parts, pos: n.pos})
	if len(n.parts) <= 2 {
		// A name that is a whole table with columns that are not safe. An
		// expression alias of the same SELECT exempts the implicit name of
		// a table read without AS (count() AS parts FROM system.parts …
		// ORDER BY parts), which ClickHouse resolves to the alias. It does
		// not exempt a table alias written out (FROM system.query_log AS q
		// beside 1 AS q): that ambiguity is deliberate, and which of the
		// two ClickHouse picks has changed between versions.
		lambda := len(n.parts) == 1 && a.isLambda(n.parts[0])
		alias := len(n.parts) == 1 && s.aliases[n.parts[0]] && !contains(a.inAlias, n.parts[0])
		if src := s.lookupSource(n.parts); src != nil && src.table != "" && !lambda && (!alias || src.alias != "") {
			if unsafe, _ := a.g.unsafeOf(src.table); len(unsafe) > 0 || !a.g.serverKnows(src.table) {
				panic(deny("%s names the whole table %s, whose columns may hold customer data (offset %d)", strings.Join(n.parts, "."), src.table, n.pos))
			}
		}
	}
	if col := a.resolve(n.parts, n.pos, s); col != "" {
		a.columns[col] = true
	}
}

func (a *analyzer) isLambda(name string) bool {
	for _, l := range a.lambdas {
		if l == name {
			return true
		}
	}
	return false
}

// resolve finds what an identifier reads and denies it unless it is a safe
// catalog column of a system table in scope, an alias, a lambda parameter
// or a column of a subquery, CTE or table function (whose own columns are
// checked where they are defined). It returns the name Verdict.Columns
// records: "" for what is not a system table's column.
func (a *analyzer) resolve(parts []string, pos int, s *scope) string {
	if len(parts) >= 2 {
		if src := s.lookupSource(parts[:1]); src != nil {
			if src.table == "" {
				return ""
			}
			return a.column(src.table, parts[1:], pos)
		}
		if len(parts) >= 3 {
			if src := s.lookupSource(parts[:2]); src != nil && src.table != "" {
				return a.column(src.table, parts[2:], pos)
			}
		}
	}
	name := parts[0]
	if a.isLambda(name) || (s.aliases[name] && !contains(a.inAlias, name)) || s.lookupCTE(name) != nil {
		return ""
	}
	// Innermost scope first, as ClickHouse resolves names. Where a scope
	// reads system tables, the name must be a safe column of one of them,
	// or certainly not a column of any: then it may be an alias or a
	// column of an enclosing scope.
	for sc := s; sc != nil; sc = sc.parent {
		if sc != s && sc.aliases[name] {
			return ""
		}
		var systems []*source
		unknownSub := false
		for _, src := range sc.sources {
			if src.table == "" {
				if src.cols == nil || contains(src.cols, "") {
					unknownSub = true
				} else if contains(src.cols, name) {
					return ""
				}
				continue
			}
			systems = append(systems, src)
		}
		for _, src := range systems {
			if t := lookupTable(src.table); t != nil {
				if _, safe := t.safeColumn(parts); safe && a.g.serverHas(src.table, parts) {
					if len(systems) > 1 {
						return strings.Join(parts, ".")
					}
					return src.table + "." + strings.Join(parts, ".")
				}
			}
		}
		for _, src := range systems {
			if a.g.serverHas(src.table, parts) {
				a.column(src.table, parts, pos) // denies with the reason
			}
		}
		if unknownSub {
			return ""
		}
	}
	if s.isAlias(name) {
		return ""
	}
	a.checkIdent(identUse{parts: parts, pos: pos}) // names a sensitive column, if it does
	panic(deny("%s is not a column of any table the query reads, nor an alias (offset %d)", strings.Join(parts, "."), pos))
}

// column checks a column of a system table named by its parts and returns
// system.x.col, or denies.
func (a *analyzer) column(table string, parts []string, pos int) string {
	name := strings.Join(parts, ".")
	t := lookupTable(table)
	c, safe := t.safeColumn(parts)
	switch {
	case c != nil && !safe:
		panic(deny("column %s of %s is sensitive: %s (offset %d)", c.Name, table, c.Reason, pos))
	case c == nil:
		panic(deny("column %s of %s is not in the guard's catalog: a column it has not reviewed is refused (offset %d)", name, table, pos))
	case !a.g.serverHas(table, parts):
		panic(deny("column %s of %s does not exist on this server (offset %d)", name, table, pos))
	}
	return table + "." + name
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (a *analyzer) star(n *node, s *scope) {
	st := n.star
	for _, c := range st.list {
		a.expr(c, s)
	}
	for _, f := range st.applyFuncs {
		if tableFuncNames[strings.ToLower(f)] {
			panic(deny("APPLY %s: %s is a table function (offset %d)", f, f, n.pos))
		}
		if r := functionRefused(f); r != "" {
			panic(deny("APPLY %s: %s (offset %d)", f, r, n.pos))
		}
	}
	for _, c := range st.exprs {
		a.expr(c, s)
	}
	if st.columns && st.list != nil && !st.regex {
		return // COLUMNS(a, b) reads the names listed
	}
	what := "*"
	if st.columns {
		what = "COLUMNS(…)"
	}
	var targets []*source
	if st.qual == nil {
		plain := !st.columns && len(st.except) == 0 && !st.exceptRegex
		if plain && s.plainStar {
			return
		}
		s.plainStar = plain
		targets = s.sources
	} else {
		src := s.lookupSource(st.qual)
		if src == nil {
			panic(deny("cannot resolve %s.%s: qualify * with a table alias or system.<table> in FROM (offset %d)", strings.Join(st.qual, "."), what, n.pos))
		}
		targets = []*source{src}
		what = strings.Join(st.qual, ".") + "." + what
	}
	for _, src := range targets {
		if src.table == "" {
			continue
		}
		a.starOver(src.table, st, true, len(s.sources), n.pos, what)
		a.columns[src.starKey] = true
	}
}

// starOver checks that expanding every column of table (minus EXCEPT) reads
// only safe columns.
func (a *analyzer) starOver(table string, st *starInfo, canExcept bool, nsources, pos int, what string) {
	if !a.g.serverKnows(table) {
		panic(deny("%s over %s is not allowed: the agent does not know this server's columns of %s yet; list the columns you need (offset %d)", what, table, table, pos))
	}
	names, _ := a.g.unsafeOf(table)
	if len(names) == 0 {
		return
	}
	hint := ""
	if safe := a.g.safeNames(table); len(safe) > 0 {
		if len(safe) > 40 {
			safe = append(safe[:40:40], "…")
		}
		hint = "; its safe columns are " + strings.Join(safe, ", ")
	}
	if !canExcept {
		panic(deny("%s reads every column of %s, including %s, which may hold customer data or are not in the guard's catalog (offset %d)", what, table, strings.Join(names, ", "), pos))
	}
	var missing []string
	for _, d := range names {
		if !contains(st.except, d) {
			missing = append(missing, d)
		}
	}
	if len(missing) > 0 && st.regex {
		panic(deny("%s over %s is not allowed: a regular expression could match %s, which may hold customer data or are not in the guard's catalog; list the columns or add EXCEPT (%s)%s (offset %d)", what, table, strings.Join(missing, ", "), strings.Join(names, ", "), hint, pos))
	}
	if len(missing) > 0 {
		panic(deny("%s over %s would read %s, which may hold customer data or are not in the guard's catalog; list the columns or add EXCEPT (%s)%s (offset %d)", what, table, strings.Join(missing, ", "), strings.Join(names, ", "), hint, pos))
	}
	if nsources > 1 {
		panic(deny("%s over %s in a join: joined column names may be qualified and escape EXCEPT; select from a subquery (SELECT * EXCEPT (…) FROM %s) instead (offset %d)", what, table, table, pos))
	}
}

// checkIdents denies every identifier with a part that is a column of a
// table the statement reads that is not safe: sensitive in the catalog,
// or on the server and not in the catalog.
func (a *analyzer) checkIdents() {
	for _, id := range a.idents {
		a.checkIdent(id)
	}
}

func (a *analyzer) checkIdent(id identUse) {
	var buf [64]byte
	for _, part := range id.parts {
		// A quoted part may hold dots ("ProfileEvents.Names"): check each
		// piece, lowercased in a stack buffer.
		for part != "" {
			piece := part
			if i := strings.IndexByte(part, '.'); i >= 0 {
				piece, part = part[:i], part[i+1:]
			} else {
				part = ""
			}
			var low []byte
			if len(piece) <= len(buf) {
				for i := 0; i < len(piece); i++ {
					c := piece[i]
					if 'A' <= c && c <= 'Z' {
						c += 'a' - 'A'
					}
					buf[i] = c
				}
				low = buf[:len(piece)]
			} else {
				low = []byte(strings.ToLower(piece))
			}
			for i, d := range a.unsafe {
				t := a.order[i]
				c, ok := d[string(low)] // no allocation: the key is only looked up
				switch {
				case ok && c.reason != "":
					panic(deny("column %s of %s is sensitive: %s (offset %d)", c.name, t, c.reason, id.pos))
				case ok:
					panic(deny("column %s of %s is not in the guard's catalog: a column it has not reviewed is refused, here also under another name (offset %d)", c.name, t, id.pos))
				}
			}
		}
	}
}

func (a *analyzer) setting(s setting) {
	if forcedSettings[s.name] {
		panic(deny("setting %s is forced by the agent and cannot be changed (offset %d)", s.name, s.pos))
	}
	rule, ok := allowedSettings[s.name]
	if !ok {
		panic(deny("setting %s is not allowed; allowed settings are output formatting, date and time rendering, max_threads and max_block_size (offset %d)", s.name, s.pos))
	}
	v := s.value
	bad := func(want string) {
		panic(deny("setting %s: %s is not allowed; want %s (offset %d)", s.name, v, want, s.pos))
	}
	var val string
	switch rule.Kind {
	case SettingBool:
		switch {
		case s.neg:
			bad("0, 1, true or false")
		case v.kind == tNumber && (v.val == "0" || v.val == "1"):
			val = v.val
		case isKw(v, "TRUE"):
			val = "1"
		case isKw(v, "FALSE"):
			val = "0"
		default:
			bad("0, 1, true or false")
		}
	case SettingUint:
		want := fmt.Sprintf("an integer from %d to %d", rule.Min, rule.Max)
		if s.neg || v.kind != tNumber {
			bad(want)
		}
		u, err := strconv.ParseUint(v.val, 10, 64)
		if err != nil || u < rule.Min || u > rule.Max {
			bad(want)
		}
		val = v.val
	case SettingEnum:
		if v.kind != tString || v.esc || !contains(rule.Values, v.val) {
			bad("one of '" + strings.Join(rule.Values, "', '") + "'")
		}
		val = v.val
	case SettingChar:
		if v.kind != tString || v.esc || len(v.val) != 1 || v.val[0] < 0x20 || v.val[0] > 0x7e || strings.ContainsAny(v.val, "'\"`\\") {
			bad("one printable character")
		}
		val = v.val
	case SettingTimeZone:
		if v.kind != tString || v.esc || !isTimeZone(v.val) {
			bad("a time zone name such as 'UTC'")
		}
		val = v.val
	}
	if a.settings == nil {
		a.settings = map[string]string{}
	}
	a.settings[s.name] = val
}

func isTimeZone(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(isWordChar(c) || c == '/' || c == '+' || c == '-') {
			return false
		}
	}
	return true
}
