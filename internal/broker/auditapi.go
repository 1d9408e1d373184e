package broker

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tetherhq/tether/internal/names"

	"github.com/google/uuid"

	"golang.org/x/mod/sumdb/note"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/protocol"
	"github.com/tetherhq/tether/internal/store"
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

// deploymentParam finds the deployment a query parameter names, by ID (a
// UUID) or by TENANT/NAME. A name that matches no deployment is refused
// rather than searched for: the log records deployments by ID, so a
// filter on a name would silently match nothing.
func (b *Broker) deploymentParam(ctx context.Context, param, ref string) (store.DeploymentStatus, error) {
	var (
		d   store.DeploymentStatus
		err error
	)
	if tenant, name, ok := strings.Cut(ref, "/"); ok {
		if validateDeploymentName(tenant, name, "") != nil {
			return d, errorf(http.StatusBadRequest, "invalid_deployment", "%s %q: want TENANT/NAME such as acme/prod, or a deployment ID (a UUID)", param, ref)
		}
		d, err = b.store.GetDeploymentByName(ctx, tenant, name)
	} else {
		if _, perr := uuid.Parse(ref); perr != nil || len(ref) != 36 {
			return d, errorf(http.StatusBadRequest, "invalid_deployment", "%s %q: want TENANT/NAME such as acme/prod, or a deployment ID (a UUID)", param, ref)
		}
		d, err = b.store.GetDeployment(ctx, strings.ToLower(ref))
	}
	if errors.Is(err, store.ErrNotFound) {
		return d, errorf(http.StatusNotFound, "deployment_not_found", "no deployment %s: 'broker deployment list' shows them", ref)
	}
	if err != nil {
		return d, fmt.Errorf("get deployment %s: %w", ref, err)
	}
	return d, nil
}

func (b *Broker) handleAuditSearch(w http.ResponseWriter, r *http.Request) error {
	f, err := b.auditFilter(r, nil)
	if err != nil {
		return err
	}
	recs, err := b.auditLog.Records(r.Context(), f)
	if err != nil {
		return auditReadError("search audit log", err)
	}
	writeAuditEvents(w, recs)
	return nil
}

func writeAuditEvents(w http.ResponseWriter, recs []audit.Record) {
	out := brokerapi.AuditEvents{Events: make([]brokerapi.AuditEvent, 0, len(recs))}
	for _, rec := range recs {
		out.Events = append(out.Events, brokerapi.AuditEvent{Index: rec.Index, Event: json.RawMessage(rec.Data)})
	}
	writeJSON(w, http.StatusOK, out)
}

