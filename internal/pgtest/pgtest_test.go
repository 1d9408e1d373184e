package pgtest

import (
	"cmp"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestStart(t *testing.T) {
	begin := time.Now()
	dsn := Start(t)
	t.Logf("started PostgreSQL and created a database in %v", time.Since(begin))

	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatalf("pgx.Connect(%q) error = %v", dsn, err)
	}
	defer conn.Close(t.Context())
	var listen, fsync string
	if err := conn.QueryRow(t.Context(), "SELECT current_setting('listen_addresses'), current_setting('fsync')").Scan(&listen, &fsync); err != nil {
		t.Fatal(err)
	}
	if listen != "127.0.0.1" || fsync != "off" {
		t.Errorf("listen_addresses, fsync = %q, %q, want %q, %q", listen, fsync, "127.0.0.1", "off")
	}
}

func TestNewDatabase(t *testing.T) {
	c := StartCluster(t)
	// Each database is separate: a table made in one is not in another.
	for i := range 3 {
		dsn := c.NewDatabase(t)
		conn, err := pgx.Connect(t.Context(), dsn)
		if err != nil {
			t.Fatalf("pgx.Connect(%q) error = %v", dsn, err)
		}
		if _, err := conn.Exec(t.Context(), "CREATE TABLE t (x int)"); err != nil {
			t.Errorf("database %d: CREATE TABLE t error = %v, want none in a new database", i, err)
		}
		// The ordering the store's schema must not depend on.
		var lt bool
		if err := conn.QueryRow(t.Context(), `SELECT 'web10' < 'web-2'`).Scan(&lt); err != nil || !lt {
			t.Errorf("database %d: 'web10' < 'web-2' = %v, %v, want true (a natural-language collation)", i, lt, err)
		}
		conn.Close(t.Context())
	}
}

func TestCompareVersions(t *testing.T) {
	tests := []struct {
		a, b string
		want int // sign
	}{
		{"15", "16", -1},
		{"16", "9.6", 1},
		{"9.6", "9.5", 1},
		{"15", "15", 0},
		{"15", "15.0", 0},
	}
	for _, tt := range tests {
		got := compareVersions(tt.a, tt.b)
		if cmp.Compare(got, 0) != tt.want {
			t.Errorf("compareVersions(%q, %q) = %d, want sign %d", tt.a, tt.b, got, tt.want)
		}
	}
}
