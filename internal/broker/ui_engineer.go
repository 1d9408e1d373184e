package broker

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
	"github.com/tetherhq/tether/internal/protocol"
	"github.com/tetherhq/tether/internal/source"
	"github.com/tetherhq/tether/internal/source/clickhouse"
	"github.com/tetherhq/tether/internal/source/prometheus"
	"github.com/tetherhq/tether/internal/source/registry"
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
		})
	}
	slices.SortFunc(rows, func(a, b grantRow) int { return a.Expiry.Compare(b.Expiry) })
	b.render(w, r, http.StatusOK, "grants", "Active grants", map[string]any{"Rows": rows})
	return nil
}

// queryKind is how the console asks one data source: the call it makes
// on the data plane for the text of its form, and how it reads the answer
// into a table.
type queryKind struct {
	Title, Field, Placeholder string
	call                      func(text string) (method, path, rawQuery, contentType string, body []byte)
	table                     func(contentType string, body []byte) (cols []string, rows [][]string, ok bool)
}

var queryKinds = map[string]queryKind{
	clickhouse.Scope: {
		Title: "SQL (ClickHouse system tables)", Field: "sql", Placeholder: "SELECT name, engine FROM system.tables WHERE database = 'system' LIMIT 10",
		call: func(text string) (string, string, string, string, []byte) {
			body, _ := json.Marshal(protocol.ClickHouseQuery{SQL: text})
			return http.MethodPost, "query", "", "application/json", body
		},
		table: tsvTable,
	},
	prometheus.Scope: {
		Title: "PromQL (Prometheus, an instant query)", Field: "promql", Placeholder: "up",
		call: func(text string) (string, string, string, string, []byte) {
			return http.MethodGet, "api/v1/query", url.Values{"query": {text}}.Encode(), "", nil
		},
		table: promTable,
	},
}

type queryForm struct {
	Source, Title, Field, Placeholder, Action, Text string
	Live                                            bool // the engineer holds a live grant for it
}

type queryPage struct {
	Deployment string
	Forms      []queryForm
	Result     *queryResult
}

// queryResult is one query's answer as the console shows it.
type queryResult struct {
	Source, Text     string
	Status           int
	Refused          bool   // the agent's guard (or its grant check) refused it
	Code, Reason     string // the refusal's code and reason
	Offset           int    // where in Text the guard objected, or -1
	Before, At       string // Text split at Offset
	Cols             []string
	Rows             [][]string
	Raw              string // an answer the console does not read as a table
	RowCount, Bytes  int
	Cut, Stopped     bool
	CutWhy, StopText string
}

// uiQueryPage shows the query console of a deployment: a form per data
// source, live only where the engineer holds a grant for its scope.
func (b *Broker) uiQueryPage(w http.ResponseWriter, r *http.Request) error {
	return b.renderQuery(w, r, nil, "")
}

func (b *Broker) renderQuery(w http.ResponseWriter, r *http.Request, res *queryResult, src string) error {
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
		f := queryForm{Source: s.Name, Title: k.Title, Field: k.Field, Placeholder: k.Placeholder, Live: gerr == nil,
			Action: queryPath(d.Tenant, d.Name) + "/" + s.Name}
		if res != nil && s.Name == src {
			f.Text = res.Text
		}
		pg.Forms = append(pg.Forms, f)
	}
	b.render(w, r, http.StatusOK, "query", "Query "+pg.Deployment, pg)
	return nil
}

