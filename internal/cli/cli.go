// Package cli holds what the broker and agent command lines share: the
// command-line framework (kong) set up once — help at every level, a
// 'help' command, usage errors that name the command, say what it wants
// and suggest the closest command or flag, on one line, exiting 2 — the
// logger, and output formats.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"strings"

	"github.com/alecthomas/kong"
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
	case err == nil, errors.Is(err, ErrHelp):
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

// ArgsChecker is implemented by a command whose positional arguments
// have a message of their own: it replaces the framework's when the
// arguments are missing or too many. command is the command as typed,
// such as "broker request show".
type ArgsChecker interface {
	ArgsError(command string) error
}

// New builds the command line of the binary name from grammar, a struct
// of commands in kong's tags. Help goes to stdout.
func New(name, description string, grammar any, stdout, stderr io.Writer, opts ...kong.Option) (*kong.Kong, error) {
	opts = append([]kong.Option{
		kong.Name(name),
		kong.Description(description),
		kong.Writers(stdout, stderr),
		kong.Exit(func(code int) { panic(exitCode(code)) }),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true, NoExpandSubcommands: true, WrapUpperBound: 100}),
		// A flag's value may begin with "-" (--name -prod is the
		// command's to judge, as the flag package let it).
		kong.WithHyphenPrefixedParameters(true),
	}, opts...)
	return kong.New(grammar, opts...)
}

// exitCode is how kong's request to exit (after printing help) unwinds
// to Run, which turns it into an error instead of ending the process.
type exitCode int

// Run parses args with k and runs the command they select. Help (-h at
// any level, or the 'help' command) prints to stdout and returns
// ErrHelp; a command-line mistake returns a one-line *UsageError.
func Run(k *kong.Kong, args []string) (err error) {
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		code, ok := r.(exitCode)
		if !ok {
			panic(r)
		}
		if code == 0 {
			err = ErrHelp
		} else {
			err = Exit(int(code))
		}
	}()
	kctx, err := k.Parse(args)
	if err != nil {
		return parseError(k, err)
	}
	return kctx.Run()
}

var didYouMean = regexp.MustCompile(`, (did you mean .*\?)$`)

// parseError turns kong's parse errors into usage errors that name the
// command, say what it wants, and point at its help.
func parseError(k *kong.Kong, err error) error {
	var pe *kong.ParseError
	if !errors.As(err, &pe) {
		return err
	}
	return usageError(k, pe.Context, pe.Unwrap())
}

// usageError turns err, met while parsing in kctx (nil if unknown), into
// a usage error that names the command, says what it wants, and points
// at its help.
func usageError(k *kong.Kong, kctx *kong.Context, err error) error {
	var ue *UsageError
	var ee *ExitError
	if errors.As(err, &ue) || errors.As(err, &ee) || errors.Is(err, ErrHelp) {
		return err
	}
	node := k.Model.Node
	if kctx != nil {
		for _, p := range kctx.Path {
			if p.Command != nil {
				node = p.Command
			}
		}
	}
	msg := err.Error()
	hint := ""
	if m := didYouMean.FindStringSubmatch(msg); m != nil {
		hint = m[1]
		msg = strings.TrimSuffix(msg, m[0])
	}
	path := CommandPath(node)
	help := fmt.Sprintf("run '%s -h'", path)
	if node == k.Model.Node {
		help = fmt.Sprintf("run '%s help'", path)
	}
	subs := Subcommands(node)
	checker, _ := nodeTarget(node).(ArgsChecker)
	switch {
	case strings.HasPrefix(msg, "unexpected argument ") && len(subs) > 0:
		arg := strings.TrimPrefix(msg, "unexpected argument ")
		what := fmt.Sprintf("unknown command %q", arg)
		if node != k.Model.Node {
			what = fmt.Sprintf("unknown command '%s %s'", strings.TrimPrefix(path, k.Model.Name+" "), arg)
		}
		if hint != "" {
			what += " (" + hint + ")"
		}
		return Usagef("%s: want %s (%s)", what, orList(subs), help)
	case strings.HasPrefix(msg, "expected ") && len(subs) > 0 && node == k.Model.Node:
		return Usagef("no command given: want %s (%s)", orList(subs), help)
	case strings.HasPrefix(msg, "expected ") && len(subs) > 0:
		return Usagef("%s: want a subcommand: %s (%s)", node.Name, orList(subs), help)
	case (strings.HasPrefix(msg, "unexpected argument ") || strings.HasPrefix(msg, "expected ")) && checker != nil:
		return checker.ArgsError(path)
	case strings.HasPrefix(msg, "unexpected argument "):
		return Usagef("%s: unexpected argument %q (%s)", path, strings.TrimPrefix(msg, "unexpected argument "), help)
	}
	if hint != "" {
		msg += " (" + hint + ")"
	}
	return Usagef("%s: %s (%s)", path, msg, help)
}

// nodeTarget is the command struct of node, or nil.
func nodeTarget(node *kong.Node) any {
	if node == nil || !node.Target.IsValid() || !node.Target.CanAddr() {
		return nil
	}
	return node.Target.Addr().Interface()
}

// CommandPath is the command's name as typed: "broker deployment create".
func CommandPath(node *kong.Node) string {
	var names []string
	for n := node; n != nil; n = n.Parent {
		names = append([]string{n.Name}, names...)
	}
	return strings.Join(names, " ")
}

// Subcommands names the visible subcommands of node.
func Subcommands(node *kong.Node) []string {
	var out []string
	for _, c := range node.Children {
		if c.Type == kong.CommandNode && !c.Hidden {
			out = append(out, c.Name)
		}
	}
	return out
}

// Commands lists every visible command under node, each as its full
// path: the branches and the commands one runs.
func Commands(node *kong.Node) []*kong.Node {
	var out []*kong.Node
	for _, c := range node.Children {
		if c.Type != kong.CommandNode || c.Hidden {
			continue
		}
		out = append(out, c)
		out = append(out, Commands(c)...)
	}
	return out
}

func orList(s []string) string {
	switch len(s) {
	case 0:
		return ""
	case 1:
		return s[0]
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}

// HelpCmd is the 'help [COMMAND...]' command: it prints the help of the
// command named, relative to where it stands ('broker help request list',
// 'broker request help list').
type HelpCmd struct {
	Command []string `arg:"" optional:"" help:"the command to explain"`
}

// Run prints the help of the named command.
func (h *HelpCmd) Run(kctx *kong.Context) error {
	var args []string
	for n := kctx.Selected().Parent; n != nil && n.Parent != nil; n = n.Parent {
		args = append([]string{n.Name}, args...)
	}
	args = append(append(args, h.Command...), "--help")
	_, err := kctx.Kong.Parse(args)
	if err != nil {
		return parseError(kctx.Kong, err)
	}
	return ErrHelp
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
