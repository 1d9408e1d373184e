package sqlitestore_test

import (
	"bytes"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tetherhq/tether/internal/store/sqlitestore"
)

// TestOpenRefusesNotAStore: a file that is there but is not a Tether
// store is refused with a message saying what to do, and left as it was:
// an empty file (a failed restore) is not taken for a new install, which
// would drop every deployment and the audit log without a word.
func TestOpenRefusesNotAStore(t *testing.T) {
	sqliteWith := func(stmts ...string) func(t *testing.T, path string) {
		return func(t *testing.T, path string) {
			db, err := sql.Open("sqlite", path)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			for _, s := range stmts {
				if _, err := db.Exec(s); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	tests := []struct {
		name     string
		make     func(t *testing.T, path string)
		wantText string
	}{
		{"empty file", func(t *testing.T, path string) {
			if err := os.WriteFile(path, nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}, "the file is empty (0 bytes)"},
		{"not sqlite", func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte("deployments:\n  - acme/prod\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, "not an SQLite database"},
		{"another application's database", sqliteWith(`CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)`, `INSERT INTO customers (name) VALUES ('acme')`),
			"other tables (customers)"},
		{"sqlite without tables", sqliteWith(`CREATE TABLE t (x)`, `DROP TABLE t`), "no tables"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "tether.db")
			tt.make(t, path)
			before, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			s, err := sqlitestore.Open(t.Context(), path)
			if err == nil {
				s.Close()
				t.Fatalf("Open(%s) error = nil, want ErrNotStore", tt.name)
			}
			if !errors.Is(err, sqlitestore.ErrNotStore) || !strings.Contains(err.Error(), tt.wantText) || !strings.Contains(err.Error(), "backup") {
				t.Errorf("Open(%s) error = %v, want ErrNotStore saying %q and how to restore", tt.name, err, tt.wantText)
			}
			after, err := os.ReadFile(path)
			if err != nil || !bytes.Equal(after, before) {
				t.Errorf("Open(%s) changed the file (%d bytes before, %d after, %v)", tt.name, len(before), len(after), err)
			}
		})
	}
}

// TestOpenCreatesOnlyWhereNoFile: a new store is made where no file is,
// and leaves nothing beside it but SQLite's own files.
func TestOpenCreatesOnlyWhereNoFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tether.db")
	open(t, path).Close()
	s := open(t, path) // reopened: a Tether store
	s.Close()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.Contains(e.Name(), ".init-") {
			t.Errorf("creating the store left %s behind", e.Name())
		}
	}
}
