package agent

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/audit"
)

// readJournal is every entry of the journal in dir, oldest first.
func readJournal(t *testing.T, dir string) []JournalEntry {
	t.Helper()
	var out []JournalEntry
	skipped, err := ReadJournal(dir, time.Time{}, func(e JournalEntry) error { out = append(out, e); return nil })
	if err != nil {
		t.Fatalf("ReadJournal: %v", err)
	}
	if skipped != 0 {
		t.Errorf("ReadJournal skipped %d lines, want 0", skipped)
	}
	return out
}

// TestJournalRecordsCalls: a served, a denied and a refused call each
// leave their entry in the agent's journal, with the engineer, grant,
// request, statement and outcome; an event about no call leaves none.
func TestJournalRecordsCalls(t *testing.T) {
	prom := newHeldProm(t)
	la := newLimitsAgent(t, Upstreams{PrometheusURL: prom.URL}, 0)
	dir := la.a.cfg.StateDir
	la.a.journal = newJournal(dir, la.a.log)
	tok := la.grant(t, "g-journal")

	if st, _, body := promGet(t, la, tok, "/api/v1/query?query=up"); st != http.StatusOK {
		t.Fatalf("served call: status %d, %s", st, body)
	}
	if st, _, body := promGet(t, la, tok, "/api/v1/admin/tsdb/snapshot"); st != http.StatusForbidden {
		t.Fatalf("denied call: status %d, %s", st, body)
	}
	if st, _, body := promGet(t, la, "not-a-grant", "/api/v1/query?query=up"); st == http.StatusOK {
		t.Fatalf("refused grant: status %d, %s", st, body)
	}
	la.a.RecordEvent(t.Context(), audit.Event{Type: audit.GrantExpired, Outcome: audit.Success})

	got := readJournal(t, dir)
	if len(got) != 3 {
		t.Fatalf("journal = %+v, want 3 entries (served, denied, refused)", got)
	}
	served, denied, refused := got[0], got[1], got[2]
	for _, c := range []struct {
		name            string
		e               JournalEntry
		typ             audit.Type
		outcome         audit.Outcome
		engineer, grant string
		statement       string
		reason          bool
	}{
		{"served", served, audit.PromAllowed, audit.Success, "eng@vendor.example", "g-journal", "/api/v1/query up", false},
		{"denied", denied, audit.PromDenied, audit.Failure, "eng@vendor.example", "g-journal", "GET /api/v1/admin/tsdb/snapshot", true},
		{"refused", refused, audit.AuthFailed, audit.Failure, "", "", "/v1/prometheus/api/v1/query", true},
	} {
		e := c.e
		if e.Type != c.typ || e.Outcome != c.outcome || e.Engineer != c.engineer || e.GrantID != c.grant || e.Statement != c.statement || (e.Reason != "") != c.reason || e.Time.IsZero() {
			t.Errorf("%s call: journal entry %+v, want type %s, outcome %s, engineer %q, grant %q, statement %q, a reason %v",
				c.name, e, c.typ, c.outcome, c.engineer, c.grant, c.statement, c.reason)
		}
	}
	if served.RequestID != "req-g-journal" {
		t.Errorf("served call: request ID %q, want req-g-journal", served.RequestID)
	}
}

// TestJournalFailureDoesNotFailCalls: a journal that cannot be written
// (here its file is a directory) leaves the call served and the audit
// spool complete.
func TestJournalFailureDoesNotFailCalls(t *testing.T) {
	prom := newHeldProm(t)
	la := newLimitsAgent(t, Upstreams{PrometheusURL: prom.URL}, 0)
	dir := la.a.cfg.StateDir
	if err := os.Mkdir(filepath.Join(dir, journalName), 0o700); err != nil {
		t.Fatal(err)
	}
	la.a.journal = newJournal(dir, la.a.log)
	tok := la.grant(t, "g-broken-journal")
	for i := range 2 {
		if st, _, body := promGet(t, la, tok, "/api/v1/query?query=up"); st != http.StatusOK {
			t.Fatalf("call %d with a broken journal: status %d, %s; want 200", i, st, body)
		}
	}
	if n := len(la.events(t)); n != 2 {
		t.Errorf("spooled %d events, want 2 (prom.allowed per call)", n)
	}
}

