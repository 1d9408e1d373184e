package brokercli

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/tetherhq/tether/internal/names"

	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/cli"
	"github.com/tetherhq/tether/internal/ghub"
	"github.com/tetherhq/tether/policy"
)

// requestCmd is 'broker request'.
type requestCmd struct {
	Create  requestCreateCmd  `cmd:"" help:"ask for access to a deployment"`
	List    requestListCmd    `cmd:"" help:"list requests"`
	Show    requestShowCmd    `cmd:"" help:"show one request: policy decision, reviews, grant, network change"`
	Approve requestApproveCmd `cmd:"" help:"approve a request"`
	Deny    requestDenyCmd    `cmd:"" help:"deny a request"`
	Cancel  requestCancelCmd  `cmd:"" help:"withdraw your own request"`
	Revoke  requestRevokeCmd  `cmd:"" help:"end access now"`
	HelpCmd cli.HelpCmd       `cmd:"" name:"help" hidden:""`
}

func (requestCmd) Help() string {
	return `Just-in-time access to a customer deployment: ask, have it approved, use it.
Scopes are clickhouse:system (ClickHouse's system tables) and prometheus:read.`
}

// Local limits, the same the broker applies, so that a mistake is caught
// before anything is sent.
const (
	minAccess    = time.Minute
	maxAccess    = 12 * time.Hour
	maxReasonLen = 1000
	// waitPoll is how long each long poll of 'request create --wait'
	// asks the broker to hold the call.
	waitPoll = 30 * time.Second
)

var (
	knownScopes = []string{names.ScopeClickHouse, names.ScopePrometheus}
	knownStates = []string{
		brokerapi.StatePending, brokerapi.StateApproved, brokerapi.StateActive, brokerapi.StateExpired,
		brokerapi.StateRevoked, brokerapi.StateDenied, brokerapi.StateCancelled, brokerapi.StateTimedOut,
	}
)

// parseDeploymentRef checks a TENANT/NAME reference.
func parseDeploymentRef(flagName, s string) (string, error) {
	if s == "" {
		return "", cli.Usagef("%s is required: give the deployment as TENANT/NAME, such as acme/prod (see 'broker deployment list')", flagName)
	}
	tenant, name, ok := strings.Cut(s, "/")
	if !ok || !names.IsLabel(tenant) || !names.IsLabel(name) {
		return "", cli.Usagef("%s %q: want TENANT/NAME, two lowercase DNS labels such as acme/prod (see 'broker deployment list')", flagName, s)
	}
	return s, nil
}

// parseScopes checks a comma-separated list of scopes.
func parseScopes(s string) ([]string, error) {
	want := strings.Join(knownScopes, " or ")
	if strings.TrimSpace(s) == "" {
		return nil, cli.Usagef("--scope is required: give %s, or both comma-separated", want)
	}
	var out []string
	for _, p := range strings.Split(s, ",") {
		p = strings.TrimSpace(p)
		switch {
		case !slices.Contains(knownScopes, p):
			return nil, cli.Usagef("--scope %q: unknown scope %q: want %s, or both comma-separated", s, p, want)
		case slices.Contains(out, p):
			return nil, cli.Usagef("--scope %q: %s is given twice", s, p)
		}
		out = append(out, p)
	}
	return out, nil
}

// parseAccessDuration checks how long access is asked for.
func parseAccessDuration(s string) (time.Duration, error) {
	if s == "" {
		return 0, cli.Usagef("--duration is required: give how long you need access, from %v to %v, such as 30m or 2h", minAccess, maxAccess)
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, cli.Usagef("--duration %q: want a duration such as 30m or 2h", s)
	}
	if d < minAccess || d > maxAccess {
		return 0, cli.Usagef("--duration %s: want from 1m to 12h", s)
	}
	return d, nil
}

// checkReason checks the reason shown to the approvers.
func checkReason(s string) (string, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return "", cli.Usagef("--reason is required: say why you need access; the approvers read it")
	case len(s) > maxReasonLen:
		return "", cli.Usagef("--reason is %d bytes: at most %d", len(s), maxReasonLen)
	}
	return s, nil
}

// checkRequestID checks that id has the shape of a request ID, a UUID.
func checkRequestID(cmd, id string) error {
	if !isUUID(id) {
		return cli.Usagef("broker request %s: %q is not a request ID: want a UUID such as 3f2b8c1e-5d4a-4e6f-9a7b-0c1d2e3f4a5b (see 'broker request list')", cmd, id)
	}
	return nil
}

func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
				return false
			}
		}
	}
	return true
}

