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

// buildTags are the tags the project builds its binaries with (Makefile).
const buildTags = "ts_omit_peerapiserver"

func deps(t *testing.T, pkg string) map[string]bool {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", "-tags", buildTags, pkg)
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

// requireExist fails the test for each of pkgs that no longer exists in
// the module, its dependencies or the standard library, so that a list of
// forbidden packages cannot rot silently after a rename or an upgrade.
func requireExist(t *testing.T, pkgs []string) {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list", "-e", "-tags", buildTags, "-f", "{{.ImportPath}}\t{{with .Error}}{{printf \"%q\" .Err}}{{end}}"}, pkgs...)...)
	cmd.Dir = repoRoot(t)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %v: %v", pkgs, err)
	}
	seen := 0
	for line := range strings.Lines(string(out)) {
		path, msg, _ := strings.Cut(strings.TrimSuffix(line, "\n"), "\t")
		seen++
		if msg != "" {
			t.Errorf("package %s, listed as one a production binary must not link, does not exist (%s): update the list to what replaced it", path, msg)
		}
	}
	if seen != len(pkgs) {
		t.Fatalf("go list answered for %d of %d packages; the listing is broken", seen, len(pkgs))
	}
}

// Packages no production binary may link: the testing package, our test
// helpers, and the dev preset (the test control server and DERP relay of
// the dev tailnet, httptest, and the dev identity provider, which signs
// anyone in as anyone).
var (
	testOnly = []string{"testing", module + "/internal/testenv", module + "/internal/pgtest",
		module + "/internal/brokertest", module + "/internal/store/storetest", module + "/internal/mototest",
		module + "/internal/chtest", module + "/internal/promtest", module + "/internal/ghub/ghubtest",
		module + "/internal/webtest", module + "/internal/agentload", "github.com/chromedp/chromedp",
		"tailscale.com/tstest", "tailscale.com/net/stun/stuntest"}
	devOnly = []string{module + "/internal/devbroker", module + "/internal/devnet", module + "/internal/devidp",
		module + "/internal/devtickets", "tailscale.com/tstest/integration/testcontrol", "tailscale.com/derp/derpserver", "net/http/httptest"}
)

// TestBinariesLinkNoTestCode: no production binary (bin/broker, bin/agent)
// links the testing package, our test helpers or the dev preset; the
// agent, which runs in customers' VPCs, links no broker code either. The
// dev build (bin/broker-dev) does link the dev preset, which shows that
// the split is real and the listing sees it.
func TestBinariesLinkNoTestCode(t *testing.T) {
	requireExist(t, append(append([]string{module + "/internal/broker"}, testOnly...), devOnly...))
	for _, cmd := range []string{"broker", "agent"} {
		d := deps(t, module+"/cmd/"+cmd)
		if !d["tailscale.com/tsnet"] {
			t.Fatalf("cmd/%s does not link tsnet; the dependency listing is broken", cmd)
		}
		for _, p := range append(append([]string(nil), testOnly...), devOnly...) {
			if d[p] {
				t.Errorf("cmd/%s links %s", cmd, p)
			}
		}
	}
	if agent := deps(t, module+"/cmd/agent"); agent[module+"/internal/broker"] {
		t.Errorf("cmd/agent links %s", module+"/internal/broker")
	}
	dev := deps(t, module+"/cmd/broker-dev")
	for _, p := range devOnly {
		if !dev[p] {
			t.Errorf("cmd/broker-dev does not link %s: the dev build lost its dev preset, or this list is out of date", p)
		}
	}
	for _, p := range testOnly {
		if dev[p] {
			t.Errorf("cmd/broker-dev links %s", p)
		}
	}
}
