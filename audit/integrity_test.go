package audit_test

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

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tetherhq/tether/audit"
)

// The attacks below are made as someone with write access to the
// broker's database would: with SQL, on the SQLite file the log uses.

// recordTen records ten events, the fourth of them a breakglass.used of
// grant "g-1", and signs a checkpoint over them.
func recordTen(t *testing.T, l *audit.Log) {
	t.Helper()
	for i := range 10 {
		e := event(i)
		if i == 3 {
			e = audit.Event{Type: audit.BreakglassUsed, Outcome: audit.Success, GrantID: "g-1", RequestID: "r-1",
				Deployment: "d-1", Actor: audit.Actor{Subject: "mallory@vendor.test"}}
		}
		if err := l.Record(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := l.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// editSQL runs query on the SQLite file at path, beside any open store.
func editSQL(t *testing.T, path, query string, args ...any) {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	res, err := db.Exec(query, args...)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		t.Fatalf("%s changed no row", query)
	}
}

// The attacks on event 3, the breakglass.used.
var columnEdits = []struct{ name, sql string }{
	{"type", `UPDATE audit_events SET type = 'auth.failed' WHERE idx = 3`},
	{"subject", `UPDATE audit_events SET subject = 'tester' WHERE idx = 3`},
	{"grant_id", `UPDATE audit_events SET grant_id = '' WHERE idx = 3`},
	{"actor_tenant", `UPDATE audit_events SET actor_tenant = 'globex' WHERE idx = 3`},
	{"request_id", `UPDATE audit_events SET request_id = 'r-2' WHERE idx = 3`},
	{"deployment", `UPDATE audit_events SET deployment = 'd-2' WHERE idx = 3`},
	{"time", `UPDATE audit_events SET time_ms = time_ms - 86400000 WHERE idx = 3`},
	{"id", `UPDATE audit_events SET id = '0190aaaa-0000-7000-8000-000000000001' WHERE idx = 3`},
}

// TestSearchRefusesEditedColumns: a record whose searched columns were
// changed in the database is never handed out: reading it fails with an
// error naming the event, counted and recorded as audit.verify_failed.
func TestSearchRefusesEditedColumns(t *testing.T) {
	for _, tt := range columnEdits {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "a.db")
			env := newEnv(t, openSQLite(t, path))
			reg := prometheus.NewRegistry()
			l, err := audit.OpenLog(context.Background(), audit.LogConfig{Storage: env.st, Signer: env.signer, Registerer: reg, VerifyInterval: -1})
			if err != nil {
				t.Fatal(err)
			}
			runOpened(t, l)
			recordTen(t, l)
			editSQL(t, path, tt.sql)

			_, err = l.Records(context.Background(), audit.Filter{})
			var te *audit.TamperError
			if !errors.As(err, &te) || te.Index != 3 || !strings.Contains(err.Error(), "event 3") || !strings.Contains(err.Error(), tt.name) {
				t.Fatalf("Records after editing column %s = %v, want a TamperError naming event 3 and the column", tt.name, err)
			}
			if got := counter(t, reg, "tether_audit_verify_failures_total"); got != 1 {
				t.Errorf("tether_audit_verify_failures_total = %v, want 1", got)
			}
			// The event about it is searchable (it does not match the
			// edited record's filter).
			evs, err := l.Records(context.Background(), audit.Filter{Type: audit.VerifyFailed})
			if err != nil || len(evs) != 1 || !strings.Contains(string(evs[0].Data), "event 3") {
				t.Errorf("audit.verify_failed events = %v, %v; want one naming event 3", evs, err)
			}
		})
	}
}

// TestStartRefusesEditedStore: start-up reads the newest events in full:
// an edit of an event's data alone, or of a column searches read, keeps
// the log from opening, with a message naming the event.
func TestStartRefusesEditedStore(t *testing.T) {
	edits := append([]struct{ name, sql string }{
		{"data", `UPDATE audit_events SET data = CAST(replace(CAST(data AS TEXT), '"outcome":"success"', '"outcome":"failure"') AS BLOB) WHERE idx = 3`},
	}, columnEdits...)
	for _, tt := range edits {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "a.db")
			env := newEnv(t, openSQLite(t, path))
			l, stop := runLog(t, env)
			recordTen(t, l)
			stop()
			env.st.Close()
			editSQL(t, path, tt.sql)
			env.st = openSQLite(t, path)
			_, err := audit.OpenLog(context.Background(), audit.LogConfig{Storage: env.st, Signer: env.signer})
			if !errors.Is(err, audit.ErrTampered) || !strings.Contains(err.Error(), "event 3") {
				t.Errorf("OpenLog after editing %s = %v, want a refusal naming event 3", tt.name, err)
			}
		})
	}
}

