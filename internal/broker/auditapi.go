package broker

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/agentapi"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/tailnet"
)

func parseTimeParam(r *http.Request, name string) (time.Time, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, errorf(http.StatusBadRequest, "invalid_"+name, "%s %q: want an RFC 3339 time such as 2026-11-25T10:00:00Z", name, s)
	}
	return t, nil
}

func parseUintParam(r *http.Request, name string, required bool) (uint64, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		if required {
			return 0, errorf(http.StatusBadRequest, "missing_"+name, "query parameter %s is required", name)
		}
		return 0, nil
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, errorf(http.StatusBadRequest, "invalid_"+name, "%s %q: want a whole number", name, s)
	}
	return v, nil
}

func (b *Broker) handleAuditSearch(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	f := audit.Filter{
		Subject:    q.Get("actor"),
		Deployment: q.Get("deployment"),
		Type:       audit.Type(q.Get("type")),
		GrantID:    q.Get("grant"),
		RequestID:  q.Get("request"),
		Limit:      1000,
	}
	if f.Type != "" && !f.Type.Known() {
		return errorf(http.StatusBadRequest, "invalid_type", "event type %q is not known: see docs/audit.md for the list", f.Type)
	}
	var err error
	if f.Since, err = parseTimeParam(r, "since"); err != nil {
		return err
	}
	if f.Until, err = parseTimeParam(r, "until"); err != nil {
		return err
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 100000 {
			return errorf(http.StatusBadRequest, "invalid_limit", "limit %q: want a whole number from 1 to 100000", s)
		}
		f.Limit = n
	}
	recs, err := b.auditLog.Records(r.Context(), f)
	if err != nil {
		return auditReadError("search audit log", err)
	}
	out := brokerapi.AuditEvents{Events: make([]brokerapi.AuditEvent, 0, len(recs))}
	for _, rec := range recs {
		out.Events = append(out.Events, brokerapi.AuditEvent{Index: rec.Index, Event: json.RawMessage(rec.Data)})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// auditReadError turns a failed read of the audit log into the API's
// answer: a record that does not match what the log signed is refused
// with a message naming it (the log has already logged, counted and
// recorded it), anything else is an internal error.
func auditReadError(what string, err error) error {
	var te *audit.TamperError
	if errors.As(err, &te) {
		return errorf(http.StatusInternalServerError, "audit_tampered",
			"%s: %v; nothing is shown until the store is restored: compare it with an export (broker audit verify)", what, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

func (b *Broker) handleAuditCheckpoint(w http.ResponseWriter, r *http.Request) error {
	c, ok, err := b.auditLog.Latest(r.Context())
	if err != nil {
		return fmt.Errorf("latest checkpoint: %w", err)
	}
	if !ok {
		return errorf(http.StatusNotFound, "no_checkpoint", "the audit log has no checkpoint yet")
	}
	cosigs, err := b.store.Cosignatures(r.Context(), c.Size, c.Size)
	if err != nil {
		return fmt.Errorf("cosignatures: %w", err)
	}
	out := brokerapi.AuditCheckpoint{Size: c.Size, Root: hex.EncodeToString(c.Root[:]), Time: c.Time, Note: c.Note}
	for _, cs := range cosigs {
		out.Witnesses = append(out.Witnesses, cs.Witness)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func hexProof(p [][32]byte) []string {
	out := make([]string, len(p))
	for i, h := range p {
		out[i] = hex.EncodeToString(h[:])
	}
	return out
}

func (b *Broker) handleInclusionProof(w http.ResponseWriter, r *http.Request) error {
	index, err := parseUintParam(r, "index", true)
	if err != nil {
		return err
	}
	size, err := parseUintParam(r, "size", false)
	if err != nil {
		return err
	}
	if size == 0 {
		size = b.auditLog.LatestSize()
	}
	if index >= size || size > b.auditLog.LatestSize() {
		return errorf(http.StatusBadRequest, "invalid_range", "want index < size <= %d (the latest checkpoint)", b.auditLog.LatestSize())
	}
	proof, err := b.auditLog.InclusionProof(r.Context(), index, size)
	if err != nil {
		return fmt.Errorf("inclusion proof: %w", err)
	}
	recs, err := b.auditLog.Records(r.Context(), audit.Filter{FromIndex: index, ToIndex: index + 1})
	if err != nil {
		return auditReadError("inclusion proof", err)
	}
	if len(recs) != 1 {
		return fmt.Errorf("inclusion proof: event %d is missing from the store", index)
	}
	writeJSON(w, http.StatusOK, brokerapi.InclusionProof{
		Index: index, Size: size, LeafHash: hex.EncodeToString(recs[0].LeafHash[:]),
		Event: json.RawMessage(recs[0].Data), Proof: hexProof(proof),
	})
	return nil
}

func (b *Broker) handleConsistencyProof(w http.ResponseWriter, r *http.Request) error {
	from, err := parseUintParam(r, "from", true)
	if err != nil {
		return err
	}
	to, err := parseUintParam(r, "to", false)
	if err != nil {
		return err
	}
	if to == 0 {
		to = b.auditLog.LatestSize()
	}
	if from == 0 || from > to || to > b.auditLog.LatestSize() {
		return errorf(http.StatusBadRequest, "invalid_range", "want 0 < from <= to <= %d (the latest checkpoint)", b.auditLog.LatestSize())
	}
	proof, err := b.auditLog.ConsistencyProof(r.Context(), from, to)
	if err != nil {
		return fmt.Errorf("consistency proof: %w", err)
	}
	writeJSON(w, http.StatusOK, brokerapi.ConsistencyProof{From: from, To: to, Proof: hexProof(proof)})
	return nil
}

func (b *Broker) handleAuditExport(w http.ResponseWriter, r *http.Request) error {
	since, err := parseTimeParam(r, "since")
	if err != nil {
		return err
	}
	until, err := parseTimeParam(r, "until")
	if err != nil {
		return err
	}
	// Build the export in memory first so that a failure is a clean
	// error response, not a truncated body.
	var buf bytes.Buffer
	bw := bufio.NewWriter(&buf)
	if _, _, err := b.auditLog.Export(r.Context(), bw, audit.ExportOptions{Since: since, Until: until}); err != nil {
		if errors.Is(err, audit.ErrNothingToExport) {
			return errorf(http.StatusNotFound, "nothing_to_export", "no checkpointed audit events in that range")
		}
		return fmt.Errorf("export: %w", err)
	}
	bw.Flush()
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(buf.Bytes())
	return nil
}

func (b *Broker) handleAuditPublicKey(w http.ResponseWriter, r *http.Request) error {
	vkey, err := audit.VerifierKey(b.auditLog.Origin(), b.PublicKey())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, brokerapi.AuditPublicKey{Origin: b.auditLog.Origin(), VerifierKey: vkey})
	return nil
}

// Agent side: checkpoints to witness, cosignatures, spooled events.

func (b *Broker) logVerifier() (note.Verifier, error) {
	vkey, err := audit.VerifierKey(b.auditLog.Origin(), b.PublicKey())
	if err != nil {
		return nil, err
	}
	return audit.NewVerifier(vkey)
}

func (b *Broker) handleCheckpointForWitness(w http.ResponseWriter, r *http.Request, id tailnet.Identity) error {
	s, err := b.session(r, id)
	if err != nil {
		return err
	}
	var req agentapi.CheckpointRequest
	if err := decodeJSON(w, r, agentapi.MaxBody, &req); err != nil {
		return err
	}
	c, ok, err := b.auditLog.Latest(r.Context())
	if err != nil {
		return fmt.Errorf("latest checkpoint: %w", err)
	}
	if !ok {
		return errorf(http.StatusNotFound, "no_checkpoint", "the audit log has no checkpoint yet")
	}
	res := agentapi.CheckpointResponse{Note: c.Note, Size: c.Size}
	if req.SinceSize > c.Size {
		return errorf(http.StatusBadRequest, "invalid_size", "since_size %d is beyond the latest checkpoint %d", req.SinceSize, c.Size)
	}
	if req.SinceSize > 0 && req.SinceSize < c.Size {
		proof, err := b.auditLog.ConsistencyProof(r.Context(), req.SinceSize, c.Size)
		if err != nil {
			return fmt.Errorf("consistency proof for agent %s: %w", s.agentID, err)
		}
		for _, h := range proof {
			res.Proof = append(res.Proof, h[:])
		}
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

func (b *Broker) handleCosign(w http.ResponseWriter, r *http.Request, id tailnet.Identity) error {
	s, err := b.session(r, id)
	if err != nil {
		return err
	}
	var req agentapi.CosignRequest
	if err := decodeJSON(w, r, agentapi.MaxBody, &req); err != nil {
		return err
	}
	a, err := b.store.GetAgent(r.Context(), s.agentID)
	if err != nil {
		return fmt.Errorf("get agent: %w", err)
	}
	lv, err := b.logVerifier()
	if err != nil {
		return err
	}
	name := agentapi.WitnessName(a.ID)
	wkey, err := audit.VerifierKey(name, a.PublicKey)
	if err != nil {
		return err
	}
	wv, err := audit.NewVerifier(wkey)
	if err != nil {
		return err
	}
	cp, witnesses, err := audit.WitnessedBy(req.Note, lv, []note.Verifier{wv})
	if err != nil || len(witnesses) != 1 || cp.Size != req.Size {
		b.authFailed(r.Context(), r, id, a.ID, "cosignature does not verify")
		return errorf(http.StatusBadRequest, "bad_cosignature", "cosignature does not verify for checkpoint %d", req.Size)
	}
	stored, err := b.store.Checkpoints(r.Context(), cp.Size, cp.Size)
	if err != nil {
		return fmt.Errorf("checkpoint %d: %w", cp.Size, err)
	}
	if len(stored) != 1 || stored[0].Root != cp.Root {
		return errorf(http.StatusBadRequest, "unknown_checkpoint", "checkpoint %d is not one this broker signed", cp.Size)
	}
	if err := b.store.AddCosignature(r.Context(), audit.Cosignature{Size: cp.Size, Witness: name, Note: req.Note, At: b.now()}); err != nil {
		return fmt.Errorf("store cosignature: %w", err)
	}
	writeJSON(w, http.StatusOK, struct{}{})
	return nil
}

func (b *Broker) handleEvents(w http.ResponseWriter, r *http.Request, id tailnet.Identity) error {
	s, err := b.session(r, id)
	if err != nil {
		return err
	}
	var req agentapi.EventsRequest
	if err := decodeJSON(w, r, brokerapi.MaxBody, &req); err != nil {
		return err
	}
	if len(req.Events) > agentapi.MaxEventsPerDelivery {
		return errorf(http.StatusRequestEntityTooLarge, "too_many_events", "at most %d events per delivery", agentapi.MaxEventsPerDelivery)
	}
	a, err := b.store.GetAgent(r.Context(), s.agentID)
	if err != nil {
		return fmt.Errorf("get agent: %w", err)
	}
	events := make([]audit.Event, 0, len(req.Events))
	for i, raw := range req.Events {
		var e audit.Event
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e); err != nil {
			return errorf(http.StatusBadRequest, "bad_event", "event %d: %v", i, err)
		}
		if err := e.Validate(); err != nil {
			return errorf(http.StatusBadRequest, "bad_event", "event %d: %v", i, err)
		}
		// An agent speaks only for itself.
		if e.AgentID != a.ID || e.Deployment != a.DeploymentID {
			b.authFailed(r.Context(), r, id, a.ID, "agent delivered an event naming another agent or deployment")
			return errorf(http.StatusForbidden, "foreign_event", "event %d does not name this agent and its deployment", i)
		}
		events = append(events, e)
	}
	n, err := b.auditLog.RecordDelivered(r.Context(), events)
	if err != nil {
		return fmt.Errorf("store delivered events: %w", err)
	}
	writeJSON(w, http.StatusOK, agentapi.EventsResponse{Received: len(events), Stored: n})
	return nil
}
