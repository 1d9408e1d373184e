package audit

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/bits"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
)

// A tenant export holds one tenant's events and nothing of any other
// tenant's, each with its own proof, so that the customer checks it
// offline against a checkpoint their own agent cosigned:
//
//	{"kind":"header","format":"tether-audit-tenant-export/v1","origin":"<log>","tenant":"acme","deployments":["<id>",...],"since":"<time>","until":"<time>","size":<S>}
//	{"kind":"checkpoint","size":<S>,"note":"<checkpoint of size S signed by the log>"}
//	{"kind":"cosignature","size":<S>,"note":"<the same checkpoint, signed by the log and a witness>"}
//	{"kind":"event","index":<n>,"leaf_hash":"<hex>","proof":["<hex>",...],"event":<the event's stored bytes>}
//	{"kind":"end","events":<count>,"pending":<count>,"note":"<export note signed by the log>"}
//
// S is the size of the newest checkpoint one of the tenant's agents
// cosigned; every cosignature of it by one of the tenant's agents follows
// the checkpoint (at least one). Each event line's proof is the RFC 6962
// inclusion proof of its leaf in the tree of size S; events are in index
// order, with gaps where other tenants' events are. since and until
// (RFC 3339, optional) are the time range asked for. The tenant's events
// after S cannot be proven yet: they are not in the export, and pending
// counts them (export again once the agent has cosigned a newer
// checkpoint). The end line's note, signed by the log's key, states the
// origin, tenant, S, the count of events and pending, and a digest of the
// header line and of every event's index and leaf hash, so that an event
// dropped from the file, or a header edited, is detected even with the
// counts edited to match.
//
// What it cannot prove: that the broker left none of the tenant's events
// out. That needs every leaf, and the other leaves are other tenants'.
// The agent's own journal is the customer's check on that.

// TenantExportFormat is the format string in a tenant export's header.
const TenantExportFormat = "tether-audit-tenant-export/v1"

// TenantScope says which events are a tenant's: those about one of its
// deployments, and those about no deployment whose actor is of the
// tenant. An event about another tenant's deployment is never the
// tenant's, whoever acted: it may quote that tenant's requests.
type TenantScope struct {
	Tenant      string
	Deployments []string // the IDs of the tenant's deployments
}

// Includes reports whether e is the tenant's.
func (s TenantScope) Includes(e Event) bool {
	return s.includes(e.Deployment, e.Actor.Tenant)
}

func (s TenantScope) includes(deployment, actorTenant string) bool {
	if s.Tenant == "" {
		return false
	}
	if deployment != "" {
		return slices.Contains(s.Deployments, deployment)
	}
	return actorTenant == s.Tenant
}

// IncludesRecord reports whether the stored record r is the tenant's. It
// decodes r's data only when r names no deployment.
func (s TenantScope) IncludesRecord(r Record) bool {
	if r.Deployment != "" {
		return s.includes(r.Deployment, "")
	}
	var e struct {
		Deployment string `json:"deployment"`
		Actor      struct {
			Tenant string `json:"tenant"`
		} `json:"actor"`
	}
	if json.Unmarshal(r.Data, &e) != nil {
		return false
	}
	return s.includes(e.Deployment, e.Actor.Tenant)
}

// TenantExportOptions selects a tenant export.
type TenantExportOptions struct {
	Scope TenantScope
	// Witness reports whether the witness with the given note key name is
	// one of the tenant's agents. Required.
	Witness      func(ctx context.Context, name string) (bool, error)
	Since, Until time.Time // by event time; zero means unbounded
}

// ErrNotWitnessed reports that none of a tenant's agents has cosigned a
// checkpoint yet, so none of its events can be proven to it.
var ErrNotWitnessed = errors.New("no checkpoint is cosigned by the tenant's agents yet")

// TenantExport is a tenant export ready to write: its checkpoint is chosen
// and the proofs against it can be made.
type TenantExport struct {
	l      *Log
	opts   TenantExportOptions
	cp     StoredCheckpoint
	cosigs []Cosignature
	prover *prover
}

