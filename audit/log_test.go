package audit_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"golang.org/x/mod/sumdb/note"
	_ "modernc.org/sqlite"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/pgtest"
	"github.com/tetherhq/tether/internal/store"
	"github.com/tetherhq/tether/internal/store/pgstore"
	"github.com/tetherhq/tether/internal/store/sqlitestore"
)

type logEnv struct {
	st     store.Store
	signer note.Signer
	vkey   string
}

func newEnv(t testing.TB, st store.Store) logEnv {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	origin := audit.OriginFor(pub)
	s, err := audit.NewSigner(origin, priv)
	if err != nil {
		t.Fatal(err)
	}
	vkey, err := audit.VerifierKey(origin, pub)
	if err != nil {
		t.Fatal(err)
	}
	return logEnv{st: st, signer: s, vkey: vkey}
}

func openSQLite(t testing.TB, path string) store.Store {
	st, err := sqlitestore.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// runLog opens and runs a log until the returned stop is called.
func runLog(t testing.TB, env logEnv) (*audit.Log, func()) {
	l, err := audit.OpenLog(context.Background(), audit.LogConfig{Storage: env.st, Signer: env.signer, CheckpointInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
		}
	}
	t.Cleanup(stop)
	return l, stop
}

func event(i int) audit.Event {
	return audit.Event{Type: audit.AuthFailed, Outcome: audit.Failure, Reason: fmt.Sprintf("event %d", i),
		Actor: audit.Actor{Subject: "tester"}, Details: map[string]any{"i": i}}
}

// TestLogConcurrentAppendsVerify: concurrent writers share commits; every
// acknowledged event is in an export that verifies.
func TestLogConcurrentAppendsVerify(t *testing.T) {
	env := newEnv(t, openSQLite(t, filepath.Join(t.TempDir(), "a.db")))
	l, stop := runLog(t, env)
	ctx := context.Background()
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for i := range 25 {
				if err := l.Record(ctx, event(w*100+i)); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	var buf bytes.Buffer
	from, to, err := l.Export(ctx, &buf, audit.ExportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if from != 0 || to != 400 {
		t.Fatalf("Export range = [%d,%d), want [0,400)", from, to)
	}
	lv, _ := audit.NewVerifier(env.vkey)
	rep, err := audit.Verify(bytes.NewReader(buf.Bytes()), audit.VerifyOptions{Log: lv})
	if err != nil {
		t.Fatalf("Verify(export) = %v", err)
	}
	if rep.Events != 400 || rep.Types[audit.AuthFailed] != 400 {
		t.Errorf("report = %+v, want 400 auth.failed events", rep)
	}
	// A partial export, by time, verifies too.
	recs, _ := env.st.Records(ctx, audit.Filter{FromIndex: 200, ToIndex: 201})
	buf.Reset()
	if from, _, err = l.Export(ctx, &buf, audit.ExportOptions{Since: recs[0].Time}); err != nil || from == 0 {
		t.Fatalf("partial Export = from %d, %v", from, err)
	}
	if _, err := audit.Verify(bytes.NewReader(buf.Bytes()), audit.VerifyOptions{Log: lv}); err != nil {
		t.Errorf("Verify(partial export from %d) = %v", from, err)
	}
	stop()
	if err := l.Record(ctx, event(0)); err != audit.ErrClosed {
		t.Errorf("Record after stop = %v, want ErrClosed", err)
	}
}

// TestLogRefusesModifiedStore: changing a stored event, or deleting one,
// after it was checkpointed keeps the log from opening.
func TestLogRefusesModifiedStore(t *testing.T) {
	for _, tt := range []struct {
		name, sql, want string
	}{
		{"edited", "", "event 3"},
		{"deleted", `DELETE FROM audit_events WHERE idx >= 7`, "events were deleted"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "a.db")
			st := openSQLite(t, path)
			env := newEnv(t, st)
			l, stop := runLog(t, env)
			for i := range 10 {
				if err := l.Record(context.Background(), event(i)); err != nil {
					t.Fatal(err)
				}
			}
			if _, _, err := l.Checkpoint(context.Background()); err != nil {
				t.Fatal(err)
			}
			stop()
			st.Close()
			db, err := sql.Open("sqlite", path)
			if err != nil {
				t.Fatal(err)
			}
			// Recompute the leaf hash too, as a careful forger would.
			q := tt.sql
			if tt.name == "edited" {
				h := audit.LeafHash([]byte(`{"v":1}`))
				if _, err := db.Exec(`UPDATE audit_events SET data = ?, leaf_hash = ? WHERE idx = 3`, []byte(`{"v":1}`), h[:]); err != nil {
					t.Fatal(err)
				}
			} else if _, err := db.Exec(q); err != nil {
				t.Fatal(err)
			}
			db.Close()
			env.st = openSQLite(t, path)
			_, err = audit.OpenLog(context.Background(), audit.LogConfig{Storage: env.st, Signer: env.signer})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("OpenLog after the store was %s = %v, want %q", tt.name, err, tt.want)
			}
		})
	}
}

// TestRecordDelivered: delivered events keep their IDs and are stored once.
func TestRecordDelivered(t *testing.T) {
	env := newEnv(t, openSQLite(t, filepath.Join(t.TempDir(), "a.db")))
	l, _ := runLog(t, env)
	ctx := context.Background()
	var es []audit.Event
	for i := range 5 {
		e := event(i)
		if err := audit.Stamp(&e, time.Now()); err != nil {
			t.Fatal(err)
		}
		es = append(es, e)
	}
	if n, err := l.RecordDelivered(ctx, es[:3]); err != nil || n != 3 {
		t.Fatalf("RecordDelivered(3) = %d, %v", n, err)
	}
	// Redelivery of all five, with a duplicate inside the batch.
	if n, err := l.RecordDelivered(ctx, append(es, es[4])); err != nil || n != 2 {
		t.Fatalf("RecordDelivered(again) = %d, %v; want 2 new", n, err)
	}
	recs, _ := env.st.Records(ctx, audit.Filter{})
	if len(recs) != 5 {
		t.Fatalf("stored %d records, want 5", len(recs))
	}
	for i, r := range recs {
		if r.ID != es[i].ID {
			t.Errorf("record %d has ID %s, want %s", i, r.ID, es[i].ID)
		}
	}
	if _, err := l.RecordDelivered(ctx, []audit.Event{{ID: uuid.NewString()}}); err == nil {
		t.Error("RecordDelivered accepted an invalid event")
	}
}

// BenchmarkLogAppend64 measures durable appends through the group commit
// with 64 concurrent writers: one event each per Record, acknowledged
// only once stored (SQLite: synchronous=FULL).
func BenchmarkLogAppend64(b *testing.B) {
	b.Run("sqlite", func(b *testing.B) {
		benchAppend(b, openSQLite(b, filepath.Join(b.TempDir(), "a.db")))
	})
	b.Run("postgres", func(b *testing.B) {
		st, err := pgstore.Open(context.Background(), pgtest.Start(b))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { st.Close() })
		benchAppend(b, st)
	})
}

func benchAppend(b *testing.B, st store.Store) {
	env := newEnv(b, st)
	l, _ := runLog(b, env)
	ctx := context.Background()
	var next atomic.Int64
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				if err := l.Record(ctx, event(0)); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
}
