package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func runGuard(t *testing.T, stdin string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "agent"), append([]string{"guard"}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out.String() + errb.String(), ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return out.String(), 0
}

// TestAgentGuardCLI: `agent guard sql|prom` as the held-out corpus will
// drive it — JSON lines in, one verdict line out per input, in order, bad
// lines denied — and as a person would, with a query argument.
func TestAgentGuardCLI(t *testing.T) {
	in := strings.Join([]string{
		`{"sql": "SELECT database, table, count() FROM system.parts GROUP BY database, table"}`,
		`{"sql": "SELECT * FROM default.secret"}`,
		`not json`,
		`{"query": "SELECT 1"}`,
		``,
		`{"sql": "SELECT query FROM system.query_log"}`,
	}, "\n") + "\n"
	out, code := runGuard(t, in, "sql")
	if code != 0 {
		t.Fatalf("agent guard sql: exit %d: %s", code, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	want := []bool{true, false, false, false, false, false}
	if len(lines) != len(want) {
		t.Fatalf("got %d output lines for %d inputs:\n%s", len(lines), len(want), out)
	}
	for i, line := range lines {
		var v struct {
			Allow  bool   `json:"allow"`
			Reason string `json:"reason"`
		}
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Fatalf("line %d %q: %v", i+1, line, err)
		}
		if v.Allow != want[i] || v.Reason == "" {
			t.Errorf("line %d = %+v, want allow=%v with a reason", i+1, v, want[i])
		}
		if (i == 2 || i == 3 || i == 4) && !strings.HasPrefix(v.Reason, "bad input: ") {
			t.Errorf("line %d reason %q, want bad input: …", i+1, v.Reason)
		}
	}

	out, code = runGuard(t, "", "sql", "SELECT name FROM system.tables")
	if code != 0 || !strings.HasPrefix(out, "ALLOW: ") {
		t.Errorf("guard sql (allowed) = %d %q", code, out)
	}
	out, code = runGuard(t, "", "sql", "SELECT v FROM default.secret")
	if code != 1 || !strings.HasPrefix(out, "DENY: ") || !strings.Contains(out, "default.secret") {
		t.Errorf("guard sql (denied) = %d %q", code, out)
	}

	in = strings.Join([]string{
		`{"method": "GET", "url": "/api/v1/query?query=up"}`,
		`{"method": "POST", "url": "/api/v1/query", "body": "query=sum(rate(x[5m]))"}`,
		`{"method": "POST", "url": "/api/v1/admin/tsdb/delete_series?match[]=up"}`,
		`{"method": "GET", "url": "http://prometheus:9090/-/quit"}`,
		`{"url": "/api/v1/query?query=up"}`,
	}, "\n") + "\n"
	out, code = runGuard(t, in, "prom")
	if code != 0 {
		t.Fatalf("agent guard prom: exit %d: %s", code, out)
	}
	got := strings.Split(strings.TrimSpace(out), "\n")
	wantProm := []string{`"allow":true`, `"allow":true`, `"allow":false`, `"allow":false`, `"allow":false,"reason":"bad input`}
	if len(got) != len(wantProm) {
		t.Fatalf("got %d lines for %d inputs:\n%s", len(got), len(wantProm), out)
	}
	for i := range got {
		if !strings.Contains(got[i], wantProm[i]) {
			t.Errorf("prom line %d = %s, want %s", i+1, got[i], wantProm[i])
		}
	}
	if out, code := runGuard(t, "", "prom", `rate(http_requests_total{job="api"}[5m])`); code != 0 || !strings.HasPrefix(out, "ALLOW: ") {
		t.Errorf("guard prom (allowed) = %d %q", code, out)
	}
	if out, code := runGuard(t, "", "prom", "/api/v1/status/config"); code != 1 || !strings.HasPrefix(out, "DENY: ") {
		t.Errorf("guard prom (denied) = %d %q", code, out)
	}
	if out, code := runGuard(t, "", "frob"); code != 2 || !strings.Contains(out, "want sql, prom, catalog or functions") {
		t.Errorf("guard frob = %d %q", code, out)
	}
}
