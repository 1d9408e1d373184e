package broker

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tetherhq/tether/internal/access"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/identity"
	"github.com/tetherhq/tether/internal/names"
	"github.com/tetherhq/tether/internal/promguard"
	"github.com/tetherhq/tether/internal/protocol"
	"github.com/tetherhq/tether/internal/source"
	"github.com/tetherhq/tether/internal/source/clickhouse"
	"github.com/tetherhq/tether/internal/source/prometheus"
	"github.com/tetherhq/tether/internal/source/registry"
	"github.com/tetherhq/tether/internal/sqlguard"
	"github.com/tetherhq/tether/internal/store"
	"github.com/tetherhq/tether/internal/webui"
)

// The engineer's pages of the web console: the request form, the live
// status of a request's page, the engineer's active grants and the query
// console. Each goes through the code the API uses: a request is created
// by [Broker.createRequest], a status long-polls by [Broker.waitRequest],
// and a query runs through the data plane's handler
// ([Broker.handleDataPlane]) under the engineer's live grant, so the
// agent's guard, limits and audit are the CLI's.

const (
	// maxStatusWait bounds one long poll of a request's status page.
	maxStatusWait = 25 * time.Second
	// maxShownRows and maxShownBytes bound a query's answer in the
	// console; the page says when it was cut.
	maxShownRows  = 1000
	maxShownBytes = 1 << 20
	// maxQueryText bounds the SQL or PromQL of a console form.
	maxQueryText = 16 << 10
)

// requestDurations are the request form's durations.
var requestDurations = []string{"15m", "30m", "1h", "2h", "4h", "8h", "12h"}

// uiQueryOf is the console's query form of src, following src's row of
// the data plane.
func uiQueryOf(src source.Source) func(*Broker, http.ResponseWriter, *http.Request) error {
	return func(b *Broker, w http.ResponseWriter, r *http.Request) error { return b.uiQuery(src, w, r) }
}

// engineerNav are the navigation's links to the engineer's pages, for
// the vendor's engineers.
func engineerNav(p identity.Principal, path string) []webui.NavItem {
	if p.Tenant != "" || !p.HasRole(names.RoleEngineer) {
		return nil
	}
	var out []webui.NavItem
	for _, n := range []webui.NavItem{{Path: "/ui/request", Text: "Request access"}, {Path: "/ui/grants", Text: "Active grants"}} {
		n.Current = path == n.Path
		out = append(out, n)
	}
	return out
}

const createRequestRoute = "POST /api/v1/requests"

type requestForm struct {
	Deployments []string
	Scopes      []string
	Durations   []string
	MaxReason   int
}

// uiRequestForm shows the request form: the deployments the engineer
// may act on, the data sources' scopes, durations, reason and ticket.
// Break-glass and network changes stay with the CLI.
func (b *Broker) uiRequestForm(w http.ResponseWriter, r *http.Request) error {
	p := principalFrom(r.Context())
	ds, err := b.store.ListDeployments(r.Context())
	if err != nil {
		return fmt.Errorf("list deployments: %w", err)
	}
	f := requestForm{Scopes: registry.Scopes(), Durations: requestDurations, MaxReason: access.MaxReasonLen}
	for _, d := range ds {
		if p.CanActOnTenant(d.Tenant) {
			f.Deployments = append(f.Deployments, d.Tenant+"/"+d.Name)
		}
	}
	slices.Sort(f.Deployments)
	b.render(w, r, http.StatusOK, "newrequest", "Request access", f)
	return nil
}

// uiCreateRequest creates the request of the form the way the API does
// ([Broker.createRequest]) and shows its page.
func (b *Broker) uiCreateRequest(w http.ResponseWriter, r *http.Request) error {
	f := r.PostForm
	ar, err := b.createRequest(r, brokerapi.CreateAccessRequest{
		Deployment: f.Get("deployment"), Scopes: f["scope"], Duration: f.Get("duration"),
		Reason: f.Get("reason"), Ticket: strings.TrimSpace(f.Get("ticket")),
	})
	if err != nil {
		return err
	}
	http.Redirect(w, r, "/ui/requests/"+url.PathEscape(ar.ID)+"?done=requested", http.StatusSeeOther)
	return nil
}

