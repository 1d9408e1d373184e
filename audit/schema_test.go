package audit

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestFieldClassification: every field of the schema says whether it may
// hold sensitive data, so a new field cannot slip in unclassified.
func TestFieldClassification(t *testing.T) {
	var check func(typ reflect.Type, path string)
	n := 0
	check = func(typ reflect.Type, path string) {
		for i := 0; i < typ.NumField(); i++ {
			f := typ.Field(i)
			n++
			switch c := f.Tag.Get("audit"); c {
			case "safe", "sensitive":
			default:
				t.Errorf("field %s%s has audit classification %q, want safe or sensitive", path, f.Name, c)
			}
			if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeOf(time.Time{}) {
				check(f.Type, path+f.Name+".")
			}
		}
	}
	check(reflect.TypeOf(Event{}), "")
	if n < 15 {
		t.Fatalf("checked only %d fields; the walk is broken", n)
	}
}

func TestValidate(t *testing.T) {
	ok := Event{Version: SchemaVersion, ID: "0190aaaa-0000-7000-8000-000000000001", Time: time.Now(), Type: AgentPaired, Outcome: Success}
	if err := ok.Validate(); err != nil {
		t.Fatalf("Validate(valid) = %v", err)
	}
	for _, tt := range []struct {
		mod  func(*Event)
		want string
	}{
		{func(e *Event) { e.Version = 2 }, "unknown schema version 2"},
		{func(e *Event) { e.ID = "" }, "no id"},
		{func(e *Event) { e.Time = time.Time{} }, "no time"},
		{func(e *Event) { e.Type = "agent.exploded" }, `unknown type "agent.exploded"`},
		{func(e *Event) { e.Outcome = "maybe" }, `outcome "maybe"`},
		{func(e *Event) { e.Source.Kind = "broker" }, `source kind "broker"`},
		{func(e *Event) { e.Source.Kind, e.AgentID = SourceAgent, "a1" }, "does not say which agent and when"},
		{func(e *Event) { e.Source.Kind, e.Source.ReceivedAt = SourceAgent, time.Now() }, "does not say which agent and when"},
		{func(e *Event) { e.Source.ReceivedAt = time.Now() }, "receipt time but no source kind"},
	} {
		e := ok
		tt.mod(&e)
		if err := e.Validate(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Validate = %v, want error containing %q", err, tt.want)
		}
	}
	for _, typ := range []Type{DeploymentCreated, AgentPaired, QueryFinished, BreakglassUsed, AuthFailed} {
		if !typ.Known() {
			t.Errorf("%s is not Known", typ)
		}
	}
}

// TestMarshalCanonical: equal events encode to equal bytes, version first.
func TestMarshalCanonical(t *testing.T) {
	e := Event{Version: 1, ID: "x", Time: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC), Type: QueryFinished, Outcome: Success,
		Details: map[string]any{"rows": 3, "bytes": 120, "duration_ms": 4}}
	a, _ := e.Marshal()
	var back Event
	if err := json.Unmarshal(a, &back); err != nil {
		t.Fatal(err)
	}
	b, _ := back.Marshal()
	if string(a) != string(b) {
		t.Errorf("re-encoding changed bytes:\n%s\n%s", a, b)
	}
	if !strings.HasPrefix(string(a), `{"v":1,`) {
		t.Errorf("encoding %s does not start with the version", a)
	}
}

// TestSourceFieldsHashed: the source kind and receipt time of an
// agent-delivered event are part of its canonical bytes (so the leaf hash
// covers them), and an event without them keeps the bytes it had before
// the fields existed.
func TestSourceFieldsHashed(t *testing.T) {
	e := Event{Version: 1, ID: "x", Time: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC), Type: QueryAllowed, Outcome: Success,
		Source: Source{TailnetNode: "n", IP: "100.64.0.2:1"}}
	old, _ := e.Marshal()
	if want := `{"v":1,"id":"x","time":"2026-11-25T12:00:00Z","type":"query.allowed","actor":{},"source":{"tailnet_node":"n","ip":"100.64.0.2:1"},"outcome":"success"}`; string(old) != want {
		t.Errorf("broker-recorded event = %s, want the version 1 bytes %s", old, want)
	}
	e.AgentID, e.Source.Kind, e.Source.ReceivedAt = "a1", SourceAgent, time.Date(2026, 11, 25, 12, 0, 1, 0, time.UTC)
	if err := e.Validate(); err != nil {
		t.Fatalf("Validate(agent-delivered) = %v", err)
	}
	b, _ := e.Marshal()
	if !strings.Contains(string(b), `"kind":"agent","received_at":"2026-11-25T12:00:01Z"`) {
		t.Errorf("agent-delivered event %s does not carry its source kind and receipt time", b)
	}
	r := e
	r.Source.ReceivedAt = r.Source.ReceivedAt.Add(time.Second)
	b2, _ := r.Marshal()
	if LeafHash(b) == LeafHash(b2) {
		t.Error("changing the receipt time kept the leaf hash")
	}
}
