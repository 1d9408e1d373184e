package audit

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// An export is a file of JSON lines that [Verify] checks offline with
// nothing but the log's public key (and, optionally, witnesses' keys):
//
//	{"kind":"header","format":"tether-audit-export/v1","origin":"<log>","from":<first index>,"prefix":["<hex>",...]}
//	{"kind":"event","index":<n>,"leaf_hash":"<hex>","event":<the event's stored bytes>}
//	{"kind":"checkpoint","size":<s>,"note":"<signed checkpoint>"}
//	{"kind":"cosignature","size":<s>,"note":"<checkpoint signed by the log and a witness>"}
//	{"kind":"end","events":<count>,"checkpoints":<count>}
//
// Events are consecutive from the header's from. prefix is the compact
// range of the leaves before from ([Tree.Prefix]), so an export that starts
// mid-log can still recompute roots. A checkpoint follows the event that
// brings the tree to its size; its cosignatures follow it. The end line
// comes last: without it the export is truncated.

// ExportFormat is the format string in an export's header.
const ExportFormat = "tether-audit-export/v1"

// maxLine is the longest line an export may hold, newline included.
const maxLine = 1 << 20

// Line kinds.
const (
	kindHeader      = "header"
	kindEvent       = "event"
	kindCheckpoint  = "checkpoint"
	kindCosignature = "cosignature"
	kindEnd         = "end"
)

// eventLinePrefix starts every event line: the writer writes event lines
// with their fields in this fixed order so [Verify] can read them without a
// general JSON decoder.
const eventLinePrefix = `{"kind":"event","index":`

// exportHeader is the first line of an export.
type exportHeader struct {
	Kind   string   `json:"kind"`
	Format string   `json:"format"`
	Origin string   `json:"origin"`
	From   uint64   `json:"from"`
	Prefix []string `json:"prefix"`
}

// exportNote is a checkpoint or cosignature line.
type exportNote struct {
	Kind string `json:"kind"`
	Size uint64 `json:"size"`
	Note string `json:"note"`
}

// exportEnd is the last line of an export.
type exportEnd struct {
	Kind        string `json:"kind"`
	Events      uint64 `json:"events"`
	Checkpoints uint64 `json:"checkpoints"`
}

// ExportWriter writes an export. Its methods check that what is written
// follows the format, so that an export it closes without error verifies
// given the right keys. It is not safe for concurrent use.
type ExportWriter struct {
	w      *bufio.Writer
	from   uint64
	next   uint64 // index of the next event, also the tree size so far
	events uint64
	cps    uint64
	err    error // sticky: the first error, after which nothing is written

	lastCP     uint64 // size of the last checkpoint written
	haveCP     bool
	lastCPText string // its note text, without signatures
	afterCP    bool   // the last line was that checkpoint or a cosignature of it
	closed     bool
	line       []byte
}

// NewExportWriter writes the header of an export of the log origin's events
// from index from on, where prefix is the compact range of the leaves before
// from ([Tree.Prefix]).
func NewExportWriter(w io.Writer, origin string, from uint64, prefix [][32]byte) (*ExportWriter, error) {
	if origin == "" {
		return nil, errors.New("new export: empty origin")
	}
	if _, err := NewTreeFromPrefix(from, prefix); err != nil {
		return nil, fmt.Errorf("new export: %w", err)
	}
	h := exportHeader{Kind: kindHeader, Format: ExportFormat, Origin: origin, From: from, Prefix: make([]string, len(prefix))}
	for i, p := range prefix {
		h.Prefix[i] = hex.EncodeToString(p[:])
	}
	ew := &ExportWriter{w: bufio.NewWriterSize(w, 64<<10), from: from, next: from}
	if err := ew.writeJSON(h); err != nil {
		return nil, fmt.Errorf("new export: %w", err)
	}
	return ew, nil
}

// WriteEvent writes the event at index, whose stored bytes are raw. Indices
// must be consecutive from the header's from.
func (ew *ExportWriter) WriteEvent(index uint64, raw []byte) error {
	if err := ew.usable(); err != nil {
		return err
	}
	if index != ew.next {
		return fmt.Errorf("export event %d: want event %d next", index, ew.next)
	}
	// The bytes go into the export verbatim: they must be one JSON object
	// on one line, or the line would not parse.
	if len(raw) == 0 || raw[0] != '{' || bytes.IndexByte(raw, '\n') >= 0 || !json.Valid(raw) {
		return fmt.Errorf("export event %d: stored bytes are not a one-line JSON object", index)
	}
	leaf := LeafHash(raw)
	b := append(ew.line[:0], eventLinePrefix...)
	b = strconv.AppendUint(b, index, 10)
	b = append(b, `,"leaf_hash":"`...)
	b = hex.AppendEncode(b, leaf[:])
	b = append(b, `","event":`...)
	b = append(b, raw...)
	b = append(b, "}\n"...)
	ew.line = b
	if len(b) > maxLine {
		return fmt.Errorf("export event %d: line is %d bytes, more than the %d an export may hold", index, len(b), maxLine)
	}
	if _, err := ew.w.Write(b); err != nil {
		ew.err = fmt.Errorf("export event %d: %w", index, err)
		return ew.err
	}
	ew.next++
	ew.events++
	ew.afterCP = false
	return nil
}

