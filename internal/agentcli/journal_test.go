package agentcli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tetherhq/tether/internal/agent"
	"github.com/tetherhq/tether/internal/cli"
)

// TestJournalCommand: 'agent journal' reads the rotated file before the
// current one, prints a table or JSON lines, filters with --since, and
// says what is wrong with a missing state dir or a malformed --since.
func TestJournalCommand(t *testing.T) {
	dir := t.TempDir()
	older := `{"time":"2026-12-01T09:00:00Z","type":"prom.allowed","outcome":"success","engineer":"eng@vendor.example","grant_id":"g-1","request_id":"r-1","statement":"/api/v1/query up"}` + "\n"
	newer := `{"time":"2026-12-01T10:00:00Z","type":"query.finished","outcome":"success","engineer":"eng@vendor.example","grant_id":"g-2","request_id":"r-2","query_id":"q","rows":7,"bytes":120}` + "\n" +
		`{"time":"2026-12-01T11:00:00Z","type":"query.denied","outcome":"failure","engineer":"eng@vendor.example","grant_id":"g-2","statement":"SELECT * FROM secrets","reason":"table secrets is not a system table"}` + "\n"
	if err := os.WriteFile(filepath.Join(dir, "journal.1.jsonl"), []byte(older), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "journal.jsonl"), []byte(newer), 0o600); err != nil {
		t.Fatal(err)
	}
	journal := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := run(context.Background(), append([]string{"journal"}, args...), strings.NewReader(""), &out, io.Discard)
		return out.String(), err
	}

	out, err := journal("--state-dir", dir)
	if err != nil {
		t.Fatalf("agent journal = %v", err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "TIME") ||
		!strings.Contains(lines[1], "g-1") || !strings.Contains(lines[1], "/api/v1/query up") ||
		!strings.Contains(lines[2], "query.finished") || !strings.Contains(lines[2], " 7 ") || !strings.Contains(lines[2], "120") ||
		!strings.Contains(lines[3], "SELECT * FROM secrets — table secrets is not a system table") {
		t.Errorf("agent journal printed\n%s\nwant a header and the 3 calls, oldest first", out)
	}

	out, err = journal("--state-dir", dir, "--since", "2026-12-01T10:00:00Z", "--output", "json")
	if err != nil {
		t.Fatalf("agent journal --since --output json = %v", err)
	}
	var got []agent.JournalEntry
	dec := json.NewDecoder(strings.NewReader(out))
	for dec.More() {
		var e agent.JournalEntry
		if err := dec.Decode(&e); err != nil {
			t.Fatalf("agent journal --output json printed %q: %v", out, err)
		}
		got = append(got, e)
	}
	if len(got) != 2 || got[0].GrantID != "g-2" || got[0].Rows == nil || *got[0].Rows != 7 || got[1].Reason == "" {
		t.Errorf("agent journal --since 10:00 --output json = %+v, want the 2 calls from 10:00", got)
	}

	if out, err := journal("--state-dir", dir, "--since", "24h"); err != nil || strings.Count(out, "\n") != 1 {
		t.Errorf("agent journal --since 24h = %q, %v; want the header only (the calls are older)", out, err)
	}

	for _, tt := range []struct {
		name string
		args []string
		want string
		code int
	}{
		{"missing state dir", []string{"--state-dir", filepath.Join(dir, "nope")}, "give the agent's --state-dir", 1},
		{"no state dir", nil, "--state-dir DIR is required", 2},
		{"malformed since", []string{"--state-dir", dir, "--since", "yesterday"}, `--since "yesterday": want an RFC 3339 time`, 2},
		{"bad output", []string{"--state-dir", dir, "--output", "yaml"}, `--output "yaml"`, 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := journal(tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) || cli.ExitCode(err) != tt.code {
				t.Errorf("agent journal %s = %v (exit %d), want an error containing %q, exit %d", strings.Join(tt.args, " "), err, cli.ExitCode(err), tt.want, tt.code)
			}
		})
	}
}
