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

func TestParse(t *testing.T) {
	fs := NewFlagSet("x")
	out := fs.String("output", "table", "")
	pos, err := Parse(fs, []string{"a", "--output", "json", "b", "--", "--c"}, io.Discard, "")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(pos, " ") != "a b --c" || *out != "json" {
		t.Errorf("Parse = %q, output %q; want [a b --c], json", pos, *out)
	}
	fs = NewFlagSet("x")
	_, err = Parse(fs, []string{"--nope"}, io.Discard, "")
	if !strings.Contains(err.Error(), "flag provided but not defined: -nope") || ExitCode(err) != 2 {
		t.Errorf("Parse(--nope) = %v (exit %d), want a usage error exiting 2", err, ExitCode(err))
	}
	var help strings.Builder
	fs = NewFlagSet("x")
	fs.String("output", "table", "output format")
	if _, err := Parse(fs, []string{"-h"}, &help, "Usage: x"); !errors.Is(err, ErrHelp) || !strings.Contains(help.String(), "output format") {
		t.Errorf("Parse(-h) = %v, printed %q", err, help.String())
	}
}
