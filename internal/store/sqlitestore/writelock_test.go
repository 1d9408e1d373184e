package sqlitestore

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/store"
	"github.com/tetherhq/tether/internal/store/sqlstore"
)

func TestMayWrite(t *testing.T) {
	for _, tc := range []struct {
		query string
		want  bool
	}{
		{"SELECT 1", false},
		{"  select\n*", false},
		{"SELECT", false},
		{"-- a comment\n SELECT x FROM y", false},
		{"/* a comment */SELECT(1)", false},
		{"SELECTED", true},
		{"DELETE FROM t WHERE a = $1 RETURNING b", true},
		{"UPDATE t SET a = 1 RETURNING b", true},
		{"INSERT INTO t VALUES (1)", true},
		{"WITH x AS (SELECT 1) DELETE FROM t", true},
		{"PRAGMA wal_checkpoint", true},
		{"-- unterminated", true},
		{"/* unterminated", true},
		{"", true},
	} {
		if got := mayWrite(tc.query); got != tc.want {
			t.Errorf("mayWrite(%q) = %v, want %v", tc.query, got, tc.want)
		}
	}
}

// TestWritersQueueInGo: with SQLite's busy timeout at zero, so that a
// connection finding another's write lock fails at once with "database is
// locked", many goroutines writing at once — transactions, statements
// outside one, a DELETE … RETURNING, a prepared statement in a transaction
// — all succeed, more of them than the pool has connections, while others
// read: writers wait for each other in Go, never in SQLite's busy handler
// (which sleeps up to 100 ms between tries). Without the write lock, this
// fails with SQLITE_BUSY.
func TestWritersQueueInGo(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "tether.db")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	db, err := openDBBusy(ctx, path, 0)
	if err != nil {
		t.Fatal(err)
	}
	s, err := sqlstore.New(ctx, db, dialect())
	if err != nil {
		db.Close()
		t.Fatal(err)
	}
	defer s.Close()

	const goroutines, rounds = 3 * PoolSize, 20
	now := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, goroutines*rounds)
	for g := range goroutines {
		wg.Go(func() {
			for i := range rounds {
				name := fmt.Sprintf("%d-%d", g, i)
				key := sha256.Sum256([]byte(name))
				var err error
				switch g % 4 {
				case 0: // transactions
					_, err = s.PutWeb(ctx, store.WebSession, key[:], []byte(name), now.Add(time.Hour), 1000, now)
				case 1: // a statement outside a transaction
					err = s.AddCosignature(ctx, audit.Cosignature{Size: uint64(i + 1), Witness: name, Note: name, At: now})
				case 2: // a write with RETURNING, outside a transaction
					if _, err = s.PutWeb(ctx, store.WebPending, key[:], []byte(name), now.Add(time.Hour), 1000, now); err == nil {
						_, _, err = s.TakeWeb(ctx, store.WebPending, key[:], now)
					}
				case 3: // prepared statements in a transaction, and reads
					if err = s.AddCosignatures(ctx, []audit.Cosignature{{Size: uint64(i + 1), Witness: name + "a", Note: name, At: now}, {Size: uint64(i + 1), Witness: name + "b", Note: name, At: now}}); err == nil {
						_, err = s.Cosignatures(ctx, 0, rounds)
					}
				}
				if err != nil {
					errs <- fmt.Errorf("goroutine %d, round %d: %w", g, i, err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	n := 0
	for err := range errs {
		if n++; n <= 5 {
			t.Error(err)
		}
	}
	if n > 5 {
		t.Errorf("… and %d more errors", n-5)
	}
	cs, err := s.Cosignatures(ctx, 0, rounds)
	if err != nil {
		t.Fatal(err)
	}
	if want := (goroutines / 4) * rounds * 3; n == 0 && len(cs) != want {
		t.Errorf("%d cosignatures stored, want %d", len(cs), want)
	}
}
