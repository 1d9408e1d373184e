package brokercli

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/tetherhq/tether/internal/source/clickhouse"

	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/cli"
	"github.com/tetherhq/tether/internal/protocol"
	"github.com/tetherhq/tether/internal/sqlguard"
)

type queryCmd struct {
	SQL        string `arg:"" placeholder:"SQL" help:"one read-only statement (quote it), or - to read it from stdin"`
	Deployment string `placeholder:"TENANT/NAME" help:"deployment as TENANT/NAME, e.g. acme/prod (required)"`
	Output     string `short:"o" placeholder:"FORMAT" help:"output: table (the default), json (JSONEachRow) or csv (CSVWithNames)"`
	Format     string `placeholder:"F" help:"any ClickHouse output format the agent allows, passed through raw (e.g. PrettyCompact, Vertical)"`
	Timing     bool   `help:"print where the call's time went, hop by hop (the answer's Server-Timing), to stderr"`
	clientFlags
}

func (queryCmd) Help() string {
	return `Runs one read-only SQL statement on the deployment's ClickHouse under your
active grant (scope clickhouse:system); the agent lets it read ClickHouse's
system tables only. SQL "-" reads the statement from stdin.

--output table (the default) prints aligned columns, at most 10000 rows
(use csv or json, or a LIMIT, for more); json prints one JSON object per
row (JSONEachRow); csv prints CSV with a header row. --format F, or a
FORMAT clause in the SQL, passes that ClickHouse format through as is,
such as PrettyCompact or Vertical. The query ID and the row count go to
stderr at the end.`
}

func (queryCmd) ArgsError(cmd string) error {
	return cli.Usagef("%s: want the SQL as exactly one argument (quote it), or - to read it from stdin", cmd)
}

// maxTableRows bounds what --output table holds in memory to align.
const maxTableRows = 10000

// maxTSVLine bounds one row of a table result.
const maxTSVLine = 16 << 20

func (cmd *queryCmd) Run(e *env) error {
	ctx, stdout, stderr, format := e.ctx, e.stdout, e.stderr, &cmd.Format
	ref, err := parseDeploymentRef("--deployment", cmd.Deployment)
	if err != nil {
		return err
	}
	outputSet := cmd.Output != ""
	output := cmp.Or(cmd.Output, "table")
	if err := cli.CheckOutput(output, "table", "json", "csv"); err != nil {
		return err
	}
	if *format != "" {
		if outputSet {
			return cli.Usagef("broker query: give --output or --format, not both")
		}
		if !sqlguard.FormatAllowed(*format) {
			return cli.Usagef("--format %q: not a format the agent allows; want one of %s", *format, strings.Join(sqlguard.Formats(), ", "))
		}
	}
	sql, err := readSQL(cmd.SQL, e.stdin)
	if err != nil {
		return err
	}
	mode := output
	wire := map[string]string{"table": "TabSeparatedWithNames", "json": "JSONEachRow", "csv": "CSVWithNames"}[mode]
	if *format != "" {
		mode, wire = "raw", *format
	} else if v, _ := sqlguard.Check(sql); v.Format != "" {
		// The statement names its own format, which wins over ours:
		// pass it through rather than misread it.
		mode, wire = "raw", ""
	}
	c, err := cmd.client(ctx)
	if err != nil {
		return err
	}
	start := time.Now()
	res, err := clickHouseQuery(ctx, c, ref, sql, wire)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	qid := res.Header.Get("Tether-Query-Id")
	var (
		rows   int64
		what   = "rows"
		note   string
		reason string // why the result is incomplete; "" when it is whole
	)
	switch mode {
	case "table":
		body := &readErr{r: res.Body}
		t, err := readTSV(body, maxTableRows)
		rows = int64(len(t.rows))
		var ce *clickHouseError
		switch {
		case errors.As(err, &ce):
			reason = "ClickHouse stopped it with an error: " + ce.msg
		case body.err != nil:
			reason = resultReason(res, body.err)
		case errors.Is(err, errTornRow):
			reason = resultReason(res, errTornRow)
		case err != nil:
			return fmt.Errorf("query %s: %w", orDash(qid), err)
		case t.truncated:
			// The rest of the answer, trailer included, was never read.
			note = fmt.Sprintf("; showing the first %d rows, the rest was not read (use --output csv or json, or a LIMIT)", maxTableRows)
		default:
			reason = resultReason(res, nil)
		}
		// The rows shown are whole rows: a torn last one was dropped.
		if werr := renderTable(stdout, t.header, t.rows); werr != nil {
			return werr
		}
	default:
		count := &countingWriter{w: stdout, csv: mode == "csv"}
		_, rerr := io.Copy(count, res.Body)
		if ce := count.takeException(); ce != nil {
			reason = "ClickHouse stopped it with an error: " + ce.msg
		} else {
			reason = resultReason(res, rerr)
		}
		// A torn last row or line is never printed; whole rows are.
		if werr := count.end(reason == ""); werr != nil {
			return werr
		}
		switch mode {
		case "json":
			rows = count.lines
		case "csv":
			rows = max(count.lines-1, 0) // the header
		default:
			rows, what = count.bytes, "bytes"
		}
	}
	if rows == 1 {
		what = strings.TrimSuffix(what, "s")
	}
	took := time.Since(start)
	if cmd.Timing {
		printTiming(stderr, res, took)
	}
	if reason != "" {
		return fmt.Errorf("the result is incomplete: %s (query %s, after %d %s)", reason, orDash(qid), rows, what)
	}
	fmt.Fprintf(stderr, "query %s: %d %s in %s%s\n", orDash(qid), rows, what, took.Round(time.Millisecond), note)
	return nil
}

