// Package pgstore is the [github.com/tetherhq/tether/internal/store.Store]
// for several brokers sharing one PostgreSQL database. It talks to
// PostgreSQL with pgx through database/sql.
package pgstore

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/tetherhq/tether/internal/store/sqlstore"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// ConnectTimeout bounds establishing a connection, from dialing to
// authentication, when the DSN does not set connect_timeout.
const ConnectTimeout = 10 * time.Second

// PoolSize is how many connections to PostgreSQL a store keeps open at
// most. No store method needs a second connection while it holds one, so
// a full pool only makes callers wait their turn.
const PoolSize = 16

// migrationLockID is the key of the advisory lock serialising migrations:
// "tether" in ASCII, followed by 1.
const migrationLockID = 0x7465746865720001

// Open connects to the PostgreSQL database dsn names and brings its schema
// up to date. dsn is a URL (postgres://user:password@host:port/database?…)
// or key=value pairs, as libpq takes them; the PG* environment variables
// fill in what it leaves out.
func Open(ctx context.Context, dsn string) (*sqlstore.Store, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		// pgx's error holds the DSN with the password redacted.
		return nil, fmt.Errorf("open postgres store: %w", err)
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = ConnectTimeout
	}
	where := fmt.Sprintf("%s@%s:%d/%s", cfg.User, cfg.Host, cfg.Port, cfg.Database)
	db := stdlib.OpenDB(*cfg)
	// Bounded: database/sql opens as many connections as callers ask for
	// at once, and a broker holding 2,000 agents asked for more than the
	// server allows (max_connections is 100 by default), which then
	// refused the broker's other work ("too many clients"). Kept open,
	// since opening one costs a round trip or more. Several brokers share
	// the server: PoolSize each.
	db.SetMaxOpenConns(PoolSize)
	db.SetMaxIdleConns(PoolSize)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open postgres store %s: %w", where, err)
	}
	migrations, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open postgres store %s: %w", where, err)
	}
	s, err := sqlstore.New(ctx, db, sqlstore.Dialect{
		Name:              "postgres",
		Migrations:        migrations,
		IsUniqueViolation: isUniqueViolation,
		// Held until the migration's transaction ends, so a broker that
		// dies mid-migration cannot leave it taken.
		MigrationLock: fmt.Sprintf("SELECT pg_advisory_xact_lock(%d)", int64(migrationLockID)),
		ForUpdate:     " FOR UPDATE",
		InsertRows:    100,
		ListTables:    `SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() ORDER BY table_name`,
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open postgres store %s: %w", where, err)
	}
	return s, nil
}

func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505" // unique_violation
}
