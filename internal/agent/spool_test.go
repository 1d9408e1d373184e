package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/chtest"
)

// TestSpoolDeliveryBounded: one delivery's events stay under the byte
// budget (the broker refuses a larger body, and a batch that can never
// be delivered would stall the spool for good), and the first event
// always goes.
func TestSpoolDeliveryBounded(t *testing.T) {
	s := mustOpenSpool(t, filepath.Join(t.TempDir(), "spool.jsonl"))
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

// mustOpenSpool opens the spool at path.
func mustOpenSpool(t *testing.T, path string) *spool {
	t.Helper()
	s, err := openSpool(path, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// spoolEvent records one numbered event.
func spoolEvent(t *testing.T, s *spool, i int, soon bool) {
	t.Helper()
	e := audit.Event{Type: audit.QueryFinished, Outcome: audit.Success, Reason: fmt.Sprint("n", i)}
	if err := s.record(e, !soon); err != nil {
		t.Fatal(err)
	}
}

// pendingReasons delivers up to max events and returns their reasons.
func pendingReasons(t *testing.T, s *spool, max int) []string {
	t.Helper()
	evs, err := s.pending(max, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, raw := range evs {
		var e audit.Event
		if err := json.Unmarshal(raw, &e); err != nil {
			t.Fatal(err)
		}
		out = append(out, e.Reason)
	}
	return out
}

// TestSpoolAckKeepsTheFile: acknowledging a delivery moves an offset; it
// does not rewrite the spool (the old ack read and rewrote the whole file
// each time, a cost that grew with the spool); events recorded meanwhile
// are delivered next, in order; a spool delivered to its end is emptied.
func TestSpoolAckKeepsTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "spool.jsonl")
	s := mustOpenSpool(t, path)
	defer s.close()
	for i := range 5 {
		spoolEvent(t, s, i, false)
	}
	before, _ := os.Stat(path)
	if got := pendingReasons(t, s, 3); !slices.Equal(got, []string{"n0", "n1", "n2"}) {
		t.Fatalf("first delivery = %v", got)
	}
	spoolEvent(t, s, 5, true) // recorded while the delivery was on its way
	if err := s.ack(3); err != nil {
		t.Fatal(err)
	}
	after, _ := os.Stat(path)
	if !os.SameFile(before, after) || after.Size() < before.Size() {
		t.Errorf("the spool file was rewritten by an ack")
	}
	if got := pendingReasons(t, s, 10); !slices.Equal(got, []string{"n3", "n4", "n5"}) {
		t.Fatalf("second delivery = %v, want n3 n4 n5", got)
	}
	if size, head := s.undelivered(spoolHead); size == 0 || !bytes.Contains(head, []byte(`"n3"`)) {
		t.Errorf("undelivered = %d bytes, head %q; want n3 first", size, head)
	}
	if err := s.ack(3); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Size() != 0 {
		t.Errorf("a spool delivered to its end holds %d bytes, want 0", fi.Size())
	}
	spoolEvent(t, s, 6, false)
	if got := pendingReasons(t, s, 10); !slices.Equal(got, []string{"n6"}) {
		t.Errorf("after emptying, delivery = %v, want n6", got)
	}
	if err := s.ack(2); err == nil {
		t.Error("ack of more events than were delivered: no error")
	}
}

// TestSpoolRestartDeliversAgain: after a restart the spool is delivered
// from the start of its file, including events acknowledged before it
// that were not cut from it yet; the broker stores each ID once.
func TestSpoolRestartDeliversAgain(t *testing.T) {
	path := filepath.Join(t.TempDir(), "spool.jsonl")
	s := mustOpenSpool(t, path)
	for i := range 3 {
		spoolEvent(t, s, i, false)
	}
	pendingReasons(t, s, 2)
	if err := s.ack(2); err != nil {
		t.Fatal(err)
	}
	spoolEvent(t, s, 3, true)
	if err := s.close(); err != nil {
		t.Fatal(err)
	}
	s = mustOpenSpool(t, path)
	defer s.close()
	if got := pendingReasons(t, s, 10); !slices.Equal(got, []string{"n0", "n1", "n2", "n3"}) {
		t.Errorf("after a restart, delivery = %v, want all four again", got)
	}
}

// TestSpoolCompacts: once the delivered head passes compactAt it is cut
// from the file, and what was not delivered stays, in order.
func TestSpoolCompacts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "spool.jsonl")
	s := mustOpenSpool(t, path)
	defer s.close()
	big := strings.Repeat("x", 64<<10)
	n := compactAt/(64<<10) + 2
	for i := range n {
		if err := s.Record(context.Background(), audit.Event{Type: audit.QueryAllowed, Outcome: audit.Success, Reason: fmt.Sprint("n", i), Details: map[string]any{"sql": big}}); err != nil {
			t.Fatal(err)
		}
	}
	delivered := 0
	for delivered < n-1 {
		evs, err := s.pending(min(50, n-1-delivered), 1<<30)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.ack(len(evs)); err != nil {
			t.Fatal(err)
		}
		delivered += len(evs)
	}
	fi, _ := os.Stat(path)
	if fi.Size() > compactAt/2 {
		t.Errorf("after delivering all but one event the file holds %d bytes; want its delivered head cut", fi.Size())
	}
	if got := pendingReasons(t, s, 10); !slices.Equal(got, []string{fmt.Sprint("n", n-1)}) {
		t.Errorf("after compaction, delivery = %v, want the last event", got)
	}
}

