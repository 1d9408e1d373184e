// Package clickhouse is the ClickHouse data source: read-only SQL on
// ClickHouse's system tables through its HTTP interface. On the agent it
// checks every statement with the SQL guard (made from the server's own
// list of system columns), forces the query limits, names each query
// tether-<grant>-<n> so that a revocation can KILL QUERY them, counts the
// rows of the answer, and audits query.allowed, query.denied and
// query.finished.
package clickhouse

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/tetherhq/tether/internal/names"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/protocol"
	"github.com/tetherhq/tether/internal/source"
	"github.com/tetherhq/tether/internal/sqlguard"
)

// Scope is the grant scope of ClickHouse's system tables.
const Scope = names.ScopeClickHouse

// Source is the ClickHouse data source.
var Source = source.Source{
	Name:     "clickhouse",
	Title:    "ClickHouse",
	Scope:    Scope,
	Denied:   audit.QueryDenied,
	Route:    source.Route{Method: http.MethodPost, Path: "query"},
	Proxy:    source.Proxy{DefaultListen: "127.0.0.1:8123"},
	Validate: validate,
	New:      func(up source.Upstream) source.Engine { return &engine{up: up} },
}

func validate(up source.Upstream) error {
	if up.User == "" {
		return errors.New("ClickHouse user is not set: want the read-only user of deploy/clickhouse/users.d/tether.xml (--clickhouse-user)")
	}
	return nil
}

// engine is the agent side of ClickHouse.
type engine struct {
	up     source.Upstream
	schema schemaCache // the SQL guard for this server
}

var grantIDRE = regexp.MustCompile(`^[A-Za-z0-9-]{1,64}$`)

// CheckGrant refuses a grant whose ID would need quoting: query IDs carry
// the grant ID into ClickHouse's SQL (KILL QUERY).
func (e *engine) CheckGrant(id string) error {
	if !grantIDRE.MatchString(id) {
		return fmt.Errorf("grant ID %q is not letters, digits and '-'", id)
	}
	return nil
}

// newRequest is a POST of sql to the server at path, as the agent's user.
func (e *engine) newRequest(ctx context.Context, path, sql string) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(e.up.URL, "/")+path, strings.NewReader(sql))
	if err != nil {
		return nil, err
	}
	req.SetBasicAuth(e.up.User, e.up.Password)
	return req, nil
}