// printTiming prints the hops of an answer's Server-Timing header and
// trailer, and what the client saw in all.
func printTiming(w io.Writer, res *http.Response, took time.Duration) {
	st := append(protocol.TimingFrom(res.Header), protocol.TimingFrom(res.Trailer)...)
	if len(st) == 0 {
		fmt.Fprintf(w, "timing: the broker sent none; %.2f ms in all\n", float64(took)/float64(time.Millisecond))
		return
	}
	fmt.Fprintf(w, "timing: %s; %.2f ms in all, as this client saw it\n", st.Human(), float64(took)/float64(time.Millisecond))
}

// resultReason says why an answer read to its end (rerr nil) or until
// rerr is incomplete, or "" when the broker's trailer says it is whole.
// An answer without the trailer is incomplete: the connection may have
// broken in a way that looked like an end, or something on the way is
// too old to vouch for the answer.
func resultReason(res *http.Response, rerr error) string {
	switch {
	case errors.Is(rerr, errTornRow):
		return "the answer ended in the middle of a row"
	case rerr != nil:
		return "the answer broke off before its end (the agent, the broker or the connection went away): " + rerr.Error()
	}
	v, stopped := res.Trailer.Get(protocol.TrailerResult), res.Trailer.Get(protocol.TrailerStopped)
	complete, reason := protocol.ResultReason(v)
	switch {
	case complete && stopped != "":
		return stopped
	case complete:
		return ""
	case v == "" && stopped != "":
		return stopped
	}
	return reason
}

// readErr remembers the error, other than EOF, reading r gave.
type readErr struct {
	r   io.Reader
	err error
}

func (e *readErr) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		e.err = err
	}
	return n, err
}