// TestSpoolUnsyncedRecordSyncs: an event recorded without sync is
// delivered like any other, and synced within soonSync without another
// record.
func TestSpoolUnsyncedRecordSyncs(t *testing.T) {
	s := mustOpenSpool(t, filepath.Join(t.TempDir(), "spool.jsonl"))
	defer s.close()
	spoolEvent(t, s, 0, true)
	dirty := func() bool { s.mu.Lock(); defer s.mu.Unlock(); return s.dirty }
	if !dirty() {
		t.Fatal("a record without sync synced at once")
	}
	deadline := time.Now().Add(10 * soonSync)
	for dirty() && time.Now().Before(deadline) {
		time.Sleep(soonSync / 10)
	}
	if dirty() {
		t.Errorf("an event recorded without sync was not synced within %v", 10*soonSync)
	}
	spoolEvent(t, s, 1, true)
	spoolEvent(t, s, 2, false) // a synced record syncs what was recorded before it
	if dirty() {
		t.Error("a synced record left an earlier unsynced event unsynced")
	}
	if got := pendingReasons(t, s, 10); !slices.Equal(got, []string{"n0", "n1", "n2"}) {
		t.Errorf("delivery = %v", got)
	}
}

// TestNoAnswerBeforeTheRecord: a query whose query.allowed cannot be
// spooled (the spool is full, the disk failed) gets no answer at all —
// 503 audit_unavailable — and the query is answered once the spool takes
// events again.
func TestNoAnswerBeforeTheRecord(t *testing.T) {
	ch := chtest.Start(t)
	la := newLimitsAgent(t, Upstreams{ClickHouseURL: ch.URL, ClickHouseUser: "tether", ClickHousePassword: chtest.Password}, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tok := la.grant(t, "g-full")
	s := la.a.spool
	s.mu.Lock()
	kept := s.size
	s.size = maxSpoolBytes // as if full
	s.mu.Unlock()
	ans := la.do(ctx, t, call{tok: tok, sql: "SELECT 4242"})
	if ans.status != http.StatusServiceUnavailable || ans.code != "audit_unavailable" || strings.Contains(ans.body, "4242") {
		t.Errorf("a query with the spool full = %d %s %q; want 503 audit_unavailable and no answer", ans.status, ans.code, ans.body)
	}
	s.mu.Lock()
	s.size = kept
	s.mu.Unlock()
	ans = la.do(ctx, t, call{tok: tok, sql: "SELECT 4242"})
	if ans.status != http.StatusOK || !strings.Contains(ans.body, "4242") {
		t.Errorf("with the spool back = %d %q; want the answer", ans.status, ans.body)
	}
}
