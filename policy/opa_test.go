package policy

import (
	"maps"
	"testing"

	"github.com/open-policy-agent/opa/v1/tester"
)

// TestRegoMatchesOPA: Test passes and fails the same tests as OPA's own
// runner (opa test), on the embedded policy and on edge cases.
func TestRegoMatchesOPA(t *testing.T) {
	dir := t.TempDir()
	writePolicy(t, dir, map[string]string{
		"access.rego": fixedPolicy(true, "ok"),
		"access_test.rego": `package tether.access_test

import data.tether.access

test_passes if access.decision.allow

test_fails if not access.decision.allow

test_not_true := 5

test_undefined if input.nothing

test_dup if true

test_dup if false

test_dup if true

todo_test_later if false

conflict := 1 if true

conflict := 2 if true

test_error if conflict == 1

test_prints if {
	print("seen")
	false
}

helper(x) := x
`,
	})
	embedded, err := readFS(defaultPolicy, "embedded", true)
	if err != nil {
		t.Fatal(err)
	}
	edge, err := readDir(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	for name, src := range map[string]source{"embedded": embedded, "edge cases": edge} {
		t.Run(name, func(t *testing.T) {
			ours, err := runTests(t.Context(), src)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]bool{}
			for _, r := range ours {
				got[r.name] = r.problem == ""
			}
			mods, err := parse(src)
			if err != nil {
				t.Fatal(err)
			}
			ch, err := tester.NewRunner().SetCompiler(newCompiler()).SetModules(mods).RunTests(t.Context(), nil)
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]bool{}
			for r := range ch {
				if !r.Skip {
					want[r.Package+"."+r.Name] = r.Pass()
				}
			}
			if !maps.Equal(got, want) {
				t.Errorf("Test results = %v\nopa test results = %v", got, want)
			}
			t.Logf("%d tests agree", len(got))
			if name == "edge cases" {
				t.Log(got)
			}
		})
	}
}
