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