// readSQL takes the statement from the positional argument, or from
// stdin when that is "-".
func readSQL(sql string, stdin io.Reader) (string, error) {
	if sql == "-" {
		b, err := io.ReadAll(io.LimitReader(stdin, sqlguard.MaxQueryBytes+1))
		if err != nil {
			return "", fmt.Errorf("read the SQL from stdin: %w", err)
		}
		sql = string(b)
	}
	switch {
	case strings.TrimSpace(sql) == "":
		return "", cli.Usagef("broker query: the SQL is empty")
	case len(sql) > sqlguard.MaxQueryBytes:
		return "", cli.Usagef("broker query: the SQL is over %d bytes, the agent's limit", sqlguard.MaxQueryBytes)
	}
	return sql, nil
}

// clickHouseQuery posts sql to the deployment's query endpoint and returns
// the successful, still streaming answer, or the broker's error.
func clickHouseQuery(ctx context.Context, c *brokerapi.Client, ref, sql, format string) (*http.Response, error) {
	body := map[string]string{"sql": sql}
	if format != "" {
		body["format"] = format
	}
	b, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	res, err := c.DataPlane(ctx, http.MethodPost, ref, "clickhouse/query", bytes.NewReader(b), http.Header{"Content-Type": {"application/json"}})
	if err != nil {
		return nil, fmt.Errorf("cannot reach the broker API: %w", err)
	}
	if res.StatusCode >= 300 {
		defer res.Body.Close()
		return nil, brokerapi.ErrorFromResponse(res)
	}
	return res, nil
}

// clickHouseError is an exception ClickHouse wrote into a result it had
// begun to send.
type clickHouseError struct{ msg string }

func (e *clickHouseError) Error() string { return e.msg }

// countingWriter passes a result through, counting bytes and rows (lines,
// or for CSV records, whose quoted fields may hold newlines). It holds
// back the last whole line and the line being read: the last line may be
// an exception ClickHouse appended, and the line being read may be torn
// when the answer breaks off. end writes them, or drops what is not a
// whole row.
type countingWriter struct {
	w            io.Writer
	csv, inQuote bool
	lines, bytes int64
	held         []byte // the last whole line, with its newline
	cur          []byte // the line being read
	err          error  // the first error writing to w
}

// maxHeldLine bounds what countingWriter holds back: a longer line is
// passed through as it comes (and can then not be taken back).
const maxHeldLine = 16 << 20

func (c *countingWriter) Write(p []byte) (int, error) {
	c.bytes += int64(len(p))
	for _, b := range p {
		c.cur = append(c.cur, b)
		if c.csv && b == '"' {
			c.inQuote = !c.inQuote
		}
		if b == '\n' && !c.inQuote {
			c.lines++
			c.write(c.held)
			c.held, c.cur = c.cur, c.held[:0]
			continue
		}
		if len(c.cur) > maxHeldLine {
			c.write(c.held)
			c.write(c.cur)
			c.held, c.cur = c.held[:0], c.cur[:0]
		}
	}
	return len(p), c.err
}

func (c *countingWriter) write(b []byte) {
	if c.err == nil && len(b) > 0 {
		_, c.err = c.w.Write(b)
	}
}

// takeException returns the ClickHouse exception the output ended with,
// if it did, drops it from the output and stops counting its line as a
// row.
func (c *countingWriter) takeException() *clickHouseError {
	line, ended := c.cur, false
	if len(bytes.TrimSpace(line)) == 0 {
		line, ended = c.held, true
	}
	s := string(bytes.TrimSpace(line))
	if !isException(s) {
		return nil
	}
	if ended && c.lines > 0 {
		c.lines--
	}
	c.held, c.cur = nil, nil
	return &clickHouseError{msg: s}
}

// end writes what was held back: everything when the result is
// complete; otherwise the last whole line, but not a torn one.
func (c *countingWriter) end(complete bool) error {
	c.write(c.held)
	if complete {
		c.write(c.cur)
	}
	c.held, c.cur = nil, nil
	return c.err
}

func isException(s string) bool {
	return strings.Contains(s, "DB::Exception") &&
		(strings.HasPrefix(s, "Code: ") || strings.HasPrefix(s, `{"exception":`) || strings.Contains(s, "__exception__"))
}

