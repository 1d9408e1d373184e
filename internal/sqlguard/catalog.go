package sqlguard

import (
	"bufio"
	"embed"
	"fmt"
	"sort"
	"strings"
)

// The catalog: every system table, column and function the guard has
// reviewed, with its classification. See the package documentation.
//
//go:embed catalog/columns.tsv catalog/functions.tsv catalog/combinators.tsv
var catalogFS embed.FS

// Column is one column of a system table as the catalog classifies it.
type Column struct {
	// Table is system.<name>.
	Table string
	// Name is the column's name, case-sensitive as ClickHouse spells it.
	// A name ending in '*' stands for every column with that prefix
	// (system.metric_log has one column per profile event).
	Name string
	// Safe is true for columns that cannot quote customer data or hold a
	// secret: counters, sizes, timings, names of schema objects. Only safe
	// columns may be read.
	Safe bool
	// Reason says what the column holds and why it is safe or sensitive.
	Reason string
}

// Function is one function in the catalog.
type Function struct {
	// Name is the function's name as ClickHouse spells it.
	Name string
	// Allowed is true for functions a statement may call.
	Allowed bool
	// Category groups allowed functions (arithmetic, string, aggregate, …);
	// "refused" for the others.
	Category string
	// Reason is a one-line note: what the function does, or why it is
	// refused.
	Reason string
	// CaseInsensitive is true when ClickHouse matches the name in any case.
	CaseInsensitive bool
}

// Combinator is an aggregate function combinator suffix (If, Array, State,
// …) and whether it may follow an allowed aggregate function.
type Combinator struct {
	Suffix  string
	Allowed bool
	Reason  string
}

type catTable struct {
	name     string
	cols     map[string]*Column // by exact name
	order    []*Column          // as listed, patterns included
	prefixes []*Column          // columns written prefix*
	// sensitive lists the sensitive columns, as listed; lower maps every
	// lowercased sensitive name to its column.
	sensitive []*Column
	lower     map[string]*Column
}

var (
	catalog    = map[string]*catTable{}
	catTables  []string
	funcs      = map[string]*Function{} // exact names
	funcsCI    = map[string]*Function{} // lowercased names of case-insensitive functions
	funcList   []*Function
	combs      []*Combinator
	colCount   [2]int // sensitive, safe
	aggregates = map[string]bool{}
)

func init() {
	if err := loadCatalog(); err != nil {
		panic("sqlguard: " + err.Error())
	}
	offline = NewGuard(nil)
}

func loadCatalog() error {
	err := eachLine("catalog/columns.tsv", 4, func(f []string) error {
		table, name, class, reason := f[0], f[1], f[2], f[3]
		if !strings.HasPrefix(table, "system.") || len(table) == len("system.") {
			return fmt.Errorf("table %q is not system.<name>", table)
		}
		if class != "safe" && class != "sensitive" {
			return fmt.Errorf("class %q is not safe or sensitive", class)
		}
		t := catalog[table]
		if t == nil {
			t = &catTable{name: table, cols: map[string]*Column{}, lower: map[string]*Column{}}
			catalog[table] = t
			catTables = append(catTables, table)
		}
		c := &Column{Table: table, Name: name, Safe: class == "safe", Reason: reason}
		if _, dup := t.cols[name]; dup {
			return fmt.Errorf("column %s.%s listed twice", table, name)
		}
		t.cols[name] = c
		t.order = append(t.order, c)
		if strings.HasSuffix(name, "*") {
			t.prefixes = append(t.prefixes, c)
		}
		if c.Safe {
			colCount[1]++
		} else {
			colCount[0]++
			t.sensitive = append(t.sensitive, c)
			t.lower[strings.ToLower(name)] = c
		}
		return nil
	})
	if err != nil {
		return err
	}
	sort.Strings(catTables)
	err = eachLine("catalog/functions.tsv", 4, func(f []string) error {
		fn := &Function{Name: f[0], Allowed: f[1] == "allow", Category: f[2], Reason: f[3]}
		if f[1] != "allow" && f[1] != "refuse" {
			return fmt.Errorf("function %s: class %q is not allow or refuse", f[0], f[1])
		}
		if len(f) > 4 {
			if f[4] != "ci" {
				return fmt.Errorf("function %s: fifth field %q is not ci", f[0], f[4])
			}
			fn.CaseInsensitive = true
		}
		if _, dup := funcs[fn.Name]; dup {
			return fmt.Errorf("function %s listed twice", fn.Name)
		}
		funcs[fn.Name] = fn
		if fn.CaseInsensitive {
			funcsCI[strings.ToLower(fn.Name)] = fn
		}
		if fn.Allowed && fn.Category == "aggregate" {
			aggregates[fn.Name] = true
		}
		funcList = append(funcList, fn)
		return nil
	})
	if err != nil {
		return err
	}
	return eachLine("catalog/combinators.tsv", 3, func(f []string) error {
		if f[1] != "allow" && f[1] != "refuse" {
			return fmt.Errorf("combinator %s: class %q is not allow or refuse", f[0], f[1])
		}
		combs = append(combs, &Combinator{Suffix: f[0], Allowed: f[1] == "allow", Reason: f[2]})
		return nil
	})
}