// uiQuery runs one query of the console through the data plane's own
// handler, as if the engineer's CLI had sent it: the broker finds the
// engineer's live grant for src's scope, the agent verifies it, guards
// the query, applies its limits and audits it. The answer is read up to
// maxShownBytes and shown as a table of up to maxShownRows rows.
func (b *Broker) uiQuery(src source.Source, w http.ResponseWriter, r *http.Request) error {
	k := queryKinds[src.Scope]
	text := strings.TrimSpace(r.PostForm.Get(k.Field))
	if text == "" || len(text) > maxQueryText {
		return errorf(http.StatusBadRequest, "invalid_query", "%s: want a query of 1 to %d bytes", k.Field, maxQueryText)
	}
	method, rest, rawQuery, ctype, body := k.call(text)
	call := r.Clone(r.Context())
	call.Method = method
	call.URL = &url.URL{
		Path:     "/api/v1/deployments/" + r.PathValue("tenant") + "/" + r.PathValue("name") + "/" + src.Name + "/" + rest,
		RawPath:  "/api/v1/deployments/" + url.PathEscape(r.PathValue("tenant")) + "/" + url.PathEscape(r.PathValue("name")) + "/" + src.Name + "/" + rest,
		RawQuery: rawQuery,
	}
	call.Body = io.NopCloser(bytes.NewReader(body))
	call.ContentLength = int64(len(body))
	call.Header = http.Header{}
	if ctype != "" {
		call.Header.Set("Content-Type", ctype)
	}
	call.SetPathValue("rest", rest)
	cw := &cappedWriter{header: http.Header{}, limit: maxShownBytes}
	cutOff, err := serveCapped(func() error { return b.handleDataPlane(src, cw, call) })
	if err != nil {
		return err // refused before the agent: no grant, agent offline, …
	}
	res := &queryResult{Source: src.Name, Text: text, Status: cw.status, Offset: -1, Bytes: cw.buf.Len(), Cut: cw.cut || cutOff}
	if res.Cut {
		res.CutWhy = fmt.Sprintf("the answer passed the console's %d bytes", maxShownBytes)
		if cutOff {
			res.CutWhy = "the answer was cut off before its end"
		}
	}
	if msg := cw.header.Get(protocol.TrailerStopped); msg != "" {
		res.Stopped, res.StopText = true, msg
	}
	ct := cw.header.Get("Content-Type")
	switch {
	case cw.status >= 400:
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
	default:
		cols, rows, ok := k.table(ct, cw.buf.Bytes())
		if !ok {
			res.Raw = truncate(cw.buf.String(), maxShownBytes)
			break
		}
		res.Cols, res.RowCount = cols, len(rows)
		if len(rows) > maxShownRows {
			rows, res.Cut = rows[:maxShownRows], true
			res.CutWhy = fmt.Sprintf("%d rows shown of the %d read", maxShownRows, res.RowCount)
		}
		res.Rows = rows
	}
	return b.renderQuery(w, r, res, src.Name)
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

// promTable reads a Prometheus query answer: one row per series, its
// labels and its value (or, for a range, its last value and how many).
func promTable(_ string, body []byte) ([]string, [][]string, bool) {
	var a struct {
		Status string `json:"status"`
		Data   struct {
			ResultType string          `json:"resultType"`
			Result     json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if json.Unmarshal(body, &a) != nil || a.Status != "success" {
		return nil, nil, false
	}
	sample := func(v []any) (string, string) {
		if len(v) != 2 {
			return "", ""
		}
		ts, _ := v[0].(float64)
		s, _ := v[1].(string)
		return time.Unix(int64(ts), 0).UTC().Format(time.RFC3339), s
	}
	switch a.Data.ResultType {
	case "vector", "matrix":
		var series []struct {
			Metric map[string]string `json:"metric"`
			Value  []any             `json:"value"`
			Values [][]any           `json:"values"`
		}
		if json.Unmarshal(a.Data.Result, &series) != nil {
			return nil, nil, false
		}
		rows := make([][]string, 0, len(series))
		for _, s := range series {
			keys := slices.Sorted(func(yield func(string) bool) {
				for k := range s.Metric {
					if !yield(k) {
						return
					}
				}
			})
			var labels []string
			for _, k := range keys {
				labels = append(labels, k+"="+strconv.Quote(s.Metric[k]))
			}
			v := s.Value
			n := ""
			if a.Data.ResultType == "matrix" && len(s.Values) > 0 {
				v, n = s.Values[len(s.Values)-1], strconv.Itoa(len(s.Values))
			}
			at, val := sample(v)
			row := []string{"{" + strings.Join(labels, ", ") + "}", at, val}
			if a.Data.ResultType == "matrix" {
				row = append(row, n)
			}
			rows = append(rows, row)
		}
		if a.Data.ResultType == "matrix" {
			return []string{"series", "last sample at", "last value", "samples"}, rows, true
		}
		return []string{"series", "at", "value"}, rows, true
	case "scalar", "string":
		var v []any
		if json.Unmarshal(a.Data.Result, &v) != nil {
			return nil, nil, false
		}
		at, val := sample(v)
		return []string{"at", "value"}, [][]string{{at, val}}, true
	}
	return nil, nil, false
}
