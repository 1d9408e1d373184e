package sqlguard

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/chtest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	chtest.Stop()
	os.Exit(code)
}

// Canaries planted where a bypass would find them: a customer table, the
// text of a logged query (system.query_log.query) and a mutation command
// (system.mutations.command).
const (
	tableCanary    = "canary-table-4b1d"
	queryCanary    = "canary-query-9c2e"
	mutationCanary = "canary-mutation-77aa"
	// dictCanary is a value a dictionary failed to load on: ClickHouse
	// quotes it in system.dictionaries.last_exception (and the source).
	dictCanary = "canary-dict-5e10"
	// castCanary is a value in a customer table that a failed cast quoted:
	// the error is in system.query_log.exception and stack traces.
	castCanary = "canary-cast-31c7"
)

var canaries = []string{tableCanary, queryCanary, mutationCanary, dictCanary, castCanary}

func plantCanaries(t testing.TB) *chtest.Server {
	t.Helper()
	s := chtest.Start(t)
	s.Exec(t, "CREATE TABLE IF NOT EXISTS default.secret (x String) ENGINE = Memory")
	s.Exec(t, "INSERT INTO default.secret VALUES ('"+tableCanary+"')")
	s.Exec(t, "CREATE TABLE IF NOT EXISTS default.mt (k UInt8, x String) ENGINE = MergeTree ORDER BY k")
	s.Exec(t, "INSERT INTO default.mt VALUES (1, 'a')")
	s.Exec(t, "ALTER TABLE default.mt UPDATE x = '"+mutationCanary+"' WHERE 1")
	if _, err := s.Query("tether", chtest.Password, "SELECT '"+queryCanary+"'"); err != nil {
		t.Fatalf("logging the query canary: %v", err)
	}
	s.Exec(t, "CREATE TABLE IF NOT EXISTS default.amounts (x String) ENGINE = Memory")
	s.Exec(t, "INSERT INTO default.amounts VALUES ('"+castCanary+"')")
	if _, err := s.QueryWith("default", "", "SELECT toUInt64(x) FROM default.amounts", url.Values{"log_queries": {"1"}}); err == nil || !strings.Contains(err.Error(), castCanary) {
		t.Fatalf("the failed cast did not quote the canary: %v", err)
	}
	s.AddDictionary(t, "cards", fmt.Sprintf(`<dictionary>
  <name>cards</name>
  <source><clickhouse><host>127.0.0.1</host><port>%d</port><user>default</user><password></password>
    <db>default</db><table>mt</table><where>toUInt64('%s') = 1</where></clickhouse></source>
  <lifetime>0</lifetime>
  <layout><flat/></layout>
  <structure><id><name>k</name></id><attribute><name>x</name><type>String</type><null_value></null_value></attribute></structure>
</dictionary>`, s.TCPPort, dictCanary))
	s.Query("default", "", "SYSTEM RELOAD DICTIONARY cards")
	// The query is logged when it finishes, which can be just after its
	// answer reached us: flush until the log has it.
	for deadline := time.Now().Add(20 * time.Second); ; {
		s.Exec(t, "SYSTEM FLUSH LOGS")
		out, _ := s.Query("default", "", "SELECT countIf(query LIKE '%"+queryCanary+"%' AND type = 2), countIf(exception LIKE '%"+castCanary+"%') FROM system.query_log")
		if f := strings.Fields(out); len(f) == 2 && f[0] != "0" && f[1] != "0" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("ClickHouse did not log the canary queries within 20s")
		}
		time.Sleep(100 * time.Millisecond) // polling the query log
	}
	// The oracle works: what the guard denies would find the canaries.
	for _, c := range []struct{ user, sql, want string }{
		{"tether", "SELECT x FROM default.secret", "Code: 291"},
		{"default", "SELECT x FROM default.secret", tableCanary},
		{"tether", "SELECT query FROM system.query_log WHERE query LIKE '%canary-query%'", queryCanary},
		{"default", "SELECT command FROM system.mutations", mutationCanary},
		{"default", "SELECT last_exception FROM system.dictionaries", dictCanary},
		{"default", "SELECT exception FROM system.query_log", castCanary},
	} {
		password := ""
		if c.user == "tether" {
			password = chtest.Password
		}
		out, err := s.Query(c.user, password, c.sql)
		if got := out + fmt.Sprint(err); !strings.Contains(got, c.want) {
			t.Fatalf("canary check %q as %s = %q, want %q in it", c.sql, c.user, got, c.want)
		}
		if v, _ := Check(c.sql); v.Allow {
			t.Fatalf("Check(%q) = allow", c.sql)
		}
	}
	return s
}

