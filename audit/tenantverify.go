package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"slices"
	"strings"
	"time"
)

// TenantReport is what [VerifyTenant] checked.
type TenantReport struct {
	Origin      string
	Tenant      string
	Deployments []string
	Since       time.Time // zero when the export names none
	Until       time.Time
	// Checkpoint is the checkpoint every event is proven against, and
	// Witnesses the given witnesses that cosigned it.
	Checkpoint CheckedCheckpoint
	Events     int
	First      uint64 // index of the first event, when Events > 0
	Last       uint64 // index of the last event, when Events > 0
	Types      map[Type]int
	// Pending counts, as the broker's signed end line states, the
	// tenant's events after the checkpoint: not in the export, not
	// verified.
	Pending uint64
}

// ErrNoWitnessKey reports that [VerifyTenant] was given no witness key.
var ErrNoWitnessKey = errors.New("a tenant export is trusted through your own agent's cosignature: give its witness key ('agent witness-key' on the agent's host)")

// VerifyTenant checks a tenant export (see [TenantExportFormat]). It
// succeeds only if the checkpoint carries the log's signature and the
// cosignature of at least one of opts.Witnesses (at least one is
// required), every event's bytes hash to its leaf, every leaf's inclusion
// proof leads to the checkpoint's root, every event is a valid [Event]
// that is the header's tenant's ([TenantScope]), indices increase, and the
// end line's note, signed by the log, states the same tenant, checkpoint,
// counts and digest of the header and events. It stops at the first
// problem and returns it as a *[VerifyError]. Events the export says are
// pending are not in it and are never counted as verified.
func VerifyTenant(r io.Reader, opts VerifyOptions) (TenantReport, error) {
	if opts.Log == nil {
		return TenantReport{}, &VerifyError{Index: -1, Msg: "verify tenant export: no log key to verify against"}
	}
	if len(opts.Witnesses) == 0 {
		return TenantReport{}, &VerifyError{Index: -1, Msg: ErrNoWitnessKey.Error(), Err: ErrNoWitnessKey}
	}
	v := &tenantVerifier{opts: opts, digest: sha256.New()}
	if err := eachLine(r, &v.line, v.process); err != nil {
		return TenantReport{}, err
	}
	return v.finish()
}

// tenantVerifier is the state of one [VerifyTenant].
type tenantVerifier struct {
	opts   VerifyOptions
	line   int
	rep    TenantReport
	scope  TenantScope
	digest hash.Hash

	state  int // what the next line may be, below
	cp     Checkpoint
	cpBody string
	next   uint64 // the next event's index must be at least this
}

// The states of a tenant export, in order.
const (
	tvHeader      = iota // want the header
	tvCheckpoint         // want the checkpoint
	tvCosignature        // want a cosignature
	tvEvents             // want a cosignature, an event or the end line
	tvEnded              // nothing more
)

func (v *tenantVerifier) process(l []byte) error {
	var k struct {
		Kind *string `json:"kind"`
	}
	if err := json.Unmarshal(l, &k); err != nil {
		return v.errf(-1, "malformed line: %v", err)
	}
	if k.Kind == nil {
		return v.errf(-1, "line has no kind")
	}
	kind := *k.Kind
	switch {
	case v.state == tvEnded:
		return v.errf(-1, "line after the end line")
	case v.state == tvHeader && kind != kindHeader:
		return v.errf(-1, "want the header first, got a line of kind %q", kind)
	case v.state == tvCheckpoint && kind != kindCheckpoint:
		return v.errf(-1, "want the checkpoint after the header, got a line of kind %q", kind)
	case v.state == tvCosignature && kind != kindCosignature:
		return v.errf(-1, "want the cosignature of the tenant's agent after the checkpoint, got a line of kind %q", kind)
	}
	switch kind {
	case kindHeader:
		if v.state != tvHeader {
			return v.errf(-1, "second header")
		}
		return v.header(l)
	case kindCheckpoint:
		if v.state != tvCheckpoint {
			return v.errf(-1, "second checkpoint: a tenant export is proven against one")
		}
		return v.checkpoint(l)
	case kindCosignature:
		if v.rep.Events > 0 {
			return v.errf(-1, "cosignature after the events: it belongs right after the checkpoint")
		}
		return v.cosignature(l)
	case kindEvent:
		if err := v.witnessed(); err != nil {
			return err
		}
		return v.event(l)
	case kindEnd:
		if err := v.witnessed(); err != nil {
			return err
		}
		return v.end(l)
	}
	return v.errf(-1, "unknown kind %q", kind)
}

