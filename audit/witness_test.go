package audit_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/store"
)

// hookStore runs afterCheckpoint, if set, once a checkpoint is stored,
// before AddCheckpoint returns to the log.
type hookStore struct {
	store.Store
	afterCheckpoint func(audit.StoredCheckpoint)
}

func (s *hookStore) AddCheckpoint(ctx context.Context, c audit.StoredCheckpoint) error {
	if err := s.Store.AddCheckpoint(ctx, c); err != nil {
		return err
	}
	if s.afterCheckpoint != nil {
		s.afterCheckpoint(c)
	}
	return nil
}

// startLog opens and runs a log on st that checkpoints only when asked.
func startLog(t *testing.T, env logEnv, st audit.Storage) *audit.Log {
	t.Helper()
	l, err := audit.OpenLog(context.Background(), audit.LogConfig{Storage: st, Signer: env.signer, CheckpointInterval: time.Hour, VerifyInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return l
}

func recordN(t *testing.T, l *audit.Log, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		if err := l.Record(context.Background(), event(i)); err != nil {
			t.Fatal(err)
		}
	}
}

func checkpointOf(t *testing.T, l *audit.Log) audit.StoredCheckpoint {
	t.Helper()
	c, ok, err := l.Checkpoint(context.Background())
	if err != nil || !ok {
		t.Fatalf("Checkpoint = %v, %v", ok, err)
	}
	return c
}

// TestWitnessCheckpointWhileStoring: a witness asking for the latest
// checkpoint while the log is storing a new one — stored, not yet the
// log's own — gets a checkpoint the log can prove consistent with the one
// it cosigned. Before, the broker served the store's latest checkpoint and
// asked the log for a proof up to it, which the log refused as "beyond the
// latest checkpoint": 500s to agents under load.
func TestWitnessCheckpointWhileStoring(t *testing.T) {
	ctx := context.Background()
	hs := &hookStore{Store: openSQLite(t, filepath.Join(t.TempDir(), "a.db"))}
	env := newEnv(t, hs)
	l := startLog(t, env, hs)
	recordN(t, l, 0, 5)
	first := checkpointOf(t, l)
	recordN(t, l, 5, 5)

	// In the window between the store and the log, as a witness that
	// cosigned the first checkpoint: the two ways the broker has asked.
	ran := false
	hs.afterCheckpoint = func(stored audit.StoredCheckpoint) {
		ran = true
		c, ok, err := l.Latest(ctx)
		if err != nil || !ok {
			t.Errorf("Latest while checkpoint %d is being stored = %v, %v", stored.Size, ok, err)
			return
		}
		p, err := l.ConsistencyProof(ctx, first.Size, c.Size)
		if err != nil {
			t.Errorf("while checkpoint %d is being stored: Latest = %d, ConsistencyProof(%d, %d) = %v", stored.Size, c.Size, first.Size, c.Size, err)
		} else if err := audit.VerifyConsistency(first.Size, c.Size, first.Root, c.Root, p); err != nil {
			t.Errorf("consistency proof %d→%d does not verify: %v", first.Size, c.Size, err)
		}
		c, p, err = l.WitnessCheckpoint(ctx, first.Size)
		if err != nil {
			t.Errorf("WitnessCheckpoint(%d) while checkpoint %d is being stored = %v", first.Size, stored.Size, err)
		} else if c.Size > first.Size {
			if err := audit.VerifyConsistency(first.Size, c.Size, first.Root, c.Root, p); err != nil {
				t.Errorf("WitnessCheckpoint's proof %d→%d does not verify: %v", first.Size, c.Size, err)
			}
		}
	}
	second := checkpointOf(t, l)
	hs.afterCheckpoint = nil
	if !ran || second.Size != 10 {
		t.Fatalf("second checkpoint of size %d (hook ran: %v), want 10", second.Size, ran)
	}
	// Once stored and taken, it is the one served, proven from the first.
	c, p, err := l.WitnessCheckpoint(ctx, first.Size)
	if err != nil || c.Size != second.Size || c.Note != second.Note {
		t.Fatalf("WitnessCheckpoint(%d) = checkpoint %d, %v; want %d", first.Size, c.Size, err, second.Size)
	}
	if err := audit.VerifyConsistency(first.Size, c.Size, first.Root, c.Root, p); err != nil {
		t.Errorf("WitnessCheckpoint's proof %d→%d does not verify: %v", first.Size, c.Size, err)
	}
}

// TestWitnessCheckpointOtherWriter: with two logs sharing a store (two
// brokers), a witness that cosigned, through one, a checkpoint the other
// has not taken in yet is served that checkpoint or a later one by the
// other, not told that it cosigned a checkpoint beyond the log (which
// makes an agent refuse the broker for good); only a size no stored
// checkpoint reaches is refused so.
func TestWitnessCheckpointOtherWriter(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "a.db")
	env := newEnv(t, openSQLite(t, path))
	a := startLog(t, env, env.st)
	b := startLog(t, env, openSQLite(t, path))

	if _, _, err := b.WitnessCheckpoint(ctx, 0); !errors.Is(err, audit.ErrNoCheckpoint) {
		t.Fatalf("WitnessCheckpoint of a log with no checkpoint = %v, want ErrNoCheckpoint", err)
	}
	recordN(t, a, 0, 5)
	first := checkpointOf(t, a)
	if got := checkpointOf(t, b); got.Size != first.Size || got.Root != first.Root {
		t.Fatalf("b's checkpoint = %d, want a's, %d", got.Size, first.Size)
	}
	recordN(t, a, 5, 5)
	second := checkpointOf(t, a)
	if b.LatestSize() != first.Size {
		t.Fatalf("b's latest size = %d before it took in a's checkpoint, want %d", b.LatestSize(), first.Size)
	}
	// The witness cosigned the second through a, and asks b.
	c, p, err := b.WitnessCheckpoint(ctx, second.Size)
	if err != nil || c.Size < second.Size {
		t.Fatalf("b.WitnessCheckpoint(%d) = checkpoint %d, %v; want at least %d", second.Size, c.Size, err, second.Size)
	}
	if c.Size == second.Size && (c.Root != second.Root || len(p) != 0) {
		t.Errorf("b.WitnessCheckpoint(%d) = root %x with %d proof hashes, want a's checkpoint, no proof", second.Size, c.Root, len(p))
	}
	// A witness that cosigned the first is proven the latest from it.
	recordN(t, a, 10, 5)
	third := checkpointOf(t, a)
	c, p, err = b.WitnessCheckpoint(ctx, first.Size)
	if err != nil {
		t.Fatal(err)
	}
	if err := audit.VerifyConsistency(first.Size, c.Size, first.Root, c.Root, p); err != nil {
		t.Errorf("b's proof %d→%d does not verify: %v", first.Size, c.Size, err)
	}
	// A size beyond every stored checkpoint is refused as such.
	if _, _, err := b.WitnessCheckpoint(ctx, third.Size+1); !errors.Is(err, audit.ErrBeyondCheckpoint) {
		t.Errorf("b.WitnessCheckpoint(%d), beyond every stored checkpoint (%d) = %v, want ErrBeyondCheckpoint", third.Size+1, third.Size, err)
	}
}