// runAllowed runs sql, which the guard allows, as the agent's system-only
// user, which must not reach another database, and as the admin user, which
// sees every row of the system tables; no canary may come back. It reports
// whether the statement ran as the agent's user.
func runAllowed(t testing.TB, s *chtest.Server, sql string) bool {
	t.Helper()
	out, err := s.Query("tether", chtest.Password, sql)
	if err != nil && strings.Contains(err.Error(), "Code: 291") {
		t.Errorf("allowed %q reached a database other than system on ClickHouse: %v", sql, err)
	}
	adminOut, adminErr := s.Query("default", "", sql)
	got := out + fmt.Sprint(err) + adminOut + fmt.Sprint(adminErr)
	for _, c := range canaries {
		if strings.Contains(got, c) {
			t.Errorf("allowed %q returned canary %s", sql, c)
		}
	}
	return err == nil
}

// TestAllowedOnClickHouse runs the allowed corpus on a real ClickHouse (the
// Debian package, 18.16: many modern statements fail to parse there, which
// is fine; what matters is that none reaches the canaries).
func TestAllowedOnClickHouse(t *testing.T) {
	if testing.Short() {
		t.Skip("starts ClickHouse")
	}
	s := plantCanaries(t)
	ran := 0
	for _, sql := range allowedCorpus {
		if runAllowed(t, s, sql) {
			ran++
		}
	}
	t.Logf("%d of %d allowed statements ran on ClickHouse; the others use syntax it predates", ran, len(allowedCorpus))
}

// TestFuzzCorpusOnClickHouse runs every input of a fuzz corpus directory
// that the guard allows on ClickHouse: testdata/fuzz/FuzzCheck by default,
// or SQLGUARD_FUZZ_DIR, e.g. Go's fuzz cache
// ($(go env GOCACHE)/fuzz/github.com/tetherhq/tether/internal/sqlguard/FuzzCheck).
func TestFuzzCorpusOnClickHouse(t *testing.T) {
	dir := os.Getenv("SQLGUARD_FUZZ_DIR")
	if dir == "" {
		dir = filepath.Join("testdata", "fuzz", "FuzzCheck") // the saved corpus; make test runs it
	}
	files, err := filepath.Glob(filepath.Join(dir, "*"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no fuzz inputs in %s: %v", dir, err)
	}
	s := plantCanaries(t)
	allowed, ran := 0, 0
	for _, f := range files {
		sql, ok := readFuzzInput(f)
		if !ok {
			continue
		}
		if v, _ := Check(sql); v.Allow {
			allowed++
			if runAllowed(t, s, sql) {
				ran++
			}
		}
	}
	t.Logf("%d inputs, %d allowed, %d ran without error on ClickHouse", len(files), allowed, ran)
}

// readFuzzInput reads a one-string file in Go's fuzz corpus format.
func readFuzzInput(path string) (string, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", false
	}
	_, body, ok := strings.Cut(string(b), "\n")
	if !ok {
		return "", false
	}
	body = strings.TrimSpace(body)
	if !strings.HasPrefix(body, "string(") || !strings.HasSuffix(body, ")") {
		return "", false
	}
	s, err := strconv.Unquote(body[len("string(") : len(body)-1])
	return s, err == nil
}
