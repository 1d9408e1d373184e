package agent

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/audit"
)

// TestSpoolDeliveryBounded: one delivery's events stay under the byte
// budget (the broker refuses a larger body, and a batch that can never
// be delivered would stall the spool for good), and the first event
// always goes.
func TestSpoolDeliveryBounded(t *testing.T) {
	s, err := openSpool(filepath.Join(t.TempDir(), "spool.jsonl"), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	big := strings.Repeat("x", 100<<10)
	for range 30 {
		if err := s.Record(context.Background(), audit.Event{Type: audit.QueryAllowed, Outcome: audit.Success, Details: map[string]any{"sql": big}}); err != nil {
			t.Fatal(err)
		}
	}
	evs, err := s.pending(500, 960<<10)
	if err != nil {
		t.Fatal(err)
	}
	size := 0
	for _, e := range evs {
		size += len(e) + 1
	}
	if len(evs) == 0 || len(evs) >= 30 || size > 960<<10 {
		t.Errorf("pending = %d events, %d bytes; want some, fewer than 30, at most %d bytes", len(evs), size, 960<<10)
	}
	one, err := s.pending(500, 10)
	if err != nil || len(one) != 1 {
		t.Errorf("pending with a budget smaller than one event = %d events, %v; want the first event alone", len(one), err)
	}
}