// requestStatus is what the status script reads.
type requestStatus struct {
	ID      string   `json:"id"`
	State   string   `json:"state"`
	Version int64    `json:"version"`
	Waiting []string `json:"waiting,omitempty"`
}

// uiRequestStatus answers a request's state as JSON, after waiting up to
// ?wait= (at most maxStatusWait) for its version to differ from
// ?version=, through the API's long poll ([Broker.waitRequest]).
func (b *Broker) uiRequestStatus(w http.ResponseWriter, r *http.Request) error {
	ar, err := b.requestOf(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	if ws := q.Get("wait"); ws != "" {
		wait, err := time.ParseDuration(ws)
		if err != nil || wait < 0 {
			return errorf(http.StatusBadRequest, "invalid_wait", "wait %q: want a duration up to %v, such as 25s", truncate(ws, 40), maxStatusWait)
		}
		version, err := strconv.ParseInt(q.Get("version"), 10, 64)
		if err != nil {
			return errorf(http.StatusBadRequest, "invalid_version", "version %q: a long poll needs the version last seen", truncate(q.Get("version"), 40))
		}
		if ar, err = b.waitRequest(r.Context(), ar, version, min(wait, maxStatusWait)); err != nil {
			if r.Context().Err() != nil {
				return nil // the page went away: nobody to answer
			}
			return err
		}
	}
	v := b.requestView(ar)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	return json.NewEncoder(w).Encode(requestStatus{ID: v.ID, State: v.State, Version: v.Version, Waiting: v.Waiting})
}

// uiCancel cancels the engineer's own pending request, as the API does.
func (b *Broker) uiCancel(w http.ResponseWriter, r *http.Request) error {
	cur, err := b.requestOf(r)
	if err != nil {
		return err
	}
	if _, err := b.access.Cancel(r.Context(), cur.ID, caller(r)); err != nil {
		return accessError(err)
	}
	http.Redirect(w, r, "/ui/requests/"+url.PathEscape(cur.ID)+"?done=cancelled", http.StatusSeeOther)
	return nil
}

// engineerActions are what a request's page offers its engineer.
type engineerActions struct {
	Cancel bool   // pending: cancel it
	Query  string // active with a grant: the query console's path
}

// engineerActionsOf says what ar's page offers p, its engineer.
func engineerActionsOf(p store.Person, hasRole func(string) bool, ar store.AccessRequest) engineerActions {
	var a engineerActions
	if !access.SamePerson(p, ar.Requester) {
		return a
	}
	a.Cancel = ar.State == store.StatePending && mayCall("POST /api/v1/requests/{id}/cancel", hasRole)
	if ar.State == store.StateActive && ar.Grant != nil && hasRole(names.RoleEngineer) {
		a.Query = queryPath(ar.Tenant, ar.Name)
	}
	return a
}

func queryPath(tenant, name string) string {
	return "/ui/deployments/" + url.PathEscape(tenant) + "/" + url.PathEscape(name) + "/query"
}

type grantRow struct {
	RequestID, Deployment, Query, Left string
	Replay                             string // its session replay, when the caller may open it
	Scopes                             []string
	Expiry                             time.Time
}

// uiGrants lists the caller's own live grants, with their expiry.
func (b *Broker) uiGrants(w http.ResponseWriter, r *http.Request) error {
	p := principalFrom(r.Context())
	ars, err := b.visibleRequests(r.Context(), p, store.RequestFilter{Requester: p.Subject, States: []string{store.StateActive}, Limit: inboxMax})
	if err != nil {
		return err
	}
	now := b.now()
	var rows []grantRow
	for _, ar := range ars {
		g := ar.Grant
		if g == nil || !now.Before(g.Expiry) {
			continue
		}
		rows = append(rows, grantRow{
			RequestID: ar.ID, Deployment: ar.Tenant + "/" + ar.Name, Query: queryPath(ar.Tenant, ar.Name),
			Left: g.Expiry.Sub(now).Round(time.Minute).String(), Scopes: g.Scopes, Expiry: g.Expiry,
			Replay: b.replayPath(r.Context(), p, ar.Tenant, ar.ID),
		})
	}
	slices.SortFunc(rows, func(a, b grantRow) int { return a.Expiry.Compare(b.Expiry) })
	b.render(w, r, http.StatusOK, "grants", "Active grants", map[string]any{"Rows": rows})
	return nil
}

// queryKind is how the console asks one data source: the call it makes
// on the data plane for its form, and how it reads the answer.
type queryKind struct {
	Title, Field, Placeholder string
	Range                     bool // the form offers a range: start, end and step
	// call is the data-plane call of the form's text and fields, or an
	// [apiError] saying which field is wrong.
	call func(now time.Time, text string, form url.Values) (dataCall, error)
	// read fills res from an answer of content type ct.
	read func(text, ct string, body []byte, res *queryResult)
}

// dataCall is one call of the data plane: the method, the path below the
// data source, the query string and the body.
type dataCall struct {
	method, path, rawQuery, contentType string
	body                                []byte
	rangeText                           string // a range query's span, for people
}

var queryKinds = map[string]queryKind{
	clickhouse.Scope: {
		Title: "SQL (ClickHouse system tables)", Field: "sql", Placeholder: "SELECT name, engine FROM system.tables WHERE database = 'system' LIMIT 10",
		call: func(_ time.Time, text string, _ url.Values) (dataCall, error) {
			body, _ := json.Marshal(protocol.ClickHouseQuery{SQL: text})
			return dataCall{method: http.MethodPost, path: "query", contentType: "application/json", body: body}, nil
		},
		read: readSQL,
	},
	prometheus.Scope: {
		Title: "PromQL (Prometheus)", Field: "promql", Placeholder: "up", Range: true,
		call: promCall,
		read: func(_, _ string, body []byte, res *queryResult) { readProm(body, res) },
	},
}

// promCall is an instant query of text, or a range query when the form
// gives a start: a duration before the end (1h) or an RFC 3339 time; the
// end is now or an RFC 3339 time; the step a duration of at least 1s,
// by default the range / 250 as with the CLI. The bounds are the agent's
// Prometheus guard's ([promguard.MaxRange], [promguard.MaxPoints]),
// checked here too so that the page can say what to change; the agent
// checks them again.
func promCall(now time.Time, text string, form url.Values) (dataCall, error) {
	start, end, step := strings.TrimSpace(form.Get("start")), strings.TrimSpace(form.Get("end")), strings.TrimSpace(form.Get("step"))
	if start == "" {
		if end != "" || step != "" {
			return dataCall{}, errorf(http.StatusBadRequest, "invalid_query", "end and step belong to a range query: give its start too (such as 1h), or clear them for an instant query")
		}
		return dataCall{method: http.MethodGet, path: "api/v1/query", rawQuery: url.Values{"query": {text}}.Encode()}, nil
	}
	to := now
	if end != "" && end != "now" {
		t, err := time.Parse(time.RFC3339Nano, end)
		if err != nil {
			return dataCall{}, errorf(http.StatusBadRequest, "invalid_query", "end %q: want now (or empty) or an RFC 3339 time such as 2026-11-25T10:00:00Z", truncate(end, 40))
		}
		to = t
	}
	var from time.Time
	if d, err := time.ParseDuration(start); err == nil {
		if d <= 0 {
			return dataCall{}, errorf(http.StatusBadRequest, "invalid_query", "start %q: a duration before the end must be positive, such as 1h", truncate(start, 40))
		}
		from = to.Add(-d)
	} else if t, err := time.Parse(time.RFC3339Nano, start); err == nil {
		from = t
	} else {
		return dataCall{}, errorf(http.StatusBadRequest, "invalid_query", "start %q: want a duration before the end such as 1h, 6h or 24h, or an RFC 3339 time such as 2026-11-25T09:00:00Z", truncate(start, 40))
	}
	from, to = from.UTC().Truncate(time.Millisecond), to.UTC().Truncate(time.Millisecond)
	span := to.Sub(from)
	switch {
	case span < 0:
		return dataCall{}, errorf(http.StatusBadRequest, "invalid_query", "end %s is before start %s: give a start before the end", to.Format(time.RFC3339Nano), from.Format(time.RFC3339Nano))
	case span > promguard.MaxRange:
		return dataCall{}, errorf(http.StatusBadRequest, "invalid_query", "the range from start to end is %v, over the agent's limit of %v: narrow it", span, promguard.MaxRange)
	}
	var every time.Duration
	if step == "" {
		every = max((span/250+time.Second-1)/time.Second*time.Second, time.Second)
	} else {
		d, err := time.ParseDuration(step)
		if err != nil {
			return dataCall{}, errorf(http.StatusBadRequest, "invalid_query", "step %q: want a duration of at least 1s, such as 30s or 5m (or empty for range / 250)", truncate(step, 40))
		}
		every = d
	}
	if every < time.Second {
		return dataCall{}, errorf(http.StatusBadRequest, "invalid_query", "step %v: want at least 1s, such as 30s or 5m (or empty for range / 250)", every)
	}
	if every > promguard.MaxRange {
		return dataCall{}, errorf(http.StatusBadRequest, "invalid_query", "step %v is over the agent's limit of %v", every, promguard.MaxRange)
	}
	if points := int64(span/every) + 1; points > promguard.MaxPoints {
		least := (span/(promguard.MaxPoints-1) + time.Second - 1) / time.Second * time.Second
		return dataCall{}, errorf(http.StatusBadRequest, "invalid_query", "a range of %v at step %v is %d points per series, over Prometheus's limit of %d: raise step to at least %v or narrow the range", span, every, points, promguard.MaxPoints, least)
	}
	v := url.Values{"query": {text}, "start": {promTime(from)}, "end": {promTime(to)}, "step": {strconv.FormatFloat(every.Seconds(), 'f', -1, 64)}}
	return dataCall{method: http.MethodGet, path: "api/v1/query_range", rawQuery: v.Encode(),
		rangeText: fmt.Sprintf("from %s to %s every %v", from.Format(time.RFC3339Nano), to.Format(time.RFC3339Nano), every)}, nil
}

// promTime is t as Prometheus's API takes it: Unix seconds, to the
// millisecond.
func promTime(t time.Time) string {
	return strconv.FormatFloat(float64(t.UnixMilli())/1000, 'f', -1, 64)
}

type queryForm struct {
	Source, Title, Field, Placeholder, Action, Text string
	Live                                            bool // the engineer holds a live grant for it
	Range                                           bool // the form offers start, end and step
	Start, End, Step                                string
}

type queryPage struct {
	Deployment string
	Forms      []queryForm
	Result     *queryResult
}

// queryResult is one query's answer as the console shows it.
type queryResult struct {
	Source, Text     string
	Start, End, Step string // a PromQL form's range fields, as given
	Range            string // a range query's span, for people
	Invalid          bool   // the form was refused before any call: Code and Reason say why
	Status           int
	Refused          bool   // the agent's guard (or its grant check) refused it
	Code, Reason     string // the refusal's code and reason
	Offset           int    // where in Text the guard objected, or -1
	Before, At       string // Text split at Offset
	Cols             []string
	Rows             [][]string
	Series           []seriesRows // a range query's matrix
	Raw              string       // an answer shown verbatim: its own FORMAT, or not read as a table
	RowCount, Bytes  int
	SeriesCount      int  // a matrix's series
	RowsKnown        bool // RowCount counts the answer's rows (a matrix's samples)
	Cut, Stopped     bool
	CutWhy, StopText string
}

// seriesRows is one series of a matrix: its labels, then its samples as
// timestamp and value.
type seriesRows struct {
	Labels  string
	Samples [][2]string
}

// uiQueryPage shows the query console of a deployment: a form per data
// source, live only where the engineer holds a grant for its scope.
func (b *Broker) uiQueryPage(w http.ResponseWriter, r *http.Request) error {
	return b.renderQuery(w, r, http.StatusOK, nil, "")
}

func (b *Broker) renderQuery(w http.ResponseWriter, r *http.Request, status int, res *queryResult, src string) error {
	d, err := b.lookup(r)
	if err != nil {
		return err
	}
	pg := queryPage{Deployment: d.Tenant + "/" + d.Name, Result: res}
	// Any live grant of the engineer's, as the CLI without --grant.
	plain := r.Clone(r.Context())
	plain.Header = http.Header{}
	for _, s := range registry.All() {
		k, ok := queryKinds[s.Scope]
		if !ok {
			continue
		}
		_, gerr := b.liveGrant(r.Context(), plain, d.ID, s.Scope)
		f := queryForm{Source: s.Name, Title: k.Title, Field: k.Field, Placeholder: k.Placeholder, Live: gerr == nil, Range: k.Range,
			Action: queryPath(d.Tenant, d.Name) + "/" + s.Name}
		if res != nil && s.Name == src {
			f.Text, f.Start, f.End, f.Step = res.Text, res.Start, res.End, res.Step
		}
		pg.Forms = append(pg.Forms, f)
	}
	b.render(w, r, status, "query", "Query "+pg.Deployment, pg)
	return nil
}

// uiQuery runs one query of the console through the data plane's own
// handler, as if the engineer's CLI had sent it: the broker finds the
// engineer's live grant for src's scope, the agent verifies it, guards
// the query, applies its limits and audits it. The answer is read up to
// maxShownBytes and shown as a table of up to maxShownRows rows, or
// verbatim when it is not one. A form the console cannot make a call of
// (a range ending before it starts, too many points) is answered on the
// console's page, refilled, and audited as any refusal.
func (b *Broker) uiQuery(src source.Source, w http.ResponseWriter, r *http.Request) error {
	k := queryKinds[src.Scope]
	text := strings.TrimSpace(r.PostForm.Get(k.Field))
	if text == "" || len(text) > maxQueryText {
		return errorf(http.StatusBadRequest, "invalid_query", "%s: want a query of 1 to %d bytes", k.Field, maxQueryText)
	}
	res := &queryResult{Source: src.Name, Text: text, Offset: -1}
	if k.Range {
		res.Start, res.End, res.Step = truncate(r.PostForm.Get("start"), 64), truncate(r.PostForm.Get("end"), 64), truncate(r.PostForm.Get("step"), 64)
	}
	dc, err := k.call(b.now(), text, r.PostForm)
	if err != nil {
		err = b.recordRefusal(r, callerOf(r), err)
		var ae *apiError
		if !errors.As(err, &ae) {
			return err
		}
		res.Invalid, res.Code, res.Reason = true, ae.code, ae.message
		return b.renderQuery(w, r, ae.status, res, src.Name)
	}
	res.Range = dc.rangeText
	call := r.Clone(r.Context())
	call.Method = dc.method
	call.URL = &url.URL{
		Path:     "/api/v1/deployments/" + r.PathValue("tenant") + "/" + r.PathValue("name") + "/" + src.Name + "/" + dc.path,
		RawPath:  "/api/v1/deployments/" + url.PathEscape(r.PathValue("tenant")) + "/" + url.PathEscape(r.PathValue("name")) + "/" + src.Name + "/" + dc.path,
		RawQuery: dc.rawQuery,
	}
	call.Body = io.NopCloser(bytes.NewReader(dc.body))
	call.ContentLength = int64(len(dc.body))
	call.Header = http.Header{}
	if dc.contentType != "" {
		call.Header.Set("Content-Type", dc.contentType)
	}
	call.SetPathValue("rest", dc.path)
	cw := &cappedWriter{header: http.Header{}, limit: maxShownBytes}
	cutOff, err := serveCapped(func() error { return b.handleDataPlane(src, cw, call) })
	if err != nil {
		return err // refused before the agent: no grant, agent offline, …
	}
	res.Status, res.Bytes, res.Cut = cw.status, cw.buf.Len(), cw.cut || cutOff
	if res.Cut {
		res.CutWhy = fmt.Sprintf("the answer passed the console's %d bytes", maxShownBytes)
		if cutOff {
			res.CutWhy = "the answer was cut off before its end"
		}
	}
	if msg := cw.header.Get(protocol.TrailerStopped); msg != "" {
		res.Stopped, res.StopText = true, msg
	}
	if cw.status >= 400 {
		res.Refused = true
		var env brokerapi.ErrorEnvelope
		if json.Unmarshal(cw.buf.Bytes(), &env) == nil && env.Error.Code != "" {
			res.Code, res.Reason = env.Error.Code, env.Error.Message
		} else {
			res.Code, res.Reason = http.StatusText(cw.status), truncate(cw.buf.String(), 2000)
		}
		if m := guardOffset.FindStringSubmatch(res.Reason); m != nil {
			if n, err := strconv.Atoi(m[1]); err == nil && n >= 0 && n <= len(text) && utf8.ValidString(text[:n]) {
				res.Offset, res.Before, res.At = n, text[:n], text[n:]
			}
		}
		return b.renderQuery(w, r, http.StatusOK, res, src.Name)
	}
	k.read(text, cw.header.Get("Content-Type"), cw.buf.Bytes(), res)
	if res.RowsKnown && len(res.Rows) > maxShownRows {
		res.Rows, res.Cut = res.Rows[:maxShownRows], true
		res.CutWhy = fmt.Sprintf("%d rows shown of the %d read", maxShownRows, res.RowCount)
	}
	return b.renderQuery(w, r, http.StatusOK, res, src.Name)
}

// readSQL reads ClickHouse's answer. The agent answers
// TabSeparatedWithNames, read as a table, unless the statement names its
// own FORMAT: then ClickHouse answers in it, and the console shows that
// verbatim, as text, with its byte count (its rows are not counted).
// Whether the statement names a FORMAT is read by the SQL guard's own
// parser; the guard that decides is the agent's.
func readSQL(text, ct string, body []byte, res *queryResult) {
	if v, _ := sqlguard.Check(text); v.Allow && v.Format == "" {
		if cols, rows, ok := tsvTable(ct, body); ok {
			res.Cols, res.Rows, res.RowCount, res.RowsKnown = cols, rows, len(rows), true
			return
		}
	}
	res.Raw = strings.ToValidUTF8(string(body), "\uFFFD")
}

// guardOffset finds where a guard's reason says it objected.
var guardOffset = regexp.MustCompile(`\(offset (\d+)\)`)

// serveCapped runs serve, turning the data-plane handler's abort of an
// answer cut off midway (panic(http.ErrAbortHandler)) into cut.
func serveCapped(serve func() error) (cut bool, err error) {
	defer func() {
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler { //nolint:errorlint // the sentinel is panicked as is
				panic(v)
			}
			cut = true
		}
	}()
	return false, serve()
}