func (v *tenantVerifier) header(l []byte) error {
	var h struct {
		Kind        string    `json:"kind"`
		Format      *string   `json:"format"`
		Origin      *string   `json:"origin"`
		Tenant      *string   `json:"tenant"`
		Deployments *[]string `json:"deployments"`
		Since       string    `json:"since"`
		Until       string    `json:"until"`
		Size        *uint64   `json:"size"`
	}
	if err := decodeStrict(l, &h); err != nil {
		return v.errf(-1, "malformed header: %v", err)
	}
	switch {
	case h.Format == nil:
		return v.errf(-1, "header has no format")
	case *h.Format != TenantExportFormat:
		return v.errf(-1, "header format is %q, want %q", *h.Format, TenantExportFormat)
	case h.Origin == nil || *h.Origin == "":
		return v.errf(-1, "header has no origin")
	case *h.Origin != v.opts.Log.Name():
		return v.errf(-1, "export is of log %q, but the log key is %q's", *h.Origin, v.opts.Log.Name())
	case h.Tenant == nil || *h.Tenant == "" || strings.ContainsAny(*h.Tenant, "\n "):
		return v.errf(-1, "header names no tenant")
	case h.Deployments == nil:
		return v.errf(-1, "header has no deployments")
	case h.Size == nil || *h.Size == 0:
		return v.errf(-1, "header has no checkpoint size")
	}
	for _, s := range []struct {
		val string
		t   *time.Time
	}{{h.Since, &v.rep.Since}, {h.Until, &v.rep.Until}} {
		if s.val == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, s.val)
		if err != nil {
			return v.errf(-1, "header time %q is not RFC 3339", s.val)
		}
		*s.t = t
	}
	v.digest.Write(l)
	v.digest.Write([]byte("\n"))
	v.scope = TenantScope{Tenant: *h.Tenant, Deployments: *h.Deployments}
	v.rep.Origin, v.rep.Tenant, v.rep.Deployments = *h.Origin, *h.Tenant, *h.Deployments
	v.rep.Checkpoint.Size = *h.Size
	v.rep.Types = map[Type]int{}
	v.state = tvCheckpoint
	return nil
}

func (v *tenantVerifier) checkpoint(l []byte) error {
	size, text, err := v.noteLine(l, kindCheckpoint)
	if err != nil {
		return err
	}
	c, err := OpenCheckpoint(text, v.opts.Log)
	if err != nil {
		return v.errf(-1, "checkpoint %d: %v", size, err)
	}
	if c.Size != size || size != v.rep.Checkpoint.Size {
		return v.errf(-1, "checkpoint line says size %d, its note %d, the header %d", size, c.Size, v.rep.Checkpoint.Size)
	}
	v.cp, v.cpBody = c, c.Body()
	v.rep.Checkpoint.Time, v.rep.Checkpoint.Root = c.Time, c.Root
	v.state = tvCosignature
	return nil
}

