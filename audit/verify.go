package audit

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"time"

	"golang.org/x/mod/sumdb/note"
)

// VerifyOptions holds the keys an export is checked against.
type VerifyOptions struct {
	// Log verifies the log's checkpoint signatures. Its name is the log's
	// origin. Required.
	Log note.Verifier
	// Witnesses verify cosignatures. A cosignature is always checked to be
	// of the log's checkpoint, signed by the log; the witnesses reported
	// for a checkpoint are those given here whose signature it carries.
	// Signatures by witnesses not given are ignored, but a signature under
	// a given witness's name by another key is an error.
	Witnesses []note.Verifier
}

// Report is what [Verify] checked.
type Report struct {
	Origin      string       // the log
	From, To    uint64       // the export holds events with indices [From, To)
	Events      int          // To - From
	Types       map[Type]int // events by type
	Checkpoints []CheckedCheckpoint
}

// CheckedCheckpoint is a checkpoint whose signature and root [Verify]
// checked against the export's events.
type CheckedCheckpoint struct {
	Size      uint64
	Time      time.Time
	Root      [32]byte
	Witnesses []string // names of the known witnesses that cosigned it
}

// VerifyError is the first problem [Verify] found in an export.
type VerifyError struct {
	Line  int   // 1-based line number; 0 when the problem is not one line's
	Index int64 // index of the event the line holds, or -1
	Msg   string
	Err   error // the underlying error, if any; Msg includes its text
}

// Error returns the problem as "line 12 (event 10): <what is wrong>".
func (e *VerifyError) Error() string {
	switch {
	case e.Line == 0:
		return e.Msg
	case e.Index < 0:
		return fmt.Sprintf("line %d: %s", e.Line, e.Msg)
	}
	return fmt.Sprintf("line %d (event %d): %s", e.Line, e.Index, e.Msg)
}

// Unwrap returns the underlying error, if any.
func (e *VerifyError) Unwrap() error { return e.Err }

// Verify checks an export (see [NewExportWriter]) and reports what it
// holds. It succeeds only if everything in the export is proven by the log's
// signatures: every event's bytes hash to a leaf of a tree whose root a
// checkpoint signed by opts.Log states, events are consecutive and none is
// left after the last checkpoint, every event is a valid [Event], and the
// export ends with its end line. It stops at the first problem and returns
// it as a *[VerifyError].
func Verify(r io.Reader, opts VerifyOptions) (Report, error) {
	if opts.Log == nil {
		return Report{}, &VerifyError{Index: -1, Msg: "verify export: no log key to verify against"}
	}
	v := &verifier{opts: opts}
	if err := eachLine(r, &v.line, v.process); err != nil {
		return Report{}, err
	}
	return v.finish()
}

// eachLine calls process with each line of an export read from r, its
// newline cut, counting lines in *n. It refuses a line longer than
// maxLine and a last line without its newline (a truncated export).
func eachLine(r io.Reader, n *int, process func(line []byte) error) error {
	br := bufio.NewReaderSize(r, maxLine)
	for {
		line, err := br.ReadSlice('\n')
		switch {
		case err == bufio.ErrBufferFull:
			return &VerifyError{Line: *n + 1, Index: -1, Msg: fmt.Sprintf("line is longer than %d bytes", maxLine)}
		case err == io.EOF:
			if len(line) > 0 {
				return &VerifyError{Line: *n + 1, Index: -1, Msg: "line does not end in a newline (truncated?)"}
			}
			return nil
		case err != nil:
			return &VerifyError{Line: *n + 1, Index: -1, Msg: fmt.Sprintf("read: %v", err), Err: err}
		}
		*n++
		if err := process(line[:len(line)-1]); err != nil {
			return err
		}
	}
}

// verifier is the state of one [Verify].
type verifier struct {
	opts   VerifyOptions
	line   int
	rep    Report
	header bool // the header has been read
	ended  bool // the end line has been read
	tree   *Tree
	next   uint64 // index of the next event: the tree's size

	last    *CheckedCheckpoint // the last checkpoint, nil before the first
	lastCP  Checkpoint
	afterCP bool // the last line was the last checkpoint or its cosignature
}

