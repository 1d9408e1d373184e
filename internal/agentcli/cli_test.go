package agentcli

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/alecthomas/kong"

	"github.com/tetherhq/tether/internal/cli"
)

// TestHelpAndDocs: -h on every agent command prints its help and exits
// 0, and docs/cli.md has a section for each.
func TestHelpAndDocs(t *testing.T) {
	k, err := newParser(io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("../../docs/cli.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range append([]*kong.Node{k.Model.Node}, cli.Commands(k.Model.Node)...) {
		path := cli.CommandPath(n)
		if h := "### `" + path + "`"; !bytes.Contains(doc, []byte(h)) {
			t.Errorf("docs/cli.md has no section %s: run scripts/gencli.sh", h)
		}
		args := append(strings.Fields(path)[1:], "-h")
		var out bytes.Buffer
		if err := run(context.Background(), args, strings.NewReader(""), &out, io.Discard); !errors.Is(err, cli.ErrHelp) || !strings.HasPrefix(out.String(), "Usage: "+path) {
			t.Errorf("agent %s = %v, printed %q; want its help", strings.Join(args, " "), err, out.String())
		}
	}
	err = run(context.Background(), []string{"guard", "sqll"}, strings.NewReader(""), io.Discard, io.Discard)
	if cli.ExitCode(err) != 2 || !strings.Contains(err.Error(), `unknown command 'guard sqll' (did you mean "sql"?): want sql, prom, catalog or functions`) {
		t.Errorf("agent guard sqll = %v, want a usage error suggesting sql", err)
	}
}
