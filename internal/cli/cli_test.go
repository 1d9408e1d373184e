package cli

import (
	"errors"
	"io"
	"strings"
	"testing"
)

func TestExitCode(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want int
	}{
		{nil, 0},
		{ErrHelp, 0},
		{errors.New("x"), 1},
		{Usagef("x"), 2},
		{Exit(3), 3},
	} {
		if got := ExitCode(tt.err); got != tt.want {
			t.Errorf("ExitCode(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
}

func TestNewLoggerAndOutput(t *testing.T) {
	if _, err := NewLogger(io.Discard, "loud"); err == nil {
		t.Error("NewLogger(loud) succeeded")
	}
	if _, err := NewLogger(io.Discard, "debug"); err != nil {
		t.Error(err)
	}
	if err := CheckOutput("yaml", "table", "json"); err == nil || !strings.Contains(err.Error(), "want one of table, json") {
		t.Errorf("CheckOutput(yaml) = %v", err)
	}
}

// parseGrammar is a small command line for TestParse.
type parseGrammar struct {
	Run   struct{ Name string } `cmd:"" help:"run"`
	Guard struct {
		SQL struct {
			Query string `arg:""`
		} `cmd:"" name:"sql"`
		HelpCmd HelpCmd `cmd:"" name:"help" hidden:""`
	} `cmd:""`
	Key struct {
		Dir string `required:""`
	} `cmd:""`
	HelpCmd HelpCmd `cmd:"" name:"help"`
}

// TestParse: Parse, which runs no hooks and no Run method, answers help
// and mistakes as the framework does: help at every level and the help
// command return ErrHelp, a mistake is a one-line usage error (exit 2)
// naming the closest command or flag, a missing subcommand, argument or
// required flag is refused.
func TestParse(t *testing.T) {
	for _, tt := range []struct {
		args     []string
		err      string // "" for success, "help" for ErrHelp
		out      string // what stdout must contain
		selected string
	}{
		{[]string{"run", "--name", "-x"}, "", "", "run"},
		{[]string{"guard", "sql", "SELECT 1"}, "", "", "sql"},
		{[]string{"-h"}, "help", "Usage: x <command>", ""},
		{[]string{"guard", "-h"}, "help", "Usage: x guard <command>", ""},
		{[]string{"guard", "sql", "-h"}, "help", "Usage: x guard sql <query>", ""},
		{[]string{"help", "guard", "sql"}, "help", "Usage: x guard sql <query>", ""},
		{[]string{"guard", "help", "sql"}, "help", "Usage: x guard sql <query>", ""},
		{nil, "no command given: want run, guard, key or help (run 'x help')", "", ""},
		{[]string{"rn"}, `unknown command "rn" (did you mean "run"?): want run, guard, key or help (run 'x help')`, "", ""},
		{[]string{"guard"}, "guard: want a subcommand: sql (run 'x guard -h')", "", ""},
		{[]string{"run", "--nme", "a"}, `x run: unknown flag --nme (did you mean "--name"?) (run 'x run -h')`, "", ""},
		{[]string{"guard", "sql"}, `x guard sql: expected "<query>"`, "", ""},
		{[]string{"key"}, "x key: missing flags: --dir=STRING", "", ""},
	} {
		var out strings.Builder
		k, err := New("x", "", &parseGrammar{}, &out, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		kctx, err := Parse(k, tt.args)
		switch {
		case tt.err == "" && err != nil:
			t.Errorf("Parse(%q) = %v", tt.args, err)
		case tt.err == "" && kctx.Selected().Name != tt.selected:
			t.Errorf("Parse(%q) selected %q, want %q", tt.args, kctx.Selected().Name, tt.selected)
		case tt.err == "help" && !errors.Is(err, ErrHelp):
			t.Errorf("Parse(%q) = %v, want ErrHelp", tt.args, err)
		case tt.err != "" && tt.err != "help" && (err == nil || !strings.Contains(err.Error(), tt.err) || ExitCode(err) != 2):
			t.Errorf("Parse(%q) = %v (exit %d), want a usage error containing %q", tt.args, err, ExitCode(err), tt.err)
		}
		if !strings.Contains(out.String(), tt.out) {
			t.Errorf("Parse(%q) printed %q, want it to contain %q", tt.args, out.String(), tt.out)
		}
	}
	var enum struct {
		Output string `enum:"a,b" default:"a"`
	}
	k, err := New("x", "", &enum, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Parse(k, []string{"--output", "c"}); err == nil || !strings.Contains(err.Error(), "which cli.Parse does not check") {
		t.Errorf("Parse with an enum flag = %v, want it refused", err)
	}
}
