package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/google/uuid"
)

// FileLog appends events to a file as JSON lines, fsyncing each.
type FileLog struct {
	mu  sync.Mutex
	f   *os.File
	now func() time.Time
}

var _ Recorder = (*FileLog)(nil)

// OpenFile opens (creating, mode 0600) the JSON-lines log at path.
func OpenFile(path string, now func() time.Time) (*FileLog, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	if now == nil {
		now = time.Now
	}
	return &FileLog{f: f, now: now}, nil
}

// Record fills in the version, ID and time, appends e and syncs the file.
func (l *FileLog) Record(ctx context.Context, e Event) error {
	e.Version = SchemaVersion
	id, err := uuid.NewV7()
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	e.ID = id.String()
	if e.Time.IsZero() {
		e.Time = l.now().UTC()
	}
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	b = append(b, '\n')
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := l.f.Write(b); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	return nil
}

// Close closes the log file.
func (l *FileLog) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Close()
}