// TestStartChecksSignedRoot: a forger who rewrites an event, its leaf
// hash and the stored checkpoint roots is caught by the checkpoint's
// signature, which the log checks when it has its verifier.
func TestStartChecksSignedRoot(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.db")
	env := newEnv(t, openSQLite(t, path))
	l, stop := runLog(t, env)
	recordTen(t, l)
	stop()
	env.st.Close()

	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	var data []byte
	if err := db.QueryRow(`SELECT data FROM audit_events WHERE idx = 3`).Scan(&data); err != nil {
		t.Fatal(err)
	}
	data = []byte(strings.Replace(string(data), `"outcome":"success"`, `"outcome":"failure"`, 1))
	h := audit.LeafHash(data)
	if _, err := db.Exec(`UPDATE audit_events SET data = ?, leaf_hash = ? WHERE idx = 3`, data, h[:]); err != nil {
		t.Fatal(err)
	}
	rows, err := db.Query(`SELECT leaf_hash FROM audit_events ORDER BY idx`)
	if err != nil {
		t.Fatal(err)
	}
	tree := audit.NewTree()
	for rows.Next() {
		var lh []byte
		if err := rows.Scan(&lh); err != nil {
			t.Fatal(err)
		}
		tree.Append([32]byte(lh))
	}
	rows.Close()
	root := tree.Root()
	if _, err := db.Exec(`UPDATE audit_checkpoints SET root = ? WHERE size = 10`, root[:]); err != nil {
		t.Fatal(err)
	}
	db.Close()

	env.st = openSQLite(t, path)
	// With only the stored roots to go by, the forgery holds up.
	if _, err := audit.OpenLog(context.Background(), audit.LogConfig{Storage: env.st, Signer: env.signer}); err != nil {
		t.Fatalf("OpenLog without a verifier = %v; the test's forgery is broken", err)
	}
	lv, _ := audit.NewVerifier(env.vkey)
	_, err = audit.OpenLog(context.Background(), audit.LogConfig{Storage: env.st, Signer: env.signer, Verifier: lv})
	if !errors.Is(err, audit.ErrTampered) || !strings.Contains(err.Error(), "checkpoint 10") {
		t.Errorf("OpenLog with the verifier = %v, want a refusal naming checkpoint 10", err)
	}
}

// TestBackgroundVerifierFindsHiddenEvent: an event whose columns were
// edited so that no search returns it any more, an event whose data alone
// was changed, and a rewritten event with its leaf hash recomputed are
// all found by the background verifier while the broker runs: metric,
// audit.verify_failed event.
func TestBackgroundVerifierFindsHiddenEvent(t *testing.T) {
	for _, tt := range []struct {
		name  string
		edit  func(t *testing.T, path string)
		found string
	}{
		{"hidden by type", func(t *testing.T, path string) {
			editSQL(t, path, `UPDATE audit_events SET type = 'auth.failed', grant_id = '', request_id = '' WHERE idx = 3`)
		}, "event 3"},
		{"data alone", func(t *testing.T, path string) {
			editSQL(t, path, `UPDATE audit_events SET data = CAST(replace(CAST(data AS TEXT), '"outcome":"success"', '"outcome":"failure"') AS BLOB) WHERE idx = 3`)
		}, "event 3"},
		{"data and leaf hash", func(t *testing.T, path string) {
			db, err := sql.Open("sqlite", path)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			var data []byte
			if err := db.QueryRow(`SELECT data FROM audit_events WHERE idx = 3`).Scan(&data); err != nil {
				t.Fatal(err)
			}
			data = []byte(strings.Replace(string(data), `"outcome":"success"`, `"outcome":"failure"`, 1))
			h := audit.LeafHash(data)
			if _, err := db.Exec(`UPDATE audit_events SET data = ?, leaf_hash = ? WHERE idx = 3`, data, h[:]); err != nil {
				t.Fatal(err)
			}
		}, "checkpoint 10"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "a.db")
			env := newEnv(t, openSQLite(t, path))
			reg := prometheus.NewRegistry()
			lv, _ := audit.NewVerifier(env.vkey)
			l, err := audit.OpenLog(context.Background(), audit.LogConfig{
				Storage: env.st, Signer: env.signer, Verifier: lv, Registerer: reg,
				VerifyInterval: 5 * time.Millisecond, VerifyStep: 4,
			})
			if err != nil {
				t.Fatal(err)
			}
			runOpened(t, l)
			recordTen(t, l)
			if got, err := l.Records(context.Background(), audit.Filter{Type: audit.BreakglassUsed}); err != nil || len(got) != 1 {
				t.Fatalf("search for breakglass.used before the edit = %d records, %v", len(got), err)
			}
			tt.edit(t, path)
			if tt.name == "hidden by type" {
				// Searches no longer return it: only the sweep can tell.
				if got, err := l.Records(context.Background(), audit.Filter{Type: audit.BreakglassUsed}); err != nil || len(got) != 0 {
					t.Fatalf("search for breakglass.used after the edit = %d records, %v; the test's edit is broken", len(got), err)
				}
			}
			deadline := time.Now().Add(10 * time.Second)
			for {
				evs, err := l.Records(context.Background(), audit.Filter{Type: audit.VerifyFailed})
				if err != nil {
					t.Fatal(err)
				}
				if len(evs) > 0 {
					if !strings.Contains(string(evs[0].Data), tt.found) || !strings.Contains(string(evs[0].Data), `"found_by":"sweep"`) {
						t.Errorf("audit.verify_failed = %s, want it to name %s, found by the sweep", evs[0].Data, tt.found)
					}
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the background verifier recorded no audit.verify_failed within 10s")
				}
				time.Sleep(5 * time.Millisecond)
			}
			if got := counter(t, reg, "tether_audit_verify_failures_total"); got < 1 {
				t.Errorf("tether_audit_verify_failures_total = %v, want at least 1", got)
			}
		})
	}
}

