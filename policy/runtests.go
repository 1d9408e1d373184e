package policy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// ErrTestsFailed means at least one Rego unit test failed.
var ErrTestsFailed = errors.New("policy tests failed")

// Rule-name prefixes of tests, as for opa test.
const (
	testPrefix = "test_"
	skipPrefix = "todo_test_"
)

// Test runs the Rego unit tests (rules named test_*; todo_test_* are
// skipped) of the embedded policy, when dir is "", or of the .rego files
// under dir, with the engine's compiler settings. It returns how many
// passed and failed; err is non-nil when the tests could not run, or wraps
// [ErrTestsFailed] naming each failure, where it is and what it printed.
//
// A test passes when it is defined and true, as with opa test, which gives
// the same results on these files (TestRegoMatchesOPA). Test does not use
// OPA's tester package because that links the testing package into the
// broker; for the same reason it does not run parametrized tests
// (test_x[note] rules), which it reports as errors.
func Test(ctx context.Context, dir string) (passed, failed int, err error) {
	var src source
	if dir == "" {
		src, err = readFS(defaultPolicy, "embedded", true)
	} else {
		src, err = readDir(dir, true)
	}
	if err != nil {
		return 0, 0, err
	}
	results, err := runTests(ctx, src)
	if err != nil {
		return 0, 0, err
	}
	var failures []string
	for _, r := range results {
		if r.problem == "" {
			passed++
			continue
		}
		failed++
		failures = append(failures, fmt.Sprintf("%s (%s): %s", r.name, r.where, r.problem))
	}
	if failed > 0 {
		return passed, failed, fmt.Errorf("%d of %d: %s: %w", failed, passed+failed, strings.Join(failures, "; "), ErrTestsFailed)
	}
	return passed, failed, nil
}

// testResult is the outcome of one test rule.
type testResult struct {
	name    string // data.pkg.test_x, as opa test names it
	where   string // file:line
	problem string // why it failed; "" when it passed
}

// runTests runs the tests of src, in file order, skipping todo_test_ rules.
func runTests(ctx context.Context, src source) ([]testResult, error) {
	mods, err := parse(src)
	if err != nil {
		return nil, err
	}
	c := newTestCompiler()
	if c.Compile(mods); c.Failed() {
		return nil, fmt.Errorf("compile policy tests: %w", c.Errors)
	}
	var results []testResult
	for _, name := range slices.Sorted(maps.Keys(c.Modules)) {
		for _, rule := range c.Modules[name].Rules {
			test, ref := testName(rule.Head)
			if test == "" || strings.HasPrefix(test, skipPrefix) || len(rule.Head.Args) > 0 {
				continue
			}
			if err := ctx.Err(); err != nil {
				return nil, fmt.Errorf("run policy tests: %w", err)
			}
			path := rule.Module.Package.Path.Extend(ref)
			results = append(results, testResult{
				name:    rule.Module.Package.Path.String() + "." + ref.String(),
				where:   fmt.Sprintf("%s:%d", rule.Location.File, rule.Location.Row),
				problem: runTest(ctx, c, rule, path),
			})
		}
	}
	return results, nil
}

// runTest evaluates the test rule at path and returns why it failed, or "".
func runTest(ctx context.Context, c *ast.Compiler, rule *ast.Rule, path ast.Ref) string {
	if rule.Head.DocKind() == ast.PartialObjectDoc {
		return "parametrized tests are not supported here; write one test_ rule per case, or run opa test"
	}
	var out bytes.Buffer
	rs, err := rego.New(
		rego.ParsedQuery(ast.NewBody(ast.NewExpr(ast.NewTerm(path)))),
		rego.Compiler(c),
		rego.PrintHook(topdown.NewPrintHook(&out)),
	).Eval(ctx)
	var problem string
	switch {
	case err != nil:
		problem = err.Error()
	case len(rs) == 0 || len(rs[0].Expressions) == 0:
		problem = "undefined"
	case rs[0].Expressions[0].Value != true:
		problem = fmt.Sprintf("%v, not true", rs[0].Expressions[0].Value)
	default:
		return ""
	}
	if s := strings.TrimSpace(out.String()); s != "" {
		problem += " (printed: " + s + ")"
	}
	return problem
}

// newTestCompiler is the engine's compiler with print enabled and duplicate
// test names made distinct, so that each of several test_x rules runs on
// its own, as with opa test.
func newTestCompiler() *ast.Compiler {
	return newCompiler().
		WithEnablePrintStatements(true).
		WithStageAfterID(ast.StageRewriteRuleHeadRefs, ast.CompilerStageDefinition{
			Name:       "RewriteDuplicateTestNames",
			MetricName: "rewrite_duplicate_test_names",
			Stage:      renameDuplicateTests,
		})
}

// renameDuplicateTests renames the second and later test rules of a name
// test_x#01, test_x#02, …, as OPA's tester does.
func renameDuplicateTests(c *ast.Compiler) *ast.Error {
	seen := map[string]int{}
	for _, mod := range c.Modules {
		for _, rule := range mod.Rules {
			name, ref := testName(rule.Head)
			if !strings.HasPrefix(name, testPrefix) {
				continue
			}
			key := mod.Package.Path.Extend(ref).String()
			if n, ok := seen[key]; ok {
				suffix := rule.Head.Ref()[len(ref):]
				renamed := fmt.Sprintf("%s#%02d", name, n)
				if len(ref) == 1 {
					ref[0] = ast.VarTerm(renamed)
				} else {
					ref[len(ref)-1] = ast.StringTerm(renamed)
				}
				rule.Head.SetRef(append(ref, suffix...))
			}
			seen[key]++
		}
	}
	return nil
}

// testName returns the test name in a rule head and the head's ref up to
// it, or "" when the rule is not a test.
func testName(h *ast.Head) (string, ast.Ref) {
	prefix := h.Ref().GroundPrefix()
	for i, t := range prefix {
		var n string
		switch v := t.Value.(type) {
		case ast.Var:
			n = string(v)
		case ast.String:
			n = string(v)
		}
		if strings.HasPrefix(n, testPrefix) || strings.HasPrefix(n, skipPrefix) {
			return n, prefix[:i+1].Copy()
		}
	}
	return "", nil
}