// createFlags are the flags of 'request create' as given.
type createFlags struct {
	Deployment string `placeholder:"TENANT/NAME" help:"deployment as TENANT/NAME, e.g. acme/prod (required)"`
	Scope      string `placeholder:"S[,S]" help:"scopes, comma-separated: clickhouse:system, prometheus:read (required)"`
	Duration   string `placeholder:"DURATION" help:"how long access should last, 1m to 12h, e.g. 30m (required)"`
	Reason     string `placeholder:"TEXT" help:"why you need access; the approvers read it, at most 1000 bytes (required)"`
	Ticket     string `placeholder:"OWNER/REPO#N" help:"the GitHub issue the work is for"`
	BreakGlass bool   `name:"break-glass" help:"emergency access without customer approval (needs a sev1 --ticket; everyone is told)"`
}

// request checks the flags and returns the request to send.
func (f createFlags) request() (brokerapi.CreateAccessRequest, error) {
	var r brokerapi.CreateAccessRequest
	var err error
	if r.Deployment, err = parseDeploymentRef("--deployment", f.Deployment); err != nil {
		return r, err
	}
	if r.Scopes, err = parseScopes(f.Scope); err != nil {
		return r, err
	}
	if _, err = parseAccessDuration(f.Duration); err != nil {
		return r, err
	}
	r.Duration = f.Duration
	if r.Reason, err = checkReason(f.Reason); err != nil {
		return r, err
	}
	if f.Ticket != "" {
		if _, err := ghub.ParseTicketRef(f.Ticket); err != nil {
			return r, cli.Usagef("--ticket: %v", err)
		}
		r.Ticket = f.Ticket
	}
	if f.BreakGlass && f.Ticket == "" {
		return r, cli.Usagef("--break-glass needs --ticket OWNER/REPO#N: emergency access must cite the incident's GitHub issue")
	}
	r.BreakGlass = f.BreakGlass
	return r, nil
}

type requestCreateCmd struct {
	createFlags
	Wait bool `help:"wait for the decision, showing progress on stderr"`
	clientFlags
	outputFlag
}

func (cmd *requestCreateCmd) Run(e *env) error {
	ctx, stdout, stderr, f := e.ctx, e.stdout, e.stderr, cmd.createFlags
	if err := cmd.check(); err != nil {
		return err
	}
	body, err := f.request()
	if err != nil {
		return err
	}
	c, err := cmd.client(ctx)
	if err != nil {
		return err
	}
	r, err := c.CreateRequest(ctx, body)
	if err != nil {
		return err
	}
	asJSON := cmd.json()
	if !cmd.Wait {
		if asJSON {
			return printJSON(stdout, r)
		}
		printCreated(stdout, r)
		return nil
	}
	if !asJSON {
		fmt.Fprintf(stdout, "Request %s created for %s.\n", r.ID, r.Deployment)
	}
	w := &waiter{c: c, out: stderr, tty: isTerminal(stderr), now: time.Now, poll: waitPoll}
	r, err = w.wait(ctx, r)
	if err != nil {
		return err
	}
	if asJSON {
		if err := printJSON(stdout, r); err != nil {
			return err
		}
	} else if r.State == brokerapi.StateActive {
		printGranted(stdout, r)
	}
	return outcome(r)
}

func printCreated(w io.Writer, r brokerapi.AccessRequest) {
	fmt.Fprintf(w, "Request %s for %s: %s.\n", r.ID, r.Deployment, r.State)
	switch r.State {
	case brokerapi.StateActive:
		printGranted(w, r)
		return
	case brokerapi.StatePending:
		if len(r.Waiting) > 0 {
			fmt.Fprintf(w, "Waiting for %s.\n", strings.Join(r.Waiting, "; "))
		}
	}
	fmt.Fprintf(w, "Follow it with 'broker request show %s'.\n", r.ID)
}

// printGranted shows an active request's grant and how to use it.
func printGranted(w io.Writer, r brokerapi.AccessRequest) {
	g := r.Grant
	if g == nil {
		fmt.Fprintf(w, "Access to %s is active.\n", r.Deployment)
		return
	}
	fmt.Fprintf(w, "Access granted to %s.\n", r.Deployment)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "  Grant:\t%s\n", g.ID)
	fmt.Fprintf(tw, "  Scopes:\t%s\n", strings.Join(g.Scopes, ", "))
	fmt.Fprintf(tw, "  Expires:\t%s (in %s)\n", g.Expiry.Local().Format(time.RFC3339), roundDur(time.Until(g.Expiry)))
	tw.Flush()
	fmt.Fprintln(w, "Next:")
	if slices.Contains(g.Scopes, names.ScopeClickHouse) {
		fmt.Fprintf(w, "  broker query --deployment %s \"SELECT name, value FROM system.metrics LIMIT 10\"\n", r.Deployment)
		fmt.Fprintf(w, "  broker proxy clickhouse --deployment %s --listen 127.0.0.1:8123\n", r.Deployment)
	}
	if slices.Contains(g.Scopes, names.ScopePrometheus) {
		fmt.Fprintf(w, "  broker prom --deployment %s 'up'\n", r.Deployment)
		fmt.Fprintf(w, "  broker proxy prometheus --deployment %s --listen 127.0.0.1:9090\n", r.Deployment)
	}
	fmt.Fprintf(w, "  broker request revoke %s --reason done   (when finished)\n", r.ID)
}

