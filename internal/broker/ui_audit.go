package broker

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/identity"
	"github.com/tetherhq/tether/internal/names"
	"github.com/tetherhq/tether/internal/protocol"
	"github.com/tetherhq/tether/internal/webui"
)

// The reviewer's part of the web console, and a customer approver's view
// of their own tenant's trail: audit search, session replay, the log's
// verification state and export. The vendor pages (/ui/audit…) follow
// the vendor audit API's rows; the tenant pages
// (/ui/tenants/{tenant}/audit…) follow the tenant audit API's rows and
// filter through the same code ([Broker.auditFilter],
// [Broker.tenantAuditRecords]), so a tenant's page holds exactly what
// its API answers.

const (
	// auditPageSize is how many events a page of the audit search shows.
	auditPageSize = 50
	// maxSessionEvents bounds the events a session replay shows.
	maxSessionEvents = 5000
	// maxCosignaturesScanned bounds the cosignatures the verification
	// page reads to find each witness's newest one.
	maxCosignaturesScanned = 20000
	// uiTimeLayout is what an HTML datetime-local input sends (taken as
	// UTC).
	uiTimeLayout = "2006-01-02T15:04"
)

// auditNav is the navigation entry of the audit pages for who: the
// vendor's log for reviewers and admins, the own tenant's trail for a
// customer's approver.
func auditNav(who identity.Principal, current string) []webui.NavItem {
	var n webui.NavItem
	switch {
	case who.Tenant == "" && (who.HasRole(names.RoleReviewer) || who.HasRole(names.RoleAdmin)):
		n = webui.NavItem{Path: "/ui/audit", Text: "Audit"}
	case who.Tenant != "" && who.HasRole(names.RoleApprover):
		n = webui.NavItem{Path: tenantAuditPath(who.Tenant), Text: "Audit"}
	default:
		return nil
	}
	n.Current = current == n.Path || strings.HasPrefix(current, n.Path+"/")
	return []webui.NavItem{n}
}

func tenantAuditPath(tenant string) string { return "/ui/tenants/" + url.PathEscape(tenant) + "/audit" }

// auditBase is the path the audit pages of r live under: the tenant's
// trail on a tenant route, else the vendor's log.
func auditBase(r *http.Request) string {
	if t := r.PathValue("tenant"); t != "" {
		return tenantAuditPath(t)
	}
	return "/ui/audit"
}

// uiAuditScope is the tenant scope of a tenant route, nil on a vendor
// route (whose authorization row admits vendor staff only).
func (b *Broker) uiAuditScope(r *http.Request) (*audit.TenantScope, error) {
	if r.PathValue("tenant") == "" {
		return nil, nil
	}
	scope, err := b.tenantAuditScope(r)
	if err != nil {
		return nil, err
	}
	return &scope, nil
}

// uiAuditQuery rewrites r's query for [Broker.auditFilter]: the times a
// datetime-local input sends become RFC 3339 (UTC), and the API's limit
// is not the page's to set.
func uiAuditQuery(r *http.Request) (*http.Request, error) {
	q := r.URL.Query()
	for _, k := range []string{"since", "until"} {
		s := strings.TrimSpace(q.Get(k))
		if s == "" {
			q.Del(k)
			continue
		}
		if t, err := time.ParseInLocation(uiTimeLayout, s, time.UTC); err == nil {
			q.Set(k, t.Format(time.RFC3339))
		}
	}
	for _, k := range []string{"deployment", "type", "actor", "request", "grant"} {
		if strings.TrimSpace(q.Get(k)) == "" {
			q.Del(k)
		} else {
			q.Set(k, strings.TrimSpace(q.Get(k)))
		}
	}
	q.Del("limit")
	r2 := r.Clone(r.Context())
	r2.URL.RawQuery = q.Encode()
	return r2, nil
}

// auditRow is one event as the console shows it.
type auditRow struct {
	Index                 uint64
	Time                  time.Time
	Type                  audit.Type
	Outcome               audit.Outcome
	Actor, Role, Source   string
	Deployment            string // TENANT/NAME, or the ID of a deployment no longer known
	RequestID, GrantID    string
	Reason                string
	Statement, QueryID    string
	Rows, Bytes, Duration string // empty when the event does not say
	Details               string // the remaining details, as JSON
}

