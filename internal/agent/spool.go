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
//
// What the broker acknowledged is remembered in memory, as an offset
// into the file, not cut from the file at once: a delivery costs what it
// carries, not a rewrite of the whole spool. The file is emptied when all
// of it is delivered, and its delivered head cut off once it passes
// compactAt. After a restart the file is delivered from its start, and
// the broker stores nothing twice.
type spool struct {
	path string
	now  func() time.Time

	mu   sync.Mutex // serialises file access; deliveries are serialised by the caller
	f    *os.File
	size int64 // bytes in the file
	off  int64 // bytes of the file the broker acknowledged
	// ends are the offsets after each event the last pending returned,
	// for ack.
	ends []int64
	// dirty is set while events recorded without sync wait for their
	// sync; syncing is the timer that syncs them.
	dirty   bool
	syncing *time.Timer
}

// maxSpoolBytes bounds the spool while the broker is unreachable, so that
// a flood of refused calls cannot fill the disk.
const maxSpoolBytes = 256 << 20

// compactAt is how large the spool's delivered head may grow before it is
// cut from the file.
const compactAt = 4 << 20

// soonSync bounds how long an event recorded without sync may wait for
// its sync: the next synced record syncs it sooner.
const soonSync = 100 * time.Millisecond

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
	keep := bytes.LastIndexByte(b, '\n') + 1
	if keep != len(b) {
		if err := f.Truncate(int64(keep)); err != nil {
			f.Close()
			return nil, fmt.Errorf("audit spool: %w", err)
		}
	}
	return &spool{path: path, now: now, f: f, size: int64(keep)}, nil
}

// Record appends e (stamped with an ID and time) and syncs the file:
// e, and every event written before it, is on disk when Record returns.
func (s *spool) Record(_ context.Context, e audit.Event) error {
	return s.record(e, true)
}

// record is Record; without sync it returns without waiting for the
// disk, and e is synced within soonSync, or sooner by the next synced
// record. That is for events that report what has already happened and
// gate nothing: a query's end, written after its answer left (the
// query's start was recorded, synced, before any of the answer was).
func (s *spool) record(e audit.Event, sync bool) error {
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
	b = append(b, '\n')
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.size+int64(len(b)) > maxSpoolBytes {
		return fmt.Errorf("audit spool %s is full (%d MiB): the broker has not taken events for a long time", s.path, maxSpoolBytes>>20)
	}
	n, err := s.f.Write(b)
	s.size += int64(n)
	if err != nil {
		// A torn line is skipped by pending, and cut at the next start.
		return fmt.Errorf("audit spool: %w", err)
	}
	if !sync {
		s.dirty = true
		if s.syncing == nil {
			s.syncing = time.AfterFunc(soonSync, s.syncSoon)
		}
		return nil
	}
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("audit spool: %w", err)
	}
	s.dirty = false
	return nil
}

// syncSoon syncs the events recorded without sync, unless a synced
// record did since.
func (s *spool) syncSoon() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.syncing = nil
	if s.dirty && s.f.Sync() == nil {
		s.dirty = false
	}
	// On failure the events stay dirty: the next Record syncs them, or
	// fails the call it records, loudly.
}

var _ audit.Recorder = (*spool)(nil)

// pending returns up to max undelivered events, in order, of at most
// maxBytes together (the first always goes, so that the spool moves on).
// A line that does not parse (a torn write) is skipped: it was never
// acknowledged to anyone.
func (s *spool) pending(max, maxBytes int) ([]json.RawMessage, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ends = s.ends[:0]
	var out []json.RawMessage
	size := 0
	at := s.off
	r := bufio.NewReader(io.NewSectionReader(s.f, s.off, s.size-s.off))
	for len(out) < max {
		line, err := r.ReadBytes('\n')
		at += int64(len(line))
		if len(line) > 0 && line[len(line)-1] == '\n' && json.Valid(line) {
			// A delivery stays under the broker's body limit.
			if size += len(line) + 1; len(out) > 0 && size > maxBytes {
				break
			}
			out = append(out, json.RawMessage(bytes.TrimSpace(line)))
			s.ends = append(s.ends, at)
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

// ack marks the first n events the last pending returned as delivered.
// The file is emptied when nothing undelivered is left in it, and its
// delivered head cut off past compactAt.
func (s *spool) ack(n int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n <= 0 || n > len(s.ends) {
		return fmt.Errorf("audit spool: acknowledged %d events of %d delivered", n, len(s.ends))
	}
	s.off = s.ends[n-1]
	s.ends = s.ends[:0]
	switch {
	case s.off == s.size:
		// All delivered: empty the file. Were a crash to undo this, the
		// events would be delivered again, and stored once.
		if err := s.f.Truncate(0); err != nil {
			return fmt.Errorf("audit spool: %w", err)
		}
		s.size, s.off = 0, 0
	case s.off >= compactAt:
		rest := make([]byte, s.size-s.off)
		if _, err := s.f.ReadAt(rest, s.off); err != nil {
			return fmt.Errorf("audit spool: %w", err)
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
		s.f, s.size, s.off = f, int64(len(rest)), 0
		s.dirty = false // WriteFile synced what is kept
	}
	return nil
}

// undelivered is the size of the events not yet delivered and the head
// of the oldest of them (up to n bytes), for the agent's metrics.
func (s *spool) undelivered(n int) (size int64, head []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	head = make([]byte, min(int64(n), s.size-s.off))
	k, _ := s.f.ReadAt(head, s.off)
	return s.size - s.off, head[:k]
}

func (s *spool) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.syncing != nil {
		s.syncing.Stop()
		s.syncing = nil
	}
	var err error
	if s.dirty {
		err = s.f.Sync()
	}
	return errors.Join(err, s.f.Close())
}
