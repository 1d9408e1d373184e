package sqlguard

import (
	"strings"
	"unicode/utf8"
)

// parser is a recursive-descent parser over the tokens of one statement.
// It panics with a *denial on anything it does not accept; Check recovers.
// Every construct that recurses calls push, so nesting is bounded by
// MaxNesting and deep input cannot exhaust the stack.
type parser struct {
	toks []token
	pos  int
	nest int
}

func (p *parser) peek() token { return p.toks[p.pos] }

func (p *parser) peekAt(k int) token {
	if p.pos+k < len(p.toks) {
		return p.toks[p.pos+k]
	}
	return p.toks[len(p.toks)-1]
}

func (p *parser) next() token {
	t := p.toks[p.pos]
	if t.kind != tEOF {
		p.pos++
	}
	return t
}

func (p *parser) prevEnd() int {
	if p.pos == 0 {
		return 0
	}
	return p.toks[p.pos-1].end
}

func isKw(t token, kw string) bool   { return t.kind == tWord && strings.EqualFold(t.val, kw) }
func isPunct(t token, s string) bool { return t.kind == tPunct && t.val == s }

func (p *parser) isKw(kw string) bool   { return isKw(p.peek(), kw) }
func (p *parser) isPunct(s string) bool { return isPunct(p.peek(), s) }
func (p *parser) isAnyKw(kws ...string) bool {
	for _, k := range kws {
		if p.isKw(k) {
			return true
		}
	}
	return false
}

func (p *parser) acceptKw(kw string) bool {
	if p.isKw(kw) {
		p.pos++
		return true
	}
	return false
}

func (p *parser) acceptPunct(s string) bool {
	if p.isPunct(s) {
		p.pos++
		return true
	}
	return false
}

func (p *parser) expectKw(kw string) {
	if !p.acceptKw(kw) {
		p.fail(kw)
	}
}

func (p *parser) expectPunct(s string) {
	if !p.acceptPunct(s) {
		p.fail("'" + s + "'")
	}
}

func (p *parser) fail(want string) { p.failAt(p.peek(), want) }

// failAt denies the statement at token t, which may have been consumed.
func (p *parser) failAt(t token, want string) {
	near := clip(t.String(), 40)
	panic(deny("cannot parse the query at offset %d near %s: expected %s (the guard denies what it cannot parse)", t.pos, near, want))
}

// clip shortens s to about n bytes without splitting a character.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

func (p *parser) push() {
	p.nest++
	if p.nest > MaxNesting {
		panic(deny("nesting deeper than %d levels at offset %d", MaxNesting, p.peek().pos))
	}
}

func (p *parser) pop() { p.nest-- }

// reserved words end an expression in a list: they cannot be an alias
// without AS.
var reserved = setOf([]string{
	"FROM", "WHERE", "PREWHERE", "GROUP", "HAVING", "ORDER", "LIMIT", "OFFSET", "FETCH",
	"SETTINGS", "FORMAT", "UNION", "EXCEPT", "INTERSECT", "INTO", "WINDOW", "QUALIFY",
	"JOIN", "INNER", "LEFT", "RIGHT", "FULL", "CROSS", "OUTER", "GLOBAL", "LOCAL", "ANY",
	"ALL", "ASOF", "SEMI", "ANTI", "PASTE", "ARRAY", "ON", "USING", "FINAL", "SAMPLE",
	"AS", "AND", "OR", "NOT", "IN", "IS", "LIKE", "ILIKE", "REGEXP", "BETWEEN", "ASC",
	"DESC", "ASCENDING", "DESCENDING", "NULLS", "COLLATE", "WITH", "SELECT", "CASE",
	"WHEN", "THEN", "ELSE", "END", "OVER", "FILTER", "INTERPOLATE", "DIV", "MOD",
	"APPLY", "REPLACE", "RESPECT", "IGNORE", "ONLY", "PARALLEL",
}, true)

var joinWords = setOf([]string{
	"GLOBAL", "LOCAL", "ANY", "ALL", "ASOF", "SEMI", "ANTI", "INNER", "LEFT", "RIGHT",
	"FULL", "CROSS", "PASTE", "OUTER", "ONLY",
}, true)

var intervalUnits = setOf([]string{
	"NANOSECOND", "MICROSECOND", "MILLISECOND", "SECOND", "MINUTE", "HOUR", "DAY", "WEEK",
	"MONTH", "QUARTER", "YEAR", "NANOSECONDS", "MICROSECONDS", "MILLISECONDS", "SECONDS",
	"MINUTES", "HOURS", "DAYS", "WEEKS", "MONTHS", "QUARTERS", "YEARS",
}, true)

// statementDenials give the reason for statements that are never allowed.
var statementDenials = map[string]string{
	"KILL":     "KILL statements are not allowed (a read-only user can still KILL QUERY)",
	"SET":      "SET statements are not allowed; give allowed settings in a SETTINGS clause",
	"USE":      "USE statements are not allowed; name tables as system.<table>",
	"EXPLAIN":  "EXPLAIN statements are not allowed; run the SELECT itself",
	"SYSTEM":   "SYSTEM statements are not allowed: they act on the server",
	"FROM":     "statements starting with FROM are not supported; write SELECT … FROM",
	"VALUES":   "VALUES statements are not supported",
	"WATCH":    "WATCH statements are not allowed: they never end",
	"GRANT":    "GRANT statements are not allowed: they change access",
	"REVOKE":   "REVOKE statements are not allowed: they change access",
	"TRUNCATE": "TRUNCATE statements are not allowed: they delete data",
	"DROP":     "DROP statements are not allowed: they delete data",
	"DELETE":   "DELETE statements are not allowed: they delete data",
}

func upper(s string) string { return strings.ToUpper(s) }

// lower does not allocate for a name that is already lowercase, as most
// identifiers are.
func lower(s string) string { return strings.ToLower(s) }

// inFold looks s up, ASCII case-insensitively, in a set with lowercase
// keys, without allocating.
func inFold(set map[string]bool, s string) bool {
	var buf [24]byte
	if len(s) > len(buf) {
		return set[strings.ToLower(s)]
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[i] = c
	}
	return set[string(buf[:len(s)])]
}