// auditRows turns records into rows, naming deployments as TENANT/NAME.
func (b *Broker) auditRows(ctx context.Context, recs []audit.Record) ([]auditRow, error) {
	ds, err := b.store.ListDeployments(ctx)
	if err != nil {
		return nil, fmt.Errorf("list deployments: %w", err)
	}
	depName := make(map[string]string, len(ds))
	for _, d := range ds {
		depName[d.ID] = d.Tenant + "/" + d.Name
	}
	rows := make([]auditRow, 0, len(recs))
	for _, rec := range recs {
		var e audit.Event
		if err := json.Unmarshal(rec.Data, &e); err != nil {
			return nil, fmt.Errorf("audit event %d: %w", rec.Index, err)
		}
		row := auditRow{
			Index: rec.Index, Time: e.Time, Type: e.Type, Outcome: e.Outcome,
			Actor: e.Actor.Subject, Role: e.Actor.Role, Source: "broker",
			Deployment: e.Deployment, RequestID: e.RequestID, GrantID: e.GrantID, Reason: e.Reason,
			Statement: e.Statement(),
		}
		if n, ok := depName[e.Deployment]; ok {
			row.Deployment = n
		}
		if e.Source.Kind == audit.SourceAgent {
			row.Source = "agent " + e.AgentID
		}
		rest := map[string]any{}
		for k, v := range e.Details {
			switch k {
			case "sql", "params", "query_id", "result_rows", "bytes", "duration_ms":
			default:
				rest[k] = v
			}
		}
		str := func(k string) string { s, _ := e.Details[k].(string); return s }
		num := func(k string) string {
			if v, ok := e.Details[k].(float64); ok {
				return strconv.FormatFloat(v, 'f', -1, 64)
			}
			return ""
		}
		row.QueryID = str("query_id")
		row.Rows, row.Bytes, row.Duration = num("result_rows"), num("bytes"), num("duration_ms")
		if len(rest) > 0 {
			raw, _ := json.Marshal(rest)
			row.Details = string(raw)
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// auditSearchPage is the audit search's page.
type auditSearchPage struct {
	Tenant   string // empty on the vendor's log
	Base     string // the pages' path prefix
	Q        map[string]string
	Types    []string
	Rows     []auditRow
	Oldest   bool   // oldest first (?order=oldest); newest first otherwise
	Cursor   string // what this page starts at, for its caption
	Next     string // the URL of the next page, when there is one
	First    string // the URL of the first page, when this is not it
	PageSize int
}

// uiAudit is the audit search: the vendor's whole log, or on a tenant
// route the tenant's trail, filtered as the API filters, a page of
// auditPageSize events. Newest first, from the cursor ?before=INDEX
// down, as a reviewer looking at what just happened wants; ?order=oldest
// reads forward from ?from=INDEX. Either way a page reads only its own
// rows from the store's indexes.
func (b *Broker) uiAudit(w http.ResponseWriter, r *http.Request) error {
	scope, err := b.uiAuditScope(r)
	if err != nil {
		return err
	}
	r2, err := uiAuditQuery(r)
	if err != nil {
		return err
	}
	f, err := b.auditFilter(r2, scope)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	oldest := false
	switch o := q.Get("order"); o {
	case "", "newest":
	case "oldest":
		oldest = true
	default:
		return errorf(http.StatusBadRequest, "invalid_order", "order %q: want newest or oldest", truncate(o, 32))
	}
	page := auditSearchPage{Base: auditBase(r), Q: map[string]string{}, Oldest: oldest, PageSize: auditPageSize}
	cursorKey := "before"
	if oldest {
		cursorKey = "from"
	}
	cursor, err := parseUintParam(r, cursorKey, false)
	if err != nil {
		return err
	}
	if oldest {
		f.FromIndex = cursor
		page.Cursor = "Oldest first, from event " + strconv.FormatUint(cursor, 10)
	} else {
		f.ToIndex, f.Descending = cursor, true
		page.Cursor = "Newest first"
		if cursor > 0 {
			page.Cursor += ", before event " + strconv.FormatUint(cursor, 10)
		}
	}
	f.Limit = auditPageSize + 1
	var recs []audit.Record
	if scope != nil {
		recs, err = b.tenantAuditRecords(r.Context(), *scope, f)
	} else {
		recs, err = b.auditLog.Records(r.Context(), f)
		if err != nil {
			err = auditReadError("search audit log", err)
		}
	}
	if err != nil {
		return err
	}
	if scope != nil {
		page.Tenant = scope.Tenant
	}
	for _, k := range []string{"deployment", "type", "actor", "since", "until", "request", "grant"} {
		page.Q[k] = q.Get(k)
	}
	for _, t := range audit.Types {
		page.Types = append(page.Types, string(t))
	}
	if len(recs) > auditPageSize {
		recs = recs[:auditPageSize]
		nq := cloneValues(q)
		last := recs[len(recs)-1].Index
		if oldest {
			nq.Set("from", strconv.FormatUint(last+1, 10))
		} else {
			nq.Set("before", strconv.FormatUint(last, 10))
		}
		page.Next = page.Base + "?" + nq.Encode()
	}
	if cursor > 0 {
		fq := cloneValues(q)
		fq.Del(cursorKey)
		page.First = page.Base + "?" + fq.Encode()
	}
	if page.Rows, err = b.auditRows(r.Context(), recs); err != nil {
		return err
	}
	title := "Audit log"
	if scope != nil {
		title = "Audit trail of " + scope.Tenant
	}
	b.render(w, r, http.StatusOK, "audit_search", title, page)
	return nil
}

func cloneValues(v url.Values) url.Values {
	out := url.Values{}
	for k, vs := range v {
		out[k] = slices.Clone(vs)
	}
	return out
}

// sessionRecords gathers the events of one access, given its request's
// or its grant's ID: those of the request and those of its grant, in
// the order they happened (an agent delivers its events with its next
// heartbeat, so log order can trail), as 'broker audit show-session'
// does. With a scope, an access of another tenant is refused (403) as
// the tenant audit API refuses a filter naming it, and only the scope's
// events are kept.
func (b *Broker) sessionRecords(ctx context.Context, scope *audit.TenantScope, id string) ([]audit.Record, bool, error) {
	if u, err := uuid.Parse(id); err != nil || len(id) != 36 || u.String() != strings.ToLower(id) {
		return nil, false, errorf(http.StatusBadRequest, "invalid_id", "%q is not a request or grant ID (a UUID)", truncate(id, 64))
	}
	id = strings.ToLower(id)
	byGrant, err := b.auditLog.Records(ctx, audit.Filter{GrantID: id, Limit: maxSessionEvents})
	if err != nil {
		return nil, false, auditReadError("session", err)
	}
	requestID := id
	for _, rec := range byGrant {
		if rec.RequestID != "" {
			requestID = rec.RequestID
			break
		}
	}
	byRequest, err := b.auditLog.Records(ctx, audit.Filter{RequestID: requestID, Limit: maxSessionEvents})
	if err != nil {
		return nil, false, auditReadError("session", err)
	}
	all := append(byRequest, byGrant...)
	if len(all) == 0 {
		return nil, false, errorf(http.StatusNotFound, "session_not_found", "no audit events for request or grant %s: search the audit log for it", id)
	}
	if scope != nil {
		// The API's check: the access's first event decides whose it is.
		first := all[0]
		if len(byGrant) > 0 && (len(byRequest) == 0 || byGrant[0].Index < first.Index) {
			first = byGrant[0]
		}
		if !scope.IncludesRecord(first) {
			return nil, false, errorf(http.StatusForbidden, "wrong_tenant", "request or grant %s is not one of tenant %s's: this audit view holds only tenant %s's events", id, scope.Tenant, scope.Tenant)
		}
	}
	seen := map[uint64]bool{}
	var out []audit.Record
	for _, rec := range all {
		if seen[rec.Index] || scope != nil && !scope.IncludesRecord(rec) {
			continue
		}
		seen[rec.Index] = true
		out = append(out, rec)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].Time.Equal(out[j].Time) {
			return out[i].Time.Before(out[j].Time)
		}
		return out[i].Index < out[j].Index
	})
	truncated := len(byGrant) == maxSessionEvents || len(byRequest) == maxSessionEvents
	return out, truncated, nil
}

// uiAuditSession is the session replay: every event of one access in the
// order it happened, with its statement, rows, bytes, duration and
// outcome.
func (b *Broker) uiAuditSession(w http.ResponseWriter, r *http.Request) error {
	scope, err := b.uiAuditScope(r)
	if err != nil {
		return err
	}
	recs, truncated, err := b.sessionRecords(r.Context(), scope, r.PathValue("id"))
	if err != nil {
		return err
	}
	rows, err := b.auditRows(r.Context(), recs)
	if err != nil {
		return err
	}
	data := map[string]any{"ID": strings.ToLower(r.PathValue("id")), "Rows": rows, "Base": auditBase(r), "Truncated": truncated, "Max": maxSessionEvents}
	if scope != nil {
		data["Tenant"] = scope.Tenant
	}
	b.render(w, r, http.StatusOK, "audit_session", "Session replay", data)
	return nil
}

// witnessRow is one deployment's agent as the log's witness.
type witnessRow struct {
	Deployment, Agent string
	Online            bool
	LastSeen          time.Time
	Cosigned          uint64 // the newest checkpoint size it cosigned; 0 when none was found
	CosignedAt        time.Time
	Refusal           string // why the agent refuses the broker, when it does
}

// uiAuditVerify shows the log's verification state: its latest signed
// checkpoint, who cosigned it, and how far each deployment's agent has
// cosigned.
func (b *Broker) uiAuditVerify(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	c, ok, err := b.auditLog.Latest(ctx)
	if err != nil {
		return fmt.Errorf("latest checkpoint: %w", err)
	}
	data := map[string]any{"HasCheckpoint": ok}
	newest := map[string]audit.Cosignature{}
	scanned := 0
	if ok {
		data["Size"], data["Root"], data["Time"] = c.Size, hex.EncodeToString(c.Root[:]), c.Time
		// The newest cosignature of each witness: read back from the
		// latest checkpoint in growing windows, a bounded number in all.
		for hi, span := c.Size, uint64(1024); hi > 0 && scanned < maxCosignaturesScanned; span *= 4 {
			lo := uint64(0)
			if hi > span {
				lo = hi - span
			}
			cs, err := b.store.Cosignatures(ctx, lo+1, hi)
			if err != nil {
				return fmt.Errorf("cosignatures: %w", err)
			}
			scanned += len(cs)
			for _, x := range cs {
				if cur, ok := newest[x.Witness]; !ok || x.Size > cur.Size {
					newest[x.Witness] = x
				}
			}
			hi = lo
		}
		var latest []string
		for name, x := range newest {
			if x.Size == c.Size {
				latest = append(latest, name)
			}
		}
		sort.Strings(latest)
		data["LatestWitnesses"] = latest
	}
	ds, err := b.store.ListDeployments(ctx)
	if err != nil {
		return fmt.Errorf("list deployments: %w", err)
	}
	now := b.now()
	var rows []witnessRow
	for _, d := range ds {
		row := witnessRow{Deployment: d.Tenant + "/" + d.Name}
		if a := d.Agent; a != nil {
			row.Agent, row.LastSeen, row.Refusal = a.ID, a.Last.At, a.Last.WitnessRefusal
			row.Online = !a.Last.At.IsZero() && now.Sub(a.Last.At) < 3*b.cfg.HeartbeatInterval
			if x, ok := newest[protocol.WitnessName(a.ID)]; ok {
				row.Cosigned, row.CosignedAt = x.Size, x.At
			}
		}
		rows = append(rows, row)
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].Deployment < rows[j].Deployment })
	data["Witnesses"], data["Scanned"] = rows, scanned
	data["ScanBound"] = scanned >= maxCosignaturesScanned
	b.render(w, r, http.StatusOK, "audit_verify", "Audit log verification", data)
	return nil
}

