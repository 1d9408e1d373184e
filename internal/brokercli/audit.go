package brokercli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
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

// auditCmd is 'broker audit'.
type auditCmd struct {
	Search      auditSearchCmd    `cmd:"" help:"search the audit log"`
	ShowSession auditSessionCmd   `cmd:"" help:"every event of one access, in order"`
	Export      auditExportCmd    `cmd:"" help:"export the log, to a file or to S3"`
	PublicKey   auditPublicKeyCmd `cmd:"" help:"the log's verifier key, for verify"`
	Verify      auditVerifyCmd    `cmd:"" help:"verify an export offline; needs no broker"`
	HelpCmd     cli.HelpCmd       `cmd:"" name:"help" hidden:""`
}

func (auditCmd) Help() string {
	return `For security reviewers: search, replay, export and verify the audit log.
For a customer's approver, search, show-session, export and public-key show their own tenant's
events only (--tenant is then their tenant), and export writes a tenant export that 'verify'
checks against their own agent's witness key. Times are RFC 3339 (2026-11-25T10:00:00Z) or
durations back from now (24h).`
}

// tenantFlag is the flag of the audit commands that can read one
// tenant's own audit view.
type tenantFlag struct {
	Tenant string `placeholder:"TENANT" help:"only this tenant's own events, as its approvers see them (default: your tenant, if you sign in as a customer's approver)"`
}