// cappedWriter keeps the first limit bytes of an answer and then fails
// the write, which stops the data-plane handler and cancels the call.
type cappedWriter struct {
	header http.Header
	status int
	buf    bytes.Buffer
	limit  int
	cut    bool
}

var errAnswerTooLarge = errors.New("the answer passed the console's bound")

func (c *cappedWriter) Header() http.Header { return c.header }

func (c *cappedWriter) WriteHeader(status int) {
	if c.status == 0 {
		c.status = status
	}
}

func (c *cappedWriter) Write(p []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	room := c.limit - c.buf.Len()
	if len(p) > room {
		c.buf.Write(p[:room])
		c.cut = true
		return room, errAnswerTooLarge
	}
	return c.buf.Write(p)
}

// tsvTable reads ClickHouse's TabSeparatedWithNames answer (the agent's
// default format); a query asking another format is shown as text. A
// last line cut by the console's bound is dropped.
func tsvTable(contentType string, body []byte) ([]string, [][]string, bool) {
	if !strings.HasPrefix(contentType, "text/tab-separated-values") {
		return nil, nil, false
	}
	lines := strings.Split(string(body), "\n")
	if len(lines) == 0 || lines[0] == "" {
		return nil, nil, false
	}
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	} else if len(lines) > 1 {
		lines = lines[:len(lines)-1] // incomplete: cut by the bound
	}
	cols := tsvFields(lines[0])
	rows := make([][]string, 0, len(lines)-1)
	for _, l := range lines[1:] {
		rows = append(rows, tsvFields(l))
	}
	return cols, rows, true
}

