package agentcli

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"

	"github.com/tetherhq/tether/internal/cli"
	"github.com/tetherhq/tether/internal/promguard"
	"github.com/tetherhq/tether/internal/sqlguard"
)

// guardCmd is 'agent guard': the agent's guards, offline.
type guardCmd struct {
	SQL       guardQueryCmd `cmd:"" name:"sql" help:"the SQL guard's verdict on a statement, or on JSON lines {\"sql\": \"…\"} from stdin"`
	Prom      guardQueryCmd `cmd:"" name:"prom" help:"the Prometheus guard's verdict on a PromQL query or an /api/v1/ path, or on JSON lines {\"method\", \"url\", \"body\"} from stdin"`
	Catalog   catalogCmd    `cmd:"" help:"list the system tables the SQL guard's catalog covers, or one table's columns"`
	Functions functionsCmd  `cmd:"" help:"list the functions the catalog allows and refuses"`
	HelpCmd   cli.HelpCmd   `cmd:"" name:"help" hidden:""`
}

func (guardCmd) Help() string {
	return `sql and prom: with an argument, prints the guard's verdict for it and why
(exit 0 allowed, 1 denied). Without, reads JSON lines from stdin —
{"sql": "…"} for sql, {"method": "…", "url": "…", "body": "…"} for prom —
and writes one line per input, in order: {"allow": true|false, "reason": "…"}.
A malformed line is denied with "bad input: …" and the rest go on. Offline,
the SQL guard assumes the server has exactly the catalog's columns; the
running agent also refuses every column its ClickHouse has that the catalog
does not cover.`
}

// guardQueryCmd is 'agent guard sql' and 'agent guard prom'.
type guardQueryCmd struct {
	Query *string `arg:"" optional:"" help:"the SQL; for prom a PromQL expression or a path such as '/api/v1/series?match[]=up' (default: JSON lines from stdin)"`
}

func (c *guardQueryCmd) ArgsError(cmd string) error {
	return cli.Usagef("%s: want at most one query argument (quote it)", cmd)
}

func (c *guardQueryCmd) run(e *env) error {
	return guardQuery(e.command, c.Query, e.stdin, e.stdout)
}

type catalogCmd struct {
	Table string `arg:"" optional:"" placeholder:"system.TABLE" help:"a table whose columns to list, each safe or sensitive with the reason"`
}

func (c *catalogCmd) ArgsError(cmd string) error {
	return cli.Usagef("%s: want at most one argument", cmd)
}

func (c *catalogCmd) run(e *env) error { return printCatalog(e.stdout, c.Table) }

type functionsCmd struct {
	Substring string `arg:"" optional:"" help:"list only the functions whose name contains it, case-insensitively"`
}

func (c *functionsCmd) ArgsError(cmd string) error {
	return cli.Usagef("%s: want at most one argument", cmd)
}

func (c *functionsCmd) run(e *env) error { return printFunctions(e.stdout, c.Substring) }

// verdictLine is one output line of 'agent guard'.
type verdictLine struct {
	Allow  bool   `json:"allow"`
	Reason string `json:"reason"`
}

// maxGuardLine bounds one input line: a 64 KiB query in its JSON form.
const maxGuardLine = 1 << 20