func parseStatement(toks []token) *statement {
	p := &parser{toks: toks}
	st := p.statement()
	if p.acceptPunct(";") {
		if p.peek().kind != tEOF {
			panic(deny("multiple statements are not allowed (offset %d)", p.peek().pos))
		}
	}
	if p.peek().kind != tEOF {
		p.fail("the end of the statement")
	}
	return st
}

func (p *parser) statement() *statement {
	t := p.peek()
	if p.isPunct("(") || p.isKw("SELECT") || p.isKw("WITH") {
		st := &statement{kind: "select", query: p.selectUnion()}
		p.tail(st)
		return st
	}
	if t.kind != tWord {
		p.fail("a statement")
	}
	kw := upper(t.val)
	switch kw {
	case "DESCRIBE", "DESC":
		p.next()
		p.acceptKw("TABLE")
		st := &statement{kind: "describe"}
		st.table, st.tablePos = p.tableName("DESCRIBE")
		p.tail(st)
		return st
	case "EXISTS":
		p.next()
		if p.isAnyKw("TEMPORARY", "DATABASE", "DICTIONARY", "VIEW") {
			panic(deny("EXISTS %s is not allowed; only EXISTS [TABLE] system.<table> is", upper(p.peek().val)))
		}
		p.acceptKw("TABLE")
		st := &statement{kind: "exists"}
		st.table, st.tablePos = p.tableName("EXISTS")
		p.tail(st)
		return st
	case "SHOW":
		return p.show()
	}
	if r, ok := statementDenials[kw]; ok {
		panic(deny("%s", r))
	}
	if t.kind == tWord && isWordStart(t.val[0]) {
		panic(deny("%s statements are not allowed: only SELECT, DESCRIBE, EXISTS, SHOW TABLES FROM system and SHOW CREATE TABLE are", kw))
	}
	p.fail("a statement")
	return nil
}

// tableName reads the table of DESCRIBE, EXISTS and SHOW CREATE.
func (p *parser) tableName(what string) ([]string, int) {
	t := p.peek()
	if t.kind != tWord && t.kind != tQIdent {
		panic(deny("%s takes a table name such as system.parts, not %s", what, t))
	}
	parts := p.compoundName()
	if p.isPunct("(") {
		panic(deny("%s of a table function is not allowed", what))
	}
	return parts, t.pos
}

func (p *parser) show() *statement {
	p.next()
	t := p.peek()
	switch {
	case isKw(t, "TABLES"):
		p.next()
		if !p.acceptKw("FROM") && !p.acceptKw("IN") {
			panic(deny("SHOW TABLES without FROM system lists the current database, which is unknown; write SHOW TABLES FROM system"))
		}
		d := p.peek()
		if d.kind != tWord && d.kind != tQIdent {
			p.fail("a database name")
		}
		p.next()
		if d.val != "system" {
			if strings.EqualFold(d.val, "system") {
				panic(deny("database %s is not system (database names are case-sensitive)", d.val))
			}
			panic(deny("SHOW TABLES FROM %s is not allowed: only the system database may be listed", d.val))
		}
		st := &statement{kind: "show_tables", table: []string{"system", "tables"}}
		p.acceptKw("NOT")
		if p.acceptKw("LIKE") || p.acceptKw("ILIKE") {
			if t := p.next(); t.kind != tString {
				p.failAt(t, "a string after LIKE")
			}
		}
		if p.acceptKw("LIMIT") {
			if t := p.next(); t.kind != tNumber {
				p.failAt(t, "a number after LIMIT")
			}
		}
		p.tail(st)
		return st
	case isKw(t, "CREATE"):
		p.next()
		if p.peek().kind == tWord && !p.isKw("TABLE") && (p.peekAt(1).kind == tWord || p.peekAt(1).kind == tQIdent) {
			panic(deny("SHOW CREATE %s is not allowed; only SHOW CREATE TABLE system.<table> is", upper(p.peek().val)))
		}
		p.acceptKw("TABLE")
		st := &statement{kind: "show_create"}
		st.table, st.tablePos = p.tableName("SHOW CREATE")
		p.tail(st)
		return st
	case isKw(t, "PROCESSLIST"):
		panic(deny("SHOW PROCESSLIST is not allowed: it reads system.processes.query, other users' query text; select the columns you need from system.processes"))
	case t.kind == tWord:
		panic(deny("SHOW %s is not allowed; only SHOW TABLES FROM system and SHOW CREATE TABLE system.<table> are: select from the system tables instead", upper(t.val)))
	}
	p.fail("TABLES or CREATE")
	return nil
}

// tail reads INTO OUTFILE (denied), FORMAT and SETTINGS after a statement.
func (p *parser) tail(st *statement) {
	for {
		switch {
		case p.isKw("INTO"):
			panic(deny("INTO OUTFILE is not allowed: results go back to the caller only"))
		case p.isKw("FORMAT"):
			if st.format != "" {
				p.fail("one FORMAT")
			}
			p.next()
			t := p.next()
			if t.kind != tWord && t.kind != tQIdent {
				p.failAt(t, "a format name")
			}
			st.format = t.val
		case p.isKw("SETTINGS"):
			p.next()
			st.settings = append(st.settings, p.settingList()...)
		default:
			return
		}
	}
}

func (p *parser) settingList() []setting {
	var out []setting
	for {
		t := p.next()
		if t.kind != tWord {
			p.failAt(t, "a setting name")
		}
		p.expectPunct("=")
		s := setting{name: t.val, pos: t.pos}
		if p.acceptPunct("-") {
			s.neg = true
		}
		v := p.next()
		switch {
		case v.kind == tNumber, v.kind == tString, isKw(v, "TRUE"), isKw(v, "FALSE"):
		default:
			panic(deny("setting %s: the value must be a number, a string, true or false (offset %d)", t.val, v.pos))
		}
		s.value = v
		out = append(out, s)
		if !p.acceptPunct(",") {
			return out
		}
	}
}

