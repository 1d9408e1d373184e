// Package sqlitestore is the broker's default
// [github.com/tetherhq/tether/internal/store.Store]: one SQLite
// database file, for a broker that keeps its state to itself. It uses the
// pure-Go modernc.org/sqlite driver, so the broker needs no cgo.
package sqlitestore

import (
	"context"
	"crypto/rand"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
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

// PoolSize is how many connections to the database a store keeps open.
const PoolSize = 8

// Open opens the SQLite database at path, creating it if no file is there,
// and brings its schema up to date. A new file is readable by its owner
// only. A file that is there but is not a Tether store — empty, not
// SQLite, or another application's database — is refused with
// [ErrNotStore], never initialised over.
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

// sqliteHeader starts every SQLite database file.
const sqliteHeader = "SQLite format 3\x00"

// listTables lists a database's tables, leaving out SQLite's own.
const listTables = `SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite!_%' ESCAPE '!' ORDER BY name`

// ErrNotStore reports a file that is not a Tether store: empty, not an
// SQLite database, or an SQLite database without Tether's schema. Open
// refuses it rather than start a new, empty store over it.
var ErrNotStore = errors.New("not a Tether store")

func open(ctx context.Context, path string) (*sqlstore.Store, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	if err := checkDir(filepath.Dir(abs)); err != nil {
		return nil, err
	}
	// A new store is made only where no file is: an existing file that
	// is empty (a restore that failed) or someone else's is refused,
	// never initialised over. The new store is made aside and linked
	// into place once its schema is complete, so that a broker killed
	// while creating it leaves no empty file behind, and brokers
	// creating it at once all open the one that won.
	if _, err := os.Lstat(abs); errors.Is(err, fs.ErrNotExist) {
		if err := create(ctx, abs); err != nil {
			return nil, fmt.Errorf("create a new store: %w", err)
		}
	} else if err != nil {
		return nil, err
	}
	if err := checkFile(abs); err != nil {
		return nil, err
	}
	if err := checkTables(ctx, abs); err != nil {
		return nil, err
	}
	db, err := openDB(ctx, abs)
	if err != nil {
		return nil, err
	}
	s, err := sqlstore.New(ctx, db, dialect())
	if err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// checkTables refuses an SQLite database without Tether's
// schema_migrations, reading it read-only: opening it as the store does
// would switch it to WAL, a change to the file.
func checkTables(ctx context.Context, abs string) error {
	dsn := (&url.URL{Scheme: "file", Path: filepath.ToSlash(abs), RawQuery: url.Values{"mode": {"ro"}, "_busy_timeout": {strconv.Itoa(BusyTimeout)}}.Encode()}).String()
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	tables, err := sqlstore.TableNames(ctx, db, listTables)
	if err != nil {
		return fmt.Errorf("%w: it cannot be read as an SQLite database: %v; restore it from a backup, or move it away to start a new store", ErrNotStore, err)
	}
	if !slices.Contains(tables, "schema_migrations") {
		what := "an SQLite database with no tables"
		if len(tables) > 0 {
			what = fmt.Sprintf("an SQLite database with other tables (%s)", strings.Join(tables[:min(len(tables), 5)], ", "))
		}
		return fmt.Errorf("%w: it is %s: point the broker at Tether's database, restore it from a backup, or move the file away to start a new store", ErrNotStore, what)
	}
	return nil
}

// checkFile refuses a file that is empty or not an SQLite database.
func checkFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	head := make([]byte, len(sqliteHeader))
	n, err := io.ReadFull(f, head)
	switch {
	case n == 0 && (err == io.EOF || err == nil):
		return fmt.Errorf("%w: the file is empty (0 bytes), as a failed restore or a full disk leaves it; restore it from a backup, or remove it to start a new, empty store (every deployment and the audit log would be gone)", ErrNotStore)
	case err != nil && err != io.ErrUnexpectedEOF:
		return err
	case string(head[:n]) != sqliteHeader:
		return fmt.Errorf("%w: the file is not an SQLite database; check the path, restore it from a backup, or move it away to start a new store", ErrNotStore)
	}
	return nil
}

// create makes a new store at path: migrated at a temporary path beside
// it, then hard-linked into place unless another process got there first.
func create(ctx context.Context, path string) error {
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return err
	}
	tmp := fmt.Sprintf("%s.init-%x", path, rnd)
	defer func() {
		for _, p := range []string{tmp, tmp + "-wal", tmp + "-shm", tmp + "-journal"} {
			os.Remove(p)
		}
	}()
	// Create the file here because SQLite would create it with mode 0644
	// (less the umask). SQLite gives the -wal and -shm files it creates
	// later the database file's mode, so they are private too.
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	db, err := openDB(ctx, tmp)
	if err != nil {
		return err
	}
	s, err := sqlstore.New(ctx, db, dialect())
	if err != nil {
		db.Close()
		return err
	}
	// Closing the last connection checkpoints the write-ahead log into
	// the file and removes it: the file is the whole database.
	if err := s.Close(); err != nil {
		return err
	}
	if err := os.Link(tmp, path); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("link the new store into place: %w", err)
	}
	return nil
}

// openDB opens the database file at abs with the broker's settings.
func openDB(ctx context.Context, abs string) (*sql.DB, error) {
	return openDBBusy(ctx, abs, BusyTimeout)
}

// openDBBusy is openDB with SQLite's busy timeout in milliseconds.
func openDBBusy(ctx context.Context, abs string, busyTimeout int) (*sql.DB, error) {
	q := url.Values{}
	// Applied by the driver to every connection it opens, busy timeout
	// first, so that a connection opening while another writes waits
	// instead of failing.
	q.Set("_busy_timeout", strconv.Itoa(busyTimeout))
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

	c, err := newConnector(dsn)
	if err != nil {
		return nil, err
	}
	// Writers take turns in Go, not in SQLite's busy handler (see
	// writeLock).
	db := sql.OpenDB(c)
	// A pool of connections kept open: opening one reads and parses the
	// whole schema, which under load cost more than the queries (with
	// database/sql's default of two idle connections, a broker holding
	// 2,000 agents spent a third of its CPU opening connections). WAL
	// lets them all read at once. The pool is bounded, and no store
	// method needs a second connection while it holds one (a
	// transaction's statements all run on the transaction), so a full
	// pool only makes callers wait their turn.
	db.SetMaxOpenConns(PoolSize)
	db.SetMaxIdleConns(PoolSize)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// dialect is SQLite's [sqlstore.Dialect].
func dialect() sqlstore.Dialect {
	migrations, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		panic(err) // the embedded directory exists
	}
	return sqlstore.Dialect{
		Name:              "sqlite",
		Migrations:        migrations,
		IsUniqueViolation: isUniqueViolation,
		// With _txlock=immediate, beginning a transaction takes the
		// database's write lock: nothing more to lock.
		MigrationLock: "",
		ForUpdate:     "",
		ListTables:    listTables,
	}
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