func (v *tenantVerifier) cosignature(l []byte) error {
	size, text, err := v.noteLine(l, kindCosignature)
	if err != nil {
		return err
	}
	if size != v.cp.Size {
		return v.errf(-1, "cosignature %d is not of checkpoint %d", size, v.cp.Size)
	}
	c, names, n, err := openWitnessed(text, v.opts.Log, v.opts.Witnesses)
	if err != nil {
		return v.errf(-1, "cosignature %d: %v", size, err)
	}
	if c.Body() != v.cpBody {
		return v.errf(-1, "cosignature %d is of a different checkpoint than the log's", size)
	}
	if len(names) == 0 && len(n.UnverifiedSigs) == 0 {
		return v.errf(-1, "cosignature %d carries no signature but the log's", size)
	}
	for _, s := range n.UnverifiedSigs {
		for _, w := range v.opts.Witnesses {
			if s.Name == w.Name() {
				return v.errf(-1, "cosignature %d is signed by witness %s with key %08x, not the witness key given (%08x)", size, s.Name, s.Hash, w.KeyHash())
			}
		}
	}
	for _, name := range names {
		if !slices.Contains(v.rep.Checkpoint.Witnesses, name) {
			v.rep.Checkpoint.Witnesses = append(v.rep.Checkpoint.Witnesses, name)
		}
	}
	v.state = tvEvents
	return nil
}

// witnessed checks, once the cosignatures are read, that a given witness
// cosigned the checkpoint.
func (v *tenantVerifier) witnessed() error {
	if v.state != tvEvents {
		return v.errf(-1, "want a cosignature first")
	}
	if len(v.rep.Checkpoint.Witnesses) == 0 {
		var given []string
		for _, w := range v.opts.Witnesses {
			given = append(given, w.Name())
		}
		return v.errf(-1, "checkpoint %d is not cosigned by any witness key given (%s): it is not proven to you", v.cp.Size, strings.Join(given, ", "))
	}
	return nil
}

func (v *tenantVerifier) event(l []byte) error {
	var w struct {
		Kind     string          `json:"kind"`
		Index    *uint64         `json:"index"`
		LeafHash *string         `json:"leaf_hash"`
		Proof    *[]string       `json:"proof"`
		Event    json.RawMessage `json:"event"`
	}
	if err := decodeStrict(l, &w); err != nil {
		return v.errf(-1, "malformed event line: %v", err)
	}
	if w.Index == nil {
		return v.errf(-1, "event line has no index")
	}
	index := *w.Index
	ix := eventIndex(index)
	switch {
	case w.LeafHash == nil || w.Proof == nil || w.Event == nil:
		return v.errf(ix, "event line needs a leaf_hash, a proof and an event")
	case index >= v.cp.Size:
		return v.errf(ix, "event %d is not in the checkpoint's tree of %d events", index, v.cp.Size)
	case index < v.next:
		return v.errf(ix, "event %d follows event %d: out of order or repeated", index, v.next-1)
	}
	leaf, ok := decodeHash([]byte(*w.LeafHash))
	if !ok {
		return v.errf(ix, "leaf_hash is not 64 lowercase hex digits")
	}
	if LeafHash(w.Event) != leaf {
		return v.errf(ix, "leaf hash does not match the event's bytes (edited?)")
	}
	proof := make([][32]byte, len(*w.Proof))
	for i, s := range *w.Proof {
		if proof[i], ok = decodeHash([]byte(s)); !ok {
			return v.errf(ix, "proof hash %d is not 64 lowercase hex digits", i)
		}
	}
	if err := VerifyInclusion(leaf, index, v.cp.Size, proof, v.cp.Root); err != nil {
		return v.errf(ix, "the inclusion proof does not lead to checkpoint %d's root: %v", v.cp.Size, err)
	}
	if w.Event[0] != '{' {
		return v.errf(ix, "event is not a JSON object")
	}
	var e Event
	if err := json.Unmarshal(w.Event, &e); err != nil {
		return v.errf(ix, "event does not decode: %v", err)
	}
	if err := e.Validate(); err != nil {
		return v.errf(ix, "invalid event: %v", err)
	}
	if !v.scope.Includes(e) {
		return v.errf(ix, "event %s (deployment %q, actor of tenant %q) is not tenant %s's", e.ID, e.Deployment, e.Actor.Tenant, v.scope.Tenant)
	}
	digestEvent(v.digest, index, leaf)
	if v.rep.Events == 0 {
		v.rep.First = index
	}
	v.rep.Last = index
	v.rep.Events++
	v.rep.Types[e.Type]++
	v.next = index + 1
	return nil
}