// tenant returns the tenant whose view to read: the flag, else the
// caller's own tenant (a customer approver's), else none (the whole log).
func (f tenantFlag) tenant(ctx context.Context, c *brokerapi.Client) (string, error) {
	if f.Tenant != "" {
		return f.Tenant, nil
	}
	who, err := c.Whoami(ctx)
	if err != nil {
		return "", err
	}
	return who.Tenant, nil
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

type auditSearchCmd struct {
	Actor      string `placeholder:"S" help:"actor subject, e.g. alice@vendor.test or agent:<id>"`
	Deployment string `placeholder:"TENANT/NAME" help:"deployment as TENANT/NAME (e.g. acme/prod) or its ID"`
	Type       string `placeholder:"T" help:"event type, e.g. agent.paired (see docs/audit.md)"`
	Since      string `placeholder:"T" help:"events at or after this time (RFC 3339 or e.g. 24h)"`
	Until      string `placeholder:"T" help:"events before this time"`
	Limit      int    `default:"1000" placeholder:"N" help:"at most this many events (1-100000)"`
	tenantFlag
	clientFlags
	outputFlag
}

func (c *auditSearchCmd) Run(e *env) error {
	return auditSearch(e, "search", brokerapi.AuditQuery{Actor: c.Actor, Deployment: c.Deployment, Type: c.Type, Limit: c.Limit}, c.Since, c.Until, c.tenantFlag, c.clientFlags, c.outputFlag)
}

type auditSessionCmd struct {
	ID string `arg:"" placeholder:"REQUEST_ID|GRANT_ID" help:"the access: its request's or its grant's ID"`
	tenantFlag
	clientFlags
	outputFlag
}

func (auditSessionCmd) Help() string {
	return `Lists every event of one access, in the order they happened: the request, the policy's
decision, the reviews, the grant, each query and Prometheus call with its
verdict, and how it ended.`
}

func (auditSessionCmd) ArgsError(cmd string) error {
	return cli.Usagef("%s: want exactly one request or grant ID", cmd)
}

func (c *auditSessionCmd) Run(e *env) error {
	return auditSearch(e, "show-session", brokerapi.AuditQuery{Grant: c.ID, Limit: 100000}, "", "", c.tenantFlag, c.clientFlags, c.outputFlag)
}

// auditSearch runs 'audit search' or 'audit show-session' (sub) for q.
func auditSearch(e *env, sub string, q brokerapi.AuditQuery, since, until string, tf tenantFlag, cf clientFlags, out outputFlag) error {
	ctx, stdout := e.ctx, e.stdout
	if err := out.check(); err != nil {
		return err
	}
	var err error
	if q.Since, err = parseWhen("since", since); err != nil {
		return err
	}
	if q.Until, err = parseWhen("until", until); err != nil {
		return err
	}
	if q.Type != "" && !audit.Type(q.Type).Known() {
		return cli.Usagef("--type %q is not an event type: want one of %s", q.Type, typeList())
	}
	c, err := cf.client(ctx)
	if err != nil {
		return err
	}
	if q.Tenant, err = tf.tenant(ctx, c); err != nil {
		return err
	}
	var evs []brokerapi.AuditEvent
	if sub == "show-session" {
		evs, err = session(ctx, c, q.Tenant, q.Grant)
	} else {
		evs, err = c.AuditSearch(ctx, q)
	}
	if err != nil {
		return err
	}
	if out.json() {
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
			sourceOf(e), orDash(e.Actor.Subject), orDash(dep), orDash(oneLineCut(e.Statement(), maxStatementCell)), orDash(e.Reason))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if slices.ContainsFunc(events, func(e audit.Event) bool { return len([]rune(collapseSpace(e.Statement()))) > maxStatementCell }) {
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

type auditExportCmd struct {
	Out         string        `placeholder:"FILE" help:"write the export to this file"`
	S3          string        `name:"s3" placeholder:"s3://BUCKET/PREFIX" help:"upload the export to S3 (AWS credentials from the environment)"`
	S3Endpoint  string        `name:"s3-endpoint" placeholder:"URL" help:"S3 endpoint URL (for S3-compatible stores and tests)"`
	S3Retention time.Duration `name:"s3-retention" placeholder:"DURATION" help:"Object Lock retention when the bucket has Object Lock but no default rule, e.g. 2160h"`
	Since       string        `placeholder:"T" help:"events at or after this time (RFC 3339 or e.g. 24h)"`
	Until       string        `placeholder:"T" help:"events before this time"`
	tenantFlag
	clientFlags
}

func (auditExportCmd) Help() string {
	return `Exports the log, with its signed checkpoints, for 'broker audit verify': give exactly one of
--out FILE or --s3 s3://bucket/prefix. With a tenant (a customer approver's own), it writes a
tenant export: that tenant's events only, each with its inclusion proof against the newest
checkpoint the tenant's agent cosigned; verify it with that agent's witness key.`
}

func (cmd *auditExportCmd) Run(e *env) error {
	ctx, stdout := e.ctx, e.stdout
	out, s3URL, s3Endpoint, retention, since, until := &cmd.Out, &cmd.S3, &cmd.S3Endpoint, &cmd.S3Retention, &cmd.Since, &cmd.Until
	var err error
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
	c, err := cmd.client(ctx)
	if err != nil {
		return err
	}
	tenant, err := cmd.tenant(ctx, c)
	if err != nil {
		return err
	}
	if tenant != "" {
		return tenantExport(e, c, tenant, from, to, *out, bucket, prefix, *s3Endpoint, *retention)
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

type auditPublicKeyCmd struct {
	Out string `placeholder:"FILE" help:"write the key to this file (default: print it)"`
	tenantFlag
	clientFlags
}

func (cmd *auditPublicKeyCmd) Run(e *env) error {
	ctx, stdout, out := e.ctx, e.stdout, &cmd.Out
	c, err := cmd.client(ctx)
	if err != nil {
		return err
	}
	tenant, err := cmd.tenant(ctx, c)
	if err != nil {
		return err
	}
	var k brokerapi.AuditPublicKey
	if tenant != "" {
		k, err = c.TenantAuditPublicKey(ctx, tenant)
	} else {
		k, err = c.AuditPublicKey(ctx)
	}
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

type auditVerifyCmd struct {
	Log        string   `placeholder:"FILE" help:"the export to verify, from 'broker audit export' (required)"`
	Key        string   `placeholder:"FILE" help:"the log's verifier key, from 'broker audit public-key' (required)"`
	WitnessKey []string `name:"witness-key" sep:"none" placeholder:"FILE" help:"a witness's verifier key (from 'agent witness-key'); repeatable"`
}

func (auditVerifyCmd) Help() string {
	return "Needs nothing but those files: no broker, no network."
}

func (cmd *auditVerifyCmd) Run(e *env) error {
	stdout, logPath, keyPath, witnessKeys := e.stdout, &cmd.Log, &cmd.Key, cmd.WitnessKey
	if *logPath == "" || *keyPath == "" {
		return cli.Usagef("broker audit verify: --log and --key are required")
	}
	var err error
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
	first, err := bufio.NewReaderSize(f, 64<<10).ReadSlice('\n')
	if err != nil && len(first) == 0 {
		return fmt.Errorf("%s: verification FAILED: the export is empty or unreadable: %v", *logPath, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("--log: %w", err)
	}
	if format, _ := audit.ExportFormatOf(first); format == audit.TenantExportFormat {
		return verifyTenant(stdout, *logPath, f, opts)
	}
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
func session(ctx context.Context, c *brokerapi.Client, tenant, id string) ([]brokerapi.AuditEvent, error) {
	byGrant, err := c.AuditSearch(ctx, brokerapi.AuditQuery{Grant: id, Limit: 100000, Tenant: tenant})
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
	byRequest, err := c.AuditSearch(ctx, brokerapi.AuditQuery{Request: requestID, Limit: 100000, Tenant: tenant})
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

// tenantExport writes tenant's export to out, or uploads it to S3. It is
// streamed to a temporary file first: it is kept only once whole (its
// end line read), and an upload needs its size.
func tenantExport(e *env, c *brokerapi.Client, tenant string, since, until time.Time, out, bucket, prefix, s3Endpoint string, retention time.Duration) error {
	ctx, stdout := e.ctx, e.stdout
	dir := os.TempDir()
	if out != "" {
		dir = filepath.Dir(out)
	}
	tmp, err := os.CreateTemp(dir, ".tether-audit-*.partial")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if err := c.TenantAuditExport(ctx, tenant, tmp, since, until); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	end, size, err := tenantExportSummary(tmp)
	if err != nil {
		return fmt.Errorf("the broker's tenant export: %w", err)
	}
	what := fmt.Sprintf("%d events of tenant %s, proven against checkpoint %d that its agent cosigned", end.Events, tenant, size)
	pending := ""
	if end.Pending > 0 {
		pending = fmt.Sprintf("%d newer events of tenant %s are not in it: no checkpoint its agent cosigned covers them yet; export again in a minute.\n", end.Pending, tenant)
	}
	if out != "" {
		if err := tmp.Close(); err != nil {
			return err
		}
		if err := os.Rename(tmp.Name(), out); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "Exported %s to %s.\n%s", what, out, pending)
		return nil
	}
	st, err := tmp.Stat()
	if err != nil {
		return err
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return err
	}
	up, err := s3export.New(ctx, s3export.Options{Endpoint: s3Endpoint, UsePathStyle: s3Endpoint != "", Retention: retention})
	if err != nil {
		return err
	}
	key := path.Join(prefix, fmt.Sprintf("tether-audit-%s-%s.jsonl", tenant, time.Now().UTC().Format("20060102T150405Z")))
	res, err := up.Upload(ctx, bucket, key, tmp, st.Size())
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Exported %s to s3://%s/%s", what, res.Bucket, res.Key)
	if res.LockMode != "" {
		fmt.Fprintf(stdout, " (Object Lock %s until %s)", res.LockMode, res.RetainUntil.Format(time.RFC3339))
	}
	fmt.Fprintf(stdout, ".\n%s", pending)
	return nil
}

// tenantExportSummary reads a tenant export's header and end line: an
// export cut short (no end line) is an error. It does not verify it.
func tenantExportSummary(f *os.File) (end struct{ Events, Pending uint64 }, size uint64, err error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return end, 0, err
	}
	br := bufio.NewReaderSize(f, 1<<20)
	var last []byte
	for n := 0; ; n++ {
		line, err := br.ReadBytes('\n')
		if n == 0 {
			var h struct {
				Size uint64 `json:"size"`
			}
			json.Unmarshal(line, &h)
			size = h.Size
		}
		if len(line) > 0 {
			last = line
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return end, 0, err
		}
	}
	var l struct {
		Kind    string `json:"kind"`
		Events  uint64 `json:"events"`
		Pending uint64 `json:"pending"`
	}
	if json.Unmarshal(last, &l) != nil || l.Kind != "end" {
		return end, 0, errors.New("it was cut short (no end line): the broker failed part way; export again")
	}
	end.Events, end.Pending = l.Events, l.Pending
	return end, size, nil
}

// verifyTenant verifies a tenant export and says what it proves, and what
// it does not.
func verifyTenant(stdout io.Writer, name string, r io.Reader, opts audit.VerifyOptions) error {
	rep, err := audit.VerifyTenant(r, opts)
	if err != nil {
		return fmt.Errorf("%s: verification FAILED: %w", name, err)
	}
	fmt.Fprintf(stdout, "OK: %s is tenant %s's export and verifies against %s.\n", name, rep.Tenant, rep.Origin)
	c := rep.Checkpoint
	fmt.Fprintf(stdout, "  checkpoint %d (%s): signed by the log, cosigned by your witness %s\n", c.Size, c.Time.Format(time.RFC3339), strings.Join(c.Witnesses, ", "))
	if rep.Events > 0 {
		fmt.Fprintf(stdout, "  %d events (indices %d..%d), each hashed and proven by its inclusion proof to be in that checkpoint's tree\n", rep.Events, rep.First, rep.Last)
	} else {
		fmt.Fprintln(stdout, "  no events")
	}
	fmt.Fprintf(stdout, "  deployments: %s\n", orDash(strings.Join(rep.Deployments, ", ")))
	var types []string
	for t, n := range rep.Types {
		types = append(types, fmt.Sprintf("%s %d", t, n))
	}
	sort.Strings(types)
	fmt.Fprintf(stdout, "  event types: %s\n", orDash(strings.Join(types, ", ")))
	if rep.Pending > 0 {
		fmt.Fprintf(stdout, "  NOT VERIFIED: %d newer events of tenant %s, after checkpoint %d, are not in this export (no checkpoint your agent cosigned covers them yet)\n", rep.Pending, rep.Tenant, c.Size)
	}
	fmt.Fprintln(stdout, "  not provable from this file: that the broker left none of your events out; compare with your agent's journal ('agent journal')")
	return nil
}