// auditFilter reads an audit search's query parameters. With a tenant
// scope, a deployment, request or grant of another tenant is refused
// (403 wrong_tenant) rather than answered with an empty list that would
// look like "nothing happened".
func (b *Broker) auditFilter(r *http.Request, scope *audit.TenantScope) (audit.Filter, error) {
	q := r.URL.Query()
	f := audit.Filter{
		Subject:   q.Get("actor"),
		Type:      audit.Type(q.Get("type")),
		GrantID:   q.Get("grant"),
		RequestID: q.Get("request"),
		Limit:     1000,
	}
	if f.Type != "" && !f.Type.Known() {
		return f, errorf(http.StatusBadRequest, "invalid_type", "event type %q is not known: see docs/audit.md for the list", f.Type)
	}
	var err error
	if ref := q.Get("deployment"); ref != "" {
		// A TENANT/NAME of another tenant is refused before the lookup, so
		// that which of its deployments exist is not told.
		if t, _, ok := strings.Cut(ref, "/"); ok && scope != nil && t != scope.Tenant {
			return f, errorf(http.StatusForbidden, "wrong_tenant", "deployment %s is not one of tenant %s's: this audit view holds only tenant %s's events", ref, scope.Tenant, scope.Tenant)
		}
		d, err := b.deploymentParam(r.Context(), "deployment", ref)
		if err != nil {
			return f, err
		}
		if scope != nil && d.Tenant != scope.Tenant {
			return f, errorf(http.StatusForbidden, "wrong_tenant", "deployment %s is not one of tenant %s's: this audit view holds only tenant %s's events", ref, scope.Tenant, scope.Tenant)
		}
		f.Deployment = d.ID
	}
	if scope != nil {
		for _, c := range []struct {
			what string
			f    audit.Filter
		}{{"request", audit.Filter{RequestID: f.RequestID, Limit: 1}}, {"grant", audit.Filter{GrantID: f.GrantID, Limit: 1}}} {
			if c.f.RequestID == "" && c.f.GrantID == "" {
				continue
			}
			recs, err := b.auditLog.Records(r.Context(), c.f)
			if err != nil {
				return f, auditReadError("search audit log", err)
			}
			if len(recs) > 0 && !scope.IncludesRecord(recs[0]) {
				return f, errorf(http.StatusForbidden, "wrong_tenant", "%s %s is not one of tenant %s's: this audit view holds only tenant %s's events", c.what, truncate(c.f.RequestID+c.f.GrantID, 64), scope.Tenant, scope.Tenant)
			}
		}
	}
	if f.Since, err = parseTimeParam(r, "since"); err != nil {
		return f, err
	}
	if f.Until, err = parseTimeParam(r, "until"); err != nil {
		return f, err
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 100000 {
			return f, errorf(http.StatusBadRequest, "invalid_limit", "limit %q: want a whole number from 1 to 100000", s)
		}
		f.Limit = n
	}
	return f, nil
}

// tenantAuditScope is the audit scope of the {tenant} a tenant audit
// route names (the authorization table has checked the caller may act on
// it): its deployments.
func (b *Broker) tenantAuditScope(r *http.Request) (audit.TenantScope, error) {
	tenant := r.PathValue("tenant")
	if !names.IsLabel(tenant) {
		return audit.TenantScope{}, errorf(http.StatusBadRequest, "invalid_tenant", "tenant %q is not a DNS label", truncate(tenant, 64))
	}
	ds, err := b.store.ListDeployments(r.Context())
	if err != nil {
		return audit.TenantScope{}, fmt.Errorf("list deployments: %w", err)
	}
	scope := audit.TenantScope{Tenant: tenant, Deployments: []string{}}
	for _, d := range ds {
		if d.Tenant == tenant {
			scope.Deployments = append(scope.Deployments, d.ID)
		}
	}
	return scope, nil
}

// handleTenantAuditSearch is the audit search of one tenant: the events
// [audit.TenantScope] gives it, and nothing of any other tenant's. The
// filter runs here, so other tenants' events never leave the broker.
func (b *Broker) handleTenantAuditSearch(w http.ResponseWriter, r *http.Request) error {
	scope, err := b.tenantAuditScope(r)
	if err != nil {
		return err
	}
	f, err := b.auditFilter(r, &scope)
	if err != nil {
		return err
	}
	out, err := b.tenantAuditRecords(r.Context(), scope, f)
	if err != nil {
		return err
	}
	writeAuditEvents(w, out)
	return nil
}

// tenantAuditRecords returns at most f.Limit of the records matching f
// that scope includes, in log order (or newest first, with
// f.Descending): the one filter of a tenant's audit trail, for the API
// and the web console alike. The store applies it (audit.Filter.Tenant),
// so other tenants' events are never read.
func (b *Broker) tenantAuditRecords(ctx context.Context, scope audit.TenantScope, f audit.Filter) ([]audit.Record, error) {
	f.Tenant = &scope
	recs, err := b.auditLog.Records(ctx, f)
	if err != nil {
		return nil, auditReadError("search audit log", err)
	}
	// The store's filter, checked: an event of another tenant never
	// leaves, even from a store that got the filter wrong.
	for _, rec := range recs {
		if !scope.IncludesRecord(rec) {
			return nil, fmt.Errorf("the store answered tenant %s's search with event %d, not one of the tenant's", scope.Tenant, rec.Index)
		}
	}
	return recs, nil
}