func (p *parser) selectUnion() *selectUnion {
	u := &selectUnion{}
	p.unionItem(u)
	for p.isAnyKw("UNION", "EXCEPT", "INTERSECT") {
		p.next()
		if !p.acceptKw("ALL") {
			p.acceptKw("DISTINCT")
		}
		p.unionItem(u)
	}
	return u
}

func (p *parser) unionItem(u *selectUnion) {
	if p.isPunct("(") {
		p.push()
		p.next()
		inner := p.selectUnion()
		p.expectPunct(")")
		p.pop()
		u.selects = append(u.selects, inner.selects...)
		return
	}
	if !p.isKw("SELECT") && !p.isKw("WITH") {
		p.fail("SELECT")
	}
	u.selects = append(u.selects, p.selectQuery())
}

func (p *parser) selectQuery() *selectQuery {
	q := &selectQuery{}
	if p.acceptKw("WITH") {
		p.withList(q)
	}
	p.expectKw("SELECT")
	if p.acceptKw("DISTINCT") {
		if p.acceptKw("ON") {
			p.expectPunct("(")
			p.push()
			q.exprs = append(q.exprs, p.exprList()...)
			p.expectPunct(")")
			p.pop()
		}
	} else if p.isKw("ALL") && !isPunct(p.peekAt(1), "(") {
		p.next()
	}
	if p.isKw("TOP") && (p.peekAt(1).kind == tNumber || isPunct(p.peekAt(1), "(")) {
		p.next()
		q.exprs = append(q.exprs, p.primary())
		if p.isKw("WITH") && isKw(p.peekAt(1), "TIES") {
			p.pos += 2
		}
	}
	for {
		q.list = append(q.list, p.aliased(true))
		if !p.acceptPunct(",") {
			break
		}
	}
	if p.acceptKw("FROM") {
		p.fromClause(q)
	}
	if p.acceptKw("PREWHERE") {
		q.exprs = append(q.exprs, p.expr())
	}
	if p.acceptKw("WHERE") {
		q.exprs = append(q.exprs, p.expr())
	}
	if p.acceptKw("GROUP") {
		p.expectKw("BY")
		switch {
		case p.isKw("ALL") && !isPunct(p.peekAt(1), "("):
			p.next()
		case p.isKw("GROUPING") && isKw(p.peekAt(1), "SETS"):
			p.pos += 2
			p.expectPunct("(")
			p.push()
			q.exprs = append(q.exprs, p.exprList()...)
			p.expectPunct(")")
			p.pop()
		default:
			q.exprs = append(q.exprs, p.exprList()...)
		}
	}
	for p.isKw("WITH") && (isKw(p.peekAt(1), "ROLLUP") || isKw(p.peekAt(1), "CUBE") || isKw(p.peekAt(1), "TOTALS")) {
		p.pos += 2
	}
	if p.acceptKw("HAVING") {
		q.exprs = append(q.exprs, p.expr())
	}
	if p.acceptKw("WINDOW") {
		for {
			if t := p.next(); t.kind != tWord && t.kind != tQIdent {
				p.fail("a window name")
			}
			p.expectKw("AS")
			q.exprs = append(q.exprs, p.windowSpec().exprs...)
			if !p.acceptPunct(",") {
				break
			}
		}
	}
	if p.acceptKw("QUALIFY") {
		q.exprs = append(q.exprs, p.expr())
	}
	if p.acceptKw("ORDER") {
		p.expectKw("BY")
		if p.isKw("ALL") && !isPunct(p.peekAt(1), "(") {
			p.next()
			if !p.acceptKw("ASC") {
				p.acceptKw("DESC")
			}
		} else {
			q.exprs = append(q.exprs, p.orderList()...)
		}
		if p.acceptKw("INTERPOLATE") {
			if p.acceptPunct("(") {
				p.push()
				for !p.isPunct(")") {
					t := p.next()
					if t.kind != tWord && t.kind != tQIdent {
						p.fail("a column name")
					}
					q.exprs = append(q.exprs, &node{kind: nIdent, parts: []string{t.val}, pos: t.pos})
					if p.acceptKw("AS") {
						q.exprs = append(q.exprs, p.expr())
					}
					if !p.acceptPunct(",") {
						break
					}
				}
				p.expectPunct(")")
				p.pop()
			}
		}
	}
	for i := 0; i < 2 && p.acceptKw("LIMIT"); i++ {
		q.exprs = append(q.exprs, p.expr())
		if p.acceptPunct(",") || p.acceptKw("OFFSET") {
			q.exprs = append(q.exprs, p.expr())
		}
		if p.acceptKw("BY") {
			q.exprs = append(q.exprs, p.exprList()...)
			continue
		}
		if p.isKw("WITH") && isKw(p.peekAt(1), "TIES") {
			p.pos += 2
		}
		break
	}
	if p.acceptKw("OFFSET") {
		q.exprs = append(q.exprs, p.expr())
		if !p.acceptKw("ROWS") {
			p.acceptKw("ROW")
		}
		if p.acceptKw("FETCH") {
			if !p.acceptKw("FIRST") {
				p.expectKw("NEXT")
			}
			q.exprs = append(q.exprs, p.expr())
			if !p.acceptKw("ROWS") {
				p.expectKw("ROW")
			}
			if !p.acceptKw("ONLY") {
				p.expectKw("WITH")
				p.expectKw("TIES")
			}
		}
	}
	if p.acceptKw("SETTINGS") {
		q.settings = p.settingList()
	}
	return q
}