// TestJournalRotates: beyond its bound the journal rotates, keeps its
// newest files only, and reads back oldest first; --since filters.
func TestJournalRotates(t *testing.T) {
	dir := t.TempDir()
	j := newJournal(dir, testLogger(t))
	j.maxBytes = 1 << 10
	start := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	const n = 200
	for i := range n {
		j.append(start.Add(time.Duration(i)*time.Minute), audit.Event{
			Type: audit.QueryAllowed, Outcome: audit.Success, GrantID: fmt.Sprintf("g-%03d", i),
			Actor: audit.Actor{Subject: "eng@vendor.example"}, Details: map[string]any{"sql": "SELECT 1"},
		})
	}
	for _, p := range journalPaths(dir, journalFiles) {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatalf("journal file: %v", err)
		}
		if st.Size() > j.maxBytes {
			t.Errorf("%s is %d bytes, over the bound %d", p, st.Size(), j.maxBytes)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, fmt.Sprintf("journal.%d.jsonl", journalFiles))); !os.IsNotExist(err) {
		t.Errorf("a journal file beyond the %d kept: %v", journalFiles, err)
	}
	got := readJournal(t, dir)
	if len(got) == 0 || len(got) >= n {
		t.Fatalf("journal kept %d entries of %d, want the newest few", len(got), n)
	}
	for i, e := range got {
		if want := fmt.Sprintf("g-%03d", n-len(got)+i); e.GrantID != want {
			t.Fatalf("entry %d: grant %s, want %s (the newest, in order)", i, e.GrantID, want)
		}
	}
	var since []JournalEntry
	if _, err := ReadJournal(dir, start.Add((n-3)*time.Minute), func(e JournalEntry) error { since = append(since, e); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(since) != 3 || since[0].GrantID != fmt.Sprintf("g-%03d", n-3) {
		t.Errorf("since the last 3 minutes: %+v, want the last 3 entries", since)
	}
	if _, err := ReadJournal(filepath.Join(dir, "nope"), time.Time{}, func(JournalEntry) error { return nil }); err == nil || !strings.Contains(err.Error(), "--state-dir") {
		t.Errorf("ReadJournal of a missing state dir = %v, want an error naming --state-dir", err)
	}
}

// TestJournalEntry: what the journal takes from each kind of call event,
// ClickHouse's rows, bytes and duration included.
func TestJournalEntry(t *testing.T) {
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	eng := audit.Actor{Subject: "eng@vendor.example"}
	long := strings.Repeat("x", maxJournalStatement+10)
	for _, tt := range []struct {
		name string
		e    audit.Event
		want JournalEntry
		ok   bool
	}{
		{"query finished", audit.Event{Type: audit.QueryFinished, Outcome: audit.Success, Actor: eng, GrantID: "g", RequestID: "r",
			Details: map[string]any{"query_id": "q1", "result_rows": uint64(7), "bytes": int64(120), "duration_ms": int64(3)}},
			JournalEntry{Type: audit.QueryFinished, Outcome: audit.Success, Engineer: eng.Subject, GrantID: "g", RequestID: "r", QueryID: "q1", Rows: ptr(7), Bytes: ptr(120), DurationMS: ptr(3)}, true},
		{"query denied", audit.Event{Type: audit.QueryDenied, Outcome: audit.Failure, Actor: eng, Reason: "no", Details: map[string]any{"sql": "SELECT * FROM t"}},
			JournalEntry{Type: audit.QueryDenied, Outcome: audit.Failure, Engineer: eng.Subject, Statement: "SELECT * FROM t", Reason: "no"}, true},
		{"prom series", audit.Event{Type: audit.PromAllowed, Outcome: audit.Success, Actor: eng,
			Details: map[string]any{"endpoint": "/api/v1/series", "params": url.Values{"match[]": {"up", "go_info"}}}},
			JournalEntry{Type: audit.PromAllowed, Outcome: audit.Success, Engineer: eng.Subject, Statement: "/api/v1/series up go_info"}, true},
		{"long statement cut", audit.Event{Type: audit.QueryAllowed, Outcome: audit.Success, Details: map[string]any{"sql": long}},
			JournalEntry{Type: audit.QueryAllowed, Outcome: audit.Success, Statement: long[:maxJournalStatement] + "…"}, true},
		{"agent's own refusal", audit.Event{Type: audit.AuthFailed, Outcome: audit.Failure, Actor: audit.Actor{Subject: "agent:x"}, Details: map[string]any{"method": "POST", "path": "/v1/revoke"}},
			JournalEntry{Type: audit.AuthFailed, Outcome: audit.Failure, Statement: "POST /v1/revoke"}, true},
		{"approved", audit.Event{Type: audit.QueryAllowed, Outcome: audit.Success, Actor: eng, Details: map[string]any{"sql": "SELECT 1", "approvers": []string{"a@acme.test", "b@acme.test"}}},
			JournalEntry{Type: audit.QueryAllowed, Outcome: audit.Success, Engineer: eng.Subject, Statement: "SELECT 1", Approvers: []string{"a@acme.test", "b@acme.test"}}, true},
		{"under a permit, read back from JSON", audit.Event{Type: audit.PromAllowed, Outcome: audit.Success, Actor: eng, Details: map[string]any{"endpoint": "/api/v1/query", "approvers": []any{"a@acme.test"}, "permit": "p-1"}},
			JournalEntry{Type: audit.PromAllowed, Outcome: audit.Success, Engineer: eng.Subject, Statement: "/api/v1/query", Approvers: []string{"a@acme.test"}, Permit: "p-1"}, true},
		{"break-glass", audit.Event{Type: audit.BreakglassUsed, Outcome: audit.Success, Actor: eng, GrantID: "g", Reason: "served", Details: map[string]any{"break_glass": true}},
			JournalEntry{Type: audit.BreakglassUsed, Outcome: audit.Success, Engineer: eng.Subject, GrantID: "g", Reason: "served", BreakGlass: true}, true},
		{"not a call", audit.Event{Type: audit.AgentPaired}, JournalEntry{}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := journalEntry(at, tt.e)
			if tt.ok {
				tt.want.Time = at
			}
			if ok != tt.ok || fmt.Sprintf("%+v", deref(got)) != fmt.Sprintf("%+v", deref(tt.want)) {
				t.Errorf("journalEntry(%s) = %+v, %v; want %+v, %v", tt.name, deref(got), ok, deref(tt.want), tt.ok)
			}
		})
	}
}

func ptr(n int64) *int64 { return &n }

// deref is e with its numbers shown, for comparing and printing.
func deref(e JournalEntry) string {
	n := func(p *int64) string {
		if p == nil {
			return "-"
		}
		return fmt.Sprint(*p)
	}
	rows, bytes, dur := n(e.Rows), n(e.Bytes), n(e.DurationMS)
	e.Rows, e.Bytes, e.DurationMS = nil, nil, nil
	return fmt.Sprintf("%+v rows=%s bytes=%s duration_ms=%s", e, rows, bytes, dur)
}
