package sqlitestore_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/groupcommit"
	"github.com/tetherhq/tether/internal/store"
	"github.com/tetherhq/tether/internal/store/sqlitestore"
	"github.com/tetherhq/tether/internal/store/storetest"
)

func open(t testing.TB, path string) store.Store {
	t.Helper()
	s, err := sqlitestore.Open(t.Context(), path)
	if err != nil {
		t.Fatalf("Open(%q) error = %v", path, err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return open(t, filepath.Join(t.TempDir(), "tether.db"))
	})
}

func TestReopen(t *testing.T) {
	var path string
	storetest.RunReopen(t, func(t *testing.T) func(ctx context.Context) (store.Store, error) {
		path = filepath.Join(t.TempDir(), "tether.db")
		return func(ctx context.Context) (store.Store, error) {
			return sqlitestore.Open(ctx, path)
		}
	})

	// Opened five times, the database has each migration once.
	db, err := sql.Open("sqlite", path)
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

func TestOpenSettings(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tether.db")
	s := open(t, path)
	defer s.Close()
	// A write creates the WAL file, whose mode SQLite copies from the
	// database file's.
	d := store.Deployment{ID: "d", Tenant: "acme", Name: "web", CreatedAt: time.Unix(0, 0)}
	tok := store.PairingToken{Hash: []byte("h"), CreatedAt: time.Unix(0, 0), ExpiresAt: time.Unix(60, 0)}
	if err := s.CreateDeployment(t.Context(), d, tok); err != nil {
		t.Fatalf("CreateDeployment() error = %v", err)
	}
	for _, p := range []string{path, path + "-wal"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != 0o600 {
			t.Errorf("mode of %s = %v, want %v", filepath.Base(p), got, os.FileMode(0o600))
		}
	}

	// The store's foreign keys, busy timeout and synchronous mode are
	// per-connection and checked by the conformance suite's behaviour;
	// the journal mode is recorded in the file.
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var mode string
	if err := db.QueryRowContext(t.Context(), "PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		t.Errorf("PRAGMA journal_mode = %q, %v, want wal", mode, err)
	}
}

func TestOpenBadDirectory(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	readOnly := filepath.Join(dir, "ro")
	if err := os.Mkdir(readOnly, 0o500); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path, wantErrText string
		asNonRoot               bool // root may write anywhere
	}{
		{name: "missing directory", path: filepath.Join(dir, "nope", "tether.db"), wantErrText: "does not exist"},
		{name: "not a directory", path: filepath.Join(file, "tether.db"), wantErrText: "is not a directory"},
		{
			name: "read-only directory", path: filepath.Join(readOnly, "tether.db"), wantErrText: "is not writable",
			asNonRoot: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.asNonRoot && os.Geteuid() == 0 {
				t.Skip("running as root, who may write to read-only directories")
			}
			s, err := sqlitestore.Open(t.Context(), tt.path)
			if err == nil {
				s.Close()
				t.Fatalf("Open(%q) error = nil, want one containing %q", tt.path, tt.wantErrText)
			}
			if !strings.Contains(err.Error(), tt.wantErrText) || !strings.Contains(err.Error(), tt.path) {
				t.Errorf("Open(%q) error = %v, want one naming the path and containing %q", tt.path, err, tt.wantErrText)
			}
		})
	}
}