// WriteCheckpoint writes the log's signed checkpoint of the given size,
// which must be the number of leaves so far: the checkpoint comes right
// after the event that brought the tree to its size (or right after the
// header, for a checkpoint of size from). Sizes must increase.
func (ew *ExportWriter) WriteCheckpoint(size uint64, noteText string) error {
	if err := ew.usable(); err != nil {
		return err
	}
	switch {
	case ew.haveCP && size <= ew.lastCP:
		return fmt.Errorf("export checkpoint %d: not after checkpoint %d", size, ew.lastCP)
	case size < ew.from:
		return fmt.Errorf("export checkpoint %d: before the export's first event %d, so it cannot be checked", size, ew.from)
	case size != ew.next:
		return fmt.Errorf("export checkpoint %d: the export has %d leaves so far", size, ew.next)
	}
	text, err := checkpointText(noteText, size)
	if err != nil {
		return fmt.Errorf("export checkpoint %d: %w", size, err)
	}
	if err := ew.writeJSON(exportNote{Kind: kindCheckpoint, Size: size, Note: noteText}); err != nil {
		return fmt.Errorf("export checkpoint %d: %w", size, err)
	}
	ew.cps++
	ew.lastCP, ew.haveCP, ew.lastCPText, ew.afterCP = size, true, text, true
	return nil
}

// WriteCosignature writes a witness's cosignature of the checkpoint of the
// given size: the checkpoint's note carrying the log's and the witness's
// signatures. It must follow that checkpoint (or another cosignature of
// it).
func (ew *ExportWriter) WriteCosignature(size uint64, noteText string) error {
	if err := ew.usable(); err != nil {
		return err
	}
	if !ew.afterCP || size != ew.lastCP {
		return fmt.Errorf("export cosignature %d: does not follow checkpoint %d", size, size)
	}
	text, err := checkpointText(noteText, size)
	if err != nil {
		return fmt.Errorf("export cosignature %d: %w", size, err)
	}
	if text != ew.lastCPText {
		return fmt.Errorf("export cosignature %d: not the same checkpoint as the log's", size)
	}
	if err := ew.writeJSON(exportNote{Kind: kindCosignature, Size: size, Note: noteText}); err != nil {
		return fmt.Errorf("export cosignature %d: %w", size, err)
	}
	return nil
}

// Close writes the end line and flushes. Every event must be covered by a
// checkpoint: Close fails, writing no end line, if events follow the last
// checkpoint or there is none. It does not close the underlying writer.
func (ew *ExportWriter) Close() error {
	if err := ew.usable(); err != nil {
		return err
	}
	ew.closed = true
	switch {
	case !ew.haveCP:
		ew.err = errors.New("close export: no checkpoint")
	case ew.lastCP < ew.next:
		ew.err = fmt.Errorf("close export: events %d..%d are not covered by a checkpoint", ew.lastCP, ew.next-1)
	}
	if ew.err != nil {
		if err := ew.w.Flush(); err != nil {
			return errors.Join(ew.err, fmt.Errorf("close export: %w", err))
		}
		return ew.err
	}
	if err := ew.writeJSON(exportEnd{Kind: kindEnd, Events: ew.events, Checkpoints: ew.cps}); err != nil {
		return fmt.Errorf("close export: %w", err)
	}
	if err := ew.w.Flush(); err != nil {
		ew.err = fmt.Errorf("close export: %w", err)
		return ew.err
	}
	return nil
}

// usable returns why nothing more may be written, if so.
func (ew *ExportWriter) usable() error {
	if ew.err != nil {
		return ew.err
	}
	if ew.closed {
		return errors.New("export is closed")
	}
	return nil
}

// writeJSON writes v as one line.
func (ew *ExportWriter) writeJSON(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if len(b)+1 > maxLine {
		return fmt.Errorf("line is %d bytes, more than the %d an export may hold", len(b)+1, maxLine)
	}
	b = append(b, '\n')
	if _, err := ew.w.Write(b); err != nil {
		ew.err = err
		return err
	}
	return nil
}

// checkpointText returns the text of a signed checkpoint note after
// checking it parses as a checkpoint of the given size. Signatures are not
// checked: the writer is not given the keys.
func checkpointText(noteText string, size uint64) (string, error) {
	text, ok := noteBody(noteText)
	if !ok {
		return "", errors.New("not a signed note")
	}
	c, err := ParseCheckpoint(text)
	if err != nil {
		return "", err
	}
	if c.Size != size {
		return "", fmt.Errorf("the note is a checkpoint of size %d", c.Size)
	}
	return text, nil
}