// outcome is nil for a request that is active (or still on its way) and
// an error saying why for one that ended without access.
func outcome(r brokerapi.AccessRequest) error {
	switch r.State {
	case brokerapi.StateActive, brokerapi.StateApproved, brokerapi.StatePending:
		return nil
	}
	by, why := r.EndedBy, r.EndReason
	if r.State == brokerapi.StateDenied {
		for _, rv := range r.Reviews {
			if !rv.Approve {
				by = cmp.Or(by, rv.Reviewer)
				why = cmp.Or(why, rv.Comment)
				break
			}
		}
		if why == "" && len(r.Decision.Reasons) > 0 {
			why = "policy: " + strings.Join(r.Decision.Reasons, "; ")
		}
	}
	if why == "" {
		switch r.State {
		case brokerapi.StateTimedOut:
			why = "no decision before " + r.PendingUntil.Local().Format(time.RFC3339)
		case brokerapi.StateExpired:
			why = "the grant ran out"
		default:
			why = "no reason given"
		}
	}
	what := strings.ReplaceAll(r.State, "_", " ")
	if by != "" {
		what += " by " + by
	}
	return fmt.Errorf("request %s %s: %s", r.ID, what, oneLine(why))
}

// oneLine folds s, which may hold newlines, onto one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// requestWaiter is the call 'request create --wait' long-polls.
type requestWaiter interface {
	WaitRequest(ctx context.Context, id string, version int64, wait time.Duration) (brokerapi.AccessRequest, error)
}

var _ requestWaiter = (*brokerapi.Client)(nil)

// waiter follows a request until it is active or over, keeping a status
// line on out: redrawn in place on a terminal, one line per change
// otherwise.
type waiter struct {
	c    requestWaiter
	out  io.Writer
	tty  bool
	now  func() time.Time
	poll time.Duration

	mu    sync.Mutex
	cur   brokerapi.AccessRequest
	start time.Time
}

// settled reports whether waiting is over for a request in state.
func settled(state string) bool {
	return state != brokerapi.StatePending && state != brokerapi.StateApproved
}

func (w *waiter) wait(ctx context.Context, r brokerapi.AccessRequest) (brokerapi.AccessRequest, error) {
	w.start = r.CreatedAt
	if w.start.IsZero() {
		w.start = w.now()
	}
	w.show(r)
	defer w.endLine()
	if w.tty {
		stop := make(chan struct{})
		done := make(chan struct{})
		defer func() { close(stop); <-done }()
		go func() {
			defer close(done)
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					w.redraw()
				}
			}
		}()
	}
	failures := 0
	for !settled(r.State) {
		next, err := w.c.WaitRequest(ctx, r.ID, r.Version, w.poll)
		if ctx.Err() != nil {
			return r, fmt.Errorf("stopped waiting; request %s is still %s and was not cancelled: follow it with 'broker request show %s', withdraw it with 'broker request cancel %s'", r.ID, r.State, r.ID, r.ID)
		}
		if err != nil {
			// A broker restart or a network blip should not end the
			// wait; a refusal should.
			var ae *brokerapi.Error
			if errors.As(err, &ae) && ae.Status < 500 || failures >= 4 {
				return r, fmt.Errorf("wait for request %s: %w", r.ID, err)
			}
			failures++
			select {
			case <-ctx.Done():
			case <-time.After(time.Duration(failures) * time.Second):
			}
			continue
		}
		failures = 0
		if next.Version != r.Version || next.State != r.State {
			w.show(next)
		}
		r = next
	}
	return r, nil
}

func (w *waiter) line() string {
	r := w.cur
	s := r.State
	switch {
	case r.State == brokerapi.StatePending && len(r.Waiting) > 0:
		s += ": waiting for " + strings.Join(r.Waiting, "; ")
	case r.State == brokerapi.StatePending:
		s += ": waiting for the reviews"
	case r.State == brokerapi.StateApproved:
		s += ": the grant is being issued"
	}
	return fmt.Sprintf("request %s %s (%s)", shortID(r.ID), s, roundDur(w.now().Sub(w.start)))
}

