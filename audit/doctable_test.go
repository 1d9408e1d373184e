package audit

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// docTypes reads the event types listed in the first column of the table
// under the "### Types" heading of docs/audit.md: each backquoted name in
// a row's first cell is one type.
func docTypes(t *testing.T, path string) map[Type]int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer f.Close()
	code := regexp.MustCompile("`([^`]+)`")
	types := map[Type]int{}
	in := false
	line := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line++
		s := sc.Text()
		if strings.HasPrefix(s, "#") {
			in = strings.TrimSpace(strings.TrimLeft(s, "#")) == "Types"
			continue
		}
		if !in || !strings.HasPrefix(s, "|") {
			continue
		}
		cells := strings.Split(s, "|")
		if len(cells) < 3 {
			continue
		}
		for _, m := range code.FindAllStringSubmatch(cells[1], -1) {
			if _, dup := types[Type(m[1])]; dup {
				t.Errorf("%s:%d: type %s is listed twice in the Types table: remove one row", path, line, m[1])
			}
			types[Type(m[1])] = line
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	if len(types) == 0 {
		t.Fatalf("%s: no event types found under a \"### Types\" heading: the table moved or lost its backquoted type names", path)
	}
	return types
}

// TestDocsListEveryEventType keeps docs/audit.md's event-type table and
// [Types] in step, both ways: reviewers read the table to know what the
// log can hold, and 'broker audit search --type' refuses types outside
// [Types].
func TestDocsListEveryEventType(t *testing.T) {
	path := filepath.Join("..", "docs", "audit.md")
	doc := docTypes(t, path)
	for _, typ := range Types {
		if _, ok := doc[typ]; !ok {
			t.Errorf("event type %s is in audit.Types but not in %s: add a row \"| `%s` | recorded when | details |\" to its Types table", typ, path, typ)
		}
	}
	var extra []string
	for typ, line := range doc {
		if !slices.Contains(Types, typ) {
			extra = append(extra, fmt.Sprintf("%s (line %d)", typ, line))
		}
	}
	slices.Sort(extra)
	for _, e := range extra {
		t.Errorf("%s lists event type %s, which audit.Types does not know: remove the row, or add the type to audit.Types", path, e)
	}
}
