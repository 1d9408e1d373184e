package audit

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
)

const testOrigin = "tether.test/log"

// testEvent returns a realistic event (about 300 bytes stored) whose
// fields vary with i, including strings encoding/json escapes.
func testEvent(i uint64) Event {
	e := Event{
		Version:    SchemaVersion,
		ID:         fmt.Sprintf("0194%04x-5c3b-7d8e-9f01-%012x", i%0x10000, i),
		Time:       time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC).Add(time.Duration(i) * 1234567 * time.Microsecond),
		Type:       Types[i%uint64(len(Types))],
		Actor:      Actor{Subject: "alice@vendor.test", Issuer: "https://idp.vendor.test", Tenant: "vendor", Role: "dba"},
		Deployment: "dep_01942a7e5c3b",
		RequestID:  fmt.Sprintf("req_%08d", i/3),
		Source:     Source{TailnetNode: "alice-laptop", IP: "100.64.0.5"},
		Outcome:    Success,
	}
	switch i % 5 {
	case 0:
		e.GrantID = fmt.Sprintf("gr_%08d", i/7)
		e.Details = map[string]any{"query": "SELECT id, name FROM users WHERE note <> '\"x\"' LIMIT 10", "rows": 10, "bytes": 1234.5, "tags": []any{"a", nil, true}}
	case 1:
		e.Outcome = Failure
		e.Reason = "ticket OPS-1234: \"urgent\"\nsecond line <b>&</b> é"
	case 2:
		e.AgentID = "agent_7"
		e.Actor = Actor{Subject: "agent:7"}
	case 3:
		e.Source = Source{}
		e.Details = map[string]any{"nested": map[string]any{"deep": []any{1, -2.5e-3, map[string]any{}}}}
	}
	return e
}

