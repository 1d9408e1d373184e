package agent

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tetherhq/tether/audit"
)

// The journal is the customer's own record of the calls this agent served
// or refused, kept in its state dir independently of the broker: the audit
// spool is delivered to the vendor and is the authority for the vendor's
// audit log, while the journal stays on the customer's host, where
// 'agent journal' reads it. It is appended to, flushed to the OS with each
// line (not fsynced: a crash may lose its last lines, never the spool's),
// rotated at journalMaxBytes and kept to journalFiles files. A journal
// that cannot be written is logged and never fails or delays a call.
const (
	journalName     = "journal.jsonl"
	journalMaxBytes = 16 << 20 // rotate the current file beyond this
	journalFiles    = 4        // the current file and three rotated ones

	maxJournalStatement = 16 << 10 // a longer statement is cut, marked "…"
	maxJournalReason    = 4 << 10
)

// JournalEntry is one call of the agent's journal: what the customer's
// host knows about a call it served or refused.
type JournalEntry struct {
	Time    time.Time     `json:"time"`
	Type    audit.Type    `json:"type"` // query.allowed, query.finished, query.denied, prom.allowed, prom.denied or auth.failed
	Outcome audit.Outcome `json:"outcome"`
	// Engineer is the grant's subject (empty when the call was refused
	// before a grant was read).
	Engineer  string `json:"engineer,omitempty"`
	GrantID   string `json:"grant_id,omitempty"`
	RequestID string `json:"request_id,omitempty"` // the access request the grant was issued for
	Source    string `json:"source,omitempty"`     // the calling broker's tailnet address
	// Statement is the SQL, or the Prometheus endpoint and its query
	// (or the target of a refused Prometheus call), or the path a
	// refused grant was presented to.
	Statement  string `json:"statement,omitempty"`
	QueryID    string `json:"query_id,omitempty"`
	Rows       *int64 `json:"rows,omitempty"`
	Bytes      *int64 `json:"bytes,omitempty"`
	DurationMS *int64 `json:"duration_ms,omitempty"`
	Reason     string `json:"reason,omitempty"` // why the call was refused or failed
	// Approvers are the customer approvers whose proofs the agent
	// verified for the grant (their e-mail, else their subject), and
	// Permit the customer's standing permit it was served under; empty
	// when the agent enforces no customer approval.
	Approvers []string `json:"approvers,omitempty"`
	Permit    string   `json:"permit,omitempty"`
	// BreakGlass marks a break-glass grant, served without customer
	// approval because the customer allows them (or refused because the
	// customer does not).
	BreakGlass bool `json:"break_glass,omitempty"`
}

// journal appends the call events of the agent to its journal files.
type journal struct {
	dir      string
	maxBytes int64
	files    int
	log      *slog.Logger

	mu      sync.Mutex
	f       *os.File // nil until the first entry, and after a failure
	size    int64
	failing bool // the last write failed: logged once until one succeeds
}

func newJournal(dir string, log *slog.Logger) *journal {
	return &journal{dir: dir, maxBytes: journalMaxBytes, files: journalFiles, log: log}
}

// journalEntry is e as the journal records it, and false for an event
// that is not about a call.
func journalEntry(t time.Time, e audit.Event) (JournalEntry, bool) {
	switch e.Type {
	case audit.QueryAllowed, audit.QueryDenied, audit.QueryFinished, audit.PromAllowed, audit.PromDenied, audit.AuthFailed, audit.BreakglassUsed:
	default:
		return JournalEntry{}, false
	}
	j := JournalEntry{
		Time: t.UTC(), Type: e.Type, Outcome: e.Outcome, GrantID: e.GrantID, RequestID: e.RequestID,
		Source: e.Source.IP, Reason: cut(e.Reason, maxJournalReason),
	}
	if !strings.HasPrefix(e.Actor.Subject, "agent:") {
		j.Engineer = e.Actor.Subject
	}
	d := e.Details
	str := func(k string) string { s, _ := d[k].(string); return s }
	switch {
	case str("sql") != "":
		j.Statement = str("sql")
	case str("endpoint") != "":
		j.Statement = str("endpoint")
		if p, ok := d["params"].(url.Values); ok {
			if q := p.Get("query"); q != "" {
				j.Statement += " " + q
			} else if m := p["match[]"]; len(m) > 0 {
				j.Statement += " " + strings.Join(m, " ")
			}
		}
	case str("target") != "":
		j.Statement = strings.TrimSpace(str("method") + " " + str("target"))
	case str("path") != "":
		j.Statement = strings.TrimSpace(str("method") + " " + str("path"))
	}
	j.Statement = cut(j.Statement, maxJournalStatement)
	j.QueryID = str("query_id")
	j.Rows, j.Bytes, j.DurationMS = number(d["result_rows"]), number(d["bytes"]), number(d["duration_ms"])
	j.Approvers, j.Permit = stringList(d["approvers"]), str("permit")
	j.BreakGlass, _ = d["break_glass"].(bool)
	return j, true
}