// process checks one line, without its newline.
func (v *verifier) process(l []byte) error {
	if v.ended {
		return v.errf(-1, "line after the end line")
	}
	if v.header && bytes.HasPrefix(l, []byte(eventLinePrefix)) {
		return v.eventLine(l)
	}
	var k struct {
		Kind *string `json:"kind"`
	}
	if err := json.Unmarshal(l, &k); err != nil {
		return v.wrapf(-1, err, "malformed line")
	}
	if k.Kind == nil {
		return v.errf(-1, "line has no kind")
	}
	if !v.header && *k.Kind != kindHeader {
		return v.errf(-1, "want the header first, got a line of kind %q", *k.Kind)
	}
	switch *k.Kind {
	case kindHeader:
		return v.headerLine(l)
	case kindEvent:
		return v.eventLine(l)
	case kindCheckpoint:
		return v.checkpointLine(l)
	case kindCosignature:
		return v.cosignatureLine(l)
	case kindEnd:
		return v.endLine(l)
	}
	return v.errf(-1, "unknown kind %q", *k.Kind)
}

func (v *verifier) headerLine(l []byte) error {
	if v.header {
		return v.errf(-1, "second header")
	}
	var h struct {
		Kind   string    `json:"kind"`
		Format *string   `json:"format"`
		Origin *string   `json:"origin"`
		From   *uint64   `json:"from"`
		Prefix *[]string `json:"prefix"`
	}
	if f, _ := ExportFormatOf(l); f == TenantExportFormat {
		return v.errf(-1, "this is a tenant export (%s): verify it with VerifyTenant and the tenant's witness key", TenantExportFormat)
	}
	if err := decodeStrict(l, &h); err != nil {
		return v.wrapf(-1, err, "malformed header")
	}
	switch {
	case h.Format == nil:
		return v.errf(-1, "header has no format")
	case *h.Format != ExportFormat:
		return v.errf(-1, "header format is %q, want %q", *h.Format, ExportFormat)
	case h.Origin == nil || *h.Origin == "":
		return v.errf(-1, "header has no origin")
	case *h.Origin != v.opts.Log.Name():
		return v.errf(-1, "export is of log %q, but the log key is %q's", *h.Origin, v.opts.Log.Name())
	case h.From == nil:
		return v.errf(-1, "header has no from")
	case h.Prefix == nil:
		return v.errf(-1, "header has no prefix")
	}
	prefix := make([][32]byte, len(*h.Prefix))
	for i, s := range *h.Prefix {
		var ok bool
		if prefix[i], ok = decodeHash([]byte(s)); !ok {
			return v.errf(-1, "header prefix hash %d is not 64 lowercase hex digits", i)
		}
	}
	t, err := NewTreeFromPrefix(*h.From, prefix)
	if err != nil {
		return v.wrapf(-1, err, "header")
	}
	v.header = true
	v.tree = t
	v.next = *h.From
	v.rep = Report{Origin: *h.Origin, From: *h.From, To: *h.From, Types: map[Type]int{}}
	return nil
}

// eventLine checks an event line: fast when it is as [ExportWriter] writes
// it, and otherwise with a full decode that names the problem precisely.
func (v *verifier) eventLine(l []byte) error {
	index, leaf, raw, ok := parseEventLine(l)
	if ok {
		if typ, ok := scanEvent(raw); ok {
			return v.event(index, leaf, raw, typ, nil)
		}
	}
	var w struct {
		Kind     string          `json:"kind"`
		Index    *uint64         `json:"index"`
		LeafHash *string         `json:"leaf_hash"`
		Event    json.RawMessage `json:"event"`
	}
	hint := int64(-1)
	if ok {
		hint = eventIndex(index)
	}
	if err := decodeStrict(l, &w); err != nil {
		return v.wrapf(hint, err, "malformed event line")
	}
	if w.Kind != kindEvent {
		return v.errf(hint, "event line of kind %q", w.Kind)
	}
	if w.Index == nil {
		return v.errf(-1, "event line has no index")
	}
	if w.LeafHash == nil {
		return v.errf(eventIndex(*w.Index), "event line has no leaf_hash")
	}
	if leaf, ok = decodeHash([]byte(*w.LeafHash)); !ok {
		return v.errf(eventIndex(*w.Index), "leaf_hash is not 64 lowercase hex digits")
	}
	if w.Event == nil {
		return v.errf(eventIndex(*w.Index), "event line has no event")
	}
	return v.event(*w.Index, leaf, w.Event, "", func() (Type, error) {
		if w.Event[0] != '{' {
			return "", errors.New("event is not a JSON object")
		}
		var e Event
		if err := json.Unmarshal(w.Event, &e); err != nil {
			return "", fmt.Errorf("event does not decode: %w", err)
		}
		if err := e.Validate(); err != nil {
			return "", fmt.Errorf("invalid event: %w", err)
		}
		return e.Type, nil
	})
}