// attachment is a ResponseWriter that marks a successful answer as a
// download; an error page written to the same request is not one.
type attachment struct {
	http.ResponseWriter
	name    string
	written bool
}

func (a *attachment) WriteHeader(code int) {
	if !a.written {
		a.written = true
		if code == http.StatusOK {
			a.Header().Set("Content-Disposition", `attachment; filename="`+a.name+`"`)
		}
	}
	a.ResponseWriter.WriteHeader(code)
}

func (a *attachment) Write(p []byte) (int, error) {
	if !a.written {
		a.WriteHeader(http.StatusOK)
	}
	return a.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the connection.
func (a *attachment) Unwrap() http.ResponseWriter { return a.ResponseWriter }

// uiAuditExport downloads the vendor export (GET /api/v1/audit/export),
// by the same code, with the session's authorization.
func (b *Broker) uiAuditExport(w http.ResponseWriter, r *http.Request) error {
	r2, err := uiAuditQuery(r)
	if err != nil {
		return err
	}
	webui.SetHeaders(w)
	return b.handleAuditExport(&attachment{ResponseWriter: w, name: "tether-audit-" + b.now().UTC().Format("20060102T150405Z") + ".ndjson"}, r2)
}

// uiTenantAuditExport downloads a tenant export
// (GET /api/v1/tenants/{tenant}/audit/export), by the same code.
func (b *Broker) uiTenantAuditExport(w http.ResponseWriter, r *http.Request) error {
	r2, err := uiAuditQuery(r)
	if err != nil {
		return err
	}
	tenant := r.PathValue("tenant")
	if !names.IsLabel(tenant) {
		return errorf(http.StatusBadRequest, "invalid_tenant", "tenant %q is not a DNS label", truncate(tenant, 64))
	}
	webui.SetHeaders(w)
	return b.handleTenantAuditExport(&attachment{ResponseWriter: w, name: "tether-audit-" + tenant + "-" + b.now().UTC().Format("20060102T150405Z") + ".ndjson"}, r2)
}
