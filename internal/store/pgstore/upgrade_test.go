package pgstore

import (
	"database/sql"
	"fmt"
	"io/fs"
	"testing"
	"testing/fstest"

	"github.com/tetherhq/tether/internal/pgtest"
	"github.com/tetherhq/tether/internal/store/sqlstore"
	"github.com/tetherhq/tether/internal/store/storetest"
)

// TestUpgradeFrom0002 opens a database migrated to 0002_audit.sql, with a
// deployment and audit events in it, and checks that the later
// migrations keep them (and fill in the audit events' actor_tenant).
func TestUpgradeFrom0002(t *testing.T) {
	ctx := t.Context()
	dsn := pgtest.Shared(t).NewDatabase(t)
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	old := fstest.MapFS{}
	for _, name := range []string{"0001_init.sql", "0002_audit.sql"} {
		b, err := fs.ReadFile(migrationFiles, "migrations/"+name)
		if err != nil {
			t.Fatal(err)
		}
		old[name] = &fstest.MapFile{Data: b}
	}
	s, err := sqlstore.New(ctx, db, sqlstore.Dialect{
		Name:              "postgres",
		Migrations:        old,
		IsUniqueViolation: isUniqueViolation,
		MigrationLock:     fmt.Sprintf("SELECT pg_advisory_xact_lock(%d)", int64(migrationLockID)),
		ForUpdate:         " FOR UPDATE",
	})
	if err != nil {
		db.Close()
		t.Fatalf("migrate to 0002: %v", err)
	}
	_, err = db.ExecContext(ctx, `INSERT INTO deployments (id, tenant, name, region, created_at) VALUES ('dep-old', 'acme', 'web', '', 0)`)
	for _, row := range storetest.OldAuditRows(t) {
		if err == nil {
			_, err = db.ExecContext(ctx, storetest.OldAuditInsert, row...)
		}
	}
	s.Close()
	if err != nil {
		t.Fatalf("insert deployment and audit events at 0002: %v", err)
	}

	upgraded, err := Open(ctx, dsn)
	if err != nil {
		t.Fatalf("Open() of a database at 0002: error = %v", err)
	}
	defer upgraded.Close()
	storetest.CheckUpgraded(t, upgraded, "dep-old")
	storetest.CheckUpgradedAudit(t, upgraded)
}