// event checks an event at index with leaf hash leaf and bytes raw, and
// adds it to the tree. Its type is typ, or what decode returns if it is
// not nil.
func (v *verifier) event(index uint64, leaf [32]byte, raw []byte, typ Type, decode func() (Type, error)) error {
	ix := eventIndex(index)
	if index != v.next {
		var missing string
		if index > v.next {
			missing = fmt.Sprintf("event %d is missing", v.next)
			if index > v.next+1 {
				missing = fmt.Sprintf("events %d..%d are missing", v.next, index-1)
			}
		} else {
			missing = "out of order or repeated"
		}
		if v.next > v.rep.From {
			return v.errf(ix, "event %d follows event %d: %s", index, v.next-1, missing)
		}
		return v.errf(ix, "the export starts at event %d: %s", v.rep.From, missing)
	}
	if LeafHash(raw) != leaf {
		return v.errf(ix, "leaf hash does not match the event's bytes (edited?)")
	}
	if decode != nil {
		t, err := decode()
		if err != nil {
			return v.wrapf(ix, err, "")
		}
		typ = t
	}
	v.tree.Append(leaf)
	v.next++
	v.rep.Events++
	v.rep.Types[typ]++
	v.afterCP = false
	return nil
}

func (v *verifier) checkpointLine(l []byte) error {
	size, text, err := v.noteLine(l, kindCheckpoint)
	if err != nil {
		return err
	}
	c, err := OpenCheckpoint(text, v.opts.Log)
	if err != nil {
		return v.wrapf(-1, err, "checkpoint %d", size)
	}
	switch {
	case c.Size != size:
		return v.errf(-1, "checkpoint line says size %d, its note size %d", size, c.Size)
	case c.Origin != v.rep.Origin:
		return v.errf(-1, "checkpoint %d is of log %q, the export of %q", size, c.Origin, v.rep.Origin)
	case v.last != nil && size <= v.last.Size:
		return v.errf(-1, "checkpoint %d follows checkpoint %d: sizes must increase", size, v.last.Size)
	case size < v.rep.From:
		return v.errf(-1, "checkpoint %d is of a tree smaller than the export, which starts at event %d: it cannot be checked", size, v.rep.From)
	case size > v.next && size == v.next+1:
		return v.errf(-1, "checkpoint %d covers event %d, which is missing", size, v.next)
	case size > v.next:
		return v.errf(-1, "checkpoint %d covers events up to %d, but events %d..%d are missing", size, size-1, v.next, size-1)
	case size < v.next:
		return v.errf(-1, "checkpoint %d comes after event %d: it belongs right after event %d", size, v.next-1, size-1)
	}
	if c.Root != v.tree.Root() {
		start := v.rep.From
		if v.last != nil {
			start = v.last.Size
		}
		switch {
		case size == start:
			return v.errf(-1, "checkpoint %d: root does not match the header's prefix", size)
		case v.last == nil && start > 0:
			return v.errf(-1, "checkpoint %d: root does not match events %d..%d: one of them, or the header's prefix, was changed, added or removed since it was signed", size, start, size-1)
		}
		return v.errf(-1, "checkpoint %d: root does not match events %d..%d: one of them was changed, added or removed since it was signed", size, start, size-1)
	}
	v.rep.Checkpoints = append(v.rep.Checkpoints, CheckedCheckpoint{Size: c.Size, Time: c.Time, Root: c.Root})
	v.last = &v.rep.Checkpoints[len(v.rep.Checkpoints)-1]
	v.lastCP = c
	v.afterCP = true
	return nil
}