// guardQuery prints the verdict of the guard kind ("sql" or "prom") on
// query, or on each JSON line of stdin when there is no query.
func guardQuery(kind string, query *string, stdin io.Reader, stdout io.Writer) error {
	var check func(line []byte) verdictLine
	var human func(arg string) verdictLine
	if kind == "sql" {
		check, human = checkSQLLine, func(q string) verdictLine { return sqlVerdict(q) }
	} else {
		check, human = checkPromLine, checkPromArg
	}
	if query != nil {
		v := human(*query)
		if v.Allow {
			fmt.Fprintf(stdout, "ALLOW: %s\n", v.Reason)
			return nil
		}
		fmt.Fprintf(stdout, "DENY: %s\n", v.Reason)
		return cli.Exit(1)
	}
	r := bufio.NewReaderSize(stdin, 64<<10)
	enc := json.NewEncoder(stdout)
	for {
		line, err := readLine(r)
		if len(line) > 0 || (err == nil) {
			var v verdictLine
			switch {
			case errors.Is(err, errLineTooLong):
				v = verdictLine{Reason: fmt.Sprintf("bad input: line longer than %d bytes", maxGuardLine)}
			case len(strings.TrimSpace(string(line))) == 0:
				v = verdictLine{Reason: "bad input: empty line"}
			default:
				v = check(line)
			}
			if werr := enc.Encode(v); werr != nil {
				return werr
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil && !errors.Is(err, errLineTooLong) {
			return err
		}
	}
}

var errLineTooLong = errors.New("line too long")

// readLine reads one line without its newline; an over-long line is
// consumed and reported as errLineTooLong.
func readLine(r *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		if len(line)+len(chunk) <= maxGuardLine {
			line = append(line, chunk...)
		} else {
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = r.ReadSlice('\n')
			}
			if err == nil || errors.Is(err, io.EOF) {
				return []byte{' '}, errLineTooLong
			}
			return nil, err
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		line = []byte(strings.TrimRight(string(line), "\r\n"))
		if errors.Is(err, io.EOF) {
			if len(line) == 0 {
				return nil, io.EOF
			}
			return line, io.EOF
		}
		return line, err
	}
}

func sqlVerdict(q string) verdictLine {
	v, err := sqlguard.Check(q)
	if err != nil {
		return verdictLine{Reason: "guard error: " + err.Error()}
	}
	if !v.Allow {
		return verdictLine{Reason: v.Reason}
	}
	reason := v.Kind
	if len(v.Tables) > 0 {
		reason += " reading " + strings.Join(v.Tables, ", ")
	}
	if len(v.Columns) > 0 {
		reason += "; columns " + strings.Join(v.Columns, ", ") + ": each safe in the guard's catalog (* only where every column it expands to is)"
	}
	return verdictLine{Allow: true, Reason: reason}
}

// printCatalog lists the catalog's tables, or one table's columns.
func printCatalog(w io.Writer, table string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if table == "" {
		fmt.Fprintln(tw, "TABLE\tSAFE\tSENSITIVE")
		for _, t := range sqlguard.CatalogTables() {
			safe, sens := 0, 0
			for _, c := range sqlguard.CatalogColumns(t) {
				if c.Safe {
					safe++
				} else {
					sens++
				}
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\n", t, safe, sens)
		}
		return tw.Flush()
	}
	if !strings.HasPrefix(table, "system.") {
		table = "system." + table
	}
	cols := sqlguard.CatalogColumns(table)
	if cols == nil {
		return cli.Usagef("agent guard catalog: %s is not in the guard's catalog, so the guard refuses it (run 'agent guard catalog' for the list)", table)
	}
	fmt.Fprintln(tw, "COLUMN\tCLASS\tREASON")
	for _, c := range cols {
		class := "sensitive"
		if c.Safe {
			class = "safe"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", c.Name, class, c.Reason)
	}
	return tw.Flush()
}

// printFunctions lists the catalog's functions whose name contains sub.
func printFunctions(w io.Writer, sub string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FUNCTION\tCLASS\tCATEGORY\tNOTE")
	n := 0
	for _, f := range sqlguard.CatalogFunctions() {
		if sub != "" && !strings.Contains(strings.ToLower(f.Name), strings.ToLower(sub)) {
			continue
		}
		class := "refuse"
		if f.Allowed {
			class = "allow"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", f.Name, class, f.Category, f.Reason)
		n++
	}
	if sub == "" {
		for _, c := range sqlguard.CatalogCombinators() {
			class := "refuse"
			if c.Allowed {
				class = "allow"
			}
			fmt.Fprintf(tw, "-%s\t%s\tcombinator\t%s\n", c.Suffix, class, c.Reason)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if n == 0 {
		return cli.Usagef("agent guard functions: no function in the catalog contains %q; a function not in the catalog is refused", sub)
	}
	return nil
}

func checkSQLLine(line []byte) verdictLine {
	var in struct {
		SQL *string `json:"sql"`
	}
	dec := json.NewDecoder(strings.NewReader(string(line)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return verdictLine{Reason: "bad input: want {\"sql\": \"…\"}: " + err.Error()}
	}
	if dec.More() {
		return verdictLine{Reason: "bad input: more than one JSON value on the line"}
	}
	if in.SQL == nil {
		return verdictLine{Reason: "bad input: missing \"sql\""}
	}
	return sqlVerdict(*in.SQL)
}

func promVerdict(method, target, body string) verdictLine {
	u, err := url.ParseRequestURI(target)
	if err != nil {
		return verdictLine{Reason: fmt.Sprintf("bad input: url %q is not an origin-form path such as /api/v1/query?query=up", target)}
	}
	ct := ""
	if body != "" {
		ct = "application/x-www-form-urlencoded"
	}
	req, v := promguard.Check(method, u, ct, []byte(body))
	if !v.Allow {
		return verdictLine{Reason: v.Reason}
	}
	reason := req.Method + " " + v.Endpoint
	if q := req.Params().Get("query"); q != "" {
		reason += " query " + q
	}
	if v.Rewrite {
		reason += "; the answer is rewritten at the agent so that it echoes no configuration (go doc ./internal/promguard)"
	}
	return verdictLine{Allow: true, Reason: reason}
}

// checkPromArg takes a PromQL expression, or a path with its query string.
func checkPromArg(arg string) verdictLine {
	if strings.HasPrefix(arg, "/") {
		return promVerdict(http.MethodGet, arg, "")
	}
	return promVerdict(http.MethodGet, "/api/v1/query?"+url.Values{"query": {arg}}.Encode(), "")
}

func checkPromLine(line []byte) verdictLine {
	var in struct {
		Method *string `json:"method"`
		URL    *string `json:"url"`
		Body   string  `json:"body"`
	}
	dec := json.NewDecoder(strings.NewReader(string(line)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return verdictLine{Reason: "bad input: want {\"method\": \"…\", \"url\": \"…\", \"body\": \"…\"}: " + err.Error()}
	}
	if dec.More() {
		return verdictLine{Reason: "bad input: more than one JSON value on the line"}
	}
	if in.Method == nil || in.URL == nil {
		return verdictLine{Reason: "bad input: \"method\" and \"url\" are required"}
	}
	target := *in.URL
	// A full URL is accepted for convenience; only its path and query count.
	if p, err := url.Parse(target); err == nil && p.Scheme != "" && p.Host != "" {
		target = p.RequestURI()
	}
	return promVerdict(*in.Method, target, in.Body)
}