// TenantExportResult is what [TenantExport.WriteTo] wrote.
type TenantExportResult struct {
	Size      uint64   // the checkpoint the events are proven against
	Witnesses []string // the tenant's witnesses that cosigned it
	Events    uint64   // events written
	Pending   uint64   // the tenant's events after the checkpoint, left out
}

// PrepareTenantExport chooses the newest checkpoint one of the tenant's
// agents cosigned and reads what proving events against it needs: one
// pass over the leaf hashes, keeping 64 bytes per 4096 events. Errors come
// here, before anything is written: [ErrNotWitnessed] when no agent of the
// tenant has cosigned a checkpoint.
func (l *Log) PrepareTenantExport(ctx context.Context, opts TenantExportOptions) (*TenantExport, error) {
	if opts.Scope.Tenant == "" || opts.Witness == nil {
		return nil, errors.New("tenant export: a tenant and a witness check are required")
	}
	st := l.cfg.Storage
	latest, ok, err := st.LatestCheckpoint(ctx)
	if err != nil {
		return nil, fmt.Errorf("tenant export: %w", err)
	}
	if !ok {
		return nil, ErrNotWitnessed
	}
	known := map[string]bool{}
	isWitness := func(name string) (bool, error) {
		if w, ok := known[name]; ok {
			return w, nil
		}
		w, err := opts.Witness(ctx, name)
		if err != nil {
			return false, err
		}
		known[name] = w
		return w, nil
	}
	// The newest checkpoint a tenant's agent cosigned, looking back in
	// growing windows of checkpoint sizes.
	var cosigs []Cosignature
	for hi, window := latest.Size, uint64(1024); hi > 0 && cosigs == nil; window *= 4 {
		lo := uint64(1)
		if hi > window {
			lo = hi - window + 1
		}
		cs, err := st.Cosignatures(ctx, lo, hi)
		if err != nil {
			return nil, fmt.Errorf("tenant export: %w", err)
		}
		for i := len(cs) - 1; i >= 0; i-- {
			if cosigs != nil && cs[i].Size != cosigs[0].Size {
				break
			}
			w, err := isWitness(cs[i].Witness)
			if err != nil {
				return nil, fmt.Errorf("tenant export: witness %s: %w", cs[i].Witness, err)
			}
			if w {
				cosigs = append(cosigs, cs[i])
			}
		}
		hi = lo - 1
	}
	if cosigs == nil {
		return nil, ErrNotWitnessed
	}
	slices.Reverse(cosigs)
	size := cosigs[0].Size
	cps, err := st.Checkpoints(ctx, size, size)
	if err != nil {
		return nil, fmt.Errorf("tenant export: %w", err)
	}
	if len(cps) != 1 {
		return nil, fmt.Errorf("tenant export: checkpoint %d, which the tenant's agent cosigned, is missing from the store", size)
	}
	text, err := checkpointText(cps[0].Note, size)
	if err != nil {
		return nil, fmt.Errorf("tenant export: checkpoint %d: %w", size, err)
	}
	for _, c := range cosigs {
		if t, err := checkpointText(c.Note, size); err != nil || t != text {
			return nil, fmt.Errorf("tenant export: %s's cosignature is not of the log's checkpoint %d", c.Witness, size)
		}
	}
	p, err := newProver(ctx, size, proofChunkBits, st.LeafHashes)
	if err != nil {
		return nil, fmt.Errorf("tenant export: %w", err)
	}
	return &TenantExport{l: l, opts: opts, cp: cps[0], cosigs: cosigs, prover: p}, nil
}

// tenantHeader is the first line of a tenant export.
type tenantHeader struct {
	Kind        string   `json:"kind"`
	Format      string   `json:"format"`
	Origin      string   `json:"origin"`
	Tenant      string   `json:"tenant"`
	Deployments []string `json:"deployments"`
	Since       string   `json:"since,omitempty"`
	Until       string   `json:"until,omitempty"`
	Size        uint64   `json:"size"`
}

// tenantEnd is the last line of a tenant export.
type tenantEnd struct {
	Kind    string `json:"kind"`
	Events  uint64 `json:"events"`
	Pending uint64 `json:"pending"`
	Note    string `json:"note"`
}

