package pgstore_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/pgtest"
	"github.com/tetherhq/tether/internal/store"
	"github.com/tetherhq/tether/internal/store/pgstore"
	"github.com/tetherhq/tether/internal/store/sqlstore"
	"github.com/tetherhq/tether/internal/store/storetest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func open(t testing.TB, dsn string) store.Store {
	t.Helper()
	s, err := pgstore.Open(t.Context(), dsn)
	if err != nil {
		t.Fatalf("Open(%q) error = %v", dsn, err)
	}
	return s
}

func TestConformance(t *testing.T) {
	cluster := pgtest.Shared(t)
	storetest.Run(t, func(t *testing.T) store.Store {
		return open(t, cluster.NewDatabase(t))
	})
}

func TestReopen(t *testing.T) {
	cluster := pgtest.Shared(t)
	var dsn string
	storetest.RunReopen(t, func(t *testing.T) func(ctx context.Context) (store.Store, error) {
		dsn = cluster.NewDatabase(t)
		return func(ctx context.Context) (store.Store, error) {
			return pgstore.Open(ctx, dsn)
		}
	})

	// Opened five times, four of them at once, the database has each
	// migration once.
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n, versions int
	err = db.QueryRowContext(t.Context(), `SELECT COUNT(*), COUNT(DISTINCT version) FROM schema_migrations`).Scan(&n, &versions)
	if err != nil {
		t.Fatalf("count schema_migrations: %v", err)
	}
	migrations, err := filepath.Glob("migrations/*.sql")
	if err != nil {
		t.Fatal(err)
	}
	if n != len(migrations) || versions != n {
		t.Errorf("schema_migrations has %d rows with %d versions, want %d each", n, versions, len(migrations))
	}
}

func TestOpenErrors(t *testing.T) {
	tests := []struct {
		name, dsn   string
		wantErrText string
	}{
		{"unparsable", "postgres://tether:s3cret@127.0.0.1:notaport/db", "cannot parse"},
		// Nothing listens on port 1 of 127.0.0.1.
		{"refused", "postgres://tether:s3cret@127.0.0.1:1/db?sslmode=disable", "tether@127.0.0.1:1/db"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			s, err := pgstore.Open(ctx, tt.dsn)
			if err == nil {
				s.Close()
				t.Fatalf("Open(%q) error = nil, want one containing %q", tt.dsn, tt.wantErrText)
			}
			if !strings.Contains(err.Error(), tt.wantErrText) {
				t.Errorf("Open(%q) error = %v, want one containing %q", tt.dsn, err, tt.wantErrText)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("Open(%q) error = %v, which reveals the password", tt.dsn, err)
			}
		})
	}
}

// BenchmarkAppendRecords measures the audit log's group commits: one
// transaction per batch. The test cluster runs with fsync off: the figures
// leave out the disk.
func BenchmarkAppendRecords(b *testing.B) {
	cluster := pgtest.Shared(b)
	for _, batch := range []int{64, 512} {
		b.Run(fmt.Sprint("batch=", batch), func(b *testing.B) {
			s := open(b, cluster.NewDatabase(b))
			defer s.Close()
			storetest.BenchAppendRecords(b, s, batch)
		})
	}
}

// TestOpenRefusesForeignDatabase: a database holding another
// application's tables and no Tether schema is refused, not migrated
// into; an empty database is initialised.
func TestOpenRefusesForeignDatabase(t *testing.T) {
	cluster := pgtest.Shared(t)
	dsn := cluster.NewDatabase(t)
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(t.Context(), `CREATE TABLE customers (id BIGINT PRIMARY KEY, name TEXT)`); err != nil {
		t.Fatal(err)
	}
	s, err := pgstore.Open(t.Context(), dsn)
	if err == nil {
		s.Close()
		t.Fatal("Open(a database with another application's table) error = nil, want ErrForeignDatabase")
	}
	if !errors.Is(err, sqlstore.ErrForeignDatabase) || !strings.Contains(err.Error(), "customers") {
		t.Errorf("Open(a database with another application's table) error = %v, want ErrForeignDatabase naming customers", err)
	}
	var n int
	if err := db.QueryRowContext(t.Context(), `SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema()`).Scan(&n); err != nil || n != 1 {
		t.Errorf("tables after the refused Open = %d, %v, want only customers", n, err)
	}
	open(t, cluster.NewDatabase(t)).Close()
}

// TestTwoBrokersOneDatabase: two brokers' audit logs on one PostgreSQL
// database, appending concurrently, both succeed and the log verifies.
func TestTwoBrokersOneDatabase(t *testing.T) {
	dsn := pgtest.Shared(t).NewDatabase(t)
	storetest.RunTwoWriters(t, func(t *testing.T) store.Store { return open(t, dsn) })
}

// TestSharedQueues: two stores on one PostgreSQL database, as two brokers
// hold them, claim each webhook delivery once and take each agent
// challenge once.
func TestSharedQueues(t *testing.T) {
	dsn := pgtest.Shared(t).NewDatabase(t)
	storetest.RunSharedQueues(t, func(t *testing.T) store.Store { return open(t, dsn) })
}

// BenchmarkAddWebhookDeliveries measures a durable webhook enqueue, with
// the webhook's lane nearly empty and full. The test cluster runs with
// fsync off: the figures leave out the disk.
func BenchmarkAddWebhookDeliveries(b *testing.B) {
	cluster := pgtest.Shared(b)
	for _, full := range []bool{false, true} {
		b.Run(fmt.Sprint("full=", full), func(b *testing.B) {
			s := open(b, cluster.NewDatabase(b))
			defer s.Close()
			storetest.BenchAddWebhookDeliveries(b, s, full)
		})
	}
}