func (v *verifier) cosignatureLine(l []byte) error {
	size, text, err := v.noteLine(l, kindCosignature)
	if err != nil {
		return err
	}
	if !v.afterCP || size != v.last.Size {
		return v.errf(-1, "cosignature %d does not follow checkpoint %d", size, size)
	}
	c, names, n, err := openWitnessed(text, v.opts.Log, v.opts.Witnesses)
	if err != nil {
		return v.wrapf(-1, err, "cosignature %d", size)
	}
	if c.Body() != v.lastCP.Body() {
		return v.errf(-1, "cosignature %d is of a different checkpoint than the log's", size)
	}
	if len(names) == 0 && len(n.UnverifiedSigs) == 0 {
		return v.errf(-1, "cosignature %d carries no signature but the log's", size)
	}
	// A witness whose key is not given is ignored, but one signing under
	// the name of a witness whose key is given, with another key, is not.
	for _, s := range n.UnverifiedSigs {
		for _, w := range v.opts.Witnesses {
			if s.Name == w.Name() {
				return v.errf(-1, "cosignature %d is signed by witness %s with key %08x, not the witness key given (%08x)", size, s.Name, s.Hash, w.KeyHash())
			}
		}
	}
	for _, n := range names {
		if !slices.Contains(v.last.Witnesses, n) {
			v.last.Witnesses = append(v.last.Witnesses, n)
		}
	}
	return nil
}

// noteLine decodes a checkpoint or cosignature line.
func (v *verifier) noteLine(l []byte, kind string) (uint64, string, error) {
	var n struct {
		Kind string  `json:"kind"`
		Size *uint64 `json:"size"`
		Note *string `json:"note"`
	}
	if err := decodeStrict(l, &n); err != nil {
		return 0, "", v.wrapf(-1, err, "malformed %s line", kind)
	}
	if n.Size == nil || n.Note == nil {
		return 0, "", v.errf(-1, "%s line needs a size and a note", kind)
	}
	return *n.Size, *n.Note, nil
}

func (v *verifier) endLine(l []byte) error {
	var e struct {
		Kind        string  `json:"kind"`
		Events      *uint64 `json:"events"`
		Checkpoints *uint64 `json:"checkpoints"`
	}
	if err := decodeStrict(l, &e); err != nil {
		return v.wrapf(-1, err, "malformed end line")
	}
	switch {
	case e.Events == nil || e.Checkpoints == nil:
		return v.errf(-1, "end line needs events and checkpoints counts")
	case v.last == nil:
		return v.errf(-1, "the export has no checkpoint: none of it can be verified")
	case v.last.Size < v.next && v.last.Size+1 == v.next:
		return v.errf(-1, "event %d is not covered by any checkpoint", v.last.Size)
	case v.last.Size < v.next:
		return v.errf(-1, "events %d..%d are not covered by any checkpoint", v.last.Size, v.next-1)
	case *e.Events != uint64(v.rep.Events):
		return v.errf(-1, "end line counts %d events, the export holds %d (lines dropped?)", *e.Events, v.rep.Events)
	case *e.Checkpoints != uint64(len(v.rep.Checkpoints)):
		return v.errf(-1, "end line counts %d checkpoints, the export holds %d (lines dropped?)", *e.Checkpoints, len(v.rep.Checkpoints))
	}
	v.ended = true
	return nil
}

// finish checks the export ended properly and returns the report.
func (v *verifier) finish() (Report, error) {
	switch {
	case !v.header:
		return Report{}, &VerifyError{Line: 1, Index: -1, Msg: "the export is empty: want a header"}
	case !v.ended:
		return Report{}, &VerifyError{Index: -1, Msg: fmt.Sprintf("the export ends after line %d without an end line (truncated?)", v.line)}
	}
	v.rep.To = v.next
	return v.rep, nil
}

func (v *verifier) errf(index int64, format string, args ...any) error {
	return &VerifyError{Line: v.line, Index: index, Msg: fmt.Sprintf(format, args...)}
}

// wrapf returns err as a VerifyError, its message prefixed by what, if
// any.
func (v *verifier) wrapf(index int64, err error, format string, args ...any) error {
	msg := err.Error()
	if format != "" {
		msg = fmt.Sprintf(format, args...) + ": " + msg
	}
	return &VerifyError{Line: v.line, Index: index, Msg: msg, Err: err}
}

// eventIndex returns index as a VerifyError index.
func eventIndex(index uint64) int64 {
	if index > math.MaxInt64 {
		return -1
	}
	return int64(index)
}

// decodeStrict decodes the one JSON value in l into v, rejecting unknown
// fields and trailing data.
func decodeStrict(l []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(l))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return err
	}
	if _, err := d.Token(); err != io.EOF {
		return errors.New("data after the JSON object")
	}
	return nil
}