// handleTenantAuditExport streams a tenant export (docs/audit.md): the
// tenant's events, each with its inclusion proof against the newest
// checkpoint one of the tenant's agents cosigned.
func (b *Broker) handleTenantAuditExport(w http.ResponseWriter, r *http.Request) error {
	since, err := parseTimeParam(r, "since")
	if err != nil {
		return err
	}
	until, err := parseTimeParam(r, "until")
	if err != nil {
		return err
	}
	scope, err := b.tenantAuditScope(r)
	if err != nil {
		return err
	}
	x, err := b.auditLog.PrepareTenantExport(r.Context(), audit.TenantExportOptions{Scope: scope, Witness: b.tenantWitness(scope), Since: since, Until: until})
	if errors.Is(err, audit.ErrNotWitnessed) {
		return errorf(http.StatusNotFound, "nothing_to_export",
			"none of tenant %s's agents has cosigned an audit checkpoint yet, so none of its events can be proven to it: a paired, online agent cosigns within a few heartbeats ('broker deployment list' shows it); export again then", scope.Tenant)
	}
	if err != nil {
		return auditReadError("tenant export", err)
	}
	// From here the answer streams: a failure cuts it short without its
	// signed end line, which 'broker audit verify' reports as truncated.
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	rc := http.NewResponseController(w)
	extend := func() { rc.SetWriteDeadline(time.Now().Add(time.Minute)) } // an I/O deadline, not logic
	extend()
	res, err := x.WriteTo(r.Context(), w, extend)
	if err != nil {
		b.log.Error("tenant audit export cut short", "tenant", scope.Tenant, "events", res.Events, "err", err)
		return nil
	}
	b.log.Info("tenant audit export", "tenant", scope.Tenant, "checkpoint", res.Size, "events", res.Events, "pending", res.Pending, "witnesses", res.Witnesses)
	return nil
}