// show records a new state of the request and prints it.
func (w *waiter) show(r brokerapi.AccessRequest) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.cur = r
	if w.tty {
		fmt.Fprintf(w.out, "\r\033[K%s", w.line())
		return
	}
	fmt.Fprintln(w.out, w.line())
}

// redraw refreshes the elapsed time on a terminal.
func (w *waiter) redraw() {
	w.mu.Lock()
	defer w.mu.Unlock()
	fmt.Fprintf(w.out, "\r\033[K%s", w.line())
}

func (w *waiter) endLine() {
	if w.tty {
		w.mu.Lock()
		fmt.Fprintln(w.out)
		w.mu.Unlock()
	}
}

func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

// roundDur rounds d for people: seconds under an hour, minutes above.
func roundDur(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Hour:
		return d.Round(time.Second).String()
	default:
		return d.Round(time.Minute).String()
	}
}

type requestListCmd struct {
	State      string `placeholder:"S" help:"only requests in this state: ${states}"`
	Mine       bool   `help:"only your own requests"`
	Deployment string `placeholder:"TENANT/NAME" help:"only requests for this deployment"`
	clientFlags
	outputFlag
}

func (cmd *requestListCmd) Run(e *env) error {
	ctx, stdout := e.ctx, e.stdout
	state, mine, dep := &cmd.State, &cmd.Mine, &cmd.Deployment
	if err := cmd.check(); err != nil {
		return err
	}
	if *state != "" && !slices.Contains(knownStates, *state) {
		return cli.Usagef("--state %q: want one of %s", *state, strings.Join(knownStates, ", "))
	}
	if *dep != "" {
		if _, err := parseDeploymentRef("--deployment", *dep); err != nil {
			return err
		}
	}
	c, err := cmd.client(ctx)
	if err != nil {
		return err
	}
	rs, err := c.ListRequests(ctx, brokerapi.RequestQuery{State: *state, Mine: *mine, Deployment: *dep})
	if err != nil {
		return err
	}
	if cmd.json() {
		if rs == nil {
			rs = []brokerapi.AccessRequest{}
		}
		return printJSON(stdout, brokerapi.ListAccessRequests{Requests: rs})
	}
	printRequests(stdout, rs, time.Now())
	return nil
}

func printRequests(w io.Writer, rs []brokerapi.AccessRequest, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tDEPLOYMENT\tREQUESTER\tSCOPES\tDURATION\tSTATE\tAGE/EXPIRES")
	for _, r := range rs {
		when := roundDur(now.Sub(r.CreatedAt)) + " ago"
		if r.State == brokerapi.StateActive && r.Grant != nil {
			when = "expires in " + roundDur(r.Grant.Expiry.Sub(now))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Deployment, r.Requester, strings.Join(r.Scopes, ","), r.Duration, r.State, when)
	}
	tw.Flush()
}

// requestArg is the one request a command acts on.
type requestArg struct {
	ID string `arg:"" name:"id" placeholder:"ID" help:"the request's ID (see 'broker request list')"`
}

func (requestArg) ArgsError(cmd string) error {
	return cli.Usagef("%s: want exactly one request ID (see 'broker request list')", cmd)
}

type requestShowCmd struct {
	requestArg
	clientFlags
	outputFlag
}

func (c *requestShowCmd) Run(e *env) error {
	return requestOne(e, "show", c.ID, "", "", c.clientFlags, c.outputFlag)
}

type requestDenyCmd struct {
	requestArg
	Comment string `placeholder:"C" help:"why the request is denied (required)"`
	clientFlags
	outputFlag
}

func (c *requestDenyCmd) Run(e *env) error {
	return requestOne(e, "deny", c.ID, c.Comment, "", c.clientFlags, c.outputFlag)
}

type requestCancelCmd struct {
	requestArg
	clientFlags
	outputFlag
}

func (c *requestCancelCmd) Run(e *env) error {
	return requestOne(e, "cancel", c.ID, "", "", c.clientFlags, c.outputFlag)
}

type requestRevokeCmd struct {
	requestArg
	Reason string `placeholder:"R" help:"why access ends now (required)"`
	clientFlags
	outputFlag
}

func (c *requestRevokeCmd) Run(e *env) error {
	return requestOne(e, "revoke", c.ID, c.Reason, "", c.clientFlags, c.outputFlag)
}

