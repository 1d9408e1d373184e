// Package cli holds what the broker and agent command lines share: flag
// parsing that gives one-line errors and accepts flags after arguments,
// usage errors that exit 2, the logger, and output formats.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// UsageError is a command-line mistake; the binaries exit 2 on it.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// Usagef returns a *UsageError.
func Usagef(format string, args ...any) error {
	return &UsageError{Msg: fmt.Sprintf(format, args...)}
}

// ExitError ends the process with a status and no message: the command
// already said what it had to.
type ExitError struct{ Code int }

func (e *ExitError) Error() string { return fmt.Sprintf("exit status %d", e.Code) }

// Exit returns an *ExitError.
func Exit(code int) error { return &ExitError{Code: code} }

// ExitCode maps an error from a command to the process exit status.
func ExitCode(err error) int {
	var ue *UsageError
	var ee *ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.Code
	case errors.As(err, &ue):
		return 2
	default:
		return 1
	}
}

// ErrHelp is returned after help was printed; the binaries exit 0.
var ErrHelp = flag.ErrHelp

// NewFlagSet returns a flag set whose errors come back as one-line
// *UsageError values, never printed usage dumps.
func NewFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// Parse parses args with fs, allowing flags after positional arguments,
// and returns the positional arguments. -h prints usage to out and
// returns ErrHelp.
func Parse(fs *flag.FlagSet, args []string, out io.Writer, usage string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprintln(out, strings.TrimSpace(usage))
				fmt.Fprintln(out, "\nFlags:")
				fs.SetOutput(out)
				fs.PrintDefaults()
				fs.SetOutput(io.Discard)
				return nil, ErrHelp
			}
			return nil, Usagef("%s: %v (run '%s -h' for help)", fs.Name(), err, fs.Name())
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// NewLogger returns a text logger at the named level.
func NewLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, Usagef("log level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

// CheckOutput validates an --output value against the accepted ones.
func CheckOutput(got string, accepted ...string) error {
	for _, a := range accepted {
		if got == a {
			return nil
		}
	}
	return Usagef("--output %q: want one of %s", got, strings.Join(accepted, ", "))
}