func (p *parser) withList(q *selectQuery) {
	if p.isKw("RECURSIVE") {
		panic(deny("WITH RECURSIVE is not supported"))
	}
	for {
		t := p.peek()
		isName := t.kind == tWord || t.kind == tQIdent
		switch {
		case isName && isKw(p.peekAt(1), "AS") && isPunct(p.peekAt(2), "(") &&
			(isKw(p.peekAt(3), "SELECT") || isKw(p.peekAt(3), "WITH") || isPunct(p.peekAt(3), "(")):
			p.pos += 2
			q.with = append(q.with, withItem{name: t.val, sub: p.parenSelect()})
		case isName && isPunct(p.peekAt(1), "(") && p.cteColumns() > 0:
			n := p.cteColumns()
			var cols []string
			for k := 2; k < n; k += 2 {
				cols = append(cols, p.peekAt(k).val)
			}
			p.pos += n
			p.expectKw("AS")
			q.with = append(q.with, withItem{name: t.val, cols: cols, sub: p.parenSelect()})
		default:
			e := p.expr()
			if !p.acceptKw("AS") {
				panic(deny("WITH %s: an expression in WITH needs an alias (WITH expr AS name) at offset %d", t, t.pos))
			}
			q.with = append(q.with, withItem{name: p.aliasName(), expr: e})
		}
		if !p.acceptPunct(",") {
			return
		}
	}
}

// cteColumns matches "name (a, b) AS (" at the current token and returns
// the number of tokens up to AS, or 0.
func (p *parser) cteColumns() int {
	k := 2
	for {
		t := p.peekAt(k)
		if t.kind != tWord && t.kind != tQIdent {
			return 0
		}
		k++
		if isPunct(p.peekAt(k), ",") {
			k++
			continue
		}
		if isPunct(p.peekAt(k), ")") && isKw(p.peekAt(k+1), "AS") && isPunct(p.peekAt(k+2), "(") {
			return k + 1
		}
		return 0
	}
}

func (p *parser) parenSelect() *selectUnion {
	p.expectPunct("(")
	p.push()
	u := p.selectUnion()
	p.expectPunct(")")
	p.pop()
	return u
}

func (p *parser) aliasName() string {
	t := p.next()
	if t.kind != tWord && t.kind != tQIdent {
		p.failAt(t, "an alias")
	}
	return t.val
}

// aliased reads an expression with an optional alias; implicit allows an
// alias without AS, as in a select list.
func (p *parser) aliased(implicit bool) *node {
	e := p.expr()
	if p.acceptKw("AS") {
		return &node{kind: nAlias, val: p.aliasName(), args: []*node{e}, pos: e.pos}
	}
	if implicit {
		t := p.peek()
		if t.kind == tQIdent || (t.kind == tWord && !inFold(reserved, t.val)) {
			p.next()
			return &node{kind: nAlias, val: t.val, args: []*node{e}, pos: e.pos}
		}
	}
	return e
}

func (p *parser) exprList() []*node {
	var out []*node
	for {
		out = append(out, p.aliased(false))
		if !p.acceptPunct(",") {
			return out
		}
	}
}

func (p *parser) fromClause(q *selectQuery) {
	q.from = append(q.from, p.tableExpr(q))
	for {
		switch {
		case p.acceptPunct(","):
			q.from = append(q.from, p.tableExpr(q))
		case p.isKw("ARRAY") && isKw(p.peekAt(1), "JOIN"),
			(p.isKw("LEFT") || p.isKw("INNER")) && isKw(p.peekAt(1), "ARRAY"):
			if !p.isKw("ARRAY") {
				p.next()
			}
			p.next()
			p.expectKw("JOIN")
			for {
				q.exprs = append(q.exprs, p.aliased(true))
				if !p.acceptPunct(",") {
					break
				}
			}
		case p.isKw("JOIN") || (p.peek().kind == tWord && inFold(joinWords, p.peek().val)):
			for i := 0; !p.isKw("JOIN"); i++ {
				if i >= 4 || !inFold(joinWords, p.peek().val) || p.peek().kind != tWord {
					p.fail("JOIN")
				}
				p.next()
			}
			p.next()
			q.from = append(q.from, p.tableExpr(q))
			if p.acceptKw("ON") {
				q.exprs = append(q.exprs, p.expr())
			} else if p.acceptKw("USING") {
				if p.acceptPunct("(") {
					p.push()
					q.exprs = append(q.exprs, p.exprList()...)
					p.expectPunct(")")
					p.pop()
				} else {
					q.exprs = append(q.exprs, p.exprList()...)
				}
			}
		default:
			return
		}
	}
}

func (p *parser) tableExpr(q *selectQuery) *tableRef {
	t := p.peek()
	ref := &tableRef{pos: t.pos}
	switch {
	case p.isPunct("("):
		if !isKw(p.peekAt(1), "SELECT") && !isKw(p.peekAt(1), "WITH") && !isPunct(p.peekAt(1), "(") {
			p.next()
			p.fail("a subquery")
		}
		ref.kind = refSubquery
		ref.sub = p.parenSelect()
	case t.kind == tWord || t.kind == tQIdent:
		parts := p.compoundName()
		if p.isPunct("(") {
			name := strings.Join(parts, ".")
			if len(parts) != 1 || !tableFuncAllowed[name] {
				panic(deny("table function %s is not allowed: only numbers, numbers_mt, zeros, zeros_mt, and cluster or clusterAllReplicas over a system table are (offset %d)", name, t.pos))
			}
			ref.kind = refFunc
			ref.fn = name
			p.next()
			p.push()
			if !p.isPunct(")") {
				ref.args = p.exprList()
			}
			p.expectPunct(")")
			p.pop()
		} else {
			ref.kind = refTable
			ref.parts = parts
		}
	default:
		p.fail("a table")
	}
	if p.acceptKw("AS") {
		ref.alias = p.aliasName()
	} else if a := p.peek(); a.kind == tQIdent || (a.kind == tWord && !inFold(reserved, a.val)) {
		p.next()
		ref.alias = a.val
	}
	p.acceptKw("FINAL")
	if p.acceptKw("SAMPLE") {
		q.exprs = append(q.exprs, p.expr())
		if p.acceptKw("OFFSET") {
			q.exprs = append(q.exprs, p.expr())
		}
	}
	return ref
}

// compoundName reads a.b.c; the dots must touch the names around them.
func (p *parser) compoundName() []string {
	t := p.next()
	parts := []string{t.val}
	for p.isPunct(".") {
		nx := p.peekAt(1)
		if nx.kind != tWord && nx.kind != tQIdent {
			break
		}
		p.adjacentDot()
		p.pos += 2
		parts = append(parts, nx.val)
	}
	return parts
}