// stringList is v as a list of strings, whether it holds them as such or,
// read back from JSON, as values.
func stringList(v any) []string {
	switch v := v.(type) {
	case []string:
		return v
	case []any:
		var out []string
		for _, x := range v {
			if s, ok := x.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// number is v as an int64 when it is an integer (or a JSON number).
func number(v any) *int64 {
	var n int64
	switch v := v.(type) {
	case int:
		n = int64(v)
	case int64:
		n = v
	case uint64:
		n = int64(v)
	case float64:
		n = int64(v)
	case json.Number:
		i, err := v.Int64()
		if err != nil {
			return nil
		}
		n = i
	default:
		return nil
	}
	return &n
}

// append records e in the journal when it is about a call. A nil journal
// records nothing. It never fails: the journal is the customer's copy,
// and the spool remains the authority on whether a call may go on.
func (j *journal) append(t time.Time, e audit.Event) {
	if j == nil {
		return
	}
	entry, ok := journalEntry(t, e)
	if !ok {
		return
	}
	line, err := json.Marshal(entry)
	if err != nil {
		j.fail(err)
		return
	}
	line = append(line, '\n')
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := j.write(line); err != nil {
		if j.f != nil {
			j.f.Close()
			j.f = nil
		}
		j.fail(err)
		return
	}
	if j.failing {
		j.failing = false
		j.log.Info("the agent's journal is written again", "dir", j.dir)
	}
}

func (j *journal) fail(err error) {
	if !j.failing {
		j.failing = true
		j.log.Error("could not write the agent's journal; calls go on, recorded in the audit spool only", "dir", j.dir, "err", err)
	}
}

// write appends line, opening the current file (and rotating it when
// full) first. j.mu is held.
func (j *journal) write(line []byte) error {
	if j.f == nil {
		if err := j.open(); err != nil {
			return err
		}
	}
	if j.size > 0 && j.size+int64(len(line)) > j.maxBytes {
		j.f.Close()
		j.f = nil
		if err := j.rotate(); err != nil {
			return err
		}
		if err := j.open(); err != nil {
			return err
		}
	}
	n, err := j.f.Write(line)
	j.size += int64(n)
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	return nil
}

func (j *journal) open() error {
	f, err := os.OpenFile(filepath.Join(j.dir, journalName), os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("journal: %w", err)
	}
	j.f, j.size = f, st.Size()
	// A crash mid-write may have left a torn last line: start on a line
	// of our own (the reader skips the torn one).
	last := make([]byte, 1)
	if j.size > 0 {
		if _, err := f.ReadAt(last, j.size-1); err == nil && last[0] != '\n' {
			n, _ := f.Write([]byte{'\n'})
			j.size += int64(n)
		}
	}
	return nil
}

// rotate shifts journal.N.jsonl to N+1, the oldest out, and the current
// file to journal.1.jsonl.
func (j *journal) rotate() error {
	paths := journalPaths(j.dir, j.files)
	if err := os.Remove(paths[0]); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("journal rotation: %w", err)
	}
	for i := 1; i < len(paths); i++ {
		if err := os.Rename(paths[i], paths[i-1]); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("journal rotation: %w", err)
		}
	}
	return nil
}

// journalPaths lists the journal's files oldest first: journal.N-1.jsonl
// … journal.1.jsonl, then journal.jsonl.
func journalPaths(dir string, files int) []string {
	var ps []string
	for i := files - 1; i >= 1; i-- {
		ps = append(ps, filepath.Join(dir, "journal."+strconv.Itoa(i)+".jsonl"))
	}
	return append(ps, filepath.Join(dir, journalName))
}

// ReadJournal calls fn with each entry of the journal in stateDir,
// oldest first, whose time is not before since. It returns how many
// lines it skipped because they were not entries (a line torn by a
// crash). A state dir that does not exist is an error; one with no
// journal yet has no entries.
func ReadJournal(stateDir string, since time.Time, fn func(JournalEntry) error) (skipped int, err error) {
	st, err := os.Stat(stateDir)
	if err != nil {
		return 0, fmt.Errorf("state dir: %w (give the agent's --state-dir)", err)
	}
	if !st.IsDir() {
		return 0, fmt.Errorf("state dir %s is not a directory (give the agent's --state-dir)", stateDir)
	}
	for _, p := range journalPaths(stateDir, journalFiles) {
		n, err := readJournalFile(p, since, fn)
		skipped += n
		if err != nil {
			return skipped, err
		}
	}
	return skipped, nil
}

func readJournalFile(path string, since time.Time, fn func(JournalEntry) error) (skipped int, err error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("journal: %w", err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 64<<10)
	for {
		line, err := r.ReadBytes('\n')
		if len(line) > 0 {
			var e JournalEntry
			if json.Unmarshal(line, &e) != nil || e.Time.IsZero() {
				skipped++
			} else if !e.Time.Before(since) {
				if err := fn(e); err != nil {
					return skipped, err
				}
			}
		}
		if err == io.EOF {
			return skipped, nil
		}
		if err != nil {
			return skipped, fmt.Errorf("journal %s: %w", path, err)
		}
	}
}