// tenantWitness reports whether a witness, by its note key name, is an
// agent (current or revoked) of one of scope's deployments.
func (b *Broker) tenantWitness(scope audit.TenantScope) func(context.Context, string) (bool, error) {
	return func(ctx context.Context, name string) (bool, error) {
		id, ok := strings.CutPrefix(name, protocol.WitnessName(""))
		if !ok || id == "" {
			return false, nil
		}
		a, err := b.store.GetAgent(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("get agent %s: %w", id, err)
		}
		return slices.Contains(scope.Deployments, a.DeploymentID), nil
	}
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
	// Errors before the first byte are clean error responses; from then
	// on the answer streams from the store a page at a time, in constant
	// memory, and a failure cuts it short without its end line, which
	// 'broker audit verify' reports as truncated.
	x, err := b.auditLog.PrepareExport(r.Context(), audit.ExportOptions{Since: since, Until: until})
	if errors.Is(err, audit.ErrNothingToExport) {
		return errorf(http.StatusNotFound, "nothing_to_export", "no checkpointed audit events in that range")
	}
	if err != nil {
		return auditReadError("export", err)
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	rc := http.NewResponseController(w)
	extend := func() { rc.SetWriteDeadline(time.Now().Add(time.Minute)) } // an I/O deadline, not logic
	extend()
	if err := x.WriteTo(r.Context(), w, extend); err != nil {
		from, to := x.Range()
		b.log.Error("audit export cut short", "from", from, "to", to, "err", err)
	}
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
	var req protocol.CheckpointRequest
	if err := decodeJSON(w, r, protocol.MaxBody, &req); err != nil {
		return err
	}
	// The log's own latest checkpoint, which it proves against: not the
	// store's, which may be one being stored, or another broker's not
	// yet taken in (WitnessCheckpoint takes it in when the agent cosigned
	// it through that broker).
	c, proof, err := b.auditLog.WitnessCheckpoint(r.Context(), req.SinceSize)
	switch {
	case errors.Is(err, audit.ErrNoCheckpoint):
		return errorf(http.StatusNotFound, "no_checkpoint", "the audit log has no checkpoint yet")
	case errors.Is(err, audit.ErrBeyondCheckpoint):
		return errorf(http.StatusBadRequest, "invalid_size", "since_size %d is beyond the latest checkpoint %d", req.SinceSize, b.auditLog.LatestSize())
	case err != nil:
		return fmt.Errorf("checkpoint for agent %s: %w", s.agentID, err)
	}
	res := protocol.CheckpointResponse{Note: c.Note, Size: c.Size}
	for _, h := range proof {
		res.Proof = append(res.Proof, h[:])
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

func (b *Broker) handleCosign(w http.ResponseWriter, r *http.Request, id tailnet.Identity) error {
	s, err := b.session(r, id)
	if err != nil {
		return err
	}
	var req protocol.CosignRequest
	if err := decodeJSON(w, r, protocol.MaxBody, &req); err != nil {
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
	name := protocol.WitnessName(a.ID)
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
	// Group-committed with the other agents' cosignatures arriving
	// meanwhile: answered once durable, one write for them all.
	if err := b.cosigs.Add(r.Context(), audit.Cosignature{Size: cp.Size, Witness: name, Note: req.Note, At: b.now()}); err != nil {
		return fmt.Errorf("store cosignature: %w", err)
	}
	writeJSON(w, http.StatusOK, struct{}{})
	return nil
}

// Events an agent delivers.
//
// An agent is code on the customer's machine: everything in the events it
// delivers is a claim. The broker stores only those an agent could
// truthfully have recorded — a type from [agentEventRules], for a grant
// the broker issued to that agent, by that grant's engineer, inside the
// grant's window — and stamps each with where it came from
// ([audit.SourceAgent], the agent's tailnet node) and when the broker took
// it. The rest are refused one by one: the good events of a delivery are
// stored, the refused ones are named in one auth.failed event naming the
// agent (repeats aggregated per [refusalWindow]), and the delivery is
// answered 200 with the count refused, so that the agent's spool moves on
// instead of sending the same refused events for ever.

// agentEventSkew is how far an agent's event time may lie outside its
// grant's window, or ahead of the broker's clock: the two clocks differ,
// and a query cut off at expiry is reported just after it.
const agentEventSkew = 60 * time.Second

// maxRefusalsNamed bounds the refused events one refusal names.
const maxRefusalsNamed = 10

// agentEventKind is what an agent-delivered event must be tied to.
type agentEventKind int

const (
	// grantBound events record a call the agent served or guarded under
	// a grant: they must name a grant the broker issued to this agent,
	// the grant's request and engineer, at a time inside its window.
	grantBound agentEventKind = iota + 1
	// agentRefusal events record a call the agent refused before it
	// accepted any grant (a bad grant token, a caller that is not the
	// broker). They are stored as the agent's own word: the actor is
	// always the agent (agent:<id>, role agent) whatever it claimed; the
	// grant and request IDs are kept only when they name a grant the
	// broker issued to this agent (a refused revoked or expired grant),
	// and otherwise move into details as claimed_grant_id and
	// claimed_request_id, where no search or session view finds them.
	agentRefusal
)

// agentEventRule is what the broker requires of one agent event type.
type agentEventRule struct {
	kind     agentEventKind
	outcomes []audit.Outcome
}

var (
	succeeded = []audit.Outcome{audit.Success}
	failed    = []audit.Outcome{audit.Failure}
	either    = []audit.Outcome{audit.Success, audit.Failure}
)

// agentEventRules is every event type an agent may deliver — those
// internal/agent records: its guards' verdicts, the end of each query,
// and its refusals — with what each must be. Every other type (request.*,
// review.*, grant.*, breakglass.used, …) is the broker's alone to record
// and is refused from an agent. A type the agent starts recording must be
// added here, or the broker refuses it.
var agentEventRules = map[audit.Type]agentEventRule{
	audit.QueryAllowed:  {grantBound, succeeded},
	audit.QueryDenied:   {grantBound, failed},
	audit.QueryFinished: {grantBound, either},
	audit.PromAllowed:   {grantBound, succeeded},
	audit.PromDenied:    {grantBound, failed},
	audit.AuthFailed:    {agentRefusal, failed},
}

// agentDelivery is what the events of one delivery are checked against.
type agentDelivery struct {
	agent  store.Agent
	tenant string       // the agent's deployment's tenant
	source audit.Source // stamped on every stored event
	now    time.Time
	// request looks an access request up by ID; nil when the broker
	// holds none.
	request func(id string) (*store.AccessRequest, error)
}

// refusedEvent is one event a delivery held that the broker refused.
type refusedEvent struct {
	index int
	e     audit.Event // as far as it decoded
	why   string
}

// errRefused is a refusal of one delivered event, with the reason.
type errRefused struct{ why string }

func (e *errRefused) Error() string { return e.why }

func refused(format string, args ...any) error {
	return &errRefused{why: fmt.Sprintf(format, args...)}
}

// claim quotes an agent-supplied string for a refusal reason, cut short.
func claim(s string) string { return strconv.Quote(truncate(s, 80)) }

// check decides whether e, delivered by d.agent, is stored, and returns
// it as the broker stores it. A refusal is an *errRefused; any other
// error is the broker's own (the store failed).
func (d agentDelivery) check(e audit.Event) (audit.Event, error) {
	if err := e.Validate(); err != nil {
		return e, refused("%v", err)
	}
	if _, err := uuid.Parse(e.ID); err != nil || len(e.ID) != 36 {
		return e, refused("event ID %s is not a UUID", claim(e.ID))
	}
	if e.AgentID != d.agent.ID || e.Deployment != d.agent.DeploymentID {
		return e, refused("names agent %s and deployment %s, not this agent and its deployment", claim(e.AgentID), claim(e.Deployment))
	}
	rule, ok := agentEventRules[e.Type]
	if !ok {
		return e, refused("type %s is not one an agent records", e.Type)
	}
	if !slices.Contains(rule.outcomes, e.Outcome) {
		return e, refused("%s with outcome %s is not one an agent records", e.Type, e.Outcome)
	}
	if e.Time.After(d.now.Add(agentEventSkew)) {
		return e, refused("time %s is ahead of the broker's clock (%s) by more than %s", e.Time.UTC().Format(time.RFC3339), d.now.UTC().Format(time.RFC3339), agentEventSkew)
	}
	if e.Time.Before(d.agent.PairedAt.Add(-agentEventSkew)) {
		return e, refused("time %s is before the agent was paired (%s)", e.Time.UTC().Format(time.RFC3339), d.agent.PairedAt.UTC().Format(time.RFC3339))
	}
	switch rule.kind {
	case grantBound:
		ar, err := d.grantOf(e)
		if err != nil {
			return e, err
		}
		g, who := ar.Grant, ar.Requester
		if e.Actor.Subject != displayName(who) || e.Actor.Issuer != "" && e.Actor.Issuer != who.Issuer || e.Actor.Role != "" && e.Actor.Role != names.RoleEngineer {
			return e, refused("actor %s (%s) is not grant %s's engineer", claim(e.Actor.Subject), claim(e.Actor.Role), g.ID)
		}
		if e.Time.Before(g.NotBefore.Add(-agentEventSkew)) || e.Time.After(g.Expiry.Add(agentEventSkew)) {
			return e, refused("time %s is outside grant %s's window %s..%s (give or take %s)", e.Time.UTC().Format(time.RFC3339), g.ID,
				g.NotBefore.UTC().Format(time.RFC3339), g.Expiry.UTC().Format(time.RFC3339), agentEventSkew)
		}
		e.Actor = audit.Actor{Subject: displayName(who), Issuer: who.Issuer, Tenant: who.Tenant, Role: names.RoleEngineer}
	case agentRefusal:
		claimed := map[string]any{}
		if s := e.Actor.Subject; s != "" && s != agentSubject(d.agent.ID) {
			claimed["claimed_subject"] = truncate(s, 256)
		}
		if e.GrantID != "" || e.RequestID != "" {
			ar, err := d.grantOf(e)
			var re *errRefused
			if err != nil && !errors.As(err, &re) {
				return e, err
			}
			// A refusal may come after the grant's expiry (that is why it
			// was refused), never before the grant was issued.
			if err != nil || e.Time.Before(ar.Grant.NotBefore.Add(-agentEventSkew)) {
				claimed["claimed_grant_id"], claimed["claimed_request_id"] = truncate(e.GrantID, 64), truncate(e.RequestID, 64)
				e.GrantID, e.RequestID = "", ""
			}
		}
		if len(claimed) > 0 {
			e.Details = maps.Clone(e.Details)
			if e.Details == nil {
				e.Details = map[string]any{}
			}
			maps.Copy(e.Details, claimed)
		}
		e.Actor = audit.Actor{Subject: agentSubject(d.agent.ID), Tenant: d.tenant, Role: "agent"}
	}
	e.Source = d.source
	return e, nil
}

// grantOf returns the access request whose grant e names, if the broker
// issued that grant to this agent for its deployment.
func (d agentDelivery) grantOf(e audit.Event) (*store.AccessRequest, error) {
	if e.GrantID == "" {
		return nil, refused("names no grant")
	}
	if _, err := uuid.Parse(e.RequestID); err != nil {
		return nil, refused("names grant %s but not its request", claim(e.GrantID))
	}
	ar, err := d.request(e.RequestID)
	if err != nil {
		return nil, err
	}
	if ar == nil || ar.Grant == nil || ar.Grant.ID != e.GrantID {
		return nil, refused("grant %s of request %s is not one the broker issued", claim(e.GrantID), claim(e.RequestID))
	}
	if ar.DeploymentID != d.agent.DeploymentID || ar.Grant.AgentID != d.agent.ID {
		return nil, refused("grant %s was issued for another deployment or agent", e.GrantID)
	}
	return ar, nil
}

func (b *Broker) handleEvents(w http.ResponseWriter, r *http.Request, id tailnet.Identity) error {
	s, err := b.session(r, id)
	if err != nil {
		return err
	}
	ctx := r.Context()
	a, err := b.store.GetAgent(ctx, s.agentID)
	if err != nil {
		return fmt.Errorf("get agent: %w", err)
	}
	dep, err := b.store.GetDeployment(ctx, a.DeploymentID)
	if err != nil {
		return fmt.Errorf("get deployment: %w", err)
	}
	var req protocol.EventsRequest
	if err := decodeJSON(w, r, brokerapi.MaxBody, &req); err != nil {
		b.refuseDelivery(ctx, r, id, a, dep.Tenant, "delivery refused: "+err.Error(), nil)
		return err
	}
	if len(req.Events) > protocol.MaxEventsPerDelivery {
		b.refuseDelivery(ctx, r, id, a, dep.Tenant, fmt.Sprintf("delivery refused: %d events, more than %d", len(req.Events), protocol.MaxEventsPerDelivery), nil)
		return errorf(http.StatusRequestEntityTooLarge, "too_many_events", "at most %d events per delivery", protocol.MaxEventsPerDelivery)
	}
	now := b.now()
	requests := map[string]*store.AccessRequest{}
	d := agentDelivery{
		agent: a, tenant: dep.Tenant, now: now,
		source: audit.Source{Kind: audit.SourceAgent, TailnetNode: id.Name, IP: r.RemoteAddr, ReceivedAt: now.UTC()},
		request: func(rid string) (*store.AccessRequest, error) {
			if ar, ok := requests[rid]; ok {
				return ar, nil
			}
			ar, err := b.store.GetRequest(ctx, rid)
			switch {
			case errors.Is(err, store.ErrNotFound):
				requests[rid] = nil
				return nil, nil
			case err != nil:
				return nil, fmt.Errorf("get request %s: %w", rid, err)
			}
			requests[rid] = &ar
			return &ar, nil
		},
	}
	events := make([]audit.Event, 0, len(req.Events))
	var bad []refusedEvent
	for i, raw := range req.Events {
		var e audit.Event
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e); err != nil {
			bad = append(bad, refusedEvent{index: i, e: e, why: "does not decode as an audit event: " + truncate(err.Error(), 120)})
			continue
		}
		stored, err := d.check(e)
		var re *errRefused
		switch {
		case errors.As(err, &re):
			bad = append(bad, refusedEvent{index: i, e: e, why: re.why})
		case err != nil:
			return err
		default:
			events = append(events, stored)
		}
	}
	n := 0
	if len(events) > 0 {
		if n, err = b.auditLog.RecordDelivered(ctx, events); err != nil {
			return fmt.Errorf("store delivered events: %w", err)
		}
	}
	if len(bad) > 0 {
		reason := fmt.Sprintf("refused %d of %d delivered audit events: %s", len(bad), len(req.Events), bad[0].why)
		if err := b.refuseDelivery(ctx, r, id, a, dep.Tenant, reason, bad); err != nil {
			// The agent delivers again; the good events are stored once.
			return errorf(http.StatusServiceUnavailable, "audit_unavailable", "the broker could not record the refused events, so it did not take the delivery: deliver again")
		}
	}
	writeJSON(w, http.StatusOK, protocol.EventsResponse{Received: len(req.Events), Stored: n, Refused: len(bad)})
	return nil
}

// refuseDelivery records that agent a delivered events the broker
// refused: one auth.failed event naming the agent and at most
// maxRefusalsNamed of the refused events, with repeats from one agent
// aggregated per refusal window, so that a hostile agent cannot flood the
// log through its deliveries either.
func (b *Broker) refuseDelivery(ctx context.Context, r *http.Request, id tailnet.Identity, a store.Agent, tenant, reason string, bad []refusedEvent) error {
	named := make([]map[string]any, 0, min(len(bad), maxRefusalsNamed))
	for _, x := range bad[:min(len(bad), maxRefusalsNamed)] {
		named = append(named, map[string]any{
			"index": x.index, "id": truncate(x.e.ID, 64), "type": truncate(string(x.e.Type), 64),
			"time": x.e.Time.UTC(), "grant_id": truncate(x.e.GrantID, 64), "actor": truncate(x.e.Actor.Subject, 128),
			"reason": truncate(x.why, 300),
		})
	}
	ev := audit.Event{
		Type:       audit.AuthFailed,
		Actor:      audit.Actor{Subject: agentSubject(a.ID), Tenant: tenant, Role: "agent"},
		Deployment: a.DeploymentID,
		AgentID:    a.ID,
		Source:     audit.Source{TailnetNode: id.Name, IP: r.RemoteAddr},
		Outcome:    audit.Failure,
		Reason:     truncate(reason, maxAuditMessage),
		Details:    map[string]any{"path": protocol.PathEvents, "refused": len(bad), "refusals": named},
	}
	b.log.Warn("refused audit events an agent delivered", "agent_id", a.ID, "node", id.Name, "refused", len(bad), "first", truncate(reason, maxAuditMessage))
	es := b.refusals.admit(refusalKey{source: agentSubject(a.ID), typ: string(audit.AuthFailed), code: "events_refused"}, ev, b.now())
	if len(es) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := b.auditLog.RecordAll(ctx, es...); err != nil {
		b.log.Error("audit write failed", "type", audit.AuthFailed, "agent_id", a.ID, "err", err)
		return err
	}
	return nil
}
