package brokercli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/cli"
	"github.com/tetherhq/tether/internal/config"
	"github.com/tetherhq/tether/internal/s3export"
)

const auditUsage = `Usage: broker audit COMMAND [flags]

For security reviewers: search, replay, export and verify the audit log.

Commands:
  search        [--actor S] [--deployment TENANT/NAME] [--type T] [--since T] [--until T] [--limit N]
  show-session  GRANT_ID                 every event of one grant, in order
  export        --out FILE | --s3 s3://bucket/prefix [--since T] [--until T]
  public-key    --out FILE               the log's verifier key, for verify
  verify        --log FILE --key FILE [--witness-key FILE ...]   offline, needs no broker

Times are RFC 3339 (2026-11-25T10:00:00Z) or durations back from now (24h).`

func auditCmd(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return cli.Usagef("audit: want a subcommand: search, show-session, export, public-key or verify (run 'broker audit -h')")
	}
	sub, args := args[0], args[1:]
	switch sub {
	case "-h", "--help", "help":
		fmt.Fprintln(stdout, auditUsage)
		return nil
	case "search", "show-session":
		return auditSearch(ctx, sub, args, stdout)
	case "export":
		return auditExport(ctx, args, stdout)
	case "public-key":
		return auditPublicKey(ctx, args, stdout)
	case "verify":
		return auditVerify(args, stdout)
	default:
		return cli.Usagef("unknown command 'audit %s': want search, show-session, export, public-key or verify", sub)
	}
}

// parseWhen accepts an RFC 3339 time or a duration back from now.
func parseWhen(flag, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return time.Now().Add(-d), nil
	}
	return time.Time{}, cli.Usagef("--%s %q: want an RFC 3339 time such as 2026-11-25T10:00:00Z, or a duration back from now such as 24h", flag, s)
}

func auditSearch(ctx context.Context, sub string, args []string, stdout io.Writer) error {
	fs := cli.NewFlagSet("broker audit " + sub)
	cfgPath := fs.String("config", "", "CLI config file (default $TETHER_CONFIG)")
	output := fs.String("output", "table", "output format: table or json")
	var q brokerapi.AuditQuery
	var since, until string
	usage := "Usage: broker audit show-session REQUEST_ID|GRANT_ID [--output table|json]\n\nLists every event of one access, in the order they happened: the request, the policy's\ndecision, the reviews, the grant, each query and Prometheus call with its\nverdict, and how it ended."
	if sub == "search" {
		fs.StringVar(&q.Actor, "actor", "", "actor subject, e.g. alice@vendor.test or agent:<id>")
		fs.StringVar(&q.Deployment, "deployment", "", "deployment as TENANT/NAME (e.g. acme/prod) or its ID")
		fs.StringVar(&q.Type, "type", "", "event type, e.g. agent.paired (see docs/audit.md)")
		fs.StringVar(&since, "since", "", "events at or after this time (RFC 3339 or e.g. 24h)")
		fs.StringVar(&until, "until", "", "events before this time")
		fs.IntVar(&q.Limit, "limit", 1000, "at most this many events (1-100000)")
		usage = "Usage: broker audit search [--actor S] [--deployment TENANT/NAME] [--type T] [--since T] [--until T] [--limit N] [--output table|json]"
	}
	pos, err := cli.Parse(fs, args, stdout, usage)
	if err != nil {
		return err
	}
	if err := cli.CheckOutput(*output, "table", "json"); err != nil {
		return err
	}
	if sub == "show-session" {
		if len(pos) != 1 {
			return cli.Usagef("broker audit show-session: want exactly one request or grant ID")
		}
		q.Grant, q.Limit = pos[0], 100000
	} else if len(pos) > 0 {
		return cli.Usagef("broker audit search: unexpected argument %q", pos[0])
	}
	if q.Since, err = parseWhen("since", since); err != nil {
		return err
	}
	if q.Until, err = parseWhen("until", until); err != nil {
		return err
	}
	if q.Type != "" && !audit.Type(q.Type).Known() {
		return cli.Usagef("--type %q is not an event type: want one of %s", q.Type, typeList())
	}
	c, err := client(ctx, *cfgPath)
	if err != nil {
		return err
	}
	var evs []brokerapi.AuditEvent
	if sub == "show-session" {
		evs, err = session(ctx, c, q.Grant)
	} else {
		evs, err = c.AuditSearch(ctx, q)
	}
	if err != nil {
		return err
	}
	if *output == "json" {
		return printJSON(stdout, brokerapi.AuditEvents{Events: evs})
	}
	events := make([]audit.Event, len(evs))
	for i, ae := range evs {
		if err := json.Unmarshal(ae.Event, &events[i]); err != nil {
			return fmt.Errorf("event %d: %w", ae.Index, err)
		}
	}
	names, err := deploymentNames(ctx, c, events)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "INDEX\tTIME\tTYPE\tOUTCOME\tSOURCE\tACTOR\tDEPLOYMENT\tSTATEMENT\tREASON")
	for i, e := range events {
		dep := e.Deployment
		if n, ok := names[dep]; ok {
			dep = n
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", evs[i].Index, e.Time.Local().Format(time.RFC3339), e.Type, e.Outcome,
			sourceOf(e), orDash(e.Actor.Subject), orDash(dep), orDash(oneLineCut(statementOf(e), maxStatementCell)), orDash(e.Reason))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if slices.ContainsFunc(events, func(e audit.Event) bool { return len([]rune(collapseSpace(statementOf(e)))) > maxStatementCell }) {
		fmt.Fprintln(stdout, "\nSTATEMENT is cut short at", maxStatementCell, "characters; --output json has it in full (details.sql, details.params).")
	}
	for _, ae := range evs {
		var e audit.Event
		if json.Unmarshal(ae.Event, &e) == nil && e.Source.Kind == audit.SourceAgent {
			fmt.Fprintln(stdout, "\nSOURCE agent:<id>: recorded by that agent and delivered from its spool; TIME is the agent's clock, the broker\nchecked the event against the grant it names and stamped its receipt time (see --output json, source.received_at).")
			break
		}
	}
	return nil
}

