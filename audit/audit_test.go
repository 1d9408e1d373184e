package audit

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestFileLog(t *testing.T) {
	p := filepath.Join(t.TempDir(), "audit.jsonl")
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	l, err := OpenFile(p, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			if err := l.Record(ctx, Event{Type: AuthFailed, Outcome: Failure, Reason: "test"}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(p)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, want 0600", fi.Mode().Perm())
	}
	raw, _ := os.ReadFile(p)
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	if len(lines) != 50 {
		t.Fatalf("got %d lines, want 50", len(lines))
	}
	ids := map[string]bool{}
	for _, line := range lines {
		var e Event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		if e.Version != SchemaVersion || e.Type != AuthFailed || !e.Time.Equal(now) || len(e.ID) != 36 || e.ID[14] != '7' {
			t.Errorf("event = %+v, want v%d auth.failed at %v with a UUIDv7", e, SchemaVersion, now)
		}
		ids[e.ID] = true
	}
	if len(ids) != 50 {
		t.Errorf("%d distinct IDs, want 50", len(ids))
	}
	// Reopening appends.
	l, _ = OpenFile(p, nil)
	l.Record(ctx, Event{Type: AgentPaired})
	l.Close()
	raw, _ = os.ReadFile(p)
	if n := strings.Count(string(raw), "\n"); n != 51 {
		t.Errorf("after reopen %d lines, want 51", n)
	}
}
