// Package openapigen builds the JSON Schemas (draft 2020-12, as OpenAPI
// 3.1 uses) of the broker API's OpenAPI document from the Go types the
// broker encodes and decodes: field names, optionality and nullability
// follow encoding/json exactly (json tags, omitempty, omitzero, nil slices
// and maps), descriptions come from the types' doc comments, and what
// reflection cannot know — enums, bounds, formats — is laid over by the
// caller. Only tests and the generator link it: the broker serves the
// document it wrote, never reflects at run time.
package openapigen

import (
	"encoding"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/doc"
	"go/parser"
	"go/token"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"time"
)

// Schema is one JSON Schema, as it is written into the document.
type Schema = map[string]any

// Docs maps a Go type's package-qualified name ("brokerapi.Deployment")
// and its fields' ("brokerapi.Deployment.AgentStatus") to their doc
// comments, as one paragraph.
type Docs map[string]string

// ParseDocs reads the doc comments of the exported types of the Go
// package in dir (its non-test files).
func ParseDocs(dir string) (Docs, error) {
	fset := token.NewFileSet()
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read package %s: %w", dir, err)
	}
	var files []*ast.File
	for _, e := range entries {
		n := e.Name()
		if !strings.HasSuffix(n, ".go") || strings.HasSuffix(n, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, n), nil, parser.ParseComments)
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", n, err)
		}
		files = append(files, f)
	}
	p, err := doc.NewFromFiles(fset, files, "x")
	if err != nil {
		return nil, fmt.Errorf("read docs of %s: %w", dir, err)
	}
	out := Docs{}
	for _, t := range p.Types {
		out[p.Name+"."+t.Name] = paragraph(t.Doc)
		for _, spec := range t.Decl.Specs {
			ts, ok := spec.(*ast.TypeSpec)
			if !ok {
				continue
			}
			st, ok := ts.Type.(*ast.StructType)
			if !ok {
				continue
			}
			for _, f := range st.Fields.List {
				text := f.Doc.Text()
				if text == "" {
					text = f.Comment.Text()
				}
				for _, n := range f.Names {
					if text != "" {
						out[p.Name+"."+ts.Name.Name+"."+n.Name] = paragraph(text)
					}
				}
			}
		}
	}
	return out, nil
}

// paragraph joins a doc comment's lines and drops Go doc links' brackets.
func paragraph(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	return strings.NewReplacer("[", "", "]", "").Replace(s)
}

// Generator turns Go types into schemas under components/schemas.
type Generator struct {
	// Docs give descriptions, keyed by the type's Go name.
	Docs Docs
	// Names renames a type's component ("audit.Event" → "Event"); other
	// types are named by their Go name.
	Names map[string]string
	// Overlay adds keywords to a type's schema ("Deployment") or a
	// property's ("Deployment.agent_status", by its JSON name), replacing
	// what reflection wrote: enums, bounds, formats, patterns, examples.
	Overlay map[string]Schema

	schemas map[string]Schema
	types   map[string]reflect.Type
	used    map[string]bool // overlay keys applied
}

// Schemas returns the components generated so far.
func (g *Generator) Schemas() map[string]Schema { return g.schemas }

// Unused lists the overlay keys that matched no type or property: a
// renamed field would otherwise drop its overlay silently.
func (g *Generator) Unused() []string {
	var out []string
	for k := range g.Overlay {
		if !g.used[k] {
			out = append(out, k)
		}
	}
	return out
}

var (
	timeType      = reflect.TypeFor[time.Time]()
	rawType       = reflect.TypeFor[json.RawMessage]()
	marshalerType = reflect.TypeFor[json.Marshaler]()
	textType      = reflect.TypeFor[encoding.TextMarshaler]()
)