// maxStatementCell is how much of a statement the table shows.
const maxStatementCell = 80

// deploymentNames maps the IDs of the deployments events name to
// TENANT/NAME, asking the broker only when an event names one.
func deploymentNames(ctx context.Context, c *brokerapi.Client, events []audit.Event) (map[string]string, error) {
	if !slices.ContainsFunc(events, func(e audit.Event) bool { return e.Deployment != "" }) {
		return nil, nil
	}
	ds, err := c.ListDeployments(ctx)
	if err != nil {
		return nil, fmt.Errorf("list deployments, to name the events' deployments: %w", err)
	}
	out := make(map[string]string, len(ds))
	for _, d := range ds {
		out[d.ID] = d.Tenant + "/" + d.Name
	}
	return out, nil
}

// statementOf is the SQL or PromQL an event records: the query of a
// guard's verdict, or the request target of a refused Prometheus call.
func statementOf(e audit.Event) string {
	str := func(k string) string { s, _ := e.Details[k].(string); return s }
	switch e.Type {
	case audit.QueryAllowed, audit.QueryDenied:
		return str("sql")
	case audit.PromAllowed:
		params, _ := e.Details["params"].(map[string]any)
		var qs []string
		for _, k := range []string{"query", "match[]"} {
			vs, _ := params[k].([]any)
			for _, v := range vs {
				if s, ok := v.(string); ok {
					qs = append(qs, s)
				}
			}
		}
		return strings.TrimSpace(str("endpoint") + " " + strings.Join(qs, " "))
	case audit.PromDenied:
		if t := str("target"); t != "" {
			return t
		}
		return str("endpoint")
	}
	return ""
}

// collapseSpace puts s on one line, each run of white space one blank.
func collapseSpace(s string) string { return strings.Join(strings.Fields(s), " ") }

// oneLineCut is s on one line, cut to at most n characters with "…".
func oneLineCut(s string, n int) string {
	s = collapseSpace(s)
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

// sourceOf says who wrote an event into the log: the broker, or the agent
// that delivered it (the first 8 characters of its ID).
func sourceOf(e audit.Event) string {
	if e.Source.Kind == audit.SourceAgent {
		return "agent:" + shortID(e.AgentID)
	}
	return "broker"
}

// agentDelivered counts, in a verified export, the events agents
// delivered, by agent ID.
func agentDelivered(path string) (map[string]int, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		l := sc.Bytes()
		if !bytes.Contains(l, []byte(`"kind":"agent"`)) {
			continue
		}
		var line struct {
			Kind  string          `json:"kind"`
			Event json.RawMessage `json:"event"`
		}
		var e audit.Event
		if json.Unmarshal(l, &line) != nil || line.Kind != "event" || json.Unmarshal(line.Event, &e) != nil {
			continue
		}
		if e.Source.Kind == audit.SourceAgent {
			out[e.AgentID]++
		}
	}
	return out, sc.Err()
}

func typeList() string {
	var ts []string
	for _, t := range audit.Types {
		ts = append(ts, string(t))
	}
	return strings.Join(ts, ", ")
}