// requestOne runs 'request sub ID' with text, the comment or reason.
func requestOne(e *env, sub, id, text, planDigest string, cf clientFlags, out outputFlag) error {
	ctx, stdout := e.ctx, e.stdout
	if err := checkRequestID(sub, id); err != nil {
		return err
	}
	if err := out.check(); err != nil {
		return err
	}
	switch {
	case sub == "deny" && strings.TrimSpace(text) == "":
		return cli.Usagef("broker request deny: --comment is required: say why, the requester reads it")
	case sub == "revoke" && strings.TrimSpace(text) == "":
		return cli.Usagef("broker request revoke: --reason is required: say why access ends, the audit log keeps it")
	}
	c, err := cf.client(ctx)
	if err != nil {
		return err
	}
	var r brokerapi.AccessRequest
	switch sub {
	case "show":
		r, err = c.GetRequest(ctx, id)
	case "approve":
		r, err = c.ApprovePlan(ctx, id, text, planDigest)
	case "deny":
		r, err = c.Deny(ctx, id, text)
	case "cancel":
		r, err = c.Cancel(ctx, id)
	default: // revoke
		r, err = c.Revoke(ctx, id, text)
	}
	if err != nil {
		return err
	}
	if out.json() {
		return printJSON(stdout, r)
	}
	switch sub {
	case "show":
		printRequest(stdout, r)
	case "approve":
		printApproved(stdout, r)
	case "deny":
		fmt.Fprintf(stdout, "Denied request %s.\n", r.ID)
	case "cancel":
		fmt.Fprintf(stdout, "Cancelled request %s.\n", r.ID)
	default:
		fmt.Fprintf(stdout, "Revoked request %s: its grant no longer works.\n", r.ID)
	}
	return nil
}

// printRequest shows everything about one request.
func printRequest(w io.Writer, r brokerapi.AccessRequest) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	t := func(x time.Time) string {
		if x.IsZero() {
			return "-"
		}
		return x.Local().Format(time.RFC3339)
	}
	fmt.Fprintf(tw, "Request:\t%s\n", r.ID)
	fmt.Fprintf(tw, "Deployment:\t%s (id %s)\n", r.Deployment, orDash(r.DeploymentID))
	fmt.Fprintf(tw, "Requester:\t%s\n", r.Requester)
	fmt.Fprintf(tw, "Scopes:\t%s\n", strings.Join(r.Scopes, ", "))
	fmt.Fprintf(tw, "Duration:\t%s\n", r.Duration)
	fmt.Fprintf(tw, "Reason:\t%s\n", oneLine(r.Reason))
	fmt.Fprintf(tw, "Ticket:\t%s\n", orDash(r.Ticket))
	if r.BreakGlass {
		fmt.Fprintf(tw, "Break-glass:\tyes\n")
	}
	fmt.Fprintf(tw, "State:\t%s\n", r.State)
	if n := r.Network; n != nil {
		printNetworkAsk(tw, n)
	}
	if np := r.NetworkPlan; np != nil {
		printNetworkPlan(tw, np, t)
	} else if r.Network != nil {
		fmt.Fprintf(tw, "Network plan:\tnone stored (the request predates plans bound to approvals): do not approve it; ask for the change again\n")
	}
	fmt.Fprintf(tw, "Created:\t%s\n", t(r.CreatedAt))
	fmt.Fprintf(tw, "Updated:\t%s (version %d)\n", t(r.UpdatedAt), r.Version)
	if r.State == brokerapi.StatePending {
		fmt.Fprintf(tw, "Times out:\t%s\n", t(r.PendingUntil))
	}
	if len(r.Waiting) > 0 {
		fmt.Fprintf(tw, "Waiting for:\t%s\n", strings.Join(r.Waiting, "; "))
	}
	d := r.Decision
	verdict := "deny"
	if d.Allow {
		verdict = "allow"
	}
	fmt.Fprintf(tw, "Policy:\t%s (policy %s)\n", verdict, orDash(short(d.PolicyHash)))
	for _, reason := range d.Reasons {
		fmt.Fprintf(tw, "  reason:\t%s\n", reason)
	}
	fmt.Fprintf(tw, "  max duration:\t%s\n", orDash(d.MaxDuration))
	fmt.Fprintf(tw, "  scopes granted:\t%s\n", orDash(strings.Join(d.Scopes, ", ")))
	if len(d.RequiredReviews) == 0 {
		fmt.Fprintf(tw, "  reviews needed:\tnone (the policy asks for none)\n")
	}
	for _, rv := range d.RequiredReviews {
		fmt.Fprintf(tw, "  reviews needed:\t%s\n", describeRequired(rv.Tenant, rv.Role, rv.Count))
	}
	if len(r.Reviews) == 0 {
		fmt.Fprintf(tw, "Reviews:\tnone yet\n")
	}
	for i, rv := range r.Reviews {
		label := ""
		if i == 0 {
			label = "Reviews:"
		}
		verdict := "denied"
		if rv.Approve {
			verdict = "approved"
		}
		who := rv.Role
		if rv.Tenant != "" {
			who += " of " + rv.Tenant
		}
		line := fmt.Sprintf("%s by %s (%s) at %s", verdict, rv.Reviewer, who, t(rv.At))
		if rv.Comment != "" {
			line += ": " + oneLine(rv.Comment)
		}
		fmt.Fprintf(tw, "%s\t%s\n", label, line)
	}
	if g := r.Grant; g != nil {
		fmt.Fprintf(tw, "Grant:\t%s\n", g.ID)
		fmt.Fprintf(tw, "  scopes:\t%s\n", strings.Join(g.Scopes, ", "))
		fmt.Fprintf(tw, "  valid:\t%s to %s\n", t(g.NotBefore), t(g.Expiry))
	}
	if !r.EndedAt.IsZero() || r.EndReason != "" {
		fmt.Fprintf(tw, "Ended:\t%s by %s: %s\n", t(r.EndedAt), orDash(r.EndedBy), orDash(oneLine(r.EndReason)))
	}
	tw.Flush()
}

