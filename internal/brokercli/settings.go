package brokercli

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/alecthomas/kong"

	"github.com/tetherhq/tether/internal/brokerapi"
	"github.com/tetherhq/tether/internal/cli"
)

// windowsCmd is 'broker deployment freeze' and 'broker deployment
// maintenance': the customer's windows, which only approvers of the
// deployment's tenant change.
type windowsCmd struct {
	List    windowsListCmd   `cmd:"" help:"list the windows, with the ID each is removed by"`
	Add     windowsAddCmd    `cmd:"" help:"add a window (approvers of the deployment's tenant)"`
	Remove  windowsRemoveCmd `cmd:"" help:"remove windows by ID, or --all (approvers of the deployment's tenant)"`
	HelpCmd cli.HelpCmd      `cmd:"" name:"help" hidden:""`
}

func (windowsCmd) Help() string {
	return `A deployment's freeze and maintenance windows are its customer's: only
approvers of its tenant add and remove them; vendor staff list them. During
a freeze the access policy asks two customer approvals instead of one, and
a network change is not applied in a freeze its approval did not see;
private ingress is applied only inside a maintenance window unless approved
otherwise.

add and remove change one window and keep the others: they read the
windows, change them and write them back, and if another change came in
between they read again and redo theirs, so no change is lost. Every change
is audited (deployment.settings_changed, with the windows before and
after).`
}

// windowKind is the kind of window a command of windowsCmd is about, from
// its parent command's name.
type windowKind struct {
	name   string // "freeze" or "maintenance"
	plural string // for messages
}

func kindOf(kctx *kong.Context) windowKind {
	if kctx.Selected().Parent.Name == "freeze" {
		return windowKind{"freeze", "freeze windows"}
	}
	return windowKind{"maintenance", "maintenance windows"}
}

// windows returns the list of s the kind names.
func (k windowKind) windows(s *brokerapi.CustomerSettings) *[]brokerapi.Window {
	if k.name == "freeze" {
		return &s.FreezeWindows
	}
	return &s.MaintenanceWindows
}

// windowID names a window by what it is, so that an ID from 'list' can
// never point to another window after a concurrent change.
func windowID(w brokerapi.Window) string {
	sum := sha256.Sum256([]byte(w.Start.UTC().Format(time.RFC3339Nano) + "\x00" + w.End.UTC().Format(time.RFC3339Nano) + "\x00" + w.Reason))
	return hex.EncodeToString(sum[:4])
}

type windowsListCmd struct {
	Deployment string `arg:"" placeholder:"TENANT/NAME" help:"the deployment"`
	clientFlags
	outputFlag
}

func (windowsListCmd) ArgsError(cmd string) error {
	return cli.Usagef("%s: want exactly one deployment, as TENANT/NAME", cmd)
}

func (cmd *windowsListCmd) Run(kctx *kong.Context, e *env) error {
	kind := kindOf(kctx)
	ref, err := parseDeploymentRef("deployment", cmd.Deployment)
	if err != nil {
		return err
	}
	if err := cmd.check(); err != nil {
		return err
	}
	c, err := cmd.client(e.ctx)
	if err != nil {
		return err
	}
	s, err := c.CustomerSettings(e.ctx, ref)
	if err != nil {
		return err
	}
	return printWindows(e.stdout, cmd.json(), ref, kind, *kind.windows(&s), time.Now())
}

type windowsAddCmd struct {
	Deployment string        `arg:"" placeholder:"TENANT/NAME" help:"the deployment"`
	Start      string        `placeholder:"TIME" help:"when the window begins, RFC 3339 such as 2026-12-20T00:00:00Z (default: now)"`
	End        string        `placeholder:"TIME" help:"when it ends, RFC 3339 (or give --duration)"`
	Duration   time.Duration `placeholder:"D" help:"how long it lasts from --start, such as 72h (or give --end)"`
	Reason     string        `placeholder:"TEXT" help:"why, shown to engineers and approvers in every request it affects (required for a freeze; at most 500 characters)"`
	clientFlags
	outputFlag
}

func (windowsAddCmd) Help() string {
	return `Adds one window and keeps the others, for example
    broker deployment freeze add acme/prod --start 2026-12-20T00:00:00Z --end 2027-01-05T00:00:00Z --reason "year-end freeze"
    broker deployment maintenance add acme/prod --start 2026-12-06T02:00:00Z --duration 4h
Only approvers of the deployment's tenant may; the change is audited.`
}