// tenantEventPrefix starts every event line of a tenant export.
const tenantEventPrefix = `{"kind":"event","index":`

// WriteTo streams the export to w: the tenant's events are read from the
// store a page at a time and written as they are found, so memory does
// not grow with the export. progress, if not nil, is called after each
// page (to extend a write deadline, say). A failure part way leaves w
// without the end line, which [VerifyTenant] reports as truncated.
func (x *TenantExport) WriteTo(ctx context.Context, w io.Writer, progress func()) (TenantExportResult, error) {
	st, size := x.l.cfg.Storage, x.cp.Size
	res := TenantExportResult{Size: size}
	for _, c := range x.cosigs {
		res.Witnesses = append(res.Witnesses, c.Witness)
	}
	deps := x.opts.Scope.Deployments
	if deps == nil {
		deps = []string{}
	}
	h := tenantHeader{Kind: kindHeader, Format: TenantExportFormat, Origin: x.l.Origin(), Tenant: x.opts.Scope.Tenant, Deployments: deps, Size: size}
	if !x.opts.Since.IsZero() {
		h.Since = x.opts.Since.UTC().Format(time.RFC3339Nano)
	}
	if !x.opts.Until.IsZero() {
		h.Until = x.opts.Until.UTC().Format(time.RFC3339Nano)
	}
	tw := &tenantWriter{w: bufio.NewWriterSize(w, 64<<10), digest: sha256.New()}
	hb, err := json.Marshal(h)
	if err != nil {
		return res, err
	}
	tw.digest.Write(hb)
	tw.digest.Write([]byte("\n"))
	tw.line(hb)
	tw.json(exportNote{Kind: kindCheckpoint, Size: size, Note: x.cp.Note})
	for _, c := range x.cosigs {
		tw.json(exportNote{Kind: kindCosignature, Size: size, Note: c.Note})
	}
	if tw.err != nil {
		return res, fmt.Errorf("tenant export: %w", tw.err)
	}
	end, err := st.AuditSize(ctx)
	if err != nil {
		return res, fmt.Errorf("tenant export: %w", err)
	}
	for next := uint64(0); next < end; next += exportPage {
		recs, err := st.Records(ctx, Filter{FromIndex: next, ToIndex: min(next+exportPage, end)})
		if err != nil {
			return res, fmt.Errorf("tenant export: %w", err)
		}
		for _, r := range recs {
			if !x.opts.Since.IsZero() && r.Time.Before(x.opts.Since) || !x.opts.Until.IsZero() && !r.Time.Before(x.opts.Until) {
				continue
			}
			if !x.opts.Scope.IncludesRecord(r) {
				continue
			}
			if r.Index >= size {
				res.Pending++
				continue
			}
			if err := CheckRecord(r); err != nil {
				x.l.reportTamper(ctx, err, "export")
				return res, fmt.Errorf("tenant export: %w", err)
			}
			proof, err := x.prover.proof(ctx, r.Index)
			if err != nil {
				return res, fmt.Errorf("tenant export: event %d: %w", r.Index, err)
			}
			if err := tw.event(r.Index, r.LeafHash, proof, r.Data); err != nil {
				return res, fmt.Errorf("tenant export: %w", err)
			}
			res.Events++
		}
		if tw.err != nil {
			return res, fmt.Errorf("tenant export: %w", tw.err)
		}
		if progress != nil {
			progress()
		}
	}
	body := tenantNoteText(x.l.Origin(), x.opts.Scope.Tenant, size, res.Events, res.Pending, tw.digest.Sum(nil))
	signed, err := note.Sign(&note.Note{Text: body}, x.l.cfg.Signer)
	if err != nil {
		return res, fmt.Errorf("tenant export: sign: %w", err)
	}
	tw.json(tenantEnd{Kind: kindEnd, Events: res.Events, Pending: res.Pending, Note: string(signed)})
	if tw.err == nil {
		tw.err = tw.w.Flush()
	}
	if tw.err != nil {
		return res, fmt.Errorf("tenant export: %w", tw.err)
	}
	return res, nil
}