// TestBackgroundVerifierPasses: on an untouched log the verifier
// completes passes and finds nothing.
func TestBackgroundVerifierPasses(t *testing.T) {
	env := newEnv(t, openSQLite(t, filepath.Join(t.TempDir(), "a.db")))
	reg := prometheus.NewRegistry()
	lv, _ := audit.NewVerifier(env.vkey)
	l, err := audit.OpenLog(context.Background(), audit.LogConfig{
		Storage: env.st, Signer: env.signer, Verifier: lv, Registerer: reg,
		CheckpointInterval: 5 * time.Millisecond, VerifyInterval: time.Millisecond, VerifyStep: 3,
	})
	if err != nil {
		t.Fatal(err)
	}
	runOpened(t, l)
	for i := range 30 {
		if err := l.Record(context.Background(), event(i)); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for counter(t, reg, "tether_audit_verify_passes_total") < 2 {
		if time.Now().After(deadline) {
			t.Fatal("no two verification passes within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := counter(t, reg, "tether_audit_verify_failures_total"); got != 0 {
		t.Errorf("tether_audit_verify_failures_total = %v on an untouched log, want 0", got)
	}
}

// counter returns the value of a registered counter.
func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("metric %s is not registered", name)
	return 0
}

// runOpened runs an opened log until the test ends.
func runOpened(t *testing.T, l *audit.Log) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// TestOpenLogCost measures start-up on 100,000 events (go test -run
// OpenLogCost -v, with TETHER_AUDIT_COST=1): the stored leaf hashes only,
// against every event read in full.
func TestOpenLogCost(t *testing.T) {
	if testing.Short() || os.Getenv("TETHER_AUDIT_COST") == "" {
		t.Skip("a measurement: set TETHER_AUDIT_COST=1")
	}
	const n = 100_000
	env := newEnv(t, openSQLite(t, filepath.Join(t.TempDir(), "a.db")))
	l, stop := runLog(t, env)
	batch := make([]audit.Event, 0, 1000)
	for i := range n {
		e := event(i)
		e.GrantID, e.RequestID, e.Deployment = fmt.Sprintf("g-%d", i%97), fmt.Sprintf("r-%d", i%97), "d-1"
		e.Details["query"] = "SELECT name, value FROM system.settings WHERE changed ORDER BY name LIMIT 100"
		batch = append(batch, e)
		if len(batch) == cap(batch) {
			if err := l.RecordAll(context.Background(), batch...); err != nil {
				t.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	stop()
	lv, _ := audit.NewVerifier(env.vkey)
	for _, sv := range []int{-1, n} {
		start := time.Now()
		if _, err := audit.OpenLog(context.Background(), audit.LogConfig{Storage: env.st, Signer: env.signer, Verifier: lv, StartupVerify: sv}); err != nil {
			t.Fatal(err)
		}
		t.Logf("OpenLog of %d events, StartupVerify %d: %v", n, sv, time.Since(start))
	}
}