// adjacentDot denies whitespace or comments around the '.' at the current
// token: a name is written a.b.
func (p *parser) adjacentDot() {
	dot := p.peek()
	if p.prevEnd() != dot.pos || p.peekAt(1).pos != dot.end {
		panic(deny("whitespace or a comment around '.' at offset %d: write qualified names without spaces (system.tables)", dot.pos))
	}
}

func (p *parser) windowSpec() *windowSpec {
	p.expectPunct("(")
	p.push()
	w := &windowSpec{}
	if t := p.peek(); (t.kind == tWord || t.kind == tQIdent) && !p.isAnyKw("PARTITION", "ORDER", "ROWS", "RANGE", "GROUPS") {
		p.next()
	}
	if p.acceptKw("PARTITION") {
		p.expectKw("BY")
		w.exprs = append(w.exprs, p.exprList()...)
	}
	if p.acceptKw("ORDER") {
		p.expectKw("BY")
		w.exprs = append(w.exprs, p.orderList()...)
	}
	if p.acceptKw("ROWS") || p.acceptKw("RANGE") || p.acceptKw("GROUPS") {
		if p.acceptKw("BETWEEN") {
			p.frameBound(w)
			p.expectKw("AND")
		}
		p.frameBound(w)
	}
	p.expectPunct(")")
	p.pop()
	return w
}

func (p *parser) frameBound(w *windowSpec) {
	switch {
	case p.acceptKw("UNBOUNDED"):
	case p.acceptKw("CURRENT"):
		p.expectKw("ROW")
		return
	default:
		w.exprs = append(w.exprs, p.concat())
	}
	if !p.acceptKw("PRECEDING") {
		p.expectKw("FOLLOWING")
	}
}

func (p *parser) orderList() []*node {
	var out []*node
	for {
		out = append(out, p.expr())
		if !p.acceptKw("ASC") && !p.acceptKw("DESC") && !p.acceptKw("ASCENDING") {
			p.acceptKw("DESCENDING")
		}
		if p.acceptKw("NULLS") {
			if !p.acceptKw("FIRST") {
				p.expectKw("LAST")
			}
		}
		if p.acceptKw("COLLATE") {
			if p.next().kind != tString {
				p.fail("a collation string")
			}
		}
		if p.isKw("WITH") && isKw(p.peekAt(1), "FILL") {
			p.pos += 2
			for p.acceptKw("FROM") || p.acceptKw("TO") || p.acceptKw("STEP") || p.acceptKw("STALENESS") {
				out = append(out, p.expr())
			}
		}
		if !p.acceptPunct(",") {
			return out
		}
	}
}

// Expressions, from the lowest precedence up.

func (p *parser) expr() *node {
	t := p.peek()
	if t.kind == tWord && isPunct(p.peekAt(1), "->") {
		p.pos += 2
		return p.lambda([]string{t.val}, t.pos)
	}
	if t.kind == tPunct && t.val == "(" {
		if params, k := p.lambdaParams(); k > 0 {
			p.pos += k
			return p.lambda(params, t.pos)
		}
	}
	return p.ternary()
}

func (p *parser) lambda(params []string, pos int) *node {
	p.push()
	body := p.expr()
	p.pop()
	return &node{kind: nLambda, parts: params, args: []*node{body}, pos: pos}
}

// lambdaParams matches "(a, b) ->" at the current token.
func (p *parser) lambdaParams() ([]string, int) {
	var params []string
	k := 1
	for {
		t := p.peekAt(k)
		if t.kind != tWord {
			return nil, 0
		}
		params = append(params, t.val)
		k++
		if isPunct(p.peekAt(k), ",") {
			k++
			continue
		}
		if isPunct(p.peekAt(k), ")") && isPunct(p.peekAt(k+1), "->") {
			return params, k + 2
		}
		return nil, 0
	}
}

func (p *parser) ternary() *node {
	c := p.or()
	if !p.isPunct("?") {
		return c
	}
	p.next()
	p.push()
	a := p.ternary()
	p.expectPunct(":")
	b := p.ternary()
	p.pop()
	return &node{kind: nOp, val: "if", args: []*node{c, a, b}, pos: c.pos}
}

func (p *parser) or() *node {
	x := p.and()
	if !p.isKw("OR") {
		return x
	}
	n := &node{kind: nOp, val: "or", args: []*node{x}, pos: x.pos}
	for p.acceptKw("OR") {
		n.args = append(n.args, p.and())
	}
	return n
}

func (p *parser) and() *node {
	x := p.not()
	if !p.isKw("AND") {
		return x
	}
	n := &node{kind: nOp, val: "and", args: []*node{x}, pos: x.pos}
	for p.acceptKw("AND") {
		n.args = append(n.args, p.not())
	}
	return n
}

func (p *parser) not() *node {
	if p.isKw("NOT") {
		t := p.next()
		p.push()
		x := p.not()
		p.pop()
		return &node{kind: nOp, val: "not", args: []*node{x}, pos: t.pos}
	}
	return p.cmp()
}

var cmpOps = setOf([]string{"=", "==", "!=", "<>", "<", ">", "<=", ">="}, false)

