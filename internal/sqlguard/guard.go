package sqlguard

import (
	"sort"
	"strings"
)

// Schema is what a guard knows of the server it guards: the columns each
// system table has there, by table (system.<name>), as listed by
// SELECT table, name, default_kind FROM system.columns WHERE database =
// 'system'. A table missing from a Schema is one whose columns are not
// known yet (a log table created after the list was read).
type Schema map[string][]SchemaColumn

// SchemaColumn is one column of a system table on the server.
type SchemaColumn struct {
	Name string
	// Alias is true for ALIAS columns (default_kind ALIAS), which * does
	// not expand to.
	Alias bool
}

// Guard checks statements for one ClickHouse server. With a nil Schema it
// assumes the server has exactly the catalog's columns, as [Check] does;
// with the server's Schema it also refuses every column the server has
// and the catalog does not cover, wherever * or a name could reach it.
// A Guard is immutable and safe for concurrent use.
type Guard struct {
	schema Schema
	// server maps a table to its server columns; nil when schema is nil.
	server map[string]map[string]bool
	// unsafe lists, per table, the columns * may not expand to: sensitive
	// in the catalog or, with a schema, not safe in it. unsafeLower maps
	// the lowercased names to the column and why.
	unsafe      map[string][]string
	unsafeLower map[string]map[string]unsafeCol
}

type unsafeCol struct {
	name   string
	reason string // "" when the catalog does not cover it
}

// NewGuard returns a guard for a server with schema, or for the catalog's
// columns when schema is nil.
func NewGuard(schema Schema) *Guard {
	g := &Guard{schema: schema, unsafe: map[string][]string{}, unsafeLower: map[string]map[string]unsafeCol{}}
	for _, name := range catTables {
		t := catalog[name]
		if schema != nil {
			if _, known := schema[name]; known {
				continue
			}
		}
		low := map[string]unsafeCol{}
		var list []string
		for _, c := range t.sensitive {
			list = append(list, c.Name)
			low[strings.ToLower(c.Name)] = unsafeCol{c.Name, c.Reason}
		}
		g.unsafe[name], g.unsafeLower[name] = list, low
	}
	if schema == nil {
		return g
	}
	g.server = make(map[string]map[string]bool, len(schema))
	for table, cols := range schema {
		set := make(map[string]bool, len(cols))
		low := map[string]unsafeCol{}
		var list []string
		t := lookupTable(table)
		for _, sc := range cols {
			c := sc.Name
			set[c] = true
			var cc *Column
			if t != nil {
				cc = t.column(c)
			}
			switch {
			case cc == nil:
				low[strings.ToLower(c)] = unsafeCol{c, ""}
			case !cc.Safe:
				low[strings.ToLower(c)] = unsafeCol{c, cc.Reason}
			default:
				continue
			}
			if !sc.Alias {
				list = append(list, c) // * expands to it
			}
		}
		if t != nil {
			// Sensitive names stay refused even where this server lacks
			// them: the check by name is deliberately wide.
			for _, c := range t.sensitive {
				if _, ok := low[strings.ToLower(c.Name)]; !ok {
					low[strings.ToLower(c.Name)] = unsafeCol{c.Name, c.Reason}
				}
			}
		}
		g.server[table] = set
		g.unsafe[table], g.unsafeLower[table] = list, low
	}
	return g
}

// serverKnows reports whether the guard knows the server's columns of
// table: always without a schema (it assumes the catalog's).
func (g *Guard) serverKnows(table string) bool {
	if g.server == nil {
		return true
	}
	_, ok := g.server[table]
	return ok
}

// serverHas reports whether name, or the column it is a subcolumn of, may
// be a column of table on the server.
func (g *Guard) serverHas(table string, parts []string) bool {
	if g.server == nil {
		t := lookupTable(table)
		if t == nil {
			return true
		}
		for i := len(parts); i >= 1; i-- {
			if t.column(strings.Join(parts[:i], ".")) != nil {
				return true
			}
		}
		return false
	}
	cols, ok := g.server[table]
	if !ok {
		return true // unknown: it may
	}
	for i := len(parts); i >= 1; i-- {
		if cols[strings.Join(parts[:i], ".")] {
			return true
		}
	}
	return false
}

// unsafeOf returns the columns of table that * may not expand to, and the
// lowercased map the check by name uses. A log table renamed by a schema
// upgrade (query_log_0) falls back to its base name's entry.
func (g *Guard) unsafeOf(table string) ([]string, map[string]unsafeCol) {
	if l, ok := g.unsafeLower[table]; ok {
		return g.unsafe[table], l
	}
	if t := lookupTable(table); t != nil {
		return g.unsafe[t.name], g.unsafeLower[t.name]
	}
	return nil, nil
}

// safeNames lists the safe catalog columns of table that the server has
// (all of them without a schema), for refusals that suggest what to read.
func (g *Guard) safeNames(table string) []string {
	t := lookupTable(table)
	if t == nil {
		return nil
	}
	var out []string
	if cols, ok := g.server[table]; ok {
		for c := range cols {
			if cc := t.column(c); cc != nil && cc.Safe {
				out = append(out, c)
			}
		}
		sort.Strings(out)
		return out
	}
	for _, c := range t.order {
		if c.Safe && !strings.HasSuffix(c.Name, "*") {
			out = append(out, c.Name)
		}
	}
	return out
}

// Schema returns the server schema the guard was made with (nil for the
// catalog's).
func (g *Guard) Schema() Schema { return g.schema }