// describeRequired says in words who must approve.
func describeRequired(tenant, role string, count int) string {
	switch {
	case role == names.ReviewApprover && count == 1:
		return "1 approver of tenant " + tenant
	case role == names.ReviewApprover:
		return fmt.Sprintf("%d approvers of tenant %s", count, tenant)
	case count == 1:
		return "1 vendor reviewer or admin"
	default:
		return fmt.Sprintf("%d vendor reviewers or admins", count)
	}
}

func short(hash string) string {
	if len(hash) > 12 {
		return hash[:12]
	}
	return hash
}

// labelKeyRE is the shape of a label key, as the broker checks it.
var labelKeyRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9._/-]{0,61}[a-z0-9])?$`)

type deploymentSetCmd struct {
	Deployment  string   `arg:"" placeholder:"TENANT/NAME" help:"the deployment"`
	Label       []string `sep:"none" placeholder:"K=V" help:"set label K=V, or remove it with K=; repeatable"`
	ClearLabels bool     `name:"clear-labels" help:"remove every label first"`
	// The vendor-set approval mode was removed (standing permits the
	// customer signs replace it); the flag only says so.
	ApprovalMode string `name:"approval-mode" hidden:""`
	// The customer's windows moved to 'deployment freeze' and 'deployment
	// maintenance' (settings.go); these flags only say so.
	Freeze           []string `sep:"none" hidden:""`
	Maintenance      []string `sep:"none" hidden:""`
	ClearFreeze      bool     `name:"clear-freeze" hidden:""`
	ClearMaintenance bool     `name:"clear-maintenance" hidden:""`
	clientFlags
	outputFlag
}

func (deploymentSetCmd) Help() string {
	return `Changes a deployment's vendor settings, which the access policy reads. The
current settings are read first and only what the flags name changes:
--label K=V sets a label (K= removes it), --clear-labels removes every label
before the others apply. Freeze and maintenance windows are the customer's:
approvers of the deployment's tenant change them with 'broker deployment
freeze' and 'broker deployment maintenance'.`
}

func (deploymentSetCmd) ArgsError(cmd string) error {
	return cli.Usagef("%s: want exactly one deployment, as TENANT/NAME", cmd)
}