func (windowsAddCmd) ArgsError(cmd string) error {
	return cli.Usagef("%s: want exactly one deployment, as TENANT/NAME", cmd)
}

// window is the window the flags describe, checked against now.
func (cmd *windowsAddCmd) window(kind windowKind, now time.Time) (brokerapi.Window, error) {
	start := now.UTC().Truncate(time.Second)
	if cmd.Start != "" {
		t, err := time.Parse(time.RFC3339, cmd.Start)
		if err != nil {
			return brokerapi.Window{}, cli.Usagef("--start %q: want an RFC 3339 time, such as 2026-12-20T00:00:00Z", cmd.Start)
		}
		start = t
	}
	var end time.Time
	switch {
	case cmd.End != "" && cmd.Duration != 0:
		return brokerapi.Window{}, cli.Usagef("give --end or --duration, not both")
	case cmd.End != "":
		t, err := time.Parse(time.RFC3339, cmd.End)
		if err != nil {
			return brokerapi.Window{}, cli.Usagef("--end %q: want an RFC 3339 time, such as 2027-01-05T00:00:00Z", cmd.End)
		}
		end = t
	case cmd.Duration > 0:
		end = start.Add(cmd.Duration)
	case cmd.Duration < 0:
		return brokerapi.Window{}, cli.Usagef("--duration %s: want a positive duration, such as 72h", cmd.Duration)
	default:
		return brokerapi.Window{}, cli.Usagef("broker deployment %s add: give --end TIME or --duration D", kind.name)
	}
	if !end.After(start) {
		return brokerapi.Window{}, cli.Usagef("the window ends (%s) before it starts (%s)", end.Format(time.RFC3339), start.Format(time.RFC3339))
	}
	if !end.After(now) {
		return brokerapi.Window{}, cli.Usagef("the window ended already (%s): a past window changes nothing", end.Format(time.RFC3339))
	}
	reason := strings.TrimSpace(cmd.Reason)
	if kind.name == "freeze" && reason == "" {
		return brokerapi.Window{}, cli.Usagef("broker deployment freeze add: --reason is required (engineers and approvers see it in every request the freeze affects)")
	}
	if len(reason) > 500 {
		return brokerapi.Window{}, cli.Usagef("--reason: %d characters, at most 500", len(reason))
	}
	return brokerapi.Window{Start: start, End: end, Reason: reason}, nil
}

