package agentcli

import (
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tetherhq/tether/internal/agent"
	"github.com/tetherhq/tether/internal/cli"
)

// journalCmd is 'agent journal': the agent's own record of the calls it
// served or refused, read on the customer's host.
type journalCmd struct {
	StateDir string `placeholder:"DIR" help:"the agent's state directory (required)"`
	Since    string `placeholder:"T" help:"calls at or after this time (RFC 3339 or e.g. 24h)"`
	Output   string `short:"o" default:"table" placeholder:"FORMAT" help:"output format: table or json (one JSON object a line)"`
}

func (journalCmd) Help() string {
	return `Prints the journal the agent keeps in its state directory of every call it
served or refused — time, outcome, engineer, grant, the customer approvers
(or permit, or BREAK-GLASS) it was served on, request, the SQL or PromQL,
rows, bytes and the reason of a refusal — oldest first. The journal
stays on this host, independent of the broker's audit log; it is rotated at
16 MiB and keeps its 4 newest files.`
}

// maxTableStatement is how much of a statement a table row shows;
// --output json shows it whole.
const maxTableStatement = 80

func (c *journalCmd) run(e *env) error {
	if c.StateDir == "" {
		return cli.Usagef("agent journal: --state-dir DIR is required: the agent's state directory")
	}
	if err := cli.CheckOutput(c.Output, "table", "json"); err != nil {
		return err
	}
	since, err := parseSince(c.Since, time.Now())
	if err != nil {
		return err
	}
	var emit func(agent.JournalEntry) error
	var tw *tabwriter.Writer
	switch c.Output {
	case "json":
		enc := json.NewEncoder(e.stdout)
		emit = func(j agent.JournalEntry) error { return enc.Encode(j) }
	default:
		tw = tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "TIME\tEVENT\tOUTCOME\tENGINEER\tGRANT\tAPPROVAL\tROWS\tBYTES\tSTATEMENT / REASON")
		emit = func(j agent.JournalEntry) error {
			what := j.Statement
			if j.Reason != "" {
				what = strings.TrimSpace(what + " — " + j.Reason)
			}
			_, err := fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", j.Time.UTC().Format(time.RFC3339), j.Type, j.Outcome,
				dash(j.Engineer), dash(j.GrantID), approvalOf(j), num(j.Rows), num(j.Bytes), oneLine(what, maxTableStatement))
			return err
		}
	}
	skipped, err := agent.ReadJournal(c.StateDir, since, emit)
	if tw != nil {
		if ferr := tw.Flush(); err == nil {
			err = ferr
		}
	}
	if err != nil {
		return fmt.Errorf("agent journal: %w", err)
	}
	if skipped > 0 {
		fmt.Fprintf(e.stderr, "agent journal: skipped %d lines that are not journal entries (a line torn by a crash)\n", skipped)
	}
	return nil
}

// parseSince reads --since: an RFC 3339 time, or a duration back from now.
func parseSince(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, cli.Usagef("--since %q: want an RFC 3339 time such as 2026-11-25T10:00:00Z, or a duration back from now such as 24h", s)
}

// approvalOf is on what the agent served a call: BREAK-GLASS, the
// customer's permit and its signers, or the approvers; "-" when the agent
// enforced no customer approval.
func approvalOf(j agent.JournalEntry) string {
	who := strings.Join(j.Approvers, ",")
	switch {
	case j.BreakGlass:
		return "BREAK-GLASS"
	case j.Permit != "":
		return "permit " + j.Permit + " (" + who + ")"
	}
	return dash(who)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func num(p *int64) string {
	if p == nil {
		return "-"
	}
	return fmt.Sprint(*p)
}

// oneLine is s on one line, cut to n runes and marked "…" when longer.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
