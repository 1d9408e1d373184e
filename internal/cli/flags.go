package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// The agent's command line parses with the standard flag package rather
// than kong: kong finds each command's Run and hooks with
// reflect.Value.MethodByName, which makes the linker keep every exported
// method of every type in the binary — 11 MB more for the agent (37 to
// 48 MB, over its 40 MB budget, e2e TestAgentBinarySize).

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