// hexVal maps lowercase hex digits to their values, and anything else to
// 0xff.
var hexVal = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for i, c := range "0123456789abcdef" {
		t[c] = byte(i)
	}
	return t
}()

// decodeHash decodes a SHA-256 hash written in lowercase hex.
func decodeHash(s []byte) ([32]byte, bool) {
	var h [32]byte
	if len(s) != 64 {
		return h, false
	}
	bad := byte(0)
	for i := range h {
		hi, lo := hexVal[s[2*i]], hexVal[s[2*i+1]]
		bad |= hi | lo
		h[i] = hi<<4 | lo&0x0f
	}
	return h, bad&0xf0 == 0
}

// parseEventLine parses an event line as [ExportWriter.WriteEvent] writes
// it, without a JSON decoder. It reports false if the line is written any
// other way; raw is then checked by [scanEvent], which makes sure the line
// is valid JSON.
func parseEventLine(l []byte) (index uint64, leaf [32]byte, raw []byte, ok bool) {
	b, ok := bytes.CutPrefix(l, []byte(eventLinePrefix))
	if !ok {
		return 0, leaf, nil, false
	}
	n := 0
	for ; n < len(b) && b[n] >= '0' && b[n] <= '9'; n++ {
		d := uint64(b[n] - '0')
		if index > (math.MaxUint64-d)/10 {
			return 0, leaf, nil, false
		}
		index = index*10 + d
	}
	if n == 0 || n > 1 && b[0] == '0' {
		return 0, leaf, nil, false
	}
	b, ok = bytes.CutPrefix(b[n:], []byte(`,"leaf_hash":"`))
	if !ok || len(b) < 64 {
		return 0, leaf, nil, false
	}
	if leaf, ok = decodeHash(b[:64]); !ok {
		return 0, leaf, nil, false
	}
	b, ok = bytes.CutPrefix(b[64:], []byte(`","event":`))
	if !ok || len(b) < 2 || b[len(b)-1] != '}' {
		return 0, leaf, nil, false
	}
	return index, leaf, b[:len(b)-1], true
}

// scanEvent returns the type of the event whose stored bytes are raw, if
// raw is in the form [Event.Marshal] writes (fields in declaration order, no
// white space) and json.Unmarshal would decode it into an [Event] that
// passes [Event.Validate]. It reports false otherwise, including for some
// valid events written another way: the caller then decodes them fully.
// It is several times faster than json.Unmarshal, which matters for exports
// of millions of events.
func scanEvent(raw []byte) (Type, bool) {
	s := scanner{b: raw}
	if !s.lit(`{"v":1,"id":`) {
		return "", false
	}
	if id, ok := s.str(); !ok || len(id) == 0 {
		return "", false
	}
	if !s.lit(`,"time":`) {
		return "", false
	}
	start := s.i
	if _, ok := s.str(); !ok {
		return "", false
	}
	// The same call encoding/json makes for the field.
	var t time.Time
	if err := t.UnmarshalJSON(raw[start:s.i]); err != nil || t.IsZero() {
		return "", false
	}
	if !s.lit(`,"type":`) {
		return "", false
	}
	tb, ok := s.plainStr()
	if !ok {
		return "", false
	}
	// The known type equal to tb: a string that does not keep raw alive.
	var typ Type
	for _, k := range Types {
		if string(k) == string(tb) {
			typ = k
			break
		}
	}
	if typ == "" {
		return "", false
	}
	if !s.lit(`,"actor":`) || !s.strObject("subject", "issuer", "tenant", "role") {
		return "", false
	}
	for _, k := range [...]string{`,"deployment":`, `,"request_id":`, `,"grant_id":`, `,"agent_id":`} {
		if s.lit(k) {
			if _, ok := s.str(); !ok {
				return "", false
			}
		}
	}
	if !s.lit(`,"source":`) || !s.strObject("tailnet_node", "ip") || !s.lit(`,"outcome":`) {
		return "", false
	}
	if o, ok := s.plainStr(); !ok || string(o) != string(Success) && string(o) != string(Failure) {
		return "", false
	}
	if s.lit(`,"reason":`) {
		if _, ok := s.str(); !ok {
			return "", false
		}
	}
	if s.lit(`,"details":`) {
		if s.peek() != '{' || !s.value(0) {
			return "", false
		}
	}
	if !s.lit("}") || s.i != len(raw) {
		return "", false
	}
	return typ, true
}