// tenantNoteText is the text the log signs at the end of a tenant export.
// Its first line is the format, never a log's origin, so it cannot pass
// for a checkpoint.
func tenantNoteText(origin, tenant string, size, events, pending uint64, digest []byte) string {
	return fmt.Sprintf("%s\n%s\n%s\n%d\n%d\n%d\n%x\n", TenantExportFormat, origin, tenant, size, events, pending, digest)
}

// digestEvent adds one event to a tenant export's digest.
func digestEvent(h hash.Hash, index uint64, leaf [32]byte) {
	var b [8 + 32]byte
	binary.BigEndian.PutUint64(b[:8], index)
	copy(b[8:], leaf[:])
	h.Write(b[:])
}

// tenantWriter writes a tenant export's lines; its first error sticks.
type tenantWriter struct {
	w      *bufio.Writer
	digest hash.Hash
	buf    []byte
	err    error
}

func (tw *tenantWriter) line(b []byte) {
	if tw.err != nil {
		return
	}
	if len(b)+1 > maxLine {
		tw.err = fmt.Errorf("line is %d bytes, more than the %d an export may hold", len(b)+1, maxLine)
		return
	}
	if _, err := tw.w.Write(b); err != nil {
		tw.err = err
		return
	}
	if err := tw.w.WriteByte('\n'); err != nil {
		tw.err = err
	}
}

func (tw *tenantWriter) json(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		tw.err = err
		return
	}
	tw.line(b)
}

func (tw *tenantWriter) event(index uint64, leaf [32]byte, proof [][32]byte, raw []byte) error {
	if tw.err != nil {
		return tw.err
	}
	if len(raw) == 0 || raw[0] != '{' || bytes.IndexByte(raw, '\n') >= 0 || !json.Valid(raw) {
		return fmt.Errorf("event %d: stored bytes are not a one-line JSON object", index)
	}
	b := append(tw.buf[:0], tenantEventPrefix...)
	b = strconv.AppendUint(b, index, 10)
	b = append(b, `,"leaf_hash":"`...)
	b = hex.AppendEncode(b, leaf[:])
	b = append(b, `","proof":[`...)
	for i, h := range proof {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = hex.AppendEncode(b, h[:])
		b = append(b, '"')
	}
	b = append(b, `],"event":`...)
	b = append(b, raw...)
	b = append(b, '}')
	tw.buf = b
	digestEvent(tw.digest, index, leaf)
	tw.line(b)
	return tw.err
}

// proofChunkBits sets the chunks a [prover] keeps one hash for: 2^12
// leaves, so 64 bytes per 4096 events (16 MB for a billion).
const proofChunkBits = 12

// prover makes RFC 6962 inclusion proofs in the tree of the first size
// leaves without holding every leaf hash. It keeps the root of each chunk
// of 2^chunkBits leaves (the last chunk may be shorter), and every
// complete node above them; the leaf hashes of one chunk at a time are
// read again from the store. Every aligned chunk is a node of the RFC 6962
// tree, and the tree above the chunks is the RFC 6962 tree whose leaves
// are the chunks' roots, so a proof is the path inside the chunk followed
// by the path of the chunk among the chunks. Each is O(log n) hashes,
// read from the complete nodes kept.
type prover struct {
	size      uint64
	chunkBits int
	top       nodes // over the chunks' roots
	leaves    func(ctx context.Context, from, to uint64) ([][32]byte, error)

	chunk uint64 // the chunk whose nodes are held, when have
	inner nodes  // over that chunk's leaves
	have  bool
}

// newProver reads the leaf hashes of the tree of the given size once.
func newProver(ctx context.Context, size uint64, chunkBits int, leaves func(ctx context.Context, from, to uint64) ([][32]byte, error)) (*prover, error) {
	if size == 0 {
		return nil, errors.New("prover: empty tree")
	}
	chunk := uint64(1) << chunkBits
	page := max(chunk, 1<<16)
	var roots [][32]byte
	for from := uint64(0); from < size; from += page {
		to := min(from+page, size)
		hs, err := leaves(ctx, from, to)
		if err != nil {
			return nil, err
		}
		if uint64(len(hs)) != to-from {
			return nil, fmt.Errorf("prover: the store has %d leaf hashes for events %d..%d", len(hs), from, to-1)
		}
		for i := uint64(0); i < uint64(len(hs)); i += chunk {
			roots = append(roots, mth(hs[i:min(i+chunk, uint64(len(hs)))]))
		}
	}
	return &prover{size: size, chunkBits: chunkBits, top: newNodes(roots), leaves: leaves}, nil
}