// eachLine calls fn with the tab-separated fields of every line of an
// embedded file that is not blank or a # comment.
func eachLine(file string, min int, fn func([]string) error) error {
	f, err := catalogFS.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if strings.TrimSpace(line) == "" || line[0] == '#' {
			continue
		}
		fields := strings.Split(line, "\t")
		if len(fields) < min || len(fields) > min+1 {
			return fmt.Errorf("%s:%d: want %d tab-separated fields, got %d", file, n, min, len(fields))
		}
		for _, x := range fields {
			if strings.TrimSpace(x) != x || x == "" {
				return fmt.Errorf("%s:%d: empty field or field with surrounding spaces", file, n)
			}
		}
		if err := fn(fields); err != nil {
			return fmt.Errorf("%s:%d: %w", file, n, err)
		}
	}
	return sc.Err()
}

// CatalogTables lists the system tables in the catalog, sorted.
func CatalogTables() []string { return append([]string(nil), catTables...) }

// CatalogColumns lists the catalog's columns of table (system.<name>) in
// the order ClickHouse declares them; nil for a table the catalog does not
// cover.
func CatalogColumns(table string) []Column {
	t := lookupTable(table)
	if t == nil {
		return nil
	}
	out := make([]Column, len(t.order))
	for i, c := range t.order {
		out[i] = *c
	}
	return out
}

// CatalogFunctions lists every function in the catalog, allowed and
// refused, in the catalog's order.
func CatalogFunctions() []Function {
	out := make([]Function, len(funcList))
	for i, f := range funcList {
		out[i] = *f
	}
	return out
}

// CatalogCombinators lists the aggregate function combinators the catalog
// classifies.
func CatalogCombinators() []Combinator {
	out := make([]Combinator, len(combs))
	for i, c := range combs {
		out[i] = *c
	}
	return out
}

// lookupTable returns the catalog entry of a system table. A log table
// renamed by a schema upgrade (query_log_0, query_log_1, …) gets the entry
// of its base name.
func lookupTable(table string) *catTable {
	if t := catalog[table]; t != nil {
		return t
	}
	if i := strings.LastIndexByte(table, '_'); i > 0 && i < len(table)-1 && allDigits(table[i+1:]) {
		return catalog[table[:i]]
	}
	return nil
}

// column returns the catalog's column of t named name: the exact name, or
// a prefix pattern that matches it.
func (t *catTable) column(name string) *Column {
	if c := t.cols[name]; c != nil {
		return c
	}
	for _, p := range t.prefixes {
		if strings.HasPrefix(name, p.Name[:len(p.Name)-1]) {
			return p
		}
	}
	return nil
}

// safeColumn reports whether the dot-separated parts name a safe column of
// t, or a subcolumn of one (ProfileEvents.keys, a tuple's element).
func (t *catTable) safeColumn(parts []string) (*Column, bool) {
	for i := len(parts); i >= 1; i-- {
		name := parts[0]
		if i > 1 {
			name = strings.Join(parts[:i], ".")
		}
		if c := t.column(name); c != nil {
			return c, c.Safe
		}
	}
	return nil, false
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// lookupFunction finds a function by name: exactly, or case-insensitively
// for functions ClickHouse matches that way.
func lookupFunction(name string) *Function {
	if f := funcs[name]; f != nil {
		return f
	}
	return funcsCI[strings.ToLower(name)]
}

// functionRefused reports why a function may not be called, or "". An
// aggregate function followed by allowed combinators (countIf,
// sumArrayIf, uniqExactState) is allowed when its base is.
func functionRefused(name string) string {
	if f := lookupFunction(name); f != nil {
		if f.Allowed {
			return ""
		}
		return "function " + name + " is refused: " + f.Reason
	}
	if strings.HasPrefix(name, "_") {
		return "function " + name + " is refused: internal functions (names starting with '_') are not callable"
	}
	base := name
	for stripped := true; stripped; {
		stripped = false
		for _, c := range combs {
			if len(base) > len(c.Suffix) && strings.HasSuffix(base, c.Suffix) {
				if !c.Allowed {
					return "function " + name + " is refused: the combinator -" + c.Suffix + " " + c.Reason
				}
				base = base[:len(base)-len(c.Suffix)]
				stripped = true
				if f := lookupFunction(base); f != nil {
					switch {
					case !f.Allowed:
						return "function " + name + " is refused: " + f.Name + " " + f.Reason
					case f.Category != "aggregate":
						return "function " + name + " is not in the guard's catalog: " + f.Name + " is not an aggregate function, so -" + c.Suffix + " does not apply"
					}
					return ""
				}
				break
			}
		}
	}
	return "function " + name + " is not in the guard's catalog of functions, so it is refused; see `agent guard functions` for the functions it allows"
}

// aggregateRefused reports why name may not be used as an aggregate
// function, or "".
func aggregateRefused(name string) string {
	if r := functionRefused(name); r != "" {
		return r
	}
	if f := lookupFunction(name); f != nil && f.Category != "aggregate" {
		return name + " is not an aggregate function"
	}
	return ""
}