// BenchmarkRecordHeartbeat measures a heartbeat, an fsync'ed single-row
// update with synchronous=FULL.
func BenchmarkRecordHeartbeat(b *testing.B) {
	s := open(b, filepath.Join(b.TempDir(), "tether.db"))
	defer s.Close()
	ctx := b.Context()
	agentIDs := pairAgents(b, s, 16)
	hb := store.Heartbeat{
		At:        time.Now(),
		Version:   "v1.2.3",
		Uptime:    time.Hour,
		TailnetIP: "100.64.0.7",
		Upstreams: map[string]string{"postgres": "ok", "clickhouse": "ok"},
	}
	for i := 0; b.Loop(); i++ {
		if err := s.RecordHeartbeat(ctx, agentIDs[i%len(agentIDs)], hb); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRecordHeartbeatParallel measures heartbeats from many agents at
// once, which contend for SQLite's one write lock.
func BenchmarkRecordHeartbeatParallel(b *testing.B) {
	s := open(b, filepath.Join(b.TempDir(), "tether.db"))
	defer s.Close()
	ctx := b.Context()
	agentIDs := pairAgents(b, s, 64)
	hb := store.Heartbeat{At: time.Now(), Version: "v1.2.3", Upstreams: map[string]string{"postgres": "ok"}}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for i := 0; pb.Next(); i++ {
			if err := s.RecordHeartbeat(ctx, agentIDs[i%len(agentIDs)], hb); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkGetDeployment measures the lookup behind every agent request.
func BenchmarkGetDeployment(b *testing.B) {
	s := open(b, filepath.Join(b.TempDir(), "tether.db"))
	defer s.Close()
	ctx := b.Context()
	pairAgents(b, s, 16)
	for i := 0; b.Loop(); i++ {
		if _, err := s.GetDeploymentByName(ctx, "acme", fmt.Sprint("web", i%16)); err != nil {
			b.Fatal(err)
		}
	}
}

// pairAgents creates n deployments acme/web0… with an agent each and
// returns the agents' IDs.
func pairAgents(tb testing.TB, s store.Store, n int) []string {
	tb.Helper()
	now := time.Now()
	var ids []string
	for i := range n {
		d := store.Deployment{ID: fmt.Sprint("dep-", i), Tenant: "acme", Name: fmt.Sprint("web", i), CreatedAt: now}
		tok := store.PairingToken{Hash: []byte(d.ID), DeploymentID: d.ID, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
		if err := s.CreateDeployment(tb.Context(), d, tok); err != nil {
			tb.Fatal(err)
		}
		a := store.Agent{ID: fmt.Sprint("agent-", i), PublicKey: []byte("key"), NodeID: "n", NodeName: "node", PairedAt: now}
		if _, err := s.RedeemPairingToken(tb.Context(), tok.Hash, now, a); err != nil {
			tb.Fatal(err)
		}
		ids = append(ids, a.ID)
	}
	return ids
}

// BenchmarkAppendRecords measures the audit log's group commits: one
// fsync'ed transaction per batch.
func BenchmarkAppendRecords(b *testing.B) {
	for _, batch := range []int{64, 512} {
		b.Run(fmt.Sprint("batch=", batch), func(b *testing.B) {
			s := open(b, filepath.Join(b.TempDir(), "tether.db"))
			defer s.Close()
			storetest.BenchAppendRecords(b, s, batch)
		})
	}
}

// TestTwoWritersOneFile: two audit logs on one SQLite file (two
// connection pools), appending concurrently, both succeed and the log
// verifies.
func TestTwoWritersOneFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tether.db")
	storetest.RunTwoWriters(t, func(t *testing.T) store.Store { return open(t, path) })
}

// BenchmarkRecordHeartbeatGroupCommit is BenchmarkRecordHeartbeatParallel
// as the broker writes heartbeats: 2,000 agents' callers at once, each
// answered once durable, group-committed (RecordHeartbeats) into a
// transaction per batch. It reports the commits per heartbeat.
func BenchmarkRecordHeartbeatGroupCommit(b *testing.B) {
	s := open(b, filepath.Join(b.TempDir(), "tether.db"))
	defer s.Close()
	ctx := b.Context()
	agentIDs := pairAgents(b, s, 2000)
	var commits atomic.Int64
	c := groupcommit.New(func(ctx context.Context, hbs []store.AgentHeartbeat) error {
		commits.Add(1)
		return s.RecordHeartbeats(ctx, hbs)
	}, 512)
	defer c.Close()
	hb := store.Heartbeat{At: time.Now(), Version: "v1.2.3", Upstreams: map[string]string{"postgres": "ok"}}
	b.SetParallelism(1000) // many agents at once, as a broker sees them
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for i := 0; pb.Next(); i++ {
			if err := c.Add(ctx, store.AgentHeartbeat{AgentID: agentIDs[i%len(agentIDs)], Heartbeat: hb}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(commits.Load())/float64(b.N), "commits/heartbeat")
}

// TestSharedQueues: two stores on one SQLite file claim each webhook
// delivery once and take each agent challenge once.
func TestSharedQueues(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tether.db")
	storetest.RunSharedQueues(t, func(t *testing.T) store.Store { return open(t, path) })
}

// BenchmarkAddWebhookDeliveries measures a durable webhook enqueue, with
// the webhook's lane nearly empty and full.
func BenchmarkAddWebhookDeliveries(b *testing.B) {
	for _, full := range []bool{false, true} {
		b.Run(fmt.Sprint("full=", full), func(b *testing.B) {
			s := open(b, filepath.Join(b.TempDir(), "tether.db"))
			defer s.Close()
			storetest.BenchAddWebhookDeliveries(b, s, full)
		})
	}
}