// proof returns the inclusion proof of the leaf at index.
func (p *prover) proof(ctx context.Context, index uint64) ([][32]byte, error) {
	if index >= p.size {
		return nil, fmt.Errorf("index %d is not in the tree of size %d", index, p.size)
	}
	c := index >> p.chunkBits
	if !p.have || p.chunk != c {
		from := c << p.chunkBits
		to := min(from+1<<p.chunkBits, p.size)
		hs, err := p.leaves(ctx, from, to)
		if err != nil {
			return nil, err
		}
		if uint64(len(hs)) != to-from {
			return nil, fmt.Errorf("the store has %d leaf hashes for events %d..%d", len(hs), from, to-1)
		}
		inner := newNodes(hs)
		if inner.root() != p.top[0][c] {
			return nil, &TamperError{Index: from, What: fmt.Sprintf("the leaf hashes of events %d..%d changed while the export was written", from, to-1)}
		}
		p.chunk, p.inner, p.have = c, inner, true
	}
	out := p.inner.path(nil, index-c<<p.chunkBits, 0, p.inner.width())
	return p.top.path(out, c, 0, p.top.width()), nil
}

// nodes holds the complete nodes of the RFC 6962 tree over some leaf
// hashes: nodes[0] the leaves, nodes[k][j] the node over leaves
// [j<<k, (j+1)<<k), for every such range inside the leaves.
type nodes [][][32]byte

func newNodes(leaves [][32]byte) nodes {
	n := nodes{leaves}
	for prev := leaves; len(prev) >= 2; {
		next := make([][32]byte, len(prev)/2)
		for j := range next {
			next[j] = nodeHash(&prev[2*j], &prev[2*j+1])
		}
		n = append(n, next)
		prev = next
	}
	return n
}

func (n nodes) width() uint64 { return uint64(len(n[0])) }

func (n nodes) root() [32]byte { return n.hash(0, n.width()) }

// path appends PATH(m, D[lo:hi]) (RFC 6962 §2.1.1) to out.
func (n nodes) path(out [][32]byte, m, lo, hi uint64) [][32]byte {
	w := hi - lo
	if w <= 1 {
		return out
	}
	k := split(w)
	if m < k {
		out = n.path(out, m, lo, lo+k)
		return append(out, n.hash(lo+k, hi))
	}
	out = n.path(out, m-k, lo+k, hi)
	return append(out, n.hash(lo, lo+k))
}

// hash returns MTH(D[lo:hi]), a node of the tree: lo is a multiple of the
// largest power of two not above hi-lo.
func (n nodes) hash(lo, hi uint64) [32]byte {
	w := hi - lo
	if w&(w-1) == 0 {
		k := bits.TrailingZeros64(w)
		return n[k][lo>>k]
	}
	k := split(w)
	l, r := n.hash(lo, lo+k), n.hash(lo+k, hi)
	return nodeHash(&l, &r)
}

// parseTenantNote parses the text of a tenant export's end note.
func parseTenantNote(text string) (origin, tenant string, size, events, pending uint64, digest string, err error) {
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if len(lines) != 7 || lines[0] != TenantExportFormat {
		return "", "", 0, 0, 0, "", fmt.Errorf("not a %s note", TenantExportFormat)
	}
	nums := make([]uint64, 3)
	for i, s := range lines[3:6] {
		if nums[i], err = strconv.ParseUint(s, 10, 64); err != nil {
			return "", "", 0, 0, 0, "", fmt.Errorf("line %d %q is not a number", i+4, s)
		}
	}
	return lines[1], lines[2], nums[0], nums[1], nums[2], lines[6], nil
}
