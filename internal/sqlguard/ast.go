package sqlguard

// The syntax tree is deliberately small: the analysis needs to know which
// tables are read, which identifiers are referenced, which functions are
// called, and what every subexpression is, not what the query computes.

type nodeKind uint8

const (
	nIdent    nodeKind = iota // a column reference or name: parts
	nLiteral                  // a number, string, NULL, TRUE or FALSE: val
	nStar                     // *, t.* or COLUMNS(…): star
	nFunc                     // a function call: val (name), params, args, over
	nLambda                   // x -> body: parts (parameters), args[0] (body)
	nSubquery                 // (SELECT …): sub
	nOp                       // an operator: val, args; "in" family has args[1] as the right side
	nAlias                    // args[0] AS val
	nCast                     // args[0] :: val (type), CAST(x AS T)
	nTuple                    // (a, b): args
	nArray                    // [a, b]: args
)

type node struct {
	kind   nodeKind
	val    string
	parts  []string
	args   []*node
	params []*node // parameters of a parametric aggregate: quantile(0.9)(x)
	sub    *selectUnion
	star   *starInfo
	over   *windowSpec
	pos    int
	// distinct marks f(DISTINCT …): count(DISTINCT *) compares whole rows.
	distinct bool
}

// starInfo describes *, t.* and COLUMNS(…) with their EXCEPT, REPLACE and
// APPLY modifiers.
type starInfo struct {
	qual    []string // t in t.*; nil for a bare *
	columns bool     // COLUMNS(…)
	regex   bool     // COLUMNS('regex'): which columns it matches is unknown
	list    []*node  // COLUMNS(a, b): plain column references
	// except holds the plain names removed by EXCEPT before any APPLY
	// renamed the columns.
	except      []string
	exceptRegex bool
	exprs       []*node  // expressions in REPLACE and APPLY(lambda)
	applyFuncs  []string // function names in APPLY(f)
}

// bare reports whether this is a plain * with no qualifier or modifier.
func (st *starInfo) bare() bool {
	return st.qual == nil && !st.columns && len(st.except) == 0 && !st.exceptRegex &&
		len(st.exprs) == 0 && len(st.applyFuncs) == 0
}

type windowSpec struct {
	exprs []*node // PARTITION BY, ORDER BY, WITH FILL and frame bound expressions
}

// selectUnion is one or more SELECTs joined by UNION, EXCEPT or INTERSECT;
// parenthesised unions are flattened into it.
type selectUnion struct {
	selects []*selectQuery
}

type selectQuery struct {
	with     []withItem
	list     []*node     // the select list
	exprs    []*node     // every other expression evaluated in this SELECT's scope
	from     []*tableRef // FROM, comma joins and JOINs in order
	settings []setting
}

// withItem is a common table expression (sub set) or an expression alias.
type withItem struct {
	name string
	cols []string // WITH name (a, b) AS (…): the columns it declares
	sub  *selectUnion
	expr *node
}

type refKind uint8

const (
	refTable refKind = iota
	refSubquery
	refFunc
)

type tableRef struct {
	kind  refKind
	parts []string // refTable: the name as written
	sub   *selectUnion
	fn    string
	args  []*node
	alias string
	pos   int
}

type setting struct {
	name  string
	value token
	neg   bool
	pos   int
}

type statement struct {
	kind     string // select, describe, exists, show_tables, show_create
	query    *selectUnion
	table    []string // describe, exists, show_create: the table as written
	tablePos int
	format   string
	settings []setting
}