func (cmd *deploymentSetCmd) Run(e *env) error {
	ctx, stdout := e.ctx, e.stdout
	ref, err := parseDeploymentRef("deployment", cmd.Deployment)
	if err != nil {
		return err
	}
	if err := cmd.check(); err != nil {
		return err
	}
	if err := customerWindowFlags(ref, cmd.Freeze, cmd.Maintenance, cmd.ClearFreeze, cmd.ClearMaintenance); err != nil {
		return err
	}
	if cmd.ApprovalMode != "" {
		return cli.Usagef("broker deployment set --approval-mode was removed: every request needs the customer's approval, unless the customer's approvers sign a standing permit for it ('broker permit create')")
	}
	if len(cmd.Label) == 0 && !cmd.ClearLabels {
		return cli.Usagef("broker deployment set: nothing to change: give --label or --clear-labels")
	}
	type kv struct{ k, v string }
	var sets []kv
	for _, l := range cmd.Label {
		k, v, ok := strings.Cut(l, "=")
		if !ok || !labelKeyRE.MatchString(k) || len(v) > 256 {
			return cli.Usagef("--label %q: want KEY=VALUE (KEY= removes the label): a key of a-z, 0-9, '.', '_', '/', '-' (at most 63, starting and ending with a letter or digit) and a value of at most 256 bytes", l)
		}
		sets = append(sets, kv{k, v})
	}
	c, err := cmd.client(ctx)
	if err != nil {
		return err
	}
	d, err := c.GetDeployment(ctx, ref)
	if err != nil {
		return err
	}
	s := d.Settings
	if cmd.ClearLabels {
		s.Labels = nil
	}
	for _, l := range sets {
		if l.v == "" {
			delete(s.Labels, l.k)
			continue
		}
		if s.Labels == nil {
			s.Labels = map[string]string{}
		}
		s.Labels[l.k] = l.v
	}
	s.FreezeWindows, s.MaintenanceWindows = nil, nil // the customer's: left out, kept as they are
	d, err = c.SetDeploymentSettings(ctx, ref, s)
	if err != nil {
		return err
	}
	if cmd.json() {
		return printJSON(stdout, d)
	}
	fmt.Fprintf(stdout, "Updated the settings of %s/%s.\n", d.Tenant, d.Name)
	printSettings(stdout, d.Settings)
	return nil
}

func printSettings(w io.Writer, s brokerapi.DeploymentSettings) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	keys := make([]string, 0, len(s.Labels))
	for k := range s.Labels {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var ls []string
	for _, k := range keys {
		ls = append(ls, k+"="+s.Labels[k])
	}
	fmt.Fprintf(tw, "Labels:\t%s\n", orDash(strings.Join(ls, ", ")))
	windows := func(name string, ws []brokerapi.Window) {
		if len(ws) == 0 {
			fmt.Fprintf(tw, "%s:\t-\n", name)
		}
		for i, x := range ws {
			if i > 0 {
				name = ""
			} else {
				name += ":"
			}
			line := x.Start.Format(time.RFC3339) + " to " + x.End.Format(time.RFC3339)
			if x.Reason != "" {
				line += " (" + x.Reason + ")"
			}
			fmt.Fprintf(tw, "%s\t%s\n", name, line)
		}
	}
	windows("Freeze windows", s.FreezeWindows)
	windows("Maintenance windows", s.MaintenanceWindows)
	tw.Flush()
}

// policyCmd is 'broker policy'.
type policyCmd struct {
	Eval    policyEvalCmd `cmd:"" help:"evaluate the access policy locally on a policy input"`
	HelpCmd cli.HelpCmd   `cmd:"" name:"help" hidden:""`
}

type policyEvalCmd struct {
	Input     string `placeholder:"FILE" help:"policy input as JSON ('-' for stdin; required)"`
	PolicyDir string `name:"policy-dir" placeholder:"DIR" help:"directory of .rego files (default: the embedded policy)"`
	outputFlag
}

func (policyEvalCmd) Help() string {
	return `Evaluates the access policy locally, as the broker would on a request:
the embedded default policy, or the .rego files of --policy-dir. The input
file is the policy input as JSON (see policy.Input: requester, deployment,
ticket, scopes, duration_seconds, break_glass, dev, time, action); '-'
reads it from stdin. Unknown fields are an error. No broker is needed.`
}

func (cmd *policyEvalCmd) Run(e *env) error {
	ctx, stdin, stdout, input, dir := e.ctx, e.stdin, e.stdout, &cmd.Input, &cmd.PolicyDir
	if *input == "" {
		return cli.Usagef("broker policy eval: --input FILE is required (the policy input as JSON, '-' for stdin)")
	}
	if err := cmd.check(); err != nil {
		return err
	}
	var (
		b   []byte
		err error
	)
	if *input == "-" {
		b, err = io.ReadAll(io.LimitReader(stdin, brokerapi.MaxBody+1))
	} else {
		b, err = os.ReadFile(*input)
	}
	if err != nil {
		return fmt.Errorf("--input: %w", err)
	}
	in, err := decodeInput(b)
	if err != nil {
		return cli.Usagef("--input %s: %v", *input, err)
	}
	pe, err := policy.New(ctx, policy.Options{Dir: *dir})
	if err != nil {
		return err
	}
	d, err := pe.Decide(ctx, in)
	if err != nil {
		return err
	}
	if cmd.json() {
		return printJSON(stdout, d)
	}
	printDecision(stdout, d)
	return nil
}