// Revoke asks ClickHouse to kill every query of a grant (query IDs
// tether-<grant>-<n>) and returns how many it found. Cutting the HTTP
// call off is not enough: ClickHouse may keep running a query whose
// client went away.
func (e *engine) Revoke(ctx context.Context, env source.Env, grantID string) (int, error) {
	if !grantIDRE.MatchString(grantID) {
		return 0, fmt.Errorf("grant ID %q is not letters, digits and '-'", grantID)
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	// grantID matched grantIDRE: nothing in it needs quoting.
	return e.kill(ctx, env, "query_id LIKE 'tether-"+grantID+"-%'")
}

// StopOrphans kills the queries a previous run of the agent left running
// in ClickHouse (query IDs tether-…, this user's): their HTTP calls died
// with that agent, but ClickHouse may run them on to their time limit.
// A read-only user may kill its own queries (deploy/clickhouse/users.d/
// tether.xml), and only those are asked for.
func (e *engine) StopOrphans(ctx context.Context, env source.Env) (int, error) {
	if strings.ContainsAny(e.up.User, `'\`) {
		return 0, fmt.Errorf("user %q cannot be quoted in KILL QUERY", e.up.User)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return e.kill(ctx, env, "query_id LIKE 'tether-%' AND user = '"+e.up.User+"'")
}

// kill runs KILL QUERY WHERE cond (built only from checked IDs) and
// returns how many queries it found.
func (e *engine) kill(ctx context.Context, env source.Env, cond string) (int, error) {
	req, err := e.newRequest(ctx, "/", "KILL QUERY WHERE "+cond+" ASYNC FORMAT TabSeparated")
	if err != nil {
		return 0, err
	}
	res, err := env.Client().Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	if res.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("clickhouse answered %s: %s", res.Status, strings.TrimSpace(string(body)))
	}
	return strings.Count(string(body), "\n"), nil
}

// Serve runs one guarded query: guard, audit, forced limits, then the
// result streamed back without buffering.
func (e *engine) Serve(env source.Env, c source.Call, w http.ResponseWriter, r *http.Request) {
	var q protocol.ClickHouseQuery
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&q); err != nil {
		source.Error(w, http.StatusBadRequest, "bad_json", "request body: want {\"sql\": \"…\", \"format\": \"…\"}: "+err.Error())
		return
	}
	base := c.Event
	guardStart := time.Now()
	guard, err := e.sqlGuard(r.Context(), env)
	if err != nil {
		ev := base
		ev.Type, ev.Outcome, ev.Reason = audit.QueryDenied, audit.Failure, err.Error()
		ev.Details = map[string]any{"sql": q.SQL}
		env.Record(r.Context(), ev)
		source.Error(w, http.StatusBadGateway, "clickhouse_unreachable", err.Error())
		return
	}
	v, err := guard.Check(q.SQL)
	if err == nil && !v.Allow {
		err = errors.New(v.Reason)
	}
	format := q.Format
	if err == nil && v.Format == "" && format != "" {
		// A format asked beside the SQL passes the same allowlist.
		if !sqlguard.FormatAllowed(format) {
			err = fmt.Errorf("format %q is not allowed", format)
		}
	}
	if err != nil {
		ev := base
		ev.Type, ev.Outcome, ev.Reason = audit.QueryDenied, audit.Failure, err.Error()
		ev.Details = map[string]any{"sql": q.SQL}
		env.Record(r.Context(), ev)
		source.Error(w, http.StatusForbidden, "query_denied", err.Error())
		return
	}
	source.AddTiming(r.Context(), protocol.TimingGuard, time.Since(guardStart))
	if format == "" {
		format = "TabSeparatedWithNames"
	}
	queryID := fmt.Sprintf("tether-%s-%d", c.GrantID, env.NextID())
	ev := base
	ev.Type, ev.Outcome = audit.QueryAllowed, audit.Success
	ev.Details = map[string]any{"sql": q.SQL, "query_id": queryID, "tables": v.Tables}
	// The event is made durable while ClickHouse starts on the query;
	// nothing of the answer leaves before it is on disk.
	recorded := make(chan error, 1)
	go func() { recorded <- env.Record(r.Context(), ev) }()

	ctx, done := env.CallContext(r.Context(), c)
	defer done()
	lim := e.up.Limits
	params := url.Values{
		"query_id":             {queryID},
		"default_format":       {format},
		"max_execution_time":   {strconv.Itoa(int(lim.MaxExecutionTime / time.Second))},
		"max_result_rows":      {strconv.FormatInt(lim.MaxResultRows, 10)},
		"max_result_bytes":     {strconv.FormatInt(lim.MaxResultBytes, 10)},
		"result_overflow_mode": {"throw"},
		"max_memory_usage":     {strconv.FormatInt(lim.MaxMemoryUsage, 10)},
	}
	req, err := e.newRequest(ctx, "/?"+params.Encode(), q.SQL)
	if err != nil {
		source.Error(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	log := env.Logger()
	// However the call ends early — the grant expires or is revoked, the
	// broker or the engineer goes away — ClickHouse must stop too: a
	// query whose HTTP client left may otherwise run on.
	defer func() {
		if ctx.Err() != nil {
			kctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 3*time.Second)
			defer cancel()
			if _, err := e.kill(kctx, env, "query_id = '"+queryID+"'"); err != nil {
				log.Warn("could not kill a query cut off early", "query_id", queryID, "err", err)
			}
		}
	}()
	start := time.Now()
	res, err := env.Client().Do(req)
	if rerr := <-recorded; rerr != nil {
		if err == nil {
			res.Body.Close()
		}
		done() // cancels the call: the deferred kill stops the query
		source.Error(w, http.StatusServiceUnavailable, "audit_unavailable", "the agent could not record the query, so it did not answer it")
		return
	}
	// finish reports the end of the query: the bytes streamed, the rows
	// of the result when the answer tells them (rc, nil when nothing
	// was streamed), and what ClickHouse's summary header said it read.
	finish := func(rc *resultCounter, bytes int64, summary map[string]int64, ferr error) {
		ev := base
		ev.Type, ev.Outcome = audit.QueryFinished, audit.Success
		ev.Details = map[string]any{"query_id": queryID, "bytes": bytes, "duration_ms": time.Since(start).Milliseconds()}
		if rc != nil {
			if n, ok := rc.rows(); ok && ferr == nil {
				ev.Details["result_rows"] = n
			}
			if code, ok := rc.exception(); ok && ferr == nil {
				ferr = fmt.Errorf("ClickHouse stopped the answer with an error (code %s) after it began", code)
			}
		}
		for k, v := range summary {
			ev.Details[k] = v
		}
		if ferr != nil {
			ev.Outcome, ev.Reason = audit.Failure, ferr.Error()
		}
		// The answer has streamed out by now (it is how rows and bytes
		// are counted), so the report of it is written beside the end of
		// the response rather than before: query.allowed, durable before
		// anything was answered, already says the query ran.
		env.AfterCall(func() { env.Record(context.WithoutCancel(r.Context()), ev) })
	}
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("cut off: %w", context.Cause(ctx))
		}
		finish(nil, 0, nil, err)
		source.UpstreamFailed(w, ctx, log, "ClickHouse", "clickhouse_unreachable", queryID, err)
		return
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(res.Body, 16<<10))
		ferr := fmt.Errorf("ClickHouse answered %s: %s", res.Status, strings.TrimSpace(string(msg)))
		finish(nil, 0, nil, ferr)
		source.Error(w, http.StatusBadGateway, "clickhouse_error", ferr.Error())
		return
	}
	w.Header().Set("Content-Type", res.Header.Get("Content-Type"))
	w.Header().Set("Tether-Query-Id", queryID)
	w.Header().Set("Trailer", protocol.TrailerStopped)
	w.WriteHeader(http.StatusOK)
	if v.Format != "" {
		format = v.Format // ClickHouse answers in the statement's FORMAT
	}
	rc := newResultCounter(format)
	n, cerr := source.Stream(w, res.Body, rc)
	if ctx.Err() != nil {
		cerr = fmt.Errorf("cut off: %w", context.Cause(ctx))
	}
	if cerr != nil {
		source.StoppedEarly(w, ctx, log, "ClickHouse", queryID, cerr)
	} else if code, ok := rc.exception(); ok {
		// ClickHouse began the answer, then ended it with its own error
		// (a time or size limit, a failure): the result is incomplete.
		w.Header().Set(protocol.TrailerStopped, "stopped: ClickHouse ended the answer with its error code "+code)
	}
	finish(rc, n, clickHouseSummary(res.Header.Get("X-ClickHouse-Summary")), cerr)
}