// tsvResult is a TabSeparatedWithNames result, unescaped.
type tsvResult struct {
	header    []string
	rows      [][]string
	truncated bool // more rows followed than were read
}

// readTSV reads a TabSeparatedWithNames result, at most maxRows rows. A
// row whose field count does not match the header ends it with an error:
// that is ClickHouse's exception text, or a broken stream.
func readTSV(r io.Reader, maxRows int) (tsvResult, error) {
	var t tsvResult
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxTSVLine)
	sc.Split(wholeLines)
	first := true
	for sc.Scan() {
		line := sc.Text()
		if first {
			first = false
			if isException(line) {
				return t, &clickHouseError{msg: line}
			}
			for _, f := range strings.Split(line, "\t") {
				t.header = append(t.header, clickhouse.UnescapeTSV(f))
			}
			continue
		}
		if len(t.rows) == maxRows {
			t.truncated = true
			return t, nil
		}
		fields := strings.Split(line, "\t")
		if len(fields) != len(t.header) {
			if isException(line) {
				return t, &clickHouseError{msg: strings.TrimSpace(line)}
			}
			return t, fmt.Errorf("row %d has %d fields, the header %d: %w", len(t.rows)+1, len(fields), len(t.header), errNotTSV)
		}
		row := make([]string, len(fields))
		for i, f := range fields {
			if f == `\N` {
				row[i] = "NULL"
				continue
			}
			row[i] = clickhouse.UnescapeTSV(f)
		}
		t.rows = append(t.rows, row)
	}
	if errors.Is(sc.Err(), bufio.ErrTooLong) {
		return t, fmt.Errorf("row %d is longer than %d MiB: use --output csv or json", len(t.rows)+1, maxTSVLine>>20)
	}
	return t, sc.Err()
}

// errNotTSV: a row's fields do not match the header.
var errNotTSV = errors.New("the result is not TabSeparatedWithNames")

// errTornRow: the answer ended in the middle of a line.
var errTornRow = errors.New("the answer ended in the middle of a row")

// wholeLines is bufio.ScanLines but for the last line: one without its
// newline is torn, never a row.
func wholeLines(data []byte, atEOF bool) (int, []byte, error) {
	if i := bytes.IndexByte(data, '\n'); i >= 0 {
		return i + 1, bytes.TrimSuffix(data[:i], []byte("\r")), nil
	}
	if atEOF && len(data) > 0 {
		return 0, nil, errTornRow
	}
	return 0, nil, nil
}

// displayLines turns a cell into the lines it shows as: split at
// newlines, tabs expanded, other control characters (which could drive
// the terminal) shown as escapes.
func displayLines(s string) []string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		var b strings.Builder
		col := 0
		for _, r := range l {
			switch {
			case r == '\t':
				n := 4 - col%4
				b.WriteString(strings.Repeat(" ", n))
				col += n
			case r == utf8.RuneError || unicode.IsControl(r):
				e := strconv.QuoteRune(r)
				e = e[1 : len(e)-1]
				b.WriteString(e)
				col += len(e)
			default:
				b.WriteRune(r)
				col++
			}
		}
		lines[i] = b.String()
	}
	return lines
}