func auditExport(ctx context.Context, args []string, stdout io.Writer) error {
	fs := cli.NewFlagSet("broker audit export")
	cfgPath := fs.String("config", "", "CLI config file (default $TETHER_CONFIG)")
	out := fs.String("out", "", "write the export to this file")
	s3URL := fs.String("s3", "", "upload the export to s3://bucket/prefix (AWS credentials from the environment)")
	s3Endpoint := fs.String("s3-endpoint", "", "S3 endpoint URL (for S3-compatible stores and tests)")
	retention := fs.Duration("s3-retention", 0, "Object Lock retention when the bucket has Object Lock but no default rule, e.g. 2160h")
	since := fs.String("since", "", "events at or after this time (RFC 3339 or e.g. 24h)")
	until := fs.String("until", "", "events before this time")
	pos, err := cli.Parse(fs, args, stdout, "Usage: broker audit export --out FILE | --s3 s3://bucket/prefix [--since T] [--until T]")
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return cli.Usagef("broker audit export: unexpected argument %q", pos[0])
	}
	if (*out == "") == (*s3URL == "") {
		return cli.Usagef("broker audit export: give exactly one of --out FILE or --s3 s3://bucket/prefix")
	}
	var bucket, prefix string
	if *s3URL != "" {
		if bucket, prefix, err = s3export.ParseURL(*s3URL); err != nil {
			return cli.Usagef("--s3: %v", err)
		}
	}
	from, err := parseWhen("since", *since)
	if err != nil {
		return err
	}
	to, err := parseWhen("until", *until)
	if err != nil {
		return err
	}
	c, err := client(ctx, *cfgPath)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := c.AuditExport(ctx, &buf, from, to); err != nil {
		return err
	}
	events := bytes.Count(buf.Bytes(), []byte(`{"kind":"event"`))
	if *out != "" {
		if err := config.WriteFile(*out, buf.Bytes(), 0o600); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "Exported %d events to %s.\n", events, *out)
		return nil
	}
	up, err := s3export.New(ctx, s3export.Options{Endpoint: *s3Endpoint, UsePathStyle: *s3Endpoint != "", Retention: *retention})
	if err != nil {
		return err
	}
	key := path.Join(prefix, fmt.Sprintf("tether-audit-%s.jsonl", time.Now().UTC().Format("20060102T150405Z")))
	res, err := up.Upload(ctx, bucket, key, bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Exported %d events to s3://%s/%s", events, res.Bucket, res.Key)
	if res.LockMode != "" {
		fmt.Fprintf(stdout, " (Object Lock %s until %s)", res.LockMode, res.RetainUntil.Format(time.RFC3339))
	}
	fmt.Fprintln(stdout, ".")
	return nil
}

func auditPublicKey(ctx context.Context, args []string, stdout io.Writer) error {
	fs := cli.NewFlagSet("broker audit public-key")
	cfgPath := fs.String("config", "", "CLI config file (default $TETHER_CONFIG)")
	out := fs.String("out", "", "write the key to this file (default: print it)")
	pos, err := cli.Parse(fs, args, stdout, "Usage: broker audit public-key [--out FILE]")
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return cli.Usagef("broker audit public-key: unexpected argument %q", pos[0])
	}
	c, err := client(ctx, *cfgPath)
	if err != nil {
		return err
	}
	k, err := c.AuditPublicKey(ctx)
	if err != nil {
		return err
	}
	if _, err := audit.NewVerifier(k.VerifierKey); err != nil {
		return fmt.Errorf("the broker's verifier key does not parse: %w", err)
	}
	if *out == "" {
		fmt.Fprintln(stdout, k.VerifierKey)
		return nil
	}
	if err := config.WriteFile(*out, []byte(k.VerifierKey+"\n"), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Wrote the audit log's verifier key (%s) to %s.\n", k.Origin, *out)
	return nil
}

// stringList is a repeatable flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func readVerifier(flag, file string) (note.Verifier, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("--%s: %w", flag, err)
	}
	v, err := audit.NewVerifier(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("--%s %s: not a verifier key (want the output of 'broker audit public-key' or 'agent witness-key'): %v", flag, file, err)
	}
	return v, nil
}

