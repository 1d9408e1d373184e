package guardrails

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const module = "github.com/tetherhq/tether"

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repo root %s: %v", root, err)
	}
	return root
}

// TestPackageDocs: every package has a doc comment saying what it is for.
func TestPackageDocs(t *testing.T) {
	root := repoRoot(t)
	dirs := map[string]bool{}
	filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "bin") && path != root {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, "_test.go") {
			dirs[filepath.Dir(path)] = true
		}
		return nil
	})
	if len(dirs) < 10 {
		t.Fatalf("found only %d package directories; the walk is broken", len(dirs))
	}
	for dir := range dirs {
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		documented := false
		for _, e := range entries {
			name := e.Name()
			if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
				continue
			}
			f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(dir, name), nil, parser.ParseComments|parser.PackageClauseOnly)
			if err != nil {
				t.Fatal(err)
			}
			if f.Doc != nil && strings.TrimSpace(f.Doc.Text()) != "" {
				documented = true
			}
		}
		if !documented {
			rel, _ := filepath.Rel(root, dir)
			t.Errorf("package in %s has no doc comment", rel)
		}
	}
}

func deps(t *testing.T, pkg string) map[string]bool {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", "-tags", "ts_omit_peerapiserver", pkg)
	cmd.Dir = repoRoot(t)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v", pkg, err)
	}
	m := map[string]bool{}
	for _, p := range strings.Fields(string(out)) {
		m[p] = true
	}
	return m
}

// TestBinariesLinkNoTestCode: neither binary links the testing package or
// our test helpers; the agent, which runs in customers' VPCs, links none
// of the dev tailnet's servers either.
func TestBinariesLinkNoTestCode(t *testing.T) {
	testOnly := []string{"testing", module + "/internal/testenv", module + "/internal/pgtest",
		module + "/internal/brokertest", module + "/internal/store/storetest", module + "/internal/mototest",
		module + "/internal/chtest", module + "/internal/promtest"}
	for _, cmd := range []string{"broker", "agent"} {
		d := deps(t, module+"/cmd/"+cmd)
		if !d["tailscale.com/tsnet"] {
			t.Fatalf("cmd/%s does not link tsnet; the dependency listing is broken", cmd)
		}
		for _, p := range testOnly {
			if d[p] {
				t.Errorf("cmd/%s links %s", cmd, p)
			}
		}
	}
	agent := deps(t, module+"/cmd/agent")
	for _, p := range []string{module + "/internal/devnet", module + "/internal/broker", "tailscale.com/tstest/integration/testcontrol", "tailscale.com/derp/derpserver", "net/http/httptest"} {
		if agent[p] {
			t.Errorf("cmd/agent links %s", p)
		}
	}
}