// renderTable prints header and rows as aligned columns: numbers to the
// right, multi-line values over several lines.
func renderTable(w io.Writer, header []string, rows [][]string) error {
	if len(header) == 0 {
		return nil
	}
	cells := make([][][]string, 0, len(rows)+1) // row, column, line
	add := func(r []string) {
		cr := make([][]string, len(r))
		for i, s := range r {
			cr[i] = displayLines(s)
		}
		cells = append(cells, cr)
	}
	add(header)
	for _, r := range rows {
		add(r)
	}
	width := make([]int, len(header))
	numeric := make([]bool, len(header))
	for i := range numeric {
		numeric[i] = len(rows) > 0
	}
	for ri, r := range cells {
		for i, lines := range r {
			for _, l := range lines {
				width[i] = max(width[i], utf8.RuneCountInString(l))
			}
			if ri > 0 && numeric[i] && rows[ri-1][i] != "NULL" {
				if _, err := strconv.ParseFloat(rows[ri-1][i], 64); err != nil {
					numeric[i] = false
				}
			}
		}
	}
	bw := bufio.NewWriter(w)
	line := func(r [][]string) {
		height := 1
		for _, lines := range r {
			height = max(height, len(lines))
		}
		for h := 0; h < height; h++ {
			var b strings.Builder
			for i, lines := range r {
				s := ""
				if h < len(lines) {
					s = lines[h]
				}
				pad := strings.Repeat(" ", width[i]-utf8.RuneCountInString(s))
				if i > 0 {
					b.WriteString("  ")
				}
				if numeric[i] {
					b.WriteString(pad + s)
				} else {
					b.WriteString(s + pad)
				}
			}
			bw.WriteString(strings.TrimRight(b.String(), " "))
			bw.WriteByte('\n')
		}
	}
	line(cells[0])
	var under []string
	for _, n := range width {
		under = append(under, strings.Repeat("-", n))
	}
	bw.WriteString(strings.Join(under, "  ") + "\n")
	for _, r := range cells[1:] {
		line(r)
	}
	return bw.Flush()
}

type promCmd struct {
	Query      string        `arg:"" placeholder:"PROMQL" help:"the PromQL query (quote it)"`
	Deployment string        `placeholder:"TENANT/NAME" help:"deployment as TENANT/NAME, e.g. acme/prod (required)"`
	Range      time.Duration `placeholder:"DURATION" help:"run a range query over this long, e.g. 1h"`
	Step       time.Duration `placeholder:"DURATION" help:"resolution of a range query (default range/250)"`
	Time       string        `placeholder:"T" help:"evaluation time (the end, with --range): RFC 3339 or Unix seconds (default now)"`
	clientFlags
	outputFlag
}

func (promCmd) Help() string {
	return `Runs a PromQL query on the deployment's Prometheus under your active grant
(scope prometheus:read): an instant query, or with --range a range query
ending at --time (default now). --step defaults to range/250. --time is an
RFC 3339 time or Unix seconds. --output json prints Prometheus's answer as
it came.`
}

func (promCmd) ArgsError(cmd string) error {
	return cli.Usagef("%s: want the PromQL query as exactly one argument (quote it)", cmd)
}

// maxPromPoints is Prometheus's limit on the points of one range query.
const maxPromPoints = 11000

// maxPromTable bounds the answer --output table reads to print.
const maxPromTable = 64 << 20