func auditVerify(args []string, stdout io.Writer) error {
	fs := cli.NewFlagSet("broker audit verify")
	logPath := fs.String("log", "", "the export to verify (from 'broker audit export')")
	keyPath := fs.String("key", "", "the log's verifier key (from 'broker audit public-key')")
	var witnessKeys stringList
	fs.Var(&witnessKeys, "witness-key", "a witness's verifier key (from 'agent witness-key'); repeatable")
	pos, err := cli.Parse(fs, args, stdout, "Usage: broker audit verify --log FILE --key FILE [--witness-key FILE ...]\n\nNeeds nothing but those files: no broker, no network.")
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return cli.Usagef("broker audit verify: unexpected argument %q", pos[0])
	}
	if *logPath == "" || *keyPath == "" {
		return cli.Usagef("broker audit verify: --log and --key are required")
	}
	opts := audit.VerifyOptions{}
	if opts.Log, err = readVerifier("key", *keyPath); err != nil {
		return err
	}
	for _, wk := range witnessKeys {
		v, err := readVerifier("witness-key", wk)
		if err != nil {
			return err
		}
		opts.Witnesses = append(opts.Witnesses, v)
	}
	f, err := os.Open(*logPath)
	if err != nil {
		return fmt.Errorf("--log: %w", err)
	}
	defer f.Close()
	rep, err := audit.Verify(f, opts)
	if err != nil {
		return fmt.Errorf("%s: verification FAILED: %w", *logPath, err)
	}
	fmt.Fprintf(stdout, "OK: %s verifies against %s.\n", *logPath, rep.Origin)
	fmt.Fprintf(stdout, "  events %d..%d (%d), every one hashed into the Merkle tree\n", rep.From, rep.To-1, rep.Events)
	witnessed := 0
	for _, c := range rep.Checkpoints {
		if len(c.Witnesses) > 0 {
			witnessed++
		}
	}
	fmt.Fprintf(stdout, "  %d signed checkpoints, roots recomputed and matched; the last covers %d events\n", len(rep.Checkpoints), rep.Checkpoints[len(rep.Checkpoints)-1].Size)
	if len(opts.Witnesses) > 0 {
		fmt.Fprintf(stdout, "  %d of %d checkpoints cosigned by a given witness\n", witnessed, len(rep.Checkpoints))
		for _, c := range rep.Checkpoints {
			if len(c.Witnesses) > 0 {
				fmt.Fprintf(stdout, "    checkpoint %d (%s): %s\n", c.Size, c.Time.Format(time.RFC3339), strings.Join(c.Witnesses, ", "))
			}
		}
	} else {
		fmt.Fprintln(stdout, "  witnesses not checked (give --witness-key to check the customer's cosignatures)")
	}
	var types []string
	for t, n := range rep.Types {
		types = append(types, fmt.Sprintf("%s %d", t, n))
	}
	sort.Strings(types)
	fmt.Fprintf(stdout, "  event types: %s\n", strings.Join(types, ", "))
	byAgent, err := agentDelivered(*logPath)
	if err != nil {
		return fmt.Errorf("--log: %w", err)
	}
	if len(byAgent) == 0 {
		fmt.Fprintln(stdout, "  delivered by agents: none")
		return nil
	}
	var agents []string
	total := 0
	for id, n := range byAgent {
		agents = append(agents, fmt.Sprintf("agent %s %d", id, n))
		total += n
	}
	sort.Strings(agents)
	fmt.Fprintf(stdout, "  delivered by agents: %d (%s); each is the agent's account, its time by the agent's clock, checked by the broker and stamped with its receipt time\n", total, strings.Join(agents, ", "))
	return nil
}

// session gathers the events of one access: those of the request and
// those of its grant, given either ID, in log order.
func session(ctx context.Context, c *brokerapi.Client, id string) ([]brokerapi.AuditEvent, error) {
	byGrant, err := c.AuditSearch(ctx, brokerapi.AuditQuery{Grant: id, Limit: 100000})
	if err != nil {
		return nil, err
	}
	requestID := id
	for _, ae := range byGrant {
		var e audit.Event
		if json.Unmarshal(ae.Event, &e) == nil && e.RequestID != "" {
			requestID = e.RequestID
			break
		}
	}
	byRequest, err := c.AuditSearch(ctx, brokerapi.AuditQuery{Request: requestID, Limit: 100000})
	if err != nil {
		return nil, err
	}
	seen := map[uint64]bool{}
	var out []brokerapi.AuditEvent
	for _, ae := range append(byRequest, byGrant...) {
		if !seen[ae.Index] {
			seen[ae.Index] = true
			out = append(out, ae)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no audit events for request or grant %s", id)
	}
	// In the order things happened: an agent delivers its events (the
	// queries) with its next heartbeat, so log order can trail.
	times := make(map[uint64]time.Time, len(out))
	for _, ae := range out {
		var e audit.Event
		json.Unmarshal(ae.Event, &e)
		times[ae.Index] = e.Time
	}
	sort.SliceStable(out, func(i, j int) bool {
		ti, tj := times[out[i].Index], times[out[j].Index]
		if !ti.Equal(tj) {
			return ti.Before(tj)
		}
		return out[i].Index < out[j].Index
	})
	return out, nil
}
