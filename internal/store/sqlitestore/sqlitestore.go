// Package sqlitestore is the broker's default
// [github.com/tetherhq/tether/internal/store.Store]: one SQLite
// database file, for a broker that keeps its state to itself. It uses the
// pure-Go modernc.org/sqlite driver, so the broker needs no cgo.
package sqlitestore

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/tetherhq/tether/internal/store/sqlstore"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// BusyTimeout is how long, in milliseconds, a statement waits for another
// connection's write lock before it fails with SQLITE_BUSY.
const BusyTimeout = 5000

// Open opens the SQLite database at path, creating it if need be, and
// brings its schema up to date. A new file is readable by its owner only.
// The directory must be writable: SQLite keeps its write-ahead log and
// shared-memory index beside the database.
func Open(ctx context.Context, path string) (*sqlstore.Store, error) {
	// Switching a new database to WAL needs its exclusive lock, and SQLite
	// answers SQLITE_BUSY at once, without waiting out the busy timeout,
	// when another process is opening or migrating it at that moment.
	// Retry then, for as long as the busy timeout.
	deadline := time.Now().Add(BusyTimeout * time.Millisecond)
	for attempt := 1; ; attempt++ {
		s, err := open(ctx, path)
		if err == nil {
			return s, nil
		}
		if !isBusy(err) || time.Now().After(deadline) {
			return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("open sqlite store %s: %w", path, ctx.Err())
		case <-time.After(time.Duration(attempt) * 10 * time.Millisecond):
		}
	}
}

func isBusy(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_BUSY
}

func open(ctx context.Context, path string) (*sqlstore.Store, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	if err := checkDir(filepath.Dir(abs)); err != nil {
		return nil, err
	}
	// Create the file here because SQLite would create it with mode 0644
	// (less the umask). SQLite gives the -wal and -shm files it creates
	// later the database file's mode, so they are private too.
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}

	q := url.Values{}
	// Applied by the driver to every connection it opens, busy timeout
	// first, so that a connection opening while another writes waits
	// instead of failing.
	q.Set("_busy_timeout", strconv.Itoa(BusyTimeout))
	q.Set("_foreign_keys", "on")
	// WAL lets readers go on while one connection writes.
	q.Set("_journal_mode", "WAL")
	// FULL, not NORMAL, although NORMAL is safe from corruption with WAL:
	// with NORMAL a power cut can lose the last transactions committed,
	// and one of them may have redeemed a one-time pairing token or
	// revoked an agent, which must not come back. FULL costs an fsync
	// per commit, which the rate of pairings and heartbeats affords.
	q.Set("_synchronous", "FULL")
	// Every transaction takes the write lock when it begins rather than
	// on its first write, so that two transactions never both read and
	// then fail to upgrade to writing (an SQLITE_BUSY that busy_timeout
	// cannot wait out). sqlstore relies on this to serialise migrations
	// and pairings.
	q.Set("_txlock", "immediate")
	dsn := (&url.URL{Scheme: "file", Path: filepath.ToSlash(abs), RawQuery: q.Encode()}).String()

	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, err
	}
	migrations, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		db.Close()
		return nil, err
	}
	s, err := sqlstore.New(ctx, db, sqlstore.Dialect{
		Name:              "sqlite",
		Migrations:        migrations,
		IsUniqueViolation: isUniqueViolation,
		// With _txlock=immediate, beginning a transaction takes the
		// database's write lock: nothing more to lock.
		MigrationLock: "",
		ForUpdate:     "",
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// checkDir returns an error saying what is wrong if dir is not a directory
// SQLite can create files in.
func checkDir(dir string) error {
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("directory %s does not exist", dir)
	}
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	// Try it: permission bits do not tell about root, ACLs or read-only
	// file systems.
	probe, err := os.CreateTemp(dir, ".tether-write-check-*")
	if err != nil {
		return fmt.Errorf("directory %s is not writable: %w", dir, err)
	}
	probe.Close()
	return os.Remove(probe.Name())
}

func isUniqueViolation(err error) bool {
	var e *sqlite.Error
	if !errors.As(err, &e) {
		return false
	}
	return e.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || e.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
}