// decodeInput decodes a policy input strictly: one JSON object, no
// unknown fields.
func decodeInput(b []byte) (policy.Input, error) {
	var in policy.Input
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return in, fmt.Errorf("not a policy input: %w", err)
	}
	if dec.More() {
		return in, errors.New("not a policy input: more than one JSON value")
	}
	return in, nil
}

func printDecision(w io.Writer, d policy.Decision) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	verdict := "deny"
	if d.Allow {
		verdict = "allow"
	}
	fmt.Fprintf(tw, "Decision:\t%s\n", verdict)
	if len(d.Reasons) == 0 {
		fmt.Fprintf(tw, "Reasons:\t-\n")
	}
	for i, r := range d.Reasons {
		label := ""
		if i == 0 {
			label = "Reasons:"
		}
		fmt.Fprintf(tw, "%s\t%s\n", label, r)
	}
	if len(d.RequiredReviews) == 0 {
		fmt.Fprintf(tw, "Reviews needed:\tnone\n")
	}
	for i, rv := range d.RequiredReviews {
		label := ""
		if i == 0 {
			label = "Reviews needed:"
		}
		fmt.Fprintf(tw, "%s\t%s\n", label, describeRequired(rv.Tenant, rv.Role, rv.Count))
	}
	fmt.Fprintf(tw, "Max duration:\t%s\n", d.MaxDuration)
	fmt.Fprintf(tw, "Scopes:\t%s\n", orDash(strings.Join(d.Scopes, ", ")))
	fmt.Fprintf(tw, "Policy hash:\t%s\n", d.PolicyHash)
	tw.Flush()
}

// printNetworkPlan shows the exact change a network request's approval
// binds, and how far it got.
// printNetworkAsk shows the network change a request asks for, as the
// engineer gave it; the plan below is what the broker will make of it.
func printNetworkAsk(tw io.Writer, n *brokerapi.PeeringSpec) {
	fmt.Fprintf(tw, "Network change:\t%s with VPC %s in account %s, %s, role %s\n", n.Kind, n.VPCID, n.AccountID, n.Region, orDash(n.RoleARN))
	if len(n.RouteTableIDs) > 0 {
		fmt.Fprintf(tw, "  peer route tables:\t%s\n", strings.Join(n.RouteTableIDs, ", "))
	}
	if n.OutsideWindow {
		fmt.Fprintf(tw, "  when:\toutside the deployment's maintenance windows, as asked\n")
	}
}

func printNetworkPlan(tw io.Writer, np *brokerapi.ApprovedNetworkPlan, t func(time.Time) string) {
	in := np.Intent
	fmt.Fprintf(tw, "Network plan:\t%s (approving approves exactly this; apply refuses anything else)\n", np.Digest)
	fmt.Fprintf(tw, "  planned:\t%s\n", t(np.PlannedAt))
	fmt.Fprintf(tw, "  kind:\t%s\n", in.Kind)
	for _, s := range []struct {
		name string
		side brokerapi.NetworkIntentSide
	}{{"BYOC", in.BYOC}, {"peer", in.Peer}} {
		fmt.Fprintf(tw, "  %s:\tVPC %s (%s) in account %s, %s, role %s\n", s.name, s.side.VPC, strings.Join(s.side.CIDRs, ", "), s.side.Account, s.side.Region, orDash(s.side.Role))
		if len(s.side.RouteTables) > 0 {
			fmt.Fprintf(tw, "  %s route tables:\t%s\n", s.name, strings.Join(s.side.RouteTables, ", "))
		}
	}
	for _, r := range in.Routes {
		fmt.Fprintf(tw, "  route:\t%s in %s (account %s)\n", r.Destination, r.RouteTable, r.Account)
	}
	for _, r := range in.Rules {
		fmt.Fprintf(tw, "  rule:\ttcp/%d from %s on %s\n", r.Port, r.CIDR, in.SecurityGroup)
	}
	if in.PrivateHostname != "" {
		fmt.Fprintf(tw, "  private hostname:\t%s → %s\n", in.PrivateHostname, in.LoadBalancer)
	}
	if !np.AppliedAt.IsZero() {
		fmt.Fprintf(tw, "  applied:\t%s\n", t(np.AppliedAt))
	}
	if !np.TornDownAt.IsZero() {
		fmt.Fprintf(tw, "  torn down:\t%s\n", t(np.TornDownAt))
	}
	if !np.TeardownDue.IsZero() || np.TeardownError != "" {
		fmt.Fprintf(tw, "  teardown:\tnext try %s after %d failed: %s\n", t(np.TeardownDue), np.TeardownAttempts, orDash(oneLine(np.TeardownError)))
	}
}