// tsvFields splits one TabSeparated line and undoes its escapes.
func tsvFields(line string) []string {
	fs := strings.Split(line, "\t")
	for i, f := range fs {
		if strings.IndexByte(f, '\\') >= 0 {
			fs[i] = tsvUnescape.Replace(f)
		}
	}
	return fs
}

var tsvUnescape = strings.NewReplacer(`\\`, `\`, `\t`, "\t", `\n`, "\n", `\r`, "\r", `\0`, "\x00", `\'`, "'", `\b`, "\b", `\f`, "\f")

// readProm reads a Prometheus query answer into res: an instant vector
// as one row per series (its labels, time and value), a scalar or string
// as one row, a range query's matrix as each series' labels followed by
// its samples. The answer is read as a stream of JSON tokens, so that a
// matrix cut by the console's byte bound still shows the samples read up
// to the cut (the page says it was cut). Anything else is shown
// verbatim.
func readProm(body []byte, res *queryResult) {
	if !readPromJSON(body, res) {
		res.Cols, res.Rows, res.Series, res.RowCount, res.RowsKnown = nil, nil, nil, 0, false
		res.Raw = strings.ToValidUTF8(string(body), "\uFFFD")
	}
}

func readPromJSON(body []byte, res *queryResult) bool {
	dec := json.NewDecoder(bytes.NewReader(body))
	var status, typ string
	var raw json.RawMessage // a result read before its type
	read := false
	ok := eachKey(dec, func(k string) bool {
		switch k {
		case "status":
			return dec.Decode(&status) == nil
		case "data":
			return eachKey(dec, func(k string) bool {
				switch {
				case k == "resultType":
					return dec.Decode(&typ) == nil
				case k == "result" && typ == "matrix" && status == "success":
					read = true
					readMatrix(dec, res)
					return false // the matrix is the answer: read no further
				case k == "result":
					return dec.Decode(&raw) == nil
				}
				return skipValue(dec)
			})
		}
		return skipValue(dec)
	})
	if status != "success" {
		return false
	}
	if read {
		return true
	}
	if !ok || raw == nil {
		return false
	}
	switch typ {
	case "matrix":
		readMatrix(json.NewDecoder(bytes.NewReader(raw)), res)
		return true
	case "vector":
		var series []struct {
			Metric map[string]string `json:"metric"`
			Value  []any             `json:"value"`
		}
		if json.Unmarshal(raw, &series) != nil {
			return false
		}
		res.Cols = []string{"series", "at", "value"}
		for _, s := range series {
			at, val := promSample(s.Value)
			res.Rows = append(res.Rows, []string{seriesLabels(s.Metric), at, val})
		}
	case "scalar", "string":
		var v []any
		if json.Unmarshal(raw, &v) != nil {
			return false
		}
		at, val := promSample(v)
		res.Cols, res.Rows = []string{"at", "value"}, [][]string{{at, val}}
	default:
		return false
	}
	res.RowCount, res.RowsKnown = len(res.Rows), true
	return true
}

// readMatrix reads a matrix's series from dec, up to the end of the
// answer or of what was read of it: each series' samples (and native
// histograms) are counted in full, and shown while the series headings
// and samples shown stay within maxShownRows.
func readMatrix(dec *json.Decoder, res *queryResult) {
	shown, series, samples := 0, 0, 0
	res.RowsKnown = true
	defer func() {
		res.RowCount, res.SeriesCount = samples, series
		if series+samples > shown {
			res.Cut = true
			why := fmt.Sprintf("%d rows shown (series and samples) of the %d samples read", maxShownRows, samples)
			if res.CutWhy != "" {
				why += "; " + res.CutWhy
			}
			res.CutWhy = why
		}
	}()
	if t, err := dec.Token(); err != nil || t != json.Delim('[') {
		return
	}
	for dec.More() {
		var s *seriesRows
		ok := eachKey(dec, func(k string) bool {
			switch k {
			case "metric":
				var m map[string]string
				if dec.Decode(&m) != nil {
					return false
				}
				series++
				if shown < maxShownRows {
					res.Series = append(res.Series, seriesRows{Labels: seriesLabels(m)})
					s = &res.Series[len(res.Series)-1]
					shown++
				}
				return true
			case "values", "histograms":
				return eachElem(dec, func() bool {
					var v []any
					if dec.Decode(&v) != nil {
						return false
					}
					samples++
					if s != nil && shown < maxShownRows {
						at, val := promSample(v)
						s.Samples = append(s.Samples, [2]string{at, val})
						shown++
					}
					return true
				})
			}
			return skipValue(dec)
		})
		if !ok {
			return
		}
	}
}

// eachKey reads a JSON object from dec, calling f at each key with dec
// before its value; f reads the value and says whether to go on. It
// reports whether the whole object was read.
func eachKey(dec *json.Decoder, f func(key string) bool) bool {
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return false
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return false
		}
		k, _ := t.(string)
		if !f(k) {
			return false
		}
	}
	_, err := dec.Token()
	return err == nil
}

