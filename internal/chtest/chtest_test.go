package chtest

import (
	"os"
	"strings"
	"testing"
)

func TestMain(m *testing.M) {
	code := m.Run()
	Stop()
	os.Exit(code)
}

// TestReadOnlyUser checks the second lock on the installed ClickHouse: the
// tether user reads system tables, and nothing else, and writes nothing.
func TestReadOnlyUser(t *testing.T) {
	s := Start(t)
	s.Exec(t, "CREATE TABLE IF NOT EXISTS default.secret (v String) ENGINE = Memory")
	s.Exec(t, "INSERT INTO default.secret VALUES ('canary-7f3a')")
	if out := s.Exec(t, "SELECT v FROM default.secret"); !strings.Contains(out, "canary-7f3a") {
		t.Fatalf("admin cannot read the canary: %q", out)
	}
	if out, err := s.Query("tether", Password, "SELECT count() FROM system.tables"); err != nil || strings.TrimSpace(out) == "" {
		t.Fatalf("tether user reading system.tables = %q, %v", out, err)
	}
	for _, q := range []string{
		"SELECT v FROM default.secret",
		"INSERT INTO default.secret VALUES ('x')",
		"CREATE TABLE default.x (v String) ENGINE = Memory",
		"DROP TABLE default.secret",
		"SELECT * FROM system.numbers LIMIT 1 SETTINGS readonly = 0",
	} {
		out, err := s.Query("tether", Password, q)
		if err == nil {
			t.Errorf("tether user ran %q: %q", q, out)
		}
		if strings.Contains(out, "canary") {
			t.Errorf("tether user read the canary with %q", q)
		}
	}
	if _, err := s.Query("tether", "wrong", "SELECT 1"); err == nil {
		t.Error("tether user authenticated with a wrong password")
	}
}