func (p *parser) cmp() *node {
	x := p.concat()
	for i := 0; ; i++ {
		if i > MaxNesting {
			panic(deny("nesting deeper than %d levels at offset %d", MaxNesting, p.peek().pos))
		}
		t := p.peek()
		bin := func(op string, y *node) { x = &node{kind: nOp, val: op, args: []*node{x, y}, pos: x.pos} }
		switch {
		case t.kind == tPunct && cmpOps[t.val]:
			p.next()
			bin(t.val, p.concat())
		case p.isAnyKw("LIKE", "ILIKE", "REGEXP"):
			p.next()
			bin(strings.ToLower(t.val), p.concat())
		case p.isKw("NOT") && (isKw(p.peekAt(1), "LIKE") || isKw(p.peekAt(1), "ILIKE") || isKw(p.peekAt(1), "REGEXP")):
			p.pos += 2
			bin("not like", p.concat())
		case p.isKw("NOT") && isKw(p.peekAt(1), "IN"):
			p.pos += 2
			bin("not in", p.concat())
		case p.isKw("NOT") && isKw(p.peekAt(1), "BETWEEN"), p.isKw("BETWEEN"):
			if p.isKw("NOT") {
				p.next()
			}
			p.next()
			lo := p.concat()
			p.expectKw("AND")
			hi := p.concat()
			x = &node{kind: nOp, val: "between", args: []*node{x, lo, hi}, pos: x.pos}
		case p.isKw("GLOBAL") && (isKw(p.peekAt(1), "IN") || isKw(p.peekAt(1), "NOT") && isKw(p.peekAt(2), "IN")):
			p.next()
			op := "global in"
			if p.acceptKw("NOT") {
				op = "global not in"
			}
			p.expectKw("IN")
			bin(op, p.concat())
		case p.isKw("IN"):
			p.next()
			bin("in", p.concat())
		case p.isKw("IS"):
			p.next()
			p.acceptKw("NOT")
			switch {
			case p.acceptKw("NULL"):
				x = &node{kind: nOp, val: "isNull", args: []*node{x}, pos: x.pos}
			case p.acceptKw("DISTINCT"):
				p.expectKw("FROM")
				bin("is distinct from", p.concat())
			default:
				p.fail("NULL or DISTINCT FROM")
			}
		default:
			return x
		}
	}
}

// The binary operators below are left-associative; a chain of one
// precedence becomes one flat node, so that a long chain does not make a
// deep tree.

func (p *parser) concat() *node {
	x := p.add()
	if !p.isPunct("||") {
		return x
	}
	n := &node{kind: nOp, val: "arith", args: []*node{x}, pos: x.pos}
	for p.acceptPunct("||") {
		n.args = append(n.args, p.add())
	}
	return n
}

func (p *parser) add() *node {
	x := p.mul()
	if !p.isPunct("+") && !p.isPunct("-") {
		return x
	}
	n := &node{kind: nOp, val: "arith", args: []*node{x}, pos: x.pos}
	for p.acceptPunct("+") || p.acceptPunct("-") {
		n.args = append(n.args, p.mul())
	}
	return n
}

func (p *parser) isMulOp() bool {
	t := p.peek()
	if t.kind == tPunct {
		return t.val == "*" || t.val == "/" || t.val == "%"
	}
	return isKw(t, "DIV") || isKw(t, "MOD")
}

func (p *parser) mul() *node {
	x := p.unary()
	if !p.isMulOp() {
		return x
	}
	n := &node{kind: nOp, val: "arith", args: []*node{x}, pos: x.pos}
	for p.isMulOp() {
		p.next()
		n.args = append(n.args, p.unary())
	}
	return n
}

func (p *parser) unary() *node {
	if p.isPunct("-") {
		t := p.next()
		p.push()
		x := p.unary()
		p.pop()
		return &node{kind: nOp, val: "negate", args: []*node{x}, pos: t.pos}
	}
	return p.postfix()
}

func (p *parser) postfix() *node {
	x := p.primary()
	for i := 0; ; i++ {
		if i > MaxNesting {
			panic(deny("nesting deeper than %d levels at offset %d", MaxNesting, p.peek().pos))
		}
		switch {
		case p.isPunct("::"):
			p.next()
			x = &node{kind: nCast, val: p.typeName(), args: []*node{x}, pos: x.pos}
		case p.isPunct("["):
			p.next()
			p.push()
			i := p.expr()
			p.expectPunct("]")
			p.pop()
			x = &node{kind: nOp, val: "[]", args: []*node{x, i}, pos: x.pos}
		case p.isPunct("."):
			nx := p.peekAt(1)
			if nx.kind != tNumber && nx.kind != tWord && nx.kind != tQIdent {
				p.next()
				p.fail("a tuple element")
			}
			p.adjacentDot()
			p.pos += 2
			x = &node{kind: nOp, val: ".", args: []*node{x, {kind: nLiteral, val: nx.val, pos: nx.pos}}, pos: x.pos}
		default:
			return x
		}
	}
}

var typeWords = setOf([]string{"PRECISION", "UNSIGNED", "SIGNED", "VARYING"}, true)

// typeName reads a data type. Types hold names and literals only; they are
// kept as text and never analysed as expressions.
func (p *parser) typeName() string {
	t := p.next()
	if t.kind != tWord && t.kind != tQIdent {
		p.failAt(t, "a type")
	}
	var b strings.Builder
	b.WriteString(t.val)
	for p.peek().kind == tWord && inFold(typeWords, p.peek().val) {
		b.WriteString(" " + p.next().val)
	}
	if !p.isPunct("(") {
		return b.String()
	}
	depth := 0
	for {
		t := p.next()
		switch t.kind {
		case tPunct:
			switch t.val {
			case "(":
				depth++
				p.push()
			case ")":
				depth--
				p.pop()
			case ",", "=", "-":
			default:
				p.failAt(t, "a type argument")
			}
		case tWord:
			if isKw(t, "SELECT") || isKw(t, "WITH") || isKw(t, "FROM") {
				p.failAt(t, "a type argument")
			}
		case tQIdent, tString, tNumber:
		default:
			p.failAt(t, "')'")
		}
		b.WriteString(t.val)
		if depth == 0 {
			return b.String()
		}
	}
}