func mustMarshal(t testing.TB, e Event) []byte {
	t.Helper()
	b, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// exportSpec describes an export for tests.
type exportSpec struct {
	from, to  uint64              // events [from, to)
	every     uint64              // a checkpoint every this many events, and at to
	log       note.Signer         // signs checkpoints
	witnesses []note.Signer       // each cosigns every other checkpoint
	event     func(uint64) []byte // an event's stored bytes; testEvent's by default
}

// build writes the export with an ExportWriter.
func (s exportSpec) build(t testing.TB) []byte {
	t.Helper()
	if s.event == nil {
		s.event = func(i uint64) []byte { return mustMarshal(t, testEvent(i)) }
	}
	tree := NewTree()
	for i := range s.from {
		tree.Append(LeafHash(s.event(i)))
	}
	var buf bytes.Buffer
	ew, err := NewExportWriter(&buf, s.log.Name(), s.from, tree.Prefix())
	if err != nil {
		t.Fatalf("NewExportWriter = %v", err)
	}
	logV := verifierOf(t, s.log)
	ncp := 0
	for i := s.from; i < s.to; i++ {
		raw := s.event(i)
		if err := ew.WriteEvent(i, raw); err != nil {
			t.Fatalf("WriteEvent(%d) = %v", i, err)
		}
		tree.Append(LeafHash(raw))
		if size := i + 1; size%s.every != 0 && size != s.to {
			continue
		}
		c := Checkpoint{Origin: s.log.Name(), Size: tree.Size(), Root: tree.Root(), Time: time.Date(2026, 11, 25, 13, 0, 0, int(i), time.UTC)}
		msg, err := SignCheckpoint(c, s.log)
		if err != nil {
			t.Fatal(err)
		}
		if err := ew.WriteCheckpoint(c.Size, msg); err != nil {
			t.Fatalf("WriteCheckpoint(%d) = %v", c.Size, err)
		}
		if ncp++; ncp%2 == 1 {
			for _, w := range s.witnesses {
				cos, err := Cosign(msg, logV, w)
				if err != nil {
					t.Fatal(err)
				}
				if err := ew.WriteCosignature(c.Size, cos); err != nil {
					t.Fatalf("WriteCosignature(%d) = %v", c.Size, err)
				}
			}
		}
	}
	if err := ew.Close(); err != nil {
		t.Fatalf("ExportWriter.Close() = %v", err)
	}
	return buf.Bytes()
}

// testSigners caches signers: note keys are tied to a signer's verifier by
// name and hash, which verifierOf looks up.
var testSigners sync.Map // note.Signer -> note.Verifier

func signerOf(t testing.TB, name string, seed byte) note.Signer {
	s, v := testKey(t, name, seed)
	testSigners.Store(s, v)
	return s
}

func verifierOf(t testing.TB, s note.Signer) note.Verifier {
	v, ok := testSigners.Load(s)
	if !ok {
		t.Fatalf("no verifier for signer %q", s.Name())
	}
	return v.(note.Verifier)
}

// lines splits an export into lines without their newlines.
func lines(b []byte) [][]byte {
	return bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n"))
}

// join is the inverse of lines.
func join(ls [][]byte) []byte {
	return append(bytes.Join(ls, []byte("\n")), '\n')
}

// lineIndex returns the index in ls of the first line with prefix.
func lineIndex(t testing.TB, ls [][]byte, prefix string) int {
	t.Helper()
	for i, l := range ls {
		if bytes.HasPrefix(l, []byte(prefix)) {
			return i
		}
	}
	t.Fatalf("no line starts with %s", prefix)
	return -1
}

func eventLine(t testing.TB, ls [][]byte, index uint64) int {
	return lineIndex(t, ls, fmt.Sprintf(`{"kind":"event","index":%d,`, index))
}

func checkpointLine(t testing.TB, ls [][]byte, size uint64) int {
	return lineIndex(t, ls, fmt.Sprintf(`{"kind":"checkpoint","size":%d,`, size))
}

// rawEvent returns the offset and length of the event's bytes in an event
// line.
func rawEvent(l []byte) (int, int) {
	i := bytes.Index(l, []byte(`"event":`)) + len(`"event":`)
	return i, len(l) - 1 - i
}

// withEvent returns an event line for index holding raw, with its leaf
// hash.
func withEvent(index uint64, raw []byte) []byte {
	h := LeafHash(raw)
	return fmt.Appendf(nil, `{"kind":"event","index":%d,"leaf_hash":"%s","event":%s}`, index, hex.EncodeToString(h[:]), raw)
}

// testFixture is the export most tests mutate: 50 events, a checkpoint
// every 10, every other one cosigned by two witnesses.
type testFixture struct {
	spec      exportSpec
	logV      note.Verifier
	w1V, w2V  note.Verifier
	otherW1V  note.Verifier // witness.one's name, another key
	otherLogS note.Signer   // the log's name, another key
	export    []byte
	lines     [][]byte
	opts      VerifyOptions
}

func newFixture(t testing.TB) *testFixture {
	t.Helper()
	f := &testFixture{}
	logS := signerOf(t, testOrigin, 1)
	w1S, w2S := signerOf(t, "witness.one", 11), signerOf(t, "witness.two", 12)
	f.logV, f.w1V, f.w2V = verifierOf(t, logS), verifierOf(t, w1S), verifierOf(t, w2S)
	f.otherW1V = verifierOf(t, signerOf(t, "witness.one", 13))
	f.otherLogS = signerOf(t, testOrigin, 2)
	f.spec = exportSpec{from: 0, to: 50, every: 10, log: logS, witnesses: []note.Signer{w1S, w2S}}
	f.export = f.spec.build(t)
	f.lines = lines(f.export)
	f.opts = VerifyOptions{Log: f.logV, Witnesses: []note.Verifier{f.w1V, f.w2V}}
	return f
}

func TestVerifyGood(t *testing.T) {
	f := newFixture(t)
	rep, err := Verify(bytes.NewReader(f.export), f.opts)
	if err != nil {
		t.Fatalf("Verify(good export) = %v", err)
	}
	wantTypes := map[Type]int{}
	for i := range uint64(50) {
		wantTypes[testEvent(i).Type]++
	}
	if rep.Origin != testOrigin || rep.From != 0 || rep.To != 50 || rep.Events != 50 || !maps.Equal(rep.Types, wantTypes) {
		t.Errorf("Verify = %+v, want origin %q, events [0, 50), types %v", rep, testOrigin, wantTypes)
	}
	var sizes []uint64
	for _, c := range rep.Checkpoints {
		sizes = append(sizes, c.Size)
		var want []string
		if c.Size%20 == 10 {
			want = []string{"witness.one", "witness.two"}
		}
		if fmt.Sprint(c.Witnesses) != fmt.Sprint(want) {
			t.Errorf("checkpoint %d witnesses = %q, want %q", c.Size, c.Witnesses, want)
		}
	}
	if fmt.Sprint(sizes) != "[10 20 30 40 50]" {
		t.Errorf("checkpoint sizes = %v, want [10 20 30 40 50]", sizes)
	}
	last := rep.Checkpoints[len(rep.Checkpoints)-1]
	tree := NewTree()
	for i := range uint64(50) {
		tree.Append(LeafHash(mustMarshal(t, testEvent(i))))
	}
	if last.Root != tree.Root() || !last.Time.Equal(time.Date(2026, 11, 25, 13, 0, 0, 49, time.UTC)) {
		t.Errorf("last checkpoint = %+v, want root %x", last, tree.Root())
	}

	// Without witness keys cosignatures are checked, but not reported.
	rep, err = Verify(bytes.NewReader(f.export), VerifyOptions{Log: f.logV})
	if err != nil {
		t.Fatalf("Verify(no witness keys) = %v", err)
	}
	if w := rep.Checkpoints[0].Witnesses; len(w) != 0 {
		t.Errorf("Verify(no witness keys): checkpoint 10 witnesses = %q, want none", w)
	}
	// With one witness key, only that witness is reported.
	rep, err = Verify(bytes.NewReader(f.export), VerifyOptions{Log: f.logV, Witnesses: []note.Verifier{f.w2V}})
	if err != nil {
		t.Fatalf("Verify(one witness key) = %v", err)
	}
	if w := rep.Checkpoints[0].Witnesses; fmt.Sprint(w) != "[witness.two]" {
		t.Errorf("Verify(one witness key): checkpoint 10 witnesses = %q, want [witness.two]", w)
	}
}

func TestVerifyPartial(t *testing.T) {
	f := newFixture(t)
	for _, from := range []uint64{1, 7, 20, 33} {
		spec := f.spec
		spec.from, spec.to = from, 60
		export := spec.build(t)
		rep, err := Verify(bytes.NewReader(export), f.opts)
		if err != nil {
			t.Fatalf("Verify(export from %d) = %v", from, err)
		}
		if rep.From != from || rep.To != 60 || rep.Events != int(60-from) {
			t.Errorf("Verify(export from %d) = events [%d, %d) (%d), want [%d, 60)", from, rep.From, rep.To, rep.Events, from)
		}

		// A prefix that is not the log's fails at the first checkpoint.
		ls := lines(export)
		h := bytes.Index(ls[0], []byte(`"prefix":["`)) + len(`"prefix":["`)
		if ls[0][h] == '0' {
			ls[0][h] = '1'
		} else {
			ls[0][h] = '0'
		}
		_, err = Verify(bytes.NewReader(join(ls)), f.opts)
		if err == nil || !strings.Contains(err.Error(), "prefix") {
			t.Errorf("Verify(export from %d, wrong prefix) = %v, want an error about the prefix", from, err)
		}
	}
}

// verifyFails checks that Verify rejects export with an error containing
// want.
func verifyFails(t *testing.T, name string, export []byte, opts VerifyOptions, want string) {
	t.Helper()
	rep, err := Verify(bytes.NewReader(export), opts)
	if err == nil {
		t.Errorf("%s: Verify = %+v, nil, want error %q", name, rep, want)
		return
	}
	var ve *VerifyError
	if !errors.As(err, &ve) {
		t.Errorf("%s: Verify = %T %v, want a *VerifyError", name, err, err)
	}
	if !strings.Contains(err.Error(), want) {
		t.Errorf("%s: Verify = %v, want error %q", name, err, want)
	}
}

func TestVerifyEditedEvents(t *testing.T) {
	f := newFixture(t)
	edits := 0
	for i := range uint64(50) {
		n := eventLine(t, f.lines, i)
		off, size := rawEvent(f.lines[n])
		raw := f.lines[n][off : off+size]
		// Bytes in structure and inside strings: the first and last
		// bytes, the version, the first quote, colon and comma, bytes
		// inside the id and the type, and the last byte of a value.
		positions := []int{0, size - 1, size - 2, 5, 1, bytes.IndexByte(raw, ':'), bytes.IndexByte(raw, ','),
			bytes.Index(raw, []byte(`"id":"`)) + 8, bytes.Index(raw, []byte(`"type":"`)) + 9, bytes.Index(raw, []byte(`"outcome":"`)) + 12}
		if i == 17 {
			positions = positions[:0]
			for p := range size {
				positions = append(positions, p)
			}
		}
		for _, p := range positions {
			for _, b := range []byte{raw[p] ^ 0x01, ' ', '"', '}'} {
				if b == raw[p] {
					continue
				}
				ls := clone(f.lines)
				ls[n][off+p] = b
				name := fmt.Sprintf("event %d byte %d %q->%q", i, p, raw[p], b)
				rep, err := Verify(bytes.NewReader(join(ls)), f.opts)
				if err == nil {
					t.Fatalf("%s: Verify = %+v, nil, want error", name, rep)
				}
				edits++
			}
		}
	}
	t.Logf("%d edits, all detected", edits)

	// The message names the line and event.
	ls := clone(f.lines)
	n := eventLine(t, ls, 10)
	ls[n][bytes.Index(ls[n], []byte(`"id":"`))+8]++
	want := fmt.Sprintf("line %d (event 10): leaf hash does not match the event's bytes (edited?)", n+1)
	if _, err := Verify(bytes.NewReader(join(ls)), f.opts); err == nil || err.Error() != want {
		t.Errorf("Verify(edited event 10) = %v, want %q", err, want)
	}
}

func clone(ls [][]byte) [][]byte {
	out := make([][]byte, len(ls))
	for i, l := range ls {
		out[i] = bytes.Clone(l)
	}
	return out
}

func TestVerifyDetects(t *testing.T) {
	f := newFixture(t)
	del := func(ls [][]byte, i int) [][]byte { return append(ls[:i:i], ls[i+1:]...) }
	// mutate returns the fixture's lines changed by fn.
	mutate := func(fn func(ls [][]byte) [][]byte) []byte { return join(fn(clone(f.lines))) }
	withSpec := func(fn func(s *exportSpec)) []byte {
		s := f.spec
		fn(&s)
		return s.build(t)
	}
	rehashed := func(index uint64, edit func(raw []byte) []byte) []byte {
		return mutate(func(ls [][]byte) [][]byte {
			n := eventLine(t, ls, index)
			off, size := rawEvent(ls[n])
			ls[n] = withEvent(index, edit(bytes.Clone(ls[n][off:off+size])))
			return ls
		})
	}
	end := len(f.lines) - 1

	for _, tc := range []struct {
		name   string
		export []byte
		opts   *VerifyOptions // f.opts if nil
		want   string
	}{
		// Events dropped, reordered or repeated.
		{"drop first event", mutate(func(ls [][]byte) [][]byte { return del(ls, eventLine(t, ls, 0)) }), nil, "line 2 (event 1): the export starts at event 0: event 0 is missing"},
		{"drop event 5", mutate(func(ls [][]byte) [][]byte { return del(ls, eventLine(t, ls, 5)) }), nil, "(event 6): event 6 follows event 4: event 5 is missing"},
		{"drop event before checkpoint", mutate(func(ls [][]byte) [][]byte { return del(ls, eventLine(t, ls, 19)) }), nil, "checkpoint 20 covers event 19, which is missing"},
		{"drop last event", mutate(func(ls [][]byte) [][]byte { return del(ls, eventLine(t, ls, 49)) }), nil, "checkpoint 50 covers event 49, which is missing"},
		{"drop events 3..5", mutate(func(ls [][]byte) [][]byte {
			n := eventLine(t, ls, 3)
			return append(ls[:n:n], ls[n+3:]...)
		}), nil, "events 3..5 are missing"},
		{"swap events 5 and 6", mutate(func(ls [][]byte) [][]byte {
			a, b := eventLine(t, ls, 5), eventLine(t, ls, 6)
			ls[a], ls[b] = ls[b], ls[a]
			return ls
		}), nil, "event 5 is missing"},
		{"swap events 0 and 9", mutate(func(ls [][]byte) [][]byte {
			a, b := eventLine(t, ls, 0), eventLine(t, ls, 9)
			ls[a], ls[b] = ls[b], ls[a]
			return ls
		}), nil, "events 0..8 are missing"},
		{"repeat event 7", mutate(func(ls [][]byte) [][]byte {
			n := eventLine(t, ls, 7)
			return append(ls[:n+1:n+1], ls[n:]...)
		}), nil, "event 7 follows event 7: out of order or repeated"},
		{"event index changed and rehashed", mutate(func(ls [][]byte) [][]byte {
			n := eventLine(t, ls, 12)
			ls[n] = bytes.Replace(ls[n], []byte(`"index":12,`), []byte(`"index":13,`), 1)
			return ls
		}), nil, "event 12 is missing"},

		// Event bytes changed along with their leaf hash: the checkpoint
		// catches it.
		{"edited and rehashed", rehashed(23, func(raw []byte) []byte { return bytes.Replace(raw, []byte("alice"), []byte("mallory"), 1) }),
			nil, "checkpoint 30: root does not match events 20..29"},
		{"event inserted and rehashed", mutate(func(ls [][]byte) [][]byte {
			n := eventLine(t, ls, 0)
			return append(ls[:n:n], append([][]byte{withEvent(0, mustMarshal(t, testEvent(99)))}, ls[n:]...)...)
		}), nil, "event 0 follows event 0"},

		// Events that are not valid, though the log signed them.
		{"unknown schema version", withSpec(func(s *exportSpec) {
			s.event = func(i uint64) []byte {
				e := testEvent(i)
				if i == 13 {
					e.Version = 2
				}
				return mustMarshal(t, e)
			}
		}), nil, "(event 13): invalid event: unknown schema version 2 (this build reads version 1)"},
		{"unknown type", withSpec(func(s *exportSpec) {
			s.event = func(i uint64) []byte {
				e := testEvent(i)
				if i == 3 {
					e.Type = "grant.stolen"
				}
				return mustMarshal(t, e)
			}
		}), nil, `(event 3): invalid event: event ` + testEvent(3).ID + ` has unknown type "grant.stolen"`},
		{"event of the wrong shape", withSpec(func(s *exportSpec) {
			s.event = func(i uint64) []byte {
				if i == 4 {
					return []byte(`{"v":1,"id":"x","time":"2026-11-25T12:00:00Z","type":"auth.failed","actor":"alice","source":{},"outcome":"failure"}`)
				}
				return mustMarshal(t, testEvent(i))
			}
		}), nil, "(event 4): event does not decode"},
		{"event not an object", rehashed(2, func([]byte) []byte { return []byte(`[1]`) }), nil, "(event 2): event is not a JSON object"},

		// Lines that do not parse.
		{"malformed line", mutate(func(ls [][]byte) [][]byte {
			n := eventLine(t, ls, 8)
			ls[n] = ls[n][:len(ls[n])-1]
			return ls
		}), nil, fmt.Sprintf("line %d (event 8): malformed event line", eventLine(t, f.lines, 8)+1)},
		{"garbage line", mutate(func(ls [][]byte) [][]byte {
			return append(ls[:5:5], append([][]byte{[]byte("hello")}, ls[5:]...)...)
		}), nil, "line 6: malformed line"},
		{"empty line", mutate(func(ls [][]byte) [][]byte {
			return append(ls[:5:5], append([][]byte{{}}, ls[5:]...)...)
		}), nil, "line 6: malformed line"},
		{"unknown kind", mutate(func(ls [][]byte) [][]byte {
			return append(ls[:5:5], append([][]byte{[]byte(`{"kind":"comment"}`)}, ls[5:]...)...)
		}), nil, `line 6: unknown kind "comment"`},
		{"no kind", mutate(func(ls [][]byte) [][]byte {
			return append(ls[:5:5], append([][]byte{[]byte(`{"size":3}`)}, ls[5:]...)...)
		}), nil, `line 6: line has no kind`},
		{"unknown field", mutate(func(ls [][]byte) [][]byte {
			n := checkpointLine(t, ls, 20)
			ls[n] = bytes.Replace(ls[n], []byte(`{"kind":"checkpoint",`), []byte(`{"kind":"checkpoint","x":1,`), 1)
			return ls
		}), nil, `unknown field "x"`},
		{"line too long", append(bytes.Clone(f.export[:len(f.lines[0])+1]), bytes.Repeat([]byte("x"), maxLine+1)...), nil, "line 2: line is longer than"},

		// The header.
		{"empty", nil, nil, "line 1: the export is empty"},
		{"no header", mutate(func(ls [][]byte) [][]byte { return ls[1:] }), nil, `line 1: want the header first, got a line of kind "event"`},
		{"wrong format", mutate(func(ls [][]byte) [][]byte {
			ls[0] = bytes.Replace(ls[0], []byte("export/v1"), []byte("export/v2"), 1)
			return ls
		}), nil, `line 1: header format is "tether-audit-export/v2"`},
		{"other origin", mutate(func(ls [][]byte) [][]byte {
			ls[0] = bytes.Replace(ls[0], []byte(testOrigin), []byte("other.test/log"), 1)
			return ls
		}), nil, `line 1: export is of log "other.test/log"`},
		{"from changed", mutate(func(ls [][]byte) [][]byte {
			ls[0] = bytes.Replace(ls[0], []byte(`"from":0`), []byte(`"from":1`), 1)
			return ls
		}), nil, `line 1: header: tree prefix for size 1: got 0 hashes, want 1`},
		{"second header", mutate(func(ls [][]byte) [][]byte { return append(ls[:3:3], append([][]byte{ls[0]}, ls[3:]...)...) }), nil, "line 4: second header"},

		// Checkpoints.
		{"log key replaced", withSpec(func(s *exportSpec) { s.log = f.otherLogS; s.witnesses = nil }), nil, "checkpoint 10: open checkpoint: not signed by " + testOrigin},
		{"checkpoint body tampered", mutate(func(ls [][]byte) [][]byte {
			n := checkpointLine(t, ls, 30)
			ls[n] = bytes.Replace(ls[n], []byte(`\n30\n`), []byte(`\n31\n`), 1)
			return ls
		}), nil, "checkpoint 30: open checkpoint: invalid signature"},
		{"checkpoint line size changed", mutate(func(ls [][]byte) [][]byte {
			n := checkpointLine(t, ls, 30)
			ls[n] = bytes.Replace(ls[n], []byte(`"size":30`), []byte(`"size":29`), 1)
			return ls
		}), nil, "checkpoint line says size 29, its note size 30"},
		{"checkpoint moved earlier", mutate(func(ls [][]byte) [][]byte {
			n := checkpointLine(t, ls, 40)
			cp := ls[n]
			ls = del(ls, n)
			m := eventLine(t, ls, 35)
			return append(ls[:m:m], append([][]byte{cp}, ls[m:]...)...)
		}), nil, "checkpoint 40 covers events up to 39, but events 35..39 are missing"},
		{"checkpoint moved later", mutate(func(ls [][]byte) [][]byte {
			n := checkpointLine(t, ls, 40)
			cp := ls[n]
			ls = del(ls, n)
			m := eventLine(t, ls, 42)
			return append(ls[:m:m], append([][]byte{cp}, ls[m:]...)...)
		}), nil, "checkpoint 40 comes after event 41: it belongs right after event 39"},
		{"checkpoint repeated", mutate(func(ls [][]byte) [][]byte {
			n := checkpointLine(t, ls, 40)
			return append(ls[:n+1:n+1], ls[n:]...)
		}), nil, "checkpoint 40 follows checkpoint 40: sizes must increase"},
		{"last checkpoint missing", mutate(func(ls [][]byte) [][]byte {
			n := checkpointLine(t, ls, 50) // and its two cosignatures
			return append(ls[:n:n], ls[n+3:]...)
		}), nil, "events 40..49 are not covered by any checkpoint"},
		{"middle checkpoint missing", mutate(func(ls [][]byte) [][]byte { return del(ls, checkpointLine(t, ls, 20)) }), nil, "end line counts 5 checkpoints, the export holds 4"},
		{"cosigned checkpoint missing", mutate(func(ls [][]byte) [][]byte { return del(ls, checkpointLine(t, ls, 30)) }), nil, "cosignature 30 does not follow checkpoint 30"},
		{"no checkpoints", mutate(func(ls [][]byte) [][]byte {
			var out [][]byte
			for _, l := range ls {
				if !bytes.Contains(l, []byte(`"kind":"checkpoint"`)) && !bytes.Contains(l, []byte(`"kind":"cosignature"`)) {
					out = append(out, l)
				}
			}
			return out
		}), nil, "the export has no checkpoint"},

		// Cosignatures.
		{"wrong witness key", f.export, &VerifyOptions{Log: f.logV, Witnesses: []note.Verifier{f.otherW1V}}, "cosignature 10 is signed by witness witness.one with key"},
		{"log-only cosignature", mutate(func(ls [][]byte) [][]byte {
			n := checkpointLine(t, ls, 10)
			ls[n+1] = bytes.Replace(ls[n], []byte(`"kind":"checkpoint"`), []byte(`"kind":"cosignature"`), 1)
			return ls
		}), nil, "cosignature 10 carries no signature but the log's"},
		{"cosignature of another checkpoint", mutate(func(ls [][]byte) [][]byte {
			a, b := checkpointLine(t, ls, 10)+1, checkpointLine(t, ls, 30)+1
			ls[a], ls[b] = ls[b], ls[a]
			ls[a] = bytes.Replace(ls[a], []byte(`"size":30`), []byte(`"size":10`), 1)
			return ls
		}), nil, "cosignature 10 is of a different checkpoint than the log's"},
		{"cosignature moved", mutate(func(ls [][]byte) [][]byte {
			n := checkpointLine(t, ls, 10) + 1
			cos := ls[n]
			ls = del(ls, n)
			m := eventLine(t, ls, 12)
			return append(ls[:m:m], append([][]byte{cos}, ls[m:]...)...)
		}), nil, "cosignature 10 does not follow checkpoint 10"},
		{"cosignature tampered", mutate(func(ls [][]byte) [][]byte {
			n := checkpointLine(t, ls, 10) + 2 // witness.two's
			i := bytes.LastIndex(ls[n], []byte(`— witness.two `)) + len(`— witness.two `) + 10
			if ls[n][i] == 'A' {
				ls[n][i] = 'B'
			} else {
				ls[n][i] = 'A'
			}
			return ls
		}), nil, "cosignature 10: open cosigned checkpoint: invalid signature for key witness.two"},

		// The end.
		{"truncated after a checkpoint", mutate(func(ls [][]byte) [][]byte { return ls[:checkpointLine(t, ls, 30)+1] }), nil, "without an end line (truncated?)"},
		{"truncated after a cosignature", mutate(func(ls [][]byte) [][]byte { return ls[:checkpointLine(t, ls, 50)+2] }), nil, "without an end line (truncated?)"},
		{"truncated mid-line", f.export[:len(f.export)-10], nil, "does not end in a newline (truncated?)"},
		{"no final newline", f.export[:len(f.export)-1], nil, "does not end in a newline (truncated?)"},
		{"end count wrong", mutate(func(ls [][]byte) [][]byte {
			ls[end] = bytes.Replace(ls[end], []byte(`"events":50`), []byte(`"events":51`), 1)
			return ls
		}), nil, "end line counts 51 events, the export holds 50"},
		{"line after the end", append(bytes.Clone(f.export), join(f.lines[1:2])...), nil, "line after the end line"},
		{"end line twice", append(bytes.Clone(f.export), join(f.lines[end:])...), nil, "line after the end line"},
	} {
		opts := f.opts
		if tc.opts != nil {
			opts = *tc.opts
		}
		verifyFails(t, tc.name, tc.export, opts, tc.want)
	}
}

func TestVerifyNoLogKey(t *testing.T) {
	f := newFixture(t)
	if _, err := Verify(bytes.NewReader(f.export), VerifyOptions{}); err == nil {
		t.Errorf("Verify(no log key) = nil error, want one")
	}
}

func TestExportWriterErrors(t *testing.T) {
	f := newFixture(t)
	logS := f.spec.log
	sign := func(size uint64) string {
		msg, err := SignCheckpoint(Checkpoint{Origin: testOrigin, Size: size, Time: time.Unix(0, 0)}, logS)
		if err != nil {
			t.Fatal(err)
		}
		return msg
	}
	raw := mustMarshal(t, testEvent(0))
	newW := func() *ExportWriter {
		ew, err := NewExportWriter(&bytes.Buffer{}, testOrigin, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		return ew
	}
	if _, err := NewExportWriter(&bytes.Buffer{}, testOrigin, 3, nil); err == nil {
		t.Errorf("NewExportWriter(from 3, no prefix) = nil error, want one")
	}
	if _, err := NewExportWriter(&bytes.Buffer{}, "", 0, nil); err == nil {
		t.Errorf("NewExportWriter(no origin) = nil error, want one")
	}
	for _, tc := range []struct {
		name string
		do   func(ew *ExportWriter) error
	}{
		{"event out of order", func(ew *ExportWriter) error { return ew.WriteEvent(1, raw) }},
		{"event not JSON", func(ew *ExportWriter) error { return ew.WriteEvent(0, []byte(`{"v":`)) }},
		{"event with newline", func(ew *ExportWriter) error { return ew.WriteEvent(0, []byte("{\n}")) }},
		{"event not an object", func(ew *ExportWriter) error { return ew.WriteEvent(0, []byte(`[]`)) }},
		{"checkpoint of wrong size", func(ew *ExportWriter) error {
			ew.WriteEvent(0, raw)
			return ew.WriteCheckpoint(2, sign(2))
		}},
		{"checkpoint note of other size", func(ew *ExportWriter) error {
			ew.WriteEvent(0, raw)
			return ew.WriteCheckpoint(1, sign(2))
		}},
		{"checkpoint not a note", func(ew *ExportWriter) error {
			ew.WriteEvent(0, raw)
			return ew.WriteCheckpoint(1, "1\n")
		}},
		{"checkpoint twice", func(ew *ExportWriter) error {
			ew.WriteEvent(0, raw)
			ew.WriteCheckpoint(1, sign(1))
			return ew.WriteCheckpoint(1, sign(1))
		}},
		{"cosignature without checkpoint", func(ew *ExportWriter) error {
			ew.WriteEvent(0, raw)
			return ew.WriteCosignature(1, sign(1))
		}},
		{"cosignature after an event", func(ew *ExportWriter) error {
			ew.WriteEvent(0, raw)
			ew.WriteCheckpoint(1, sign(1))
			ew.WriteEvent(1, raw)
			return ew.WriteCosignature(1, sign(1))
		}},
		{"close with no checkpoint", func(ew *ExportWriter) error { return ew.Close() }},
		{"close with events uncovered", func(ew *ExportWriter) error {
			ew.WriteEvent(0, raw)
			ew.WriteCheckpoint(1, sign(1))
			ew.WriteEvent(1, raw)
			return ew.Close()
		}},
		{"write after close", func(ew *ExportWriter) error {
			ew.WriteEvent(0, raw)
			ew.WriteCheckpoint(1, sign(1))
			if err := ew.Close(); err != nil {
				return nil // the test fails: Close should work here
			}
			return ew.WriteEvent(1, raw)
		}},
	} {
		if err := tc.do(newW()); err == nil {
			t.Errorf("%s: got nil error, want one", tc.name)
		}
	}
}

// fuzzOpts returns the keys of the fuzz seed export.
func fuzzSeed(t testing.TB) ([]byte, VerifyOptions) {
	logS := signerOf(t, testOrigin, 1)
	w1S := signerOf(t, "witness.one", 11)
	spec := exportSpec{from: 3, to: 12, every: 4, log: logS, witnesses: []note.Signer{w1S}}
	return spec.build(t), VerifyOptions{Log: verifierOf(t, logS), Witnesses: []note.Verifier{verifierOf(t, w1S)}}
}

// FuzzVerify checks that Verify never panics, and that whatever it accepts
// it reports consistently.
func FuzzVerify(f *testing.F) {
	seed, opts := fuzzSeed(f)
	f.Add(seed)
	ls := lines(seed)
	f.Add(join(ls[:len(ls)-1]))
	f.Add(join(append(clone(ls[:3]), ls[4:]...)))
	f.Fuzz(func(t *testing.T, data []byte) {
		rep, err := Verify(bytes.NewReader(data), opts)
		if err != nil {
			var ve *VerifyError
			if !errors.As(err, &ve) {
				t.Fatalf("Verify = %T %v, want a *VerifyError", err, err)
			}
			return
		}
		if rep.Origin != testOrigin || rep.To < rep.From || uint64(rep.Events) != rep.To-rep.From {
			t.Fatalf("Verify = %+v, nil: inconsistent range", rep)
		}
		n := 0
		for typ, c := range rep.Types {
			if !typ.Known() || c <= 0 {
				t.Fatalf("Verify = %+v, nil: bad type count %q: %d", rep, typ, c)
			}
			n += c
		}
		if n != rep.Events {
			t.Fatalf("Verify = %+v, nil: types count %d events", rep, n)
		}
		if len(rep.Checkpoints) == 0 || rep.Checkpoints[len(rep.Checkpoints)-1].Size != rep.To {
			t.Fatalf("Verify = %+v, nil: the last checkpoint does not cover every event", rep)
		}
		for i, c := range rep.Checkpoints {
			if c.Size < rep.From || i > 0 && c.Size <= rep.Checkpoints[i-1].Size {
				t.Fatalf("Verify = %+v, nil: checkpoint sizes out of order", rep)
			}
		}
		// What verifies must be the seed's events: they are all the log
		// signed for this key.
		if rep.To > 12 {
			t.Fatalf("Verify = %+v, nil: events the log never signed", rep)
		}
	})
}

// bench1M is the export BenchmarkVerify1M verifies, built once.
var bench1M struct {
	once   sync.Once
	export []byte
	opts   VerifyOptions
}

// BenchmarkVerify1M verifies an export of 1,000,000 realistic events with
// a checkpoint every 10,000.
func BenchmarkVerify1M(b *testing.B) {
	const n = 1_000_000
	bench1M.once.Do(func() {
		logS := signerOf(b, testOrigin, 1)
		spec := exportSpec{from: 0, to: n, every: 10_000, log: logS}
		bench1M.export = spec.build(b)
		bench1M.opts = VerifyOptions{Log: verifierOf(b, logS)}
	})
	b.SetBytes(int64(len(bench1M.export)))
	b.ReportAllocs()
	for b.Loop() {
		rep, err := Verify(bytes.NewReader(bench1M.export), bench1M.opts)
		if err != nil || rep.Events != n {
			b.Fatalf("Verify = %d events, %v, want %d, nil", rep.Events, err, n)
		}
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(len(bench1M.export))/n, "B/line")
}

func TestScanEvent(t *testing.T) {
	// Every event Marshal writes takes the fast path.
	for i := range uint64(100) {
		e := testEvent(i)
		raw := mustMarshal(t, e)
		if typ, ok := scanEvent(raw); !ok || typ != e.Type {
			t.Errorf("scanEvent(%s) = %q, %v, want %q, true", raw, typ, ok, e.Type)
		}
	}
	minimal := mustMarshal(t, Event{Version: 1, ID: "x", Time: time.Unix(1, 0).UTC(), Type: AuthFailed, Outcome: Failure})
	if typ, ok := scanEvent(minimal); !ok || typ != AuthFailed {
		t.Errorf("scanEvent(%s) = %q, %v, want %q, true", minimal, typ, ok, AuthFailed)
	}
	// Events written any other way, valid or not, are left to the full
	// decoder.
	for _, raw := range []string{
		` {"v":1,"id":"x","time":"2026-11-25T12:00:00Z","type":"auth.failed","actor":{},"source":{},"outcome":"failure"}`,
		`{"v":1,"id":"x","time":"2026-11-25T12:00:00Z","type":"auth.failed","actor":{},"source":{},"outcome":"failure"} `,
		`{"v":1, "id":"x","time":"2026-11-25T12:00:00Z","type":"auth.failed","actor":{},"source":{},"outcome":"failure"}`,
		`{"id":"x","v":1,"time":"2026-11-25T12:00:00Z","type":"auth.failed","actor":{},"source":{},"outcome":"failure"}`,
		`{"v":1,"id":"x","time":"2026-11-25T12:00:00Z","type":"auth.failed","actor":{},"source":{},"outcome":"failure","V":2}`,
		`{"v":1,"ID":"x","time":"2026-11-25T12:00:00Z","type":"auth.failed","actor":{},"source":{},"outcome":"failure"}`,
		`{"v":1,"id":"x","time":"2026-11-25T12:00:00Z","type":"auth\u002efailed","actor":{},"source":{},"outcome":"failure"}`,
		`{"v":1,"id":"x","time":"2026-11-25T12:00:00Z","type":"auth.failed","actor":{"role":"a","subject":"b"},"source":{},"outcome":"failure"}`,
		`{"v":1,"id":"x","time":"2026-11-25T12:00:00Z","type":"auth.failed","actor":{"subject":"a","subject":"b"},"source":{},"outcome":"failure"}`,
		`{"v":1,"id":"x","time":"2026-11-25T12:00:00Z","type":"auth.failed","actor":{},"source":{},"outcome":"failure","details":{"n":1e999}}`,
		`{"v":1,"id":"x","time":"2026-11-25T12:00:00Z","type":"auth.failed","actor":{},"source":{},"outcome":"failure","details":null}`,
		`{"v":1,"id":"","time":"2026-11-25T12:00:00Z","type":"auth.failed","actor":{},"source":{},"outcome":"failure"}`,
		`{"v":1,"id":"x","time":"0001-01-01T00:00:00Z","type":"auth.failed","actor":{},"source":{},"outcome":"failure"}`,
		`{"v":1,"id":"x","time":"2026-11-25 12:00:00Z","type":"auth.failed","actor":{},"source":{},"outcome":"failure"}`,
		`{"v":1,"id":"x","time":"2026-11-25T12:00:00Z","type":"auth.failed","actor":{},"source":{},"outcome":"maybe"}`,
		`{"v":1,"id":"x","time":"2026-11-25T12:00:00Z","type":"auth.failed","actor":{},"outcome":"failure"}`,
		`{"v":1,"id":"x\q","time":"2026-11-25T12:00:00Z","type":"auth.failed","actor":{},"source":{},"outcome":"failure"}`,
		`{"v":1,"id":"x","time":"2026-11-25T12:00:00Z","type":"auth.failed","actor":{},"source":{},"outcome":"failure","details":{"a":[1,]}}`,
		`{"v":1,"id":"x","time":"2026-11-25T12:00:00Z","type":"auth.failed","actor":{},"source":{},"outcome":"failure","details":{"a":01}}`,
		`{"v":2,"id":"x","time":"2026-11-25T12:00:00Z","type":"auth.failed","actor":{},"source":{},"outcome":"failure"}`,
	} {
		if typ, ok := scanEvent([]byte(raw)); ok {
			t.Errorf("scanEvent(%s) = %q, true, want false", raw, typ)
		}
	}
}

// FuzzScanEvent checks the fast path against encoding/json: whatever
// scanEvent accepts must decode into a valid Event of the type it reports.
func FuzzScanEvent(f *testing.F) {
	for i := range uint64(10) {
		f.Add(mustMarshal(f, testEvent(i)))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		typ, ok := scanEvent(raw)
		if !ok {
			return
		}
		var e Event
		if err := json.Unmarshal(raw, &e); err != nil {
			t.Fatalf("scanEvent(%q) = %q, true, but json.Unmarshal = %v", raw, typ, err)
		}
		if err := e.Validate(); err != nil {
			t.Fatalf("scanEvent(%q) = %q, true, but Validate() = %v", raw, typ, err)
		}
		if e.Type != typ {
			t.Fatalf("scanEvent(%q) = %q, true, but the event's type is %q", raw, typ, e.Type)
		}
	})
}