func (cmd *windowsAddCmd) Run(kctx *kong.Context, e *env) error {
	kind := kindOf(kctx)
	ref, err := parseDeploymentRef("deployment", cmd.Deployment)
	if err != nil {
		return err
	}
	if err := cmd.check(); err != nil {
		return err
	}
	now := time.Now()
	w, err := cmd.window(kind, now)
	if err != nil {
		return err
	}
	c, err := cmd.client(e.ctx)
	if err != nil {
		return err
	}
	id := windowID(w)
	s, err := c.UpdateCustomerSettings(e.ctx, ref, func(s *brokerapi.CustomerSettings) error {
		ws := kind.windows(s)
		if !slices.ContainsFunc(*ws, func(x brokerapi.Window) bool { return windowID(x) == id }) {
			*ws = append(*ws, w)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if cmd.json() {
		return printWindows(e.stdout, true, ref, kind, *kind.windows(&s), now)
	}
	fmt.Fprintf(e.stdout, "Added %s window %s to %s: %s.\n", kind.name, id, ref, windowText(w))
	return printWindows(e.stdout, false, ref, kind, *kind.windows(&s), now)
}

type windowsRemoveCmd struct {
	Deployment string   `arg:"" placeholder:"TENANT/NAME" help:"the deployment"`
	IDs        []string `arg:"" optional:"" name:"id" placeholder:"ID" help:"the windows to remove, by the ID 'list' shows"`
	All        bool     `help:"remove every window of this kind"`
	clientFlags
	outputFlag
}

func (windowsRemoveCmd) ArgsError(cmd string) error {
	return cli.Usagef("%s: want a deployment, as TENANT/NAME, then the IDs of the windows to remove (or --all)", cmd)
}

func (cmd *windowsRemoveCmd) Run(kctx *kong.Context, e *env) error {
	kind := kindOf(kctx)
	ref, err := parseDeploymentRef("deployment", cmd.Deployment)
	if err != nil {
		return err
	}
	if err := cmd.check(); err != nil {
		return err
	}
	switch {
	case len(cmd.IDs) == 0 && !cmd.All:
		return cli.Usagef("broker deployment %s remove: give the IDs of the windows to remove ('broker deployment %s list %s' shows them), or --all", kind.name, kind.name, ref)
	case len(cmd.IDs) > 0 && cmd.All:
		return cli.Usagef("broker deployment %s remove: give IDs or --all, not both", kind.name)
	}
	c, err := cmd.client(e.ctx)
	if err != nil {
		return err
	}
	var removed int
	s, err := c.UpdateCustomerSettings(e.ctx, ref, func(s *brokerapi.CustomerSettings) error {
		ws := kind.windows(s)
		n := len(*ws)
		if cmd.All {
			*ws = []brokerapi.Window{}
			removed = n
			return nil
		}
		for _, id := range cmd.IDs {
			if !slices.ContainsFunc(*ws, func(x brokerapi.Window) bool { return windowID(x) == id }) {
				return fmt.Errorf("%s has no %s window %s: 'broker deployment %s list %s' shows them", ref, kind.name, id, kind.name, ref)
			}
		}
		*ws = slices.DeleteFunc(*ws, func(x brokerapi.Window) bool { return slices.Contains(cmd.IDs, windowID(x)) })
		removed = n - len(*ws)
		return nil
	})
	if err != nil {
		return err
	}
	now := time.Now()
	if cmd.json() {
		return printWindows(e.stdout, true, ref, kind, *kind.windows(&s), now)
	}
	fmt.Fprintf(e.stdout, "Removed %d %s window(s) of %s.\n", removed, kind.name, ref)
	return printWindows(e.stdout, false, ref, kind, *kind.windows(&s), now)
}

func windowText(w brokerapi.Window) string {
	s := w.Start.UTC().Format(time.RFC3339) + " to " + w.End.UTC().Format(time.RFC3339)
	if w.Reason != "" {
		s += " (" + w.Reason + ")"
	}
	return s
}

// printWindows prints the windows of one kind, as a table or as JSON.
func printWindows(w io.Writer, asJSON bool, ref string, kind windowKind, ws []brokerapi.Window, now time.Time) error {
	type row struct {
		ID string `json:"id"`
		brokerapi.Window
		State string `json:"state"`
	}
	rows := make([]row, 0, len(ws))
	for _, x := range ws {
		state := "upcoming"
		switch {
		case !now.Before(x.End):
			state = "ended"
		case !now.Before(x.Start):
			state = "in effect"
		}
		rows = append(rows, row{windowID(x), x, state})
	}
	if asJSON {
		return printJSON(w, rows)
	}
	if len(rows) == 0 {
		fmt.Fprintf(w, "%s has no %s.\n", ref, kind.plural)
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTART\tEND\tSTATE\tREASON")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.ID, r.Start.UTC().Format(time.RFC3339), r.End.UTC().Format(time.RFC3339), r.State, orDash(r.Reason))
	}
	return tw.Flush()
}

// customerWindowFlags refuses the window flags 'deployment set' once had:
// the windows are the customer's now, and the broker refuses an admin's
// change to them anyway.
func customerWindowFlags(ref string, freeze, maintenance []string, clearFreeze, clearMaintenance bool) error {
	for _, f := range []struct {
		given bool
		flag  string
		kind  string
	}{
		{len(freeze) > 0, "--freeze", "freeze"},
		{clearFreeze, "--clear-freeze", "freeze"},
		{len(maintenance) > 0, "--maintenance", "maintenance"},
		{clearMaintenance, "--clear-maintenance", "maintenance"},
	} {
		if f.given {
			tenant, _, _ := strings.Cut(ref, "/")
			return cli.Usagef("broker deployment set %s: %s windows are the customer's to set: an approver of tenant %s runs 'broker deployment %s add %s --end TIME --reason TEXT' (or remove); 'broker deployment %s list %s' shows them",
				f.flag, f.kind, tenant, f.kind, ref, f.kind, ref)
		}
	}
	return nil
}