func (p *parser) primary() *node {
	t := p.peek()
	switch t.kind {
	case tNumber, tString:
		p.next()
		return &node{kind: nLiteral, val: t.val, pos: t.pos}
	case tPunct:
		switch t.val {
		case "(":
			return p.paren()
		case "[":
			p.next()
			p.push()
			n := &node{kind: nArray, pos: t.pos}
			if !p.isPunct("]") {
				n.args = p.exprList()
			}
			p.expectPunct("]")
			p.pop()
			return n
		case "*":
			p.next()
			return p.starMods(&node{kind: nStar, star: &starInfo{}, pos: t.pos})
		case ".":
			// .5 where an operand starts: ClickHouse's lexer gives a '.'
			// after a keyword, and no operand precedes it to access.
			if d := p.peekAt(1); d.kind == tNumber && d.pos == t.end && allDigits(d.val) {
				p.pos += 2
				return &node{kind: nLiteral, val: "0." + d.val, pos: t.pos}
			}
		case "{":
			return p.mapLiteral()
		case "?":
			panic(deny("'?' placeholders are not supported (offset %d)", t.pos))
		}
	case tQIdent:
		return p.identOrCall()
	case tWord:
		switch lower(t.val) {
		case "case":
			return p.caseExpr()
		case "interval":
			return p.interval()
		case "null", "true", "false", "inf", "infinity", "nan":
			if !isPunct(p.peekAt(1), "(") && !isPunct(p.peekAt(1), ".") {
				p.next()
				return &node{kind: nLiteral, val: upper(t.val), pos: t.pos}
			}
		case "date", "timestamp":
			if s := p.peekAt(1); s.kind == tString {
				p.pos += 2
				lit := &node{kind: nLiteral, val: s.val, pos: s.pos}
				return &node{kind: nCast, val: upper(t.val), args: []*node{lit}, pos: t.pos}
			}
		case "select", "with":
			p.fail("an expression (a subquery must be in parentheses)")
		}
		return p.identOrCall()
	}
	p.fail("an expression")
	return nil
}

// mapLiteral reads {'key': value, …} and {}.
func (p *parser) mapLiteral() *node {
	open := p.next()
	p.push()
	defer p.pop()
	n := &node{kind: nArray, pos: open.pos}
	for !p.isPunct("}") {
		if len(n.args) > 0 {
			p.expectPunct(",")
		}
		n.args = append(n.args, p.expr())
		p.expectPunct(":")
		n.args = append(n.args, p.expr())
	}
	p.next()
	return n
}

func (p *parser) paren() *node {
	open := p.next()
	p.push()
	defer p.pop()
	if p.isKw("SELECT") || p.isKw("WITH") {
		sub := p.selectUnion()
		p.expectPunct(")")
		return &node{kind: nSubquery, sub: sub, pos: open.pos}
	}
	if p.acceptPunct(")") {
		return &node{kind: nTuple, pos: open.pos}
	}
	first := p.aliased(false)
	if p.acceptPunct(")") {
		// As in ClickHouse, parentheses around one expression make no node:
		// "x IN (t)" reads table t like "x IN t".
		return first
	}
	n := &node{kind: nTuple, args: []*node{first}, pos: open.pos}
	for p.acceptPunct(",") {
		if p.isPunct(")") {
			break
		}
		n.args = append(n.args, p.aliased(false))
	}
	p.expectPunct(")")
	return n
}

func (p *parser) caseExpr() *node {
	t := p.next()
	p.push()
	defer p.pop()
	n := &node{kind: nOp, val: "case", pos: t.pos}
	if !p.isKw("WHEN") {
		n.args = append(n.args, p.expr())
	}
	if !p.isKw("WHEN") {
		p.fail("WHEN")
	}
	for p.acceptKw("WHEN") {
		n.args = append(n.args, p.expr())
		p.expectKw("THEN")
		n.args = append(n.args, p.expr())
	}
	if p.acceptKw("ELSE") {
		n.args = append(n.args, p.expr())
	}
	p.expectKw("END")
	return n
}

func (p *parser) interval() *node {
	t := p.next()
	p.push()
	defer p.pop()
	x := p.unary()
	if p.peek().kind == tWord && inFold(intervalUnits, p.peek().val) {
		p.next()
	} else if x.kind != nLiteral || p.toks[p.pos-1].kind != tString {
		p.fail("an interval unit such as DAY")
	}
	return &node{kind: nOp, val: "interval", args: []*node{x}, pos: t.pos}
}

func (p *parser) identOrCall() *node {
	t := p.next()
	if p.isPunct("(") {
		return p.call(t)
	}
	n := &node{kind: nIdent, parts: []string{t.val}, pos: t.pos}
	for p.isPunct(".") {
		nx := p.peekAt(1)
		switch {
		case isPunct(nx, "*"):
			p.adjacentDot()
			p.pos += 2
			return p.starMods(&node{kind: nStar, star: &starInfo{qual: n.parts}, pos: t.pos})
		case isKw(nx, "COLUMNS") && isPunct(p.peekAt(2), "("):
			p.adjacentDot()
			p.pos += 2
			m := p.columnsMatcher(t.pos)
			m.star.qual = n.parts
			return p.starMods(m)
		case nx.kind == tWord || nx.kind == tQIdent:
			p.adjacentDot()
			p.pos += 2
			n.parts = append(n.parts, nx.val)
			continue
		}
		break
	}
	if p.isPunct("(") {
		panic(deny("function names cannot be qualified (%s at offset %d)", strings.Join(n.parts, "."), t.pos))
	}
	return n
}

// call reads a function call; the name token is consumed and the current
// token is '('.
func (p *parser) call(name token) *node {
	if name.kind == tWord {
		switch lower(name.val) {
		case "cast":
			return p.castCall(name)
		case "extract":
			if p.peekAt(1).kind == tWord && isKw(p.peekAt(2), "FROM") {
				p.next()
				p.push()
				p.pos += 2
				x := p.expr()
				p.expectPunct(")")
				p.pop()
				return &node{kind: nFunc, val: name.val, args: []*node{x}, pos: name.pos}
			}
		case "substring", "substr", "trim":
			return p.fromCall(name)
		case "columns":
			return p.starMods(p.columnsMatcher(name.pos))
		}
	}
	p.next()
	p.push()
	n := &node{kind: nFunc, val: name.val, pos: name.pos}
	n.args, n.distinct = p.callArgs()
	p.expectPunct(")")
	p.pop()
	if p.isPunct("(") {
		p.next()
		p.push()
		n.params = n.args
		n.args, n.distinct = p.callArgs()
		p.expectPunct(")")
		p.pop()
	}
	if (p.isKw("RESPECT") || p.isKw("IGNORE")) && isKw(p.peekAt(1), "NULLS") {
		p.pos += 2
	}
	if p.isKw("FILTER") && isPunct(p.peekAt(1), "(") {
		p.pos += 2
		p.push()
		p.expectKw("WHERE")
		n.args = append(n.args, p.expr())
		p.expectPunct(")")
		p.pop()
	}
	if p.acceptKw("OVER") {
		if p.isPunct("(") {
			n.over = p.windowSpec()
		} else if t := p.next(); t.kind != tWord && t.kind != tQIdent {
			p.failAt(t, "a window name or (")
		}
	}
	// position(needle IN haystack) is SQL syntax for position(haystack, needle).
	if strings.EqualFold(name.val, "position") && len(n.args) == 1 && n.args[0].kind == nOp && n.args[0].val == "in" {
		n.args = []*node{n.args[0].args[1], n.args[0].args[0]}
	}
	return n
}