// eachElem reads a JSON array from dec, calling f before each element;
// f reads it and says whether to go on.
func eachElem(dec *json.Decoder, f func() bool) bool {
	if t, err := dec.Token(); err != nil || t != json.Delim('[') {
		return false
	}
	for dec.More() {
		if !f() {
			return false
		}
	}
	_, err := dec.Token()
	return err == nil
}

func skipValue(dec *json.Decoder) bool {
	var v json.RawMessage
	return dec.Decode(&v) == nil
}

// promSample is a sample's time (RFC 3339, UTC, to the millisecond Prometheus
// keeps) and value; a native histogram's value is its JSON.
func promSample(v []any) (at, val string) {
	if len(v) != 2 {
		return "", ""
	}
	if ts, ok := v[0].(float64); ok {
		at = time.UnixMilli(int64(math.Round(ts * 1000))).UTC().Format(time.RFC3339Nano)
	}
	switch x := v[1].(type) {
	case string:
		val = x
	default:
		j, _ := json.Marshal(x)
		val = string(j)
	}
	return at, val
}

// seriesLabels writes a series' labels as PromQL does, sorted by name.
func seriesLabels(m map[string]string) string {
	labels := make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		labels = append(labels, k+"="+strconv.Quote(m[k]))
	}
	return "{" + strings.Join(labels, ", ") + "}"
}
