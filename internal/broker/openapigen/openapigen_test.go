package openapigen

import (
	"encoding/json"
	"reflect"
	"slices"
	"testing"
	"time"
)

// sample is a type with every case the generator distinguishes.
type sample struct {
	Name    string            `json:"name"`
	Note    string            `json:"note,omitempty"`
	When    time.Time         `json:"when,omitzero"`
	Tags    []string          `json:"tags"`
	Labels  map[string]string `json:"labels,omitempty"`
	Child   *child            `json:"child,omitempty"`
	Raw     json.RawMessage   `json:"raw"`
	Count   uint64            `json:"count"`
	Ignored string            `json:"-"`
	//lint:ignore U1000 an unexported field the generator must skip
	internal string
	embedded
}

type child struct {
	Up *child `json:"up,omitempty"`
}

type embedded struct {
	Flat bool `json:"flat"`
}

func TestRef(t *testing.T) {
	g := &Generator{
		Docs:    Docs{"openapigen.sample": "A sample.", "openapigen.sample.Name": "Its name."},
		Overlay: map[string]Schema{"sample.tags": {"items": Schema{"enum": []any{"a"}}}, "sample.nope": {"enum": []any{"x"}}},
	}
	ref := g.Ref(reflect.TypeFor[sample]())
	if ref["$ref"] != "#/components/schemas/sample" {
		t.Fatalf("Ref(sample) = %v, want a $ref", ref)
	}
	s := g.Schemas()["sample"]
	props := s["properties"].(Schema)
	if got, want := s["required"], []string{"name", "tags", "raw", "count", "flat"}; !slices.Equal(got.([]string), want) {
		t.Errorf("required = %v, want %v", got, want)
	}
	for name, want := range map[string]any{
		"name":   Schema{"type": "string", "description": "Its name."},
		"tags":   Schema{"type": []any{"array", "null"}, "items": Schema{"type": "string", "enum": []any{"a"}}},
		"when":   Schema{"type": "string", "format": "date-time"},
		"labels": Schema{"type": "object", "additionalProperties": Schema{"type": "string"}},
		"child":  Schema{"$ref": "#/components/schemas/child"},
		"raw":    Schema{},
		"count":  Schema{"type": "integer", "minimum": 0},
		"flat":   Schema{"type": "boolean"},
	} {
		if !reflect.DeepEqual(props[name], want) {
			t.Errorf("property %s = %#v, want %#v", name, props[name], want)
		}
	}
	for _, name := range []string{"Ignored", "internal", "embedded"} {
		if _, ok := props[name]; ok {
			t.Errorf("property %s is described; encoding/json does not write it", name)
		}
	}
	if s["description"] != "A sample." || s["additionalProperties"] != false {
		t.Errorf("sample = %v, want its doc and no other properties", s)
	}
	if _, ok := g.Schemas()["child"]["properties"].(Schema)["up"]; !ok {
		t.Error("a type referring to itself is not described")
	}
	if un := g.Unused(); !slices.Equal(un, []string{"sample.nope"}) {
		t.Errorf("Unused() = %v, want the overlay that matched nothing", un)
	}
}
