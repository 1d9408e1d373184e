package guardrails

import (
	"os"
	"path/filepath"
	"testing"
)

// maxREADME bounds README.md: it is for users — what Tether is, the two
// commands, the tour of each role, deploying for real — and reference
// material lives in docs/.
const maxREADME = 15000

// TestREADMEIsShort keeps README.md at most maxREADME bytes.
func TestREADMEIsShort(t *testing.T) {
	path := filepath.Join(repoRoot(t), "README.md")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) > maxREADME {
		t.Errorf("README.md is %d bytes, over the %d it may have: move reference material (flags, settings, routes, figures) to docs/ (cli.md, operations.md, api.md, …) and link it", len(raw), maxREADME)
	}
}
