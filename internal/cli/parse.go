package cli

import (
	"fmt"
	"strings"

	"github.com/alecthomas/kong"
)

// Parse parses args with k without running anything, for a binary that
// dispatches on the selected command itself (kctx.Selected()) instead of
// calling kong's Run. Help (-h at any level, or a HelpCmd in the grammar)
// prints to stdout and returns ErrHelp; a command-line mistake returns the
// same one-line *UsageError as Run.
//
// Why it exists: kong's Parse and Run find hooks (BeforeReset, AfterApply…)
// and Run methods with reflect.Value.MethodByName on a name that is not a
// constant (kong's getMethod, reached from Parse through Context.Validate
// and Kong.applyHook). A reachable call of that kind makes the Go linker
// keep every exported method of every type in the binary: 11 MB more for
// the agent, over its 40 MB budget (e2e TestAgentBinarySize). Parse uses
// only kong's steps that do no such lookup (Trace, Reset, Resolve, Apply),
// so no hook runs and the validation is its own: required flags, required
// positional arguments and a missing subcommand. A grammar using what it
// does not check (enum, xor, and) is refused rather than half-validated.
func Parse(k *kong.Kong, args []string) (*kong.Context, error) {
	if err := checkSupported(k.Model.Node); err != nil {
		return nil, err
	}
	kctx, err := kong.Trace(k, args)
	if err == nil {
		err = kctx.Error
	}
	if err != nil {
		return nil, usageError(k, kctx, err)
	}
	for _, p := range kctx.Path {
		if p.Flag != nil && p.Flag == k.Model.HelpFlag {
			if err := kctx.PrintUsage(false); err != nil {
				return nil, err
			}
			return nil, ErrHelp
		}
	}
	if err := kctx.Reset(); err != nil {
		return nil, usageError(k, kctx, err)
	}
	if err := kctx.Resolve(); err != nil {
		return nil, usageError(k, kctx, err)
	}
	if _, err := kctx.Apply(); err != nil {
		return nil, usageError(k, kctx, err)
	}
	if err := validate(kctx); err != nil {
		return nil, usageError(k, kctx, err)
	}
	if h, ok := nodeTarget(kctx.Selected()).(*HelpCmd); ok {
		return nil, parseHelp(k, kctx.Selected(), h.Command)
	}
	return kctx, nil
}

// parseHelp prints the help of the command words name, relative to the
// parent of the help command at node, as HelpCmd.Run does.
func parseHelp(k *kong.Kong, node *kong.Node, words []string) error {
	var args []string
	for n := node.Parent; n != nil && n.Parent != nil; n = n.Parent {
		args = append([]string{n.Name}, args...)
	}
	_, err := Parse(k, append(append(args, words...), "--help"))
	return err
}

// validate checks what kong's Context.Validate would, for the grammar
// features Parse supports: the flags on the command path that are
// required, the selected command's required positional arguments, and
// that a command with subcommands is given one (the messages are kong's,
// which usageError rewrites).
func validate(kctx *kong.Context) error {
	var missing []string
	for _, p := range kctx.Path {
		for _, f := range p.Flags {
			if f.Required && !f.Set {
				missing = append(missing, f.Summary())
			}
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing flags: %s", strings.Join(missing, ", "))
	}
	node := kctx.Selected()
	if node == nil {
		node = kctx.Model.Node
	}
	for _, a := range node.Positional {
		if a.Required && !a.Set {
			return fmt.Errorf("expected %q", a.Summary())
		}
	}
	var subs []string
	for _, c := range node.Children {
		if c.Type == kong.CommandNode && !c.Hidden {
			subs = append(subs, fmt.Sprintf("%q", c.Name))
		}
	}
	if len(subs) > 0 {
		return fmt.Errorf("expected one of %s", strings.Join(subs, ", "))
	}
	return nil
}

// checkSupported refuses a grammar that uses a check Parse does not make.
func checkSupported(node *kong.Node) error {
	for _, f := range node.Flags {
		if f.Enum != "" || len(f.Xor) > 0 || len(f.And) > 0 {
			return fmt.Errorf("command line of %s: flag --%s uses enum, xor or and, which cli.Parse does not check", CommandPath(node), f.Name)
		}
	}
	for _, a := range node.Positional {
		if a.Enum != "" {
			return fmt.Errorf("command line of %s: argument %s uses enum, which cli.Parse does not check", CommandPath(node), a.Name)
		}
	}
	for _, c := range node.Children {
		if err := checkSupported(c); err != nil {
			return err
		}
	}
	return nil
}