// scanner reads JSON written without white space. Its methods report false
// on anything unexpected.
type scanner struct {
	b []byte
	i int
}

// maxScanDepth bounds the nesting scanner follows; deeper values are left
// to encoding/json.
const maxScanDepth = 64

func (s *scanner) peek() byte {
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

// lit consumes lit if the input continues with it.
func (s *scanner) lit(lit string) bool {
	if len(s.b)-s.i < len(lit) || string(s.b[s.i:s.i+len(lit)]) != lit {
		return false
	}
	s.i += len(lit)
	return true
}

// str consumes a JSON string and returns its contents, still escaped.
func (s *scanner) str() ([]byte, bool) {
	if s.peek() != '"' {
		return nil, false
	}
	start := s.i + 1
	for i := start; i < len(s.b); i++ {
		switch c := s.b[i]; {
		case c == '"':
			s.i = i + 1
			return s.b[start:i], true
		case c < 0x20:
			return nil, false
		case c == '\\':
			i++
			if i >= len(s.b) {
				return nil, false
			}
			switch s.b[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if i+4 >= len(s.b) {
					return nil, false
				}
				for _, h := range s.b[i+1 : i+5] {
					if !('0' <= h && h <= '9' || 'a' <= h && h <= 'f' || 'A' <= h && h <= 'F') {
						return nil, false
					}
				}
				i += 4
			default:
				return nil, false
			}
		}
	}
	return nil, false
}

// plainStr consumes a JSON string without escapes and returns its
// contents.
func (s *scanner) plainStr() ([]byte, bool) {
	b, ok := s.str()
	if !ok || bytes.IndexByte(b, '\\') >= 0 {
		return nil, false
	}
	return b, true
}

// strObject consumes an object whose members are strings with keys among
// keys, in that order, each at most once.
func (s *scanner) strObject(keys ...string) bool {
	if !s.lit("{") {
		return false
	}
	if s.lit("}") {
		return true
	}
	next := 0
	for {
		k, ok := s.str()
		if !ok || !s.lit(":") {
			return false
		}
		for next < len(keys) && keys[next] != string(k) {
			next++
		}
		if next == len(keys) {
			return false
		}
		next++
		if _, ok := s.str(); !ok {
			return false
		}
		if s.lit("}") {
			return true
		}
		if !s.lit(",") {
			return false
		}
	}
}

// value consumes any JSON value that json.Unmarshal decodes into an any
// without error.
func (s *scanner) value(depth int) bool {
	if depth > maxScanDepth {
		return false
	}
	switch c := s.peek(); {
	case c == '{':
		s.i++
		if s.lit("}") {
			return true
		}
		for {
			if _, ok := s.str(); !ok || !s.lit(":") || !s.value(depth+1) {
				return false
			}
			if s.lit("}") {
				return true
			}
			if !s.lit(",") {
				return false
			}
		}
	case c == '[':
		s.i++
		if s.lit("]") {
			return true
		}
		for {
			if !s.value(depth + 1) {
				return false
			}
			if s.lit("]") {
				return true
			}
			if !s.lit(",") {
				return false
			}
		}
	case c == '"':
		_, ok := s.str()
		return ok
	case c == 't':
		return s.lit("true")
	case c == 'f':
		return s.lit("false")
	case c == 'n':
		return s.lit("null")
	case c == '-' || '0' <= c && c <= '9':
		return s.number()
	}
	return false
}

// number consumes a JSON number that fits a float64, as encoding/json
// requires of a number decoded into an any.
func (s *scanner) number() bool {
	start := s.i
	s.lit("-")
	digits := func() int {
		n := 0
		for s.i < len(s.b) && '0' <= s.b[s.i] && s.b[s.i] <= '9' {
			s.i++
			n++
		}
		return n
	}
	switch {
	case s.lit("0"):
	case digits() == 0:
		return false
	}
	if s.lit(".") && digits() == 0 {
		return false
	}
	if c := s.peek(); c == 'e' || c == 'E' {
		s.i++
		if c := s.peek(); c == '+' || c == '-' {
			s.i++
		}
		if digits() == 0 {
			return false
		}
	}
	_, err := strconv.ParseFloat(string(s.b[start:s.i]), 64)
	return err == nil
}
