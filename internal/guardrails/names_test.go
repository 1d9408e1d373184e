package guardrails

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestOneHomeForNames: grant scopes and role names are spelled out only in
// internal/names; everywhere else they are its constants, so a renamed
// scope or role cannot leave a stale copy behind.
func TestOneHomeForNames(t *testing.T) {
	root := repoRoot(t)
	words := map[string]string{
		"clickhouse:system": "names.ScopeClickHouse",
		"prometheus:read":   "names.ScopePrometheus",
		"network:peering":   "names.ScopePeering",
	}
	roles := map[string]bool{"engineer": true, "reviewer": true, "admin": true, "approver": true, "internal": true}
	fset := token.NewFileSet()
	checked := 0
	filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		// Test-support packages (storetest, brokertest, …) hold fixtures:
		// stored bytes are data there, not vocabulary.
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "bin" || strings.HasSuffix(d.Name(), "test") || rel == filepath.Join("internal", "names")) && path != root {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			t.Errorf("%s: %v", rel, err)
			return nil
		}
		checked++
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.BasicLit:
				if s, err := strconv.Unquote(n.Value); err == nil && words[s] != "" {
					t.Errorf("%s: %q spelled out; use %s", fset.Position(n.Pos()), s, words[s])
				}
			case *ast.CallExpr:
				// p.HasRole("admin"), Role: "engineer" in an audit actor.
				if sel, ok := n.Fun.(*ast.SelectorExpr); ok && sel.Sel.Name == "HasRole" && len(n.Args) == 1 {
					if lit, ok := n.Args[0].(*ast.BasicLit); ok {
						if s, _ := strconv.Unquote(lit.Value); roles[s] {
							t.Errorf("%s: role %q spelled out; use the names.Role… constant", fset.Position(lit.Pos()), s)
						}
					}
				}
			case *ast.KeyValueExpr:
				if k, ok := n.Key.(*ast.Ident); ok && k.Name == "Role" {
					if lit, ok := n.Value.(*ast.BasicLit); ok {
						if s, _ := strconv.Unquote(lit.Value); roles[s] {
							t.Errorf("%s: role %q spelled out; use the names.Role… or names.Review… constant", fset.Position(lit.Pos()), s)
						}
					}
				}
			}
			return true
		})
		return nil
	})
	if checked < 100 {
		t.Fatalf("checked only %d files; the walk is broken", checked)
	}
}