func (cmd *promCmd) Run(e *env) error {
	ctx, stdout, stderr := e.ctx, e.stdout, e.stderr
	ref, err := parseDeploymentRef("--deployment", cmd.Deployment)
	if err != nil {
		return err
	}
	if strings.TrimSpace(cmd.Query) == "" {
		return cmd.ArgsError("broker prom")
	}
	if err := cmd.check(); err != nil {
		return err
	}
	path, params, err := promParams(cmd.Query, cmd.Range, cmd.Step, cmd.Time, time.Now())
	if err != nil {
		return err
	}
	c, err := cmd.client(ctx)
	if err != nil {
		return err
	}
	res, err := c.DataPlane(ctx, http.MethodGet, ref, "prometheus/"+path+"?"+params.Encode(), nil, nil)
	if err != nil {
		return fmt.Errorf("cannot reach the broker API: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode >= 300 {
		b, _ := io.ReadAll(io.LimitReader(res.Body, brokerapi.MaxBody))
		return promError(res.StatusCode, b)
	}
	if cmd.json() {
		_, err := io.Copy(stdout, res.Body)
		if reason := resultReason(res, err); reason != "" {
			return fmt.Errorf("the result is incomplete: %s", reason)
		}
		return nil
	}
	b, err := io.ReadAll(io.LimitReader(res.Body, maxPromTable+1))
	if len(b) > maxPromTable {
		return fmt.Errorf("the answer is over %d MiB: use --output json, or narrow the query", maxPromTable>>20)
	}
	if reason := resultReason(res, err); reason != "" {
		return fmt.Errorf("the result is incomplete: %s", reason)
	}
	notes, err := renderProm(stdout, b, time.Local)
	for _, n := range notes {
		fmt.Fprintln(stderr, n)
	}
	return err
}

// promParams builds the API path and parameters of an instant query, or
// of a range query when rng is set.
func promParams(q string, rng, step time.Duration, at string, now time.Time) (string, url.Values, error) {
	end := now
	if at != "" {
		t, err := parsePromTime(at)
		if err != nil {
			return "", nil, err
		}
		end = t
	}
	v := url.Values{"query": {q}}
	if rng == 0 {
		if step != 0 {
			return "", nil, cli.Usagef("--step needs --range: a step is the resolution of a range query")
		}
		if at != "" {
			v.Set("time", promTime(end))
		}
		return "api/v1/query", v, nil
	}
	if rng < 0 || step < 0 {
		return "", nil, cli.Usagef("--range and --step must be positive, such as --range 1h --step 1m")
	}
	if step == 0 {
		step = max(((rng/250)+time.Second-1)/time.Second*time.Second, time.Second)
	}
	if points := rng / step; points > maxPromPoints {
		return "", nil, cli.Usagef("--range %v at --step %v is %d points; Prometheus allows %d: give a larger --step", rng, step, points, maxPromPoints)
	}
	v.Set("start", promTime(end.Add(-rng)))
	v.Set("end", promTime(end))
	v.Set("step", strconv.FormatFloat(step.Seconds(), 'f', -1, 64))
	return "api/v1/query_range", v, nil
}

func parsePromTime(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil && !math.IsInf(f, 0) && !math.IsNaN(f) {
		sec, frac := math.Modf(f)
		return time.Unix(int64(sec), int64(frac*1e9)), nil
	}
	return time.Time{}, cli.Usagef("--time %q: want an RFC 3339 time such as 2026-11-25T10:00:00Z, or Unix seconds", s)
}

func promTime(t time.Time) string {
	return strconv.FormatFloat(float64(t.UnixMilli())/1000, 'f', -1, 64)
}

// promAnswer is the envelope of Prometheus's API answers.
type promAnswer struct {
	Status    string   `json:"status"`
	ErrorType string   `json:"errorType"`
	Error     string   `json:"error"`
	Warnings  []string `json:"warnings"`
	Infos     []string `json:"infos"`
	Data      struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	} `json:"data"`
}

// promError turns a failed answer into one line: Prometheus's own error,
// the broker's, or the status.
func promError(status int, body []byte) error {
	var a promAnswer
	if json.Unmarshal(body, &a) == nil && a.Status == "error" {
		return fmt.Errorf("prometheus: %s: %s", orDash(a.ErrorType), oneLine(a.Error))
	}
	if e, ok := brokerapi.DecodeError(status, body); ok {
		return e
	}
	return fmt.Errorf("the broker answered %d %s", status, http.StatusText(status))
}

// promSample is a [time, "value"] pair.
type promSample struct {
	T time.Time
	V string
}