// callArgs reads the arguments of a call and whether they start with
// DISTINCT.
func (p *parser) callArgs() ([]*node, bool) {
	if p.isPunct(")") {
		return nil, false
	}
	distinct := false
	if (p.isKw("DISTINCT") || p.isKw("ALL")) && !isPunct(p.peekAt(1), ")") && !isPunct(p.peekAt(1), ",") {
		distinct = p.isKw("DISTINCT")
		p.next()
	}
	if p.isKw("SELECT") || p.isKw("WITH") {
		t := p.peek()
		return []*node{{kind: nSubquery, sub: p.selectUnion(), pos: t.pos}}, distinct
	}
	return p.exprList(), distinct
}

func (p *parser) castCall(name token) *node {
	p.next()
	p.push()
	defer p.pop()
	x := p.expr()
	var n *node
	switch {
	case p.acceptKw("AS"):
		n = &node{kind: nCast, val: p.typeName(), args: []*node{x}, pos: name.pos}
	case p.acceptPunct(","):
		n = &node{kind: nFunc, val: name.val, args: []*node{x, p.expr()}, pos: name.pos}
	default:
		p.fail("AS or ','")
	}
	p.expectPunct(")")
	return n
}

// fromCall reads substring(x FROM a FOR b) and trim([BOTH|LEADING|TRAILING]
// [chars] FROM s) as well as their plain forms.
func (p *parser) fromCall(name token) *node {
	p.next()
	p.push()
	defer p.pop()
	n := &node{kind: nFunc, val: name.val, pos: name.pos}
	if p.isAnyKw("BOTH", "LEADING", "TRAILING") && !isPunct(p.peekAt(1), ")") && !isPunct(p.peekAt(1), ",") {
		p.next()
	}
	if !p.acceptKw("FROM") {
		n.args = append(n.args, p.expr())
		if !p.acceptKw("FROM") {
			for p.acceptPunct(",") {
				n.args = append(n.args, p.aliased(false))
			}
			p.expectPunct(")")
			return n
		}
	}
	n.args = append(n.args, p.expr())
	if p.acceptKw("FOR") {
		n.args = append(n.args, p.expr())
	}
	p.expectPunct(")")
	return n
}

// columnsMatcher reads COLUMNS('regex') or COLUMNS(a, b); the current token
// is '('.
func (p *parser) columnsMatcher(pos int) *node {
	p.expectPunct("(")
	p.push()
	st := &starInfo{columns: true}
	if !p.isPunct(")") {
		for _, e := range p.exprList() {
			switch e.kind {
			case nIdent:
				st.list = append(st.list, e)
			case nLiteral:
				st.regex = true
			default:
				panic(deny("COLUMNS(…) takes a regular expression or column names (offset %d)", e.pos))
			}
		}
	}
	p.expectPunct(")")
	p.pop()
	return &node{kind: nStar, star: st, pos: pos}
}

// starMods reads the EXCEPT, REPLACE and APPLY modifiers after *, t.* or
// COLUMNS(…).
func (p *parser) starMods(n *node) *node {
	st := n.star
	applied := false
	for {
		switch {
		case p.isKw("EXCEPT"):
			nx := p.peekAt(1)
			if isKw(nx, "SELECT") || isKw(nx, "WITH") ||
				isPunct(nx, "(") && (isKw(p.peekAt(2), "SELECT") || isKw(p.peekAt(2), "WITH") || isPunct(p.peekAt(2), "(")) {
				return n // a set operation
			}
			p.next()
			p.acceptKw("STRICT")
			paren := p.acceptPunct("(")
			if paren {
				p.push()
			}
			for {
				t := p.next()
				switch {
				case t.kind == tString:
					st.exceptRegex = true
				case t.kind == tWord || t.kind == tQIdent:
					if p.isPunct(".") {
						// A qualified name: not counted as removing anything.
						p.pos--
						p.compoundName()
					} else if !applied {
						st.except = append(st.except, t.val)
					}
				default:
					p.failAt(t, "a column name after EXCEPT")
				}
				if !paren || !p.acceptPunct(",") {
					break
				}
			}
			if paren {
				p.expectPunct(")")
				p.pop()
			}
		case p.isKw("REPLACE"):
			p.next()
			p.acceptKw("STRICT")
			paren := p.acceptPunct("(")
			if paren {
				p.push()
			}
			for {
				st.exprs = append(st.exprs, p.expr())
				p.expectKw("AS")
				p.aliasName()
				if !paren || !p.acceptPunct(",") {
					break
				}
			}
			if paren {
				p.expectPunct(")")
				p.pop()
			}
		case p.isKw("APPLY"):
			p.next()
			applied = true
			if p.acceptPunct("(") {
				p.push()
				if t := p.peek(); (t.kind == tWord || t.kind == tQIdent) && isPunct(p.peekAt(1), ")") {
					st.applyFuncs = append(st.applyFuncs, t.val)
					p.next()
				} else {
					st.exprs = append(st.exprs, p.expr())
				}
				p.expectPunct(")")
				p.pop()
			} else {
				t := p.next()
				if t.kind != tWord && t.kind != tQIdent {
					p.failAt(t, "a function after APPLY")
				}
				st.applyFuncs = append(st.applyFuncs, t.val)
			}
		default:
			return n
		}
	}
}