// Ref returns the schema of a value of type t: a $ref to its component
// for a named struct (generating it on first use), inline otherwise. It
// panics on a type encoding/json cannot describe here (channels,
// functions, custom marshalers): the document must not guess.
func (g *Generator) Ref(t reflect.Type) Schema {
	if g.schemas == nil {
		g.schemas, g.types, g.used = map[string]Schema{}, map[string]reflect.Type{}, map[string]bool{}
	}
	switch {
	case t == timeType:
		return Schema{"type": "string", "format": "date-time"}
	case t == rawType:
		return Schema{}
	case t.Kind() == reflect.Pointer:
		return g.Ref(t.Elem())
	case t.Implements(marshalerType) || reflect.PointerTo(t).Implements(marshalerType),
		t.Implements(textType) || reflect.PointerTo(t).Implements(textType):
		panic(fmt.Sprintf("openapigen: %s has its own JSON encoding: describe it by hand", t))
	}
	switch t.Kind() {
	case reflect.String:
		return Schema{"type": "string"}
	case reflect.Bool:
		return Schema{"type": "boolean"}
	case reflect.Int, reflect.Int64:
		return Schema{"type": "integer", "format": "int64"}
	case reflect.Int8, reflect.Int16, reflect.Int32:
		return Schema{"type": "integer", "format": "int32"}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return Schema{"type": "integer", "minimum": 0}
	case reflect.Float32, reflect.Float64:
		return Schema{"type": "number"}
	case reflect.Interface:
		return Schema{}
	case reflect.Slice, reflect.Array:
		return Schema{"type": "array", "items": g.Ref(t.Elem())}
	case reflect.Map:
		if t.Key().Kind() != reflect.String {
			panic(fmt.Sprintf("openapigen: map key of %s is not a string", t))
		}
		return Schema{"type": "object", "additionalProperties": g.Ref(t.Elem())}
	case reflect.Struct:
		if t.Name() == "" {
			return g.object(t, "")
		}
		name := g.name(t)
		if prev, ok := g.types[name]; ok {
			if prev != t {
				panic(fmt.Sprintf("openapigen: %s and %s are both named %s: rename one in Names", prev, t, name))
			}
		} else {
			g.types[name] = t
			g.schemas[name] = nil // placeholder: a type may refer to itself
			g.schemas[name] = g.object(t, name)
		}
		return Schema{"$ref": "#/components/schemas/" + name}
	}
	panic(fmt.Sprintf("openapigen: cannot describe %s", t))
}

func (g *Generator) name(t reflect.Type) string {
	full := t.String() // "brokerapi.Deployment"
	if n, ok := g.Names[full]; ok {
		return n
	}
	return t.Name()
}

// object is a struct's schema: its JSON properties, those never omitted
// required, no others allowed (the broker decodes request bodies refusing
// unknown fields, and answers with exactly these).
func (g *Generator) object(t reflect.Type, name string) Schema {
	props := Schema{}
	var required []string
	g.fields(t, name, props, &required)
	s := Schema{"type": "object", "properties": props, "additionalProperties": false}
	if len(required) > 0 {
		s["required"] = required
	}
	if d := g.Docs[t.String()]; d != "" && name != "" {
		s["description"] = d
	}
	g.overlay(name, s)
	return s
}

func (g *Generator) fields(t reflect.Type, owner string, props Schema, required *[]string) {
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		jname, opts, _ := strings.Cut(tag, ",")
		if f.Anonymous && jname == "" && f.Type.Kind() == reflect.Struct {
			// encoding/json promotes an embedded struct's fields, even
			// of an unexported type.
			g.fields(f.Type, owner, props, required)
			continue
		}
		if !f.IsExported() {
			continue
		}
		if jname == "" {
			jname = f.Name
		}
		omitted := strings.Contains(","+opts+",", ",omitempty,") || strings.Contains(","+opts+",", ",omitzero,")
		s := g.Ref(f.Type)
		if !omitted && nullable(f.Type) {
			// A nil slice, map or pointer encodes as null.
			s = orNull(s)
		}
		if d := g.Docs[t.String()+"."+f.Name]; d != "" {
			s = withDescription(s, d)
		}
		if owner != "" {
			s = g.overlayProperty(owner+"."+jname, s)
		}
		props[jname] = s
		if !omitted {
			*required = append(*required, jname)
		}
	}
}

func nullable(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Slice, reflect.Map, reflect.Pointer, reflect.Interface:
		return t != rawType
	}
	return false
}

// orNull lets s also be null.
func orNull(s Schema) Schema {
	if ty, ok := s["type"].(string); ok {
		out := maps.Clone(s)
		out["type"] = []any{ty, "null"}
		return out
	}
	if len(s) == 0 {
		return s
	}
	return Schema{"anyOf": []any{s, Schema{"type": "null"}}}
}

// withDescription describes s; a $ref keeps its own description apart
// (2020-12 allows keywords beside $ref).
func withDescription(s Schema, d string) Schema {
	out := maps.Clone(s)
	out["description"] = d
	return out
}

func (g *Generator) overlay(key string, s Schema) {
	if o, ok := g.Overlay[key]; ok && key != "" {
		g.used[key] = true
		maps.Copy(s, o)
	}
}

// overlayProperty lays the overlay of key over a property's schema. An
// enum or bound meant for an array's items is written under "items" in
// the overlay; a nullable type keeps "null".
func (g *Generator) overlayProperty(key string, s Schema) Schema {
	o, ok := g.Overlay[key]
	if !ok {
		return s
	}
	g.used[key] = true
	out := maps.Clone(s)
	for k, v := range o {
		if k == "items" {
			items, _ := out["items"].(Schema)
			items = maps.Clone(items)
			maps.Copy(items, v.(Schema))
			out["items"] = items
			continue
		}
		if k == "enum" {
			if ty, ok := out["type"].([]any); ok && len(ty) == 2 && ty[1] == "null" {
				v = append(append([]any{}, v.([]any)...), nil)
			}
		}
		out[k] = v
	}
	return out
}