func (s *promSample) UnmarshalJSON(b []byte) error {
	var pair [2]json.RawMessage
	if err := json.Unmarshal(b, &pair); err != nil {
		return err
	}
	var ts float64
	if err := json.Unmarshal(pair[0], &ts); err != nil {
		return fmt.Errorf("sample time: %w", err)
	}
	sec, frac := math.Modf(ts)
	s.T = time.Unix(int64(sec), int64(math.Round(frac*1000))*int64(time.Millisecond))
	if err := json.Unmarshal(pair[1], &s.V); err != nil {
		// A native histogram: show its count and sum.
		var h struct {
			Count string `json:"count"`
			Sum   string `json:"sum"`
		}
		if herr := json.Unmarshal(pair[1], &h); herr != nil {
			return fmt.Errorf("sample value: %w", err)
		}
		s.V = "histogram count=" + h.Count + " sum=" + h.Sum
	}
	return nil
}

// renderProm prints a successful query answer as a table and returns the
// notes for stderr: Prometheus's warnings and infos, and an empty result.
func renderProm(w io.Writer, body []byte, loc *time.Location) ([]string, error) {
	var a promAnswer
	if err := json.Unmarshal(body, &a); err != nil {
		return nil, fmt.Errorf("the answer is not Prometheus's JSON: %w", err)
	}
	if a.Status != "success" {
		return nil, fmt.Errorf("prometheus: %s: %s", orDash(a.ErrorType), oneLine(a.Error))
	}
	var notes []string
	for _, w := range a.Warnings {
		notes = append(notes, "prometheus warning: "+oneLine(w))
	}
	for _, i := range a.Infos {
		notes = append(notes, "prometheus info: "+oneLine(i))
	}
	at := func(t time.Time) string { return t.In(loc).Format(time.RFC3339Nano) }
	var header []string
	var rows [][]string
	switch a.Data.ResultType {
	case "vector":
		var vs []struct {
			Metric    map[string]string `json:"metric"`
			Value     *promSample       `json:"value"`
			Histogram *promSample       `json:"histogram"`
		}
		if err := json.Unmarshal(a.Data.Result, &vs); err != nil {
			return notes, fmt.Errorf("the answer's vector: %w", err)
		}
		header = []string{"SERIES", "VALUE", "TIME"}
		for _, v := range vs {
			s := v.Value
			if s == nil {
				s = v.Histogram
			}
			if s == nil {
				s = &promSample{}
			}
			rows = append(rows, []string{seriesName(v.Metric), s.V, at(s.T)})
		}
	case "matrix":
		var ms []struct {
			Metric     map[string]string `json:"metric"`
			Values     []promSample      `json:"values"`
			Histograms []promSample      `json:"histograms"`
		}
		if err := json.Unmarshal(a.Data.Result, &ms); err != nil {
			return notes, fmt.Errorf("the answer's matrix: %w", err)
		}
		header = []string{"SERIES", "POINTS", "LAST", "LAST TIME"}
		for _, m := range ms {
			pts := append(m.Values, m.Histograms...)
			last := promSample{}
			for _, p := range pts {
				if !p.T.Before(last.T) {
					last = p
				}
			}
			t := "-"
			if len(pts) > 0 {
				t = at(last.T)
			}
			rows = append(rows, []string{seriesName(m.Metric), strconv.Itoa(len(pts)), orDash(last.V), t})
		}
	case "scalar", "string":
		var s promSample
		if err := json.Unmarshal(a.Data.Result, &s); err != nil {
			return notes, fmt.Errorf("the answer's %s: %w", a.Data.ResultType, err)
		}
		header = []string{strings.ToUpper(a.Data.ResultType), "TIME"}
		rows = [][]string{{s.V, at(s.T)}}
	default:
		return notes, fmt.Errorf("the answer has result type %q, which the table cannot show: use --output json", a.Data.ResultType)
	}
	if len(rows) == 0 {
		notes = append(notes, "no series matched")
	}
	return notes, renderTable(w, header, rows)
}

// seriesName writes a label set as PromQL does: name{a="b", c="d"}.
func seriesName(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		if k != "__name__" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(m["__name__"])
	if len(keys) > 0 || b.Len() == 0 {
		b.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(k + "=" + strconv.Quote(m[k]))
		}
		b.WriteByte('}')
	}
	return b.String()
}
