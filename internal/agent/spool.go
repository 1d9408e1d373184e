package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/tetherhq/tether/audit"
	"github.com/tetherhq/tether/internal/config"
)

// spool is the agent's local audit spool: events the agent records are
// appended and fsynced here first, then delivered to the broker with their
// IDs, so that a broker outage or an agent restart loses none; the broker
// stores each ID once, so a redelivery after a lost acknowledgement stores
// nothing twice.
type spool struct {
	path string
	now  func() time.Time

	mu sync.Mutex // serialises file access; deliveries are serialised by the caller
	f  *os.File
}

// maxSpoolBytes bounds the spool while the broker is unreachable, so that
// a flood of refused calls cannot fill the disk.
const maxSpoolBytes = 256 << 20

func openSpool(path string, now func() time.Time) (*spool, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit spool: %w", err)
	}
	// A crash mid-write leaves a torn last line that was never
	// acknowledged: cut it off, so the next event starts on its own line.
	b, err := os.ReadFile(path)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("audit spool: %w", err)
	}
	if keep := bytes.LastIndexByte(b, '\n') + 1; keep != len(b) {
		if err := f.Truncate(int64(keep)); err != nil {
			f.Close()
			return nil, fmt.Errorf("audit spool: %w", err)
		}
	}
	return &spool{path: path, now: now, f: f}, nil
}

// Record appends e (stamped with an ID and time) and syncs the file.
func (s *spool) Record(_ context.Context, e audit.Event) error {
	if err := audit.Stamp(&e, s.now()); err != nil {
		return err
	}
	if err := e.Validate(); err != nil {
		return fmt.Errorf("audit spool: %w", err)
	}
	b, err := e.Marshal()
	if err != nil {
		return fmt.Errorf("audit spool: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if fi, err := s.f.Stat(); err == nil && fi.Size()+int64(len(b)) > maxSpoolBytes {
		return fmt.Errorf("audit spool %s is full (%d MiB): the broker has not taken events for a long time", s.path, maxSpoolBytes>>20)
	}
	if _, err := s.f.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("audit spool: %w", err)
	}
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("audit spool: %w", err)
	}
	return nil
}

var _ audit.Recorder = (*spool)(nil)

// pending returns up to max spooled events, in order. A line that does not
// parse (a torn last write after a crash) is skipped: it was never
// acknowledged to anyone.
func (s *spool) pending(max, maxBytes int) ([]json.RawMessage, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, err := os.Open(s.path)
	if err != nil {
		return nil, fmt.Errorf("audit spool: %w", err)
	}
	defer f.Close()
	var out []json.RawMessage
	size := 0
	r := bufio.NewReader(f)
	for len(out) < max {
		line, err := r.ReadBytes('\n')
		if len(line) > 0 && line[len(line)-1] == '\n' && json.Valid(line) {
			// A delivery stays under the broker's body limit; the first
			// event always goes, so that the spool moves on.
			if size += len(line) + 1; len(out) > 0 && size > maxBytes {
				break
			}
			out = append(out, json.RawMessage(bytes.TrimSpace(line)))
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("audit spool: %w", err)
		}
	}
	return out, nil
}

// ack removes the first n delivered events, keeping any appended since.
func (s *spool) ack(n int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, err := os.ReadFile(s.path)
	if err != nil {
		return fmt.Errorf("audit spool: %w", err)
	}
	rest := b
	for i := 0; i < n; {
		j := bytes.IndexByte(rest, '\n')
		if j < 0 {
			rest = nil
			break
		}
		if json.Valid(rest[:j+1]) {
			i++
		}
		rest = rest[j+1:]
	}
	if err := config.WriteFile(s.path, rest, 0o600); err != nil {
		return err
	}
	// The old descriptor points at the replaced file: reopen.
	s.f.Close()
	f, err := os.OpenFile(s.path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("audit spool: %w", err)
	}
	s.f = f
	return nil
}

func (s *spool) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.f.Close()
}