func (v *tenantVerifier) end(l []byte) error {
	var e struct {
		Kind    string  `json:"kind"`
		Events  *uint64 `json:"events"`
		Pending *uint64 `json:"pending"`
		Note    *string `json:"note"`
	}
	if err := decodeStrict(l, &e); err != nil {
		return v.errf(-1, "malformed end line: %v", err)
	}
	if e.Events == nil || e.Pending == nil || e.Note == nil {
		return v.errf(-1, "end line needs events, pending and a note")
	}
	if *e.Events != uint64(v.rep.Events) {
		return v.errf(-1, "end line counts %d events, the export holds %d (lines dropped?)", *e.Events, v.rep.Events)
	}
	n, err := openNote(*e.Note, v.opts.Log)
	if err == nil && !signedBy(n, v.opts.Log) {
		err = fmt.Errorf("not signed by %s+%08x", v.opts.Log.Name(), v.opts.Log.KeyHash())
	}
	if err != nil {
		return v.errf(-1, "end note: %v", err)
	}
	origin, tenant, size, events, pending, digest, err := parseTenantNote(n.Text)
	if err != nil {
		return v.errf(-1, "end note: %v", err)
	}
	got := hex.EncodeToString(v.digest.Sum(nil))
	switch {
	case origin != v.rep.Origin || tenant != v.rep.Tenant || size != v.cp.Size:
		return v.errf(-1, "end note is of log %q, tenant %q, checkpoint %d; the export of %q, %q, %d", origin, tenant, size, v.rep.Origin, v.rep.Tenant, v.cp.Size)
	case events != uint64(v.rep.Events):
		return v.errf(-1, "the log signed an export of %d events, the file holds %d (events dropped or added)", events, v.rep.Events)
	case pending != *e.Pending:
		return v.errf(-1, "end line says %d pending, the log signed %d", *e.Pending, pending)
	case digest != got:
		return v.errf(-1, "the header or the events are not those the log signed (an event was changed, dropped, added or reordered, or the header edited)")
	}
	v.rep.Pending = pending
	v.state = tvEnded
	return nil
}

// noteLine decodes a checkpoint or cosignature line.
func (v *tenantVerifier) noteLine(l []byte, kind string) (uint64, string, error) {
	var n struct {
		Kind string  `json:"kind"`
		Size *uint64 `json:"size"`
		Note *string `json:"note"`
	}
	if err := decodeStrict(l, &n); err != nil {
		return 0, "", v.errf(-1, "malformed %s line: %v", kind, err)
	}
	if n.Size == nil || n.Note == nil {
		return 0, "", v.errf(-1, "%s line needs a size and a note", kind)
	}
	return *n.Size, *n.Note, nil
}

func (v *tenantVerifier) finish() (TenantReport, error) {
	switch {
	case v.state == tvHeader:
		return TenantReport{}, &VerifyError{Line: 1, Index: -1, Msg: "the export is empty: want a header"}
	case v.state != tvEnded:
		return TenantReport{}, &VerifyError{Index: -1, Msg: fmt.Sprintf("the export ends after line %d without an end line (truncated?)", v.line)}
	}
	return v.rep, nil
}

func (v *tenantVerifier) errf(index int64, format string, args ...any) error {
	return &VerifyError{Line: v.line, Index: index, Msg: fmt.Sprintf(format, args...)}
}

// ExportFormatOf returns the format its header line names, given the
// first line of an export: [ExportFormat] or [TenantExportFormat].
func ExportFormatOf(firstLine []byte) (string, error) {
	var h struct {
		Kind   string `json:"kind"`
		Format string `json:"format"`
	}
	if err := json.Unmarshal(firstLine, &h); err != nil || h.Kind != kindHeader {
		return "", errors.New("the first line is not an export's header")
	}
	return h.Format, nil
}
